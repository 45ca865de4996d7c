// imageset.h: a training set of images held decoded in memory as 8-bit
// (N, C, S, S), decoded once at load. Sources:
//   "fashion-mnist"       the 60,000 training images of Debian's
//                         dataset-fashion-mnist (/usr/share/datasets/fashion-mnist)
//   "fashion-mnist-test"  its 10,000 test images
//   a path to an IDX image file (raw or .gz); labels from the matching
//                         "...-labels-idx1-ubyte[.gz]" file when present.
//                         Images smaller than `size` are zero-padded
//                         centrally (28 -> 32 pads 2 per side), larger are
//                         resized and centre-cropped.
//   a folder, searched recursively for .png/.jpg/.jpeg/.bmp: each converted to
//                         `channels`, resized on the shorter side and
//                         centre-cropped to size; undecodable files are
//                         skipped with a warning naming each, and counted.
#pragma once
#include <stdint.h>

#include "rng.h"

#define FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

typedef struct {
    int N, C, S;        // count, channels, side
    uint8_t *pixels;    // (N, C, S, S)
    int32_t *labels;    // (N) or NULL
    int skipped;        // undecodable files skipped (folders)
    char source[512];
} ImageSet;

// channels: 1 or 3 (grey IDX images are replicated to 3 channels for 3).
int imageset_load(ImageSet *s, const char *source, int size, int channels);
void imageset_free(ImageSet *s);
// Gathers items idx[0..B) as floats in [-1, 1] (x / 127.5 - 1) into
// out (B, C, S, S); flip (B) may be NULL, else flip[i] != 0 mirrors item i.
void imageset_batch(float *out, const ImageSet *s, const int *idx, int B,
                    const uint8_t *flip);
