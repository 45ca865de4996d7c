// phase_conv.h: 4x4 stride-2 pad-1 convolutions and transposed convolutions
// (the VAE's down- and upsampling) as 3x3 stride-1 convolutions, so that they
// run as Winograd F(4x4, 3x3) (winograd.h) with 1.78x fewer multiplications
// than im2col + GEMM.
//
// Split a tensor into its 2 x 2 phases, x_(py,px)[y][x] = x[2y + py][2x + px]
// (space-to-depth, channel c -> 4c + 2py + px). Then
// - conv: a 4x4 stride-2 tap ky on output row Y reads input row
//   2Y - 1 + ky = 2(Y + j - 1) + py with ky = 2j - 1 + py, j = 0..2: a 3x3
//   stride-1 pad-1 conv over the (4C, H/2, W/2) phases, whose weight
//   w3 (OC, 4C, 3, 3) holds w's taps where 0 <= ky, kx <= 3 and zeros
//   elsewhere (each phase uses 2 x 2 of the 3 x 3 taps);
// - transposed conv: output row 2Y + qy gets input row Y + j - 1 through tap
//   ky = 3 + qy - 2j: a 3x3 stride-1 pad-1 conv over the input making
//   4 OC channels, the output's phases (depth-to-space after it).
// The backward passes are the adjoints: Winograd's backward on the phase
// tensors, then the taps of dw3 added into dw.
#ifndef LDM_PHASE_CONV_H
#define LDM_PHASE_CONV_H

#include <stddef.h>

// conv2d: in (B, C, H, W), H and W even, w (OC, C, 4, 4), b (OC) or NULL ->
// out (B, OC, H/2, W/2).
size_t phase_conv_scratch_floats(int B, int C, int H, int W, int OC);
void phase_conv_forward(float *out, const float *in, const float *w, const float *b,
                        int B, int C, int H, int W, int OC, float *scratch);
// din (+)= (acc), dw += ; din may be NULL. The bias gradient is the caller's.
void phase_conv_backward(float *din, float *dw, const float *dout, const float *in,
                         const float *w, int B, int C, int H, int W, int OC,
                         float *scratch, int acc);

// conv_transpose2d: in (B, C, H, W), w (C, OC, 4, 4) (PyTorch's layout), b (OC)
// or NULL -> out (B, OC, 2H, 2W).
size_t phase_convt_scratch_floats(int B, int C, int H, int W, int OC);
void phase_convt_forward(float *out, const float *in, const float *w, const float *b,
                         int B, int C, int H, int W, int OC, float *scratch);
void phase_convt_backward(float *din, float *dw, const float *dout, const float *in,
                          const float *w, int B, int C, int H, int W, int OC,
                          float *scratch, int acc);

#endif
