// klgan.h: the `kl-gan` autoencoder loss of ../shared/spec/default-models.md
// (latent-diffusion's LPIPSWithDiscriminator) over a vae-kl autoencoder, the
// patchgan-d3 discriminator and, optionally, LPIPS. One training step is
//   zero ae->grads; klgan_ae_backward; Adam on the autoencoder;
//   if the discriminator is on (step >= disc_start): klgan_d_backward; Adam
//   on the discriminator (its own step count, from its first step).
// For a batch x (B, C, S, S) and eps (B, Z, h, w):
//   z = mean + exp(logvar / 2) eps, x_hat = decode(z);
//   nll = (sum |x - x_hat| + perceptual_weight * C S S * sum_b LPIPS_b) / B;
//   kl  = sum 0.5 (mean^2 + exp(logvar) - 1 - logvar) / B;
//   g   = -mean(D(x_hat)), w = adaptive weight at decoder.conv_out.weight
//         (gan_adaptive_weight, detached), both 0 while the discriminator is off;
//   autoencoder loss = nll + w g + kl_weight kl;
//   discriminator loss = hinge(D(x), D(x_hat)) on the same x_hat, detached.
// Every discriminator pass runs BatchNorm in training mode and folds its batch
// statistics into the running ones, as PyTorch does on each of its three
// passes of a step (D(x_hat) for g, then D(x), then D(x_hat) again), unless
// keep_running is set.
#pragma once
#include "kl.h"
#include "lpips.h"
#include "patchgan.h"

typedef struct {
    float kl_weight;         // 1e-6
    float disc_weight;       // 0.5
    float perceptual_weight; // 1.0; used with an Lpips only
    long disc_start;         // the 0-based step the discriminator terms start at
} KlGanConfig;

void klgan_config_default(KlGanConfig *c); // the spec's kl-gan

typedef struct {
    KlGanConfig cfg;
    KlVae *ae;
    Patchgan *d;
    Lpips *lp; // NULL: no perceptual term
    int max_batch;
    float *buf; // one allocation, carved below
    float *mean, *logvar, *z, *dmean, *dlogvar; // (B, Z, h, w)
    float *xhat, *dxhat, *dxg;                  // (B, C, S, S); dxg: d g / d x_hat
    float *lp_out, *lp_dout;                    // (B)
    float *dlogits, *real;                      // (B, 1, P, P); real: D(x)'s logits
    float *dw_nll, *dw_g;                       // (ae->last_w_size)
    const float *eps;                           // the last step's draw
    int B;                                      // batch of the last klgan_ae_backward
    // 1: the discriminator's passes leave its running statistics alone (a
    // data-parallel step folds those of its first chunk only); 0 after
    // klgan_init.
    int keep_running;
    // Figures of the last step (per-batch values as defined above).
    double loss, nll, l1, lpips, kl, g, w, d_loss, logits_real, logits_fake;
} KlGan;

// d and lp may be NULL when the discriminator or the perceptual term are never
// used (d NULL: disc_start must lie beyond the run).
void klgan_init(KlGan *g, const KlGanConfig *c, KlVae *ae, Patchgan *d, Lpips *lp,
                int max_batch);
void klgan_free(KlGan *g);
// The autoencoder's loss on x with the reparameterisation noise eps: returns
// it and ACCUMULATES its gradient into ae->grads (the caller zeroes them);
// `disc` (step >= disc_start) switches the discriminator terms on. The
// discriminator's own gradients are left zero.
double klgan_ae_backward(KlGan *g, const float *x, const float *eps, int B, int disc);
// The discriminator's hinge loss on x and the x_hat of the last
// klgan_ae_backward: returns it and WRITES its gradient into d->grads.
double klgan_d_backward(KlGan *g, const float *x);
