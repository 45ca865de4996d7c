// pool.h: pooling, resizing and ReLU kernels of the evaluation networks
// (metrics/: the FID Inception-v3, the Fashion-MNIST classifier). Forward
// only: these networks are loaded from published or separately trained
// weights and only ever run in inference; nothing in the training stages
// uses these operations, so they have no backward. Tensors are float32 NCHW,
// outputs first, then inputs, then dims.
#pragma once
#include <stddef.h>

// ---- max pool: in (B, C, H, W) -> out (B, C, OH, OW),
// OH = (H + 2p - k) / s + 1 (floor, no ceil_mode); padding never wins.
// As in torch, 2p <= k and the window fits the padded plane (abort otherwise).
void maxpool2d_forward(float *out, const float *in, int B, int C, int H, int W, int k, int s,
                       int p);
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
