// inception.h: Inception-v3 in the variant of the standard FID code
// (pytorch-fid's FIDInceptionA/C/E blocks: average pools exclude padding,
// the last block max-pools its pool branch; fc 2048 -> 1008), forward only,
// BatchNorm (eps 1e-3, running statistics) folded into the convolutions at
// load. Tensor names: tests/reference/inception_mirror.py's state_dict
// (that of pytorch-fid's published weights), under /model; BatchNorm's
// num_batches_tracked counters, when present, are ignored.
#pragma once
#include <stdint.h>

#define INCEPTION_SIZE 299 // input side; the network's spatial sizes follow from it

typedef struct Inception Inception;

// hid_t file opened by the caller (featnet_load); widths from the tensors.
// -1 with a message naming path and the tensor: a missing tensor, one of
// another rank, kernel or input width than the graph gives it, a NaN or
// infinite value, a negative BatchNorm variance, or a tensor in /model that
// is not the network's.
int inception_load(Inception **net, int64_t file, const char *path);
void inception_free(Inception *net);
// img (B, 3, 299, 299) in [-1, 1] -> feat (B, 2048) pool3, logits (B, 1008)
// (logits may be NULL). Feature and logit widths follow the file. Runs in
// chunks of a few images; the result does not depend on the thread count.
void inception_forward(Inception *net, float *feat, float *logits, const float *img, int B);
int inception_dim(const Inception *net);
int inception_logits(const Inception *net);

// For tests and diagnostics: inception_forward calls tap after each top-level
// block (names: inception_mirror.py's BLOCKS, "Conv2d_1a_3x3" ... "Mixed_7c")
// with that block's output for images [b0, b0 + nb) of the batch,
// out (nb, C, H, W). NULL: no calls.
typedef void (*InceptionTap)(void *ctx, const char *block, const float *out, int b0, int nb,
                             int C, int H, int W);
void inception_set_tap(Inception *net, InceptionTap tap, void *ctx);
