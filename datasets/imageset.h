// imageset.h: a training set of images as 8-bit (N, C, S, S). Sources:
//   "fashion-mnist"       the 60,000 training images of Debian's
//                         dataset-fashion-mnist (/usr/share/datasets/fashion-mnist)
//   "fashion-mnist-test"  its 10,000 test images (both labelled, with the
//                         data set's 10 class names)
//   a path to an IDX image file (raw or .gz); labels from the matching
//                         "...-labels-idx1-ubyte[.gz]" file when present.
//                         Images smaller than `size` are zero-padded
//                         centrally (28 -> 32 pads 2 per side), larger are
//                         resized and centre-cropped.
//   a folder, searched recursively for .png/.jpg/.jpeg/.bmp (item i is the
//                         i-th path in byte order): each converted to
//                         `channels`, resized on the shorter side and
//                         centre-cropped to size. When every image sits
//                         in a first-level sub-folder (at any depth below
//                         it), the sub-folders' names in byte order are
//                         classes 0..K-1 and each image is labelled with
//                         its sub-folder's; images directly in the folder:
//                         no labels (root_images counts them when sub-
//                         folders hold images too). A class folder name
//                         with a line break is refused.
//
// IDX files, and folders whose decoded size N * C * S * S fits the memory
// limit, are decoded at open and held in memory ("resident"); undecodable
// files are skipped with a warning naming each, and counted. A larger folder
// is "streamed": open reads only each file's header (files whose header stb
// cannot read, or that claim too many pixels, are skipped the same way) and
// imageset_batch decodes the items it is asked for, while background threads
// decode the items announced with imageset_prefetch into a buffer of a few
// batches. A file that passes its header but fails to decode (truncated,
// changed or removed since open) makes imageset_batch fail with a message
// naming it; a resident set skips such a file at open instead. Both ways
// give the same floats for the same items, whatever the threads' timing.
//
// prefetch and batch are called from one thread (the one that opened the set).
#pragma once
#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "rng.h"

#define FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

typedef struct ImageStream ImageStream; // the decode buffer and its threads

typedef struct {
    int N, C, S;          // count, channels, side
    uint8_t *pixels;      // (N, C, S, S) when resident, else NULL
    int32_t *labels;      // (N) or NULL
    int num_classes;      // K when the classes are known (named), else 0
    char *class_names;    // their names joined by '\n' (latent_cache.h's
                          // CLASS_NAMES_ATTR form), or NULL
    int root_images;      // folders: images directly in the folder beside
                          // sub-folders with images (why it has no labels)
    int skipped;          // undecodable files skipped (folders)
    ImageStream *stream;  // NULL when resident
    char source[PATH_MAX]; // a longer source is refused at open, never cut
} ImageSet;

// A quarter of the physical memory: the default of --max-memory. The rest is
// for the model's activations (several GB for a VAE batch of 64x64 images),
// the page cache that keeps the image files read at every epoch, and
// whatever else runs on the machine.
size_t imageset_default_max_memory(void);

// Opens `source` (see above) as `size` x `size` images with `channels`
// channels (1 or 3; grey IDX images are replicated to 3 channels for 3).
// A folder whose decoded size exceeds max_memory bytes is streamed. -1 with
// a message naming the source or the file on failure.
int imageset_open(ImageSet *s, const char *source, int size, int channels, size_t max_memory);
// imageset_open with no memory limit: always resident.
int imageset_load(ImageSet *s, const char *source, int size, int channels);
// Called once, before the first prefetch or batch, with the largest B the
// caller will pass and the max_memory given to imageset_open. A streamed set
// allocates its buffer there (2 * batch decoded images) and starts its
// threads; -1 with a message naming the source when max_memory cannot hold
// that buffer. A resident set: 0.
int imageset_check_memory(ImageSet *s, int batch, size_t max_memory);
// Stops the threads and frees everything.
void imageset_free(ImageSet *s);
// The width and height of item i's file, from its header, for a streamed set
// (open a folder with max_memory 0 to read headers only). -1 with a message
// naming the file when the header no longer reads.
int imageset_item_size(const ImageSet *s, int i, int *w, int *h);

// Announces items idx[0..B) (the next batch) without waiting: a streamed set
// starts decoding them in the background. Items that find no room in the
// buffer are decoded by the imageset_batch that asks for them. Nothing to do
// for a resident set.
void imageset_prefetch(ImageSet *s, const int *idx, int B);
// Gathers items idx[0..B) as floats in [-1, 1] (x / 127.5 - 1) into
// out (B, C, S, S); flip (B) may be NULL, else flip[i] != 0 mirrors item i.
// Waits for prefetched items and decodes the others (on all OpenMP
// threads). -1 with a message naming the file and the item when a streamed
// item no longer decodes; out is then undefined.
int imageset_batch(float *out, ImageSet *s, const int *idx, int B, const uint8_t *flip);
