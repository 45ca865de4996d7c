// ldm-edit: edits images with a latent diffusion model (tools/edit.h).
//   img2img (SDEdit): the input's latent (the VAE's posterior mean times the
//   scale factor) noised to the step that --strength picks, denoised with any
//   sampler, decoded.
//   inpainting (--mask, white = to fill): the same, with the known region of
//   the latent put back, noised to the next timestep, after every step
//   (--resample R: RePaint's jump-backs), and the decoded result blended into
//   the input so that pixels EDIT_BLEND_PX or more from the mask are the
//   input's own.
// One input (--input, --out) or a folder (--input-dir, --out-dir, masks by
// name from --mask-dir), in batches; --grid adds a sheet of input / mask /
// result rows.
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "args.h"
#include "common.h"
#include "edit.h"
#include "image.h"
#include "paths.h"
#include "progress.h"
#include "rng.h"
#include "sampler.h"
#include "toolkit.h"

// One image to edit: its file, its mask's (or NULL) and where the result goes.
typedef struct {
    char *in, *mask, *out;
} Item;

static int has_image_ext(const char *name) {
    const char *dot = strrchr(name, '.');
    return dot && (!strcasecmp(dot, ".png") || !strcasecmp(dot, ".jpg") ||
                   !strcasecmp(dot, ".jpeg") || !strcasecmp(dot, ".bmp"));
}

// The length of `name` without its extension.
static size_t stem_len(const char *name) {
    const char *dot = strrchr(name, '.');
    return dot && dot != name ? (size_t)(dot - name) : strlen(name);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *dup_str(const char *s) {
    char *p = xmalloc(strlen(s) + 1);
    return strcpy(p, s);
}

// The names of the image files (.png, .jpg, .jpeg, .bmp, any case) directly in
// `dir`, in byte order. -1 with a message when the folder cannot be read.
static int list_images(char ***names, int *n, const char *dir) {
    *names = NULL, *n = 0;
    DIR *d = opendir(dir);
    if (!d) return errorf("%s: cannot open folder: %s", dir, strerror(errno));
    int cap = 16;
    *names = xmalloc((size_t)cap * sizeof **names);
    int rc = 0;
    for (struct dirent *e; rc == 0 && (e = readdir(d));) {
        char path[PATH_MAX];
        struct stat st;
        if (!has_image_ext(e->d_name)) continue;
        if ((rc = path_printf(path, sizeof path, "%s/%s", dir, e->d_name)) ||
            stat(path, &st) || S_ISDIR(st.st_mode))
            continue;
        if (*n == cap) *names = realloc(*names, (size_t)(cap *= 2) * sizeof **names);
        CHECK(*names != NULL);
        (*names)[(*n)++] = dup_str(e->d_name);
    }
    closedir(d);
    qsort(*names, (size_t)*n, sizeof **names, cmp_str);
    return rc;
}

// "<dir>/<the first name_len bytes of name><ext>", or NULL with a message when
// it is too long.
static char *join_path(const char *dir, const char *name, size_t name_len, const char *ext) {
    char path[PATH_MAX];
    if (path_printf(path, sizeof path, "%s/%.*s%s", dir, (int)name_len, name, ext)) return NULL;
    return dup_str(path);
}

// The items of --input-dir: every image of in_dir, its mask in mask_dir (the
// image file there with the same name up to the extension), its result
// out_dir/<name>.png. -1 with a message for an empty folder, a missing or
// ambiguous mask, or two inputs that would write the same result.
static int folder_items(Item **items, int *n, const char *in_dir, const char *mask_dir,
                        const char *out_dir) {
    char **names, **masks = NULL;
    int nm = 0, rc = list_images(&names, n, in_dir);
    if (rc == 0 && *n == 0)
        rc = errorf("%s: no image (.png/.jpg/.jpeg/.bmp) in this folder", in_dir);
    if (rc == 0 && mask_dir) rc = list_images(&masks, &nm, mask_dir);
    *items = xcalloc(*n > 0 ? (size_t)*n : 1, sizeof **items);
    for (int i = 0; i < *n && rc == 0; i++) {
        Item *it = &(*items)[i];
        size_t sl = stem_len(names[i]);
        if (!(it->in = join_path(in_dir, names[i], strlen(names[i]), "")) ||
            !(it->out = join_path(out_dir, names[i], sl, ".png"))) {
            rc = -1;
            break;
        }
        for (int k = 0; mask_dir && k < nm && rc == 0; k++) {
            if (stem_len(masks[k]) != sl || strncmp(masks[k], names[i], sl)) continue;
            if (it->mask)
                rc = errorf("%s: two masks for %s (%s and another); keep one", mask_dir,
                            names[i], masks[k]);
            else if (!(it->mask = join_path(mask_dir, masks[k], strlen(masks[k]), "")))
                rc = -1;
        }
        if (rc == 0 && mask_dir && !it->mask)
            rc = errorf("%s: no mask for %s (an image named %.*s.png, .jpg, .jpeg or .bmp)",
                        mask_dir, it->in, (int)sl, names[i]);
    }
    // a.png and a.jpg would write the same result
    char **outs = xmalloc((*n > 0 ? (size_t)*n : 1) * sizeof *outs);
    for (int i = 0; i < *n && rc == 0; i++) outs[i] = (*items)[i].out;
    if (rc == 0) qsort(outs, (size_t)*n, sizeof *outs, cmp_str);
    for (int i = 1; i < *n && rc == 0; i++)
        if (!strcmp(outs[i - 1], outs[i]))
            rc = errorf("%s: two images would both be written as %s; rename one", in_dir, outs[i]);
    free(outs);
    for (int i = 0; i < *n; i++) free(names[i]);
    for (int k = 0; k < nm; k++) free(masks[k]);
    free(names), free(masks);
    return rc;
}

// Refuses an output that is an input (any of the n items' inputs and masks,
// the models, the folders).
static int check_output(PathArg out, OutKind kind, const Item *items, int n, const PathArg *fixed,
                        int nfixed) {
    PathArg *in = xmalloc((size_t)(2 * n + nfixed) * sizeof *in);
    int k = 0;
    for (int i = 0; i < nfixed; i++) in[k++] = fixed[i];
    for (int i = 0; i < n; i++) {
        in[k++] = (PathArg){"--input", items[i].in};
        if (items[i].mask) in[k++] = (PathArg){"--mask", items[i].mask};
    }
    int rc = check_output_path(out, kind, in, k);
    free(in);
    return rc;
}

// The input's pixels (S, S, C) as the VAE takes them: -1 with a message naming
// the file when it cannot be decoded or is not S x S.
static int load_input(uint8_t *px, const char *path, int C, int S, const char *vae_path) {
    int w, h;
    const char *why = NULL;
    uint8_t *p = image_load(path, C, &w, &h, &why);
    if (!p) return errorf("%s: cannot decode the image (%s)", path, why);
    int rc = 0;
    if (w != S || h != S)
        rc = errorf("%s: the image is %dx%d but the VAE %s takes %dx%d images; resize or crop it "
                    "first", path, w, h, vae_path, S, S);
    else
        memcpy(px, p, (size_t)S * S * C);
    image_free(p);
    return rc;
}

// Every input's header (size) and mask before any work: -1 with a message
// naming the first file that will not do.
static int check_items(const Item *items, int n, int S, const char *vae_path) {
    for (int i = 0; i < n; i++) {
        int w, h;
        const char *why = NULL;
        if (image_info(items[i].in, &w, &h, &why))
            return errorf("%s: cannot decode the image (%s)", items[i].in, why);
        if (w != S || h != S)
            return errorf("%s: the image is %dx%d but the VAE %s takes %dx%d images; resize or "
                          "crop it first", items[i].in, w, h, vae_path, S, S);
        if (items[i].mask && image_info(items[i].mask, &w, &h, &why))
            return errorf("%s: the mask is not an image that can be read (%s)", items[i].mask,
                          why);
    }
    return 0;
}

// 8-bit HWC (S, S, C) -> floats (C, S, S) in [-1, 1] (the readers' u / 127.5 - 1).
static void u8_to_chw(float *x, const uint8_t *px, int C, int S) {
    for (int c = 0; c < C; c++)
        for (int p = 0; p < S * S; p++)
            x[(size_t)c * S * S + p] = (float)px[(size_t)p * C + c] / 127.5f - 1.0f;
}

int main(int argc, char **argv) {
    tool_process_init();
    const char *unet_path = NULL, *vae_path = NULL, *sampler = "ddim", *weights = "ema";
    const char *input = NULL, *input_dir = NULL, *mask = NULL, *mask_dir = NULL;
    const char *out = NULL, *out_dir = NULL, *grid = NULL, *class_arg = NULL;
    int batch = 64, steps = 50, seed = 0, resample = 1, threads = default_threads();
    double eta = 0.0, guidance = 1.0, strength = 0.75;
    Opt opts[] = {
        {"--unet", OPT_STR, &unet_path, "UNet checkpoint from ldm-train"},
        {"--vae", OPT_STR, &vae_path, "the VAE the UNet's latents came from"},
        {"--input", OPT_STR, &input, "the image to edit (PNG/JPEG/BMP of the VAE's size; grey <-> "
         "RGB converted to its channels)"},
        {"--input-dir", OPT_STR, &input_dir, "a folder of images to edit (its .png/.jpg/.jpeg/.bmp "
         "files, in name order)"},
        {"--mask", OPT_STR, &mask, "inpainting mask for --input: white (grey >= 128) is filled, "
         "the rest kept; another size is resized (nearest)"},
        {"--mask-dir", OPT_STR, &mask_dir, "masks for --input-dir: for a.png the image a.* here"},
        {"--strength", OPT_FLOAT, &strength, "in (0, 1]: how far the input is noised, start step = "
         "steps - round(strength * steps) (default 0.75; 1 with a mask: from pure noise)"},
        {"--resample", OPT_INT, &resample, "with a mask: RePaint's resampling, each step run R "
         "times (the x renoised back in between)", .lo = 1, .hi = 1000},
        {"--out", OPT_STR, &out, "the result of --input (a PNG of the input's size)"},
        {"--out-dir", OPT_STR, &out_dir, "folder for --input-dir's results, <name>.png each "
         "(created if missing)"},
        {"--grid", OPT_STR, &grid, "also a PNG sheet: a row per input of input / mask / result"},
        {"--batch", OPT_INT, &batch, "images edited at once", .lo = 1, .hi = 1 << 16},
        {"--sampler", OPT_STR, &sampler, "ddim, ddpm (all T steps), dpmpp2m (DPM-Solver++(2M), "
         "deterministic, made for 10-20 steps) or euler_a (Euler-ancestral)"},
        {"--steps", OPT_INT, &steps, "steps of ddim, dpmpp2m and euler_a (of which --strength "
         "runs the last part)", .lo = 1, .hi = 100000},
        {"--eta", OPT_FLOAT, &eta, "DDIM eta (0: deterministic)", .hi = 100},
        {"--class", OPT_STR, &class_arg, "class-conditional UNet: a class (number or name); "
         "without it the null class (unconditional)"},
        {"--guidance", OPT_FLOAT, &guidance, "classifier-free guidance scale w with --class: "
         "eps = eps(null) + w (eps(class) - eps(null)); 1: the conditional model, 0: the "
         "unconditional one; any other w batches both passes (twice the batch)", .lo = 0, .hi = 1000},
        {"--weights", OPT_STR, &weights, "ema or raw"},
        {"--seed", OPT_INT, &seed, "random seed (the same seed and --batch: the same images)",
         .hi = INT_MAX},
        {"--threads", OPT_INT, &threads, "threads (the images do not depend on it)", .lo = 1, .hi = 1024},
    };
    int no = sizeof opts / sizeof *opts;
    int rc = args_parse(argc, argv, opts, no,
                        "--unet unet.h5 --vae vae.h5 --input img.png [--mask mask.png] --out out.png "
                        "[options]\n       ldm-edit --unet unet.h5 --vae vae.h5 --input-dir DIR "
                        "[--mask-dir DIR] --out-dir DIR [options]");
    if (rc) return rc > 0 ? 0 : 2;
    if (!unet_path || !vae_path)
        return errorf("ldm-edit: --unet and --vae are required (see --help)"), 2;
    if (!input == !input_dir) return errorf("ldm-edit: give one of --input and --input-dir"), 2;
    if (input && (!out || out_dir || mask_dir))
        return errorf("ldm-edit: --input takes --out (and --mask), not --out-dir or --mask-dir"), 2;
    if (input_dir && (!out_dir || out || mask))
        return errorf("ldm-edit: --input-dir takes --out-dir (and --mask-dir), not --out or --mask"), 2;
    const int masked = mask || mask_dir;
    if (!args_given(opts, no, "--strength")) strength = masked ? 1.0 : 0.75;
    if (!(strength > 0 && strength <= 1))
        return errorf("ldm-edit: --strength must be in (0, 1], got %g", strength), 2;
    if (resample > 1 && !masked)
        return errorf("ldm-edit: --resample needs a mask (--mask or --mask-dir)"), 2;
    int kind = sampler_from_name(sampler, "ldm-edit: --sampler");
    if (kind < 0) return 2;
    if (strcmp(weights, "ema") && strcmp(weights, "raw"))
        return errorf("ldm-edit: --weights must be ema or raw, not '%s'", weights), 2;
    if (!(eta >= 0)) return errorf("ldm-edit: --eta must be >= 0"), 2;
    if (!(guidance >= 0)) return errorf("ldm-edit: --guidance must be >= 0"), 2;

    Item *items;
    int n = 1;
    if (input) {
        items = xcalloc(1, sizeof *items);
        items->in = dup_str(input), items->out = dup_str(out);
        items->mask = mask ? dup_str(mask) : NULL;
    } else if (folder_items(&items, &n, input_dir, mask_dir, out_dir)) {
        return 1;
    }
    if (grid && 3 * n > GRID_MAX_IMAGES)
        return errorf("ldm-edit: --grid: %d inputs make %d images, a grid holds at most %d", n,
                      3 * n, GRID_MAX_IMAGES), 2;
    const PathArg fixed[] = {{"--unet", unet_path}, {"--vae", vae_path},
                             {"--input-dir", input_dir}, {"--mask-dir", mask_dir}};
    if (out_dir && check_output((PathArg){"--out-dir", out_dir}, OUT_DIR, items, n, fixed, 4))
        return 1;
    if (input && check_output((PathArg){"--out", out}, OUT_FILE, items, 1, fixed, 4)) return 1;
    if (grid && check_output((PathArg){"--grid", grid}, OUT_FILE, items, n, fixed, 4)) return 1;
    for (int i = 0; i < n; i++)
        if (grid && !strcmp(grid, items[i].out))
            return errorf("ldm-edit: --grid %s is also the result of %s", grid, items[i].in), 2;
    set_threads(threads);
    h5_quiet();

    if (batch > n) batch = n;
    SampleModel m;
    int lrc = sample_model_load(&m, unet_path, weights, batch, class_arg, guidance, kind, steps,
                                "ldm-edit");
    if (lrc) return lrc == -2 ? 2 : 1;
    int cls = sample_class_arg(&m, unet_path, class_arg, 0, args_given(opts, no, "--guidance"),
                               guidance, "ldm-edit");
    if (cls == -2) return 2;
    if (sample_model_load_vae(&m, unet_path, vae_path, batch)) return 1;
    const int C = m.v.cfg.in_channels, S = m.v.cfg.image_size;
    const int Z = m.u.cfg.latent_channels, h = m.u.cfg.latent_size;
    if (check_items(items, n, S, vae_path)) return 1;
    // Each result in --out-dir against its own input and mask (results are
    // written to a temporary file and renamed, so a link to another input is
    // replaced, not written through).
    if (out_dir && tool_make_dir(out_dir)) return 1;
    for (int i = 0; out_dir && i < n; i++)
        if (check_output((PathArg){"--out-dir", items[i].out}, OUT_FILE, items + i, 1, fixed, 4))
            return 1;

    SampleSpec sp = sample_spec((SamplerKind)kind, steps, m.prediction);
    sp.eta = (float)eta;
    sp.guidance = class_arg ? (float)guidance : 1.0f; // without labels w has no effect
    const int nsteps = sampler_timesteps(&sp, &m.sched, NULL);
    sp.start = edit_start_step(strength, nsteps);
    int *ts = xmalloc((size_t)nsteps * sizeof *ts);
    sampler_timesteps(&sp, &m.sched, ts);
    Inpaint inp;
    edit_inpaint_init(&inp, &m.sched, &sp, batch, Z, h, resample);
    if (masked) sp.hook = edit_inpaint_hook, sp.ctx = &inp;
    Generator gen;
    generator_init(&gen, &m.u, &m.v, &m.sched, sp, m.scale, batch, unet_path, vae_path);

    const size_t img = (size_t)C * S * S, ln = (size_t)Z * h * h, plane = (size_t)S * S;
    uint8_t *px = xmalloc((size_t)batch * img);           // (batch, S, S, C) the inputs
    uint8_t *res = xmalloc((size_t)batch * img);          // (batch, S, S, C) the results
    uint8_t *pm = xmalloc((size_t)batch * plane);         // (batch, S, S) pixel masks
    uint8_t *lm = xmalloc((size_t)batch * h * h);         // (batch, h, h) latent masks
    float *x = xmalloc_aligned((size_t)batch * img * sizeof(float));   // (batch, C, S, S)
    float *mean = xmalloc_aligned((size_t)batch * ln * sizeof(float)); // (batch, Z, h, h)
    float *logvar = xmalloc_aligned((size_t)batch * ln * sizeof(float)); // (batch, Z, h, h)
    const int cols = masked ? 3 : 2; // the grid's: input, mask (when masked), result
    float *sheet = grid ? xmalloc((size_t)cols * n * img * sizeof(float)) : NULL; // (cols n, C, S, S)
    int *labels = xmalloc((size_t)batch * sizeof *labels); // (batch)
    for (int b = 0; b < batch; b++) labels[b] = cls;

    char what[160] = "";
    if (cls >= 0) snprintf(what, sizeof what, ", class %d, guidance %g", cls, guidance);
    else if (m.u.cfg.num_classes) snprintf(what, sizeof what, ", the null class (no --class)");
    fprintf(stderr, "ldm-edit: %d image%s, %s, strength %g: steps %d..%d of %s %d (from %s t = %d)%s, "
            "%s weights, %d threads\n", n, n > 1 ? "s" : "",
            masked ? "inpainting" : "img2img", strength, sp.start, nsteps - 1, sampler, nsteps,
            sp.start ? "the input noised to" : "pure noise at", ts[sp.start], what, weights, threads);
    if (masked && resample > 1)
        fprintf(stderr, "ldm-edit: each step runs %d times (--resample)\n", resample);
    interrupt_install();
    Progress prog;
    progress_init(&prog, 0);
    const int nb = (n + batch - 1) / batch;
    int written = 0;
    rc = 0;
    for (int i0 = 0, bi = 0; i0 < n && rc == 0; i0 += batch, bi++) {
        if (interrupted()) {
            rc = errorf("ldm-edit: interrupted; %d result%s written", written, written == 1 ? "" : "s");
            break;
        }
        const int b = n - i0 < batch ? n - i0 : batch;
        for (int i = 0; i < b && rc == 0; i++) {
            const Item *it = &items[i0 + i];
            int resized = 0;
            rc = load_input(px + i * img, it->in, C, S, vae_path);
            if (rc == 0 && it->mask) rc = edit_mask_load(pm + i * plane, it->mask, S, &resized);
            if (rc == 0 && resized)
                fprintf(stderr, "ldm-edit: %s: not %dx%d, resized (nearest) to the input's size\n",
                        it->mask, S, S);
            if (rc == 0 && it->mask) edit_latent_mask(lm + (size_t)i * h * h, pm + i * plane, S, h);
            u8_to_chw(x + i * img, px + i * img, C, S);
        }
        if (rc) break;
        vae_encode(&m.v, mean, logvar, x, b);
        for (size_t j = 0; j < (size_t)b * ln; j++) mean[j] = (float)(mean[j] * m.scale);
        gen.x0 = mean;
        // The hook's noise: a stream of its own beside the batch's step noise.
        Rng base, step;
        rng_init(&base, (uint64_t)seed);
        step = rng_derive(&base, (uint64_t)bi);
        inp.B = b, inp.x0 = mean, inp.fill = lm, inp.rng = rng_derive(&step, 1), inp.jumps = 0;
        if (generator_run(&gen, x, i0, b, bi, cls >= 0 ? labels : NULL, (uint64_t)seed)) {
            rc = -1;
            break;
        }
        for (int i = 0; i < b && rc == 0; i++) {
            const Item *it = &items[i0 + i];
            edit_composite(res + i * img, px + i * img, x + i * img,
                           it->mask ? pm + i * plane : NULL, C, S);
            rc = png_write(it->out, res + i * img, S, S, C);
            written += rc == 0;
            if (rc || !sheet) continue;
            float *row = sheet + (size_t)cols * (i0 + i) * img; // input, [mask,] result
            u8_to_chw(row, px + i * img, C, S);
            for (size_t p = 0; masked && p < img; p++)
                row[img + p] = pm[i * plane + p % plane] ? 1.0f : -1.0f;
            u8_to_chw(row + (cols - 1) * img, res + i * img, C, S);
        }
        progress_print(&prog, bi + 1, nb, i0 + b, "editing", -1, bi + 1 == nb);
    }
    progress_end(&prog);
    if (rc == 0 && sheet) {
        rc = png_write_grid(grid, sheet, cols * n, C, S, S, cols);
        if (rc == 0) fprintf(stderr, "ldm-edit: wrote the grid %s\n", grid);
    }
    if (rc == 0 && input) fprintf(stderr, "ldm-edit: wrote %s\n", out);
    if (rc == 0 && !input) fprintf(stderr, "ldm-edit: wrote %d PNGs into %s\n", n, out_dir);
    free(px), free(res), free(pm), free(lm), free(x), free(mean), free(logvar), free(sheet);
    free(labels), free(ts);
    for (int i = 0; i < n; i++) free(items[i].in), free(items[i].mask), free(items[i].out);
    free(items);
    edit_inpaint_free(&inp);
    generator_free(&gen);
    sample_model_free(&m);
    return rc ? (interrupted() ? 130 : 1) : 0;
}
