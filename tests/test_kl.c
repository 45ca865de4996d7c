// test_kl.c: the vae-kl autoencoder family (vae/kl.c) against
// tests/reference/gen_kl.py's golden: a reduced configuration (every output,
// every parameter gradient, the input gradients and the last layer's
// gradient), the full vae-kl-f4 (parameter counts, a forward on weights both
// sides compute from a formula), f8 shapes, thread invariance, init values
// and bad configurations; inference (kl_encode/kl_decode, vae_encode/
// vae_decode of both families) bit-identical to the training forward and
// its memory; patchgan-d3's FLOP count.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include "checkpoint.h"
#include "common.h"
#include "kl.h"
#include "layers.h"
#include "rng.h"
#include "testutil.h"
#include "vae.h"
#include "vae_ckpt.h"
#include "vae_flops.h"

#define KLF "kl.h5"

static float *read_f(const char *name, size_t want) { return golden_read_n(KLF, name, want); }

// The golden's config dataset -> KlConfig (layout: gen_kl.py's config_ints).
static KlConfig golden_config(void) {
    size_t n;
    int *v = golden_read_int(KLF, "config", &n), i = 0;
    KlConfig c;
    memset(&c, 0, sizeof c);
    c.in_channels = v[i++];
    c.image_size = v[i++];
    c.ch = v[i++];
    c.num_levels = v[i++];
    for (int l = 0; l < c.num_levels; l++) c.ch_mult[l] = v[i++];
    c.num_res_blocks = v[i++];
    c.num_attn = v[i++];
    for (int a = 0; a < c.num_attn; a++) c.attn_resolutions[a] = v[i++];
    c.z_channels = v[i++];
    c.groups = v[i++];
    CHECK((size_t)i == n);
    free(v);
    return c;
}

typedef struct {
    float *x, *z, *w1, *w2, *w3, *w4;
    float *mean, *logvar, *xhat, *dx, *dz, *dlast;
    size_t nx, nz;
} Run;

// One encode + decode + backward of L = sum(w1 xhat(z)) + sum(w2 mean) +
// sum(w3 logvar) on k (grads zeroed first), and the last layer's gradient of
// sum(w4 xhat) (taken before the backward).
static void run_small(KlVae *k, const Run *in, Run *out, int B) {
    memset(k->grads, 0, k->table.total * sizeof(float));
    kl_encode_forward(k, out->mean, out->logvar, in->x, B);
    kl_decode_forward(k, out->xhat, in->z, B);
    kl_last_layer_grad(k, out->dlast, in->w4);
    memset(out->dz, 0, in->nz * sizeof(float));
    memset(out->dx, 0, in->nx * sizeof(float));
    kl_decode_backward(k, out->dz, in->w1);
    kl_encode_backward(k, out->dx, in->w2, in->w3);
}

static Run alloc_run(size_t nx, size_t nz, size_t nlast) {
    Run r = {0};
    r.nx = nx, r.nz = nz;
    r.mean = xmalloc(nz * sizeof(float));
    r.logvar = xmalloc(nz * sizeof(float));
    r.xhat = xmalloc(nx * sizeof(float));
    r.dx = xmalloc(nx * sizeof(float));
    r.dz = xmalloc(nz * sizeof(float));
    r.dlast = xmalloc(nlast * sizeof(float));
    return r;
}

static void free_run(Run *r) {
    free(r->x), free(r->z), free(r->w1), free(r->w2), free(r->w3), free(r->w4);
    free(r->mean), free(r->logvar), free(r->xhat), free(r->dx), free(r->dz), free(r->dlast);
}

static void test_small(void) {
    KlConfig c = golden_config();
    check_true("golden config passes kl_config_check", kl_config_check(&c, KLF) == 0);
    const int B = 2;
    KlVae k;
    kl_init(&k, &c, B + 1); // a batch below max_batch
    check_golden_table("reduced config", &k.table, KLF, "");
    float *params = read_f("params", k.table.total);
    memcpy(k.params, params, k.table.total * sizeof(float));
    int S = c.image_size, h = kl_latent_size(&c), Z = c.z_channels;
    size_t nx = (size_t)B * c.in_channels * S * S, nz = (size_t)B * Z * h * h;
    Run in = {0};
    in.nx = nx, in.nz = nz;
    in.x = read_f("x", nx), in.z = read_f("z", nz);
    in.w1 = read_f("w1", nx), in.w4 = read_f("w4", nx);
    in.w2 = read_f("w2", nz), in.w3 = read_f("w3", nz);
    Run out = alloc_run(nx, nz, k.last_w_size);
    run_small(&k, &in, &out, B);

    float *ref = read_f("mean", nz);
    check_close("reduced config: mean", out.mean, ref, nz, 1e-4);
    free(ref);
    ref = read_f("logvar", nz);
    check_close("reduced config: logvar (some clamped at 20 and -30)", out.logvar, ref, nz, 1e-4);
    int nclamp = 0;
    for (size_t i = 0; i < nz; i++) nclamp += ref[i] == 20.0f || ref[i] == -30.0f;
    check_true("reduced config: the golden clamps some log-variances, not all",
               nclamp > 0 && (size_t)nclamp < nz / 2);
    free(ref);
    ref = read_f("xhat", nx);
    check_close("reduced config: xhat", out.xhat, ref, nx, 1e-4);
    free(ref);
    ref = read_f("dx", nx);
    check_close("reduced config: d loss / d x", out.dx, ref, nx, 1e-4);
    free(ref);
    ref = read_f("dz", nz);
    check_close("reduced config: d loss / d z", out.dz, ref, nz, 1e-4);
    free(ref);
    ref = read_f("dlast", k.last_w_size);
    check_close("reduced config: kl_last_layer_grad = autograd of sum(w4 xhat)", out.dlast, ref,
                k.last_w_size, 1e-4);
    int pi = params_find(&k.table, "decoder.conv_out.weight");
    check_true("last_w, last_w_size name decoder.conv_out.weight",
               pi >= 0 && k.table.info[pi].offset == k.last_w &&
                   k.table.info[pi].size == k.last_w_size);
    free(ref);
    ref = read_f("grads", k.table.total);
    check_param_grads("reduced config", &k.table, k.grads, ref, 1e-4);
    free(ref);

    // thread invariance: the same step at 1 and 2 threads, bit for bit
    Run o1 = alloc_run(nx, nz, k.last_w_size);
    float *g1 = xmalloc(k.table.total * sizeof(float));
    set_threads(1);
    run_small(&k, &in, &o1, B);
    memcpy(g1, k.grads, k.table.total * sizeof(float));
    set_threads(2);
    run_small(&k, &in, &out, B);
    check_true("1 and 2 threads: mean, logvar, xhat, dx, dz, last-layer grad and every "
               "parameter gradient bit-identical",
               same_bits(o1.mean, out.mean, nz) && same_bits(o1.logvar, out.logvar, nz) &&
                   same_bits(o1.xhat, out.xhat, nx) && same_bits(o1.dx, out.dx, nx) &&
                   same_bits(o1.dz, out.dz, nz) && same_bits(o1.dlast, out.dlast, k.last_w_size) &&
                   same_bits(g1, k.grads, k.table.total));
    // a batch of one gives the first item's outputs
    kl_encode_forward(&k, o1.mean, o1.logvar, in.x, 1);
    kl_decode_forward(&k, o1.xhat, in.z, 1);
    check_close("B = 1 on a max_batch-3 model: item 0's mean", o1.mean, out.mean, nz / B, 1e-6);
    check_close("B = 1: item 0's xhat", o1.xhat, out.xhat, nx / B, 1e-6);
    free(g1);
    free_run(&o1);
    free_run(&in);
    free_run(&out);
    free(params);
    kl_free(&k);
}

// Inference (kl_encode / kl_decode through vae_encode / vae_decode) against
// the training forward, bit for bit, at B 1 and 3, both families.
static void test_infer(void) {
    KlConfig k = golden_config();
    VaeConfig c;
    vae_config_kl(&c, &k);
    Vae v;
    vae_init(&v, &c, 3);
    float *params = read_f("params", v.table.total);
    memcpy(v.params, params, v.table.total * sizeof(float));
    check_true("kl: vae_init allocates no training activations", v.klv.acts == NULL);
    int S = k.image_size, h = kl_latent_size(&k);
    size_t nx = (size_t)k.in_channels * S * S, nz = (size_t)k.z_channels * h * h;
    Rng rng;
    rng_init(&rng, 11);
    float *x = xmalloc(3 * nx * sizeof(float)), *z = xmalloc(3 * nz * sizeof(float));
    rng_uniform_fill(&rng, x, 3 * nx, -1.0f, 1.0f);
    rng_normal_fill(&rng, z, 3 * nz);
    Run a = alloc_run(3 * nx, 3 * nz, v.klv.last_w_size);
    Run b = alloc_run(3 * nx, 3 * nz, v.klv.last_w_size);
    int ok = 1;
    for (int B = 1; B <= 3; B += 2) {
        vae_encode(&v, a.mean, a.logvar, x, B);
        vae_decode(&v, a.xhat, z, B);
        ok &= B > 1 || v.klv.acts == NULL; // B 3 follows B 1's training forwards
        kl_encode_forward(&v.klv, b.mean, b.logvar, x, B);
        kl_decode_forward(&v.klv, b.xhat, z, B);
        ok &= same_bits(a.mean, b.mean, B * nz) && same_bits(a.logvar, b.logvar, B * nz) &&
              same_bits(a.xhat, b.xhat, B * nx);
    }
    check_true("kl: vae_encode / vae_decode = kl_encode_forward / kl_decode_forward bit for "
               "bit at B 1 (own buffers) and 3 (in the training activations), no training "
               "memory before the first training forward",
               ok);
    check_true("kl: once training has started, inference runs in its activations",
               v.klv.infer == v.klv.acts && v.klv.acts != NULL);

    // the golden's training step, then inference, then the step again: the
    // same dx, dz and gradients bit for bit
    Run in = {0};
    in.nx = 2 * nx, in.nz = 2 * nz;
    in.x = read_f("x", 2 * nx), in.z = read_f("z", 2 * nz);
    in.w1 = read_f("w1", 2 * nx), in.w4 = read_f("w4", 2 * nx);
    in.w2 = read_f("w2", 2 * nz), in.w3 = read_f("w3", 2 * nz);
    run_small(&v.klv, &in, &a, 2);
    float *g = xmalloc(v.table.total * sizeof(float));
    memcpy(g, v.grads, v.table.total * sizeof(float));
    vae_encode(&v, b.mean, b.logvar, x, 3);
    vae_decode(&v, b.xhat, z, 3);
    run_small(&v.klv, &in, &b, 2);
    check_true("kl: a training step after inference in its activations: dx, dz, the last "
               "layer's and every parameter gradient bit-identical",
               same_bits(a.dx, b.dx, 2 * nx) && same_bits(a.dz, b.dz, 2 * nz) &&
                   same_bits(a.dlast, b.dlast, v.klv.last_w_size) &&
                   same_bits(g, v.grads, v.table.total));
    free(g), free(params);
    free_run(&in), free_run(&a), free_run(&b);
    vae_free(&v);

    // f4c4: encode + decode of the mean = its training forward at eps 0 (the
    // loss terms from the same kernels)
    vae_config_default(&c);
    vae_init(&v, &c, 3);
    params_init_values(&v.table, v.params, &rng);
    nx = (size_t)c.in_channels * c.image_size * c.image_size;
    h = vae_latent_size(&c);
    nz = (size_t)c.latent_channels * h * h;
    float *fx = xmalloc(3 * nx * sizeof(float)), *eps = xcalloc(3 * nz, sizeof(float));
    float *m = xmalloc(3 * nz * sizeof(float)), *lv = xmalloc(3 * nz * sizeof(float));
    float *xh = xmalloc(3 * nx * sizeof(float));
    rng_uniform_fill(&rng, fx, 3 * nx, -1.0f, 1.0f);
    ok = 1;
    for (int B = 1; B <= 3; B += 2) {
        vae_encode(&v, m, lv, fx, B);
        vae_decode(&v, xh, m, B);
        float rec = (float)(sq_err_forward(xh, fx, B * nx) / B);
        float kl = (float)(gaussian_kl_forward(m, lv, B * nz) / B);
        vae_forward(&v, fx, eps, B);
        ok &= rec == v.rec && kl == v.kl;
    }
    check_true("f4c4: vae_encode / vae_decode = the training forward (eps 0) bit for bit "
               "at B 1 and 3", ok);
    free(fx), free(eps), free(m), free(lv), free(xh), free(x), free(z);
    vae_free(&v);
}

// vae-kl-f4 loaded for vae-encode's default batch: its buffers (allocated,
// not touched here) against what training would take. Both halves share
// them, sized by the decoder's (B, 64, 64, 64) tensors; an encode touches
// about half, and the blocks' forwards leave two thirds of their work
// unused (it serves their backwards).
static void test_memory(void) {
    KlConfig k;
    kl_config_default(&k);
    VaeConfig c;
    vae_config_kl(&c, &k);
    Vae v;
    vae_init(&v, &c, 256);
    double mb = 1.0 / (1 << 20);
    double infer = (double)(v.klv.infer_floats + v.klv.work_floats) * sizeof(float) * mb;
    double train = (double)(v.klv.acts_floats + v.klv.train_work_floats) * sizeof(float) * mb;
    char msg[200];
    snprintf(msg, sizeof msg, "vae-kl-f4, max_batch 256: inference buffers %.0f MB (bound "
             "2300), training's would be %.0f MB, none allocated", infer, train);
    check_true(msg, infer < 2300 && infer < train / 3 && v.klv.acts == NULL);
    vae_free(&v);
}

// kl_mirror.formula_fill / formula_input, in C.
static void formula_fill(const ParamTable *t, float *p) {
    for (int ti = 0; ti < t->n; ti++) {
        const ParamInfo *pi = &t->info[ti];
        size_t n = pi->size;
        int norm_w = strstr(pi->name, "norm") && strstr(pi->name, ".weight");
        double fan_in = (double)(n / (size_t)pi->shape[0]);
        for (size_t i = 0; i < n; i++) {
            double s = sin(0.7 * (double)i + 1.3 * ti);
            double v = pi->ndim == 1 ? (norm_w ? 1 + 0.1 * s : 0.1 * s) : s / sqrt(fan_in);
            p[pi->offset + i] = (float)v;
        }
    }
}

static void test_full(void) {
    KlConfig c;
    kl_config_default(&c);
    KlVae k;
    kl_init(&k, &c, 2);
    size_t dec = k.table.total - k.enc_params;
    char msg[160];
    snprintf(msg, sizeof msg, "vae-kl-f4: %zu parameters (encoder %zu, decoder %zu), spec "
             "2,702,087 (1,020,784 + 1,681,303)", k.table.total, k.enc_params, dec);
    check_true(msg, k.table.total == 2702087 && k.enc_params == 1020784 && dec == 1681303);
    check_true("vae-kl-f4: 3x64x64 -> 4x16x16", kl_latent_size(&c) == 16 && c.z_channels == 4);

    // PyTorch's default init: GroupNorm ones and zeros, convs within +-1/sqrt(fan_in)
    Rng rng;
    rng_init(&rng, 1);
    kl_init_values(&k, &rng);
    int ok = 1, nnorm = 0;
    for (int i = 0; i < k.table.n; i++) {
        const ParamInfo *pi = &k.table.info[i];
        const float *x = k.params + pi->offset;
        int norm = strstr(pi->name, "norm") != NULL, w = strstr(pi->name, ".weight") != NULL;
        nnorm += norm;
        // a conv's bias has its weight's bound: the weight is the tensor before
        const ParamInfo *wi = pi->ndim == 4 ? pi : &k.table.info[i - 1];
        double bound = 1.0 / sqrt((double)(wi->size / (size_t)wi->shape[0]));
        double mx = 0;
        for (size_t j = 0; j < pi->size; j++) {
            if (norm) ok &= x[j] == (w ? 1.0f : 0.0f);
            mx = fmax(mx, fabs(x[j]));
        }
        if (!norm) ok &= mx <= bound && mx > 0.5 * bound;
    }
    check_true("kl_init_values: GroupNorm weights 1, biases 0; convs uniform within "
               "+-1/sqrt(fan_in)", ok && nnorm > 0);

    formula_fill(&k.table, k.params);
    size_t nx = 3 * 64 * 64, nz = 4 * 16 * 16;
    float *x = xmalloc(nx * sizeof(float)), *mean = xmalloc(nz * sizeof(float));
    float *logvar = xmalloc(nz * sizeof(float)), *xhat = xmalloc(nx * sizeof(float));
    for (size_t i = 0; i < nx; i++) x[i] = (float)sin(0.37 * (double)i + 0.5);
    kl_encode_forward(&k, mean, logvar, x, 1);
    kl_decode_forward(&k, xhat, mean, 1);
    float *ref = read_f("meanfull", nz);
    check_close("vae-kl-f4 (formula weights, B = 1): mean", mean, ref, nz, 1e-4);
    free(ref);
    ref = read_f("logvarfull", nz);
    check_close("vae-kl-f4: logvar", logvar, ref, nz, 1e-4);
    free(ref);
    ref = read_f("xhatfull", nx);
    // 3e-4: float32 (Winograd) rounding through about 20 convs of growing output
    check_close("vae-kl-f4: xhat = decode(mean)", xhat, ref, nx, 3e-4);
    free(ref);
    float *m2 = xmalloc(nz * sizeof(float)), *lv2 = xmalloc(nz * sizeof(float));
    float *xh2 = xmalloc(nx * sizeof(float));
    kl_encode(&k, m2, lv2, x, 1);
    kl_decode(&k, xh2, mean, 1);
    check_true("vae-kl-f4: kl_encode / kl_decode (inference) = the training forward bit for bit",
               same_bits(m2, mean, nz) && same_bits(lv2, logvar, nz) && same_bits(xh2, xhat, nx));
    free(m2), free(lv2), free(xh2);

    // thread invariance at full width (the Winograd and 1x1 GEMM paths the
    // reduced config is too narrow for): a step of sum(xhat) + sum(mean) +
    // sum(logvar) at 1 and 2 threads
    float *ones = xmalloc(nx * sizeof(float)), *g1 = xmalloc(k.table.total * sizeof(float));
    float *x1 = xmalloc(nx * sizeof(float)), *m1 = xmalloc(nz * sizeof(float));
    float *dx1 = xmalloc(nx * sizeof(float)), *dx = xmalloc(nx * sizeof(float));
    for (size_t i = 0; i < nx; i++) ones[i] = 1.0f;
    for (int threads = 1; threads <= 2; threads++) {
        set_threads(threads);
        memset(k.grads, 0, k.table.total * sizeof(float));
        memset(dx, 0, nx * sizeof(float));
        kl_encode_forward(&k, mean, logvar, x, 1);
        kl_decode_forward(&k, xhat, mean, 1);
        kl_decode_backward(&k, NULL, ones);
        kl_encode_backward(&k, dx, ones, ones);
        if (threads == 1) {
            memcpy(g1, k.grads, k.table.total * sizeof(float));
            memcpy(x1, xhat, nx * sizeof(float));
            memcpy(m1, mean, nz * sizeof(float));
            memcpy(dx1, dx, nx * sizeof(float));
        }
    }
    check_true("vae-kl-f4 at 1 and 2 threads: mean, xhat, dx and every parameter gradient "
               "bit-identical",
               same_bits(m1, mean, nz) && same_bits(x1, xhat, nx) && same_bits(dx1, dx, nx) &&
                   same_bits(g1, k.grads, k.table.total));
    free(ones), free(g1), free(x1), free(m1), free(dx1), free(dx);
    free(x), free(mean), free(logvar), free(xhat);
    kl_free(&k);
}

// f8: one more level; shapes round-trip and outputs are finite.
static void test_f8(void) {
    KlConfig c;
    kl_config_default(&c);
    c.num_levels = 4;
    c.ch_mult[3] = 4;
    c.ch = 32;
    KlVae k;
    kl_init(&k, &c, 1);
    Rng rng;
    rng_init(&rng, 2);
    kl_init_values(&k, &rng);
    int h = kl_latent_size(&c);
    size_t nx = 3 * 64 * 64, nz = (size_t)4 * h * h;
    float *x = xmalloc(nx * sizeof(float)), *m = xmalloc(nz * sizeof(float));
    float *lv = xmalloc(nz * sizeof(float)), *xh = xmalloc(nx * sizeof(float));
    for (size_t i = 0; i < nx; i++) x[i] = (float)sin(0.37 * (double)i + 0.5);
    kl_encode_forward(&k, m, lv, x, 1);
    kl_decode_forward(&k, xh, m, 1);
    int up3 = params_find(&k.table, "decoder.up.3.upsample.conv.weight") >= 0 &&
              params_find(&k.table, "encoder.down.2.downsample.conv.weight") >= 0 &&
              params_find(&k.table, "encoder.down.3.downsample.conv.weight") < 0;
    check_true("f8 (ch_mult 1,2,4,4): 64x64 -> 8x8 latents -> 64x64, finite, three "
               "Downsamples and Upsamples",
               h == 8 && up3 && first_nonfinite(m, nz) == nz && first_nonfinite(lv, nz) == nz &&
                   first_nonfinite(xh, nx) == nx);
    free(x), free(m), free(lv), free(xh);
    kl_free(&k);
}

// FLOPs (vae_flops.h) against PyTorch forward hooks on kl_mirror (every
// Conv2d: 2 x output elements x C_in x k x k; every AttnBlock: 4 T^2 C),
// vae-kl-f4 and f8 with attention at 16x16, one 64x64 image.
static void test_flops(void) {
    static const struct {
        int levels;
        double enc, dec;
    } want[] = {{3, 871661568.0, 2207260672.0}, {4, 641605632.0, 2073364480.0}};
    int ok = 1;
    for (int i = 0; i < 2; i++) {
        KlConfig k;
        kl_config_default(&k);
        k.num_levels = want[i].levels;
        k.ch_mult[3] = 4;
        k.num_attn = 1, k.attn_resolutions[0] = 16;
        VaeConfig c;
        vae_config_kl(&c, &k);
        ok &= vae_encode_flops(&c) == want[i].enc && vae_decode_flops(&c) == want[i].dec;
    }
    check_true("kl FLOPs (f4 and f8, attention at 16) = PyTorch hook counts", ok);
    // patchgan-d3 on 3x64x64, width 32: 64 -> 32 -> 16 -> 8 -> 7 -> 6, by hand
    PatchganConfig pc;
    patchgan_config_default(&pc);
    double d = 2.0 * 16 * (32 * 32 * 32 * 3 + 64 * 16 * 16 * 32 + 128 * 8 * 8 * 64 +
                           256 * 7 * 7 * 128 + 1 * 6 * 6 * 256);
    char msg[120];
    snprintf(msg, sizeof msg, "patchgan_forward_flops (patchgan-d3, 3x64x64) = %.0f", d);
    check_true(msg, patchgan_forward_flops(&pc) == d && d == 88375296.0);
}

static void test_bad_configs(void) {
    KlConfig d, c;
    kl_config_default(&d);
    check_true("the default config passes", kl_config_check(&d, "default") == 0);
    int refused = 0, total = 0;
#define BAD(stmt)                                                              \
    do {                                                                       \
        c = d;                                                                 \
        stmt;                                                                  \
        total++;                                                               \
        refused += kl_config_check(&c, "bad") == -1;                           \
    } while (0)
    BAD(c.image_size = 62);                  // not a multiple of 4
    BAD(c.image_size = 0);
    BAD(c.groups = 5);                       // 32 % 5
    BAD(c.groups = 0);
    BAD(c.ch = 48);                          // 48 % 32
    BAD(c.ch_mult[1] = 0);
    BAD(c.num_levels = 0);
    BAD(c.num_levels = KL_MAX_LEVELS + 1);
    BAD(c.num_res_blocks = 0);
    BAD(c.z_channels = 0);
    BAD(c.in_channels = 2);
    BAD((c.num_attn = 1, c.attn_resolutions[0] = 8)); // 64, 32, 16 only
    BAD(c.num_attn = -1);
#undef BAD
    char msg[96];
    snprintf(msg, sizeof msg, "kl_config_check refuses %d of %d bad configurations", refused, total);
    check_true(msg, refused == total);
    c = d;
    c.num_attn = 1, c.attn_resolutions[0] = 16;
    check_true("attention at 16 (a side the encoder reaches) passes", kl_config_check(&c, "ok") == 0);
}

// A kl checkpoint of configuration k with PyTorch-default weights from
// `seed`, as vae-train would write one; attribute `edit_key` (if not NULL)
// replaced by edit_val (a string; "#N": the integer N), or removed when
// edit_val is NULL.
static int write_ckpt(const char *path, const KlConfig *k, int seed, const char *edit_key,
                      const char *edit_val) {
    VaeConfig c;
    vae_config_kl(&c, k);
    Vae v;
    vae_init(&v, &c, 1);
    Rng rng;
    rng_init(&rng, (uint64_t)seed);
    params_init_values(&v.table, v.params, &rng);
    Attrs *a = xcalloc(1, sizeof *a), *b = xcalloc(1, sizeof *b);
    attrs_set_str(a, "kind", "vae");
    attrs_set_int(a, "step", 0);
    vae_config_to_attrs(&v.cfg, a);
    for (int i = 0; i < a->n; i++) { // copy, editing one attribute
        const Attr *x = &a->a[i];
        if (edit_key && strcmp(x->key, edit_key) == 0) {
            if (edit_val && edit_val[0] == '#') attrs_set_int(b, x->key, atoi(edit_val + 1));
            else if (edit_val) attrs_set_str(b, x->key, edit_val);
        } else if (x->type == ATTR_STR) {
            attrs_set_str(b, x->key, x->s);
        } else {
            attrs_set_int(b, x->key, x->i);
        }
    }
    CkptBuffers bufs = {v.params, NULL, NULL, NULL, NULL, 0};
    int rc = ckpt_write(path, &v.table, bufs, b);
    free(a), free(b);
    vae_free(&v);
    return rc;
}

// The checkpoint round trip through vae_load (the tools' loader), and the
// attributes a user's file may get wrong.
static void test_ckpt(void) {
    char dir[] = "/tmp/test_kl_XXXXXX", path[64];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/kl.h5", dir);
    KlConfig k = golden_config();
    check_true("write a kl checkpoint", write_ckpt(path, &k, 3, NULL, NULL) == 0);
    Vae v;
    int ok = vae_load(&v, path, 2, NULL) == 0;
    check_true("vae_load takes a kl checkpoint", ok);
    if (ok) {
        KlVae ref;
        kl_init(&ref, &k, 1);
        Rng rng;
        rng_init(&rng, 3);
        kl_init_values(&ref, &rng);
        int h = kl_latent_size(&k);
        check_true("loaded: arch kl, the file's configuration and weights; C, S, Z and the "
                   "latent side for the tools",
                   v.cfg.arch == VAE_ARCH_KL && memcmp(&v.cfg.kl, &k, sizeof k) == 0 &&
                       v.table.total == ref.table.total &&
                       same_bits(v.params, ref.params, ref.table.total) &&
                       v.cfg.in_channels == k.in_channels && v.cfg.image_size == k.image_size &&
                       v.cfg.latent_channels == k.z_channels && vae_latent_size(&v.cfg) == h);
        size_t nx = (size_t)k.in_channels * k.image_size * k.image_size;
        size_t nz = (size_t)k.z_channels * h * h;
        float *x = read_f("x", 2 * nx), *m1 = xmalloc(nz * 4), *l1 = xmalloc(nz * 4);
        float *m2 = xmalloc(nz * 4), *l2 = xmalloc(nz * 4), *x1 = xmalloc(nx * 4),
              *x2 = xmalloc(nx * 4);
        vae_encode(&v, m1, l1, x, 1);
        vae_decode(&v, x1, m1, 1);
        kl_encode_forward(&ref, m2, l2, x, 1);
        kl_decode_forward(&ref, x2, m2, 1);
        check_true("vae_encode / vae_decode = kl_encode_forward / kl_decode_forward",
                   same_bits(m1, m2, nz) && same_bits(l1, l2, nz) && same_bits(x1, x2, nx));
        // an EMA-style copy: vae_* run on whatever v.params points at
        float *own = v.params, *copy = xmalloc(v.table.total * sizeof(float));
        memset(copy, 0, v.table.total * sizeof(float));
        v.params = copy;
        vae_encode(&v, m2, l2, x, 1);
        v.params = own;
        int zero = 1;
        for (size_t i = 0; i < nz; i++) zero &= m2[i] == 0.0f;
        check_true("vae_encode reads v->params (an all-zero copy gives zero means)", zero);
        free(copy), free(x), free(m1), free(l1), free(m2), free(l2), free(x1), free(x2);
        kl_free(&ref);
        vae_free(&v);
    }
    struct {
        const char *key, *val;
    } bad[] = {
        {"model", "vae-xl"},     {"ch_mult", "1,x"},       {"ch_mult", ""},
        {"ch_mult", "1,2,"},     {"ch_mult", "#12"},       {"attn_resolutions", "5"},
        {"image_size", NULL},    {"image_size", "#17"},    {"groups", "#3"},
        {"groups", NULL},        {"z_channels", NULL},     {"z_channels", "#0"},
        {"ch", "#8"},            {"ch", "8"},              {"in_channels", "#2"},
        {"num_res_blocks", "#3"},
    };
    int n = (int)(sizeof bad / sizeof *bad), refused = 0;
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/bad%d.h5", dir, i);
        CHECK(write_ckpt(path, &k, 3, bad[i].key, bad[i].val) == 0);
        Vae w;
        if (vae_load(&w, path, 1, NULL) == 0) {
            fprintf(stderr, "accepted: %s = %s\n", bad[i].key, bad[i].val ? bad[i].val : "(none)");
            vae_free(&w);
        } else {
            refused++;
        }
        unlink(path);
    }
    char msg[96];
    snprintf(msg, sizeof msg, "vae_load refuses %d of %d bad kl attribute sets", refused, n);
    check_true(msg, refused == n);
    snprintf(path, sizeof path, "%s/kl.h5", dir);
    unlink(path);
    rmdir(dir);
}

int main(int argc, char **argv) {
    // test_kl --write-ckpt PATH: a vae-kl-f4 checkpoint with PyTorch-default
    // weights (seed 1), for running the tools on the kl family by hand.
    if (argc == 3 && strcmp(argv[1], "--write-ckpt") == 0) {
        KlConfig k;
        kl_config_default(&k);
        return write_ckpt(argv[2], &k, 1, NULL, NULL) ? 1 : 0;
    }
    test_small();
    test_infer();
    test_memory();
    test_full();
    test_f8();
    test_bad_configs();
    test_flops();
    test_ckpt();
    return test_summary("test_kl");
}
