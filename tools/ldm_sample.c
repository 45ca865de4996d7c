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
#include "progress.h"
#include "rng.h"
#include "sampler.h"
#include "schedule.h"
#include "toolkit.h"
#include "unet.h"
#include "unet_ckpt.h"
#include "vae_ckpt.h"

// The folder part of `path` is a writable folder (checked before minutes of sampling).
static int check_writable(const char *path) {
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (slash) snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    else snprintf(dir, sizeof dir, ".");
    if (slash == path) snprintf(dir, sizeof dir, "/");
    if (access(dir, W_OK) != 0)
        return errorf("%s: cannot write there (%s: %s)", path, dir, strerror(errno));
    return 0;
}

static int make_dir(const char *dir) {
    char p[4096];
    snprintf(p, sizeof p, "%s", dir);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, 0777) != 0 && errno != EEXIST) return errorf("%s: cannot create folder: %s", p, strerror(errno));
        *s = '/';
    }
    if (mkdir(p, 0777) != 0 && errno != EEXIST) return errorf("%s: cannot create folder: %s", p, strerror(errno));
    if (access(p, W_OK) != 0) return errorf("%s: folder is not writable", p);
    return 0;
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
    if (out && check_writable(out)) return 1;
    if (out_dir && make_dir(out_dir)) return 1;
    set_threads(threads);
    h5_quiet();

    if (batch > n) batch = n;
    UNet u;
    Attrs a = {0};
    if (unet_load(&u, unet_path, !strcmp(weights, "ema") ? "ema" : "model", batch, &a)) return 1;
    int64_t T;
    double scale;
    char sched_kind[ATTR_STR_MAX], pred_name[ATTR_STR_MAX], hash[ATTR_STR_MAX];
    if (attrs_get_int(&a, unet_path, "T", &T) || attrs_get_double(&a, unet_path, "scale_factor", &scale) ||
        attrs_get_str(&a, unet_path, "schedule", sched_kind, sizeof sched_kind) ||
        attrs_get_str(&a, unet_path, "prediction", pred_name, sizeof pred_name) ||
        attrs_get_str(&a, unet_path, "vae_hash", hash, sizeof hash))
        return 1;
    if (T < 1 || T > 100000) return errorf("%s: T = %lld is out of range", unet_path, (long long)T), 1;
    if (!(scale > 0)) return errorf("%s: scale_factor %g is not positive", unet_path, scale), 1;
    int pred = prediction_from_name(pred_name);
    if (pred < 0) return 1;
    if (!ddpm && (steps < 1 || steps > T))
        return errorf("ldm-sample: --steps %d must be in [1, T = %lld] for DDIM", steps, (long long)T), 2;
    Schedule sched;
    if (schedule_init(&sched, (int)T, sched_kind)) return 1;

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
    float *z = xmalloc((size_t)n * ln * sizeof(float));   // (n, Z, h, w)
    float *x = xmalloc((size_t)n * img * sizeof(float));  // (n, C, S, S)
    Rng rng;
    rng_init(&rng, (uint64_t)seed);
    rng_normal_fill(&rng, z, (size_t)n * ln); // x_T for all n first: independent of --batch
    fprintf(stderr, "ldm-sample: %d images, %s %d steps, %s weights, %d threads\n", n,
            ddpm ? "DDPM" : "DDIM", ddpm ? (int)T : steps, weights, threads);
    interrupt_install();
    Progress prog;
    progress_init(&prog, 0);
    int nb = (n + batch - 1) / batch;
    for (int i0 = 0, bi = 0; i0 < n; i0 += batch, bi++) {
        if (interrupted()) return errorf("ldm-sample: interrupted; nothing written"), 130;
        int b = n - i0 < batch ? n - i0 : batch;
        Rng r = rng_derive(&rng, (uint64_t)bi); // per-batch step noise
        int src = ddpm ? ddpm_sample(&u, &sched, z + i0 * ln, b, pred, &r)
                       : ddim_sample(&u, &sched, z + i0 * ln, b, steps, (float)eta, pred, &r);
        if (src) return 1;
        for (size_t j = 0; j < b * ln; j++) z[i0 * ln + j] = (float)(z[i0 * ln + j] / scale);
        vae_decode(&vae, x + i0 * img, z + i0 * ln, b);
        progress_print(&prog, bi + 1, nb, i0 + b, "sampling", -1, bi + 1 == nb);
    }
    progress_end(&prog);
    if (out) {
        int cols = 1;
        while (cols * cols < n) cols++;
        if (png_write_grid(out, x, n, C, S, S, cols)) return 1;
        fprintf(stderr, "ldm-sample: wrote %s\n", out);
    }
    if (out_dir) {
        uint8_t *px = xmalloc(img);
        for (int i = 0; i < n; i++) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%06d.png", out_dir, i);
            image_to_u8(px, x + i * img, C, S, S);
            if (png_write(path, px, S, S, C)) return 1;
        }
        free(px);
        fprintf(stderr, "ldm-sample: wrote %d PNGs into %s\n", n, out_dir);
    }
    free(z), free(x);
    unet_free(&u);
    vae_free(&vae);
    schedule_free(&sched);
    return 0;
}
