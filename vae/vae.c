// vae.c: the `vae-f4c4` VAE, forward and backward over a batch.
// Both halves are five convolutions with SiLU between them, so each half is
// a table of five Layer descriptors walked by one forward and one backward
// loop. Only the pre-activations are kept: the SiLU outputs (the next
// layer's input) are recomputed into one temporary in the backward, which
// halves the activation memory for the price of one extra SiLU per layer.
#include "vae.h"

#include <math.h>
#include <string.h>

#include "common.h"
#include "layers.h"

#define VAE_LAYERS 5
#define LOGVAR_MIN (-30.0f)
#define LOGVAR_MAX 20.0f

void vae_config_default(VaeConfig *c) {
    memset(c, 0, sizeof *c);
    c->arch = VAE_ARCH_F4C4;
    c->in_channels = 1;
    c->image_size = 32;
    c->base_channels = 32;
    c->latent_channels = 4;
    c->kl_weight = 1e-3f;
}

void vae_config_kl(VaeConfig *c, const KlConfig *k) {
    CHECK(kl_config_check(k, "vae_config_kl") == 0);
    vae_config_default(c); // kl_weight keeps its default: unused by this family
    c->arch = VAE_ARCH_KL;
    c->kl = *k;
    c->in_channels = k->in_channels;
    c->image_size = k->image_size;
    c->base_channels = k->ch;
    c->latent_channels = k->z_channels;
}

int vae_latent_size(const VaeConfig *c) {
    return c->arch == VAE_ARCH_KL ? kl_latent_size(&c->kl) : c->image_size / 4;
}

// One convolution of either half. Input (B, cin, H, H) -> (B, cout, OH, OH).
typedef struct {
    int transpose;
    int cin, cout, k, s, p;
    int H, OH;
    size_t w, b; // parameter offsets (weight, bias)
} Layer;

// Per-item float counts and pointers of the activation allocation.
typedef struct {
    float *x;                // (B, C, S, S) copy of the input
    float *eps;              // (B, Z, h, h)
    float *enc[VAE_LAYERS - 1]; // pre-SiLU encoder outputs, layer i (B, cout_i, OH_i, OH_i)
    float *enc_out;          // (B, 2Z, h, h) last encoder conv, unclamped
    float *mean, *logvar;    // (B, Z, h, h); logvar clamped
    float *z;                // (B, Z, h, h)
    float *dec[VAE_LAYERS - 1]; // pre-SiLU decoder outputs
    float *xhat;             // (B, C, S, S)
    float *tmp;              // (B, max layer size) a SiLU output
    float *g0, *g1;          // (B, max layer size) gradient ping-pong
    float *dmean, *dlogvar;  // (B, Z, h, h)
} Acts;

static void layer_set(Layer *l, int transpose, int cin, int cout, int k, int s,
                      int p, int H) {
    l->transpose = transpose;
    l->cin = cin;
    l->cout = cout;
    l->k = k;
    l->s = s;
    l->p = p;
    l->H = H;
    l->OH = transpose ? (H - 1) * s - 2 * p + k : (H + 2 * p - k) / s + 1;
}

// The ten layers, encoder then decoder, in the spec's order. Parameter
// offsets come from the table, whose entries are (weight, bias) per layer in
// the same order.
static void vae_layers(const Vae *v, Layer enc[VAE_LAYERS], Layer dec[VAE_LAYERS]) {
    const VaeConfig *c = &v->cfg;
    int C = c->in_channels, b = c->base_channels, Z = c->latent_channels;
    int S = c->image_size, S2 = S / 2, h = S / 4;
    layer_set(&enc[0], 0, C, b, 3, 1, 1, S);
    layer_set(&enc[1], 0, b, 2 * b, 4, 2, 1, S);
    layer_set(&enc[2], 0, 2 * b, 2 * b, 3, 1, 1, S2);
    layer_set(&enc[3], 0, 2 * b, 4 * b, 4, 2, 1, S2);
    layer_set(&enc[4], 0, 4 * b, 2 * Z, 3, 1, 1, h);
    layer_set(&dec[0], 0, Z, 4 * b, 3, 1, 1, h);
    layer_set(&dec[1], 1, 4 * b, 2 * b, 4, 2, 1, h);
    layer_set(&dec[2], 0, 2 * b, 2 * b, 3, 1, 1, S2);
    layer_set(&dec[3], 1, 2 * b, b, 4, 2, 1, S2);
    layer_set(&dec[4], 0, b, C, 3, 1, 1, S);
    for (int i = 0; i < 2 * VAE_LAYERS; i++) {
        Layer *l = i < VAE_LAYERS ? &enc[i] : &dec[i - VAE_LAYERS];
        l->w = v->table.info[2 * i].offset;
        l->b = v->table.info[2 * i + 1].offset;
    }
}

static size_t layer_out_floats(const Layer *l) {
    return (size_t)l->cout * l->OH * l->OH;
}

// Carves the activation allocation for B items (B = max_batch at init);
// with base == NULL only counts. Returns the total floats.
static size_t acts_carve(Acts *a, float *base, const Vae *v, int B) {
    Layer enc[VAE_LAYERS], dec[VAE_LAYERS];
    vae_layers(v, enc, dec);
    const VaeConfig *c = &v->cfg;
    size_t img = (size_t)c->in_channels * c->image_size * c->image_size;
    size_t lat = (size_t)c->latent_channels * vae_latent_size(c) * vae_latent_size(c);
    size_t maxl = img;
    for (int i = 0; i < VAE_LAYERS; i++) {
        if (layer_out_floats(&enc[i]) > maxl) maxl = layer_out_floats(&enc[i]);
        if (layer_out_floats(&dec[i]) > maxl) maxl = layer_out_floats(&dec[i]);
    }
    size_t off = 0;
#define CARVE(ptr, n)                                                          \
    do {                                                                       \
        (ptr) = base ? base + off : NULL;                                      \
        off += (size_t)B * (n);                                                \
    } while (0)
    CARVE(a->x, img);
    CARVE(a->eps, lat);
    for (int i = 0; i < VAE_LAYERS - 1; i++) CARVE(a->enc[i], layer_out_floats(&enc[i]));
    CARVE(a->enc_out, 2 * lat);
    CARVE(a->mean, lat);
    CARVE(a->logvar, lat);
    CARVE(a->z, lat);
    for (int i = 0; i < VAE_LAYERS - 1; i++) CARVE(a->dec[i], layer_out_floats(&dec[i]));
    CARVE(a->xhat, img);
    CARVE(a->tmp, maxl);
    CARVE(a->g0, maxl);
    CARVE(a->g1, maxl);
    CARVE(a->dmean, lat);
    CARVE(a->dlogvar, lat);
#undef CARVE
    return off;
}

static size_t layer_scratch_floats(const Layer *l, int B) {
    return l->transpose
               ? conv_transpose2d_scratch_floats(B, l->cin, l->H, l->H, l->cout, l->k, l->s, l->p)
               : conv2d_scratch_floats(B, l->cin, l->H, l->H, l->cout, l->k, l->s, l->p);
}

// The kl family: its own model; the Vae's table, params and grads are its.
static void vae_init_kl(Vae *v, const VaeConfig *c, int max_batch) {
    VaeConfig k;
    vae_config_kl(&k, &c->kl);
    CHECK(k.in_channels == c->in_channels && k.image_size == c->image_size &&
          k.latent_channels == c->latent_channels);
    memset(v, 0, sizeof *v);
    v->cfg = k;
    v->max_batch = max_batch;
    kl_init(&v->klv, &c->kl, max_batch);
    v->table = v->klv.table;
    v->params = v->klv.params;
    v->grads = v->klv.grads;
}

void vae_init(Vae *v, const VaeConfig *c, int max_batch) {
    if (c->arch == VAE_ARCH_KL) {
        vae_init_kl(v, c, max_batch);
        return;
    }
    CHECK(c->arch == VAE_ARCH_F4C4);
    CHECK(c->in_channels > 0 && c->base_channels > 0 && c->latent_channels > 0);
    CHECK(c->image_size >= 4 && c->image_size % 4 == 0);
    CHECK(max_batch > 0);
    memset(v, 0, sizeof *v);
    v->cfg = *c;
    v->max_batch = max_batch;
    int C = c->in_channels, b = c->base_channels, Z = c->latent_channels;
    // Keys are the mirror's nn.Sequential indices (SiLUs take the odd ones).
    ParamTable *t = &v->table;
    params_init(t);
    params_add_conv(t, "encoder.0", C, b, 3, 0);
    params_add_conv(t, "encoder.2", b, 2 * b, 4, 0);
    params_add_conv(t, "encoder.4", 2 * b, 2 * b, 3, 0);
    params_add_conv(t, "encoder.6", 2 * b, 4 * b, 4, 0);
    params_add_conv(t, "encoder.8", 4 * b, 2 * Z, 3, 0);
    params_add_conv(t, "decoder.0", Z, 4 * b, 3, 0);
    params_add_convT(t, "decoder.2", 4 * b, 2 * b, 4);
    params_add_conv(t, "decoder.4", 2 * b, 2 * b, 3, 0);
    params_add_convT(t, "decoder.6", 2 * b, b, 4);
    params_add_conv(t, "decoder.8", b, C, 3, 0);
    CHECK(t->n == 4 * VAE_LAYERS);
    v->params = xmalloc_aligned(t->total * sizeof(float));
    v->grads = xmalloc_aligned(t->total * sizeof(float));
    memset(v->grads, 0, t->total * sizeof(float));

    Acts a;
    size_t n_acts = acts_carve(&a, NULL, v, max_batch);
    v->acts = xmalloc_aligned(n_acts * sizeof(float));
    Layer enc[VAE_LAYERS], dec[VAE_LAYERS];
    vae_layers(v, enc, dec);
    size_t n_scratch = 1;
    for (int i = 0; i < VAE_LAYERS; i++) {
        size_t se = layer_scratch_floats(&enc[i], max_batch);
        size_t sd = layer_scratch_floats(&dec[i], max_batch);
        if (se > n_scratch) n_scratch = se;
        if (sd > n_scratch) n_scratch = sd;
    }
    v->scratch = xmalloc_aligned(n_scratch * sizeof(float));
}

void vae_free(Vae *v) {
    if (v->cfg.arch == VAE_ARCH_KL) {
        CHECK(v->params == v->klv.params); // an EMA copy must have been pointed back
        kl_free(&v->klv);                  // which owns table, params and grads
        memset(v, 0, sizeof *v);
        return;
    }
    params_free(&v->table);
    free(v->params);
    free(v->grads);
    free(v->acts);
    free(v->scratch);
    memset(v, 0, sizeof *v);
}

static Acts vae_acts(const Vae *v) {
    Acts a;
    acts_carve(&a, v->acts, v, v->max_batch);
    return a;
}

static void layer_forward(const Vae *v, const Layer *l, float *out,
                          const float *in, int B) {
    const float *w = v->params + l->w, *b = v->params + l->b;
    if (l->transpose)
        conv_transpose2d_forward(out, in, w, b, B, l->cin, l->H, l->H, l->cout,
                                 l->k, l->s, l->p, v->scratch);
    else
        conv2d_forward(out, in, w, b, B, l->cin, l->H, l->H, l->cout, l->k,
                       l->s, l->p, v->scratch);
}

// Writes din (=) when it is not NULL; accumulates into the parameter gradients.
static void layer_backward(Vae *v, const Layer *l, float *din,
                           const float *dout, const float *in, int B) {
    const float *w = v->params + l->w;
    float *dw = v->grads + l->w, *db = v->grads + l->b;
    if (!din && l->transpose)
        conv_transpose2d_backward(NULL, dw, db, dout, in, w, B, l->cin, l->H,
                                  l->H, l->cout, l->k, l->s, l->p, v->scratch);
    else if (!din)
        conv2d_backward(NULL, dw, db, dout, in, w, B, l->cin, l->H, l->H,
                        l->cout, l->k, l->s, l->p, v->scratch);
    else if (l->transpose)
        conv_transpose2d_backward_set(din, dw, db, dout, in, w, B, l->cin, l->H,
                                  l->H, l->cout, l->k, l->s, l->p, v->scratch);
    else
        conv2d_backward_set(din, dw, db, dout, in, w, B, l->cin, l->H, l->H,
                            l->cout, l->k, l->s, l->p, v->scratch);
}

// Runs one half: in -> pre[0..3] (kept), SiLU'd copies in tmp, -> out.
static void half_forward(const Vae *v, const Layer *L, float *const *pre,
                         float *out, float *tmp, const float *in, int B) {
    for (int i = 0; i < VAE_LAYERS; i++) {
        const float *x = i == 0 ? in : tmp; // (B, cin_i, H_i, H_i)
        float *y = i == VAE_LAYERS - 1 ? out : pre[i];
        layer_forward(v, &L[i], y, x, B);
        if (i < VAE_LAYERS - 1) silu_forward(tmp, y, (size_t)B * layer_out_floats(&L[i]));
    }
}

// Backward of one half. On entry g0 holds d out (B, last layer's output);
// on exit g1 holds d in (B, first layer's input) unless din_needed is 0.
static void half_backward(Vae *v, const Layer *L, float *const *pre,
                          const float *in, Acts *a, int B, int din_needed) {
    for (int i = VAE_LAYERS - 1; i >= 0; i--) {
        const float *x = in;
        if (i > 0) {
            // This layer's input was SiLU(pre[i-1]); recompute it.
            silu_forward(a->tmp, pre[i - 1], (size_t)B * layer_out_floats(&L[i - 1]));
            x = a->tmp;
        }
        // g1 = d x and then g0 = d pre[i-1], each written whole ('=' kernels)
        float *din = i > 0 || din_needed ? a->g1 : NULL;
        layer_backward(v, &L[i], din, a->g0, x, B);
        if (i > 0) {
            size_t n = (size_t)B * layer_out_floats(&L[i - 1]);
            silu_backward_set(a->g0, a->g1, pre[i - 1], n);
        }
    }
}

// Encoder: x -> enc_out, split into mean and clamped logvar.
static void encoder_forward(Vae *v, Acts *a, const float *x, int B) {
    Layer enc[VAE_LAYERS], dec[VAE_LAYERS];
    vae_layers(v, enc, dec);
    half_forward(v, enc, a->enc, a->enc_out, a->tmp, x, B);
    int Z = v->cfg.latent_channels, h = vae_latent_size(&v->cfg);
    size_t zhw = (size_t)Z * h * h;
    for (int bi = 0; bi < B; bi++) {
        const float *o = a->enc_out + (size_t)bi * 2 * zhw; // (2Z, h, h)
        memcpy(a->mean + bi * zhw, o, zhw * sizeof(float));
        float *lv = a->logvar + bi * zhw;
        for (size_t j = 0; j < zhw; j++)
            lv[j] = fminf(fmaxf(o[zhw + j], LOGVAR_MIN), LOGVAR_MAX);
    }
}

float vae_forward(Vae *v, const float *x, const float *eps, int B) {
    CHECK(v->cfg.arch == VAE_ARCH_F4C4);
    CHECK(B > 0 && B <= v->max_batch);
    Acts a = vae_acts(v);
    const VaeConfig *c = &v->cfg;
    int h = vae_latent_size(c);
    size_t img = (size_t)B * c->in_channels * c->image_size * c->image_size;
    size_t lat = (size_t)B * c->latent_channels * h * h;
    // Keep our own copies: the backward needs both after the caller moves on.
    memcpy(a.x, x, img * sizeof(float));
    memcpy(a.eps, eps, lat * sizeof(float));
    encoder_forward(v, &a, a.x, B);
    for (size_t j = 0; j < lat; j++)
        a.z[j] = a.mean[j] + expf(0.5f * a.logvar[j]) * a.eps[j];
    Layer enc[VAE_LAYERS], dec[VAE_LAYERS];
    vae_layers(v, enc, dec);
    half_forward(v, dec, a.dec, a.xhat, a.tmp, a.z, B);

    double rec = sq_err_forward(a.xhat, a.x, img) / B;
    double kl = gaussian_kl_forward(a.mean, a.logvar, lat) / B;
    v->B = B;
    v->rec = (float)rec;
    v->kl = (float)kl;
    v->loss = (float)(rec + c->kl_weight * kl);
    return v->loss;
}

void vae_backward(Vae *v) {
    CHECK(v->cfg.arch == VAE_ARCH_F4C4);
    int B = v->B;
    CHECK(B > 0);
    Acts a = vae_acts(v);
    const VaeConfig *c = &v->cfg;
    int Z = c->latent_channels, h = vae_latent_size(c);
    size_t zhw = (size_t)Z * h * h, lat = (size_t)B * zhw;
    size_t img = (size_t)B * c->in_channels * c->image_size * c->image_size;
    Layer enc[VAE_LAYERS], dec[VAE_LAYERS];
    vae_layers(v, enc, dec);

    // d loss / d xhat = 2 (xhat - x) / B
    memset(a.g0, 0, img * sizeof(float));
    sq_err_backward(a.g0, a.xhat, a.x, img, 1.0f / B);
    half_backward(v, dec, a.dec, a.z, &a, B, 1); // g1 = dz (B, Z, h, h)

    // z = mean + exp(logvar / 2) eps, plus the KL term on mean and logvar.
    for (size_t j = 0; j < lat; j++) {
        a.dmean[j] = a.g1[j];
        a.dlogvar[j] = a.g1[j] * a.eps[j] * 0.5f * expf(0.5f * a.logvar[j]);
    }
    gaussian_kl_backward(a.dmean, a.dlogvar, a.mean, a.logvar, lat,
                         c->kl_weight / B);
    // Reassemble d enc_out (B, 2Z, h, h); like torch.clamp, no gradient
    // flows where the raw log-variance lay outside the clamp range.
    for (int bi = 0; bi < B; bi++) {
        float *g = a.g0 + (size_t)bi * 2 * zhw;
        const float *raw = a.enc_out + (size_t)bi * 2 * zhw + zhw;
        memcpy(g, a.dmean + bi * zhw, zhw * sizeof(float));
        const float *dl = a.dlogvar + bi * zhw;
        for (size_t j = 0; j < zhw; j++)
            g[zhw + j] = raw[j] >= LOGVAR_MIN && raw[j] <= LOGVAR_MAX ? dl[j] : 0.0f;
    }
    half_backward(v, enc, a.enc, a.x, &a, B, 0);
}

void vae_encode(Vae *v, float *mean, float *logvar, const float *x, int B) {
    CHECK(B > 0 && B <= v->max_batch);
    if (v->cfg.arch == VAE_ARCH_KL) {
        float *own = v->klv.params; // v->params may be an EMA copy for this call
        v->klv.params = v->params;
        kl_encode(&v->klv, mean, logvar, x, B);
        v->klv.params = own;
        return;
    }
    Acts a = vae_acts(v);
    int h = vae_latent_size(&v->cfg);
    size_t lat = (size_t)B * v->cfg.latent_channels * h * h;
    encoder_forward(v, &a, x, B);
    memcpy(mean, a.mean, lat * sizeof(float));
    memcpy(logvar, a.logvar, lat * sizeof(float));
    v->B = 0; // the activations no longer match a training forward
}

void vae_decode(Vae *v, float *xhat, const float *z, int B) {
    CHECK(B > 0 && B <= v->max_batch);
    if (v->cfg.arch == VAE_ARCH_KL) {
        float *own = v->klv.params; // v->params may be an EMA copy for this call
        v->klv.params = v->params;
        kl_decode(&v->klv, xhat, z, B);
        v->klv.params = own;
        return;
    }
    Acts a = vae_acts(v);
    Layer enc[VAE_LAYERS], dec[VAE_LAYERS];
    vae_layers(v, enc, dec);
    half_forward(v, dec, a.dec, xhat, a.tmp, z, B);
    v->B = 0;
}
