// lpips.c: the LPIPS distance of lpips.h and its gradient to the second
// image.
//
// x and xhat run through VGG together as one batch of 2B images (x first),
// so every conv is one call over both. Kept for the backward: every ReLU
// output (its sign is the ReLU's derivative, and the taps are among them;
// the x half is the fixed target the loss compares against). The backward
// runs for the xhat half only: the loss's gradient at each tap, added to what
// the next stage's max pool routes back, then through each ReLU and conv in
// turn. A conv's input gradient is the forward conv of the output gradient
// with the adjoint weights built at load; VGG's own weights get no gradient.
//
// The per-pixel normalisation and head run over blocks of pixels of one
// image, channel by channel (contiguous rows), each pixel's sums in double in
// channel order; a pair's mean over its pixels is summed serially, so results
// do not depend on the thread count.
#include "lpips.h"

#include <math.h>
#include <string.h>

#include "checkpoint.h"
#include "common.h"
#include "h5attr.h"
#include "layers.h"
#include "layers_gan.h"
#include "pool.h"

#define NORM_EPS 1e-10f // LPIPS's normalize_tensor
#define PIX_BLOCK 256   // pixels of one image a task normalises at a time

static const float SHIFT[3] = {-0.030f, -0.088f, -0.188f};
static const float SCALE[3] = {0.458f, 0.448f, 0.450f};
// torchvision's vgg16().features index of each conv, and the stage it is in
static const int CONV_INDEX[LPIPS_CONVS] = {0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28};
static const int CONV_STAGE[LPIPS_CONVS] = {0, 0, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4};

// One conv: input (n, cin, H, H) -> (n, cout, H, H); offsets of its weight,
// bias and adjoint weight.
typedef struct {
    int cin, cout, H, stage;
    int last; // the stage's last conv: its ReLU output is the stage's tap
    size_t w, b, adj;
} Conv;

static void lp_convs(const Lpips *l, Conv cv[LPIPS_CONVS]) {
    size_t adj = 0;
    for (int i = 0; i < LPIPS_CONVS; i++) {
        Conv *c = &cv[i];
        c->stage = CONV_STAGE[i];
        c->last = i == LPIPS_CONVS - 1 || CONV_STAGE[i + 1] != c->stage;
        c->cout = l->width[c->stage];
        c->cin = i == 0 ? 3 : l->width[CONV_STAGE[i - 1]];
        c->H = l->side[c->stage];
        c->w = l->table.info[2 * i].offset;
        c->b = l->table.info[2 * i + 1].offset;
        c->adj = adj;
        adj += (size_t)c->cout * c->cin * 9;
    }
}

static size_t adjoint_floats(const Lpips *l) {
    Conv cv[LPIPS_CONVS];
    lp_convs(l, cv);
    const Conv *c = &cv[LPIPS_CONVS - 1];
    return c->adj + (size_t)c->cout * c->cin * 9;
}

// The head of layer s: (C_s) weights.
static const float *lin_weight(const Lpips *l, int s) {
    return l->params + l->table.info[2 * LPIPS_CONVS + s].offset;
}

typedef struct {
    float *in;                  // (2B, 3, S, S) the scaled images, x then xhat
    float *out[LPIPS_CONVS];    // (2B, cout, H, H) each conv's ReLU output
    float *pooled[LPIPS_LAYERS]; // stages 1..4: (2B, C_{s-1}, S_s, S_s) their pooled input
    float *g0, *g1;             // (B, largest conv input or output) gradient ping-pong
    float *pix;                 // (B, S^2) a layer's per-pixel terms
} Acts;

// Carves the activations of max_batch pairs from base; with base NULL only
// counts. Returns the floats.
static size_t acts_carve(Acts *a, float *base, const Lpips *l) {
    Conv cv[LPIPS_CONVS];
    lp_convs(l, cv);
    size_t NB = 2 * (size_t)l->max_batch, S2 = (size_t)l->size * l->size, off = 0, gmax = 3 * S2;
#define CARVE(ptr, n)                                                          \
    do {                                                                       \
        (ptr) = base ? base + off : NULL;                                      \
        off += (n);                                                            \
    } while (0)
    CARVE(a->in, NB * 3 * S2);
    a->pooled[0] = NULL;
    for (int i = 0; i < LPIPS_CONVS; i++) {
        const Conv *c = &cv[i];
        size_t n = (size_t)c->cout * c->H * c->H;
        if (i > 0 && c->stage != cv[i - 1].stage)
            CARVE(a->pooled[c->stage], NB * c->cin * c->H * c->H);
        CARVE(a->out[i], NB * n);
        if (n > gmax) gmax = n;
    }
    CARVE(a->g0, (size_t)l->max_batch * gmax);
    CARVE(a->g1, (size_t)l->max_batch * gmax);
    CARVE(a->pix, (size_t)l->max_batch * S2);
#undef CARVE
    return off;
}

static Acts lp_acts(const Lpips *l) {
    Acts a;
    acts_carve(&a, l->acts, l);
    return a;
}

void lpips_table(ParamTable *t, const int width[LPIPS_LAYERS]) {
    params_init(t);
    char name[PARAM_NAME_MAX];
    for (int i = 0; i < LPIPS_CONVS; i++) {
        snprintf(name, sizeof name, "features.%d", CONV_INDEX[i]);
        params_add_conv(t, name, i == 0 ? 3 : width[CONV_STAGE[i - 1]], width[CONV_STAGE[i]],
                        3, 0);
    }
    for (int s = 0; s < LPIPS_LAYERS; s++) {
        snprintf(name, sizeof name, "lin%d.model.1.weight", s);
        params_add(t, name, 4, (int[]){1, width[s], 1, 1}, 1.0f / sqrtf((float)width[s]));
    }
}

void lpips_free(Lpips *l) {
    params_free(&l->table);
    free(l->params);
    free(l->acts);
    free(l->scratch);
    free(l->layer_out);
    memset(l, 0, sizeof *l);
}

// adj (cin, cout, 3, 3)[c][o][a][b] = w (cout, cin, 3, 3)[o][c][2-a][2-b]
static void adjoint_build(float *adj, const float *w, int cin, int cout) {
    for (int o = 0; o < cout; o++)
        for (int c = 0; c < cin; c++)
            for (int k = 0; k < 9; k++)
                adj[((size_t)c * cout + o) * 9 + k] = w[((size_t)o * cin + c) * 9 + 8 - k];
}

int lpips_load(Lpips *l, const char *path, int max_batch, int image_size) {
    CHECK(max_batch >= 1);
    memset(l, 0, sizeof *l);
    if (image_size < LPIPS_MIN_SIZE)
        return errorf("%s: LPIPS needs images of at least %dx%d (four 2x2 pools), not %dx%d",
                      path, LPIPS_MIN_SIZE, LPIPS_MIN_SIZE, image_size, image_size);
    Attrs *at = xmalloc(sizeof *at);
    int rc = ckpt_read_attrs(path, "lpips", at);
    if (!rc) {
        AttrSpec spec[LPIPS_LAYERS];
        static const char *keys[LPIPS_LAYERS] = {"width1", "width2", "width3", "width4",
                                                 "width5"};
        for (int s = 0; s < LPIPS_LAYERS; s++)
            spec[s] = (AttrSpec){keys[s], SPEC_INT, 1, LPIPS_WIDTH_MAX, &l->width[s], 0};
        rc = attrs_read_specs(at, path, spec, LPIPS_LAYERS);
    }
    free(at);
    if (rc) return -1;
    l->size = image_size;
    l->max_batch = max_batch;
    for (int s = 0; s < LPIPS_LAYERS; s++)
        l->side[s] = s == 0 ? image_size : l->side[s - 1] / 2;
    // Each stage's first conv against its declared widths, and its output for
    // both halves of a batch against the memory, before allocating anything.
    for (int i = 0; i < LPIPS_CONVS; i++) {
        if (i > 0 && CONV_STAGE[i] == CONV_STAGE[i - 1]) continue;
        int s = CONV_STAGE[i];
        char key[PARAM_NAME_MAX];
        snprintf(key, sizeof key, "features.%d.weight", CONV_INDEX[i]);
        if (ckpt_check_declared_conv(path, key, l->width[s], s ? l->width[s - 1] : 3,
                                     2 * max_batch, l->side[s]))
            return -1;
    }
    lpips_table(&l->table, l->width);
    size_t np = (l->table.total + 15) / 16 * 16; // the adjoint weights start aligned
    l->params = xmalloc_aligned((np + adjoint_floats(l)) * sizeof(float));
    l->adjoint = l->params + np;
    if (ckpt_read_group(path, &l->table, "model", l->params)) {
        lpips_free(l);
        return -1;
    }
    Conv cv[LPIPS_CONVS];
    lp_convs(l, cv);
    size_t scratch = 1;
    for (int i = 0; i < LPIPS_CONVS; i++) {
        const Conv *c = &cv[i];
        adjoint_build(l->adjoint + c->adj, l->params + c->w, c->cin, c->cout);
        size_t f = conv2d_scratch_floats(2 * max_batch, c->cin, c->H, c->H, c->cout, 3, 1, 1);
        size_t b = conv2d_scratch_floats(max_batch, c->cout, c->H, c->H, c->cin, 3, 1, 1);
        if (f > scratch) scratch = f;
        if (b > scratch) scratch = b;
    }
    Acts a;
    l->acts = xmalloc_aligned(acts_carve(&a, NULL, l) * sizeof(float));
    l->scratch = xmalloc_aligned(scratch * sizeof(float));
    l->layer_out = xmalloc((size_t)max_batch * LPIPS_LAYERS * sizeof(float));
    return 0;
}

// out (B, 3, S2) = (in - shift[c]) / scale[c]
static void scale_input(float *out, const float *in, int B, size_t S2) {
#pragma omp parallel for schedule(static)
    for (int bc = 0; bc < B * 3; bc++) {
        int c = bc % 3;
        const float *x = in + (size_t)bc * S2;
        float *o = out + (size_t)bc * S2;
        for (size_t i = 0; i < S2; i++) o[i] = (x[i] - SHIFT[c]) / SCALE[c];
    }
}

// den[j] = |f_j| + eps over the C channels of np pixels, f's channel stride HW
static void norm_block(float *den, const float *f, int C, int HW, int np) {
    double s[PIX_BLOCK] = {0};
    for (int c = 0; c < C; c++) {
        const float *r = f + (size_t)c * HW;
        for (int j = 0; j < np; j++) s[j] += (double)r[j] * r[j];
    }
    for (int j = 0; j < np; j++) den[j] = (float)sqrt(s[j]) + NORM_EPS;
}

// Layer s's term for pairs (f0[b], f1[b]), each (C, HW): pix (B, HW) gets
// sum_c w_c (n0_c - n1_c)^2 per pixel.
static void layer_pixels(float *pix, const float *f0, const float *f1, const float *w, int B,
                         int C, int HW) {
    int nblk = (HW + PIX_BLOCK - 1) / PIX_BLOCK;
#pragma omp parallel for schedule(static)
    for (long t = 0; t < (long)B * nblk; t++) {
        int b = (int)(t / nblk), p0 = (int)(t % nblk) * PIX_BLOCK;
        int np = HW - p0 < PIX_BLOCK ? HW - p0 : PIX_BLOCK;
        const float *a = f0 + (size_t)b * C * HW + p0, *h = f1 + (size_t)b * C * HW + p0;
        float den0[PIX_BLOCK], den1[PIX_BLOCK];
        double acc[PIX_BLOCK] = {0};
        norm_block(den0, a, C, HW, np);
        norm_block(den1, h, C, HW, np);
        for (int c = 0; c < C; c++) {
            const float *ra = a + (size_t)c * HW, *rh = h + (size_t)c * HW;
            for (int j = 0; j < np; j++) {
                float d = ra[j] / den0[j] - rh[j] / den1[j];
                acc[j] += (double)w[c] * d * d;
            }
        }
        for (int j = 0; j < np; j++) pix[(size_t)b * HW + p0 + j] = (float)acc[j];
    }
}

// df1 (B, C, HW) = d (sum_b dout[b] mean_pixels(term)) / d f1. With
// n = f / den, den = r + eps, r = |f|, and g = d/dn1 = -2 dout/HW w (n0 - n1):
// d/df1_k = g_k / den - f1_k (sum_c g_c f1_c) / (r den^2) (the second part
// dropped at r = 0).
static void layer_backward(float *df1, const float *f0, const float *f1, const float *w,
                           const float *dout, int B, int C, int HW) {
    int nblk = (HW + PIX_BLOCK - 1) / PIX_BLOCK;
#pragma omp parallel for schedule(static)
    for (long t = 0; t < (long)B * nblk; t++) {
        int b = (int)(t / nblk), p0 = (int)(t % nblk) * PIX_BLOCK;
        int np = HW - p0 < PIX_BLOCK ? HW - p0 : PIX_BLOCK;
        size_t o = (size_t)b * C * HW + p0;
        const float *a = f0 + o, *h = f1 + o;
        float *dh = df1 + o;
        float den0[PIX_BLOCK], den1[PIX_BLOCK], coef[PIX_BLOCK];
        double dot[PIX_BLOCK] = {0};
        norm_block(den0, a, C, HW, np);
        norm_block(den1, h, C, HW, np);
        float gs = -2.0f * dout[b] / (float)HW;
        for (int c = 0; c < C; c++) {
            const float *ra = a + (size_t)c * HW, *rh = h + (size_t)c * HW;
            float *rd = dh + (size_t)c * HW;
            for (int j = 0; j < np; j++) {
                float g = gs * w[c] * (ra[j] / den0[j] - rh[j] / den1[j]);
                rd[j] = g; // g for now; the projection below finishes it
                dot[j] += (double)g * rh[j];
            }
        }
        for (int j = 0; j < np; j++) {
            float r = den1[j] - NORM_EPS;
            coef[j] = r > 0.0f ? (float)(dot[j] / ((double)r * den1[j] * den1[j])) : 0.0f;
        }
        for (int c = 0; c < C; c++) {
            const float *rh = h + (size_t)c * HW;
            float *rd = dh + (size_t)c * HW;
            for (int j = 0; j < np; j++) rd[j] = rd[j] / den1[j] - rh[j] * coef[j];
        }
    }
}

void lpips_forward(Lpips *l, float *out, const float *x, const float *xhat, int B) {
    CHECK(B >= 1 && B <= l->max_batch);
    Conv cv[LPIPS_CONVS];
    lp_convs(l, cv);
    Acts a = lp_acts(l);
    size_t S2 = (size_t)l->size * l->size;
    scale_input(a.in, x, B, S2);
    scale_input(a.in + (size_t)B * 3 * S2, xhat, B, S2);
    const float *cur = a.in;
    for (int i = 0; i < LPIPS_CONVS; i++) {
        const Conv *c = &cv[i];
        if (i > 0 && c->stage != cv[i - 1].stage) {
            maxpool2d_forward(a.pooled[c->stage], cur, 2 * B, c->cin, cv[i - 1].H, cv[i - 1].H,
                              2, 2, 0);
            cur = a.pooled[c->stage];
        }
        conv2d_forward(a.out[i], cur, l->params + c->w, l->params + c->b, 2 * B, c->cin, c->H,
                       c->H, c->cout, 3, 1, 1, l->scratch);
        relu_forward(a.out[i], a.out[i], (size_t)2 * B * c->cout * c->H * c->H);
        cur = a.out[i];
    }
    for (int i = 0; i < LPIPS_CONVS; i++) {
        const Conv *c = &cv[i];
        if (!c->last) continue;
        int HW = c->H * c->H;
        size_t half = (size_t)B * c->cout * HW;
        layer_pixels(a.pix, a.out[i], a.out[i] + half, lin_weight(l, c->stage), B, c->cout, HW);
        for (int b = 0; b < B; b++) {
            double s = 0.0;
            for (int j = 0; j < HW; j++) s += a.pix[(size_t)b * HW + j];
            l->layer_out[b * LPIPS_LAYERS + c->stage] = (float)(s / HW);
        }
    }
    for (int b = 0; b < B; b++) {
        double s = 0.0;
        for (int k = 0; k < LPIPS_LAYERS; k++) s += l->layer_out[b * LPIPS_LAYERS + k];
        out[b] = (float)s;
    }
    l->B = B;
}

void lpips_backward(Lpips *l, float *dxhat, const float *dout) {
    CHECK(l->B > 0);
    int B = l->B;
    Conv cv[LPIPS_CONVS];
    lp_convs(l, cv);
    Acts a = lp_acts(l);
    // d/d (conv i's output) for the xhat half, (B, cout, H, H); below conv
    // i it becomes d/d (its input)
    float *dcur = NULL;
    for (int i = LPIPS_CONVS - 1; i >= 0; i--) {
        const Conv *c = &cv[i];
        size_t n = (size_t)B * c->cout * c->H * c->H;
        const float *y = a.out[i] + n; // xhat's ReLU output
        if (c->last) {
            // the tap: the loss's own gradient, plus the next stage's through its pool
            float *dt = dcur == a.g0 ? a.g1 : a.g0;
            layer_backward(dt, a.out[i], y, lin_weight(l, c->stage), dout, B, c->cout,
                           c->H * c->H);
            if (dcur)
                maxpool2d_backward(dt, dcur, y, B, c->cout, c->H, c->H, 2, 2, 0);
            dcur = dt;
        }
        leaky_relu_backward_set(dcur, dcur, y, 0.0f, n);
        float *din = dcur == a.g0 ? a.g1 : a.g0;
        conv2d_forward(din, dcur, l->adjoint + c->adj, NULL, B, c->cout, c->H, c->H, c->cin, 3,
                       1, 1, l->scratch);
        dcur = din;
    }
    // through the scaling layer
    size_t S2 = (size_t)l->size * l->size;
#pragma omp parallel for schedule(static)
    for (int bc = 0; bc < B * 3; bc++) {
        float *d = dxhat + (size_t)bc * S2;
        const float *g = dcur + (size_t)bc * S2;
        for (size_t i = 0; i < S2; i++) d[i] += g[i] / SCALE[bc % 3];
    }
}
