// lpips.h: the LPIPS perceptual distance (Zhang et al., 2018), version 0.1
// on VGG16, as the autoencoder's kl-gan loss uses it
// (../shared/spec/default-models.md, "Autoencoder loss: kl-gan"). For an
// image pair (x, xhat), each (3, S, S) in [-1, 1]:
//   - both go through LPIPS's scaling layer, (v - shift[c]) / scale[c] with
//     shift (-.030, -.088, -.188), scale (.458, .448, .450), then VGG16's
//     features up to relu5_3 (torchvision's vgg16().features[0:30]: thirteen
//     3x3 convs, each with a ReLU, in five stages of 2, 2, 3, 3, 3, with a
//     2x2 stride-2 max pool between stages);
//   - at the end of each stage (relu1_2, relu2_2, relu3_3, relu4_3,
//     relu5_3: layer l, C_l channels, side S_l) the features f of x and fhat
//     of xhat are normalised per pixel over the channels, n = f / (|f| +
//     1e-10), and d_l = sum_c w_l[c] (n_c - nhat_c)^2 (LPIPS's head lin_l, a
//     1x1 conv without bias) is averaged over the S_l^2 pixels;
//   - the distance is d_0 + ... + d_4.
// No dropout (LPIPS's heads run in eval mode).
//
// File layout (tests/reference/convert_lpips.py writes it from torchvision's
// vgg16 state_dict and LPIPS's v0.1 vgg.pth; HDF5, float32):
//   root attributes: kind = "lpips"; width1 .. width5 (integers), the five
//     stages' channels: 64 128 256 512 512 for VGG16 (narrower in tests);
//   /model/features.<i>.weight (cout, cin, 3, 3) and /model/features.<i>.bias
//     (cout) for i in 0 2 5 7 10 12 14 17 19 21 24 26 28 (torchvision's keys
//     and shapes);
//   /model/lin<l>.model.1.weight (1, C_l, 1, 1), l = 0..4 (LPIPS's keys).
// Nothing else may be in /model.
#pragma once
#include "params.h"

#define LPIPS_LAYERS 5    // stages, taps and heads
#define LPIPS_CONVS 13
#define LPIPS_MIN_SIZE 16 // four 2x2 pools leave at least 1x1
#define LPIPS_WIDTH_MAX 4096

typedef struct {
    int width[LPIPS_LAYERS]; // the stages' channels, from the file
    int side[LPIPS_LAYERS];  // their sides: S, then halved (floor) by each pool
    int size, max_batch;     // S; image pairs a call may bring
    ParamTable table;        // the file's tensors, in the layout's order
    // One allocation: the parameters (table.total floats), then for each
    // conv its weight transposed and flipped, (cin, cout, 3, 3): the input
    // gradient of a stride-1 pad-1 3x3 conv is the conv of the output
    // gradient with it, which runs as a forward conv (Winograd) without the
    // weight gradient conv2d_backward would also compute.
    float *params;
    float *adjoint;
    float *acts;      // activations for 2 max_batch images, carved in lpips.c
    float *scratch;   // the convs' scratch
    float *layer_out; // (max_batch, LPIPS_LAYERS): d_l per pair of the last forward
    int B;            // pairs of the last forward, 0 before any
} Lpips;

// The file's tensors for stage widths `width`, in the layout's order (the
// table lpips_load reads; a writer of test files builds it too).
void lpips_table(ParamTable *t, const int width[LPIPS_LAYERS]);

// Reads the network at `path` and allocates activations for up to max_batch
// pairs of image_size x image_size images. -1 with a message naming path
// (and the attribute or tensor) on: a file that is not HDF5 or not of kind
// "lpips", a missing or out-of-range width attribute, a missing tensor, one
// of another shape or type, a NaN or infinite value, a tensor in /model that
// is not the network's, image_size below LPIPS_MIN_SIZE, or activations that
// do not fit in memory. Nothing is left allocated then.
int lpips_load(Lpips *l, const char *path, int max_batch, int image_size);
void lpips_free(Lpips *l);

// out (B): the distance of each pair; x, xhat (B, 3, S, S) in [-1, 1],
// B <= max_batch. Also fills layer_out. Saves what lpips_backward needs.
void lpips_forward(Lpips *l, float *out, const float *x, const float *xhat, int B);
// dxhat (B, 3, S, S) += d (sum_b dout[b] out[b]) / d xhat for the last
// forward (x is a fixed target: no gradient). The forward's state is kept
// (the backward may run again). Where all of a pixel's features of xhat are
// 0 the normalisation's derivative has no limit (PyTorch gives NaN there):
// that term is dropped, and the ReLU that made them 0 blocks the rest, as it
// does PyTorch's NaN.
void lpips_backward(Lpips *l, float *dxhat, const float *dout);
