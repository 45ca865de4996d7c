// gen-cache: writes a latent cache of N items of random latents (mean
// N(0, 1), logvar -4), to measure ldm-train on caches larger than memory
// (docs/BENCHMARKS.md). Not a model's latents: for speed and memory only.
#include <string.h>

#include "args.h"
#include "common.h"
#include "latent_cache.h"
#include "progress.h"
#include "rng.h"

int main(int argc, char **argv) {
    const char *out = NULL;
    long n = 2000000;
    int z = 4, side = 8, seed = 0;
    Opt opts[] = {
        {"--out", OPT_STR, &out, "cache to write (HDF5)"},
        {"--n", OPT_LONG, &n, "items", .lo = 1, .hi = 1e12},
        {"--latent-channels", OPT_INT, &z, "latent channels Z", .lo = 1, .hi = 1024},
        {"--side", OPT_INT, &side, "latent side h = w", .lo = 1, .hi = 4096},
        {"--seed", OPT_INT, &seed, "random seed", .hi = 1 << 30},
    };
    int rc = args_parse(argc, argv, opts, sizeof opts / sizeof *opts, "--out cache.h5 [options]");
    if (rc) return rc > 0 ? 0 : 2;
    if (!out) return errorf("gen-cache: --out is required"), 2;
    interrupt_install();
    LatentCacheWriter w;
    if (latent_cache_create(&w, out, n, z, side, side, 1)) return 1;
    const int block = 4096;
    size_t ln = (size_t)z * side * side;
    float *mean = xmalloc(block * ln * sizeof(float));   // (block, Z, h, w)
    float *logvar = xmalloc(block * ln * sizeof(float)); // (block, Z, h, w)
    int32_t *labels = xmalloc(block * sizeof(int32_t));
    for (size_t j = 0; j < block * ln; j++) logvar[j] = -4.0f;
    Rng r;
    rng_init(&r, (uint64_t)seed);
    Progress prog;
    progress_init(&prog, 0);
    for (long i0 = 0; i0 < n; i0 += block) {
        int b = n - i0 < block ? (int)(n - i0) : block;
        rng_normal_fill(&r, mean, b * ln);
        for (int i = 0; i < b; i++) labels[i] = (int32_t)((i0 + i) % 10);
        if (interrupted() || latent_cache_append(&w, mean, logvar, labels, b)) {
            latent_cache_abort(&w);
            return 1;
        }
        progress_print(&prog, i0 / block + 1, (n + block - 1) / block, i0 + b, "writing", -1,
                       i0 + b == n);
    }
    progress_end(&prog);
    free(mean), free(logvar), free(labels);
    // A made-up VAE hash: caches from gen-cache pair with no VAE.
    return latent_cache_finish(&w, 1.0, side * 4, 1, "gen-cache", "0000000000000000") ? 1 : 0;
}
