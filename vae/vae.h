// vae.h: the `vae-f4c4` VAE of ../shared/spec/default-models.md, configurable.
// Encoder: image (C, S, S) -> mean, logvar (Z, S/4, S/4); decoder back.
// Parameter keys follow tests/reference/vae_mirror.py's state_dict().
#pragma once
#include "params.h"

typedef struct {
    int in_channels;     // C: 1 or 3
    int image_size;      // S: a multiple of 4
    int base_channels;   // 32: widths base, 2*base, 4*base
    int latent_channels; // Z: 4
    float kl_weight;     // beta: 1e-3
} VaeConfig;

void vae_config_default(VaeConfig *c); // the spec's vae-f4c4 on fmnist32

typedef struct {
    VaeConfig cfg;
    int max_batch;
    ParamTable table;
    float *params, *grads; // (table.total) each
    // Activations for max_batch items, one allocation carved by vae.c.
    float *acts;
    float *scratch;
    // Results of the last vae_forward (per-item averages over the batch):
    float loss, rec, kl;
    int B; // batch of the last forward
} Vae;

// Builds the table and allocates params, grads and activations for up to
// max_batch items. Parameter values are NOT initialised: call
// params_init_values(&vae.table, vae.params, rng) or load a checkpoint.
void vae_init(Vae *v, const VaeConfig *c, int max_batch);
void vae_free(Vae *v);
// Latent side: image_size / 4.
int vae_latent_size(const VaeConfig *c);

// Training forward: x (B, C, S, S) in [-1, 1], eps (B, Z, h, w) ~ N(0, 1).
// Returns the loss (negative ELBO averaged over the batch):
//   rec = sum over pixels (x - x_hat)^2, kl = sum over latent elements of
//   0.5 (mean^2 + exp(logvar) - 1 - logvar), loss = rec + kl_weight * kl,
// each averaged over the batch (also stored in v->loss, v->rec, v->kl).
float vae_forward(Vae *v, const float *x, const float *eps, int B);
// Accumulates d loss / d params into v->grads (caller zeroes them).
void vae_backward(Vae *v);

// Inference. mean, logvar (B, Z, h, w); logvar clamped to [-30, 20].
// Both reuse the training activations, so they must not come between a
// vae_forward and its vae_backward (vae_backward aborts if they do).
void vae_encode(Vae *v, float *mean, float *logvar, const float *x, int B);
// z (B, Z, h, w) -> x_hat (B, C, S, S) (not clamped).
void vae_decode(Vae *v, float *xhat, const float *z, int B);
