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
