// vae-reconstruct: originals beside their reconstructions (decode of the
// posterior mean) in one PNG grid, and the PSNR over those images.
#include <math.h>
#include <string.h>

#include "args.h"
#include "common.h"
#include "image.h"
#include "imageset.h"
#include "paths.h"
#include "toolkit.h"
#include "vae.h"
#include "vae_ckpt.h"

int main(int argc, char **argv) {
    tool_process_init();
    const char *vae_path = NULL, *data = NULL, *out = "reconstructions.png";
    int n = 64, threads = default_threads();
    Opt opts[] = {
        {"--vae", OPT_STR, &vae_path, "VAE checkpoint"},
        {"--data", OPT_STR, &data, "image source (e.g. fashion-mnist-test)"},
        {"--n", OPT_INT, &n, "images whose PSNR is measured (the first n of the source); the grid shows up to 64", .lo = 1, .hi = 1 << 30},
        {"--out", OPT_STR, &out, "grid PNG: each original followed by its reconstruction"},
        {"--threads", OPT_INT, &threads, "threads", .lo = 1, .hi = 1024},
    };
    int no = sizeof opts / sizeof *opts;
    int rc = args_parse(argc, argv, opts, no, "--vae vae.h5 --data SRC [--n 64] [--out grid.png]");
    if (rc) return rc > 0 ? 0 : 2;
    if (!vae_path || !data) return errorf("vae-reconstruct: --vae and --data are required (see --help)"), 2;
    if (n < 1 || threads < 1) return errorf("vae-reconstruct: --n and --threads must be positive"), 2;
    const PathArg inputs[] = {{"--vae", vae_path}, {"--data", data}};
    if (check_output_path((PathArg){"--out", out}, OUT_FILE, inputs, 2)) return 1;
    set_threads(threads);
    h5_quiet();

    Vae v;
    if (vae_load(&v, vae_path, n < 256 ? n : 256, NULL)) return 1;
    const VaeConfig *c = &v.cfg;
    ImageSet set;
    // Only the first n images are read: a large folder is not decoded whole.
    size_t max_memory = imageset_default_max_memory();
    if (imageset_open(&set, data, c->image_size, c->in_channels, max_memory) ||
        imageset_check_memory(&set, v.max_batch, max_memory))
        return 1;
    if (n > set.N) n = set.N;
    double psnr;
    if (vae_psnr(&v, &set, 0, n, &psnr)) return 1;
    if (!isfinite(psnr))
        return errorf("%s: the reconstructions are not finite numbers (a diverged VAE?)", vae_path), 1;

    // The grid: the first `shown` originals, each followed by its reconstruction.
    int shown = n < 64 ? n : 64, S = c->image_size, h = vae_latent_size(c);
    size_t img = (size_t)c->in_channels * S * S, lat = (size_t)c->latent_channels * h * h;
    float *x = xmalloc(shown * img * sizeof(float));         // (shown, C, S, S)
    float *rec = xmalloc(shown * img * sizeof(float));       // (shown, C, S, S)
    float *pairs = xmalloc(2 * shown * img * sizeof(float)); // (2 shown, C, S, S)
    float *mean = xmalloc(shown * lat * sizeof(float));      // (shown, Z, h, w)
    float *logvar = xmalloc(shown * lat * sizeof(float));    // (shown, Z, h, w)
    int idx[64];
    for (int i = 0; i < shown; i++) idx[i] = i;
    if (imageset_batch(x, &set, idx, shown, NULL)) return 1;
    for (int i0 = 0; i0 < shown; i0 += v.max_batch) {
        int b = shown - i0 < v.max_batch ? shown - i0 : v.max_batch;
        vae_encode(&v, mean + i0 * lat, logvar + i0 * lat, x + i0 * img, b);
        vae_decode(&v, rec + i0 * img, mean + i0 * lat, b);
    }
    for (int i = 0; i < shown; i++) {
        memcpy(pairs + (2 * i) * img, x + i * img, img * sizeof(float));
        memcpy(pairs + (2 * i + 1) * img, rec + i * img, img * sizeof(float));
    }
    if (png_write_grid(out, pairs, 2 * shown, c->in_channels, S, S, 16)) return 1;
    printf("PSNR %.3f dB over %d images of %s\n", psnr, n, set.source);
    fprintf(stderr, "vae-reconstruct: wrote %s (pairs: original, reconstruction)\n", out);
    free(x), free(rec), free(pairs), free(mean), free(logvar);
    vae_free(&v);
    imageset_free(&set);
    return 0;
}
