// sampler.h: DDPM (ancestral) and DDIM samplers of ../shared/spec/default-models.md.
// x (B, Z, h, w) holds x_T on entry and x_0 on return. The per-step noise
// comes from `rng` (a counter-based stream, so results do not depend on the
// thread count) or, for replaying a reference, from a caller's buffer.
// Both return 0, or -1 with a message for settings a user can get wrong.
#pragma once
#include "rng.h"
#include "schedule.h"
#include "unet.h"

// DDIM with `steps` steps: timesteps t_i = i * (T / steps) visited from
// i = steps-1 down to 0; the last step uses alpha_bar_prev = 1; x0 is not
// clipped. eta >= 0 scales the per-step noise (0: deterministic, rng unused).
int ddim_sample(UNet *u, const Schedule *s, float *x, int B, int steps, float eta,
                int prediction, Rng *rng);
// DDPM over all T steps with the posterior variance beta_tilde.
int ddpm_sample(UNet *u, const Schedule *s, float *x, int B, int prediction, Rng *rng);

// The same with two optional buffers, (nsteps, B, Z, h, w) each, entry k for
// the k-th step taken (nsteps = steps for DDIM, T for DDPM):
//   noise: when non-NULL, the per-step N(0, I) noise, used instead of rng
//          (entries of steps that add no noise are ignored);
//   traj:  when non-NULL, receives x after every step.
int ddim_sample_ex(UNet *u, const Schedule *s, float *x, int B, int steps, float eta,
                   int prediction, Rng *rng, const float *noise, float *traj);
int ddpm_sample_ex(UNet *u, const Schedule *s, float *x, int B, int prediction, Rng *rng,
                   const float *noise, float *traj);
