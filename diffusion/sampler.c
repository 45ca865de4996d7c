// sampler.c: DDPM and DDIM. Scalar coefficients are computed in double from
// the schedule; the per-element updates are float and elementwise, so the
// result is the same at any thread count.
#include "sampler.h"

#include <math.h>
#include <string.h>

#include "common.h"

// The network output o at x_t as predicted x0 and eps, both linear in (x, o):
//   x0 = x0x * x + x0o * o,  eps = ex * x + eo * o.
typedef struct {
    double x0x, x0o, ex, eo;
} Predict;

static Predict predict_coefs(double ab, int prediction) {
    Predict p;
    if (prediction == PRED_EPS) {
        p.x0x = 1 / sqrt(ab), p.x0o = -sqrt(1 - ab) / sqrt(ab);
        p.ex = 0, p.eo = 1;
    } else {
        p.x0x = sqrt(ab), p.x0o = -sqrt(1 - ab);
        p.ex = sqrt(1 - ab), p.eo = sqrt(ab);
    }
    return p;
}

// x = cx0 * x0 + ce * eps + cx * x (+ cz * z when z is non-NULL), with x0 and
// eps formed from (x, o) first, in the reference's order of operations.
static void update(float *x, const float *o, const float *z, Predict p, double cx0,
                   double ce, double cx, double cz, size_t n) {
    float x0x = (float)p.x0x, x0o = (float)p.x0o, ex = (float)p.ex, eo = (float)p.eo;
    float fx0 = (float)cx0, fe = (float)ce, fx = (float)cx, fz = (float)cz;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x0 = x0x * x[i] + x0o * o[i];
        float e = ex * x[i] + eo * o[i];
        float v = fx0 * x0 + fe * e + fx * x[i];
        if (z) v += fz * z[i];
        x[i] = v;
    }
}

// The N(0, I) noise of step k (n floats): the caller's replay buffer when
// given, else drawn from rng into buf.
static const float *step_noise(const float *noise, int k, size_t n, Rng *rng, float *buf) {
    if (noise) return noise + (size_t)k * n;
    CHECK(rng != NULL);
    rng_normal_fill(rng, buf, n);
    return buf;
}

// A sampling loop's buffers, the sampler's own (the UNet carries no sampler
// state), and the UNet's weights fixed while they live.
typedef struct {
    int *t;     // (B): the current step, the same for every item
    float *out; // (B, Z, h, w): the network output at x_t
    float *z;   // (B, Z, h, w): the step's noise when drawn from rng
} Loop;

// n: B*Z*h*w floats
static Loop loop_begin(UNet *u, int B, size_t n) {
    Loop l;
    l.t = xmalloc((size_t)B * sizeof *l.t);
    l.out = xmalloc_aligned(n * sizeof *l.out);
    l.z = xmalloc_aligned(n * sizeof *l.z);
    unet_fix_weights(u, 1);
    return l;
}

static void loop_end(Loop *l, UNet *u) {
    unet_fix_weights(u, 0);
    free(l->t);
    free(l->out);
    free(l->z);
}

// l->out = unet(x, step ti) for all B items
static void loop_predict(Loop *l, UNet *u, const float *x, int ti, int B) {
    for (int b = 0; b < B; b++) l->t[b] = ti;
    unet_forward(u, l->out, x, l->t, NULL, B);
}

static int check_args(UNet *u, const Schedule *s, int B, int prediction, const char *who) {
    CHECK(B >= 1 && B <= u->max_batch);
    if (prediction != PRED_EPS && prediction != PRED_V)
        return errorf("%s: unknown prediction type %d", who, prediction);
    if (s->T < 1) return errorf("%s: empty schedule", who);
    return 0;
}

int ddim_sample_ex(UNet *u, const Schedule *s, float *x, int B, int steps, float eta,
                   int prediction, Rng *rng, const float *noise, float *traj) {
    if (check_args(u, s, B, prediction, "ddim") < 0) return -1;
    if (steps < 1 || steps > s->T)
        return errorf("ddim: steps must be in 1..%d (T), got %d", s->T, steps);
    if (!(eta >= 0.0f)) return errorf("ddim: eta must be >= 0, got %g", eta);
    const UNetConfig *c = &u->cfg;
    size_t n = (size_t)B * c->latent_channels * c->latent_size * c->latent_size;
    int skip = s->T / steps;
    Loop l = loop_begin(u, B, n);
    for (int k = 0; k < steps; k++) {
        int i = steps - 1 - k, ti = i * skip;
        double ab = s->alphas_cumprod[ti];
        double ab_prev = i > 0 ? s->alphas_cumprod[(i - 1) * skip] : 1.0;
        loop_predict(&l, u, x, ti, B);
        double sigma = eta * sqrt((1 - ab_prev) / (1 - ab)) * sqrt(1 - ab / ab_prev);
        double dir = 1 - ab_prev - sigma * sigma;
        const float *z = sigma > 0 ? step_noise(noise, k, n, rng, l.z) : NULL;
        update(x, l.out, z, predict_coefs(ab, prediction), sqrt(ab_prev),
               sqrt(dir > 0 ? dir : 0), 0.0, sigma, n);
        if (traj) memcpy(traj + (size_t)k * n, x, n * sizeof *x);
    }
    loop_end(&l, u);
    return 0;
}

int ddpm_sample_ex(UNet *u, const Schedule *s, float *x, int B, int prediction, Rng *rng,
                   const float *noise, float *traj) {
    if (check_args(u, s, B, prediction, "ddpm") < 0) return -1;
    const UNetConfig *c = &u->cfg;
    size_t n = (size_t)B * c->latent_channels * c->latent_size * c->latent_size;
    Loop l = loop_begin(u, B, n);
    for (int k = 0; k < s->T; k++) {
        int ti = s->T - 1 - k;
        double ab = s->alphas_cumprod[ti], beta = s->betas[ti];
        double ab_prev = ti > 0 ? s->alphas_cumprod[ti - 1] : 1.0;
        loop_predict(&l, u, x, ti, B);
        // posterior mean = c0 * x0 + cx * x_t, variance beta_tilde
        double c0 = beta * sqrt(ab_prev) / (1 - ab);
        double cx = (1 - ab_prev) * sqrt(1 - beta) / (1 - ab);
        const float *z = ti > 0 ? step_noise(noise, k, n, rng, l.z) : NULL;
        update(x, l.out, z, predict_coefs(ab, prediction), c0, 0.0, cx,
               sqrt(s->posterior_variance[ti]), n);
        if (traj) memcpy(traj + (size_t)k * n, x, n * sizeof *x);
    }
    loop_end(&l, u);
    return 0;
}

int ddim_sample(UNet *u, const Schedule *s, float *x, int B, int steps, float eta,
                int prediction, Rng *rng) {
    return ddim_sample_ex(u, s, x, B, steps, eta, prediction, rng, NULL, NULL);
}

int ddpm_sample(UNet *u, const Schedule *s, float *x, int B, int prediction, Rng *rng) {
    return ddpm_sample_ex(u, s, x, B, prediction, rng, NULL, NULL);
}
