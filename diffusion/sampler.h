// sampler.h: the samplers of ../shared/spec/default-models.md and issue 14,
// behind one entry point, sample_run():
//   SAMPLER_DDPM     ancestral DDPM over all T steps, posterior variance beta_tilde;
//   SAMPLER_DDIM     DDIM, eta >= 0 scales the per-step noise (0: deterministic);
//   SAMPLER_DPMPP2M  DPM-Solver++(2M) (Lu et al., 2022, "DPM-Solver++: Fast
//                    Solver for Guided Sampling of Diffusion Probabilistic
//                    Models"): multistep, second order, data (x0) prediction,
//                    midpoint form; the first step run (also at an img2img
//                    start, and the first after a hook's jump back) and the
//                    last step are first order (the last one lands on
//                    alpha_bar = 1, where log-SNR is infinite), as diffusers'
//                    DPMSolverMultistepScheduler does with lower_order_final.
//                    Deterministic.
//   SAMPLER_EULER_A  Euler-ancestral as k-diffusion's sample_euler_ancestral
//                    with eta 1, run in the variance-exploding form
//                    x_ve = x / sqrt(alpha_bar), sigma = sqrt((1 - ab) / ab),
//                    final sigma 0.
// All four work for eps- and v-prediction, on unconditional and
// class-conditional UNets, with classifier-free guidance.
//
// Timesteps: DDPM visits T-1, ..., 0. The others take `steps` steps at
// t_i = i * (T / steps) (integer division), i = steps-1 down to 0: the same
// grid for all three (DDIM's "leading" spacing), so they compare step for step
// and share one img2img start; every sampler's last step lands on
// alpha_bar = 1 (x_0, no noise added). x0 is never clipped (latent space).
// The grid's first step is t = (steps - 1) * (T / steps), not T - 1 (950 for
// 20 of 1000 steps, 980 for 50): runs of different step counts start x_T at
// different t.
//
// The state between steps is always the variance-preserving x_t at the next
// step's timestep (also for Euler-a, which converts in and out inside a step),
// so `start`, a hook and the trajectory see the same kind of x whatever the
// sampler.
//
// Scalar coefficients are computed in double from the schedule; the per-element
// updates are float and elementwise, and the step noise comes from a
// counter-based stream, so results do not depend on the thread count.
#pragma once
#include "rng.h"
#include "schedule.h"
#include "unet.h"

typedef enum { SAMPLER_DDPM, SAMPLER_DDIM, SAMPLER_DPMPP2M, SAMPLER_EULER_A } SamplerKind;

// "ddpm", "ddim", "dpmpp2m", "euler_a" -> the kind; -1 with a message naming
// `where` (a flag) otherwise.
int sampler_from_name(const char *name, const char *where);
const char *sampler_name(SamplerKind kind);

// Called after step k (x now holds x at timestep t_next, -1 after the last
// step: x_0). A hook may change x (inpainting puts the known region, noised to
// t_next, back in). It returns the index of the step to run next: k + 1 to go
// on, or j <= k after setting x to x at the timestep of step j (RePaint's jump
// back; the sampler then starts a fresh history: DPM-Solver++ takes a first
// order step). Values outside [start, k + 1] are a programmer error.
typedef int (*SampleHook)(void *ctx, float *x, int k, int t_next);

typedef struct {
    SamplerKind kind;
    int steps;      // 1..T; DDPM ignores it (it always takes all T steps)
    float eta;      // DDIM only, >= 0; Euler-a always runs at eta 1
    int prediction; // PRED_EPS or PRED_V
    // (B) class labels in 0..K (K = num_classes: the null class). NULL: the
    // null class on a conditional UNet; must be NULL on an unconditional one.
    const int *y;
    // Classifier-free guidance scale w >= 0: the network output used is
    // o(x, t, K) + w (o(x, t, y) - o(x, t, K)) (o: eps or v as the model
    // predicts). w = 1 is the plain conditional model (one pass), w = 0 the
    // unconditional one (one pass with the null class); any other w with labels
    // runs the conditional and the null pass as ONE batched unet_forward of 2B
    // items, so the UNet must be built with max_batch >= 2B (CHECKed). Without
    // labels w has no effect. On an unconditional UNet w must be 1.
    float guidance;
    // img2img: the index of the first step to run (0: from pure noise); x holds
    // x at that step's timestep (sampler_timesteps) on entry, e.g. from q_sample.
    int start;
    SampleHook hook; // NULL: none
    void *ctx;       // passed to hook
    // Optional buffers of (runs, B, Z, h, w), entry j for the j-th step this
    // call runs (j = 0 for step `start`; a hook's jump back makes more runs
    // than steps, and the caller sizes the buffers for them):
    //   noise: the per-step N(0, I) noise, used instead of rng (entries of
    //          steps that add no noise are ignored);
    //   traj:  receives x after every step (before the hook sees it).
    const float *noise;
    float *traj;
} SampleSpec;

// A spec with the defaults: eta 0, no labels, guidance 1, start 0, no hook,
// no replay or trajectory buffers.
SampleSpec sample_spec(SamplerKind kind, int steps, int prediction);

// The number of steps n of the spec's sampler on schedule s (T for DDPM) and,
// when ts is not NULL, their timesteps ts[0..n) in the order they run (step k
// takes x from timestep ts[k] to ts[k + 1], the last one to x_0). -1 with a
// message for steps outside 1..T.
int sampler_timesteps(const SampleSpec *sp, const Schedule *s, int *ts);

// x (B, Z, h, w) holds x_T (or x at step sp->start) on entry and x_0 on
// return. The per-step noise comes from sp->noise or rng (NULL is fine for a
// deterministic sampler). 0, or -1 with a message for a setting a user can
// get wrong (steps, eta, guidance, labels, start). Fixes the UNet's weights
// for the loop (unet_fix_weights) and releases them on return.
int sample_run(UNet *u, const Schedule *s, float *x, int B, const SampleSpec *sp, Rng *rng);

// DDIM in one call (ldm-train's preview samples).
int ddim_sample(UNet *u, const Schedule *s, float *x, int B, int steps, float eta,
                int prediction, Rng *rng);
