// layers_gan.h: the kernels of the GAN autoencoder loss (latent-diffusion's
// LPIPSWithDiscriminator) and its patch discriminator, implemented in
// layers_norm.c: BatchNorm in training mode, LeakyReLU, L1, the hinge and
// generator losses on discriminator logits, the adaptive weight.
// Conventions as in layers.h: outputs first, then inputs, then dims; float32
// NCHW; backward functions ACCUMULATE (+=) into every gradient they write
// unless named *_set; a NULL input gradient means "not needed". Every sum
// runs in double in an order fixed by the shapes, never by the thread count.
#pragma once
#include <stddef.h>

// ---- BatchNorm2d in training mode: in (B, C, HW), affine w, b (C), eps 1e-5.
// Each channel is normalised with its batch statistics over the B * HW
// values (biased variance), as PyTorch does on every training-mode pass.
// Saves mean, rstd (C) (rstd = 1 / sqrt(var + eps)) for the backward and for
// batchnorm_update_running. B * HW must be at least 2.
#define BATCHNORM_EPS 1e-5
void batchnorm_forward(float *out, float *mean, float *rstd, const float *in,
                       const float *w, const float *b, int B, int C, int HW);
void batchnorm_backward(float *din, float *dw, float *db, const float *dout,
                        const float *in, const float *mean, const float *rstd,
                        const float *w, int B, int C, int HW);
// The running averages PyTorch keeps beside a training-mode pass (they are
// only stored here, never used to normalise): with n = B * HW values a
// channel, running_mean (C) = (1 - momentum) running_mean + momentum mean,
// running_var (C) = (1 - momentum) running_var + momentum var * n / (n - 1)
// (unbiased), var recovered from the saved rstd. PyTorch's momentum: 0.1.
void batchnorm_update_running(float *running_mean, float *running_var, const float *mean,
                              const float *rstd, int C, size_t n, float momentum);

// ---- LeakyReLU, elementwise over n: x if x > 0 else slope * x (slope > 0;
// the spec's 0.2). In-place forward (out == in) is allowed. The backward
// takes x as either the forward's input or its output (they have the same
// sign), so an in-place forward needs no copy; at x == 0 the gradient is
// slope * dout, as PyTorch's. The _set form writes din (=) and may run in
// place (din == dout).
#define LRELU_SLOPE 0.2f
void leaky_relu_forward(float *out, const float *in, float slope, size_t n);
void leaky_relu_backward(float *din, const float *dout, const float *x, float slope,
                         size_t n);
void leaky_relu_backward_set(float *din, const float *dout, const float *x, float slope,
                             size_t n);

// ---- L1: returns sum over n of |a - b| (accumulated in double); backward
// adds scale * sign(a - b) to da, and 0 where a == b (PyTorch's subgradient
// of abs at 0). The kl-gan nll is scale = 1 / B.
double l1_forward(const float *a, const float *b, size_t n);
void l1_backward(float *da, const float *a, const float *b, size_t n, float scale);

// ---- hinge discriminator loss on patch logits real (n_real), fake (n_fake):
// returns 0.5 * (mean(relu(1 - real)) + mean(relu(1 + fake))). The backward
// adds scale * its gradient to dreal and dfake (either may be NULL); at the
// kinks (real == 1, fake == -1) the gradient is 0, as PyTorch's relu's.
double hinge_d_loss_forward(const float *real, const float *fake, size_t n_real,
                            size_t n_fake);
void hinge_d_loss_backward(float *dreal, float *dfake, const float *real, const float *fake,
                           size_t n_real, size_t n_fake, float scale);

// ---- generator term g = -mean(fake) over n logits; its gradient is the
// constant -1/n: the backward adds -scale / n to every element of dfake.
double gan_g_loss_forward(const float *fake, size_t n);
void gan_g_loss_backward(float *dfake, size_t n, float scale);

// ---- latent-diffusion's adaptive weight of the generator term, from the two
// gradients of one weight tensor (n values each; the decoder's last conv):
// clamp(||grad_nll|| / (||grad_g|| + 1e-4), 0, 1e4) * disc_weight, norms in
// double. The caller uses it as a constant (it is detached).
double gan_adaptive_weight(const float *grad_nll, const float *grad_g, size_t n,
                           double disc_weight);
