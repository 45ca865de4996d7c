// ldm-train: trains the latent UNet (stage 2) on a latent cache with the
// DDPM noise-prediction loss, AdamW, gradient clipping and an EMA of the
// weights, through the shared run loop (trainer.h). The state to resume is
// (seed, step), plus the optimizer moments and the EMA in the checkpoint.
//
// The latents of a step are read from the cache on a background thread while
// the step before computes (latent_stream.h); --in-memory reads the whole
// cache first. The items and draws of a step depend on (seed, step) alone,
// so both give bit-identical checkpoints.
//
// --fid-every N measures the FD of --fid-n images drawn from the EMA weights
// (DDIM, --fid-steps, the run's seed: the images `ldm-sample --seed S` would
// draw, so `ldm-eval fid --unet` on a checkpoint of that step gives the same
// number) against --fid-ref, in the feature network the reference was made
// with; logged, plotted on the loss plot's right axis, and with --keep-best
// the checkpoint of the lowest FD so far is kept as <out>.best.h5. A
// conditional UNet draws every class in equal shares (label i mod K, no
// guidance).
//
// --num-classes K trains the class-conditional UNet of the spec on the
// cache's labels (all in 0..K-1), each replaced by the null class K with
// probability --p-uncond (label dropout, for classifier-free guidance). The
// held-out loss uses the true labels.
//
// Under mpirun -np K (a build with MPI, dist.h) each rank takes its chunks of
// every batch (--grad-chunks G, K dividing G) and streams only their latents
// (--in-memory: every rank reads the whole cache); the draws of a step are
// made for the whole batch by every rank and each uses its items' slice, so
// the run is that of one process with --grad-chunks G, bit for bit at one
// thread per rank.
#include <limits.h>
#include <math.h>
#include <string.h>

#include "common.h"
#include "dist.h"
#include "image.h"
#include "latent_cache.h"
#include "latent_stream.h"
#include "loss.h"
#include "optim.h"
#include "sampler.h"
#include "schedule.h"
#include "toolkit.h"
#include "trainer.h"
#include "unet.h"
#include "unet_ckpt.h"
#include "vae_ckpt.h"

#define T_STEPS 1000
#define SAMPLE_N 64

typedef struct {
    const char *latents, *vae_path, *schedule_name, *prediction_name, *mult, *attn;
    double ema_decay, p_uncond;
    int base_channels, num_res_blocks, heads, sample_every, in_memory, num_classes;
    const char *fid_ref;
    int fid_every, fid_n, fid_steps, keep_best;
    FeatNet fnet;
    FeatStats fref;
    float *fid_feat;              // (fid_n, D)
    int *fid_y;                   // (fid_n) labels of a conditional UNet, else NULL
    Trainer tr;
    LatentCache cache;
    LatentStream stream;
    UNetConfig cfg;
    int prediction;
    Schedule sched;
    UNet u;
    DiffusionLoss loss;
    Vae vae;
    float *m, *v, *ema;           // (P) AdamW moments, EMA weights
    float *all_mean, *all_logvar; // (N, Z, h, w) each, --in-memory only
    int32_t *all_labels;          // (N) --in-memory with classes only
    float *held_mean, *held_logvar; // (nheld, Z, h, w) each
    int32_t *held_labels;         // (nheld) with classes only
    float *x0;                    // (chunk, Z, h, w)
    float *eps, *noise;           // (B, Z, h, w) each: the draws of the whole batch
    int *t;                       // (B)
    int *y;                       // (B) labels after dropout of this rank's items, with classes
    size_t ln;                    // Z * h * w
    AdamConfig adamw;
    GradSum gs;
} LdmRun;

// x0 = scale * (mean + exp(logvar / 2) * eps) for B items: item i at
// mean + idx[i] * n (idx NULL: at mean + i * n).
static void draw_latents(float *x0, const float *mean, const float *logvar, const int *idx,
                         int B, size_t n, double scale, const float *eps) {
    #pragma omp parallel for schedule(static)
    for (int i = 0; i < B; i++) {
        size_t at = (size_t)(idx ? idx[i] : i) * n;
        const float *m = mean + at, *lv = logvar + at;
        for (size_t j = 0; j < n; j++)
            x0[i * n + j] = (float)scale * (m[j] + expf(0.5f * lv[j]) * eps[i * n + j]);
    }
}

// The draws of B items from rng, in this order: the posterior samples' eps,
// the noise, the timesteps.
static void draw_noise(LdmRun *r, Rng *rng, int B) {
    rng_normal_fill(rng, r->eps, B * r->ln);
    rng_normal_fill(rng, r->noise, B * r->ln);
    for (int i = 0; i < B; i++) r->t[i] = (int)rng_below(rng, T_STEPS);
}

// The loss on B items with the draws of places at..at+B-1 of draw_noise's;
// y (B) their class labels on a conditional UNet, else NULL.
static float loss_forward(LdmRun *r, const float *mean, const float *logvar, const int *idx,
                          const int *y, int at, int B) {
    size_t off = (size_t)at * r->ln;
    draw_latents(r->x0, mean, logvar, idx, B, r->ln, r->cache.scale_factor, r->eps + off);
    return diffusion_loss_forward_labels(&r->loss, &r->u, &r->sched, r->prediction, r->x0,
                                         r->noise + off, r->t + at, y, B);
}

// The key, under the step's stream, of the label dropout draws: value i of
// that stream decides item i of the batch, so the draws depend on (seed,
// step, place in the batch) alone and leave the step's other draws as they
// are.
#define LABEL_DROP_STREAM 1

// r->y = the labels of the B items at places first.. of the step's batch
// (item i: lab[idx ? idx[i] : i]), each replaced by the null class with
// probability p_uncond.
static void drop_labels(LdmRun *r, const int32_t *lab, const int *idx, int first, int B,
                        const Rng *step) {
    Rng drop = rng_derive(step, LABEL_DROP_STREAM);
    for (int i = 0; i < first; i++) rng_uniform(&drop); // the other ranks' items
    for (int i = 0; i < B; i++) {
        int y = lab[idx ? idx[i] : i];
        r->y[i] = rng_uniform(&drop) < (float)r->p_uncond ? r->num_classes : y;
    }
}

static int ldm_step(void *p, long step, Batch cur, Batch next, Metrics *m) {
    LdmRun *r = p;
    const float *mean = r->all_mean, *logvar = r->all_logvar;
    const int32_t *lab = r->all_labels;
    const int *idx = cur.idx;
    int failed = 0;
    if (!r->in_memory) {
        // A rank whose read fails still joins the step's sum, to stop every rank.
        failed = cur.n && latent_stream_get(&r->stream, cur.idx, cur.n, &mean, &logvar, &lab);
        idx = NULL;
        if (next.n && !failed) latent_stream_request(&r->stream, next.idx, next.n);
    }
    size_t P = r->u.table.total;
    Rng rng = run_stream((uint64_t)r->tr.seed, STREAM_STEP, (uint64_t)step);
    if (!failed && r->num_classes) drop_labels(r, lab, idx, cur.first, cur.n, &rng);
    if (!failed) draw_noise(r, &rng, cur.total);
    for (int c = 0; c < cur.chunks && !failed; c++) {
        int lo, n = batch_chunk(cur, c, &lo);
        float loss = 0;
        memset(r->u.grads, 0, P * sizeof(float));
        if (n) {
            size_t at = idx ? 0 : lo * r->ln; // streamed: this rank's items in order
            loss = loss_forward(r, mean + at, logvar + at, idx ? idx + lo : NULL,
                                r->num_classes ? r->y + lo : NULL, cur.first + lo, n);
            diffusion_loss_backward(&r->loss, &r->u);
        }
        // The batch's loss is the mean over its items: each chunk's part.
        gradsum_add(&r->gs, r->u.grads, &(double){loss}, (double)n / cur.total);
    }
    double loss;
    if (gradsum_reduce(&r->gs, "ldm-train", failed, r->u.grads, &loss)) return -1;
    double gnorm = clip_grad_norm(r->u.grads, P, 1.0);
    adam_update(r->u.params, r->u.grads, r->m, r->v, P, &r->adamw, step + 1);
    ema_update(r->ema, r->u.params, P, ema_decay((float)r->ema_decay, step + 1));
    metrics_add(m, "loss", loss);
    metrics_add(m, "grad_norm", gnorm);
    return 0;
}

// Mean loss over the held-out items with noise and t fixed for the whole run.
static int ldm_evaluate(void *p, long step, Metrics *m) {
    (void)step;
    LdmRun *r = p;
    Rng rng = run_stream((uint64_t)r->tr.seed, STREAM_EVAL, 0);
    int n = (int)r->tr.nheld, B = r->u.max_batch;
    double sum = 0;
    for (int i0 = 0; i0 < n; i0 += B) {
        int b = n - i0 < B ? n - i0 : B;
        draw_noise(r, &rng, b);
        sum += (double)loss_forward(r, r->held_mean + i0 * r->ln, r->held_logvar + i0 * r->ln,
                                    NULL, r->num_classes ? r->held_labels + i0 : NULL, 0, b) * b;
    }
    metrics_add(m, "heldout_loss", sum / n);
    snprintf(m->text, sizeof m->text, "held-out loss %.4f (%d latents)", sum / n, n);
    return 0;
}

// A DDIM-50 grid from the EMA weights, from its own stream (the same noise
// every time, so grids of one run compare), decoded with the VAE. A
// conditional UNet draws the null class (unguided).
static int ldm_sample_grid(void *p, long step) {
    LdmRun *r = p;
    UNet *u = &r->u;
    Vae *vae = &r->vae;
    size_t img = (size_t)vae->cfg.in_channels * vae->cfg.image_size * vae->cfg.image_size;
    float *z = xmalloc(SAMPLE_N * r->ln * sizeof(float)); // (n, Z, h, w)
    float *x = xmalloc(SAMPLE_N * img * sizeof(float));   // (n, C, S, S)
    Rng rng = run_stream((uint64_t)r->tr.seed, STREAM_SAMPLE, 0);
    rng_normal_fill(&rng, z, SAMPLE_N * r->ln);
    float *raw = u->params;
    u->params = r->ema;
    for (int i0 = 0; i0 < SAMPLE_N; i0 += u->max_batch) {
        int b = SAMPLE_N - i0 < u->max_batch ? SAMPLE_N - i0 : u->max_batch;
        ddim_sample(u, &r->sched, z + i0 * r->ln, b, 50, 0.0f, r->prediction, &rng);
    }
    u->params = raw;
    for (size_t j = 0; j < SAMPLE_N * r->ln; j++) z[j] = (float)(z[j] / r->cache.scale_factor);
    for (int i0 = 0; i0 < SAMPLE_N; i0 += vae->max_batch) {
        int b = SAMPLE_N - i0 < vae->max_batch ? SAMPLE_N - i0 : vae->max_batch;
        vae_decode(vae, x + i0 * img, z + i0 * r->ln, b);
    }
    char path[PATH_MAX], suffix[48];
    snprintf(suffix, sizeof suffix, ".samples-step%ld.png", step);
    int rc = trainer_sibling(path, r->tr.out, suffix) ||
             png_write_grid(path, x, SAMPLE_N, vae->cfg.in_channels, vae->cfg.image_size,
                            vae->cfg.image_size, 8) ? -1 : 0;
    if (rc == 0) fprintf(stderr, "ldm-train: step %ld: samples in %s\n", step, path);
    free(z), free(x);
    return rc;
}

// The FD of fid_n images from the EMA weights against the reference.
static int ldm_fid(void *p, long step, Metrics *m) {
    (void)step;
    LdmRun *r = p;
    UNet *u = &r->u;
    float *raw = u->params;
    u->params = r->ema;
    SampleSpec sp = sample_spec(SAMPLER_DDIM, r->fid_steps, r->prediction);
    Generator g;
    int max_b = u->max_batch < SAMPLE_N ? u->max_batch : SAMPLE_N;
    generator_init(&g, u, &r->vae, &r->sched, sp, r->cache.scale_factor, max_b, r->tr.out,
                   r->vae_path);
    double t0 = now_seconds();
    int rc = generator_features(&g, &r->fnet, r->fid_n, r->fid_y, (uint64_t)r->tr.seed,
                                r->fid_feat, NULL, 1);
    generator_free(&g);
    u->params = raw;
    if (rc) return -1;
    FeatStats st;
    featstats_compute(&st, r->fid_feat, r->fid_n, r->fnet.dim);
    double fd;
    rc = frechet_distance(&fd, &st, &r->fref);
    featstats_free(&st);
    if (rc) return -1;
    metrics_add(m, "fd", fd);
    snprintf(m->text, sizeof m->text, "FD %.4f of %d samples (DDIM-%d, EMA) against %s (%s), %.0f s",
             fd, r->fid_n, r->fid_steps, r->fid_ref, r->fnet.name, now_seconds() - t0);
    return 0;
}

// The reference statistics and their network, for --fid-every.
static int fid_setup(LdmRun *r) {
    FeatMeta ref, mine;
    if (featstats_read(r->fid_ref, &r->fref, NULL, &ref)) return -1;
    char path[PATH_MAX];
    if (featnet_resolve(path, sizeof path, ref.net) || featnet_load(&r->fnet, path)) return -1;
    snprintf(mine.net, sizeof mine.net, "%s", r->fnet.name);
    snprintf(mine.net_hash, sizeof mine.net_hash, "%s", r->fnet.hash);
    snprintf(mine.preprocess, sizeof mine.preprocess, "%s", r->fnet.preprocess);
    if (featmeta_check(&ref, r->fid_ref, &mine, path)) return -1;
    if (r->fnet.in_c != 1 && r->fnet.in_c != 3) return errorf("%s: unusable network", path);
    r->fid_feat = xmalloc((size_t)r->fid_n * r->fnet.dim * sizeof(float));
    if (r->num_classes) {
        r->fid_y = xmalloc((size_t)r->fid_n * sizeof *r->fid_y);
        for (int i = 0; i < r->fid_n; i++) r->fid_y[i] = i % r->num_classes;
    }
    return 0;
}

static int ldm_save(void *p, const char *path, const Attrs *loop) {
    LdmRun *r = p;
    Attrs a = *loop;
    unet_config_to_attrs(&r->u.cfg, &a);
    attrs_set_int(&a, "T", T_STEPS);
    attrs_set_double(&a, "scale_factor", r->cache.scale_factor);
    attrs_set_str(&a, "vae_hash", r->cache.vae_hash);
    attrs_set_int(&a, "image_size", r->cache.image_size);
    attrs_set_int(&a, "in_channels", r->cache.in_channels);
    attrs_set_int(&a, "cache_items", r->cache.N);
    if (r->num_classes) {
        attrs_set_double(&a, "p_uncond", r->p_uncond);
        // For ldm-sample to show the classes without the cache (it fits: it
        // was read from an attribute).
        if (r->cache.class_names[0] &&
            attrs_set_str(&a, CLASS_NAMES_ATTR, r->cache.class_names))
            return -1;
    }
    if (attrs_set_str(&a, "latents", r->latents)) return -1;
    CkptBuffers b = {r->u.params, r->m, r->v, r->ema};
    return ckpt_write(path, &r->u.table, b, &a);
}

// --resume on another cache than the run's: refused.
static int check_same_cache(const LdmRun *r, const Attrs *a) {
    const char *p = r->tr.out;
    int64_t items;
    double scale;
    char hash[ATTR_STR_MAX];
    if (attrs_get_int(a, p, "cache_items", &items) ||
        attrs_get_double(a, p, "scale_factor", &scale) ||
        attrs_get_str(a, p, "vae_hash", hash, sizeof hash))
        return -1;
    if (strcmp(hash, r->cache.vae_hash) || items != r->cache.N ||
        (float)scale != (float)r->cache.scale_factor)
        return errorf("--latents %s contradicts the checkpoint %s (trained on a cache of "
                      "%lld items from VAE %s)", r->latents, p, (long long)items, hash);
    return 0;
}

// What identifies the cache's data, for the ranks to agree on.
static uint64_t cache_hash(const LatentCache *c) {
    int64_t dims[6] = {c->N, c->Z, c->h, c->w, c->image_size, c->in_channels};
    uint64_t h = fnv1a64(FNV_OFFSET, dims, sizeof dims);
    h = fnv1a64(h, &c->scale_factor, sizeof c->scale_factor);
    h = fnv1a64(h, c->vae_hash, strlen(c->vae_hash));
    int labels = c->dlabels >= 0;
    return fnv1a64(fnv1a64(h, &labels, sizeof labels), c->class_names, strlen(c->class_names));
}

static uint64_t ldm_weights_hash(void *p) {
    LdmRun *r = p;
    return fnv1a64(FNV_OFFSET, r->u.params, r->u.table.total * sizeof(float));
}

// Reads items [start, start + n) of the cache into mean, logvar and labels
// (NULL: not read), in blocks.
static int read_range(LatentCache *c, int64_t start, int64_t n, float *mean, float *logvar,
                      int32_t *labels) {
    size_t ln = (size_t)c->Z * c->h * c->w;
    for (int64_t i0 = 0; i0 < n; i0 += 4096) {
        int b = (int)(n - i0 < 4096 ? n - i0 : 4096);
        if (latent_cache_read(c, start + i0, b, mean + i0 * ln, logvar + i0 * ln,
                              labels ? labels + i0 : NULL))
            return -1;
    }
    return 0;
}

// The conditional settings on --resume. Not Opt.attr: num_classes and
// p_uncond are absent from unconditional checkpoints (those written before
// classes existed too), where they mean an unconditional run.
static int resume_classes(LdmRun *r, const Attrs *ck) {
    const char *path = r->tr.out;
    int k = 0;
    double p = 0;
    const AttrSpec ks = {"num_classes", SPEC_INT, 0, UNET_MAX_CLASSES, &k, SPEC_OPTIONAL};
    const AttrSpec ps = {"p_uncond", SPEC_DOUBLE, 0, 1, &p, 0};
    if (attrs_read_specs(ck, path, &ks, 1) || (k && attrs_read_specs(ck, path, &ps, 1)))
        return -1;
    if (trainer_given(&r->tr, "--num-classes") && r->num_classes != k)
        return errorf("--num-classes %d contradicts the checkpoint %s (%d); drop the flag to "
                      "use the checkpoint's value", r->num_classes, path, k);
    if (k && trainer_given(&r->tr, "--p-uncond") && (float)r->p_uncond != (float)p)
        return errorf("--p-uncond %g contradicts the checkpoint %s (%g); drop the flag to use "
                      "the checkpoint's value", r->p_uncond, path, p);
    r->num_classes = k;
    if (k) r->p_uncond = p;
    return 0;
}

// The cache's labels for K classes: present, all in 0..K-1 (read in blocks,
// whatever the cache's size), and as many classes as it names, if it does.
static int check_labels(LatentCache *c, int K) {
    if (c->dlabels < 0)
        return errorf("%s: the cache has no labels, which --num-classes %d needs (vae-encode "
                      "writes them for a labelled source: an IDX file with its labels file, or "
                      "a folder of class sub-folders)", c->path, K);
    int named = class_names_count(c->class_names);
    if (named && named != K)
        return errorf("%s: the cache names %d classes, not the %d of --num-classes", c->path,
                      named, K);
    enum { BLOCK = 65536 };
    int32_t *lab = xmalloc(BLOCK * sizeof *lab);
    int rc = 0;
    for (int64_t i0 = 0; i0 < c->N && rc == 0; i0 += BLOCK) {
        int b = (int)(c->N - i0 < BLOCK ? c->N - i0 : BLOCK);
        rc = latent_cache_read(c, i0, b, NULL, NULL, lab);
        for (int i = 0; i < b && rc == 0; i++)
            if (lab[i] < 0 || lab[i] >= K)
                rc = errorf("%s: item %lld has label %d, outside 0..%d (--num-classes %d)",
                            c->path, (long long)(i0 + i), lab[i], K - 1, K);
    }
    free(lab);
    return rc;
}

int main(int argc, char **argv) {
    tool_process_init();
    static LdmRun r = {.schedule_name = "linear", .prediction_name = "eps", .mult = "auto",
                       .attn = "auto", .ema_decay = 0.999, .base_channels = 64,
                       .num_res_blocks = 2, .heads = 1, .p_uncond = 0.1, .fid_n = 1000,
                       .fid_steps = 50};
    Trainer *t = &r.tr;
    trainer_init(t);
    t->data_parallel = 1;
    t->lr = 2e-4, t->ckpt_every = 1000, t->eval_every = 500;
    Opt own[] = {
        {"--latents", OPT_STR, &r.latents, "latent cache from vae-encode"},
        {"--in-memory", OPT_FLAG, &r.in_memory, "read the whole cache into memory first instead of streaming it"},
        {"--schedule", OPT_STR, &r.schedule_name, "noise schedule: linear or cosine (T = 1000)", .attr = "schedule"},
        {"--prediction", OPT_STR, &r.prediction_name, "what the UNet predicts: eps or v", .attr = "prediction"},
        {"--ema", OPT_FLOAT, &r.ema_decay, "EMA decay (with the latent-diffusion warm-up)", .attr = "ema_decay", .hi = 0.999999},
        {"--base-channels", OPT_INT, &r.base_channels, "UNet base width", .attr = "base_channels", .lo = 1, .hi = 4096},
        {"--channel-mult", OPT_STR, &r.mult, "width multipliers per level (auto: 1, then 2 for each halving of the latent side down to 4: 1,2 on 8x8 latents, 1,2,2 on 16x16)", .attr = "channel_mult"},
        {"--num-res-blocks", OPT_INT, &r.num_res_blocks, "ResBlocks per level", .attr = "num_res_blocks", .lo = 1, .hi = 64},
        {"--attn-res", OPT_STR, &r.attn, "latent sides that get attention, e.g. 4 or 8,4 (auto: the lowest level's side)", .attr = "attn_resolutions"},
        {"--heads", OPT_INT, &r.heads, "attention heads", .attr = "num_heads", .lo = 1, .hi = 1024},
        {"--sample-every", OPT_INT, &r.sample_every, "steps between sample grids (needs --vae)", .hi = 1 << 30},
        {"--vae", OPT_STR, &r.vae_path, "the VAE that made the cache, to decode sample grids"},
        {"--num-classes", OPT_INT, &r.num_classes, "K > 0: a class-conditional UNet on the cache's labels, which must lie in 0..K-1 (0: unconditional)", .lo = 0, .hi = UNET_MAX_CLASSES},
        {"--fid-every", OPT_INT, &r.fid_every, "steps between FD measurements of samples from the EMA weights (needs --vae and --fid-ref; 0: none)", .hi = 1 << 30},
        {"--fid-ref", OPT_STR, &r.fid_ref, "reference statistics for --fid-every (ldm-eval stats); its network is used"},
        {"--fid-n", OPT_INT, &r.fid_n, "images drawn for each FD (the same latents every time)", .lo = 2, .hi = 1 << 24},
        {"--fid-steps", OPT_INT, &r.fid_steps, "DDIM steps of those images", .lo = 1, .hi = T_STEPS},
        {"--keep-best", OPT_FLAG, &r.keep_best, "with --fid-every: keep the checkpoint of the lowest FD so far as <out>.best.h5"},
        {"--p-uncond", OPT_FLOAT, &r.p_uncond, "with --num-classes: probability that a training label is replaced by the null class (for classifier-free guidance)", .lo = 0, .hi = 1},
    };
    int rc = trainer_parse(t, argc, argv, own, sizeof own / sizeof *own,
                           "--latents latents.h5 --out unet.h5 [options]");
    if (rc) return rc > 0 ? 0 : 2;
    if (!r.latents) return errorf("ldm-train: --latents is required (see --help)"), 2;
    if (r.sample_every && !r.vae_path) return errorf("ldm-train: --sample-every needs --vae"), 2;
    if (r.fid_every && (!r.vae_path || !r.fid_ref))
        return errorf("ldm-train: --fid-every needs --vae and --fid-ref"), 2;
    if (!r.fid_every && (r.fid_ref || r.keep_best))
        return errorf("ldm-train: --fid-ref and --keep-best go with --fid-every"), 2;
    const PathArg inputs[] = {{"--latents", r.latents}, {"--vae", r.vae_path},
                              {"--fid-ref", r.fid_ref}};
    if (trainer_check_paths(t, inputs, 3)) return 1;
    if (r.keep_best) {
        char best[PATH_MAX];
        if (trainer_sibling(best, t->out, ".best.h5") ||
            check_output_path((PathArg){"--keep-best", best}, OUT_FILE, inputs, 3))
            return 1;
    }
    h5_quiet();
    static Attrs ck; // large: not on the stack
    if (trainer_resume(t, "unet", &ck)) return 1;
    if (t->resuming && resume_classes(&r, &ck)) return 1;
    if (!r.num_classes && trainer_given(t, "--p-uncond"))
        return errorf("ldm-train: --p-uncond needs a class-conditional run (--num-classes)"),
               t->resuming ? 1 : 2;

    LatentCache *c = &r.cache;
    if (latent_cache_open(c, r.latents)) return 1;
    t->data_hash = cache_hash(c);
    if (c->h != c->w) return errorf("%s: latents are not square (%dx%d)", r.latents, c->h, c->w), 1;
    if (t->resuming && check_same_cache(&r, &ck)) return 1;
    if (r.num_classes && check_labels(c, r.num_classes)) return 1;
    UNetConfig *cfg = &r.cfg;
    unet_config_default(cfg);
    cfg->latent_channels = c->Z, cfg->latent_size = c->h;
    cfg->base_channels = r.base_channels, cfg->num_res_blocks = r.num_res_blocks;
    cfg->num_heads = r.heads;
    cfg->num_classes = r.num_classes;
    // "auto" levels follow the latent side (unet_config_levels); the lists
    // are what the checkpoint records.
    static char auto_mult[64], auto_attn[64];
    UNetConfig lv = *cfg;
    unet_config_levels(&lv, c->h);
    if (!strcmp(r.mult, "auto")) {
        int_list_format(auto_mult, sizeof auto_mult, lv.channel_mult, lv.num_levels);
        r.mult = auto_mult;
    }
    if (!strcmp(r.attn, "auto")) {
        int_list_format(auto_attn, sizeof auto_attn, lv.attn_resolutions, lv.num_attn);
        r.attn = auto_attn;
    }
    if ((cfg->num_levels = int_list_parse(cfg->channel_mult, UNET_MAX_LEVELS, r.mult, "--channel-mult")) < 0 ||
        (cfg->num_attn = int_list_parse(cfg->attn_resolutions, UNET_MAX_LEVELS, r.attn, "--attn-res")) < 0 ||
        (r.prediction = prediction_from_name(r.prediction_name,
                                             t->resuming ? t->out : "--prediction")) < 0 ||
        unet_config_check(cfg, "ldm-train") ||
        schedule_init(&r.sched, T_STEPS, r.schedule_name, t->resuming ? t->out : "--schedule"))
        return t->resuming ? 1 : 2;
    const int need_vae = r.sample_every || r.fid_every;
    if (need_vae && (vae_load(&r.vae, r.vae_path, SAMPLE_N, NULL) ||
                     check_cache_matches_vae(c, &r.vae, r.vae_path)))
        return 1;
    if (r.fid_every && fid_setup(&r)) return 1;
    if (trainer_set_data(t, c->N, r.latents)) return 1;
    // The UNet and the loss hold one chunk (the whole batch by default), the
    // stream this rank's chunks.
    int B = (int)t->B, chunk = t->chunk, share = t->chunks * chunk < B ? t->chunks * chunk : B;
    r.ln = (size_t)c->Z * c->h * c->w;
    // The held-out latents (at most 512) stay in memory either way; only
    // rank 0 evaluates.
    r.held_mean = xmalloc(t->nheld * r.ln * sizeof(float) + 1);
    r.held_logvar = xmalloc(t->nheld * r.ln * sizeof(float) + 1);
    if (r.num_classes) r.held_labels = xmalloc(t->nheld * sizeof(int32_t) + 1);
    if (t->nheld && dist_rank() == 0 &&
        read_range(c, t->ntrain, t->nheld, r.held_mean, r.held_logvar, r.held_labels))
        return 1;
    if (r.in_memory) {
        r.all_mean = xmalloc(t->ntrain * r.ln * sizeof(float));
        r.all_logvar = xmalloc(t->ntrain * r.ln * sizeof(float));
        if (r.num_classes) r.all_labels = xmalloc(t->ntrain * sizeof(int32_t));
        if (read_range(c, 0, t->ntrain, r.all_mean, r.all_logvar, r.all_labels)) return 1;
    } else {
        latent_stream_init(&r.stream, c, share, r.num_classes > 0);
    }

    UNet *u = &r.u;
    // Resuming loads through unet_load, which checks the sizes the file
    // declares before allocating them.
    if (t->resuming ? unet_load(u, t->out, "model", chunk, NULL) : (unet_init(u, cfg, chunk), 0))
        return 1;
    CHECK(u->cfg.num_classes == r.num_classes); // resume_classes read the same attribute
    if (u->cfg.latent_channels != c->Z || u->cfg.latent_size != c->h)
        return errorf("%s: latents (%d, %d, %d) do not match the UNet of %s (%d, %d, %d)",
                      r.latents, c->Z, c->h, c->w, t->out, u->cfg.latent_channels,
                      u->cfg.latent_size, u->cfg.latent_size), 1;
    size_t P = u->table.total;
    r.m = xcalloc(P, sizeof(float));
    r.v = xcalloc(P, sizeof(float));
    r.ema = xmalloc(P * sizeof(float));
    if (t->resuming) {
        if (ckpt_read_group(t->out, &u->table, "optim/m", r.m) ||
            ckpt_read_group(t->out, &u->table, "optim/v", r.v) ||
            ckpt_read_group(t->out, &u->table, "ema", r.ema))
            return 1;
        if (dist_rank() == 0)
            fprintf(stderr, "ldm-train: resuming %s at step %ld\n", t->out, t->step);
    } else {
        Rng init;
        rng_init(&init, (uint64_t)t->seed);
        unet_init_values(u, &init);
        memcpy(r.ema, u->params, P * sizeof(float));
    }
    diffusion_loss_init(&r.loss, chunk, r.ln);
    r.x0 = xmalloc(chunk * r.ln * sizeof(float));
    r.eps = xmalloc(B * r.ln * sizeof(float));
    r.noise = xmalloc(B * r.ln * sizeof(float));
    r.t = xmalloc(B * sizeof(int));
    r.y = xmalloc(B * sizeof(int));
    gradsum_init(&r.gs, P, t->chunks, 1);
    r.adamw = (AdamConfig){t->lr, 0.9, 0.999, 1e-8, 0.0, 1};
    if (dist_rank() == 0)
        fprintf(stderr, "ldm-train: %lld latents (%d, %d, %d) from %s (%lld held out, %s), %zu "
                "parameters, batch %d, %ld steps/epoch, %s schedule, %s-prediction, %d threads\n",
                (long long)t->ntrain, c->Z, c->h, c->w, r.latents, (long long)t->nheld,
                r.in_memory ? "in memory" : "streamed", P, B, t->steps_per_epoch,
                r.schedule_name, prediction_name(r.prediction), t->threads);
    if (dist_rank() == 0 && (t->grad_chunks > 1 || dist_size() > 1))
        fprintf(stderr, "ldm-train: %d gradient chunks of %d items, %d on each of %d rank%s; "
                "%.1f MB sent per step by each rank\n", t->grad_chunks, chunk, t->chunks,
                dist_size(), dist_size() > 1 ? "s" : "", dist_bytes_per_sum(P) / 1e6);
    if (r.num_classes && dist_rank() == 0)
        fprintf(stderr, "ldm-train: class-conditional on %d classes%s, labels dropped to the null "
                "class with p = %g\n", r.num_classes, c->class_names[0] ? " (named)" : "",
                r.p_uncond);

    char fd_axis[96];
    snprintf(fd_axis, sizeof fd_axis, "FD of %d samples (%s)", r.fid_n, r.fid_every ? r.fnet.name : "");
    TrainerHooks hooks = {"ldm-train", "unet", &r, ldm_step, ldm_evaluate, ldm_save,
                          ldm_sample_grid, r.sample_every, r.fid_every ? ldm_fid : NULL,
                          r.fid_every, "fd", fd_axis, r.keep_best, ldm_weights_hash};
    int status = trainer_run(t, &hooks);
    if (!r.in_memory) latent_stream_free(&r.stream);
    latent_cache_close(c);
    gradsum_free(&r.gs);
    free(r.x0), free(r.eps), free(r.noise), free(r.t), free(r.y), free(r.m), free(r.v), free(r.ema);
    free(r.all_mean), free(r.all_logvar), free(r.held_mean), free(r.held_logvar);
    free(r.all_labels), free(r.held_labels);
    diffusion_loss_free(&r.loss);
    unet_free(u);
    schedule_free(&r.sched);
    if (need_vae) vae_free(&r.vae);
    if (r.fid_every) {
        featnet_free(&r.fnet);
        featstats_free(&r.fref);
        free(r.fid_feat), free(r.fid_y);
    }
    trainer_free(t);
    return status;
}
