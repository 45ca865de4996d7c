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

// *psnr = 10 log10(4 / MSE) of decode(posterior mean), clamped to [-1, 1],
// against items [start, start + n) of s, batched by v->max_batch (a
// streamed s must be reserved for that batch). -1 with a message when an
// item cannot be read (imageset_batch).
int vae_psnr(Vae *v, ImageSet *s, int start, int n, double *psnr);

#include "latent_cache.h"
// The cache was made by this VAE: latent shape, image shape and the VAE hash
// agree. -1 with a message naming both files otherwise.
int check_cache_matches_vae(const LatentCache *c, const Vae *v, const char *vae_path);
// Hash of a loaded VAE's parameters (16 hex digits).
void vae_hash_of(char out[17], const Vae *v);
