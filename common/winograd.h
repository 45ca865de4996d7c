// winograd.h: 3x3, stride-1, padding-1 convolutions by Winograd's minimal
// filtering F(4x4, 3x3) (Lavin and Gray, "Fast Algorithms for Convolutional
// Neural Networks", 2015): each 4x4 output tile is computed from a 6x6 input
// tile with 36 multiplications per (input, output) channel pair instead of
// 144, as 36 GEMMs (one per point of the transformed 6x6 tile) over the batch.
// The backward runs the adjoint of every step, so the input gradient and the
// weight gradient get the same 4x fewer multiplications.
// Used by conv2d_forward/backward (layers.h) for k = 3, s = 1, p = 1; same
// conventions: in (B, C, H, W), w (OC, C, 3, 3), b (OC) -> out (B, OC, H, W).
// Results do not depend on the thread count: every output element comes from
// one single-threaded GEMM, and the batch is split into fixed chunks.
#pragma once
#include <stddef.h>

size_t winograd_scratch_floats(int B, int C, int H, int W, int OC);
// The transformed weights U of w, for a caller that runs the same weights
// many times (sampling): winograd_weights_floats(C, OC) floats.
size_t winograd_weights_floats(int C, int OC);
void winograd_weights(float *U, const float *w, int C, int OC);
// out = conv(in, w) + b (b may be NULL); U: w transformed by
// winograd_weights, or NULL to transform w here.
void winograd_conv_forward(float *out, const float *in, const float *w, const float *U,
                           const float *b, int B, int C, int H, int W, int OC,
                           float *scratch);
// dw += d/dw; din += d/din (acc) or din = d/din (!acc); din may be NULL.
// The bias gradient is left to the caller.
void winograd_conv_backward(float *din, float *dw, const float *dout, const float *in,
                            const float *w, int B, int C, int H, int W, int OC,
                            float *scratch, int acc);
