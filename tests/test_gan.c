// test_gan.c: the kernels of common/layers_gan.h and the patchgan-d3
// discriminator (vae/patchgan.h) against the torch goldens of
// tests/reference/gen_gan.py (tests/golden/gan.h5).
// As in test_layers.c, forward outputs start as NaN (an element a kernel
// forgets fails) and each backward runs twice into the same buffers (the
// second must give twice the reference: they accumulate). The discriminator
// at width 8 on 2 x 3 x 32 x 32 is checked whole (logits, every parameter
// gradient, the input gradient, running statistics after one update) and by
// central differences of its own forward; at width 32 on 64 x 64 its
// parameter count, init statistics and thread-count invariance.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "layers_gan.h"
#include "patchgan.h"
#include "rng.h"
#include "testutil.h"

#define TOL 1e-5
#define DISC_TOL 1e-4 // float32 through five convs and three batch statistics
static const char *GF = "gan.h5";

static float *rd(const char *grp, const char *name, size_t *n) {
    return golden_read(GF, golden_name(grp, name), n);
}

static void check_fwd(const char *grp, const char *what, const float *got, const float *ref,
                      size_t n) {
    check_scaled(grp, what, got, ref, n, 1.0f, TOL);
}

// ---------------------------------------------------------------------------
// BatchNorm

static double bn_loss(float *out, float *mean, float *rstd, const float *in, const float *w,
                      const float *b, const float *dout, int B, int C, int HW) {
    batchnorm_forward(out, mean, rstd, in, w, b, B, C, HW);
    return dot_d(out, dout, (size_t)B * C * HW);
}

static void test_batchnorm(int ci) {
    char grp[32];
    snprintf(grp, sizeof grp, "batchnorm_%d", ci);
    int *c = golden_read_cfg(GF, grp, 3);
    int B = c[0], C = c[1], HW = c[2];
    free(c);
    size_t n, nc;
    float *in = rd(grp, "in", &n), *w = rd(grp, "w", &nc), *b = rd(grp, "b", NULL);
    float *dout = rd(grp, "dout", NULL), *oref = rd(grp, "out", NULL);
    float *mref = rd(grp, "mean", NULL), *rref = rd(grp, "rstd", NULL);
    float *dinr = rd(grp, "din", NULL), *dwr = rd(grp, "dw", NULL), *dbr = rd(grp, "db", NULL);
    float *rm = rd(grp, "rmean0", NULL), *rv = rd(grp, "rvar0", NULL);
    float *rmr = rd(grp, "rmean", NULL), *rvr = rd(grp, "rvar", NULL);
    CHECK(n == (size_t)B * C * HW && nc == (size_t)C);
    float *out = nan_buf(n), *mean = nan_buf(nc), *rstd = nan_buf(nc);
    batchnorm_forward(out, mean, rstd, in, w, b, B, C, HW);
    check_fwd(grp, "out", out, oref, n);
    check_fwd(grp, "mean", mean, mref, nc);
    check_fwd(grp, "rstd", rstd, rref, nc);

    float *din = zero_buf(n), *dw = zero_buf(nc), *db = zero_buf(nc);
    for (int rep = 1; rep <= 2; rep++) {
        batchnorm_backward(din, dw, db, dout, in, mean, rstd, w, B, C, HW);
        check_scaled(grp, "din", din, dinr, n, (float)rep, TOL);
        check_scaled(grp, "dw", dw, dwr, nc, (float)rep, TOL);
        check_scaled(grp, "db", db, dbr, nc, (float)rep, TOL);
    }
    memset(dw, 0, nc * sizeof(float));
    memset(db, 0, nc * sizeof(float));
    batchnorm_backward(NULL, dw, db, dout, in, mean, rstd, w, B, C, HW);
    check_scaled(grp, "dw (din NULL)", dw, dwr, nc, 1.0f, TOL);
    check_scaled(grp, "db (din NULL)", db, dbr, nc, 1.0f, TOL);

    batchnorm_update_running(rm, rv, mean, rstd, C, (size_t)B * HW, 0.1f);
    check_fwd(grp, "running_mean after one update", rm, rmr, nc);
    check_fwd(grp, "running_var after one update", rv, rvr, nc);

    // central differences of L = sum(out * dout) at a few inputs: the golden
    // and the kernel could share a misreading of PyTorch, the forward cannot
    if (ci < 2) {
        enum { FD_N = 6 };
        float fd[FD_N], ref[FD_N];
        const float h = 1e-2f;
        for (int t = 0; t < FD_N; t++) {
            size_t i = (size_t)t * (n / FD_N) + (size_t)t;
            float x0 = in[i];
            in[i] = x0 + h;
            double lp = bn_loss(out, mean, rstd, in, w, b, dout, B, C, HW);
            in[i] = x0 - h;
            double lm = bn_loss(out, mean, rstd, in, w, b, dout, B, C, HW);
            in[i] = x0;
            fd[t] = (float)((lp - lm) / (2.0 * h));
            ref[t] = dinr[i];
        }
        char name[96];
        snprintf(name, sizeof name, "%s din finite differences vs golden", grp);
        check_close(name, fd, ref, FD_N, 2e-3);
    }
    free(in), free(w), free(b), free(dout), free(oref), free(mref), free(rref), free(dinr);
    free(dwr), free(dbr), free(rm), free(rv), free(rmr), free(rvr);
    free(out), free(mean), free(rstd), free(din), free(dw), free(db);
}

// ---------------------------------------------------------------------------
// LeakyReLU, L1, hinge, generator term, adaptive weight

static void test_lrelu(int ci) {
    char grp[32];
    snprintf(grp, sizeof grp, "lrelu_%d", ci);
    int *c = golden_read_cfg(GF, grp, 1);
    size_t n = (size_t)c[0];
    free(c);
    float *in = rd(grp, "in", NULL), *dout = rd(grp, "dout", NULL), *slope = rd(grp, "slope", NULL);
    float *oref = rd(grp, "out", NULL), *dinr = rd(grp, "din", NULL);
    float s = slope[0];
    float *out = nan_buf(n);
    leaky_relu_forward(out, in, s, n);
    check_fwd(grp, "out", out, oref, n);
    float *din = zero_buf(n);
    for (int rep = 1; rep <= 2; rep++) {
        leaky_relu_backward(din, dout, in, s, n);
        check_scaled(grp, "din (from input)", din, dinr, n, (float)rep, TOL);
    }
    // in place, then the backward from the output (same sign as the input)
    float *x = xmalloc(n * sizeof(float));
    memcpy(x, in, n * sizeof(float));
    leaky_relu_forward(x, x, s, n);
    check_fwd(grp, "out (in place)", x, oref, n);
    memset(din, 0, n * sizeof(float));
    leaky_relu_backward(din, dout, x, s, n);
    check_fwd(grp, "din (from output)", din, dinr, n);
    // '=' form in place over dout
    memcpy(din, dout, n * sizeof(float));
    leaky_relu_backward_set(din, din, x, s, n);
    check_fwd(grp, "din (set, in place)", din, dinr, n);
    free(in), free(dout), free(slope), free(oref), free(dinr), free(out), free(din), free(x);
}

static void test_l1(void) {
    size_t n;
    float *a = rd("l1", "a", &n), *b = rd("l1", "b", NULL), *scale = rd("l1", "scale", NULL);
    float *lref = rd("l1", "loss", NULL), *dar = rd("l1", "da", NULL);
    float loss = (float)l1_forward(a, b, n);
    check_fwd("l1", "loss", &loss, lref, 1);
    float *da = zero_buf(n);
    for (int rep = 1; rep <= 2; rep++) {
        l1_backward(da, a, b, n, scale[0]);
        check_scaled("l1", "da", da, dar, n, (float)rep, TOL);
    }
    int ties = 0, zero_at_ties = 1;
    for (size_t i = 0; i < n; i++)
        if (a[i] == b[i]) ties++, zero_at_ties &= da[i] == 0.0f;
    check_true("l1 golden has ties, their gradient is 0", ties > 50 && zero_at_ties);
    free(a), free(b), free(scale), free(lref), free(dar), free(da);
}

static void test_hinge(int ci) {
    char grp[32];
    snprintf(grp, sizeof grp, "hinge_%d", ci);
    int *c = golden_read_cfg(GF, grp, 2);
    size_t nr = (size_t)c[0], nf = (size_t)c[1];
    free(c);
    float *real = rd(grp, "real", NULL), *fake = rd(grp, "fake", NULL);
    float *lref = rd(grp, "loss", NULL), *drr = rd(grp, "dreal", NULL), *dfr = rd(grp, "dfake", NULL);
    float loss = (float)hinge_d_loss_forward(real, fake, nr, nf);
    check_fwd(grp, "loss", &loss, lref, 1);
    float *dr = zero_buf(nr), *df = zero_buf(nf);
    for (int rep = 1; rep <= 2; rep++) {
        hinge_d_loss_backward(dr, df, real, fake, nr, nf, 1.0f);
        check_scaled(grp, "dreal", dr, drr, nr, (float)rep, TOL);
        check_scaled(grp, "dfake", df, dfr, nf, (float)rep, TOL);
    }
    memset(df, 0, nf * sizeof(float));
    hinge_d_loss_backward(NULL, df, real, fake, nr, nf, 3.0f);
    check_scaled(grp, "dfake (dreal NULL, scale 3)", df, dfr, nf, 3.0f, TOL);
    free(real), free(fake), free(lref), free(drr), free(dfr), free(dr), free(df);
}

static void test_gloss(void) {
    int *c = golden_read_cfg(GF, "gloss", 1);
    size_t n = (size_t)c[0];
    free(c);
    float *fake = rd("gloss", "fake", NULL), *lref = rd("gloss", "loss", NULL);
    float *dfr = rd("gloss", "dfake", NULL);
    float loss = (float)gan_g_loss_forward(fake, n);
    check_fwd("gloss", "loss", &loss, lref, 1);
    float *df = zero_buf(n);
    for (int rep = 1; rep <= 2; rep++) {
        gan_g_loss_backward(df, n, 1.0f);
        check_scaled("gloss", "dfake", df, dfr, n, (float)rep, TOL);
    }
    free(fake), free(lref), free(dfr), free(df);
}

static void test_adaptive(int ci) {
    char grp[32];
    snprintf(grp, sizeof grp, "adaptive_%d", ci);
    int *c = golden_read_cfg(GF, grp, 1);
    size_t n = (size_t)c[0];
    free(c);
    float *gn = rd(grp, "grad_nll", NULL), *gg = rd(grp, "grad_g", NULL);
    float *dw = rd(grp, "disc_weight", NULL), *wref = rd(grp, "w", NULL);
    float w = (float)gan_adaptive_weight(gn, gg, n, dw[0]);
    check_fwd(grp, "weight", &w, wref, 1);
    free(gn), free(gg), free(dw), free(wref);
}

// ---------------------------------------------------------------------------
// The discriminator

// gen_gan.py's det_param (det_fill_lcg), over the table in its (state_dict) order.
static void det_params(const ParamTable *t, float *p) {
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *pi = &t->info[i];
        float *x = p + pi->offset;
        det_fill_lcg(x, pi->size, 1000 + (uint64_t)i);
        size_t len = strlen(pi->name);
        int is_weight = len > 7 && strcmp(pi->name + len - 7, ".weight") == 0;
        for (size_t j = 0; j < pi->size; j++) {
            if (pi->ndim == 4) {
                int fan_in = pi->shape[1] * pi->shape[2] * pi->shape[3], e = 0;
                while (fan_in >> (e + 1)) e++;
                x[j] *= ldexpf(1.0f, -(e / 2));
            } else {
                x[j] = is_weight ? 1.0f + x[j] * 0.25f : x[j] * 0.25f;
            }
        }
    }
}

static double disc_loss(Patchgan *d, const float *x, const float *dlogits, int B, size_t nl) {
    const float *lg = patchgan_forward(d, x, B);
    return dot_d(lg, dlogits, nl);
}

static void test_disc(void) {
    const char *grp = "disc";
    int *c = golden_read_cfg(GF, grp, 4);
    PatchganConfig cfg = {.in_channels = c[1], .image_size = c[2], .width = c[3]};
    int B = c[0];
    free(c);
    Patchgan d;
    patchgan_init(&d, &cfg, B);
    int *np = golden_read_int(GF, "disc/n_params", NULL);
    check_true("disc: the C table has the mirror's parameter tensors", d.table.n == np[0]);
    free(np);
    det_params(&d.table, d.params);
    size_t nx = (size_t)B * cfg.in_channels * cfg.image_size * cfg.image_size, nl;
    float *x = xmalloc(nx * sizeof(float));
    det_fill_lcg(x, nx, 999);
    float *dlogits = rd(grp, "dlogits", &nl), *lref = rd(grp, "logits", NULL);
    float *dxr = rd(grp, "dx", NULL);
    int P = patchgan_out_size(&cfg);
    check_true("disc: logit map 2 x 2 at 32 x 32", P == 2 && nl == (size_t)B * P * P);

    const float *lg = patchgan_forward(&d, x, B);
    check_scaled(grp, "logits", lg, lref, nl, 1.0f, DISC_TOL);
    float *dx = zero_buf(nx);
    for (int rep = 1; rep <= 2; rep++) {
        patchgan_backward(&d, dx, dlogits);
        check_scaled(grp, "dx", dx, dxr, nx, (float)rep, DISC_TOL);
        for (int i = 0; i < d.table.n; i++) {
            const ParamInfo *pi = &d.table.info[i];
            char name[160];
            size_t n;
            snprintf(name, sizeof name, "grad/%s", pi->name);
            float *ref = rd(grp, name, &n);
            CHECK(n == pi->size);
            check_scaled(grp, name, d.grads + pi->offset, ref, n, (float)rep, DISC_TOL);
            free(ref);
        }
    }
    // no input gradient: the same parameter gradients
    float *g2 = xmalloc(d.table.total * sizeof(float));
    memcpy(g2, d.grads, d.table.total * sizeof(float));
    memset(d.grads, 0, d.table.total * sizeof(float));
    patchgan_backward(&d, NULL, dlogits);
    patchgan_backward(&d, NULL, dlogits);
    check_true("disc: dx NULL gives the same parameter gradients",
               memcmp(g2, d.grads, d.table.total * sizeof(float)) == 0);

    patchgan_update_running(&d);
    for (int i = 0; i < d.stats.n; i++) {
        const ParamInfo *pi = &d.stats.info[i];
        char name[160];
        size_t n;
        snprintf(name, sizeof name, "running/%s", pi->name);
        float *ref = rd(grp, name, &n);
        CHECK(n == pi->size);
        check_scaled(grp, name, d.running + pi->offset, ref, n, 1.0f, DISC_TOL);
        free(ref);
    }
    check_true("disc: num_batches_tracked 1 after one update", d.num_batches_tracked == 1);

    // central differences of L = sum(logits * dlogits) at a few parameters
    // of every layer kind and a few input pixels. Loose: a step crosses
    // LeakyReLU kinks (the float64 mirror's own differences are 2% off at
    // h = 3e-3) and a smaller one drowns in float32 rounding; a wrong
    // BatchNorm or conv gradient is off by far more.
    enum { FD_N = 8 };
    float fd[FD_N], ref[FD_N];
    const char *names[FD_N] = {"main.0.weight", "main.0.bias", "main.2.weight", "main.3.weight",
                               "main.6.bias", "main.8.weight", "main.11.weight", "main.11.bias"};
    const float h = 1e-3f;
    for (int t = 0; t < FD_N; t++) {
        const ParamInfo *pi = &d.table.info[params_find(&d.table, names[t])];
        size_t i = pi->offset + (size_t)(t * 7) % pi->size;
        float p0 = d.params[i];
        d.params[i] = p0 + h;
        double lp = disc_loss(&d, x, dlogits, B, nl);
        d.params[i] = p0 - h;
        double lm = disc_loss(&d, x, dlogits, B, nl);
        d.params[i] = p0;
        fd[t] = (float)((lp - lm) / (2.0 * h));
        ref[t] = g2[i] / 2; // g2 holds two backward passes
    }
    check_close("disc parameter gradients, finite differences", fd, ref, FD_N, 3e-2);
    for (int t = 0; t < FD_N; t++) {
        size_t i = (size_t)t * (nx / FD_N) + 5;
        float x0 = x[i];
        x[i] = x0 + h;
        double lp = disc_loss(&d, x, dlogits, B, nl);
        x[i] = x0 - h;
        double lm = disc_loss(&d, x, dlogits, B, nl);
        x[i] = x0;
        fd[t] = (float)((lp - lm) / (2.0 * h));
        ref[t] = dxr[i];
    }
    check_close("disc input gradient, finite differences", fd, ref, FD_N, 3e-2);
    free(x), free(dlogits), free(lref), free(dxr), free(dx), free(g2);
    patchgan_free(&d);
}

// The spec's configuration: 64 x 64 -> 6 x 6, 694,689 parameters, the init
// of taming-transformers' weights_init.
static void test_disc_spec(void) {
    PatchganConfig cfg;
    patchgan_config_default(&cfg);
    Patchgan d;
    patchgan_init(&d, &cfg, 1);
    int *cnt = golden_read_int(GF, "disc/count_w32", NULL), *o64 = golden_read_int(GF, "disc/out64", NULL);
    printf("patchgan-d3: %zu parameters, %d x %d logits at 64 x 64\n", d.table.total,
           patchgan_out_size(&cfg), patchgan_out_size(&cfg));
    check_true("patchgan-d3 has 694,689 parameters (spec and mirror)",
               d.table.total == 694689 && cnt[0] == 694689);
    check_true("patchgan-d3 gives 6 x 6 logits at 64 x 64 (spec and mirror)",
               patchgan_out_size(&cfg) == 6 && o64[0] == 6);
    free(cnt), free(o64);
    PatchganConfig small = cfg;
    small.image_size = 23;
    check_true("patchgan-d3 takes no image under 24 x 24", patchgan_out_size(&small) < 1);

    Rng rng;
    rng_init(&rng, 7);
    d.num_batches_tracked = 5;
    d.running[0] = 3.0f;
    patchgan_init_values(&d, &rng);
    int ok_std = 1, ok_tail = 1, ok_bias = 1;
    double bn_s = 0, bn_s2 = 0;
    size_t bn_n = 0;
    for (int i = 0; i < d.table.n; i++) {
        const ParamInfo *pi = &d.table.info[i];
        const float *x = d.params + pi->offset;
        size_t n = pi->size;
        double s = 0, s2 = 0, amax = 0;
        for (size_t j = 0; j < n; j++) {
            s += x[j];
            s2 += (double)x[j] * x[j];
            if (fabs(x[j]) > amax) amax = fabs(x[j]);
        }
        double mean = s / n, sd = sqrt(s2 / n - mean * mean);
        size_t len = strlen(pi->name);
        int is_bias = len > 5 && strcmp(pi->name + len - 5, ".bias") == 0;
        if (pi->ndim == 4) {
            // N(0, 0.02): mean and std within 5 standard errors; the tail
            // beyond 3 sigma rules out the uniform default (bound
            // 1/sqrt(fan_in) <= 0.15 has std <= 0.083 and no such tail for
            // the wide layers)
            double se = 5.0 / sqrt((double)n);
            ok_std &= fabs(mean) < 0.02 * se && fabs(sd / 0.02 - 1.0) < se;
            if (n > 10000) ok_tail &= amax > 0.06;
            printf("  %-16s n %7zu mean %+.5f std %.5f max|w| %.4f\n", pi->name, n, mean, sd,
                   amax);
        } else if (strcmp(pi->name, "main.0.bias") == 0 || strcmp(pi->name, "main.11.bias") == 0) {
            // first and last conv biases: PyTorch's uniform in +-1/sqrt(fan_in)
            int fan_in = (pi->shape[0] > 1 ? 3 : 8 * cfg.width) * 16;
            double bound = 1.0 / sqrt((double)fan_in);
            ok_bias &= amax <= bound && amax > 0.0;
            if (pi->shape[0] > 1) ok_bias &= amax > bound / 2;
        } else if (is_bias) {
            ok_bias &= amax == 0.0; // BatchNorm bias 0
        } else {
            bn_s += s, bn_s2 += s2, bn_n += n; // BatchNorm weight
        }
    }
    double bm = bn_s / bn_n, bsd = sqrt(bn_s2 / bn_n - bm * bm);
    printf("  BatchNorm weights n %zu mean %.5f std %.5f\n", bn_n, bm, bsd);
    check_true("init: conv weights N(0, 0.02)", ok_std && ok_tail);
    check_true("init: first/last conv biases PyTorch default, BatchNorm biases 0", ok_bias);
    check_true("init: BatchNorm weights N(1, 0.02)",
               fabs(bm - 1.0) < 5 * 0.02 / sqrt((double)bn_n) &&
                   fabs(bsd / 0.02 - 1.0) < 5.0 / sqrt(2.0 * bn_n));
    int ok_run = d.num_batches_tracked == 0;
    for (int i = 0; i < d.stats.n; i++) {
        const ParamInfo *pi = &d.stats.info[i];
        float want = strstr(pi->name, "running_var") ? 1.0f : 0.0f;
        for (size_t j = 0; j < pi->size; j++) ok_run &= d.running[pi->offset + j] == want;
    }
    check_true("init: running mean 0, var 1, num_batches_tracked 0", ok_run);
    patchgan_free(&d);
}

// forward + backward + running update of the spec's discriminator on
// 3 x 3 x 64 x 64 (every conv path it takes: im2col, phase Winograd,
// stride-1 flip) at `threads`; results into res (logits, dx, grads, running).
static size_t run_disc(float *res, int threads) {
    set_threads(threads);
    PatchganConfig cfg;
    patchgan_config_default(&cfg);
    const int B = 3;
    Patchgan d;
    patchgan_init(&d, &cfg, B);
    Rng rng;
    rng_init(&rng, 11);
    patchgan_init_values(&d, &rng);
    size_t nx = (size_t)B * 3 * 64 * 64, nl = (size_t)B * 36;
    float *x = xmalloc(nx * sizeof(float)), *dl = xmalloc(nl * sizeof(float));
    rng_normal_fill(&rng, x, nx);
    rng_normal_fill(&rng, dl, nl);
    size_t off = 0;
    memcpy(res + off, patchgan_forward(&d, x, B), nl * sizeof(float));
    off += nl;
    memset(res + off, 0, nx * sizeof(float));
    patchgan_backward(&d, res + off, dl);
    off += nx;
    memcpy(res + off, d.grads, d.table.total * sizeof(float));
    off += d.table.total;
    patchgan_update_running(&d);
    memcpy(res + off, d.running, d.stats.total * sizeof(float));
    off += d.stats.total;
    free(x), free(dl);
    patchgan_free(&d);
    return off;
}

static void test_disc_threads(void) {
    const size_t cap = 800000;
    float *r1 = zero_buf(cap), *r2 = zero_buf(cap);
    size_t n1 = run_disc(r1, 1), n2 = run_disc(r2, 2);
    CHECK(n1 <= cap && n1 == n2);
    int finite = 1;
    for (size_t i = 0; i < n1; i++) finite &= isfinite(r1[i]) != 0;
    check_true("patchgan-d3 fwd+bwd+running bit-identical at 1 and 2 threads (64 x 64, B 3)",
               finite && memcmp(r1, r2, n1 * sizeof(float)) == 0);
    free(r1), free(r2);
}

static void test_threads_bn(void) {
    const char *grp = "batchnorm_1";
    int *c = golden_read_cfg(GF, grp, 3);
    int B = c[0], C = c[1], HW = c[2];
    free(c);
    size_t n;
    float *in = rd(grp, "in", &n), *w = rd(grp, "w", NULL), *b = rd(grp, "b", NULL);
    float *dout = rd(grp, "dout", NULL);
    size_t tot = 2 * n + 4 * (size_t)C;
    float *r[2];
    for (int t = 0; t < 2; t++) {
        set_threads(t + 1);
        r[t] = zero_buf(tot);
        float *out = r[t], *mean = out + n, *rstd = mean + C, *din = rstd + C, *dw = din + n,
              *db = dw + C;
        batchnorm_forward(out, mean, rstd, in, w, b, B, C, HW);
        batchnorm_backward(din, dw, db, dout, in, mean, rstd, w, B, C, HW);
    }
    check_true("batchnorm fwd+bwd bit-identical at 1 and 2 threads",
               memcmp(r[0], r[1], tot * sizeof(float)) == 0);
    free(in), free(w), free(b), free(dout), free(r[0]), free(r[1]);
}

int main(void) {
    int nb = golden_count(GF, "batchnorm"), nr = golden_count(GF, "lrelu");
    int nh = golden_count(GF, "hinge"), na = golden_count(GF, "adaptive");
    check_true("golden has batchnorm, lrelu, hinge and adaptive-weight cases",
               nb >= 4 && nr >= 2 && nh >= 2 && na >= 3);
    for (int i = 0; i < nb; i++) test_batchnorm(i);
    for (int i = 0; i < nr; i++) test_lrelu(i);
    test_l1();
    for (int i = 0; i < nh; i++) test_hinge(i);
    test_gloss();
    for (int i = 0; i < na; i++) test_adaptive(i);
    test_disc();
    test_disc_spec();
    test_threads_bn();
    test_disc_threads();
    return test_summary("test_gan");
}
