// patchgan.c: the `patchgan-d3` discriminator, forward and backward over a
// batch. Five convolutions in a table walked by one forward and one backward
// loop; layers 1..3 have a BatchNorm between conv and LeakyReLU. Kept for the
// backward: each conv's output (the BatchNorm input, or for layer 0 its
// in-place LeakyReLU output) and each BatchNorm layer's LeakyReLU output (the
// next conv's input, which also gives the LeakyReLU's sign).
#include "patchgan.h"

#include <math.h>
#include <string.h>

#include "common.h"
#include "layers.h"
#include "layers_gan.h"
#include "rng.h"

#define PG_CONVS 5
#define BN_MOMENTUM 0.1f
#define INIT_STD 0.02f

// One conv, its BatchNorm if any. Input (B, cin, H, H) -> (B, cout, OH, OH).
typedef struct {
    int cin, cout, s, H, OH;
    int has_bias, has_bn;
    size_t w, b;       // conv weight, bias (if has_bias) offsets in the table
    size_t bnw, bnb;   // BatchNorm weight, bias offsets (if has_bn)
    size_t rmean, rvar; // running statistics offsets in the stats table (if has_bn)
} Layer;

// The mirror's nn.Sequential index of each conv and its BatchNorm.
static const int conv_index[PG_CONVS] = {0, 2, 5, 8, 11};

void patchgan_config_default(PatchganConfig *c) {
    c->in_channels = 3;
    c->image_size = 64;
    c->width = 32;
}

static int conv_out(int H, int s) { return (H + 2 - 4) / s + 1; } // k 4, pad 1

int patchgan_out_size(const PatchganConfig *c) {
    int h = c->image_size;
    for (int i = 0; i < PG_CONVS; i++) {
        if (h < 3) return 0;
        h = conv_out(h, i < 3 ? 2 : 1);
    }
    return h;
}

// The five layers from the config; offsets from the tables, which hold
// them in layer order.
static void pg_layers(const Patchgan *d, Layer L[PG_CONVS]) {
    const PatchganConfig *c = &d->cfg;
    int w = c->width, H = c->image_size;
    const int chans[PG_CONVS + 1] = {c->in_channels, w, 2 * w, 4 * w, 8 * w, 1};
    int pi = 0, si = 0;
    for (int i = 0; i < PG_CONVS; i++) {
        Layer *l = &L[i];
        l->cin = chans[i];
        l->cout = chans[i + 1];
        l->s = i < 3 ? 2 : 1;
        l->H = H;
        l->OH = H = conv_out(H, l->s);
        l->has_bias = i == 0 || i == PG_CONVS - 1;
        l->has_bn = !l->has_bias;
        l->w = d->table.info[pi++].offset;
        l->b = l->has_bias ? d->table.info[pi++].offset : 0;
        if (l->has_bn) {
            l->bnw = d->table.info[pi++].offset;
            l->bnb = d->table.info[pi++].offset;
            l->rmean = d->stats.info[si++].offset;
            l->rvar = d->stats.info[si++].offset;
        }
    }
    CHECK(pi == d->table.n && si == d->stats.n);
}

static size_t out_floats(const Layer *l) { return (size_t)l->cout * l->OH * l->OH; }

typedef struct {
    float *x;              // (B, C, S, S) copy of the input
    float *pre[PG_CONVS];  // conv outputs (B, cout, OH, OH); pre[0] after its
                           // in-place LeakyReLU, pre[4] the logits
    float *act[PG_CONVS];  // layers 1..3: LeakyReLU(BatchNorm(pre)) (B, cout, OH, OH)
    float *mean[PG_CONVS], *rstd[PG_CONVS]; // layers 1..3: batch statistics (cout)
    float *g0, *g1;        // (B, largest layer output) gradient ping-pong
} Acts;

// Carves the activation allocation for B items; with base == NULL only
// counts. Returns the total floats.
static size_t acts_carve(Acts *a, float *base, const Patchgan *d, int B) {
    Layer L[PG_CONVS];
    pg_layers(d, L);
    const PatchganConfig *c = &d->cfg;
    size_t maxl = 0, off = 0;
#define CARVE(ptr, n)                                                          \
    do {                                                                       \
        (ptr) = base ? base + off : NULL;                                      \
        off += (n);                                                            \
    } while (0)
    CARVE(a->x, (size_t)B * c->in_channels * c->image_size * c->image_size);
    for (int i = 0; i < PG_CONVS; i++) {
        size_t n = out_floats(&L[i]);
        if (n > maxl) maxl = n;
        CARVE(a->pre[i], (size_t)B * n);
        a->act[i] = a->mean[i] = a->rstd[i] = NULL;
        if (L[i].has_bn) {
            CARVE(a->act[i], (size_t)B * n);
            CARVE(a->mean[i], (size_t)L[i].cout);
            CARVE(a->rstd[i], (size_t)L[i].cout);
        }
    }
    CARVE(a->g0, (size_t)B * maxl);
    CARVE(a->g1, (size_t)B * maxl);
#undef CARVE
    return off;
}

static Acts pg_acts(const Patchgan *d) {
    Acts a;
    acts_carve(&a, d->acts, d, d->max_batch);
    return a;
}

// The input of layer i: the image, or the previous layer's activation.
static const float *layer_input(const Acts *a, int i) {
    return i == 0 ? a->x : a->act[i - 1] ? a->act[i - 1] : a->pre[i - 1];
}

static void reset_running(Patchgan *d) {
    Layer L[PG_CONVS];
    pg_layers(d, L);
    for (int i = 0; i < PG_CONVS; i++) {
        if (!L[i].has_bn) continue;
        memset(d->running + L[i].rmean, 0, (size_t)L[i].cout * sizeof(float));
        for (int c = 0; c < L[i].cout; c++) d->running[L[i].rvar + c] = 1.0f;
    }
    d->num_batches_tracked = 0;
}

void patchgan_init(Patchgan *d, const PatchganConfig *c, int max_batch) {
    CHECK(c->in_channels > 0 && c->width > 0 && max_batch > 0);
    CHECK(patchgan_out_size(c) >= 1);
    memset(d, 0, sizeof *d);
    d->cfg = *c;
    d->max_batch = max_batch;
    int w = c->width;
    const int chans[PG_CONVS + 1] = {c->in_channels, w, 2 * w, 4 * w, 8 * w, 1};
    params_init(&d->table);
    params_init(&d->stats);
    char name[PARAM_NAME_MAX];
    for (int i = 0; i < PG_CONVS; i++) {
        int cin = chans[i], cout = chans[i + 1], k = 4;
        snprintf(name, sizeof name, "main.%d", conv_index[i]);
        if (i == 0 || i == PG_CONVS - 1) {
            params_add_conv(&d->table, name, cin, cout, k, 0);
            continue;
        }
        // bias-free conv (BatchNorm follows), then the BatchNorm at index + 1
        int shape[4] = {cout, cin, k, k};
        snprintf(name, sizeof name, "main.%d.weight", conv_index[i]);
        params_add(&d->table, name, 4, shape, 1.0f / sqrtf((float)(cin * k * k)));
        snprintf(name, sizeof name, "main.%d", conv_index[i] + 1);
        params_add_norm(&d->table, name, cout);
        snprintf(name, sizeof name, "main.%d.running_mean", conv_index[i] + 1);
        params_add(&d->stats, name, 1, &cout, 0.0f);
        snprintf(name, sizeof name, "main.%d.running_var", conv_index[i] + 1);
        params_add(&d->stats, name, 1, &cout, 0.0f);
    }
    d->params = xmalloc_aligned(d->table.total * sizeof(float));
    d->grads = xmalloc_aligned(d->table.total * sizeof(float));
    memset(d->grads, 0, d->table.total * sizeof(float));
    d->running = xmalloc_aligned(d->stats.total * sizeof(float));
    reset_running(d);

    Acts a;
    d->acts = xmalloc_aligned(acts_carve(&a, NULL, d, max_batch) * sizeof(float));
    Layer L[PG_CONVS];
    pg_layers(d, L);
    size_t ns = 1;
    for (int i = 0; i < PG_CONVS; i++) {
        size_t s = conv2d_scratch_floats(max_batch, L[i].cin, L[i].H, L[i].H, L[i].cout, 4,
                                         L[i].s, 1);
        if (s > ns) ns = s;
    }
    d->scratch = xmalloc_aligned(ns * sizeof(float));
}

void patchgan_free(Patchgan *d) {
    params_free(&d->table);
    params_free(&d->stats);
    free(d->params);
    free(d->grads);
    free(d->running);
    free(d->acts);
    free(d->scratch);
    memset(d, 0, sizeof *d);
}

void patchgan_init_values(Patchgan *d, Rng *rng) {
    // PyTorch's defaults first (the first and last conv biases keep them,
    // BatchNorm biases are 0), then weights_init's normal draws over them
    params_init_values(&d->table, d->params, rng);
    Layer L[PG_CONVS];
    pg_layers(d, L);
    for (int i = 0; i < PG_CONVS; i++) {
        float *w = d->params + L[i].w;
        size_t nw = (size_t)L[i].cout * L[i].cin * 16;
        rng_normal_fill(rng, w, nw);
        for (size_t j = 0; j < nw; j++) w[j] *= INIT_STD;
        if (!L[i].has_bn) continue;
        float *g = d->params + L[i].bnw;
        rng_normal_fill(rng, g, (size_t)L[i].cout);
        for (int c = 0; c < L[i].cout; c++) g[c] = 1.0f + INIT_STD * g[c];
    }
    reset_running(d);
}

const float *patchgan_forward(Patchgan *d, const float *x, int B) {
    CHECK(B > 0 && B <= d->max_batch);
    Layer L[PG_CONVS];
    pg_layers(d, L);
    Acts a = pg_acts(d);
    const PatchganConfig *c = &d->cfg;
    memcpy(a.x, x, (size_t)B * c->in_channels * c->image_size * c->image_size * sizeof(float));
    for (int i = 0; i < PG_CONVS; i++) {
        const Layer *l = &L[i];
        size_t n = (size_t)B * out_floats(l);
        conv2d_forward(a.pre[i], layer_input(&a, i), d->params + l->w,
                       l->has_bias ? d->params + l->b : NULL, B, l->cin, l->H, l->H, l->cout,
                       4, l->s, 1, d->scratch);
        if (i == PG_CONVS - 1) break;
        if (l->has_bn) {
            batchnorm_forward(a.act[i], a.mean[i], a.rstd[i], a.pre[i], d->params + l->bnw,
                              d->params + l->bnb, B, l->cout, l->OH * l->OH);
            leaky_relu_forward(a.act[i], a.act[i], LRELU_SLOPE, n);
        } else {
            leaky_relu_forward(a.pre[i], a.pre[i], LRELU_SLOPE, n);
        }
    }
    d->B = B;
    return a.pre[PG_CONVS - 1];
}

void patchgan_backward(Patchgan *d, float *dx, const float *dlogits) {
    CHECK(d->B > 0);
    int B = d->B;
    Layer L[PG_CONVS];
    pg_layers(d, L);
    Acts a = pg_acts(d);
    const float *p = d->params;
    float *dg = d->grads;
    const float *dcur = dlogits; // d loss / d (layer i's conv output)
    for (int i = PG_CONVS - 1; i > 0; i--) {
        const Layer *l = &L[i], *lp = &L[i - 1];
        size_t np = (size_t)B * out_floats(lp);
        // d loss / d layer i's input (B, lp->cout, lp->OH, lp->OH): the
        // buffer dcur is not in
        float *dact = dcur == a.g0 ? a.g1 : a.g0;
        conv2d_backward_set(dact, dg + l->w, l->has_bias ? dg + l->b : NULL, dcur,
                            layer_input(&a, i), p + l->w, B, l->cin, l->H, l->H, l->cout, 4,
                            l->s, 1, d->scratch);
        // the LeakyReLU's sign from its output
        leaky_relu_backward_set(dact, dact, layer_input(&a, i), LRELU_SLOPE, np);
        if (!lp->has_bn) {
            dcur = dact;
            continue;
        }
        // dcur is spent: the BatchNorm's input gradient goes to the other buffer
        float *dpre = dact == a.g0 ? a.g1 : a.g0;
        memset(dpre, 0, np * sizeof(float));
        batchnorm_backward(dpre, dg + lp->bnw, dg + lp->bnb, dact, a.pre[i - 1], a.mean[i - 1],
                           a.rstd[i - 1], p + lp->bnw, B, lp->cout, lp->OH * lp->OH);
        dcur = dpre;
    }
    const Layer *l = &L[0];
    conv2d_backward(dx, dg + l->w, dg + l->b, dcur, a.x, p + l->w, B, l->cin, l->H, l->H,
                    l->cout, 4, l->s, 1, d->scratch);
}

void patchgan_update_running(Patchgan *d) {
    CHECK(d->B > 0);
    Layer L[PG_CONVS];
    pg_layers(d, L);
    Acts a = pg_acts(d);
    for (int i = 0; i < PG_CONVS; i++) {
        if (!L[i].has_bn) continue;
        batchnorm_update_running(d->running + L[i].rmean, d->running + L[i].rvar, a.mean[i],
                                 a.rstd[i], L[i].cout, (size_t)d->B * L[i].OH * L[i].OH,
                                 BN_MOMENTUM);
    }
    d->num_batches_tracked++;
}
