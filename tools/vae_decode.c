// vae-decode: decodes the first n latents of a cache (their means) with the
// VAE that made the cache, into a PNG grid: a check that cache and VAE agree.
#include "args.h"
#include "common.h"
#include "image.h"
#include "latent_cache.h"
#include "paths.h"
#include "toolkit.h"
#include "vae.h"
#include "vae_ckpt.h"

int main(int argc, char **argv) {
    tool_process_init();
    const char *vae_path = NULL, *cache = NULL, *out = "decoded.png";
    int n = 64, threads = default_threads();
    Opt opts[] = {
        {"--vae", OPT_STR, &vae_path, "VAE checkpoint that made the cache"},
        {"--latents", OPT_STR, &cache, "latent cache from vae-encode"},
        {"--n", OPT_INT, &n, "latents to decode (the first n)", .lo = 1, .hi = GRID_MAX_IMAGES},
        {"--out", OPT_STR, &out, "grid PNG"},
        {"--threads", OPT_INT, &threads, "threads", .lo = 1, .hi = 1024},
    };
    int no = sizeof opts / sizeof *opts;
    int rc = args_parse(argc, argv, opts, no, "--vae vae.h5 --latents latents.h5 [--n 64] [--out grid.png]");
    if (rc) return rc > 0 ? 0 : 2;
    if (!vae_path || !cache) return errorf("vae-decode: --vae and --latents are required (see --help)"), 2;
    if (n < 1 || threads < 1) return errorf("vae-decode: --n and --threads must be positive"), 2;
    const PathArg inputs[] = {{"--vae", vae_path}, {"--latents", cache}};
    if (check_output_path((PathArg){"--out", out}, OUT_FILE, inputs, 2)) return 1;
    set_threads(threads);
    h5_quiet();

    LatentCache c;
    if (latent_cache_open(&c, cache)) return 1;
    if (n > c.N) n = c.N;
    Vae v;
    if (vae_load(&v, vae_path, n, NULL)) return 1;
    if (check_cache_matches_vae(&c, &v, vae_path)) return 1;
    size_t lat = (size_t)c.Z * c.h * c.w;
    size_t img = (size_t)v.cfg.in_channels * v.cfg.image_size * v.cfg.image_size;
    float *mean = xmalloc(n * lat * sizeof(float));   // (n, Z, h, w)
    float *logvar = xmalloc(n * lat * sizeof(float)); // (n, Z, h, w)
    float *x = xmalloc(n * img * sizeof(float));      // (n, C, S, S)
    if (latent_cache_read(&c, 0, n, mean, logvar, NULL)) return 1;
    vae_decode(&v, x, mean, n);
    if (first_nonfinite(x, n * img) < n * img)
        return errorf("%s: its first %d latents decode to values that are not finite (the "
                      "cache holds NaN or infinity?)", cache, n), 1;
    if (png_write_grid(out, x, n, v.cfg.in_channels, v.cfg.image_size, v.cfg.image_size, 8))
        return 1;
    fprintf(stderr, "vae-decode: wrote %s (%d images)\n", out, n);
    free(mean), free(logvar), free(x);
    vae_free(&v);
    latent_cache_close(&c);
    return 0;
}
