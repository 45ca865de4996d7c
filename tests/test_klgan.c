// test_klgan.c: the kl-gan loss (vae/klgan.c) against
// tests/reference/gen_klgan.py: one autoencoder step's loss terms, the
// adaptive weight and every autoencoder gradient, with the discriminator and
// LPIPS on and with both off; then the discriminator's hinge loss, every
// discriminator gradient and the BatchNorm running statistics after the
// step's three passes. Also: the figures do not depend on the thread count.
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "klgan.h"
#include "testutil.h"

static const char *GF = "klgan.h5";
enum { OUT_LOSS, OUT_NLL, OUT_L1, OUT_LPIPS, OUT_KL, OUT_G, OUT_W, OUT_N };
static const char *OUT_NAMES[OUT_N] = {"loss", "nll", "l1", "lpips", "kl", "g", "w"};

typedef struct {
    KlVae ae;
    Patchgan d;
    Lpips lp;
    float *x, *eps;
} Nets;

static float *rd(const char *name, size_t want) { return golden_read_n(GF, name, want); }

// The LPIPS weights of gen_klgan.py, in lpips_table's order.
static void lpips_golden(const ParamTable *t, float *p) {
    float *g = rd("on/lpips", t->total);
    memcpy(p, g, t->total * sizeof(float));
    free(g);
}

// The networks of gen_klgan.py with its weights; LPIPS goes through a file
// as a user's would.
static void nets_init(Nets *n, const char *lpips_path) {
    KlConfig c;
    kl_config_default(&c);
    c.ch = 4, c.groups = 2, c.num_levels = 2, c.ch_mult[0] = 1, c.ch_mult[1] = 2;
    c.image_size = 32;
    CHECK(kl_config_check(&c, "test") == 0);
    kl_init(&n->ae, &c, 2);
    float *p = rd("on/ae", n->ae.table.total);
    memcpy(n->ae.params, p, n->ae.table.total * sizeof(float));
    free(p);
    PatchganConfig dc = {3, 32, 4};
    patchgan_init(&n->d, &dc, 2);
    p = rd("on/d", n->d.table.total);
    memcpy(n->d.params, p, n->d.table.total * sizeof(float));
    free(p);
    const int w[LPIPS_LAYERS] = {4, 4, 8, 8, 8};
    lpips_write_test_file(lpips_path, w, lpips_golden, NULL);
    CHECK(lpips_load(&n->lp, lpips_path, 2, 32) == 0);
    n->x = rd("on/x", 2 * 3 * 32 * 32);
    n->eps = rd("on/eps", 2 * 4 * 16 * 16);
}

static void nets_free(Nets *n) {
    kl_free(&n->ae);
    patchgan_free(&n->d);
    lpips_free(&n->lp);
    free(n->x), free(n->eps);
}

static float absmax(const float *x, size_t n) {
    float m = 0;
    for (size_t i = 0; i < n; i++) m = fmaxf(m, fabsf(x[i]));
    return m;
}

// Each tensor of a gradient against its reference; a tensor whose true
// gradient is 0 (the attention's key bias: softmax ignores a shift common to
// all keys) gets float32 round-off, checked against the whole gradient's scale.
static void check_grads(const char *cs, const ParamTable *t, const float *got,
                        const float *ref) {
    float scale = absmax(ref, t->total);
    char name[160];
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *pi = &t->info[i];
        snprintf(name, sizeof name, "%s: d %s", cs, pi->name);
        if (absmax(ref + pi->offset, pi->size) < 1e-9f * scale) {
            snprintf(name, sizeof name, "%s: d %s is 0 up to round-off", cs, pi->name);
            check_true(name, absmax(got + pi->offset, pi->size) < 1e-6f * scale);
        } else {
            check_close(name, got + pi->offset, ref + pi->offset, pi->size, 1e-4);
        }
    }
}

static void check_step(Nets *n, const char *cs, int disc, int lpips) {
    KlGanConfig c;
    klgan_config_default(&c);
    KlGan g;
    klgan_init(&g, &c, &n->ae, &n->d, lpips ? &n->lp : NULL, 2);
    memset(n->ae.grads, 0, n->ae.table.total * sizeof(float));
    double loss = klgan_ae_backward(&g, n->x, n->eps, 2, disc);
    char name[160];
    snprintf(name, sizeof name, "%s/out", cs);
    float *ref = rd(name, OUT_N);
    float got[OUT_N] = {(float)loss, (float)g.nll, (float)g.l1, (float)g.lpips, (float)g.kl,
                        (float)g.g, (float)g.w};
    for (int i = 0; i < OUT_N; i++) {
        snprintf(name, sizeof name, "%s: %s", cs, OUT_NAMES[i]);
        if (ref[i] == 0.0f) check_true(name, got[i] == 0.0f);
        else check_close(name, got + i, ref + i, 1, 1e-4);
    }
    check_true("returned loss is g.loss", (float)g.loss == (float)loss);
    free(ref);
    snprintf(name, sizeof name, "%s/ae_grad", cs);
    ref = rd(name, n->ae.table.total);
    check_grads(cs, &n->ae.table, n->ae.grads, ref);
    free(ref);
    float zero = 0;
    for (size_t i = 0; i < n->d.table.total; i++) zero += fabsf(n->d.grads[i]);
    snprintf(name, sizeof name, "%s: the discriminator's gradients are left zero", cs);
    check_true(name, zero == 0.0f);
    if (disc) {
        double dl = klgan_d_backward(&g, n->x);
        float got_d = (float)dl;
        ref = rd("on/d_loss", 1);
        check_close("on: discriminator hinge loss", &got_d, ref, 1, 1e-4);
        free(ref);
        ref = rd("on/d_grad", n->d.table.total);
        check_grads("on (discriminator)", &n->d.table, n->d.grads, ref);
        free(ref);
        ref = rd("on/d_running", n->d.stats.total);
        check_close("on: BatchNorm running statistics after three passes", n->d.running, ref,
                    n->d.stats.total, 1e-4);
        free(ref);
    }
    klgan_free(&g);
}

// The same step at 1 and at 2 threads: bit-identical gradients and figures.
static void check_threads(const char *lpips_path) {
    float *grads[2];
    double loss[2], dloss[2];
    for (int r = 0; r < 2; r++) {
        omp_set_num_threads(r + 1);
        Nets n;
        nets_init(&n, lpips_path);
        KlGanConfig c;
        klgan_config_default(&c);
        KlGan g;
        klgan_init(&g, &c, &n.ae, &n.d, &n.lp, 2);
        memset(n.ae.grads, 0, n.ae.table.total * sizeof(float));
        loss[r] = klgan_ae_backward(&g, n.x, n.eps, 2, 1);
        dloss[r] = klgan_d_backward(&g, n.x);
        size_t P = n.ae.table.total, Q = n.d.table.total;
        grads[r] = xmalloc((P + Q) * sizeof(float));
        memcpy(grads[r], n.ae.grads, P * sizeof(float));
        memcpy(grads[r] + P, n.d.grads, Q * sizeof(float));
        if (r == 1)
            check_true("1 vs 2 threads: bit-identical gradients and losses",
                       !memcmp(grads[0], grads[1], (P + Q) * sizeof(float)) &&
                           loss[0] == loss[1] && dloss[0] == dloss[1]);
        klgan_free(&g);
        nets_free(&n);
    }
    free(grads[0]), free(grads[1]);
    omp_set_num_threads(2);
}

int main(void) {
    char lpips_path[64];
    snprintf(lpips_path, sizeof lpips_path, "/tmp/test_klgan_lpips_%d.h5", (int)getpid());
    Nets n;
    nets_init(&n, lpips_path);
    check_step(&n, "off", 0, 0);
    nets_free(&n);
    nets_init(&n, lpips_path); // fresh running statistics
    check_step(&n, "on", 1, 1);
    nets_free(&n);
    check_threads(lpips_path);
    unlink(lpips_path);
    return test_summary("test_klgan");
}
