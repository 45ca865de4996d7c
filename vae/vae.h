// vae.h: the first stage, either family of ../shared/spec/default-models.md:
// the `vae-f4c4` VAE (this file; keys of tests/reference/vae_mirror.py) or
// the `vae-kl` autoencoder (kl.h). Encoder: image (C, S, S) -> mean, logvar
// (Z, h, h); decoder back. vae_init/free/encode/decode/latent_size dispatch
// on cfg.arch, so the tools take either; training the kl family goes
// through kl.h's pieces (v->klv).
#pragma once
#include "kl.h"
#include "params.h"

typedef enum { VAE_ARCH_F4C4 = 0, VAE_ARCH_KL = 1 } VaeArch;

typedef struct {
    VaeArch arch;        // VAE_ARCH_F4C4 (0: a zeroed config is one) or VAE_ARCH_KL
    // Both families: C, S and Z (for VAE_ARCH_KL copies of kl's, set by
    // vae_config_kl).
    int in_channels;     // C: 1 or 3
    int image_size;      // S: f4c4: a multiple of 4
    int base_channels;   // f4c4: 32: widths base, 2*base, 4*base (kl: kl.ch)
    int latent_channels; // Z: 4
    float kl_weight;     // f4c4's beta: 1e-3
    KlConfig kl;         // VAE_ARCH_KL: the autoencoder
} VaeConfig;

void vae_config_default(VaeConfig *c); // the spec's vae-f4c4 on fmnist32
// c = the kl family with configuration k (which must pass kl_config_check).
void vae_config_kl(VaeConfig *c, const KlConfig *k);

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
    // VAE_ARCH_KL: the autoencoder; table, params and grads above are its
    // (every vae_encode/vae_decode runs on v->params, so it may point at an
    // EMA copy; point it back before vae_free). acts and scratch are unused;
    // its training activations come with the first kl_*_forward (kl.h).
    KlVae klv;
} Vae;

// Builds the table and allocates params, grads and activations for up to
// max_batch items. Parameter values are NOT initialised: call
// params_init_values(&vae.table, vae.params, rng) (PyTorch's defaults for
// both families) or load a checkpoint.
void vae_init(Vae *v, const VaeConfig *c, int max_batch);
void vae_free(Vae *v);
// Latent side: f4c4 image_size / 4, kl image_size / 2^(levels - 1).
int vae_latent_size(const VaeConfig *c);

// Training forward: x (B, C, S, S) in [-1, 1], eps (B, Z, h, w) ~ N(0, 1).
// Returns the loss (negative ELBO averaged over the batch):
//   rec = sum over pixels (x - x_hat)^2, kl = sum over latent elements of
//   0.5 (mean^2 + exp(logvar) - 1 - logvar), loss = rec + kl_weight * kl,
// each averaged over the batch (also stored in v->loss, v->rec, v->kl).
float vae_forward(Vae *v, const float *x, const float *eps, int B);
// Accumulates d loss / d params into v->grads (caller zeroes them).
// vae_forward and vae_backward are the f4c4 family's (its ELBO); the kl
// family trains through kl.h on v->klv.
void vae_backward(Vae *v);

// Inference, either family. mean, logvar (B, Z, h, w); logvar clamped to [-30, 20].
// f4c4: both reuse the training activations, so they must not come between
// a vae_forward and its vae_backward (vae_backward aborts if they do).
// kl: kl_encode/kl_decode (kl.h), which hold only the running op's
// activations and never the training ones, so a Vae that is only loaded to
// encode or decode needs a fraction of a trained one's memory.
void vae_encode(Vae *v, float *mean, float *logvar, const float *x, int B);
// z (B, Z, h, w) -> x_hat (B, C, S, S) (not clamped).
void vae_decode(Vae *v, float *xhat, const float *z, int B);
