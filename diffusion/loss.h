// loss.h: the spec's diffusion training loss of a UNet on one batch, and the
// buffers it owns (schedule.h keeps the schedule arithmetic free of the UNet).
#pragma once
#include <stddef.h>

#include "schedule.h"
#include "unet.h"

typedef struct {
    int max_batch;
    size_t n; // floats of one item: Z*h*w
    int B;    // batch of the last forward
    float *xt;     // (max_batch, n): q_sample(x0, t, noise), the network input
    float *pred;   // (max_batch, n): the network output
    float *target; // (max_batch, n): diffusion_target
    float *dpred;  // (max_batch, n): d loss / d pred
} DiffusionLoss;

// Buffers for up to max_batch items of n = Z*h*w floats (the UNet's latents).
void diffusion_loss_init(DiffusionLoss *l, int max_batch, size_t n);
void diffusion_loss_free(DiffusionLoss *l);
// x_t = q_sample(x0, t, noise), loss = mean over all B*n elements of
// (unet(x_t, t) - target)^2; x0, noise (B, n), t (B). Keeps x_t, the output
// and the target in l for the backward (and for tests to read).
float diffusion_loss_forward(DiffusionLoss *l, UNet *u, const Schedule *s, int prediction,
                             const float *x0, const float *noise, const int *t, int B);
// The same with class labels y (B) in 0..K for a conditional UNet (after
// label dropout: K, the null class, where dropped); y NULL is the above.
float diffusion_loss_forward_labels(DiffusionLoss *l, UNet *u, const Schedule *s,
                                    int prediction, const float *x0, const float *noise,
                                    const int *t, const int *y, int B);
// d loss / d output into l->dpred, then unet_backward (u->grads accumulate).
// The last forward on u must be l's.
void diffusion_loss_backward(DiffusionLoss *l, UNet *u);
