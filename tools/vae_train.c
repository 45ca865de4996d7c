// vae-train: trains the VAE (stage 1) on an image set with the negative ELBO,
// through the shared run loop (trainer.h): every random draw of step s comes
// from a stream derived from (seed, s) and the data order of epoch e from one
// derived from (seed, e), so a resumed run continues exactly where the
// checkpoint stopped.
#include <math.h>
#include <string.h>

#include "common.h"
#include "imageset.h"
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
    Trainer tr;
    Vae v;
    ImageSet set;
    float *m, *vv;        // (P) Adam moments
    float *x, *eps;       // (B, C, S, S), (B, Z, h, w)
    uint8_t *flip;        // (B)
    size_t lat;           // Z * h * w
    char fingerprint[17]; // data_fingerprint of the set
    AdamConfig adam;
} VaeRun;

static int vae_step(void *p, long step, Batch cur, Batch next, Metrics *m) {
    VaeRun *r = p;
    Vae *v = &r->v;
    Rng rng = run_stream((uint64_t)r->tr.seed, STREAM_STEP, (uint64_t)step);
    for (int i = 0; i < cur.n; i++) r->flip[i] = r->hflip ? rng_below(&rng, 2) : 0;
    if (imageset_batch(r->x, &r->set, cur.idx, cur.n, r->flip)) return -1;
    // Decoded in the background while this step computes.
    if (next.n) imageset_prefetch(&r->set, next.idx, next.n);
    rng_normal_fill(&rng, r->eps, cur.n * r->lat);
    float loss = vae_forward(v, r->x, r->eps, cur.n);
    size_t P = v->table.total;
    memset(v->grads, 0, P * sizeof(float));
    vae_backward(v);
    double gsq = 0;
    for (size_t i = 0; i < P; i++) gsq += (double)v->grads[i] * v->grads[i];
    adam_update(v->params, v->grads, r->m, r->vv, P, &r->adam, step + 1);
    metrics_add(m, "loss", loss);
    metrics_add(m, "rec", v->rec);
    metrics_add(m, "kl", v->kl);
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
    return ckpt_write(path, &r->v.table, b, &a);
}

int main(int argc, char **argv) {
    tool_process_init();
    static VaeRun r = {.image_size = 32, .channels = 1, .base_channels = 32,
                       .latent_channels = 4, .kl_weight = 1e-3};
    Trainer *t = &r.tr;
    trainer_init(t);
    r.max_memory = imageset_default_max_memory();
    Opt own[] = {
        {"--data", OPT_STR, &r.data, "image source: fashion-mnist, fashion-mnist-test, an IDX file or a folder", .attr = "source"},
        {"--kl-weight", OPT_FLOAT, &r.kl_weight, "beta, the weight of the KL term", .attr = "kl_weight", .hi = 1e6},
        {"--image-size", OPT_INT, &r.image_size, "image side S (multiple of 4)", .attr = "image_size", .lo = 4, .hi = 4096},
        {"--channels", OPT_INT, &r.channels, "image channels, 1 (grey) or 3 (RGB)", .attr = "in_channels", .lo = 1, .hi = 3},
        {"--base-channels", OPT_INT, &r.base_channels, "VAE width (widths b, 2b, 4b)", .attr = "base_channels", .lo = 1, .hi = 4096},
        {"--latent-channels", OPT_INT, &r.latent_channels, "latent channels Z", .attr = "latent_channels", .lo = 1, .hi = 1024},
        {"--hflip", OPT_FLAG, &r.hflip, "random horizontal flips", .attr = "hflip"},
        {"--max-memory", OPT_SIZE, &r.max_memory, "decoded images kept in memory at most (e.g. 4G); a larger folder is decoded in the background as it is read"},
    };
    int rc = trainer_parse(t, argc, argv, own, sizeof own / sizeof *own, "--data SRC --out vae.h5 [options]");
    if (rc) return rc > 0 ? 0 : 2;
    if (!r.data) return errorf("vae-train: --data is required (see --help)"), 2;
    if (trainer_check_paths(t, (PathArg[]){{"--data", r.data}}, 1)) return 1;
    h5_quiet();
    static Attrs ck; // large: not on the stack
    if (trainer_resume(t, "vae", &ck)) return 1;
    if (r.channels != 1 && r.channels != 3) return errorf("vae-train: --channels must be 1 or 3"), 2;
    if (r.image_size % 4) return errorf("vae-train: --image-size must be a multiple of 4"), 2;

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
    int B = (int)t->B;
    // Resuming loads through vae_load, which checks the sizes the file
    // declares before allocating them.
    if (t->resuming ? vae_load(&r.v, t->out, B, NULL) : (vae_init(&r.v, &cfg, B), 0)) return 1;
    size_t P = r.v.table.total;
    r.m = xcalloc(P, sizeof(float));
    r.vv = xcalloc(P, sizeof(float));
    if (t->resuming) {
        if (ckpt_read_group(t->out, &r.v.table, "optim/m", r.m) ||
            ckpt_read_group(t->out, &r.v.table, "optim/v", r.vv))
            return 1;
        fprintf(stderr, "vae-train: resuming %s at step %ld\n", t->out, t->step);
    } else {
        Rng init;
        rng_init(&init, (uint64_t)t->seed);
        params_init_values(&r.v.table, r.v.params, &init);
    }
    int h = vae_latent_size(&cfg);
    size_t img = (size_t)cfg.in_channels * cfg.image_size * cfg.image_size;
    r.lat = (size_t)cfg.latent_channels * h * h;
    r.x = xmalloc(B * img * sizeof(float));
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
    r.adam = (AdamConfig){t->lr, 0.9, 0.999, 1e-8, 0.0, 0};
    fprintf(stderr, "vae-train: %lld images from %s (%lld held out, %s), %zu parameters, "
            "batch %d, %ld steps/epoch, %d threads\n", (long long)t->ntrain, r.data,
            (long long)t->nheld, r.set.stream ? "decoded as read" : "in memory", P, B,
            t->steps_per_epoch, t->threads);

    TrainerHooks hooks = {"vae-train", "vae", &r, vae_step, vae_evaluate, vae_save, NULL, 0};
    int status = trainer_run(t, &hooks);
    free(r.x), free(r.eps), free(r.flip), free(r.m), free(r.vv);
    vae_free(&r.v);
    imageset_free(&r.set);
    trainer_free(t);
    return status;
}
