// ldm-bench: throughput of the default models (vae-f4c4, unet-s) on random
// inputs and random-init weights, the same steps the tools run:
//   vae-train   vae_forward + vae_backward + Adam, as tools/vae_train.c
//   vae-encode  vae_encode (the batch of tools/vae_encode.c, 256)
//   kl-train    one kl-gan step of vae-kl-f4 with the patchgan-d3
//               discriminator on (klgan.h; no LPIPS), both Adam updates,
//               batch 32, as vae-train --arch kl
//   kl-encode   vae_encode of vae-kl-f4 (batch 256, as vae-encode)
//   unet-train  draw latents, diffusion loss forward/backward, clipping,
//               AdamW and EMA, as tools/ldm_train.c
//   ddim        DDIM-50 from Gaussian latents, then the VAE decode
//   sgemm       a square 1024 cblas_sgemm: the machine's GEMM peak
// The f4c4 and UNet rows run on 1x32x32 images, the kl rows on 3x64x64, unless
// --image-size and --channels say otherwise.
// Each row reports the median (and min, max) images/s over --reps timed steps
// after --warmup untimed ones, the model FLOPs per image (vae_flops.h,
// unet_flops.h; the kl-gan step also counts the discriminator's three
// passes), the achieved GFLOP/s as a fraction of the sgemm peak measured
// here at the same thread count, and the process's peak RSS. One line per row
// on stderr for people and one JSON line per row on stdout for scripts
// (tools/bench-side-by-side.sh runs each row in a fresh process so that the
// peak RSS belongs to that row alone).
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "args.h"
#include "common.h"
#include "klgan.h"
#include "loss.h"
#include "optim.h"
#include "patchgan.h"
#include "rng.h"
#include "sampler.h"
#include "schedule.h"
#include "toolkit.h"
#include "unet.h"
#include "unet_ckpt.h"
#include "unet_flops.h"
#include "vae.h"
#include "vae_flops.h"

#define T_STEPS 1000
#define DDIM_STEPS 50
#define SGEMM_N 1024
#define SGEMM_WARMUP 2

typedef struct {
    const char *row, *mult;
    int threads, batch, reps, warmup, image_size, channels, sgemm_reps, seed;
} Flags;

// One measured row, printed after the sgemm peak is known.
typedef struct {
    const char *row;
    int batch, image_size, channels;
    double med, min, max; // images/s (sgemm: GFLOP/s)
    double flops_per_img;
    double rss_mb;        // process peak RSS right after the row
} Result;

static double peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0; // Linux reports kilobytes
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// Median, min and max of v[0..n) (sorts v).
static void summarize(double *v, int n, double *med, double *mn, double *mx) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    *med = n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
    *mn = v[0];
    *mx = v[n - 1];
}

typedef void (*StepFn)(void *ctx);

// Runs `warmup` untimed steps, then `reps` timed ones; items/s into r.
static void measure(Result *r, StepFn step, void *ctx, int items, int warmup, int reps) {
    for (int i = 0; i < warmup; i++) step(ctx);
    double *rate = xmalloc((size_t)reps * sizeof(double));
    for (int i = 0; i < reps; i++) {
        double t0 = now_seconds();
        step(ctx);
        rate[i] = items / (now_seconds() - t0);
    }
    summarize(rate, reps, &r->med, &r->min, &r->max);
    free(rate);
    r->batch = items;
}

// ---------------------------------------------------------------------------
// VAE rows

typedef struct {
    Vae v;
    int B;
    size_t P, lat;
    float *x;            // (B, C, S, S) uniform in [-1, 1]
    float *eps;          // (B, Z, h, w)
    float *mean, *logvar; // (B, Z, h, w): vae-encode outputs
    float *m, *vv;       // (P) Adam moments
    AdamConfig adam;
    long step;
    Rng rng;
    int nonfinite;
} VaeBench;

static void vae_bench_init(VaeBench *b, const VaeConfig *cfg, int B, int seed) {
    memset(b, 0, sizeof *b);
    vae_init(&b->v, cfg, B);
    b->B = B;
    b->P = b->v.table.total;
    int h = vae_latent_size(cfg);
    size_t img = (size_t)cfg->in_channels * cfg->image_size * cfg->image_size;
    b->lat = (size_t)cfg->latent_channels * h * h;
    rng_init(&b->rng, (uint64_t)seed);
    params_init_values(&b->v.table, b->v.params, &b->rng);
    b->x = xmalloc(B * img * sizeof(float));
    b->eps = xmalloc(B * b->lat * sizeof(float));
    b->mean = xmalloc(B * b->lat * sizeof(float));
    b->logvar = xmalloc(B * b->lat * sizeof(float));
    b->m = xcalloc(b->P, sizeof(float));
    b->vv = xcalloc(b->P, sizeof(float));
    rng_uniform_fill(&b->rng, b->x, B * img, -1.0f, 1.0f);
    b->adam = (AdamConfig){1e-3, 0.9, 0.999, 1e-8, 0.0, 0};
}

static void vae_bench_free(VaeBench *b) {
    free(b->x), free(b->eps), free(b->mean), free(b->logvar), free(b->m), free(b->vv);
    vae_free(&b->v);
}

static double sq_norm(const float *g, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    return s;
}

// The step of vae-train, including its finiteness check of loss and gradient.
static void vae_train_step(void *ctx) {
    VaeBench *b = ctx;
    rng_normal_fill(&b->rng, b->eps, b->B * b->lat);
    float loss = vae_forward(&b->v, b->x, b->eps, b->B);
    memset(b->v.grads, 0, b->P * sizeof(float));
    vae_backward(&b->v);
    double gsq = sq_norm(b->v.grads, b->P);
    if (!isfinite(loss) || !isfinite(gsq)) b->nonfinite = 1;
    adam_update(b->v.params, b->v.grads, b->m, b->vv, b->P, &b->adam, ++b->step);
}

static void vae_encode_step(void *ctx) {
    VaeBench *b = ctx;
    vae_encode(&b->v, b->mean, b->logvar, b->x, b->B);
}

// ---------------------------------------------------------------------------
// kl-gan training row: the autoencoder of a kl VaeBench, the discriminator and
// the loss over them, without LPIPS.

typedef struct {
    VaeBench a;     // the autoencoder (a.v.klv), x, eps, its Adam moments and step
    Patchgan d;
    KlGan g;
    float *dm, *dv; // (Q) the discriminator's Adam moments
} KlBench;

static void kl_bench_init(KlBench *b, const VaeConfig *cfg, int B, int seed) {
    memset(b, 0, sizeof *b);
    vae_bench_init(&b->a, cfg, B, seed);
    b->a.adam = (AdamConfig){1e-4, 0.5, 0.9, 1e-8, 0.0, 0}; // kl-gan's, both networks
    PatchganConfig pc;
    patchgan_config_default(&pc);
    pc.in_channels = cfg->in_channels;
    pc.image_size = cfg->image_size;
    patchgan_init(&b->d, &pc, B);
    patchgan_init_values(&b->d, &b->a.rng);
    KlGanConfig gc;
    klgan_config_default(&gc);
    klgan_init(&b->g, &gc, &b->a.v.klv, &b->d, NULL, B);
    b->dm = xcalloc(b->d.table.total, sizeof(float));
    b->dv = xcalloc(b->d.table.total, sizeof(float));
}

static void kl_bench_free(KlBench *b) {
    free(b->dm), free(b->dv);
    klgan_free(&b->g);
    patchgan_free(&b->d);
    vae_bench_free(&b->a);
}

// The step of vae-train --arch kl with the discriminator on (disc_start 0, so
// both optimizers count the same steps), with its finiteness check.
static void kl_train_step(void *ctx) {
    KlBench *b = ctx;
    VaeBench *a = &b->a;
    rng_normal_fill(&a->rng, a->eps, a->B * a->lat);
    memset(a->v.grads, 0, a->P * sizeof(float));
    double loss = klgan_ae_backward(&b->g, a->x, a->eps, a->B, 1);
    double gsq = sq_norm(a->v.grads, a->P);
    adam_update(a->v.params, a->v.grads, a->m, a->vv, a->P, &a->adam, ++a->step);
    double d_loss = klgan_d_backward(&b->g, a->x);
    adam_update(b->d.params, b->d.grads, b->dm, b->dv, b->d.table.total, &a->adam, a->step);
    if (!isfinite(loss) || !isfinite(gsq) || !isfinite(d_loss)) a->nonfinite = 1;
}

// ---------------------------------------------------------------------------
// UNet training row

typedef struct {
    UNet u;
    DiffusionLoss loss;
    Schedule s;
    int B;
    size_t P, ln;
    float *mean, *logvar;  // (B, Z, h, w): a stand-in latent cache of B items
    float *x0, *noise, *eps; // (B, Z, h, w)
    int *t, *idx;          // (B)
    float *m, *v, *ema;    // (P)
    AdamConfig adamw;
    long step;
    Rng rng;
    int nonfinite;
} UNetBench;

static void unet_bench_init(UNetBench *b, const UNetConfig *cfg, int B, int seed) {
    memset(b, 0, sizeof *b);
    unet_init(&b->u, cfg, B);
    CHECK(schedule_init(&b->s, T_STEPS, "linear", "ldm-bench") == 0);
    b->B = B;
    b->P = b->u.table.total;
    b->ln = (size_t)cfg->latent_channels * cfg->latent_size * cfg->latent_size;
    diffusion_loss_init(&b->loss, B, b->ln);
    rng_init(&b->rng, (uint64_t)seed);
    params_init_values(&b->u.table, b->u.params, &b->rng);
    size_t n = B * b->ln;
    b->mean = xmalloc(n * sizeof(float));
    b->logvar = xmalloc(n * sizeof(float));
    b->x0 = xmalloc(n * sizeof(float));
    b->noise = xmalloc(n * sizeof(float));
    b->eps = xmalloc(n * sizeof(float));
    b->t = xmalloc(B * sizeof(int));
    b->idx = xmalloc(B * sizeof(int));
    b->m = xcalloc(b->P, sizeof(float));
    b->v = xcalloc(b->P, sizeof(float));
    b->ema = xmalloc(b->P * sizeof(float));
    memcpy(b->ema, b->u.params, b->P * sizeof(float));
    rng_normal_fill(&b->rng, b->mean, n);
    rng_uniform_fill(&b->rng, b->logvar, n, -4.0f, -1.0f);
    for (int i = 0; i < B; i++) b->idx[i] = i;
    b->adamw = (AdamConfig){2e-4, 0.9, 0.999, 1e-8, 0.0, 1};
}

static void unet_bench_free(UNetBench *b) {
    free(b->mean), free(b->logvar), free(b->x0), free(b->noise), free(b->eps);
    free(b->t), free(b->idx), free(b->m), free(b->v), free(b->ema);
    schedule_free(&b->s);
    diffusion_loss_free(&b->loss);
    unet_free(&b->u);
}

// x0 = scale * (mean + exp(logvar / 2) * eps) for items idx[0..B), the draw
// of ldm-train from its latent cache.
static void draw_latents(float *x0, const float *mean, const float *logvar,
                         const int *idx, int B, size_t n, float scale, Rng *r, float *eps) {
    rng_normal_fill(r, eps, (size_t)B * n);
    #pragma omp parallel for schedule(static)
    for (int i = 0; i < B; i++) {
        const float *m = mean + (size_t)idx[i] * n, *lv = logvar + (size_t)idx[i] * n;
        for (size_t j = 0; j < n; j++)
            x0[i * n + j] = scale * (m[j] + expf(0.5f * lv[j]) * eps[i * n + j]);
    }
}

static void unet_train_step(void *ctx) {
    UNetBench *b = ctx;
    draw_latents(b->x0, b->mean, b->logvar, b->idx, b->B, b->ln, 1.0f, &b->rng, b->eps);
    rng_normal_fill(&b->rng, b->noise, b->B * b->ln);
    for (int i = 0; i < b->B; i++) b->t[i] = (int)rng_below(&b->rng, T_STEPS);
    float loss = diffusion_loss_forward(&b->loss, &b->u, &b->s, PRED_EPS, b->x0, b->noise,
                                        b->t, b->B);
    memset(b->u.grads, 0, b->P * sizeof(float));
    diffusion_loss_backward(&b->loss, &b->u);
    double gnorm = clip_grad_norm(b->u.grads, b->P, 1.0);
    if (!isfinite(loss) || !isfinite(gnorm)) b->nonfinite = 1;
    adam_update(b->u.params, b->u.grads, b->m, b->v, b->P, &b->adamw, ++b->step);
    ema_update(b->ema, b->u.params, b->P, ema_decay(0.999f, b->step));
}

// ---------------------------------------------------------------------------
// DDIM sampling row: what ldm-sample does for one batch.

typedef struct {
    UNet u;
    Vae v;
    Schedule s;
    int B;
    size_t ln;
    float *z; // (B, Z, h, w)
    float *x; // (B, C, S, S)
    Rng rng;
} DdimBench;

static void ddim_bench_init(DdimBench *b, const UNetConfig *ucfg, const VaeConfig *vcfg,
                            int B, int seed) {
    memset(b, 0, sizeof *b);
    unet_init(&b->u, ucfg, B);
    vae_init(&b->v, vcfg, B);
    CHECK(schedule_init(&b->s, T_STEPS, "linear", "ldm-bench") == 0);
    b->B = B;
    b->ln = (size_t)ucfg->latent_channels * ucfg->latent_size * ucfg->latent_size;
    rng_init(&b->rng, (uint64_t)seed);
    params_init_values(&b->u.table, b->u.params, &b->rng);
    params_init_values(&b->v.table, b->v.params, &b->rng);
    size_t img = (size_t)vcfg->in_channels * vcfg->image_size * vcfg->image_size;
    b->z = xmalloc(B * b->ln * sizeof(float));
    b->x = xmalloc(B * img * sizeof(float));
}

static void ddim_bench_free(DdimBench *b) {
    free(b->z), free(b->x);
    schedule_free(&b->s);
    vae_free(&b->v);
    unet_free(&b->u);
}

static void ddim_step(void *ctx) {
    DdimBench *b = ctx;
    rng_normal_fill(&b->rng, b->z, b->B * b->ln);
    SampleSpec sp = sample_spec(SAMPLER_DDIM, DDIM_STEPS, PRED_EPS);
    CHECK(sample_run(&b->u, &b->s, b->z, b->B, &sp, &b->rng) == 0);
    const float scale = 1.0f; // a cache's scale factor; sampling divides by it
    for (size_t j = 0; j < b->B * b->ln; j++) b->z[j] /= scale;
    vae_decode(&b->v, b->x, b->z, b->B);
}

// ---------------------------------------------------------------------------
// sgemm peak: median GFLOP/s of C = A B, all SGEMM_N x SGEMM_N.

static void sgemm_peak(Result *r, int reps, int seed) {
    size_t nn = (size_t)SGEMM_N * SGEMM_N;
    float *A = xmalloc_aligned(nn * sizeof(float));
    float *Bm = xmalloc_aligned(nn * sizeof(float));
    float *C = xmalloc_aligned(nn * sizeof(float));
    Rng rng;
    rng_init(&rng, (uint64_t)seed);
    rng_uniform_fill(&rng, A, nn, -1.0f, 1.0f);
    rng_uniform_fill(&rng, Bm, nn, -1.0f, 1.0f);
    double flops = 2.0 * SGEMM_N * SGEMM_N * SGEMM_N;
    double *g = xmalloc((size_t)reps * sizeof(double));
    for (int i = 0; i < SGEMM_WARMUP + reps; i++) {
        double t0 = now_seconds();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, SGEMM_N, SGEMM_N, SGEMM_N,
                    1.0f, A, SGEMM_N, Bm, SGEMM_N, 0.0f, C, SGEMM_N);
        if (i >= SGEMM_WARMUP) g[i - SGEMM_WARMUP] = flops / (now_seconds() - t0) / 1e9;
    }
    summarize(g, reps, &r->med, &r->min, &r->max);
    r->row = "sgemm";
    r->batch = SGEMM_N;
    r->flops_per_img = flops;
    free(g), free(A), free(Bm), free(C);
}

// ---------------------------------------------------------------------------

static void report(const Result *r, const Flags *f, const char *mult, double peak,
                   double base_rss) {
    int is_sgemm = !strcmp(r->row, "sgemm");
    double gflops = is_sgemm ? r->med : r->flops_per_img * r->med / 1e9;
    double pct = 100.0 * gflops / peak;
    if (is_sgemm) {
        fprintf(stderr, "%-10s threads %d  n %d: %.1f GFLOP/s (min %.1f, max %.1f), "
                "peak RSS %.1f MB, OpenBLAS kernels %s\n", r->row, f->threads, SGEMM_N, r->med,
                r->min, r->max, r->rss_mb, openblas_get_corename());
        printf("{\"impl\": \"c\", \"row\": \"sgemm\", \"threads\": %d, \"batch\": %d, "
               "\"img_per_s\": null, \"img_per_s_min\": null, \"img_per_s_max\": null, "
               "\"flops_per_img\": null, \"gflops\": %.3f, \"gflops_min\": %.3f, "
               "\"gflops_max\": %.3f, \"sgemm_peak_gflops\": %.3f, \"pct_peak\": 100.0, "
               "\"reps\": %d, \"peak_rss_mb\": %.1f, \"base_rss_mb\": %.1f, "
               "\"blas_core\": \"%s\"}\n",
               f->threads, SGEMM_N, r->med, r->min, r->max, peak, f->sgemm_reps, r->rss_mb,
               base_rss, openblas_get_corename());
    } else {
        fprintf(stderr, "%-10s threads %d  batch %d  %dx%dx%d: %.2f img/s (min %.2f, max %.2f), "
                "%.4g GFLOP/img, %.1f GFLOP/s = %.1f%% of sgemm peak %.1f, peak RSS %.1f MB\n",
                r->row, f->threads, r->batch, r->channels, r->image_size, r->image_size,
                r->med, r->min, r->max, r->flops_per_img / 1e9, gflops, pct, peak, r->rss_mb);
        printf("{\"impl\": \"c\", \"row\": \"%s\", \"threads\": %d, \"batch\": %d, "
               "\"image_size\": %d, \"channels\": %d, \"channel_mult\": \"%s\", "
               "\"img_per_s\": %.4f, \"img_per_s_min\": %.4f, \"img_per_s_max\": %.4f, "
               "\"flops_per_img\": %.0f, \"gflops\": %.3f, \"sgemm_peak_gflops\": %.3f, "
               "\"pct_peak\": %.2f, \"reps\": %d, \"warmup\": %d, \"peak_rss_mb\": %.1f, "
               "\"base_rss_mb\": %.1f, \"blas_core\": \"%s\"}\n",
               r->row, f->threads, r->batch, r->image_size, r->channels, mult, r->med,
               r->min, r->max, r->flops_per_img, gflops, peak, pct, f->reps, f->warmup,
               r->rss_mb, base_rss, openblas_get_corename());
    }
    fflush(stdout);
}

static int row_batch(const Flags *f, const char *row) {
    if (f->batch > 0) return f->batch;
    if (!strcmp(row, "vae-encode") || !strcmp(row, "kl-encode")) return 256;
    if (!strcmp(row, "ddim")) return 64;
    if (!strcmp(row, "kl-train")) return 32;
    return 128;
}

int main(int argc, char **argv) {
    // image_size, channels 0: the row's default (f4c4 and UNet rows 1x32x32,
    // kl rows 3x64x64)
    Flags f = {.row = "all", .mult = NULL, .threads = default_threads(), .batch = 0,
               .reps = 5, .warmup = 1, .image_size = 0, .channels = 0, .sgemm_reps = 10,
               .seed = 0};
    Opt opts[] = {
        {"--row", OPT_STR, &f.row, "vae-train, vae-encode, unet-train, ddim, kl-train (the "
         "kl-gan step, discriminator on, without LPIPS), kl-encode, sgemm, flops (FLOP counts "
         "only) or all", 0},
        {"--threads", OPT_INT, &f.threads, "threads (OpenMP and OpenBLAS)", 0},
        {"--batch", OPT_INT, &f.batch, "batch; 0: the row's default (vae-train and unet-train "
         "128, kl-train 32, vae-encode and kl-encode 256, ddim 64)", 0},
        {"--reps", OPT_INT, &f.reps, "timed steps (the median is reported)", 0},
        {"--warmup", OPT_INT, &f.warmup, "untimed steps before them", 0},
        {"--image-size", OPT_INT, &f.image_size, "image side S (multiple of 4; kl-train: at "
         "least 24); latents are S/4; 0: 32, kl rows 64", 0},
        {"--channels", OPT_INT, &f.channels, "image channels, 1 or 3; 0: 1, kl rows 3", 0},
        {"--channel-mult", OPT_STR, &f.mult, "UNet multipliers (default: 1 then 2 per halving "
         "down to 4x4, i.e. 1,2 on 8x8 latents, 1,2,2 on 16x16)", 0},
        {"--sgemm-reps", OPT_INT, &f.sgemm_reps, "timed 1024 sgemm calls for the peak", 0},
        {"--seed", OPT_INT, &f.seed, "random seed for weights and inputs", 0},
    };
    int no = sizeof opts / sizeof *opts;
    int rc = args_parse(argc, argv, opts, no, "[--row ROW] [--threads N] [options]\n"
                        "JSON lines on stdout, one readable line per row on stderr; peak RSS "
                        "is the process's, so run one row per process to attribute it");
    if (rc) return rc > 0 ? 0 : 2;
    // A pinned narrower kernel set halves the GEMM peak here (Haswell: about
    // 195 GFLOP/s at 2 threads, SkylakeX 365, on the EPYC of docs/BENCHMARKS.md)
    const char *core = getenv("OPENBLAS_CORETYPE"), *name = openblas_get_corename();
    if (core && __builtin_cpu_supports("avx512f") && !strstr(name, "Skylake") &&
        !strstr(name, "Cooperlake") && !strstr(name, "Sapphire"))
        fprintf(stderr, "note: OPENBLAS_CORETYPE=%s pins OpenBLAS to its %s kernels; this CPU "
                "has AVX-512 (unset OPENBLAS_CORETYPE to use them)\n", core, name);
    const char *rows[] = {"vae-train", "vae-encode", "unet-train", "ddim", "kl-train", "kl-encode"};
    enum { ROW_VAE_TRAIN, ROW_VAE_ENCODE, ROW_UNET_TRAIN, ROW_DDIM, ROW_KL_TRAIN, ROW_KL_ENCODE };
    int nrows = 6, want[6] = {0}, only_sgemm = 0, only_flops = 0;
    if (!strcmp(f.row, "all")) {
        for (int i = 0; i < nrows; i++) want[i] = 1;
    } else if (!strcmp(f.row, "sgemm")) {
        only_sgemm = 1;
    } else if (!strcmp(f.row, "flops")) {
        only_flops = 1;
    } else {
        int found = 0;
        for (int i = 0; i < nrows; i++)
            if (!strcmp(f.row, rows[i])) want[i] = found = 1;
        if (!found) return errorf("ldm-bench: unknown --row '%s' (see --help)", f.row), 2;
    }
    if (f.threads < 1 || f.batch < 0 || f.reps < 1 || f.warmup < 0 || f.sgemm_reps < 1)
        return errorf("ldm-bench: --threads, --reps and --sgemm-reps must be positive, "
                      "--batch and --warmup non-negative"), 2;
    if (f.channels && f.channels != 1 && f.channels != 3)
        return errorf("ldm-bench: --channels must be 1 or 3"), 2;
    if (f.image_size && (f.image_size < 4 || f.image_size % 4 || f.image_size > 4096))
        return errorf("ldm-bench: --image-size must be a multiple of 4 (4..4096)"), 2;
    // The discriminator's logit map needs S >= 24; --row all skips the row below.
    if (want[ROW_KL_TRAIN] && f.image_size && f.image_size < 24) {
        if (strcmp(f.row, "all"))
            return errorf("ldm-bench: kl-train needs --image-size 24 or more (the "
                          "discriminator's patches)"), 2;
        warnf("ldm-bench: kl-train skipped: it needs --image-size 24 or more");
        want[ROW_KL_TRAIN] = 0;
    }
    set_threads(f.threads);
    double base_rss = peak_rss_mb();

    VaeConfig vcfg;
    vae_config_default(&vcfg);
    vcfg.in_channels = f.channels ? f.channels : 1;
    vcfg.image_size = f.image_size ? f.image_size : 32;
    // The kl family at its spec's defaults (vae-kl-f4, patchgan-d3 width 32);
    // any S that is a multiple of 4 suits its two halvings.
    KlConfig kl;
    kl_config_default(&kl);
    kl.in_channels = f.channels ? f.channels : 3;
    kl.image_size = f.image_size ? f.image_size : 64;
    if (kl_config_check(&kl, "ldm-bench")) return 2;
    VaeConfig kcfg;
    vae_config_kl(&kcfg, &kl);
    PatchganConfig pcfg;
    patchgan_config_default(&pcfg);
    pcfg.in_channels = kl.in_channels;
    pcfg.image_size = kl.image_size;
    UNetConfig ucfg;
    unet_config_default(&ucfg);
    ucfg.latent_channels = vcfg.latent_channels;
    ucfg.latent_size = vae_latent_size(&vcfg);
    if (f.mult) {
        if ((ucfg.num_levels = int_list_parse(ucfg.channel_mult, UNET_MAX_LEVELS, f.mult,
                                              "--channel-mult")) < 0)
            return 2;
    } else {
        unet_config_levels(&ucfg, ucfg.latent_size);
    }
    if (unet_config_check(&ucfg, "ldm-bench")) return 2;
    char mult[128];
    int_list_format(mult, sizeof mult, ucfg.channel_mult, ucfg.num_levels);

    double enc = vae_encode_flops(&vcfg), dec = vae_decode_flops(&vcfg);
    double unet = unet_forward_flops(&ucfg);
    double kl_enc = vae_encode_flops(&kcfg), kl_dec = vae_decode_flops(&kcfg);
    int has_disc = patchgan_out_size(&pcfg) >= 1;
    double disc = has_disc ? patchgan_forward_flops(&pcfg) : 0;
    if (only_flops) {
        char disc_s[32] = "null"; // no discriminator below 24x24
        if (has_disc) snprintf(disc_s, sizeof disc_s, "%.0f", disc);
        fprintf(stderr, "flops per image (forward): vae encode %.0f, vae decode %.0f, "
                "unet %.0f (%dx%dx%d images, %dx%d latents, channel mult %s); vae-kl encode "
                "%.0f, decode %.0f, discriminator %s (%dx%dx%d images)\n", enc, dec, unet,
                vcfg.in_channels, vcfg.image_size, vcfg.image_size, ucfg.latent_size,
                ucfg.latent_size, mult, kl_enc, kl_dec, disc_s, kl.in_channels, kl.image_size,
                kl.image_size);
        printf("{\"impl\": \"c\", \"row\": \"flops\", \"image_size\": %d, \"channels\": %d, "
               "\"channel_mult\": \"%s\", \"vae_encode_flops\": %.0f, \"vae_decode_flops\": %.0f, "
               "\"unet_forward_flops\": %.0f, \"kl_image_size\": %d, \"kl_channels\": %d, "
               "\"kl_encode_flops\": %.0f, \"kl_decode_flops\": %.0f, \"disc_forward_flops\": %s}\n",
               vcfg.image_size, vcfg.in_channels, mult, enc, dec, unet, kl.image_size,
               kl.in_channels, kl_enc, kl_dec, disc_s);
        return 0;
    }

    Result res[7];
    int nres = 0;
    for (int i = 0; i < nrows; i++) {
        if (!want[i]) continue;
        Result *r = &res[nres++];
        r->row = rows[i];
        int B = row_batch(&f, rows[i]);
        int nonfinite = 0;
        int is_kl = i == ROW_KL_TRAIN || i == ROW_KL_ENCODE;
        r->image_size = is_kl ? kl.image_size : vcfg.image_size;
        r->channels = is_kl ? kl.in_channels : vcfg.in_channels;
        if (i == ROW_VAE_TRAIN || i == ROW_VAE_ENCODE) {
            VaeBench b;
            vae_bench_init(&b, &vcfg, B, f.seed);
            if (i == ROW_VAE_TRAIN) {
                r->flops_per_img = 3 * (enc + dec);
                measure(r, vae_train_step, &b, B, f.warmup, f.reps);
            } else {
                r->flops_per_img = enc;
                measure(r, vae_encode_step, &b, B, f.warmup, f.reps);
            }
            nonfinite = b.nonfinite;
            r->rss_mb = peak_rss_mb();
            vae_bench_free(&b);
        } else if (i == ROW_UNET_TRAIN) {
            UNetBench b;
            unet_bench_init(&b, &ucfg, B, f.seed);
            r->flops_per_img = 3 * unet;
            measure(r, unet_train_step, &b, B, f.warmup, f.reps);
            nonfinite = b.nonfinite;
            r->rss_mb = peak_rss_mb();
            unet_bench_free(&b);
        } else if (i == ROW_KL_TRAIN) {
            // 3x the forward: the autoencoder's, and the discriminator's
            // three passes (D(x_hat) for g, then D(x) and D(x_hat) for its own
            // loss). The adaptive weight's two gradients at the last layer
            // are not counted.
            KlBench b;
            kl_bench_init(&b, &kcfg, B, f.seed);
            r->flops_per_img = 3 * (kl_enc + kl_dec + 3 * disc);
            measure(r, kl_train_step, &b, B, f.warmup, f.reps);
            nonfinite = b.a.nonfinite;
            r->rss_mb = peak_rss_mb();
            kl_bench_free(&b);
        } else if (i == ROW_KL_ENCODE) {
            VaeBench b;
            vae_bench_init(&b, &kcfg, B, f.seed);
            r->flops_per_img = kl_enc;
            measure(r, vae_encode_step, &b, B, f.warmup, f.reps);
            r->rss_mb = peak_rss_mb();
            vae_bench_free(&b);
        } else {
            DdimBench b;
            ddim_bench_init(&b, &ucfg, &vcfg, B, f.seed);
            r->flops_per_img = DDIM_STEPS * unet + dec;
            measure(r, ddim_step, &b, B, f.warmup, f.reps);
            r->rss_mb = peak_rss_mb();
            ddim_bench_free(&b);
        }
        // Random data can still blow up; the timing is then of another
        // computation (NaN paths), so say so rather than report it silently.
        if (nonfinite) warnf("ldm-bench: %s: a loss or gradient was not finite", rows[i]);
    }
    // Measured after the rows, so that its buffers do not count in their RSS.
    Result peak;
    sgemm_peak(&peak, f.sgemm_reps, f.seed);
    peak.rss_mb = peak_rss_mb();
    for (int i = 0; i < nres; i++) report(&res[i], &f, mult, peak.med, base_rss);
    if (only_sgemm) report(&peak, &f, mult, peak.med, base_rss);
    return 0;
}
