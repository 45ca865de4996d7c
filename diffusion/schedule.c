// schedule.c: noise schedules, q_sample and targets.
#include "schedule.h"

#include <math.h>
#include <string.h>

#include "common.h"

int schedule_init(Schedule *s, int T, const char *kind, const char *where) {
    memset(s, 0, sizeof *s);
    if (T < 1) return errorf("%s: the schedule's T must be at least 1, got %d", where, T);
    int linear = strcmp(kind, "linear") == 0, cosine = strcmp(kind, "cosine") == 0;
    if (!linear && !cosine)
        return errorf("%s: unknown noise schedule '%s' (linear or cosine)", where, kind);
    s->T = T;
    s->betas = xmalloc((size_t)T * sizeof(double));
    s->alphas_cumprod = xmalloc((size_t)T * sizeof(double));
    s->posterior_variance = xmalloc((size_t)T * sizeof(double));
    for (int t = 0; t < T; t++) {
        if (linear) {
            s->betas[t] = T == 1 ? 1e-4 : 1e-4 + (0.02 - 1e-4) * t / (T - 1);
        } else {
            // f(t) = cos^2(((t / T) + s) / (1 + s) * pi / 2); beta_t = 1 - f(t+1) / f(t)
            const double so = 0.008, hp = acos(-1.0) / 2;
            double f0 = cos(((double)t / T + so) / (1 + so) * hp);
            double f1 = cos(((double)(t + 1) / T + so) / (1 + so) * hp);
            double b = 1 - (f1 * f1) / (f0 * f0);
            s->betas[t] = b < 0.999 ? b : 0.999;
        }
    }
    double ab = 1.0;
    for (int t = 0; t < T; t++) {
        double prev = ab;
        ab *= 1 - s->betas[t];
        s->alphas_cumprod[t] = ab;
        s->posterior_variance[t] = s->betas[t] * (1 - prev) / (1 - ab);
    }
    return 0;
}

void schedule_free(Schedule *s) {
    free(s->betas);
    free(s->alphas_cumprod);
    free(s->posterior_variance);
    memset(s, 0, sizeof *s);
}

int prediction_from_name(const char *name, const char *where) {
    if (strcmp(name, "eps") == 0) return PRED_EPS;
    if (strcmp(name, "v") == 0) return PRED_V;
    return errorf("%s: unknown prediction '%s' (eps or v)", where, name);
}

const char *prediction_name(int prediction) { return prediction == PRED_V ? "v" : "eps"; }

// out = a * x + c * y over n elements.
static void combine(float *out, const float *x, const float *y, double a, double c, size_t n) {
    float fa = (float)a, fc = (float)c;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = fa * x[i] + fc * y[i];
}

void q_sample(float *xt, const Schedule *s, const float *x0, const float *noise,
              const int *t, int B, size_t n) {
    for (int b = 0; b < B; b++) {
        CHECK(t[b] >= 0 && t[b] < s->T);
        double ab = s->alphas_cumprod[t[b]];
        size_t o = (size_t)b * n;
        combine(xt + o, x0 + o, noise + o, sqrt(ab), sqrt(1 - ab), n);
    }
}

void diffusion_target(float *target, const Schedule *s, int prediction, const float *x0,
                      const float *noise, const int *t, int B, size_t n) {
    CHECK(prediction == PRED_EPS || prediction == PRED_V);
    if (prediction == PRED_EPS) {
        memcpy(target, noise, (size_t)B * n * sizeof *target);
        return;
    }
    for (int b = 0; b < B; b++) {
        CHECK(t[b] >= 0 && t[b] < s->T);
        double ab = s->alphas_cumprod[t[b]];
        size_t o = (size_t)b * n;
        combine(target + o, x0 + o, noise + o, -sqrt(1 - ab), sqrt(ab), n);
    }
}
