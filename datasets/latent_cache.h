// latent_cache.h: the HDF5 latent cache written by vae-encode.
// Datasets: mean, logvar (N, Z, h, w) float32, chunked per item block;
// labels (N) int32 when the source had labels. Root attributes:
// scale_factor (double), image_size, in_channels, source, vae_hash.
// Read in batches, so a cache larger than memory works.
#pragma once
#include <stdint.h>

typedef struct {
    int64_t h5file;        // hid_t
    int64_t dmean, dlogvar, dlabels; // hid_t, dlabels < 0 when absent
    int N, Z, h, w;
    double scale_factor;
    int image_size, in_channels;
    char source[512];
    char vae_hash[17];
    char path[512];
} LatentCache;

// Opens and validates (datasets, dtypes, shapes agreeing with each other and
// with the attributes, attributes present). -1 with a message naming path.
int latent_cache_open(LatentCache *c, const char *path);
// Reads items [start, start + n) into mean, logvar (n, Z, h, w) and labels
// (n) (labels may be NULL; left untouched if the cache has none).
int latent_cache_read(LatentCache *c, int start, int n, float *mean,
                      float *logvar, int32_t *labels);
void latent_cache_close(LatentCache *c);

// Writer: created at a temporary path, renamed into place by finish().
typedef struct {
    int64_t h5file, dmean, dlogvar, dlabels;
    int N, Z, h, w, written;
    char path[512], tmp[600];
} LatentCacheWriter;

int latent_cache_create(LatentCacheWriter *w, const char *path, int N, int Z,
                        int h, int wd, int has_labels);
int latent_cache_append(LatentCacheWriter *w, const float *mean,
                        const float *logvar, const int32_t *labels, int n);
// Writes the attributes, closes, renames. All N items must be written.
int latent_cache_finish(LatentCacheWriter *w, double scale_factor,
                        int image_size, int in_channels, const char *source,
                        const char *vae_hash);
// Closes and deletes the temporary file (on error or interruption).
void latent_cache_abort(LatentCacheWriter *w);
