// schedule.h: the noise schedules of ../shared/spec/default-models.md, the
// forward process q(x_t | x_0) and the training targets (the diffusion loss,
// which runs the UNet, is loss.h).
// Schedule arrays are computed in double (as the PyTorch mirror does); the
// per-element arithmetic is float with double-derived coefficients.
#pragma once
#include <stddef.h>

typedef struct {
    int T;
    double *betas;              // (T)
    double *alphas_cumprod;     // (T) alpha_bar_t = prod_{s <= t} (1 - beta_s)
    double *posterior_variance; // (T) beta_tilde_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t),
                                //     with alpha_bar_{-1} = 1 (so beta_tilde_0 = 0)
} Schedule;

// kind: "linear" (betas 1e-4 -> 0.02 evenly over T steps) or "cosine"
// (s = 0.008, betas clipped at 0.999). -1 with a message naming `where`
// (the flag or the file the kind came from) for an unknown kind or T < 1.
int schedule_init(Schedule *s, int T, const char *kind, const char *where);
void schedule_free(Schedule *s);

// What the network predicts.
enum { PRED_EPS = 0, PRED_V = 1 };
// "eps" -> PRED_EPS, "v" -> PRED_V; -1 with a message naming `where` (the
// flag or the file the name came from) otherwise.
int prediction_from_name(const char *name, const char *where);
const char *prediction_name(int prediction);

// x0, noise, xt: (B, n) (n = Z*h*w), t (B) in [0, T).
// xt = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise.
void q_sample(float *xt, const Schedule *s, const float *x0, const float *noise,
              const int *t, int B, size_t n);
// The training target: noise (PRED_EPS) or v = sqrt(ab) noise - sqrt(1 - ab) x0.
void diffusion_target(float *target, const Schedule *s, int prediction, const float *x0,
                      const float *noise, const int *t, int B, size_t n);
