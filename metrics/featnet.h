// featnet.h: the feature networks of the evaluation measures (FID, KID, IS),
// loaded from HDF5 files, forward only.
//   "inception-fid": Inception-v3 as the standard FID code has it (pool3
//                    2048-d features, 1008 logits), input 3 x 299 x 299.
//   "fmnist-cnn":    the Fashion-MNIST classifier of
//                    tests/reference/fmnist_classifier.py (128-d features
//                    after the penultimate ReLU, 10 logits), input 1 x 32 x 32.
// The file's root attribute `kind` names the network; tensors carry the
// mirror's state_dict names. Widths come from the tensors' shapes, so reduced
// test networks load through the same code.
#pragma once
#include <stdint.h>

typedef struct Inception Inception; // inception.h
typedef struct FmnistNet FmnistNet; // featnet.c
typedef struct FeatBufs FeatBufs;   // featnet.c: preprocessing buffers

typedef struct {
    char name[32];        // "inception-fid" or "fmnist-cnn"
    char hash[17];        // FNV-1a over the datasets under /model in name order
                          // (each: name, shape, float32 values), 16 hex digits
    char preprocess[160]; // how images reach the network, recorded beside statistics
    int dim;              // feature dimension D: 2048 / 128
    int n_logits;         // 1008 / 10
    int in_c, in_size;    // the network's input: channels, square side
    Inception *inc;       // exactly one of these is set
    FmnistNet *fm;
    FeatBufs *bufs;       // allocated at load: a call allocates nothing
} FeatNet;

// -1 with a message naming path (and the tensor) for a file that is not a
// feature network, or has missing, misshapen or non-finite tensors.
int featnet_load(FeatNet *f, const char *path);
void featnet_free(FeatNet *f);
// img (B, C, H, W) in [-1, 1], any C in {1, 3} and any H, W >= 1 ->
// feat (B, dim) and, when logits is non-NULL, logits (B, n_logits).
// Preprocessing (the same for every source): a side other than in_size is
// resized bilinearly (align_corners false, as F.interpolate) to in_size x
// in_size; grey is replicated to RGB for a 3-channel network; RGB reaches a
// 1-channel network as the mean of its channels. Batches of any size: the
// function works through them in chunks; the result of an image does not
// depend on B or on the thread count.
void featnet_forward(FeatNet *f, float *feat, float *logits, const float *img, int B, int C,
                     int H, int W);
