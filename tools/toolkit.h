// toolkit.h: pieces the command-line programs share (tools/ only).
#pragma once
#include "checkpoint.h"
#include "imageset.h"
#include "vae.h"

// Default thread count: all cores the process may use.
int default_threads(void);

// First call in the main() of every program that writes checkpoints or
// caches: a file that cannot be written must end in a message and a
// non-zero exit, not in a signal (see toolkit.c).
void tool_process_init(void);

// Fault injection for tests/robust_test.sh: the environment variable
// LDM_FAULT_NAN_STEP=N makes the training tools treat the loss of step N
// (1-based, as logged) as NaN, to check that a non-finite loss stops the run
// with a message and leaves the last good checkpoint untouched. 0 when unset.
long fault_nan_step(void);

// PSNR = 10 log10(4 / MSE) of decode(posterior mean), clamped to [-1, 1],
// against items [start, start + n) of s, batched by v->max_batch.
double vae_psnr(Vae *v, const ImageSet *s, int start, int n);

// After a checkpoint was written to `out` at `step`: with keep > 0, keeps a
// step-numbered copy "<out minus .h5>.step<N>.h5" (a hard link to the new
// file, so no second write) and deletes all but the newest `keep` copies.
void keep_numbered_copy(const char *out, long step, int keep);

// "--flag" given with a value different from the checkpoint's: one message
// naming both, -1. Used for every model/training setting on --resume.
int resume_conflict_int(const char *ckpt, const char *flag, int given, int64_t stored);
int resume_conflict_float(const char *ckpt, const char *flag, double given, double stored);

#include "latent_cache.h"
// The cache was made by this VAE: latent shape, image shape and the VAE hash
// agree. -1 with a message naming both files otherwise.
int check_cache_matches_vae(const LatentCache *c, const Vae *v, const char *vae_path);
// Hash of a loaded VAE's parameters (16 hex digits).
void vae_hash_of(char out[17], const Vae *v);

// Random streams of a training run. Every draw of step s comes from
// run_stream(seed, STREAM_STEP, s) and the data order of epoch e from
// run_stream(seed, STREAM_EPOCH, e): the state to resume is (seed, step).
enum { STREAM_STEP = 1, STREAM_EPOCH = 2, STREAM_EVAL = 3, STREAM_SAMPLE = 4 };
Rng run_stream(uint64_t seed, uint64_t kind, uint64_t index);
// The batches of a run: epoch e visits the n training items in a permutation
// drawn from run_stream(seed, STREAM_EPOCH, e), in ceil(n / B) steps (the last
// one partial), so the items of any step follow from (seed, step) alone.
typedef struct {
    int n, B;
    long steps_per_epoch;
    uint64_t seed;
    int *perm;  // (n) the current epoch's order
    long epoch; // whose order perm holds (-1: none yet)
} EpochSampler;
void epoch_sampler_init(EpochSampler *s, int n, int B, uint64_t seed);
void epoch_sampler_free(EpochSampler *s);
// The items of 0-based step `step`: sets *idx, returns their count.
int epoch_sampler_batch(EpochSampler *s, long step, const int **idx);

// The end of a run: the step budget `total` (0: none), the wall-clock
// `budget_s` of this invocation (0: none), or an interrupt.
int run_is_over(long step, long total, double elapsed_s, double budget_s);
// Seconds left for the ETA (-1 unknown): the budget's, or the steps' at the
// current pace when that ends sooner.
double run_seconds_left(long step, long step_start, long total, double elapsed_s,
                        double budget_s);
long total_steps(long steps, int epochs, double minutes, long steps_per_epoch);
