// blocks.c: ResBlock and AttnBlock (blocks.h), moved out of the UNet so that
// both stages run one code.
#include "blocks.h"

#include <string.h>

#include "common.h"
#include "layers.h"

float *carve(Carver *c, size_t n) {
    float *p = c->base ? c->base + c->used : NULL;
    c->used += n;
    return p;
}

void param_key(char *out, const char *prefix, const char *name) {
    int n = snprintf(out, PARAM_NAME_MAX, "%s%s%s", prefix, *prefix ? "." : "", name);
    CHECK(n > 0 && n < PARAM_NAME_MAX);
}

static void add_inplace(float *x, const float *y, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

static void zero(float *x, size_t n) { memset(x, 0, n * sizeof *x); }

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

static size_t conv_wsize(int cin, int cout, int k) { return (size_t)cout * cin * k * k; }

static int style_groups(const BlockStyle *st, int C) {
    int g = st->groups ? st->groups : groupnorm_groups(C);
    CHECK(g >= 1 && C % g == 0);
    return g;
}

// ---------------------------------------------------------------------------
// ResBlock

void resblock_params_style(ResBlock *r, ParamTable *t, const char *prefix, int cin,
                           int cout, int H, int W, int temb_dim, const BlockStyle *st) {
    char name[PARAM_NAME_MAX];
    memset(r, 0, sizeof *r);
    CHECK(temb_dim >= 0);
    r->cin = cin, r->cout = cout, r->H = H, r->W = W, r->temb_dim = temb_dim;
    r->g1 = style_groups(st, cin);
    r->g2 = style_groups(st, cout);
    r->eps = st->eps;
    param_key(name, prefix, "norm1");
    r->norm1 = params_add_norm(t, name, cin);
    param_key(name, prefix, "conv1");
    r->conv1 = params_add_conv(t, name, cin, cout, 3, 0);
    if (temb_dim) {
        param_key(name, prefix, "temb_proj");
        r->temb_proj = params_add_linear(t, name, temb_dim, cout);
    }
    param_key(name, prefix, "norm2");
    r->norm2 = params_add_norm(t, name, cout);
    param_key(name, prefix, "conv2");
    r->conv2 = params_add_conv(t, name, cout, cout, 3, st->zero_init);
    if (cin != cout) {
        param_key(name, prefix, st->skip_key);
        r->skip = params_add_conv(t, name, cin, cout, 1, 0);
    }
}

size_t resblock_acts_floats(const ResBlock *r, int B) {
    size_t HW = (size_t)r->H * r->W;
    size_t tproj = r->temb_dim ? (size_t)r->cout : 0;
    return (size_t)B * (r->cin * HW + 2 * r->g1 + 2 * r->cout * HW + tproj + 2 * r->g2);
}

void resblock_carve(ResBlock *r, float *acts, int B) {
    size_t HW = (size_t)r->H * r->W;
    Carver c = {acts, 0};
    r->act1 = carve(&c, (size_t)B * r->cin * HW);
    r->mean1 = carve(&c, (size_t)B * r->g1);
    r->rstd1 = carve(&c, (size_t)B * r->g1);
    r->h1 = carve(&c, (size_t)B * r->cout * HW);
    r->tproj = r->temb_dim ? carve(&c, (size_t)B * r->cout) : NULL;
    r->act2 = carve(&c, (size_t)B * r->cout * HW);
    r->mean2 = carve(&c, (size_t)B * r->g2);
    r->rstd2 = carve(&c, (size_t)B * r->g2);
    CHECK(c.used == resblock_acts_floats(r, B));
}

// work: three (B, max(cin, cout), H, W) buffers, then the conv / GroupNorm+SiLU scratch.
static size_t resblock_buf_floats(const ResBlock *r, int B) {
    int c = r->cin > r->cout ? r->cin : r->cout;
    return (size_t)B * c * r->H * r->W;
}

size_t resblock_work_floats(const ResBlock *r, int B) {
    size_t s = conv2d_scratch_floats(B, r->cin, r->H, r->W, r->cout, 3, 1, 1);
    s = max_sz(s, conv2d_scratch_floats(B, r->cout, r->H, r->W, r->cout, 3, 1, 1));
    s = max_sz(s, conv2d_scratch_floats(B, r->cin, r->H, r->W, r->cout, 1, 1, 0));
    s = max_sz(s, groupnorm_silu_scratch_floats(B, r->cin, r->H * r->W));
    s = max_sz(s, groupnorm_silu_scratch_floats(B, r->cout, r->H * r->W));
    return 3 * resblock_buf_floats(r, B) + s;
}

void resblock_forward(ResBlock *r, float *out, const float *x, const float *temb_act,
                      const float *params, int B, float *work) {
    const float *P = params;
    int cin = r->cin, cout = r->cout, H = r->H, W = r->W, HW = H * W;
    size_t nout = (size_t)B * cout * HW;
    float *tmp = work;                                    // (B, cout, H, W)
    float *scratch = work + 3 * resblock_buf_floats(r, B);
    groupnorm_silu_forward_eps(r->act1, r->mean1, r->rstd1, x, P + r->norm1,
                               P + r->norm1 + cin, B, cin, HW, r->g1, r->eps);
    conv2d_forward_prep(r->h1, r->act1, P + r->conv1, r->prep1,
                        P + r->conv1 + conv_wsize(cin, cout, 3), B, cin, H, W, cout, 3, 1, 1,
                        scratch);
    if (r->temb_dim) {
        linear_forward(r->tproj, temb_act, P + r->temb_proj,
                       P + r->temb_proj + (size_t)cout * r->temb_dim, B, r->temb_dim, cout);
        add_channel_bias_forward(r->h1, r->tproj, B, cout, HW);
    }
    groupnorm_silu_forward_eps(r->act2, r->mean2, r->rstd2, r->h1, P + r->norm2,
                               P + r->norm2 + cout, B, cout, HW, r->g2, r->eps);
    conv2d_forward_prep(out, r->act2, P + r->conv2, r->prep2,
                        P + r->conv2 + conv_wsize(cout, cout, 3), B, cout, H, W, cout, 3, 1, 1,
                        scratch);
    if (cin != cout) {
        conv2d_forward(tmp, x, P + r->skip, P + r->skip + conv_wsize(cin, cout, 1),
                       B, cin, H, W, cout, 1, 1, 0, scratch);
        add_inplace(out, tmp, nout);
    } else {
        add_inplace(out, x, nout);
    }
}

void resblock_backward(const ResBlock *r, float *dx, float *dtemb_act, float *grads,
                       const float *dout, const float *x, const float *temb_act,
                       const float *params, int B, float *work) {
    const float *P = params;
    float *G = grads;
    int cin = r->cin, cout = r->cout, H = r->H, W = r->W, HW = H * W;
    size_t nout = (size_t)B * cout * HW;
    size_t nb = resblock_buf_floats(r, B);
    float *w0 = work, *w2 = work + 2 * nb; // gradient temporaries
    float *scratch = work + 3 * nb;
    // residual path
    if (cin != cout) {
        size_t ws = conv_wsize(cin, cout, 1);
        conv2d_backward(dx, G + r->skip, G + r->skip + ws, dout, x, P + r->skip,
                        B, cin, H, W, cout, 1, 1, 0, scratch);
    } else {
        add_inplace(dx, dout, nout);
    }
    // conv2 <- SiLU <- GN2
    size_t ws2 = conv_wsize(cout, cout, 3);
    // the '=' kernels write w0 and w2 whole: no zero-fill
    conv2d_backward_set(w0, G + r->conv2, G + r->conv2 + ws2, dout, r->act2, P + r->conv2,
                    B, cout, H, W, cout, 3, 1, 1, scratch); // w0: d act2
    groupnorm_silu_backward_set(w2, G + r->norm2, G + r->norm2 + cout, w0, r->h1, r->mean2,
                            r->rstd2, P + r->norm2, P + r->norm2 + cout, B, cout, HW, r->g2,
                            scratch); // w2: d h1
    if (r->temb_dim) { // time projection, broadcast over H, W
        size_t wst = (size_t)cout * r->temb_dim;
        zero(w0, (size_t)B * cout); // d tproj
        add_channel_bias_backward(w0, w2, B, cout, HW);
        linear_backward(dtemb_act, G + r->temb_proj, G + r->temb_proj + wst, w0, temb_act,
                        P + r->temb_proj, B, r->temb_dim, cout);
    }
    // conv1 <- SiLU <- GN1
    size_t ws1 = conv_wsize(cin, cout, 3);
    conv2d_backward_set(w0, G + r->conv1, G + r->conv1 + ws1, w2, r->act1, P + r->conv1,
                    B, cin, H, W, cout, 3, 1, 1, scratch); // w0: d act1
    groupnorm_silu_backward(dx, G + r->norm1, G + r->norm1 + cin, w0, x, r->mean1, r->rstd1,
                            P + r->norm1, P + r->norm1 + cin, B, cin, HW, r->g1, scratch);
}

// ---------------------------------------------------------------------------
// AttnBlock

void attnblock_params_style(AttnBlock *a, ParamTable *t, const char *prefix, int C,
                            int H, int W, int heads, const BlockStyle *st) {
    char name[PARAM_NAME_MAX];
    CHECK(heads >= 1 && C % heads == 0);
    memset(a, 0, sizeof *a);
    a->C = C, a->H = H, a->W = W, a->heads = heads;
    a->g = style_groups(st, C);
    a->eps = st->eps;
    param_key(name, prefix, "norm");
    a->norm = params_add_norm(t, name, C);
    param_key(name, prefix, "q");
    a->q = params_add_conv(t, name, C, C, 1, 0);
    param_key(name, prefix, "k");
    a->k = params_add_conv(t, name, C, C, 1, 0);
    param_key(name, prefix, "v");
    a->v = params_add_conv(t, name, C, C, 1, 0);
    param_key(name, prefix, st->proj_key);
    a->proj = params_add_conv(t, name, C, C, 1, st->zero_init);
}

size_t attnblock_acts_floats(const AttnBlock *a, int B) {
    size_t T = (size_t)a->H * a->W;
    return (size_t)B * (5 * a->C * T + 2 * a->g + a->heads * T * T);
}

void attnblock_carve(AttnBlock *a, float *acts, int B) {
    size_t T = (size_t)a->H * a->W, n = (size_t)B * a->C * T;
    Carver c = {acts, 0};
    a->gn = carve(&c, n);
    a->q_ = carve(&c, n);
    a->k_ = carve(&c, n);
    a->v_ = carve(&c, n);
    a->a = carve(&c, n);
    a->mean = carve(&c, (size_t)B * a->g);
    a->rstd = carve(&c, (size_t)B * a->g);
    a->att = carve(&c, (size_t)B * a->heads * T * T);
    CHECK(c.used == attnblock_acts_floats(a, B));
}

// work: four (B, C, H, W) buffers, then the conv / attention scratch.
size_t attnblock_work_floats(const AttnBlock *a, int B) {
    int T = a->H * a->W;
    size_t s = max_sz(conv2d_scratch_floats(B, a->C, a->H, a->W, a->C, 1, 1, 0),
                      attention_scratch_floats(B, a->C, T, a->heads));
    return 4 * (size_t)B * a->C * T + s;
}

void attnblock_forward(AttnBlock *a, float *out, const float *x, const float *params,
                       int B, float *work) {
    const float *P = params;
    int C = a->C, H = a->H, W = a->W, T = H * W;
    size_t ws = conv_wsize(C, C, 1);
    float *scratch = work + 4 * (size_t)B * C * T;
    groupnorm_forward_eps(a->gn, a->mean, a->rstd, x, P + a->norm, P + a->norm + C, B, C, T,
                          a->g, a->eps);
    conv2d_forward(a->q_, a->gn, P + a->q, P + a->q + ws, B, C, H, W, C, 1, 1, 0, scratch);
    conv2d_forward(a->k_, a->gn, P + a->k, P + a->k + ws, B, C, H, W, C, 1, 1, 0, scratch);
    conv2d_forward(a->v_, a->gn, P + a->v, P + a->v + ws, B, C, H, W, C, 1, 1, 0, scratch);
    attention_forward(a->a, a->att, a->q_, a->k_, a->v_, B, C, T, a->heads);
    conv2d_forward(out, a->a, P + a->proj, P + a->proj + ws, B, C, H, W, C, 1, 1, 0, scratch);
    add_inplace(out, x, (size_t)B * C * T);
}

void attnblock_backward(const AttnBlock *a, float *dx, float *grads, const float *dout,
                        const float *x, const float *params, int B, float *work) {
    const float *P = params;
    float *G = grads;
    int C = a->C, H = a->H, W = a->W, T = H * W;
    size_t n = (size_t)B * C * T, ws = conv_wsize(C, C, 1);
    float *w0 = work, *w1 = work + n, *w2 = work + 2 * n, *w3 = work + 3 * n;
    float *scratch = work + 4 * n;
    add_inplace(dx, dout, n); // residual
    conv2d_backward_set(w0, G + a->proj, G + a->proj + ws, dout, a->a, P + a->proj,
                    B, C, H, W, C, 1, 1, 0, scratch); // w0: d a
    attention_backward_set(w1, w2, w3, w0, a->att, a->q_, a->k_, a->v_, B, C, T, a->heads, scratch);
    // w1, w2, w3: d q, d k, d v; w0: d gn, gathered from q, k and v
    conv2d_backward_set(w0, G + a->q, G + a->q + ws, w1, a->gn, P + a->q, B, C, H, W, C, 1, 1, 0, scratch);
    conv2d_backward(w0, G + a->k, G + a->k + ws, w2, a->gn, P + a->k, B, C, H, W, C, 1, 1, 0, scratch);
    conv2d_backward(w0, G + a->v, G + a->v + ws, w3, a->gn, P + a->v, B, C, H, W, C, 1, 1, 0, scratch);
    groupnorm_backward(dx, G + a->norm, G + a->norm + C, w0, x, a->mean, a->rstd,
                       P + a->norm, B, C, T, a->g);
}
