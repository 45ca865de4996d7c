// ldm-sample: draws latents with the UNet (DDIM, DDPM, DPM-Solver++(2M) or
// Euler-ancestral; on a class-conditional UNet for a class, or one row per
// class, with classifier-free guidance), divides them by the cache's scale
// factor, decodes them with the VAE and writes PNGs.
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
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
    const char *out = NULL, *out_dir = NULL, *class_arg = NULL;
    int n = 64, batch = 64, steps = 50, seed = 0, threads = default_threads();
    double eta = 0.0, guidance = 1.0;
    Opt opts[] = {
        {"--unet", OPT_STR, &unet_path, "UNet checkpoint from ldm-train"},
        {"--vae", OPT_STR, &vae_path, "the VAE the UNet's latents came from"},
        {"--n", OPT_INT, &n, "images to draw (with --class all: per class)", .lo = 1, .hi = 1 << 30},
        {"--batch", OPT_INT, &batch, "images sampled at once", .lo = 1, .hi = 1 << 16},
        {"--sampler", OPT_STR, &sampler, "ddim, ddpm (all T steps), dpmpp2m (DPM-Solver++(2M), "
         "deterministic, made for 10-20 steps) or euler_a (Euler-ancestral)"},
        {"--steps", OPT_INT, &steps, "steps of ddim, dpmpp2m and euler_a", .lo = 1, .hi = 100000},
        {"--eta", OPT_FLOAT, &eta, "DDIM eta (0: deterministic)", .hi = 100},
        {"--class", OPT_STR, &class_arg, "class-conditional UNet: a class (number or name) or "
         "'all' (a grid row per class; --n per class); without it the null class (unconditional)"},
        {"--guidance", OPT_FLOAT, &guidance, "classifier-free guidance scale w with --class: "
         "eps = eps(null) + w (eps(class) - eps(null)); 1: the conditional model, 0: the "
         "unconditional one; any other w batches both passes (twice the batch)", .lo = 0, .hi = 1000},
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
    int kind = sampler_from_name(sampler, "ldm-sample: --sampler");
    if (kind < 0) return 2;
    if (strcmp(weights, "ema") && strcmp(weights, "raw"))
        return errorf("ldm-sample: --weights must be ema or raw, not '%s'", weights), 2;
    if (!(eta >= 0)) return errorf("ldm-sample: --eta must be >= 0"), 2;
    if (!out && !out_dir) out = "samples.png";
    if (out && n > GRID_MAX_IMAGES)
        return errorf("ldm-sample: --n %d: a grid (--out) holds at most %d images; use --out-dir "
                      "for one PNG per image", n, GRID_MAX_IMAGES), 2;
    if (!(guidance >= 0)) return errorf("ldm-sample: --guidance must be >= 0"), 2;
    const PathArg inputs[] = {{"--unet", unet_path}, {"--vae", vae_path}};
    if ((out && check_output_path((PathArg){"--out", out}, OUT_FILE, inputs, 2)) ||
        (out_dir && check_output_path((PathArg){"--out-dir", out_dir}, OUT_DIR, inputs, 2)))
        return 1;
    if (out_dir && tool_make_dir(out_dir)) return 1;
    set_threads(threads);
    h5_quiet();

    if (batch > n) batch = n;
    SampleModel m;
    rc = sample_model_load(&m, unet_path, weights, batch, class_arg, guidance, kind, steps,
                           "ldm-sample");
    if (rc) return rc == -2 ? 2 : 1;
    const int T = m.T, K = m.u.cfg.num_classes;
    // -3: no --class (the null class on a conditional UNet), -1: all
    int cls = sample_class_arg(&m, unet_path, class_arg, 1, args_given(opts, no, "--guidance"),
                               guidance, "ldm-sample");
    if (cls == -2) return 2;
    if (sample_model_load_vae(&m, unet_path, vae_path, batch)) return 1;
    const int rows = cls == -1 ? K : 1; // --class all: a grid row per class
    const int C = m.v.cfg.in_channels, S = m.v.cfg.image_size;
    const int total = rows * n; // images in all
    if (out && total > GRID_MAX_IMAGES)
        return errorf("ldm-sample: --class all --n %d: a grid (--out) of %d classes holds at most "
                      "%d images a class; use --out-dir for one PNG per image", n, K,
                      GRID_MAX_IMAGES / K), 2;
    size_t img = (size_t)C * S * S;
    // One batch at a time: --out-dir writes each batch's PNGs as it goes, the
    // grid keeps its (at most GRID_MAX_IMAGES) images for the end.
    float *x = xmalloc((size_t)(out ? total : batch) * img * sizeof(float)); // (total or batch, C, S, S)
    int *labels = xmalloc((size_t)batch * sizeof *labels);                   // (batch)
    SampleSpec sp = sample_spec((SamplerKind)kind, steps, m.prediction);
    sp.eta = (float)eta;
    sp.guidance = class_arg ? (float)guidance : 1.0f; // without labels w has no effect
    Generator gen;
    generator_init(&gen, &m.u, &m.v, &m.sched, sp, m.scale, batch, unet_path, vae_path);
    char what[96] = "";
    if (cls == -1)
        snprintf(what, sizeof what, ", every class (%d rows), guidance %g", K, guidance);
    else if (class_arg)
        snprintf(what, sizeof what, ", class %d, guidance %g", cls, guidance);
    else if (K)
        snprintf(what, sizeof what, ", the null class (no --class)");
    fprintf(stderr, "ldm-sample: %d images, %s %d steps%s, %s weights, %d threads\n", total,
            sampler, kind == SAMPLER_DDPM ? T : steps, what, weights, threads);
    interrupt_install();
    Progress prog;
    progress_init(&prog, 0);
    int nb = (n + batch - 1) / batch;
    // --class all: each row repeats the same x_T and step noise under another
    // class, so a column shows one draw across the classes.
    for (int row = 0; row < rows; row++) {
        int c = cls == -1 ? row : cls;
        char parts[ATTR_STR_MAX + 32] = "sampling", name[ATTR_STR_MAX];
        if (class_arg) {
            class_name_get(name, sizeof name, m.class_names, c);
            snprintf(parts, sizeof parts, name[0] ? "class %d (%s)" : "class %d", c, name);
        }
        for (int b = 0; b < batch; b++) labels[b] = c;
        for (int i0 = 0, bi = 0; i0 < n; i0 += batch, bi++) {
            int g0 = row * n + i0; // the first image's index over all rows
            if (interrupted()) {
                progress_end(&prog);
                if (out_dir && g0 > 0)
                    return errorf("ldm-sample: interrupted; %d images written into %s", g0, out_dir), 130;
                return errorf("ldm-sample: interrupted; nothing written"), 130;
            }
            int b = n - i0 < batch ? n - i0 : batch;
            float *xb = out ? x + (size_t)g0 * img : x;
            if (generator_run(&gen, xb, i0, b, bi, class_arg ? labels : NULL, (uint64_t)seed))
                return 1;
            if (out_dir && write_pngs(out_dir, xb, g0, b, C, S)) return 1;
            progress_print(&prog, row * nb + bi + 1, rows * nb, g0 + b, parts, -1,
                           row * nb + bi + 1 == rows * nb);
        }
    }
    progress_end(&prog);
    if (out) {
        int cols = 1;
        while (cols * cols < total) cols++;
        if (png_write_grid(out, x, total, C, S, S, rows > 1 ? n : cols)) return 1;
        fprintf(stderr, "ldm-sample: wrote %s\n", out);
    }
    if (out_dir) fprintf(stderr, "ldm-sample: wrote %d PNGs into %s\n", total, out_dir);
    free(x), free(labels);
    generator_free(&gen);
    sample_model_free(&m);
    return 0;
}
