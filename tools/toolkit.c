#include "toolkit.h"

#include <dirent.h>
#include <hdf5.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

int default_threads(void) { return omp_get_num_procs(); }

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

long fault_nan_step(void) {
    const char *s = getenv("LDM_FAULT_NAN_STEP");
    return s ? atol(s) : 0;
}

double vae_psnr(Vae *v, const ImageSet *s, int start, int n) {
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
    for (int i0 = 0; i0 < n; i0 += B) {
        int b = n - i0 < B ? n - i0 : B;
        for (int i = 0; i < b; i++) idx[i] = start + i0 + i;
        imageset_batch(x, s, idx, b, NULL);
        vae_encode(v, mean, logvar, x, b);
        vae_decode(v, xh, mean, b);
        for (size_t j = 0; j < b * img; j++) {
            float y = xh[j] < -1 ? -1 : xh[j] > 1 ? 1 : xh[j];
            double d = (double)y - x[j];
            se += d * d;
        }
    }
    free(x), free(xh), free(mean), free(logvar), free(idx);
    double mse = se / ((double)n * img);
    return 10.0 * log10(4.0 / mse);
}

// "<dir>/<stem>.step<N>.h5" for checkpoint "<dir>/<stem>.h5".
static void split_path(const char *path, char *dir, size_t dcap, char *stem, size_t scap) {
    const char *slash = strrchr(path, '/');
    if (slash) snprintf(dir, dcap, "%.*s", (int)(slash - path), path);
    else snprintf(dir, dcap, ".");
    const char *base = slash ? slash + 1 : path;
    size_t len = strlen(base);
    if (len > 3 && !strcmp(base + len - 3, ".h5")) len -= 3;
    snprintf(stem, scap, "%.*s", (int)len, base);
}

static int cmp_long_desc(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x < y) - (x > y);
}

void keep_numbered_copy(const char *out, long step, int keep) {
    if (keep <= 0) return;
    char dir[4096], stem[1024], name[8192];
    split_path(out, dir, sizeof dir, stem, sizeof stem);
    snprintf(name, sizeof name, "%s/%s.step%ld.h5", dir, stem, step);
    unlink(name);
    if (link(out, name) != 0) warnf("%s: cannot keep a numbered copy", name);
    DIR *d = opendir(dir);
    if (!d) return;
    long steps[4096];
    int n = 0;
    size_t sl = strlen(stem);
    for (struct dirent *e; (e = readdir(d)) && n < 4096;) {
        long s;
        char tail[8];
        if (!strncmp(e->d_name, stem, sl) &&
            sscanf(e->d_name + sl, ".step%ld.h%2s", &s, tail) == 2 && !strcmp(tail, "5"))
            steps[n++] = s;
    }
    closedir(d);
    qsort(steps, n, sizeof *steps, cmp_long_desc);
    for (int i = keep; i < n; i++) {
        snprintf(name, sizeof name, "%s/%s.step%ld.h5", dir, stem, steps[i]);
        unlink(name);
    }
}

int resume_conflict_int(const char *ckpt, const char *flag, int given, int64_t stored) {
    if (given == stored) return 0;
    return errorf("%s %d contradicts the checkpoint %s (%lld); drop the flag to "
                  "use the checkpoint's value",
                  flag, given, ckpt, (long long)stored);
}

int resume_conflict_float(const char *ckpt, const char *flag, double given, double stored) {
    if ((float)stored == (float)given) return 0;
    return errorf("%s %g contradicts the checkpoint %s (%g); drop the flag to "
                  "use the checkpoint's value",
                  flag, given, ckpt, stored);
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

Rng run_stream(uint64_t seed, uint64_t kind, uint64_t index) {
    Rng base;
    rng_init(&base, seed);
    Rng k = rng_derive(&base, kind);
    return rng_derive(&k, index);
}

void epoch_sampler_init(EpochSampler *s, int n, int B, uint64_t seed) {
    CHECK(n > 0 && B > 0);
    s->n = n;
    s->B = B;
    s->steps_per_epoch = (n + B - 1) / B;
    s->seed = seed;
    s->perm = xmalloc((size_t)n * sizeof(int));
    s->epoch = -1;
}

void epoch_sampler_free(EpochSampler *s) { free(s->perm); }

int epoch_sampler_batch(EpochSampler *s, long step, const int **idx) {
    long epoch = step / s->steps_per_epoch, pos = step % s->steps_per_epoch;
    if (epoch != s->epoch) {
        for (int i = 0; i < s->n; i++) s->perm[i] = i;
        Rng r = run_stream(s->seed, STREAM_EPOCH, (uint64_t)epoch);
        rng_shuffle(&r, s->perm, s->n);
        s->epoch = epoch;
    }
    *idx = s->perm + pos * s->B;
    return (int)(s->n - pos * s->B < s->B ? s->n - pos * s->B : s->B);
}

int run_is_over(long step, long total, double elapsed_s, double budget_s) {
    return (total && step >= total) || (budget_s > 0 && elapsed_s >= budget_s) || interrupted();
}

double run_seconds_left(long step, long step_start, long total, double elapsed_s,
                        double budget_s) {
    double left = budget_s > 0 ? fmax(0, budget_s - elapsed_s) : -1;
    if (total && budget_s > 0 && step > step_start)
        left = fmin(left, elapsed_s / (step - step_start) * (total - step));
    return left;
}

long total_steps(long steps, int epochs, double minutes, long steps_per_epoch) {
    if (steps) return steps;
    if (epochs) return (long)epochs * steps_per_epoch;
    return minutes > 0 ? 0 : steps_per_epoch;
}
