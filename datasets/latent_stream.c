// latent_stream.c: background reads of a cache's items (see latent_stream.h).
// One reader thread; HDF5 here is built thread-safe, so the main thread may
// write checkpoints while it reads.
#define _GNU_SOURCE // SCHED_IDLE
#include "latent_stream.h"

#include <hdf5.h>
#include <sched.h>
#include <string.h>

#include "common.h"

enum { SLOT_FREE, SLOT_QUEUED, SLOT_READY, SLOT_FAILED };

static void *reader(void *arg) {
    LatentStream *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        int k = s->state[0] == SLOT_QUEUED ? 0 : s->state[1] == SLOT_QUEUED ? 1 : -1;
        if (s->quit) break;
        if (k < 0) {
            pthread_cond_wait(&s->cv, &s->mu);
            continue;
        }
        pthread_mutex_unlock(&s->mu);
        int rc = latent_cache_read_items(s->cache, s->idx[k], s->n[k], s->mean[k],
                                         s->logvar[k], s->labels[k]);
        pthread_mutex_lock(&s->mu);
        s->state[k] = rc ? SLOT_FAILED : SLOT_READY;
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

void latent_stream_init(LatentStream *s, LatentCache *c, int max_n, int with_labels) {
    CHECK(max_n > 0 && (!with_labels || c->dlabels >= 0));
    memset(s, 0, sizeof *s);
    s->cache = c;
    s->max_n = max_n;
    s->ln = (size_t)c->Z * c->h * c->w;
    for (int k = 0; k < 2; k++) {
        s->mean[k] = xmalloc((size_t)max_n * s->ln * sizeof(float));
        s->logvar[k] = xmalloc((size_t)max_n * s->ln * sizeof(float));
        s->idx[k] = xmalloc((size_t)max_n * sizeof(int64_t));
        s->labels[k] = with_labels ? xmalloc((size_t)max_n * sizeof(int32_t)) : NULL;
    }
    s->handed = -1;
    // HDF5 built without thread safety must not be called from two threads
    // (the main one writes checkpoints): then every batch is read in get().
    hbool_t safe = 0;
    s->sync = H5is_library_threadsafe(&safe) < 0 || !safe;
    if (s->sync) return;
    CHECK(pthread_mutex_init(&s->mu, NULL) == 0);
    CHECK(pthread_cond_init(&s->cv, NULL) == 0);
    CHECK(pthread_create(&s->thread, NULL, reader, s) == 0);
    // The reader runs only on a core the compute leaves idle: preempting an
    // OpenMP thread would stall its whole team at the next barrier. When the
    // step needs the batch and it is not read yet, get() sleeps, which idles
    // a core for the reader. (Best effort: without it the reader competes.)
    struct sched_param idle = {0};
    pthread_setschedparam(s->thread, SCHED_IDLE, &idle);
}

void latent_stream_free(LatentStream *s) {
    for (int k = 0; k < 2; k++)
        free(s->mean[k]), free(s->logvar[k]), free(s->idx[k]), free(s->labels[k]);
    if (s->sync) return;
    pthread_mutex_lock(&s->mu);
    s->quit = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
}

// The slot not handed out; waits while the reader still fills it.
static int other_slot(LatentStream *s) {
    int k = s->handed == 0 ? 1 : 0;
    while (s->state[k] == SLOT_QUEUED) pthread_cond_wait(&s->cv, &s->mu);
    return k;
}

void latent_stream_request(LatentStream *s, const int *idx, int n) {
    CHECK(n > 0 && n <= s->max_n);
    if (s->sync) return;
    pthread_mutex_lock(&s->mu);
    int k = other_slot(s);
    for (int i = 0; i < n; i++) s->idx[k][i] = idx[i];
    s->n[k] = n;
    s->state[k] = SLOT_QUEUED;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static int same_items(const LatentStream *s, int k, const int *idx, int n) {
    if (s->n[k] != n) return 0;
    for (int i = 0; i < n; i++)
        if (s->idx[k][i] != idx[i]) return 0;
    return 1;
}

int latent_stream_get(LatentStream *s, const int *idx, int n, const float **mean,
                      const float **logvar, const int32_t **labels) {
    CHECK(n > 0 && n <= s->max_n);
    if (s->sync) {
        for (int i = 0; i < n; i++) s->idx[0][i] = idx[i];
        *mean = s->mean[0], *logvar = s->logvar[0], *labels = s->labels[0];
        return latent_cache_read_items(s->cache, s->idx[0], n, s->mean[0], s->logvar[0],
                                       s->labels[0]);
    }
    pthread_mutex_lock(&s->mu);
    int k = other_slot(s);
    int rc = 0;
    if (s->state[k] == SLOT_FREE || !same_items(s, k, idx, n)) {
        // Not requested (the first step, or a resume): read it now.
        for (int i = 0; i < n; i++) s->idx[k][i] = idx[i];
        s->n[k] = n;
        pthread_mutex_unlock(&s->mu);
        rc = latent_cache_read_items(s->cache, s->idx[k], n, s->mean[k], s->logvar[k],
                                     s->labels[k]);
        pthread_mutex_lock(&s->mu);
    } else if (s->state[k] == SLOT_FAILED) {
        rc = -1; // the reader printed the message
    }
    s->state[k] = SLOT_FREE;
    s->handed = k;
    pthread_mutex_unlock(&s->mu);
    *mean = s->mean[k];
    *logvar = s->logvar[k];
    *labels = s->labels[k];
    return rc;
}
