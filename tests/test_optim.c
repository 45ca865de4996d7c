// test_optim.c: Adam, AdamW, clip_grad_norm and EMA against torch 1.13
// trajectories (tests/reference/gen_optim.py -> tests/golden/optim.h5), and
// bit-identical results at 1 and 2 threads.
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "optim.h"
#include "rng.h"
#include "testutil.h"

#define GOLDEN "optim.h5"
#define TOL 1e-5

static float *load(const char *group, const char *name, size_t n) {
    return golden_read_n(GOLDEN, golden_name(group, name), n);
}

static void check_state(const char *group, int k, const char *what,
                        const float *got, size_t n) {
    char name[32], label[96];
    snprintf(name, sizeof name, "%s%d", what, k);
    snprintf(label, sizeof label, "%s step %d %s", group, k, what);
    float *ref = load(group, name, n);
    check_close(label, got, ref, n, TOL);
    free(ref);
}

// The update param_k - param0 against the reference's. A step changes the
// weights by ~lr, far below the 1e-5 tolerance on the weights themselves, so
// only this catches, e.g., a missing AdamW decay (lr * wd * param per step).
// Both differences come from float32 weights (~1e-7 absolute each, up to
// ~1e-3 of a 2e-4 update), hence 3e-3; a missing decay is off by 2e-2.
static void check_delta(const char *group, int k, const float *p0,
                        const float *p, size_t n) {
    char name[32], label[96];
    snprintf(name, sizeof name, "param%d", k);
    snprintf(label, sizeof label, "%s step %d update param-param0", group, k);
    float *ref = load(group, name, n);
    float *d = xmalloc(n * sizeof(float)), *dref = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        d[i] = p[i] - p0[i];
        dref[i] = ref[i] - p0[i];
    }
    check_close(label, d, dref, n, 3e-3);
    free(ref), free(d), free(dref);
}

// Adam (decoupled = 0): three steps from param0 with zero moments.
static void test_adam(const char *group, float wd, size_t n) {
    AdamConfig c = {.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                    .weight_decay = wd, .decoupled = 0};
    float *p = load(group, "param0", n);
    float *p0 = load(group, "param0", n);
    float *m = xcalloc(n, sizeof(float)), *v = xcalloc(n, sizeof(float));
    for (int k = 1; k <= 3; k++) {
        char name[32];
        snprintf(name, sizeof name, "grad%d", k);
        float *g = load(group, name, n);
        adam_update(p, g, m, v, n, &c, k);
        check_state(group, k, "param", p, n);
        check_delta(group, k, p0, p, n);
        check_state(group, k, "m", m, n);
        check_state(group, k, "v", v, n);
        free(g);
    }
    free(p), free(p0), free(m), free(v);
}

// AdamW with clipping to norm 1 and an EMA with the warm-up decay.
static void test_adamw(const char *group, float wd, size_t n) {
    AdamConfig c = {.lr = 2e-4, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                    .weight_decay = wd, .decoupled = 1};
    float *p = load(group, "param0", n);
    float *ema = load(group, "param0", n);
    float *p0 = load(group, "param0", n);
    float *m = xcalloc(n, sizeof(float)), *v = xcalloc(n, sizeof(float));
    float *raw = xmalloc(n * sizeof(float));
    for (int k = 1; k <= 3; k++) {
        char name[32], label[96];
        snprintf(name, sizeof name, "grad%d", k);
        float *g = load(group, name, n);
        memcpy(raw, g, n * sizeof(float));
        double norm = clip_grad_norm(g, n, 1.0);
        snprintf(name, sizeof name, "norm%d", k);
        float *ref_norm = load(group, name, 1);
        double rel = fabs(norm - ref_norm[0]) / ref_norm[0];
        snprintf(label, sizeof label,
                 "%s step %d clip returns pre-clip norm %.6f (ref %.6f)", group,
                 k, norm, (double)ref_norm[0]);
        check_true(label, rel <= 1e-6);
        if (ref_norm[0] < 1.0f) {
            snprintf(label, sizeof label,
                     "%s step %d norm < 1: gradients untouched", group, k);
            check_true(label, memcmp(raw, g, n * sizeof(float)) == 0);
        }
        free(ref_norm);
        check_state(group, k, "clipped", g, n);
        adam_update(p, g, m, v, n, &c, k);
        check_state(group, k, "param", p, n);
        check_delta(group, k, p0, p, n);
        check_state(group, k, "m", m, n);
        check_state(group, k, "v", v, n);
        ema_update(ema, p, n, ema_decay(0.999f, k));
        check_state(group, k, "ema", ema, n);
        free(g);
    }
    free(p), free(p0), free(ema), free(m), free(v), free(raw);
}

// Large enough buffers that both the chunked norm and the elementwise loops
// actually split across threads.
static void test_threads(void) {
    size_t n = 3000017; // not a multiple of the chunk size
    float *g1 = xmalloc(n * sizeof(float)), *g2 = xmalloc(n * sizeof(float));
    float *p1 = xmalloc(n * sizeof(float)), *p2 = xmalloc(n * sizeof(float));
    float *m1 = xcalloc(n, sizeof(float)), *m2 = xcalloc(n, sizeof(float));
    float *v1 = xcalloc(n, sizeof(float)), *v2 = xcalloc(n, sizeof(float));
    float *e1 = xmalloc(n * sizeof(float)), *e2 = xmalloc(n * sizeof(float));
    Rng r;
    rng_init(&r, 7);
    rng_normal_fill(&r, g1, n);
    rng_normal_fill(&r, p1, n);
    memcpy(g2, g1, n * sizeof(float));
    memcpy(p2, p1, n * sizeof(float));
    memcpy(e1, p1, n * sizeof(float));
    memcpy(e2, p1, n * sizeof(float));
    AdamConfig c = {.lr = 2e-4, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                    .weight_decay = 0.01f, .decoupled = 1};

    set_threads(1);
    double n1 = clip_grad_norm(g1, n, 1.0);
    adam_update(p1, g1, m1, v1, n, &c, 1);
    ema_update(e1, p1, n, 0.9f);
    set_threads(2);
    double n2 = clip_grad_norm(g2, n, 1.0);
    adam_update(p2, g2, m2, v2, n, &c, 1);
    ema_update(e2, p2, n, 0.9f);

    // The serial double-precision sum of squares, for a sanity check of the
    // chunked version (different order, so close but not necessarily equal).
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)g1[i] * g1[i];
    printf("norm at 1 thread %.17g, at 2 threads %.17g (omp max threads %d)\n",
           n1, n2, omp_get_max_threads());
    check_true("clip_grad_norm bit-identical at 1 and 2 threads", n1 == n2);
    check_true("clip_grad_norm close to sqrt(n) for N(0,1) grads",
               fabs(n1 / sqrt((double)n) - 1.0) < 0.01);
    check_true("clipped grads have norm 1", fabs(sqrt(s) - 1.0) < 1e-5);
    check_true("clipped grads bit-identical", memcmp(g1, g2, n * sizeof(float)) == 0);
    check_true("adam params bit-identical", memcmp(p1, p2, n * sizeof(float)) == 0);
    check_true("adam m, v bit-identical",
               memcmp(m1, m2, n * sizeof(float)) == 0 &&
                   memcmp(v1, v2, n * sizeof(float)) == 0);
    check_true("ema bit-identical", memcmp(e1, e2, n * sizeof(float)) == 0);
    free(g1), free(g2), free(p1), free(p2), free(m1), free(m2);
    free(v1), free(v2), free(e1), free(e2);
}

int main(void) {
    size_t ns;
    int *sizes = golden_read_int(GOLDEN, "shapes", &ns);
    size_t n = 0;
    for (size_t i = 0; i < ns; i++) n += (size_t)sizes[i];
    free(sizes);

    test_adam("adam", 0.0f, n);
    test_adam("adam_l2", 0.01f, n);
    test_adamw("adamw_wd0", 0.0f, n);
    test_adamw("adamw_wd0.01", 0.01f, n);

    check_true("ema_decay warm-up n=1 is 2/11", ema_decay(0.999f, 1) == (float)(2.0 / 11.0));
    check_true("ema_decay capped at max_decay", ema_decay(0.999f, 100000) == 0.999f);
    test_threads();
    return test_summary("test_optim");
}
