// inception.h: Inception-v3 in the variant of the standard FID code
// (pytorch-fid's FIDInceptionA/C/E blocks: average pools exclude padding,
// the last block max-pools its pool branch; fc 2048 -> 1008), forward only,
// BatchNorm (eps 1e-3, running statistics) folded into the convolutions at
// load. Tensor names: tests/reference/inception_mirror.py's state_dict.
#pragma once
#include <stdint.h>

typedef struct Inception Inception;

// hid_t file opened by the caller (featnet_load); widths from the tensors.
// -1 with a message naming path and the tensor.
int inception_load(Inception **net, int64_t file, const char *path);
void inception_free(Inception *net);
// img (B, 3, 299, 299) in [-1, 1] -> feat (B, 2048) pool3, logits (B, 1008)
// (logits may be NULL). Feature and logit widths follow the file.
void inception_forward(Inception *net, float *feat, float *logits, const float *img, int B);
int inception_dim(const Inception *net);
int inception_logits(const Inception *net);
