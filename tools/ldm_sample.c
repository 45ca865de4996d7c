// ldm-sample: draws latents with the UNet (DDIM or DDPM), divides them by the
// cache's scale factor, decodes them with the VAE and writes PNGs.
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "args.h"
#include "checkpoint.h"
#include "common.h"
#include "image.h"
#include "latent_cache.h"
#include "paths.h"
#include "progress.h"
#include "rng.h"
#include "sampler.h"
#include "schedule.h"
#include "toolkit.h"
#include "unet.h"
#include "unet_ckpt.h"
#include "vae_ckpt.h"

// Creates folder `dir` and its missing parents (mkdir -p).
static int make_dir(const char *dir) {
    char *p = xmalloc(strlen(dir) + 1);
    strcpy(p, dir);
    int rc = 0;
    for (char *s = p + 1; *s && rc == 0; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, 0777) != 0 && errno != EEXIST)
            rc = errorf("%s: cannot create folder: %s", p, strerror(errno));
        *s = '/';
    }
    if (rc == 0 && mkdir(p, 0777) != 0 && errno != EEXIST)
        rc = errorf("%s: cannot create folder: %s", p, strerror(errno));
    if (rc == 0 && access(p, W_OK) != 0) rc = errorf("%s: folder is not writable", p);
    free(p);
    return rc;
}

// Writes images first .. first + b - 1 of (b, C, S, S) x as <dir>/<index>.png.
static int write_pngs(const char *dir, const float *x, int first, int b, int C, int S) {
    size_t img = (size_t)C * S * S;
    uint8_t *px = xmalloc(img);
    char path[PATH_MAX];
    int rc = 0;
    for (int i = 0; i < b && rc == 0; i++) {
        image_to_u8(px, x + i * img, C, S, S);
        rc = path_printf(path, sizeof path, "%s/%06d.png", dir, first + i) ||
             png_write(path, px, S, S, C) ? -1 : 0;
    }
    free(px);
    return rc;
}

int main(int argc, char **argv) {
    tool_process_init();
    const char *unet_path = NULL, *vae_path = NULL, *sampler = "ddim", *weights = "ema";
    const char *out = NULL, *out_dir = NULL;
    int n = 64, batch = 64, steps = 50, seed = 0, threads = default_threads();
    double eta = 0.0;
    Opt opts[] = {
        {"--unet", OPT_STR, &unet_path, "UNet checkpoint from ldm-train"},
        {"--vae", OPT_STR, &vae_path, "the VAE the UNet's latents came from"},
        {"--n", OPT_INT, &n, "images to draw", .lo = 1, .hi = 1 << 30},
        {"--batch", OPT_INT, &batch, "images sampled at once", .lo = 1, .hi = 1 << 16},
        {"--sampler", OPT_STR, &sampler, "ddim or ddpm (DDPM takes all T steps)"},
        {"--steps", OPT_INT, &steps, "DDIM steps", .lo = 1, .hi = 100000},
        {"--eta", OPT_FLOAT, &eta, "DDIM eta (0: deterministic)", .hi = 100},
        {"--weights", OPT_STR, &weights, "ema or raw"},
        {"--seed", OPT_INT, &seed, "random seed", .hi = INT_MAX},
        {"--out", OPT_STR, &out, "grid PNG (default samples.png when no --out-dir)"},
        {"--out-dir", OPT_STR, &out_dir, "folder for one PNG per image (created if missing)"},
        {"--threads", OPT_INT, &threads, "threads (the images do not depend on it)", .lo = 1, .hi = 1024},
    };
    int no = sizeof opts / sizeof *opts;
    int rc = args_parse(argc, argv, opts, no, "--unet unet.h5 --vae vae.h5 [options]");
    if (rc) return rc > 0 ? 0 : 2;
    if (!unet_path || !vae_path) return errorf("ldm-sample: --unet and --vae are required (see --help)"), 2;
    if (n < 1) return errorf("ldm-sample: --n must be at least 1 (got %d)", n), 2;
    if (batch < 1 || threads < 1) return errorf("ldm-sample: --batch and --threads must be positive"), 2;
    int ddpm = !strcmp(sampler, "ddpm");
    if (!ddpm && strcmp(sampler, "ddim")) return errorf("ldm-sample: --sampler must be ddim or ddpm, not '%s'", sampler), 2;
    if (strcmp(weights, "ema") && strcmp(weights, "raw"))
        return errorf("ldm-sample: --weights must be ema or raw, not '%s'", weights), 2;
    if (!(eta >= 0)) return errorf("ldm-sample: --eta must be >= 0"), 2;
    if (!out && !out_dir) out = "samples.png";
    if (out && n > GRID_MAX_IMAGES)
        return errorf("ldm-sample: --n %d: a grid (--out) holds at most %d images; use --out-dir "
                      "for one PNG per image", n, GRID_MAX_IMAGES), 2;
    const PathArg inputs[] = {{"--unet", unet_path}, {"--vae", vae_path}};
    if ((out && check_output_path((PathArg){"--out", out}, OUT_FILE, inputs, 2)) ||
        (out_dir && check_output_path((PathArg){"--out-dir", out_dir}, OUT_DIR, inputs, 2)))
        return 1;
    if (out_dir && make_dir(out_dir)) return 1;
    set_threads(threads);
    h5_quiet();

    if (batch > n) batch = n;
    UNet u;
    Attrs *a = xcalloc(1, sizeof *a); // large: not on the stack
    if (unet_load(&u, unet_path, !strcmp(weights, "ema") ? "ema" : "model", batch, a)) return 1;
    int T;
    double scale;
    char sched_kind[ATTR_STR_MAX], pred_name[ATTR_STR_MAX], hash[17];
    const AttrSpec spec[] = {
        {"T", SPEC_INT, 1, 100000, &T, 0},
        {"scale_factor", SPEC_DOUBLE, 0, SCALE_FACTOR_MAX, &scale, SPEC_GT_LO},
        {"schedule", SPEC_STR, 1, ATTR_STR_MAX - 1, sched_kind, 0},
        {"prediction", SPEC_STR, 1, ATTR_STR_MAX - 1, pred_name, 0},
        {"vae_hash", SPEC_STR, 16, 16, hash, 0},
    };
    int bad = attrs_read_specs(a, unet_path, spec, (int)(sizeof spec / sizeof *spec));
    free(a);
    if (bad) return 1;
    int pred = prediction_from_name(pred_name, unet_path);
    if (pred < 0) return 1;
    if (!ddpm && (steps < 1 || steps > T))
        return errorf("ldm-sample: --steps %d must be in [1, T = %d] for DDIM", steps, T), 2;
    Schedule sched;
    if (schedule_init(&sched, T, sched_kind, unet_path)) return 1;

    Vae vae;
    if (vae_load(&vae, vae_path, batch, NULL)) return 1;
    char vh[17];
    vae_hash_of(vh, &vae);
    int h = vae_latent_size(&vae.cfg);
    if (vae.cfg.latent_channels != u.cfg.latent_channels || h != u.cfg.latent_size)
        return errorf("%s: the UNet draws latents (%d, %d, %d) but the VAE %s decodes (%d, %d, %d)",
                      unet_path, u.cfg.latent_channels, u.cfg.latent_size, u.cfg.latent_size,
                      vae_path, vae.cfg.latent_channels, h, h), 1;
    if (strcmp(vh, hash))
        return errorf("%s: trained on latents of the VAE with hash %s, but %s has hash %s",
                      unet_path, hash, vae_path, vh), 1;

    const int C = vae.cfg.in_channels, S = vae.cfg.image_size;
    size_t ln = (size_t)u.cfg.latent_channels * h * h, img = (size_t)C * S * S;
    // One batch at a time: --out-dir writes each batch's PNGs as it goes, the
    // grid keeps its (at most GRID_MAX_IMAGES) images for the end.
    float *z = xmalloc(((size_t)batch * ln + 1) * sizeof(float));             // (batch, Z, h, w) + 1
    float *x = xmalloc((size_t)(out ? n : batch) * img * sizeof(float)); // (n or batch, C, S, S)
    Rng rng;
    rng_init(&rng, (uint64_t)seed);
    fprintf(stderr, "ldm-sample: %d images, %s %d steps, %s weights, %d threads\n", n,
            ddpm ? "DDPM" : "DDIM", ddpm ? T : steps, weights, threads);
    interrupt_install();
    Progress prog;
    progress_init(&prog, 0);
    int nb = (n + batch - 1) / batch;
    for (int i0 = 0, bi = 0; i0 < n; i0 += batch, bi++) {
        if (interrupted()) {
            progress_end(&prog);
            if (out_dir && i0 > 0)
                return errorf("ldm-sample: interrupted; %d images written into %s", i0, out_dir), 130;
            return errorf("ldm-sample: interrupted; nothing written"), 130;
        }
        int b = n - i0 < batch ? n - i0 : batch;
        // x_T of image i is values [i ln, (i + 1) ln) of one stream over all
        // n images, so it depends on neither --batch nor --n. Box-Muller
        // draws values in pairs: an odd start is the second of a pair, drawn
        // from the pair's first value on into z[0], one place early.
        uint64_t first = (uint64_t)i0 * ln;
        Rng xr = rng;
        xr.counter = first & ~(uint64_t)1;
        rng_normal_fill(&xr, z, (size_t)b * ln + (first & 1));
        float *zb = z + (first & 1);
        Rng r = rng_derive(&rng, (uint64_t)bi); // per-batch step noise
        int src = ddpm ? ddpm_sample(&u, &sched, zb, b, pred, &r)
                       : ddim_sample(&u, &sched, zb, b, steps, (float)eta, pred, &r);
        if (src) return 1;
        // Broken weights (finite but huge) or a broken scale factor make NaN
        // or infinity here, which would write black images.
        if (first_nonfinite(zb, b * ln) < b * ln)
            return errorf("%s: the latents sampled for images %d..%d are not finite (broken "
                          "weights or scale factor?)", unet_path, i0, i0 + b - 1), 1;
        for (size_t j = 0; j < b * ln; j++) zb[j] = (float)(zb[j] / scale);
        float *xb = out ? x + (size_t)i0 * img : x;
        vae_decode(&vae, xb, zb, b);
        if (first_nonfinite(xb, b * img) < b * img)
            return errorf("%s: decoding the latents of images %d..%d gives values that are not "
                          "finite (broken weights?)", vae_path, i0, i0 + b - 1), 1;
        if (out_dir && write_pngs(out_dir, xb, i0, b, C, S)) return 1;
        progress_print(&prog, bi + 1, nb, i0 + b, "sampling", -1, bi + 1 == nb);
    }
    progress_end(&prog);
    if (out) {
        int cols = 1;
        while (cols * cols < n) cols++;
        if (png_write_grid(out, x, n, C, S, S, cols)) return 1;
        fprintf(stderr, "ldm-sample: wrote %s\n", out);
    }
    if (out_dir) fprintf(stderr, "ldm-sample: wrote %d PNGs into %s\n", n, out_dir);
    free(z), free(x);
    unet_free(&u);
    vae_free(&vae);
    schedule_free(&sched);
    return 0;
}
