// test_vae.c: the VAE against tests/golden/vae.h5 (tests/reference/gen_vae.py):
// loss terms, every parameter gradient, encode and decode; also that
// gradients accumulate and that results do not depend on the thread count.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "testutil.h"
#include "vae.h"

#define GOLDEN "vae.h5"

static float *read_case(const char *group, const char *name, size_t *n) {
    return golden_read(GOLDEN, golden_name(group, name), n);
}

static float read_scalar(const char *group, const char *name) {
    float *p = golden_read_n(GOLDEN, golden_name(group, name), 1);
    float v = p[0];
    free(p);
    return v;
}

static void check_scalar(const char *what, float got, float ref, double tol) {
    check_close(what, &got, &ref, 1, tol);
}

static void check_array(const char *what, const float *got, const char *group,
                        const char *name, size_t n_expected, double tol) {
    size_t n;
    float *ref = read_case(group, name, &n);
    if (n != n_expected)
        check_true(what, 0); // golden and model disagree on the shape
    else
        check_close(what, got, ref, n, tol);
    free(ref);
}

static void run_case(const char *group) {
    printf("-- case %s\n", *group ? group : "/");
    size_t n;
    int *cfgv = NULL;
    {
        char key[256];
        snprintf(key, sizeof key, "%s/config", group);
        cfgv = golden_read_int(GOLDEN, key, &n);
        CHECK(n == 5);
    }
    VaeConfig cfg = {.in_channels = cfgv[0], .image_size = cfgv[1],
                     .base_channels = cfgv[2], .latent_channels = cfgv[3],
                     .kl_weight = read_scalar(group, "kl_weight")};
    int B = cfgv[4];
    free(cfgv);

    // max_batch above B, so the carving at max_batch is used at a smaller B.
    Vae v;
    vae_init(&v, &cfg, B + 2);
    for (int i = 0; i < v.table.n; i++) {
        const ParamInfo *pi = &v.table.info[i];
        char key[256];
        snprintf(key, sizeof key, "model/%s", pi->name);
        float *w = read_case(group, key, &n);
        CHECK(n == pi->size);
        memcpy(v.params + pi->offset, w, n * sizeof(float));
        free(w);
    }
    size_t n_x, n_eps;
    float *x = read_case(group, "x", &n_x);
    float *eps = read_case(group, "eps", &n_eps);
    int h = vae_latent_size(&cfg);
    size_t img = (size_t)B * cfg.in_channels * cfg.image_size * cfg.image_size;
    size_t lat = (size_t)B * cfg.latent_channels * h * h;
    CHECK(n_x == img && n_eps == lat);

    set_threads(2);
    memset(v.grads, 0, v.table.total * sizeof(float));
    float loss = vae_forward(&v, x, eps, B);
    vae_backward(&v);
    check_scalar("loss", loss, read_scalar(group, "loss"), 1e-5);
    check_scalar("v->loss", v.loss, read_scalar(group, "loss"), 1e-5);
    check_scalar("rec", v.rec, read_scalar(group, "rec"), 1e-5);
    check_scalar("kl", v.kl, read_scalar(group, "kl"), 1e-5);
    for (int i = 0; i < v.table.n; i++) {
        const ParamInfo *pi = &v.table.info[i];
        char key[256], what[256];
        snprintf(key, sizeof key, "grad/%s", pi->name);
        snprintf(what, sizeof what, "grad %s", pi->name);
        check_array(what, v.grads + pi->offset, group, key, pi->size, 1e-4);
    }

    // Same step on one thread: bit-identical gradients and loss.
    float *g2 = xmalloc(v.table.total * sizeof(float));
    memcpy(g2, v.grads, v.table.total * sizeof(float));
    set_threads(1);
    memset(v.grads, 0, v.table.total * sizeof(float));
    float loss1 = vae_forward(&v, x, eps, B);
    vae_backward(&v);
    check_true("1 vs 2 threads: loss bit-identical", loss1 == loss);
    check_true("1 vs 2 threads: grads bit-identical",
               memcmp(g2, v.grads, v.table.total * sizeof(float)) == 0);
    set_threads(2);

    // A second backward adds the same gradient again.
    vae_forward(&v, x, eps, B);
    vae_backward(&v);
    for (size_t j = 0; j < v.table.total; j++) g2[j] *= 2.0f;
    // Not bit-exact: (s + a1 + a2) differs from 2 (a1 + a2) by rounding.
    check_close("grads accumulate (+=)", v.grads, g2, v.table.total, 1e-5);
    free(g2);

    // Inference paths.
    float *mean = xmalloc(lat * sizeof(float));
    float *logvar = xmalloc(lat * sizeof(float));
    float *z = xmalloc(lat * sizeof(float));
    float *xhat = xmalloc(img * sizeof(float));
    vae_encode(&v, mean, logvar, x, B);
    check_array("encode mean", mean, group, "mean", lat, 1e-5);
    check_array("encode logvar", logvar, group, "logvar", lat, 1e-5);
    // x_hat of the training forward = decode(mean + exp(logvar / 2) eps).
    for (size_t j = 0; j < lat; j++) z[j] = mean[j] + expf(0.5f * logvar[j]) * eps[j];
    vae_decode(&v, xhat, z, B);
    check_array("x_hat = decode(z)", xhat, group, "x_hat", img, 1e-5);
    float *gmean = read_case(group, "mean", &n);
    vae_decode(&v, xhat, gmean, B);
    check_array("decode(golden mean)", xhat, group, "decode_mean", img, 1e-5);
    // A batch of one decodes the first item alike.
    float *xhat1 = xmalloc(img * sizeof(float));
    vae_decode(&v, xhat1, gmean, 1);
    size_t per = img / (size_t)B;
    check_close("decode batch 1 == item 0 of batch", xhat1, xhat, per, 1e-5);

    free(xhat1);
    free(gmean);
    free(mean);
    free(logvar);
    free(z);
    free(xhat);
    free(x);
    free(eps);
    vae_free(&v);
}

int main(void) {
    VaeConfig d;
    vae_config_default(&d);
    check_true("default config is vae-f4c4 on fmnist32",
               d.in_channels == 1 && d.image_size == 32 && d.base_channels == 32 &&
                   d.latent_channels == 4 && fabsf(d.kl_weight - 1e-3f) < 1e-9f);
    // The default model's parameter count matches the mirror's (PyTorch:
    // sum(p.numel() for p in VAE().parameters()) == 416_393).
    Vae v;
    vae_init(&v, &d, 1);
    check_true("default parameter count 416393", v.table.total == 416393);
    vae_free(&v);

    run_case("");
    run_case("/rgb");
    return test_summary("test_vae");
}
