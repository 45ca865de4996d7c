// vae-train: trains the autoencoder (stage 1) on an image set through the
// shared run loop (trainer.h): every random draw of step s comes from a
// stream derived from (seed, s) and the data order of epoch e from one
// derived from (seed, e), so a resumed run continues exactly where the
// checkpoint stopped. Two families (vae.h): --arch f4c4 trains on the
// negative ELBO; --arch kl trains latent-diffusion's autoencoder on the
// kl-gan loss (klgan.h) with its patch discriminator and, with --perceptual,
// LPIPS: two optimizers, the discriminator stored under /disc.
//
// Under mpirun -np K (a build with MPI, dist.h) each rank takes its chunks of
// every batch (--grad-chunks G, K dividing G); the draws of a step (flips,
// eps) are made for the whole batch by every rank and each uses its items'
// slice, so the run is that of one process with --grad-chunks G, bit for bit
// at one thread per rank. With G > 1 the kl-gan loss is that of each chunk,
// weighted by its items, not of the whole batch, in two places: the adaptive
// weight w comes from the gradients at the decoder's last layer of the
// chunk's own terms, and the discriminator's BatchNorm normalises with the
// chunk's statistics (as DistributedDataParallel without SyncBatchNorm, but
// the same at every K). The BatchNorm running statistics, which are only
// stored (the discriminator always runs in training mode), fold the passes of
// the batch's first chunk alone, the one holding its first item: rank 0's,
// which writes the checkpoints; the other ranks keep the ones they started
// from. At G = 1 all three are the whole batch's, as in a run on one process
// without chunks.
#include <math.h>
#include <string.h>

#include "common.h"
#include "dist.h"
#include "imageset.h"
#include "klgan.h"
#include "optim.h"
#include "toolkit.h"
#include "trainer.h"
#include "vae.h"
#include "vae_ckpt.h"

typedef struct {
    const char *data;
    int image_size, channels, base_channels, latent_channels, hflip;
    double kl_weight;
    size_t max_memory;
    // --arch kl
    const char *arch, *ch_mult, *attn_res, *perceptual, *init;
    int num_res_blocks, groups, disc_width, no_disc;
    long disc_start;
    double disc_weight, perceptual_weight;
    Trainer tr;
    Vae v;
    ImageSet set;
    float *m, *vv;        // (P) Adam moments
    float *x;             // (share, C, S, S): this rank's items of a step
    float *eps;           // (B, Z, h, w): the draws of the whole batch
    uint8_t *flip;        // (B)
    size_t img, lat;      // C * S * S, Z * h * w
    char fingerprint[17]; // data_fingerprint of the set
    AdamConfig adam;
    // --arch kl: the discriminator (unless --no-disc), LPIPS (with
    // --perceptual) and the loss over them
    int kl, has_lp;
    Patchgan d;
    Lpips lp;
    KlGan g;
    float *dm, *dv;       // (Q) the discriminator's Adam moments
    // The sums of a step's chunk gradients: the autoencoder's (figures: its
    // loss and terms) and, with the discriminator, the discriminator's (its loss).
    GradSum gs, dgs;
} VaeRun;

// The figures of a chunk in the autoencoder's GradSum, by family.
enum { F4C4_LOSS, F4C4_REC, F4C4_KL, F4C4_FIGS };
enum { KL_LOSS, KL_L1, KL_LPIPS, KL_KL, KL_G, KL_W, KL_FIGS };

// The draws of step `step` from the step's stream, for the whole batch
// (cur.total items: flips first, then eps, whatever the ranks), and this
// rank's images, flipped; both families. -1 (message printed) on a failed read.
static int draw_batch(VaeRun *r, long step, Batch cur, Batch next) {
    Rng rng = run_stream((uint64_t)r->tr.seed, STREAM_STEP, (uint64_t)step);
    for (int i = 0; i < cur.total; i++) r->flip[i] = r->hflip ? rng_below(&rng, 2) : 0;
    rng_normal_fill(&rng, r->eps, cur.total * r->lat);
    if (cur.n && imageset_batch(r->x, &r->set, cur.idx, cur.n, r->flip + cur.first)) return -1;
    // Decoded in the background while this step computes.
    if (next.n) imageset_prefetch(&r->set, next.idx, next.n);
    return 0;
}

static double sq_norm(const float *g, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    return s;
}

// The images and eps of chunk c of cur: n items from this rank's item lo on
// (returned), the batch's items first + lo on.
static int chunk_data(const VaeRun *r, Batch cur, int c, const float **x, const float **eps) {
    int lo, n = batch_chunk(cur, c, &lo);
    *x = r->x + (size_t)lo * r->img;
    *eps = r->eps + (size_t)(cur.first + lo) * r->lat;
    return n;
}

static int vae_step(void *p, long step, Batch cur, Batch next, Metrics *m) {
    VaeRun *r = p;
    Vae *v = &r->v;
    // A rank whose read fails still joins the step's sum, to stop every rank.
    int failed = draw_batch(r, step, cur, next) != 0;
    size_t P = v->table.total;
    for (int c = 0; c < cur.chunks && !failed; c++) {
        const float *x, *eps;
        int n = chunk_data(r, cur, c, &x, &eps);
        double f[F4C4_FIGS] = {0};
        memset(v->grads, 0, P * sizeof(float));
        if (n) {
            f[F4C4_LOSS] = vae_forward(v, x, eps, n);
            vae_backward(v);
            f[F4C4_REC] = v->rec, f[F4C4_KL] = v->kl;
        }
        // The batch's figures are means over its items: each chunk's part.
        gradsum_add(&r->gs, v->grads, f, (double)n / cur.total);
    }
    double fig[F4C4_FIGS];
    if (gradsum_reduce(&r->gs, "vae-train", failed, v->grads, fig)) return -1;
    double gsq = sq_norm(v->grads, P);
    adam_update(v->params, v->grads, r->m, r->vv, P, &r->adam, step + 1);
    metrics_add(m, "loss", fig[F4C4_LOSS]);
    metrics_add(m, "rec", fig[F4C4_REC]);
    metrics_add(m, "kl", fig[F4C4_KL]);
    metrics_add(m, "grad_norm", sqrt(gsq));
    return 0;
}

// One kl-gan step: for each chunk the autoencoder's gradient, then (from
// --disc-start on) the discriminator's on the chunk's reconstructions; then
// the autoencoder's update and the discriminator's, whose Adam step count
// starts at its first step.
static int kl_step(void *p, long step, Batch cur, Batch next, Metrics *m) {
    VaeRun *r = p;
    KlGan *g = &r->g;
    int failed = draw_batch(r, step, cur, next) != 0;
    int disc = !r->no_disc && step >= r->disc_start;
    size_t P = r->v.table.total, Q = disc ? r->d.table.total : 0;
    for (int c = 0; c < cur.chunks && !failed; c++) {
        const float *x, *eps;
        int n = chunk_data(r, cur, c, &x, &eps);
        double f[KL_FIGS] = {0}, df = 0.0;
        memset(r->v.grads, 0, P * sizeof(float));
        if (n) {
            // Only the chunk holding the batch's first item moves the
            // running statistics (see the top of this file).
            g->keep_running = c > 0 || cur.first > 0;
            f[KL_LOSS] = klgan_ae_backward(g, x, eps, n, disc);
            if (disc) df = klgan_d_backward(g, x);
            f[KL_L1] = g->l1, f[KL_LPIPS] = g->lpips, f[KL_KL] = g->kl;
            f[KL_G] = g->g, f[KL_W] = g->w;
        } else if (disc) {
            memset(r->d.grads, 0, Q * sizeof(float));
        }
        // The batch's figures are means over its items: each chunk's part.
        double share = (double)n / cur.total;
        gradsum_add(&r->gs, r->v.grads, f, share);
        if (disc) gradsum_add(&r->dgs, r->d.grads, &df, share);
    }
    double fig[KL_FIGS], d_loss = 0.0;
    if (gradsum_reduce(&r->gs, "vae-train", failed, r->v.grads, fig) ||
        (disc && gradsum_reduce(&r->dgs, "vae-train", 0, r->d.grads, &d_loss)))
        return -1;
    double gsq = sq_norm(r->v.grads, P);
    adam_update(r->v.params, r->v.grads, r->m, r->vv, P, &r->adam, step + 1);
    if (disc)
        adam_update(r->d.params, r->d.grads, r->dm, r->dv, Q, &r->adam, step - r->disc_start + 1);
    metrics_add(m, "loss", fig[KL_LOSS]);
    metrics_add(m, "l1", fig[KL_L1]);
    if (r->has_lp) metrics_add(m, "lpips", fig[KL_LPIPS]);
    metrics_add(m, "kl", fig[KL_KL]);
    metrics_add(m, "g", fig[KL_G]);
    metrics_add(m, "w", fig[KL_W]);
    metrics_add(m, "d_loss", d_loss);
    metrics_add(m, "grad_norm", sqrt(gsq));
    return 0;
}

static int vae_evaluate(void *p, long step, Metrics *m) {
    (void)step;
    VaeRun *r = p;
    double psnr;
    if (vae_psnr(&r->v, &r->set, (int)r->tr.ntrain, (int)r->tr.nheld, &psnr)) return -1;
    metrics_add(m, "heldout_psnr", psnr);
    m->axis = "held-out PSNR (dB)";
    snprintf(m->text, sizeof m->text, "held-out PSNR %.2f dB (%lld images)", psnr,
             (long long)r->tr.nheld);
    return 0;
}

// What identifies the data beyond its name: the item count and a hash of up
// to 64 items spread over it (decoded, so any source kind works).
static int data_fingerprint(VaeRun *r, char out[17]) {
    const ImageSet *s = &r->set;
    size_t img = (size_t)s->C * s->S * s->S;
    int n = s->N < 64 ? s->N : 64;
    uint64_t h = fnv1a64(FNV_OFFSET, &s->N, sizeof s->N);
    for (int i = 0; i < n; i++) {
        int item = (int)((int64_t)i * s->N / n);
        if (imageset_batch(r->x, &r->set, &item, 1, NULL)) return -1;
        h = fnv1a64(h, r->x, img * sizeof(float));
    }
    snprintf(out, 17, "%016llx", (unsigned long long)h);
    return 0;
}

// The trained weights, for the ranks to agree on: the autoencoder's and the
// discriminator's (not its running statistics, which only rank 0 keeps).
static uint64_t vae_weights_hash(void *p) {
    const VaeRun *r = p;
    uint64_t h = fnv1a64(FNV_OFFSET, r->v.params, r->v.table.total * sizeof(float));
    if (r->kl && !r->no_disc) h = fnv1a64(h, r->d.params, r->d.table.total * sizeof(float));
    return h;
}

static int vae_save(void *p, const char *path, const Attrs *loop) {
    VaeRun *r = p;
    Attrs a = *loop;
    vae_config_to_attrs(&r->v.cfg, &a);
    attrs_set_int(&a, "source_items", r->set.N);
    attrs_set_str(&a, "source_fingerprint", r->fingerprint);
    char hash[17];
    vae_hash_of(hash, &r->v);
    attrs_set_str(&a, "vae_hash", hash);
    CkptBuffers b = {r->v.params, r->m, r->vv, NULL};
    CkptGroup disc[4] = {{"disc/model", &r->d.table, r->d.params},
                         {"disc/running", &r->d.stats, r->d.running},
                         {"disc/optim/m", &r->d.table, r->dm},
                         {"disc/optim/v", &r->d.table, r->dv}};
    if (r->kl && !r->no_disc) {
        attrs_set_int(&a, "disc_batches_tracked", r->d.num_batches_tracked);
        b.extra = disc, b.n_extra = 4;
    }
    return ckpt_write(path, &r->v.table, b, &a);
}

// The kl family's configuration from the flags; -1 with a message.
static int kl_config_from_flags(KlConfig *k, const VaeRun *r) {
    kl_config_default(k);
    k->in_channels = r->channels, k->image_size = r->image_size;
    k->ch = r->base_channels, k->z_channels = r->latent_channels;
    k->num_res_blocks = r->num_res_blocks, k->groups = r->groups;
    if ((k->num_levels = int_list_parse(k->ch_mult, KL_MAX_LEVELS, r->ch_mult, "--ch-mult")) < 0)
        return -1;
    k->num_attn = r->attn_res[0]
                      ? int_list_parse(k->attn_resolutions, KL_MAX_LEVELS, r->attn_res,
                                       "--attn-resolutions")
                      : 0;
    return k->num_attn < 0 || kl_config_check(k, "vae-train") ? -1 : 0;
}

// The flags the spec gives the kl family other defaults than f4c4's, unless
// given or taken from a checkpoint.
static void kl_defaults(VaeRun *r) {
    const Trainer *t = &r->tr;
    if (t->resuming) return;
    if (!trainer_given(t, "--image-size")) r->image_size = 64;
    if (!trainer_given(t, "--channels")) r->channels = 3;
    if (!trainer_given(t, "--kl-weight")) r->kl_weight = 1e-6;
    if (!trainer_given(t, "--lr")) r->tr.lr = 1e-4;
    if (!trainer_given(t, "--batch")) r->tr.batch = 32;
}

// The discriminator, LPIPS and the loss of --arch kl, after the autoencoder
// is built (and loaded). -1 with a message.
static int kl_setup(VaeRun *r, Rng *init) {
    const Trainer *t = &r->tr;
    int B = t->chunk; // the items of one gradient chunk
    if (!r->no_disc) {
        PatchganConfig dc = {r->channels, r->image_size, r->disc_width};
        if (patchgan_out_size(&dc) < 1)
            return errorf("vae-train: the discriminator needs images of at least 24 pixels a "
                          "side (--image-size %d); use --no-disc", r->image_size);
        if (t->total && r->disc_start >= t->total)
            return errorf("vae-train: --disc-start %ld is not before the run's end at step %ld: "
                          "the discriminator would never train (use --no-disc to train "
                          "without it)", r->disc_start, t->total);
        patchgan_init(&r->d, &dc, B);
        size_t Q = r->d.table.total;
        r->dm = xcalloc(Q, sizeof(float));
        r->dv = xcalloc(Q, sizeof(float));
        if (t->resuming) {
            if (ckpt_read_group(t->out, &r->d.table, "disc/model", r->d.params) ||
                ckpt_read_group(t->out, &r->d.stats, "disc/running", r->d.running) ||
                ckpt_read_group(t->out, &r->d.table, "disc/optim/m", r->dm) ||
                ckpt_read_group(t->out, &r->d.table, "disc/optim/v", r->dv))
                return -1;
            // Three BatchNorm passes a step once the discriminator runs.
            r->d.num_batches_tracked = t->step > r->disc_start ? 3 * (t->step - r->disc_start) : 0;
        } else {
            patchgan_init_values(&r->d, init);
        }
    }
    if (r->perceptual[0]) {
        if (r->channels != 3)
            return errorf("vae-train: --perceptual needs RGB images (--channels 3)");
        if (lpips_load(&r->lp, r->perceptual, B, r->image_size)) return -1;
        r->has_lp = 1;
    }
    KlGanConfig gc;
    klgan_config_default(&gc);
    gc.kl_weight = (float)r->kl_weight, gc.disc_weight = (float)r->disc_weight;
    gc.perceptual_weight = (float)r->perceptual_weight, gc.disc_start = r->disc_start;
    klgan_init(&r->g, &gc, &r->v.klv, r->no_disc ? NULL : &r->d, r->has_lp ? &r->lp : NULL, B);
    return 0;
}

// --init: the autoencoder's weights (any family; its configuration is the
// file's) with a fresh optimizer and step. -1 with a message.
static int init_from(VaeRun *r) {
    static const char *arch_flags[] = {"--base-channels", "--latent-channels", "--ch-mult",
                                       "--num-res-blocks", "--attn-resolutions", "--groups"};
    for (size_t i = 0; i < sizeof arch_flags / sizeof *arch_flags; i++)
        if (trainer_given(&r->tr, arch_flags[i]))
            return errorf("vae-train: %s with --init: the architecture is the one of %s",
                          arch_flags[i], r->init);
    if (vae_load(&r->v, r->init, r->tr.chunk, NULL)) return -1;
    const VaeConfig *c = &r->v.cfg;
    if ((c->arch == VAE_ARCH_KL) != r->kl)
        return errorf("vae-train: --init %s holds a %s autoencoder, but --arch is %s", r->init,
                      c->arch == VAE_ARCH_KL ? "kl" : "f4c4", r->arch);
    if (c->image_size != r->image_size || c->in_channels != r->channels)
        return errorf("vae-train: --init %s takes %dx%d images of %d channels, the run %dx%d of "
                      "%d (give --image-size/--channels to match, or convert it at this size)",
                      r->init, c->image_size, c->image_size, c->in_channels, r->image_size,
                      r->image_size, r->channels);
    if (dist_rank() == 0)
        fprintf(stderr, "vae-train: starting from the weights of %s\n", r->init);
    return 0;
}

int main(int argc, char **argv) {
    tool_process_init();
    static VaeRun r = {.image_size = 32, .channels = 1, .base_channels = 32,
                       .latent_channels = 4, .kl_weight = 1e-3, .arch = "f4c4",
                       .ch_mult = "1,2,4", .attn_res = "", .perceptual = "",
                       .num_res_blocks = 1, .groups = 32, .disc_width = 32,
                       .disc_weight = 0.5, .perceptual_weight = 1.0};
    Trainer *t = &r.tr;
    trainer_init(t);
    t->data_parallel = 1;
    r.max_memory = imageset_default_max_memory();
    Opt own[] = {
        {"--data", OPT_STR, &r.data, "image source: fashion-mnist, fashion-mnist-test, an IDX file or a folder", .attr = "source"},
        {"--arch", OPT_STR, &r.arch, "autoencoder family: f4c4 (conv VAE, ELBO) or kl (latent-diffusion's, kl-gan loss)", .attr = "arch", .attr_optional = 1},
        {"--kl-weight", OPT_FLOAT, &r.kl_weight, "weight of the KL term (kl: 1e-6 unless given)", .attr = "kl_weight", .hi = 1e6},
        {"--image-size", OPT_INT, &r.image_size, "image side S (f4c4: a multiple of 4; kl: of 2^(levels-1), 64 unless given)", .attr = "image_size", .lo = 4, .hi = 4096},
        {"--channels", OPT_INT, &r.channels, "image channels, 1 (grey) or 3 (RGB) (kl: 3 unless given)", .attr = "in_channels", .lo = 1, .hi = 3},
        {"--base-channels", OPT_INT, &r.base_channels, "width (f4c4: widths b, 2b, 4b; kl: ch)", .attr = "base_channels", .lo = 1, .hi = 4096},
        {"--latent-channels", OPT_INT, &r.latent_channels, "latent channels Z", .attr = "latent_channels", .lo = 1, .hi = 1024},
        {"--ch-mult", OPT_STR, &r.ch_mult, "kl: channel multipliers, one a level (1,2,4: f4; 1,2,4,4: f8)", .attr = "ch_mult", .attr_optional = 1},
        {"--num-res-blocks", OPT_INT, &r.num_res_blocks, "kl: ResnetBlocks a level", .attr = "num_res_blocks", .attr_optional = 1, .lo = 1, .hi = KL_MAX_RES_BLOCKS},
        {"--attn-resolutions", OPT_STR, &r.attn_res, "kl: sides with attention besides the middle block (e.g. 16; empty: none)", .attr = "attn_resolutions", .attr_optional = 1},
        {"--groups", OPT_INT, &r.groups, "kl: GroupNorm groups", .attr = "groups", .attr_optional = 1, .lo = 1, .hi = 4096},
        {"--disc-start", OPT_LONG, &r.disc_start, "kl: the step the patch discriminator starts at (0-based)", .attr = "disc_start", .attr_optional = 1, .hi = 1e15},
        {"--disc-weight", OPT_FLOAT, &r.disc_weight, "kl: the discriminator term's weight (times the adaptive weight)", .attr = "disc_weight", .attr_optional = 1, .hi = 1e6},
        {"--disc-width", OPT_INT, &r.disc_width, "kl: the discriminator's first width (patchgan-d3: 32)", .attr = "disc_width", .attr_optional = 1, .lo = 1, .hi = 4096},
        {"--no-disc", OPT_FLAG, &r.no_disc, "kl: train without the discriminator (L1, perceptual and KL terms only)", .attr = "no_disc", .attr_optional = 1},
        {"--perceptual", OPT_STR, &r.perceptual, "kl: LPIPS weights (tests/reference/convert_lpips.py) for the perceptual term", .attr = "perceptual", .attr_optional = 1},
        {"--perceptual-weight", OPT_FLOAT, &r.perceptual_weight, "kl: the perceptual term's weight", .attr = "perceptual_weight", .attr_optional = 1, .hi = 1e6},
        {"--init", OPT_STR, &r.init, "start from this autoencoder's weights (e.g. a converted published one), fresh optimizer and step"},
        {"--hflip", OPT_FLAG, &r.hflip, "random horizontal flips", .attr = "hflip"},
        {"--max-memory", OPT_SIZE, &r.max_memory, "decoded images kept in memory at most (e.g. 4G); a larger folder is decoded in the background as it is read"},
    };
    int rc = trainer_parse(t, argc, argv, own, sizeof own / sizeof *own, "--data SRC --out vae.h5 [options]");
    if (rc) return rc > 0 ? 0 : 2;
    if (!r.data) return errorf("vae-train: --data is required (see --help)"), 2;
    PathArg inputs[3] = {{"--data", r.data}};
    int ninputs = 1;
    if (r.init) inputs[ninputs++] = (PathArg){"--init", r.init};
    if (r.perceptual[0]) inputs[ninputs++] = (PathArg){"--perceptual", r.perceptual};
    if (trainer_check_paths(t, inputs, ninputs)) return 1;
    h5_quiet();
    static Attrs ck; // large: not on the stack
    if (trainer_resume(t, "vae", &ck)) return 1;
    if (strcmp(r.arch, "f4c4") && strcmp(r.arch, "kl"))
        return errorf("vae-train: --arch %s: give f4c4 or kl", r.arch), 2;
    r.kl = !strcmp(r.arch, "kl");
    if (r.init && t->resuming)
        return errorf("vae-train: --init starts a run; --resume continues %s", t->out), 2;
    if (r.kl) kl_defaults(&r);
    if (r.channels != 1 && r.channels != 3) return errorf("vae-train: --channels must be 1 or 3"), 2;
    if (!r.kl && r.image_size % 4) return errorf("vae-train: --image-size must be a multiple of 4"), 2;
    KlConfig kc;
    if (r.kl && !r.init && kl_config_from_flags(&kc, &r)) return 2;

    if (imageset_open(&r.set, r.data, r.image_size, r.channels, r.max_memory)) return 1;
    if (trainer_set_data(t, r.set.N, r.data)) return 1;
    if (imageset_check_memory(&r.set, (int)t->B, r.max_memory)) return 1;
    int64_t items;
    if (t->resuming && attrs_find(&ck, "source_items") &&
        !attrs_get_int(&ck, t->out, "source_items", &items) && items != r.set.N)
        return errorf("--data %s has %d images, but the checkpoint %s was trained on %lld of "
                      "it: the data changed", r.data, r.set.N, t->out, (long long)items), 1;

    VaeConfig cfg;
    vae_config_default(&cfg);
    cfg.in_channels = r.channels, cfg.image_size = r.image_size;
    cfg.base_channels = r.base_channels, cfg.latent_channels = r.latent_channels;
    cfg.kl_weight = (float)r.kl_weight;
    if (r.kl && !r.init) vae_config_kl(&cfg, &kc);
    // The models hold one gradient chunk (the whole batch by default), x
    // this rank's chunks.
    int B = (int)t->B, chunk = t->chunk, share = t->chunks * chunk < B ? t->chunks * chunk : B;
    // Resuming loads through vae_load, which checks the sizes the file
    // declares before allocating them.
    if (r.init ? init_from(&r)
               : t->resuming ? vae_load(&r.v, t->out, chunk, NULL)
                             : (vae_init(&r.v, &cfg, chunk), 0))
        return 1;
    cfg = r.v.cfg;
    if ((cfg.arch == VAE_ARCH_KL) != r.kl)
        return errorf("vae-train: %s holds a %s autoencoder; --arch %s cannot resume it",
                      t->out, cfg.arch == VAE_ARCH_KL ? "kl" : "f4c4", r.arch), 1;
    size_t P = r.v.table.total;
    r.m = xcalloc(P, sizeof(float));
    r.vv = xcalloc(P, sizeof(float));
    if (t->resuming) {
        if (ckpt_read_group(t->out, &r.v.table, "optim/m", r.m) ||
            ckpt_read_group(t->out, &r.v.table, "optim/v", r.vv))
            return 1;
        if (dist_rank() == 0)
            fprintf(stderr, "vae-train: resuming %s at step %ld\n", t->out, t->step);
    }
    // The discriminator's init follows the autoencoder's on one stream.
    Rng init;
    rng_init(&init, (uint64_t)t->seed);
    if (!t->resuming && !r.init) params_init_values(&r.v.table, r.v.params, &init);
    if (r.kl && kl_setup(&r, &init)) return 1;
    int h = vae_latent_size(&cfg);
    r.img = (size_t)cfg.in_channels * cfg.image_size * cfg.image_size;
    r.lat = (size_t)cfg.latent_channels * h * h;
    r.x = xmalloc(share * r.img * sizeof(float));
    r.eps = xmalloc(B * r.lat * sizeof(float));
    r.flip = xcalloc(B, 1);
    char stored[ATTR_STR_MAX];
    if (data_fingerprint(&r, r.fingerprint)) return 1;
    // Checkpoints written before fingerprints were recorded have none.
    if (t->resuming && attrs_find(&ck, "source_fingerprint") &&
        (attrs_get_str(&ck, t->out, "source_fingerprint", stored, sizeof stored) ||
         strcmp(stored, r.fingerprint)))
        return errorf("--data %s is not the data the checkpoint %s was trained on (its "
                      "images changed)", r.data, t->out), 1;
    t->data_hash = fnv1a64(FNV_OFFSET, r.fingerprint, strlen(r.fingerprint));
    gradsum_init(&r.gs, P, t->chunks, r.kl ? KL_FIGS : F4C4_FIGS);
    if (r.kl && !r.no_disc) gradsum_init(&r.dgs, r.d.table.total, t->chunks, 1);
    // kl-gan: both Adams with betas (0.5, 0.9), as latent-diffusion's autoencoder.
    r.adam = r.kl ? (AdamConfig){t->lr, 0.5, 0.9, 1e-8, 0.0, 0}
                  : (AdamConfig){t->lr, 0.9, 0.999, 1e-8, 0.0, 0};
    if (dist_rank() == 0) {
        fprintf(stderr, "vae-train: %lld images from %s (%lld held out, %s), %s %zu parameters, "
                "batch %d, %ld steps/epoch, %d threads\n", (long long)t->ntrain, r.data,
                (long long)t->nheld, r.set.stream ? "decoded as read" : "in memory",
                r.kl ? "vae-kl" : "vae-f4c4", P, B, t->steps_per_epoch, t->threads);
        if (r.kl && r.no_disc)
            fprintf(stderr, "vae-train: kl-gan loss: L1%s + KL x %g, no discriminator\n",
                    r.has_lp ? " + LPIPS" : "", r.kl_weight);
        else if (r.kl)
            fprintf(stderr, "vae-train: kl-gan loss: L1%s + KL x %g + patch discriminator (%zu "
                    "parameters) from step %ld\n", r.has_lp ? " + LPIPS" : "", r.kl_weight,
                    r.d.table.total, r.disc_start);
        if (t->grad_chunks > 1 || dist_size() > 1)
            fprintf(stderr, "vae-train: %d gradient chunks of %d items, %d on each of %d rank%s; "
                    "%.1f MB sent per step by each rank\n", t->grad_chunks, chunk, t->chunks,
                    dist_size(), dist_size() > 1 ? "s" : "",
                    dist_bytes_per_sum(P + (r.kl && !r.no_disc ? r.d.table.total : 0)) / 1e6);
    }

    TrainerHooks hooks = {"vae-train", "vae", &r, r.kl ? kl_step : vae_step, vae_evaluate,
                          vae_save, NULL, 0, .weights_hash = vae_weights_hash};
    int status = trainer_run(t, &hooks);
    gradsum_free(&r.gs);
    if (r.kl && !r.no_disc) gradsum_free(&r.dgs);
    free(r.x), free(r.eps), free(r.flip), free(r.m), free(r.vv);
    if (r.kl) {
        klgan_free(&r.g);
        if (!r.no_disc) patchgan_free(&r.d);
        if (r.has_lp) lpips_free(&r.lp);
        free(r.dm), free(r.dv);
    }
    vae_free(&r.v);
    imageset_free(&r.set);
    trainer_free(t);
    return status;
}
