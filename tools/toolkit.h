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
// The permutation of n training items for `epoch`.
void epoch_order(int *perm, int n, uint64_t seed, long epoch);
// The step budget: --steps, else --epochs x steps_per_epoch, else 0 (only
// the clock bounds the run) when minutes > 0, else one epoch.
long total_steps(long steps, int epochs, double minutes, long steps_per_epoch);
