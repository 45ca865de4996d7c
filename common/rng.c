#include "rng.h"

#include <math.h>

static uint64_t mix64(uint64_t z) { // splitmix64's finaliser
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t at(uint64_t seed, uint64_t i) {
    return mix64(mix64(seed) + (i + 1) * 0x9e3779b97f4a7c15ULL);
}

// 24 random bits -> [0, 1), exactly representable in float.
static float to_unit(uint64_t v) { return (float)(v >> 40) * (1.0f / 16777216.0f); }

void rng_init(Rng *r, uint64_t seed) {
    r->seed = seed;
    r->counter = 0;
}

Rng rng_derive(const Rng *r, uint64_t stream) {
    Rng d = {mix64(r->seed ^ mix64(stream + 0x5851f42d4c957f2dULL)), 0};
    return d;
}

uint64_t rng_u64(Rng *r) { return at(r->seed, r->counter++); }

float rng_uniform(Rng *r) { return to_unit(rng_u64(r)); }

uint32_t rng_below(Rng *r, uint32_t n) {
    // Multiply-shift: bias below 2^-32 relative, irrelevant here.
    return (uint32_t)(((rng_u64(r) >> 32) * (uint64_t)n) >> 32);
}

void rng_uniform_fill(Rng *r, float *x, size_t n, float lo, float hi) {
    uint64_t base = r->counter;
    #pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * to_unit(at(r->seed, base + i));
    r->counter += n;
}

void rng_normal_fill(Rng *r, float *x, size_t n) {
    uint64_t base = r->counter;
    size_t pairs = (n + 1) / 2;
    #pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t j = 0; j < pairs; j++) {
        // u1 in (0, 1] so log() is finite.
        double u1 = 1.0 - (double)to_unit(at(r->seed, base + 2 * j));
        double u2 = (double)to_unit(at(r->seed, base + 2 * j + 1));
        double rad = sqrt(-2.0 * log(u1)), th = 6.283185307179586 * u2;
        x[2 * j] = (float)(rad * cos(th));
        if (2 * j + 1 < n) x[2 * j + 1] = (float)(rad * sin(th));
    }
    r->counter += 2 * pairs;
}

void rng_shuffle(Rng *r, int *idx, int n) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)rng_below(r, (uint32_t)(i + 1));
        int t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}
