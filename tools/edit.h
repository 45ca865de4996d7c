// edit.h: image editing with a latent diffusion model (ldm-edit, issue 14):
// SDEdit's img2img start (Meng et al., 2022) and inpainting with RePaint's
// resampling (Lugmayr et al., 2022), on sample_run's start step and hook.
// Latents here are the UNet's: the VAE's posterior mean times the cache's
// scale factor. tests/reference/sampler_mirror.py mirrors every rule below.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "rng.h"
#include "sampler.h"
#include "schedule.h"

// The first step of an edit of strength s in (0, 1] over a sampler's n
// timesteps (sampler_timesteps): start = n - max(1, round(s n)) (round half
// away from zero), so at least one step runs; s = 1 (and any s >= 1 - 0.5/n)
// gives start 0.
int edit_start_step(double strength, int nsteps);

// x (B, n) holds N(0, I) noise on entry; on return x at the timestep of step
// sp->start: the noise itself at start 0 (pure noise: the input enters only
// through an inpainting mask, and an edit at start 0 without a mask is the
// draw ldm-sample makes from the same noise), else
// q_sample(x0, ts[start], noise) of the clean latents x0 (B, n).
void edit_start_latent(float *x, const Schedule *s, const SampleSpec *sp, const float *x0,
                       int B, size_t n);

// A mask image: pixels whose grey value (stb's luma for colour files, alpha
// ignored) is >= 128 are to fill (1), the others kept (0). A mask of another
// size than S x S is resized, nearest neighbour: pixel (x, y) takes the
// mask's pixel (floor((x + 0.5) w / S), floor((y + 0.5) h / S)); *resized
// tells. px (S, S). -1 with a message naming the file when it is not an
// image.
int edit_mask_load(uint8_t *px, const char *path, int S, int *resized);

// A latent cell is to fill (1) when any pixel of its f x f block of the pixel
// mask is (f = S / h, the VAE's downsampling). px (S, S), lat (h, h).
void edit_latent_mask(uint8_t *lat, const uint8_t *px, int S, int h);

// Inpainting as a sample_run hook. After step k (x at timestep t_next):
//  1. the known cells (fill 0, every channel) become the clean latents noised
//     to t_next, sqrt(ab_next) x0 + sqrt(1 - ab_next) z with fresh noise z
//     (B, Z, h, w), or x0 itself after the last step (t_next = -1);
//  2. with resample R > 1, R - 1 times in all per step: x goes back to the
//     step's own timestep t, x = sqrt(ab_t / ab_next) x + sqrt(1 - ab_t /
//     ab_next) z (fresh z; ab_next = 1 at t_next = -1), and step k runs
//     again (RePaint's jump of length one).
// The noise z comes from `rng` in the order it is used (a (B, Z, h, w) fill
// for 1 unless t_next = -1, then one for 2 when it jumps), or from the replay
// buffer `noise`, entry after entry, when it is not NULL (the goldens).
typedef struct {
    const Schedule *sched;
    int nsteps, *ts;     // the sampler's timesteps (ts: (nsteps))
    int B, Z, hw;        // items, latent channels, cells per channel
    int resample;        // R >= 1
    const float *x0;     // (B, Z, h, w) the clean latents (set per batch)
    const uint8_t *fill; // (B, h, w) 1: drawn, 0: kept (set per batch)
    Rng rng;             // the hook's noise (set per batch)
    const float *noise;  // replay: (draws, B, Z, h, w), or NULL
    long draws;          // noise fills used so far
    int jumps;           // jumps back done at the current step
    float *z;            // (B, Z, h, w) the current noise
} Inpaint;

void edit_inpaint_init(Inpaint *p, const Schedule *s, const SampleSpec *sp, int B, int Z,
                       int h, int resample);
void edit_inpaint_free(Inpaint *p);
// The SampleHook: sp.hook = edit_inpaint_hook, sp.ctx = the Inpaint.
int edit_inpaint_hook(void *ctx, float *x, int k, int t_next);

// Pixels blended from the input to the decoded result: up to this Euclidean
// distance (in pixels) from the mask.
#define EDIT_BLEND_PX 4
// The final image of an inpainting: out = a dec + (1 - a) in, with a = 1 on
// the mask and a = 1 - d / EDIT_BLEND_PX at Euclidean distance d from the
// nearest pixel to fill, so a = 0 from EDIT_BLEND_PX pixels on, where out is
// the input's 8-bit pixel itself; blended pixels follow the PNG pixel rule
// (image_pixel_u8). Without a mask (px NULL): the decoded image alone.
// out, in: (S, S, C) 8-bit HWC; dec (C, S, S) in [-1, 1]; px (S, S) or NULL.
void edit_composite(uint8_t *out, const uint8_t *in, const float *dec, const uint8_t *px,
                    int C, int S);
