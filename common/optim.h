// optim.h: Adam/AdamW, global-norm gradient clipping and EMA over flat
// parameter buffers (see params.h: params, grads, m, v share offsets).
#pragma once
#include <stddef.h>

// Hyperparameters in double, as torch keeps them (Python floats).
typedef struct {
    double lr, beta1, beta2, eps, weight_decay;
    int decoupled; // 1: AdamW (decay applied to the weights), 0: Adam (L2 in grad)
} AdamConfig;

// One step; `step` is the 1-based update number (bias correction).
void adam_update(float *params, const float *grads, float *m, float *v,
                 size_t n, const AdamConfig *c, long step);
// Scales grads so the global L2 norm is at most max_norm (PyTorch's
// clip_grad_norm_: coef = max_norm / (norm + 1e-6), applied when < 1).
// Returns the norm before clipping (accumulated in double).
double clip_grad_norm(float *grads, size_t n, double max_norm);
// ema = decay * ema + (1 - decay) * params.
void ema_update(float *ema, const float *params, size_t n, float decay);
// The latent-diffusion warm-up: min(max_decay, (1 + n) / (10 + n)), n >= 1.
float ema_decay(float max_decay, long n);
