// latent_stream.h: reads the latents of a training step's items from the
// cache on a background thread while the previous step computes, so a cache
// of any size trains from the memory of two batches.
//
// Two slots: get() hands out one, request() fills the other with the next
// step's items. The items of a step come from the caller (the run loop's
// order, a function of (seed, step) alone), so what is read never depends on
// thread timing: a streamed run and an in-memory run are bit-identical.
#pragma once
#include <pthread.h>
#include <stdint.h>

#include "latent_cache.h"

typedef struct {
    LatentCache *cache;
    int max_n;                    // items a slot holds
    size_t ln;                    // Z * h * w
    float *mean[2], *logvar[2];   // (max_n, Z, h, w) each
    int32_t *labels[2];           // (max_n) each when reading labels, else NULL
    int64_t *idx[2];              // (max_n) the items each slot holds or will
    int n[2];
    int state[2];                 // SLOT_FREE, SLOT_QUEUED, SLOT_READY, SLOT_FAILED
    int handed;                   // the slot get() handed out last, -1: none
    int quit;
    int sync;                     // HDF5 not thread-safe: no thread, get() reads
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} LatentStream;

// with_labels: read each item's label too (the cache must have labels).
void latent_stream_init(LatentStream *s, LatentCache *c, int max_n, int with_labels);
void latent_stream_free(LatentStream *s);
// Queues items idx[0..n) to be read in the background (the next step's).
void latent_stream_request(LatentStream *s, const int *idx, int n);
// The latents of items idx[0..n), in that order: (n, Z, h, w) each, and
// with labels their labels (n) (else *labels is NULL), valid until the next
// get(). The slot queued for the same items is waited for; other items are
// read now. -1 with a message naming the cache and the items when they
// cannot be read (the file was truncated, changed or removed).
int latent_stream_get(LatentStream *s, const int *idx, int n, const float **mean,
                      const float **logvar, const int32_t **labels);
