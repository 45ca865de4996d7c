// rng.h: a counter-based random generator. Value number i of a stream is a
// pure function of (seed, i), so a fill split across threads draws exactly
// what a single thread would, and the state (two integers) is saved in
// checkpoints for exact resume.
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef struct Rng {
    uint64_t seed;
    uint64_t counter; // values drawn so far
} Rng;

void rng_init(Rng *r, uint64_t seed);
// A stream independent of `r` for a purpose named by `stream` (e.g. the
// sampler's RNG beside the training RNG): same seed, different key.
Rng rng_derive(const Rng *r, uint64_t stream);
uint64_t rng_u64(Rng *r);
float rng_uniform(Rng *r);               // [0, 1)
uint32_t rng_below(Rng *r, uint32_t n);  // uniform integer in [0, n)
void rng_uniform_fill(Rng *r, float *x, size_t n, float lo, float hi);
void rng_normal_fill(Rng *r, float *x, size_t n); // N(0, 1), Box-Muller
// Fisher-Yates shuffle of idx[0..n).
void rng_shuffle(Rng *r, int *idx, int n);
