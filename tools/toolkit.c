#include "toolkit.h"

#include <dirent.h>
#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "edit.h"
#include "image.h"
#include "paths.h"
#include "progress.h"
#include "unet_ckpt.h"
#include "vae_ckpt.h"

int default_threads(void) { return omp_get_num_procs(); }

int tool_make_dir(const char *dir) {
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

void tool_process_init(void) {
    // Past a file-size limit (ulimit -f) the kernel sends SIGXFSZ, whose
    // default action kills the process mid-write; ignored, write() fails
    // with EFBIG and the checkpoint/cache writers report it.
    signal(SIGXFSZ, SIG_IGN);
    // HDF5 1.10 closes every open file in an atexit() handler; a file whose
    // close already failed (disk full while flushing) makes that handler
    // crash. The kernel closes our descriptors anyway, so skip it. This must
    // come before the first HDF5 call.
    H5dont_atexit();
}

int vae_psnr(Vae *v, ImageSet *s, int start, int n, double *psnr) {
    const VaeConfig *c = &v->cfg;
    int B = v->max_batch, h = vae_latent_size(c);
    size_t img = (size_t)c->in_channels * c->image_size * c->image_size;
    size_t lat = (size_t)c->latent_channels * h * h;
    float *x = xmalloc(B * img * sizeof(float));      // (B, C, S, S)
    float *xh = xmalloc(B * img * sizeof(float));     // (B, C, S, S)
    float *mean = xmalloc(B * lat * sizeof(float));   // (B, Z, h, w)
    float *logvar = xmalloc(B * lat * sizeof(float)); // (B, Z, h, w)
    int *idx = xmalloc(B * sizeof(int));
    double se = 0;
    int rc = 0;
    for (int i0 = 0; i0 < n; i0 += B) {
        int b = n - i0 < B ? n - i0 : B;
        for (int i = 0; i < b; i++) idx[i] = start + i0 + i;
        if (imageset_batch(x, s, idx, b, NULL) != 0) {
            rc = -1;
            break;
        }
        vae_encode(v, mean, logvar, x, b);
        vae_decode(v, xh, mean, b);
        for (size_t j = 0; j < b * img; j++) {
            float y = xh[j] < -1 ? -1 : xh[j] > 1 ? 1 : xh[j];
            double d = (double)y - x[j];
            se += d * d;
        }
    }
    free(x), free(xh), free(mean), free(logvar), free(idx);
    if (rc != 0) return -1;
    // A perfect reconstruction (constant images) would be +inf dB, which
    // the run loop takes for a diverged figure: capped at 120 dB.
    double mse = fmax(se / ((double)n * img), 4e-12);
    *psnr = 10.0 * log10(4.0 / mse);
    return 0;
}

void vae_hash_of(char out[17], const Vae *v) { params_hash(out, &v->table, v->params); }

int check_cache_matches_vae(const LatentCache *c, const Vae *v, const char *vae_path) {
    const VaeConfig *k = &v->cfg;
    int h = vae_latent_size(k);
    if (c->Z != k->latent_channels || c->h != h || c->w != h)
        return errorf("%s: latents are (%d, %d, %d) but the VAE %s makes (%d, %d, %d)",
                      c->path, c->Z, c->h, c->w, vae_path, k->latent_channels, h, h);
    if (c->image_size != k->image_size || c->in_channels != k->in_channels)
        return errorf("%s: encodes %dx%d images with %d channels but the VAE %s is for "
                      "%dx%d with %d", c->path, c->image_size, c->image_size,
                      c->in_channels, vae_path, k->image_size, k->image_size, k->in_channels);
    char hash[17];
    vae_hash_of(hash, v);
    if (strcmp(hash, c->vae_hash) != 0)
        return errorf("%s: made by the VAE with hash %s, but %s has hash %s",
                      c->path, c->vae_hash, vae_path, hash);
    return 0;
}

int sample_model_load(SampleModel *m, const char *unet_path, const char *weights, int batch,
                      const char *class_arg, double guidance, int kind, int steps,
                      const char *prog) {
    memset(m, 0, sizeof *m);
    int guided = class_arg && guidance != 1.0 && guidance != 0.0;
    Attrs *a = xcalloc(1, sizeof *a); // large: not on the stack
    if (unet_load(&m->u, unet_path, strcmp(weights, "ema") ? "model" : "ema",
                  guided ? 2 * batch : batch, a))
        return free(a), -1;
    char sched_kind[ATTR_STR_MAX], pred_name[ATTR_STR_MAX], hash[17];
    const AttrSpec spec[] = {
        {"T", SPEC_INT, 1, 100000, &m->T, 0},
        {"scale_factor", SPEC_DOUBLE, 0, SCALE_FACTOR_MAX, &m->scale, SPEC_GT_LO},
        {"schedule", SPEC_STR, 1, ATTR_STR_MAX - 1, sched_kind, 0},
        {"prediction", SPEC_STR, 1, ATTR_STR_MAX - 1, pred_name, 0},
        {"vae_hash", SPEC_STR, 16, 16, hash, 0},
    };
    int bad = attrs_read_specs(a, unet_path, spec, (int)(sizeof spec / sizeof *spec));
    // Optional: the class names (from the cache), and the label dropout the
    // UNet was trained with.
    const Attr *names = attrs_find(a, CLASS_NAMES_ATTR), *pu = attrs_find(a, "p_uncond");
    m->class_names = xcalloc(1, ATTR_STR_MAX);
    const int K = m->u.cfg.num_classes;
    if (names && names->type == ATTR_STR && class_names_count(names->s) == K)
        snprintf(m->class_names, ATTR_STR_MAX, "%s", names->s);
    else if (names && K > 0)
        warnf("%s: the attribute %s does not name the %d classes; classes are shown by number",
              unet_path, CLASS_NAMES_ATTR, K);
    m->no_dropout = pu && ((pu->type == ATTR_DOUBLE && pu->d == 0) ||
                           (pu->type == ATTR_INT && pu->i == 0));
    free(a);
    if (bad || (m->prediction = prediction_from_name(pred_name, unet_path)) < 0 ||
        schedule_init(&m->sched, m->T, sched_kind, unet_path)) {
        unet_free(&m->u);
        return -1;
    }
    snprintf(m->vae_hash, sizeof m->vae_hash, "%s", hash);
    if (kind != SAMPLER_DDPM && (steps < 1 || steps > m->T))
        return errorf("%s: --steps %d must be in [1, T = %d] for %s", prog, steps, m->T,
                      sampler_name((SamplerKind)kind)), -2;
    return 0;
}

int sample_model_load_vae(SampleModel *m, const char *unet_path, const char *vae_path,
                          int vae_batch) {
    if (vae_load(&m->v, vae_path, vae_batch, NULL)) return -1;
    m->has_vae = 1;
    const char *hash = m->vae_hash;
    char vh[17];
    vae_hash_of(vh, &m->v);
    int h = vae_latent_size(&m->v.cfg);
    if (m->v.cfg.latent_channels != m->u.cfg.latent_channels || h != m->u.cfg.latent_size)
        return errorf("%s: the UNet draws latents (%d, %d, %d) but the VAE %s decodes (%d, %d, %d)",
                      unet_path, m->u.cfg.latent_channels, m->u.cfg.latent_size,
                      m->u.cfg.latent_size, vae_path, m->v.cfg.latent_channels, h, h);
    if (strcmp(vh, hash))
        return errorf("%s: trained on latents of the VAE with hash %s, but %s has hash %s",
                      unet_path, hash, vae_path, vh);
    return 0;
}

int sample_class_arg(const SampleModel *m, const char *unet_path, const char *class_arg,
                     int allow_all, int guidance_given, double guidance, const char *prog) {
    const int K = m->u.cfg.num_classes;
    if (!class_arg) {
        if (guidance_given) warnf("%s: --guidance without --class has no effect", prog);
        return -3;
    }
    if (K == 0)
        return errorf("%s: --class: %s is an unconditional UNet (trained without "
                      "--num-classes)", prog, unet_path), -2;
    int cls = -2;
    char *end;
    errno = 0;
    long y = strtol(class_arg, &end, 10);
    if (!strcmp(class_arg, "all") && allow_all) {
        cls = -1;
    } else if (end != class_arg && !*end) {
        if (errno || y < 0 || y >= K)
            return errorf("%s: --class %s is out of range: %s has classes 0..%d", prog,
                          class_arg, unet_path, K - 1), -2;
        cls = (int)y;
    } else {
        char name[ATTR_STR_MAX];
        for (int k = 0; k < K && cls == -2; k++) {
            class_name_get(name, sizeof name, m->class_names, k);
            if (name[0] && !strcmp(name, class_arg)) cls = k;
        }
        if (cls == -2)
            return errorf("%s: --class '%s' is neither %sa class number 0..%d nor a class name "
                          "of %s", prog, class_arg, allow_all ? "'all', " : "", K - 1,
                          unet_path), -2;
    }
    if (guidance != 1.0 && m->no_dropout)
        warnf("%s: %s was trained without label dropout (p_uncond 0): its null class was never "
              "learnt, so guidance %g mixes in an untrained prediction", prog, unet_path,
              guidance);
    return cls;
}

void sample_model_free(SampleModel *m) {
    unet_free(&m->u);
    if (m->has_vae) vae_free(&m->v);
    schedule_free(&m->sched);
    free(m->class_names);
    memset(m, 0, sizeof *m);
}

void generator_init(Generator *g, UNet *u, Vae *v, const Schedule *sched, SampleSpec spec,
                    double scale, int max_b, const char *unet_what, const char *vae_what) {
    CHECK(max_b >= 1);
    *g = (Generator){u, v, sched, spec, scale, unet_what, vae_what, max_b, NULL, NULL};
    size_t ln = (size_t)u->cfg.latent_channels * u->cfg.latent_size * u->cfg.latent_size;
    g->z = xmalloc_aligned(((size_t)max_b * ln + 1) * sizeof(float));
}

void generator_free(Generator *g) {
    free(g->z);
    memset(g, 0, sizeof *g);
}

int generator_run(Generator *g, float *x, int64_t i0, int b, int64_t bi, const int *y,
                  uint64_t seed) {
    CHECK(b >= 1 && b <= g->max_b);
    const UNetConfig *c = &g->u->cfg;
    size_t ln = (size_t)c->latent_channels * c->latent_size * c->latent_size;
    size_t img = (size_t)g->v->cfg.in_channels * g->v->cfg.image_size * g->v->cfg.image_size;
    Rng rng;
    rng_init(&rng, seed);
    // Box-Muller draws values in pairs: an odd start is the second of a pair,
    // drawn from the pair's first value on into z[0], one place early.
    uint64_t first = (uint64_t)i0 * ln;
    Rng xr = rng;
    xr.counter = first & ~(uint64_t)1;
    rng_normal_fill(&xr, g->z, (size_t)b * ln + (first & 1));
    float *zb = g->z + (first & 1); // (b, Z, h, w)
    if (g->spec.start > 0) {
        CHECK(g->x0 != NULL);
        edit_start_latent(zb, g->sched, &g->spec, g->x0, b, ln);
    }
    Rng r = rng_derive(&rng, (uint64_t)bi);
    SampleSpec sp = g->spec;
    sp.y = y;
    if (sample_run(g->u, g->sched, zb, b, &sp, &r)) return -1;
    // Broken weights (finite but huge) or a broken scale factor make NaN or
    // infinity here, which would decode to black images.
    if (first_nonfinite(zb, b * ln) < b * ln)
        return errorf("%s: the latents sampled for images %lld..%lld are not finite (broken "
                      "weights or scale factor?)", g->unet_what, (long long)i0,
                      (long long)(i0 + b - 1));
    for (size_t j = 0; j < b * ln; j++) zb[j] = (float)(zb[j] / g->scale);
    vae_decode(g->v, x, zb, b);
    if (first_nonfinite(x, b * img) < b * img)
        return errorf("%s: decoding the latents of images %lld..%lld gives values that are not "
                      "finite (broken weights?)", g->vae_what, (long long)i0,
                      (long long)(i0 + b - 1));
    return 0;
}

void quantize_8bit(float *x, size_t n) {
    // the reader's rule for 8-bit pixels (imageset.c): u8 / 127.5 - 1
    for (size_t i = 0; i < n; i++) x[i] = (float)image_pixel_u8(x[i]) / 127.5f - 1.0f;
}

int generator_features(Generator *g, FeatNet *f, int64_t n, const int *y, uint64_t seed,
                       float *feat, float *logits, int quiet) {
    const VaeConfig *vc = &g->v->cfg;
    int C = vc->in_channels, S = vc->image_size;
    size_t img = (size_t)C * S * S;
    float *x = xmalloc_aligned((size_t)g->max_b * img * sizeof(float)); // (max_b, C, S, S)
    Progress prog;
    progress_init(&prog, 0);
    long nb = (long)((n + g->max_b - 1) / g->max_b);
    int rc = 0;
    for (int64_t i0 = 0, bi = 0; i0 < n && rc == 0; i0 += g->max_b, bi++) {
        int b = (int)(n - i0 < g->max_b ? n - i0 : g->max_b);
        if (generator_run(g, x, i0, b, bi, y ? y + i0 : NULL, seed)) {
            rc = -1;
            break;
        }
        quantize_8bit(x, b * img);
        featnet_forward(f, feat + i0 * f->dim, logits ? logits + i0 * f->n_logits : NULL, x, b,
                        C, S, S);
        if (!quiet) progress_print(&prog, bi + 1, nb, (long)(i0 + b), "sampling", -1, bi + 1 == nb);
        if (interrupted()) rc = errorf("interrupted");
    }
    if (!quiet) progress_end(&prog);
    free(x);
    return rc;
}

// Where a network named on the command line ("fmnist-cnn") is looked for, in
// order: $LDM_WEIGHTS_DIR, the installed data folder, the source tree's
// metrics/ (so a build folder anywhere finds the committed domain network).
static const char *const weight_dirs_builtin[] = {LDM_DATA_INSTALL_DIR, LDM_DATA_SOURCE_DIR};

int featnet_resolve(char *out, size_t cap, const char *net) {
    size_t len = strlen(net);
    if (strchr(net, '/') || (len > 3 && !strcmp(net + len - 3, ".h5"))) {
        if (strlen(net) >= cap) return errorf("--net %s: path too long", net);
        strcpy(out, net);
        return 0;
    }
    const char *env = getenv("LDM_WEIGHTS_DIR");
    const char *dirs[3] = {env && *env ? env : NULL, weight_dirs_builtin[0], weight_dirs_builtin[1]};
    for (int i = 0; i < 3; i++) {
        if (!dirs[i]) continue;
        if (path_printf(out, cap, "%s/%s.h5", dirs[i], net)) return -1;
        if (access(out, R_OK) == 0) return 0;
    }
    return errorf("--net %s: no file %s.h5 in $LDM_WEIGHTS_DIR (%s), %s or %s; give the "
                  "weights file's path, or convert them first (README, \"Evaluation\")",
                  net, net, env && *env ? env : "not set", weight_dirs_builtin[0],
                  weight_dirs_builtin[1]);
}
