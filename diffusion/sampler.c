// sampler.c: DDPM, DDIM, DPM-Solver++(2M) and Euler-ancestral behind
// sample_run(), with classifier-free guidance. Every sampler's step is one
// elementwise update of x from the network output (update() below) with
// scalar coefficients computed in double, so the result is the same at any
// thread count.
#include "sampler.h"

#include <math.h>
#include <string.h>

#include "common.h"

static const char *const names[] = {"ddpm", "ddim", "dpmpp2m", "euler_a"};

int sampler_from_name(const char *name, const char *where) {
    for (int k = 0; k < (int)(sizeof names / sizeof *names); k++)
        if (!strcmp(name, names[k])) return k;
    return errorf("%s: unknown sampler '%s' (ddpm, ddim, dpmpp2m or euler_a)", where, name);
}

const char *sampler_name(SamplerKind kind) {
    CHECK(kind >= 0 && kind < (int)(sizeof names / sizeof *names));
    return names[kind];
}

SampleSpec sample_spec(SamplerKind kind, int steps, int prediction) {
    SampleSpec sp;
    memset(&sp, 0, sizeof sp);
    sp.kind = kind, sp.steps = steps, sp.prediction = prediction, sp.guidance = 1.0f;
    return sp;
}

int sampler_timesteps(const SampleSpec *sp, const Schedule *s, int *ts) {
    if (sp->kind == SAMPLER_DDPM) {
        for (int k = 0; ts && k < s->T; k++) ts[k] = s->T - 1 - k;
        return s->T;
    }
    if (sp->steps < 1 || sp->steps > s->T)
        return errorf("%s: steps must be in 1..%d (T), got %d", sampler_name(sp->kind), s->T,
                      sp->steps);
    int skip = s->T / sp->steps;
    for (int k = 0; ts && k < sp->steps; k++) ts[k] = (sp->steps - 1 - k) * skip;
    return sp->steps;
}

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

// One step: x = cx0 * x0 + ce * eps + cx * x (+ cz * z) (+ c1 * m1), with x0
// and eps formed from (x, o) first, in the reference's order of operations.
typedef struct {
    double cx0, ce, cx, cz, c1;
} Step;

// z: the step's noise or NULL (cz unused). hist (n) is DPM-Solver++'s history,
// NULL for the other samplers: when use_hist, m1 = hist (the previous step's
// x0); hist then receives this step's x0 (read before written, per element).
static void update(float *x, const float *o, const float *z, float *hist, int use_hist,
                   Predict p, Step c, size_t n) {
    float x0x = (float)p.x0x, x0o = (float)p.x0o, ex = (float)p.ex, eo = (float)p.eo;
    float fx0 = (float)c.cx0, fe = (float)c.ce, fx = (float)c.cx, fz = (float)c.cz;
    float f1 = (float)c.c1;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x0 = x0x * x[i] + x0o * o[i];
        float e = ex * x[i] + eo * o[i];
        float v = fx0 * x0 + fe * e + fx * x[i];
        if (z) v += fz * z[i];
        if (hist) {
            if (use_hist) v += f1 * hist[i];
            hist[i] = x0;
        }
        x[i] = v;
    }
}

// The N(0, I) noise of the j-th step run (n floats): the caller's replay
// buffer when given, else drawn from rng into buf.
static const float *step_noise(const float *noise, int j, size_t n, Rng *rng, float *buf) {
    if (noise) return noise + (size_t)j * n;
    CHECK(rng != NULL);
    rng_normal_fill(rng, buf, n);
    return buf;
}

// A sampling loop's buffers, the sampler's own (the UNet carries no sampler
// state), and the UNet's weights fixed while they live.
typedef struct {
    int nsteps;
    int *ts;     // (nsteps): the timesteps in the order they run
    int passes;  // 1, or 2 for a guided step (conditional and null items batched)
    float w;     // guidance scale of a guided step
    int *t;      // (passes * B): the current step, the same for every item
    int *y;      // (passes * B): labels (the null class in the second half), or
                 // NULL on an unconditional UNet
    float *in;   // (2B, Z, h, w): x twice for a guided step, else NULL
    float *out;  // (passes * B, Z, h, w): the network output at x_t (first B
                 // items: the one used)
    float *z;    // (B, Z, h, w): the step's noise when drawn from rng
    float *hist; // (B, Z, h, w): DPM-Solver++'s previous x0, else NULL
} Loop;

// n: B*Z*h*w floats; sp already checked
static Loop loop_begin(UNet *u, const Schedule *s, const SampleSpec *sp, int B, size_t n) {
    Loop l;
    memset(&l, 0, sizeof l);
    l.nsteps = sampler_timesteps(sp, s, NULL);
    l.ts = xmalloc((size_t)l.nsteps * sizeof *l.ts);
    sampler_timesteps(sp, s, l.ts);
    int K = u->cfg.num_classes;
    l.w = sp->guidance;
    l.passes = K > 0 && sp->y && l.w != 1.0f && l.w != 0.0f ? 2 : 1;
    CHECK(l.passes * B <= u->max_batch); // a guided step needs max_batch >= 2B
    l.t = xmalloc((size_t)l.passes * B * sizeof *l.t);
    if (K > 0) {
        // w = 0 is the null pass alone
        l.y = xmalloc((size_t)l.passes * B * sizeof *l.y);
        for (int b = 0; b < l.passes * B; b++)
            l.y[b] = b < B && sp->y && l.w != 0.0f ? sp->y[b] : K;
    }
    if (l.passes == 2) l.in = xmalloc_aligned(2 * n * sizeof *l.in);
    l.out = xmalloc_aligned(l.passes * n * sizeof *l.out);
    l.z = xmalloc_aligned(n * sizeof *l.z);
    if (sp->kind == SAMPLER_DPMPP2M) l.hist = xmalloc_aligned(n * sizeof *l.hist);
    unet_fix_weights(u, 1);
    return l;
}

static void loop_end(Loop *l, UNet *u) {
    unet_fix_weights(u, 0);
    free(l->ts);
    free(l->t);
    free(l->y);
    free(l->in);
    free(l->out);
    free(l->z);
    free(l->hist);
}

// l->out[0 .. n) = the (guided) network output at (x, step ti) for all B items
static void loop_predict(Loop *l, UNet *u, const float *x, int ti, int B, size_t n) {
    for (int b = 0; b < l->passes * B; b++) l->t[b] = ti;
    if (l->passes == 1) {
        unet_forward(u, l->out, x, l->t, l->y, B);
        return;
    }
    memcpy(l->in, x, n * sizeof *x);
    memcpy(l->in + n, x, n * sizeof *x);
    unet_forward(u, l->out, l->in, l->t, l->y, 2 * B);
    // o = o_null + w (o_cond - o_null)
    float w = l->w, *oc = l->out;
    const float *on = l->out + n;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) oc[i] = on[i] + w * (oc[i] - on[i]);
}

static int check_spec(UNet *u, const Schedule *s, int B, const SampleSpec *sp) {
    const char *who = sampler_name(sp->kind);
    CHECK(B >= 1 && B <= u->max_batch);
    if (sp->prediction != PRED_EPS && sp->prediction != PRED_V)
        return errorf("%s: unknown prediction type %d", who, sp->prediction);
    if (s->T < 1) return errorf("%s: empty schedule", who);
    int nsteps = sampler_timesteps(sp, s, NULL);
    if (nsteps < 0) return -1;
    if (sp->kind == SAMPLER_DDIM && !(sp->eta >= 0.0f))
        return errorf("%s: eta must be >= 0, got %g", who, sp->eta);
    if (!(sp->guidance >= 0.0f) || isinf(sp->guidance))
        return errorf("%s: the guidance scale must be finite and >= 0, got %g", who, sp->guidance);
    int K = u->cfg.num_classes;
    if (K == 0 && sp->y) return errorf("%s: class labels given to an unconditional UNet", who);
    if (K == 0 && sp->guidance != 1.0f)
        return errorf("%s: guidance %g needs a class-conditional UNet (this one is "
                      "unconditional)", who, sp->guidance);
    for (int b = 0; sp->y && b < B; b++)
        if (sp->y[b] < 0 || sp->y[b] > K)
            return errorf("%s: class label %d of item %d is outside 0..%d", who, sp->y[b], b, K);
    if (sp->start < 0 || sp->start >= nsteps)
        return errorf("%s: the start step must be in 0..%d, got %d", who, nsteps - 1, sp->start);
    return 0;
}

// lambda = log(alpha / sigma) = log(sqrt(ab) / sqrt(1 - ab)), DPM-Solver's time
static double half_log_snr(double ab) { return 0.5 * log(ab / (1 - ab)); }

// The coefficients of step k, from timestep ts[k] to ts[k + 1] (x_0 after the
// last step); *noisy: whether the step adds noise. lam_prev: DPM-Solver++'s
// lambda at the previous step when use_hist.
static Step step_coefs(const SampleSpec *sp, const Schedule *s, const Loop *l, int k,
                       int use_hist, double lam_prev, int *noisy) {
    int ti = l->ts[k], last = k + 1 == l->nsteps;
    double ab = s->alphas_cumprod[ti];
    double ab_next = last ? 1.0 : s->alphas_cumprod[l->ts[k + 1]];
    Step c = {0, 0, 0, 0, 0};
    *noisy = 0;
    switch (sp->kind) {
    case SAMPLER_DDPM: {
        // posterior mean = c0 * x0 + cx * x_t, variance beta_tilde
        double beta = s->betas[ti];
        c.cx0 = beta * sqrt(ab_next) / (1 - ab);
        c.cx = (1 - ab_next) * sqrt(1 - beta) / (1 - ab);
        c.cz = sqrt(s->posterior_variance[ti]);
        *noisy = ti > 0;
        break;
    }
    case SAMPLER_DDIM: {
        double sigma = sp->eta * sqrt((1 - ab_next) / (1 - ab)) * sqrt(1 - ab / ab_next);
        double dir = 1 - ab_next - sigma * sigma;
        c.cx0 = sqrt(ab_next), c.ce = sqrt(dir > 0 ? dir : 0), c.cz = sigma;
        *noisy = sigma > 0;
        break;
    }
    case SAMPLER_DPMPP2M: {
        // x' = (sigma_t / sigma_s) x - alpha_t (exp(-h) - 1) (D0 + D1 / 2), D0 = m0,
        // D1 = (m0 - m1) / r0, h = lambda_t - lambda_s, r0 = (lambda_s - lambda_prev) / h,
        // lambda = log(alpha / sigma). At the last step sigma_t = 0: x' = m0.
        if (last) {
            c.cx0 = 1;
            break;
        }
        double lam_s = half_log_snr(ab), h = half_log_snr(ab_next) - lam_s;
        double a = -sqrt(ab_next) * expm1(-h);
        c.cx = sqrt(1 - ab_next) / sqrt(1 - ab), c.cx0 = a;
        if (use_hist) {
            double r0 = (lam_s - lam_prev) / h;
            c.cx0 = a * (1 + 0.5 / r0), c.c1 = -a * 0.5 / r0;
        }
        break;
    }
    case SAMPLER_EULER_A: {
        // In x_ve = x / sqrt(ab): x_ve' = x_ve + (x_ve - x0) / sigma (sigma_down - sigma)
        // + sigma_up z, then x' = sqrt(ab') x_ve'.
        double sg = sqrt((1 - ab) / ab), sn = last ? 0.0 : sqrt((1 - ab_next) / ab_next);
        double up = sqrt(sn * sn * (sg * sg - sn * sn) / (sg * sg));
        if (up > sn) up = sn;
        double down = sqrt(sn * sn - up * up), san = sqrt(ab_next);
        c.cx = san / sqrt(ab) * (down / sg), c.cx0 = san * (1 - down / sg), c.cz = san * up;
        *noisy = sn > 0;
        break;
    }
    }
    return c;
}

int sample_run(UNet *u, const Schedule *s, float *x, int B, const SampleSpec *sp, Rng *rng) {
    if (check_spec(u, s, B, sp) < 0) return -1;
    const UNetConfig *c = &u->cfg;
    size_t n = (size_t)B * c->latent_channels * c->latent_size * c->latent_size;
    Loop l = loop_begin(u, s, sp, B, n);
    int use_hist = 0;
    double lam_prev = 0;
    for (int k = sp->start, j = 0; k < l.nsteps; j++) {
        int ti = l.ts[k];
        double ab = s->alphas_cumprod[ti];
        loop_predict(&l, u, x, ti, B, n);
        int noisy;
        Step st = step_coefs(sp, s, &l, k, use_hist, lam_prev, &noisy);
        const float *z = noisy ? step_noise(sp->noise, j, n, rng, l.z) : NULL;
        update(x, l.out, z, l.hist, use_hist, predict_coefs(ab, sp->prediction), st, n);
        if (sp->traj) memcpy(sp->traj + (size_t)j * n, x, n * sizeof *x);
        use_hist = 1;
        lam_prev = half_log_snr(ab);
        int t_next = k + 1 < l.nsteps ? l.ts[k + 1] : -1;
        int next = sp->hook ? sp->hook(sp->ctx, x, k, t_next) : k + 1;
        CHECK(next >= sp->start && next <= k + 1);
        if (next <= k) use_hist = 0;
        k = next;
    }
    loop_end(&l, u);
    return 0;
}

int ddim_sample(UNet *u, const Schedule *s, float *x, int B, int steps, float eta,
                int prediction, Rng *rng) {
    SampleSpec sp = sample_spec(SAMPLER_DDIM, steps, prediction);
    sp.eta = eta;
    return sample_run(u, s, x, B, &sp, rng);
}
