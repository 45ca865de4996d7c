// patchgan.h: the `patchgan-d3` discriminator of ../shared/spec/default-models.md
// (pix2pix's NLayerDiscriminator with 3 layers, as latent-diffusion uses it):
//   Conv(4,2,1) C -> w, LeakyReLU(0.2);
//   Conv(4,2,1) w -> 2w, Conv(4,2,1) 2w -> 4w, Conv(4,1,1) 4w -> 8w, each
//     without bias, then BatchNorm (training mode), LeakyReLU(0.2);
//   Conv(4,1,1) 8w -> 1: a logit per patch, (B, 1, P, P), P = S/8 - 2.
// Parameter keys follow tests/reference/gan_mirror.py's state_dict(): the
// indices of its nn.Sequential `main` (main.0, main.2, main.3 (BatchNorm),
// main.5, main.6, main.8, main.9, main.11).
#pragma once
#include <stddef.h>

#include "params.h"

typedef struct {
    int in_channels; // C: 3
    int image_size;  // S: 64 (at least 24: P >= 1)
    int width;       // w: 32 (latent-diffusion's default is 64)
} PatchganConfig;

void patchgan_config_default(PatchganConfig *c); // the spec's patchgan-d3 on rgb64
// P, the side of the logit map (6 at S = 64); < 1 when S is too small.
int patchgan_out_size(const PatchganConfig *c);

typedef struct {
    PatchganConfig cfg;
    int max_batch;
    ParamTable table;        // the trained parameters
    float *params, *grads;   // (table.total) each
    // BatchNorm running statistics, main.{3,6,9}.running_mean and
    // .running_var: buffers, not parameters (no gradient, no optimizer
    // moments), updated only by patchgan_update_running and only stored.
    ParamTable stats;
    float *running;          // (stats.total)
    // PyTorch's num_batches_tracked (the same for the three BatchNorms):
    // updates applied so far. Unused by the update (momentum is fixed), kept
    // for the checkpoint.
    long long num_batches_tracked;
    // Activations for max_batch items, one allocation carved by patchgan.c.
    float *acts;
    float *scratch;
    int B; // batch of the last forward, 0 before any
} Patchgan;

// Builds both tables and allocates params, grads (zeroed), running statistics
// (mean 0, var 1, as PyTorch starts them) and activations for up to max_batch
// items. Parameter values are NOT initialised: call patchgan_init_values or
// load a checkpoint.
void patchgan_init(Patchgan *d, const PatchganConfig *c, int max_batch);
void patchgan_free(Patchgan *d);
// taming-transformers' weights_init: every conv weight N(0, 0.02), BatchNorm
// weights N(1, 0.02) and biases 0; the biases of the first and last convs keep
// PyTorch's default (uniform in +-1/sqrt(fan_in)). Resets the running
// statistics and num_batches_tracked.
struct Rng;
void patchgan_init_values(Patchgan *d, struct Rng *rng);

// x (B, C, S, S) -> the logits (B, 1, P, P), a pointer into d's activations
// valid until the next forward. BatchNorm normalises with the batch's own
// statistics (training mode), on every pass.
const float *patchgan_forward(Patchgan *d, const float *x, int B);
// dlogits (B, 1, P, P): d loss / d logits of the last forward. Accumulates
// d loss / d params into d->grads and, unless dx is NULL, d loss / d x into
// dx (B, C, S, S). It leaves the forward's activations intact (it may run
// again). A pass whose parameter gradients are not wanted (the autoencoder's
// generator term needs only dx) still adds them to d->grads: zero them before
// the discriminator's own backward.
void patchgan_backward(Patchgan *d, float *dx, const float *dlogits);
// Folds the last forward's batch statistics into the running ones (momentum
// 0.1, unbiased variance) and counts it in num_batches_tracked. PyTorch does
// this on every training-mode forward; the caller decides which passes count.
void patchgan_update_running(Patchgan *d);
