// optim.c: Adam/AdamW, global-norm clipping and EMA over flat buffers.
// The arithmetic follows torch 1.13's single-tensor Adam/AdamW
// (torch/optim/adam.py, adamw.py) and torch.nn.utils.clip_grad_norm_.
#include "optim.h"

#include <math.h>

#include "common.h"

// Below this many elements the OpenMP fork/join costs more than the loop.
#define OMP_MIN_N 16384

void adam_update(float *params, const float *grads, float *m, float *v,
                 size_t n, const AdamConfig *c, long step) {
    CHECK(step >= 1);
    // Scalars in double as torch forms them from Python floats, then cast
    // to float as torch's float32 tensor ops do; the elementwise work is float.
    // (1 - beta2 formed from a float 0.999f would be 1.3e-5 relatively off.)
    double lr = c->lr, beta1 = c->beta1, beta2 = c->beta2, wd = c->weight_decay;
    double bc1 = 1.0 - pow(beta1, (double)step);
    double bc2 = 1.0 - pow(beta2, (double)step);
    float step_size = (float)(lr / bc1);
    float bc2_sqrt = (float)sqrt(bc2);
    float b1 = (float)beta1, b2 = (float)beta2, eps = (float)c->eps;
    float omb1 = (float)(1.0 - beta1), omb2 = (float)(1.0 - beta2);
    // AdamW shrinks the weights before the moment update; Adam folds the
    // decay into the gradient (L2 regularisation) instead.
    float shrink = (c->decoupled && wd > 0.0) ? (float)(1.0 - lr * wd) : 1.0f;
    float l2 = (!c->decoupled && wd > 0.0) ? (float)wd : 0.0f;
    #pragma omp parallel for schedule(static) if (n >= OMP_MIN_N)
    for (size_t i = 0; i < n; i++) {
        float p = params[i] * shrink;
        float g = grads[i] + l2 * p;
        float mi = m[i] * b1 + omb1 * g;
        float vi = v[i] * b2 + omb2 * g * g;
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        params[i] = p - step_size * (mi / denom);
    }
}

// The norm's partial sums: at most NORM_MAX_CHUNKS chunks of at least
// NORM_MIN_CHUNK elements. The chunking depends only on n, and the partials
// are added in chunk order, so the norm is the same at any thread count;
// the fixed-size stack array keeps the training step allocation-free.
#define NORM_MIN_CHUNK 4096
#define NORM_MAX_CHUNKS 1024

double clip_grad_norm(float *grads, size_t n, double max_norm) {
    double partial[NORM_MAX_CHUNKS];
    size_t chunk = (n + NORM_MAX_CHUNKS - 1) / NORM_MAX_CHUNKS;
    if (chunk < NORM_MIN_CHUNK) chunk = NORM_MIN_CHUNK;
    long nchunks = (long)((n + chunk - 1) / chunk);
    #pragma omp parallel for schedule(static) if (nchunks > 1)
    for (long c = 0; c < nchunks; c++) {
        size_t lo = (size_t)c * chunk;
        size_t hi = lo + chunk < n ? lo + chunk : n;
        double s = 0.0;
        for (size_t i = lo; i < hi; i++) s += (double)grads[i] * (double)grads[i];
        partial[c] = s;
    }
    double sum = 0.0;
    for (long c = 0; c < nchunks; c++) sum += partial[c];
    double norm = sqrt(sum);
    double coef = max_norm / (norm + 1e-6);
    // A NaN/inf norm gives coef NaN or 0; like torch we scale anyway (the
    // caller sees the non-finite norm it returned and decides).
    if (!(coef >= 1.0)) {
        float fc = (float)coef;
        #pragma omp parallel for schedule(static) if (n >= OMP_MIN_N)
        for (size_t i = 0; i < n; i++) grads[i] *= fc;
    }
    return norm;
}

void ema_update(float *ema, const float *params, size_t n, float decay) {
    float omd = 1.0f - decay;
    #pragma omp parallel for schedule(static) if (n >= OMP_MIN_N)
    for (size_t i = 0; i < n; i++) ema[i] = decay * ema[i] + omd * params[i];
}

float ema_decay(float max_decay, long n) {
    double warm = (1.0 + (double)n) / (10.0 + (double)n);
    return warm < (double)max_decay ? (float)warm : max_decay;
}
