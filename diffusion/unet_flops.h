// unet_flops.h: model FLOPs of the UNet counted from its layer shapes, for
// ldm-bench. Convention (tests/reference/torch_bench.py counts the same way):
// a convolution costs 2 x output elements x C_in x k x k (padding included),
// a linear 2 x in x out, the attention matmuls QK^T and AV 2 x HW x HW x C
// each; normalisation, activations, softmax and the time sinusoid are not
// counted.
#pragma once
#include "unet.h"

// Forward FLOPs for one item (one latent, one timestep). A training step is
// counted as 3x the forward.
double unet_forward_flops(const UNetConfig *c);
