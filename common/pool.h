// pool.h: pooling, resizing and ReLU kernels of the evaluation networks
// (metrics/: the FID Inception-v3, the Fashion-MNIST classifier) and of the
// LPIPS loss's VGG16 (vae/lpips.c). Forward only, except max pooling: the
// LPIPS loss sends a gradient back through VGG's max pools to the image; the
// rest only ever runs in inference. Tensors are float32 NCHW, outputs first,
// then inputs, then dims.
#pragma once
#include <stddef.h>

// ---- max pool: in (B, C, H, W) -> out (B, C, OH, OW),
// OH = (H + 2p - k) / s + 1 (floor, no ceil_mode); padding never wins.
// As in torch, 2p <= k and the window fits the padded plane (abort otherwise).
void maxpool2d_forward(float *out, const float *in, int B, int C, int H, int W, int k, int s,
                       int p);
// din (B, C, H, W) += dout (B, C, OH, OW) routed to each window's maximum in
// `in`, the forward's input. As torch's CPU kernel: the window is scanned row
// by row and a value wins if it is greater than the best so far or NaN, so
// among equal maxima the first wins (and among NaNs the last).
void maxpool2d_backward(float *din, const float *dout, const float *in, int B, int C, int H,
                        int W, int k, int s, int p);
// ---- average pool, same shapes; padding excluded from the divisor
// (count_include_pad=False).
void avgpool2d_forward(float *out, const float *in, int B, int C, int H, int W, int k, int s,
                       int p);
// ---- bilinear resize: in (B, C, H, W) -> out (B, C, OH, OW),
// align_corners=False, no antialias (F.interpolate(mode='bilinear')).
void resize_bilinear_forward(float *out, const float *in, int B, int C, int H, int W, int OH,
                             int OW);
// ---- ReLU, elementwise over n. In-place (out == in) is allowed.
void relu_forward(float *out, const float *in, size_t n);
