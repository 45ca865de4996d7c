// vae_flops.h: model FLOPs of the VAE counted from its layer shapes, for
// ldm-bench. Convention (tests/reference/torch_bench.py counts the same way):
// a convolution costs 2 x output elements x C_in x k x k (padding included),
// a transposed one 2 x input elements x C_out x k x k; elementwise work
// (SiLU, GroupNorm, the reparameterization, the loss) is not counted; the
// kl family's attention adds its two matrix products, 2 x T x T x C each.
#pragma once
#include "patchgan.h"
#include "vae.h"

// Forward FLOPs for one image: the encoder (image -> mean, logvar) and the
// decoder (z -> x_hat). A training step is counted as 3x the forward.
double vae_encode_flops(const VaeConfig *c);
double vae_decode_flops(const VaeConfig *c);
// patchgan-d3's forward FLOPs for one image: its five convolutions, counted
// as above (BatchNorm and LeakyReLU are not). Needs patchgan_out_size(c) >= 1.
double patchgan_forward_flops(const PatchganConfig *c);
