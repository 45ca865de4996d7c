// latent_cache.h: the HDF5 latent cache written by vae-encode.
// Datasets: mean, logvar (N, Z, h, w) float32, chunked per item block;
// labels (N) int32 when the source had labels. Root attributes:
// scale_factor (double), image_size, in_channels, source, vae_hash, and
// optionally class_names (a labelled source whose classes have names: see
// CLASS_NAMES_ATTR). Read in batches or by item lists, so a cache larger
// than memory works.
//
// Caches written by other tools load too: any chunking or none, compressed
// or not, mean/logvar of any float type, labels of any integer type (values
// must fit int32), attributes of any integer/float width and fixed or
// variable-length strings; attributes beyond the six above are ignored.
#pragma once
#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "h5attr.h"

// The largest scale factor a file may hold (a cache's, or the UNet's copy of
// it): 1 / std of the latents; above 1e6 the VAE has collapsed, and the
// scaled latents would overflow float long before 1e308.
#define SCALE_FACTOR_MAX 1e6

// The names of classes 0..K-1, in a cache and in a UNet checkpoint trained
// on it: one string attribute, the K names joined by '\n' (a name is not
// empty and holds no '\n'), at most ATTR_STR_MAX - 1 bytes in all.
#define CLASS_NAMES_ATTR "class_names"
// The number of names in `joined` ("" holds none).
int class_names_count(const char *joined);
// Name k of `joined` into out (cap bytes, cut to fit); "" when there is no
// name k.
void class_name_get(char *out, size_t cap, const char *joined, int k);
// 0 if `joined` is a valid list of names (see above), else -1 with a message
// naming `what` (the file and attribute).
int class_names_check(const char *joined, const char *what);

typedef struct {
    int64_t h5file;        // hid_t
    int64_t dmean, dlogvar, dlabels; // hid_t, dlabels < 0 when absent
    int fd;                // the file's descriptor, to notice truncation
    int64_t size;          // its size in bytes when opened
    int64_t N;             // items: may exceed INT_MAX
    int Z, h, w;
    double scale_factor;
    int image_size, in_channels;
    char source[ATTR_STR_MAX];
    char vae_hash[17];
    char class_names[ATTR_STR_MAX]; // CLASS_NAMES_ATTR, "" when absent
    char path[PATH_MAX];
} LatentCache;

// Opens and validates (datasets, dtypes, shapes agreeing with each other and
// with the attributes, attributes present and in range). Allocates nothing
// proportional to N. -1 with a message naming path.
int latent_cache_open(LatentCache *c, const char *path);
// The two readers may run on a background thread while other threads call
// HDF5 too (HDF5 is built thread-safe). A read error (the file truncated or
// damaged since it was opened, a label that does not fit int32): -1 with a
// message naming the file and the items. A file deleted or replaced (renamed
// over) while open is still read whole: the open one.
//
// Reads items [start, start + n) into mean, logvar (n, Z, h, w) and labels
// (n) (labels may be NULL; left untouched if the cache has none; mean and
// logvar both NULL: the labels alone).
int latent_cache_read(LatentCache *c, int64_t start, int n, float *mean,
                      float *logvar, int32_t *labels);
// Reads items idx[0..n) (any order, duplicates allowed, each in [0, N)) into
// batch order: item idx[k] goes to mean + k * Z*h*w, logvar + k * Z*h*w and
// labels[k]. Each run of consecutive items is one read: a batch of 128
// random items of a 2,000,000-item cache takes ~4 ms (page cache warm).
int latent_cache_read_items(LatentCache *c, const int64_t *idx, int n, float *mean,
                            float *logvar, int32_t *labels);
void latent_cache_close(LatentCache *c);

// Writer: created at a temporary path, renamed into place by finish().
typedef struct {
    int64_t h5file, dmean, dlogvar, dlabels;
    int64_t N, written;
    int Z, h, w;
    const char *class_names; // NULL: none
    char path[PATH_MAX], tmp[PATH_MAX];
} LatentCacheWriter;

int latent_cache_create(LatentCacheWriter *w, const char *path, int64_t N, int Z,
                        int h, int wd, int has_labels);
int latent_cache_append(LatentCacheWriter *w, const float *mean,
                        const float *logvar, const int32_t *labels, int n);
// The class names finish() writes (CLASS_NAMES_ATTR; kept by the caller
// until then). The cache must have labels, and `joined` must pass
// class_names_check() and fit an attribute (programmer errors).
void latent_cache_set_class_names(LatentCacheWriter *w, const char *joined);
// Writes the attributes, closes, renames. All N items must be written; a
// `source` of ATTR_STR_MAX bytes or more is refused (-1, nothing written).
int latent_cache_finish(LatentCacheWriter *w, double scale_factor,
                        int image_size, int in_channels, const char *source,
                        const char *vae_hash);
// Closes and deletes the temporary file (on error or interruption).
void latent_cache_abort(LatentCacheWriter *w);
