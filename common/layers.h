// layers.h: forward/backward kernel pairs shared by both stages.
// Conventions (llm.c): outputs first, then inputs, then dims. Tensors are
// float32 NCHW. Backward functions ACCUMULATE (+=) into every gradient they
// write (dinp, dweight, dbias), so callers zero gradients once per step.
// A NULL input gradient pointer means "not needed" (e.g. the first layer).
// `scratch` buffers are owned by the caller (allocated once, outside the
// step loop) and sized by the matching *_scratch_floats() function.
#pragma once
#include <stddef.h>

// ---- conv2d: in (B, C, H, W), w (OC, C, k, k), b (OC) -> out (B, OC, OH, OW)
// OH = (H + 2p - k) / s + 1. 3x3 stride-1 pad-1 convs with 16+ channels a
// side run as Winograd F(4x4, 3x3) (winograd.h), 4x4 stride-2 pad-1 ones
// with 4C and OC >= 16 through it on 2x2 phases (phase_conv.h), 1x1 convs
// as plain GEMMs, the rest as im2col + GEMM in chunks of images. b may be
// NULL (no bias).
size_t conv2d_scratch_floats(int B, int C, int H, int W, int OC, int k, int s, int p);
void conv2d_forward(float *out, const float *in, const float *w, const float *b,
                    int B, int C, int H, int W, int OC, int k, int s, int p,
                    float *scratch);
void conv2d_backward(float *din, float *dw, float *db, const float *dout,
                     const float *in, const float *w,
                     int B, int C, int H, int W, int OC, int k, int s, int p,
                     float *scratch);
// Prepared weights: the 3x3 stride-1 convs with 16+ channels a side run as
// Winograd on transformed weights; a caller that runs the same weights many
// times (sampling) transforms them once with conv2d_prep into
// conv2d_prep_floats() floats (0 for a conv that has none; prep is then
// unused and may be NULL) and passes them to conv2d_forward_prep, which is
// conv2d_forward otherwise (prep NULL: the same as conv2d_forward).
size_t conv2d_prep_floats(int C, int OC, int k, int s, int p);
void conv2d_prep(float *prep, const float *w, int C, int OC, int k, int s, int p);
void conv2d_forward_prep(float *out, const float *in, const float *w, const float *prep,
                         const float *b, int B, int C, int H, int W, int OC, int k, int s,
                         int p, float *scratch);

// ---- conv_transpose2d: in (B, C, H, W), w (C, OC, k, k) (PyTorch layout),
// b (OC) -> out (B, OC, OH, OW), OH = (H - 1) * s - 2p + k. 4x4 stride-2
// pad-1 ones with C and 4 OC >= 16 run through Winograd (phase_conv.h).
size_t conv_transpose2d_scratch_floats(int B, int C, int H, int W, int OC, int k, int s, int p);
void conv_transpose2d_forward(float *out, const float *in, const float *w,
                              const float *b, int B, int C, int H, int W,
                              int OC, int k, int s, int p, float *scratch);
void conv_transpose2d_backward(float *din, float *dw, float *db,
                               const float *dout, const float *in,
                               const float *w, int B, int C, int H, int W,
                               int OC, int k, int s, int p, float *scratch);

// ---- linear: in (N, IN), w (OUT, IN), b (OUT) -> out (N, OUT)
void linear_forward(float *out, const float *in, const float *w, const float *b,
                    int N, int IN, int OUT);
void linear_backward(float *din, float *dw, float *db, const float *dout,
                     const float *in, const float *w, int N, int IN, int OUT);

// ---- SiLU, elementwise over n. In-place forward (out == in) is allowed.
void silu_forward(float *out, const float *in, size_t n);
void silu_backward(float *din, const float *dout, const float *in, size_t n);

// ---- GroupNorm: in (B, C, HW), G groups, affine w, b (C), eps 1e-5 (the
// UNet's, PyTorch's default); the _eps form takes another (latent-diffusion's
// autoencoder: 1e-6). Saves mean, rstd (B, G) for the backward, which needs
// no eps.
void groupnorm_forward(float *out, float *mean, float *rstd, const float *in,
                       const float *w, const float *b, int B, int C, int HW, int G);
void groupnorm_forward_eps(float *out, float *mean, float *rstd, const float *in,
                           const float *w, const float *b, int B, int C, int HW, int G,
                           double eps);
void groupnorm_backward(float *din, float *dw, float *db, const float *dout,
                        const float *in, const float *mean, const float *rstd,
                        const float *w, int B, int C, int HW, int G);
// ---- GroupNorm then SiLU: act = SiLU(GroupNorm(in)), the same shapes and
// statistics as groupnorm_forward, without storing the GroupNorm output (the
// backward recomputes it from in, mean and rstd). dact is d loss / d act.
// The backward needs groupnorm_silu_scratch_floats() of scratch.
void groupnorm_silu_forward(float *act, float *mean, float *rstd, const float *in,
                            const float *w, const float *b, int B, int C, int HW, int G);
void groupnorm_silu_forward_eps(float *act, float *mean, float *rstd, const float *in,
                                const float *w, const float *b, int B, int C, int HW,
                                int G, double eps);
size_t groupnorm_silu_scratch_floats(int B, int C, int HW);
void groupnorm_silu_backward(float *din, float *dw, float *db, const float *dact,
                             const float *in, const float *mean, const float *rstd,
                             const float *w, const float *b, int B, int C, int HW, int G,
                             float *scratch);
// The spec's group count: 32, or fewer when C < 32 (largest divisor of C <= 32).
int groupnorm_groups(int C);

// ---- nearest upsampling x2: in (B, C, H, W) -> out (B, C, 2H, 2W)
void upsample2x_forward(float *out, const float *in, int B, int C, int H, int W);
void upsample2x_backward(float *din, const float *dout, int B, int C, int H, int W);

// ---- concatenation on channels: a (B, Ca, HW), b (B, Cb, HW) -> out (B, Ca+Cb, HW)
void concat_channels_forward(float *out, const float *a, const float *b,
                             int B, int Ca, int Cb, int HW);
void concat_channels_backward(float *da, float *db, const float *dout,
                              int B, int Ca, int Cb, int HW);

// ---- add a per-(item, channel) value over space: x (B, C, HW) += v (B, C)
void add_channel_bias_forward(float *x, const float *v, int B, int C, int HW);
void add_channel_bias_backward(float *dv, const float *dx, int B, int C, int HW);

// ---- squared error: returns sum over n of (a - b)^2 (accumulated in double);
// backward adds scale * 2 * (a - b) to da. MSE is scale = 1 / n.
double sq_err_forward(const float *a, const float *b, size_t n);
void sq_err_backward(float *da, const float *a, const float *b, size_t n, float scale);

// ---- Gaussian KL to N(0, I): returns sum over n of
// 0.5 * (mean^2 + exp(logvar) - 1 - logvar); backward adds scale * d/d(.)
double gaussian_kl_forward(const float *mean, const float *logvar, size_t n);
void gaussian_kl_backward(float *dmean, float *dlogvar, const float *mean,
                          const float *logvar, size_t n, float scale);

// ---- multi-head self-attention over T = H*W positions, channel-major inputs
// as they come out of 1x1 convs: q, k, v (B, C, T); heads split C into
// heads x (C / heads). att (B, heads, T, T) saves the softmax probabilities
// of softmax(q.k / sqrt(C / heads)) over keys. out (B, C, T).
void attention_forward(float *out, float *att, const float *q, const float *k,
                       const float *v, int B, int C, int T, int heads);
void attention_backward(float *dq, float *dk, float *dv, const float *dout,
                        const float *att, const float *q, const float *k,
                        const float *v, int B, int C, int T, int heads,
                        float *scratch);
size_t attention_scratch_floats(int B, int C, int T, int heads);

// ---- sinusoidal time embedding: t (B) integer steps -> out (B, dim);
// first half sin, second half cos, freq_i = exp(-ln(10000) * i / (dim/2)).
void timestep_embedding(float *out, const int *t, int B, int dim);

// ---- '=' variants of backward kernels: the same computation, but the input
// gradient din is written (=) instead of accumulated (+=), so a caller whose
// din has no other contributor skips zeroing it first. Weight and bias
// gradients still accumulate. din (dq, dk, dv) must not be NULL.
void conv2d_backward_set(float *din, float *dw, float *db, const float *dout,
                         const float *in, const float *w,
                         int B, int C, int H, int W, int OC, int k, int s, int p,
                         float *scratch);
void conv_transpose2d_backward_set(float *din, float *dw, float *db,
                                   const float *dout, const float *in,
                                   const float *w, int B, int C, int H, int W,
                                   int OC, int k, int s, int p, float *scratch);
void silu_backward_set(float *din, const float *dout, const float *in, size_t n);
void groupnorm_silu_backward_set(float *din, float *dw, float *db, const float *dact,
                                 const float *in, const float *mean, const float *rstd,
                                 const float *w, const float *b, int B, int C, int HW,
                                 int G, float *scratch);
void attention_backward_set(float *dq, float *dk, float *dv, const float *dout,
                            const float *att, const float *q, const float *k,
                            const float *v, int B, int C, int T, int heads,
                            float *scratch);
