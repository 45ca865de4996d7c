// kl.c: the AutoencoderKL family as two flat op lists, the encoder (with
// quant_conv) and the decoder (with post_quant_conv), each run forward in
// order and backward in reverse. Every stream tensor between ops has its own
// gradient buffer (the blocks' backwards accumulate into their input's).
#include "kl.h"

#include <stdarg.h>
#include <string.h>

#include "common.h"
#include "layers.h"
#include "rng.h"

enum { KOP_CONV, KOP_RES, KOP_ATTN, KOP_DOWN, KOP_UP, KOP_HEAD };

struct KlOp {
    int kind;
    int C, H, W;      // input dims
    int OC, OH, OW;   // output dims
    int k;            // KOP_CONV: kernel side (3: pad 1; 1: pad 0)
    ResBlock res;     // KOP_RES
    AttnBlock attn;   // KOP_ATTN
    size_t conv;      // KOP_CONV, DOWN, UP, HEAD: the conv's weight offset
    size_t norm;      // KOP_HEAD: norm_out's weight offset
    int g;            // KOP_HEAD: GroupNorm groups
    // KOP_DOWN: (B, C, H+1, W+1) the input padded right and bottom;
    // KOP_UP: (B, C, 2H, 2W) nearest-upsampled input;
    // KOP_HEAD: (B, C, H, W) SiLU(GN(input))
    float *mid;
    float *mean, *rstd; // KOP_HEAD: (B, g)
    // stream tensors and their gradients; the first op's din and the last
    // op's dout are the caller's (set per call), and so is an inference
    // half's first in
    const float *in;
    float *out, *din, *dout;
};

static const double KL_GN_EPS = 1e-6;
static const float LOGVAR_MIN = -30.0f, LOGVAR_MAX = 20.0f;

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

static size_t conv_wsize(int cin, int cout, int k) { return (size_t)cout * cin * k * k; }

// A parameter key from a format, into out[PARAM_NAME_MAX].
__attribute__((format(printf, 2, 3))) static void keyf(char *out, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, PARAM_NAME_MAX, fmt, ap);
    va_end(ap);
    CHECK(n > 0 && n < PARAM_NAME_MAX);
}

// ---------------------------------------------------------------------------
// KlConfig

void kl_config_default(KlConfig *c) {
    memset(c, 0, sizeof *c);
    c->in_channels = 3;
    c->image_size = 64;
    c->ch = 32;
    c->num_levels = 3;
    c->ch_mult[0] = 1, c->ch_mult[1] = 2, c->ch_mult[2] = 4;
    c->num_res_blocks = 1;
    c->num_attn = 0;
    c->z_channels = 4;
    c->groups = 32;
}

int kl_config_check(const KlConfig *c, const char *what) {
    if (c->in_channels != 1 && c->in_channels != 3)
        return errorf("%s: autoencoder in_channels is %d, expected 1 or 3", what, c->in_channels);
    if (c->num_levels < 1 || c->num_levels > KL_MAX_LEVELS)
        return errorf("%s: autoencoder needs 1 to %d channel multipliers, got %d", what,
                      KL_MAX_LEVELS, c->num_levels);
    int f = 1 << (c->num_levels - 1);
    if (c->image_size < 1 || c->image_size > 4096 || c->image_size % f)
        return errorf("%s: image size %d is not a multiple of 2^%d in [1, 4096] (one halving "
                      "per level after the first)", what, c->image_size, c->num_levels - 1);
    if (c->num_res_blocks < 1 || c->num_res_blocks > KL_MAX_RES_BLOCKS)
        return errorf("%s: autoencoder takes 1 to %d ResnetBlocks a level, got %d", what,
                      KL_MAX_RES_BLOCKS, c->num_res_blocks);
    if (c->z_channels < 1 || c->z_channels > 1024)
        return errorf("%s: z_channels %d is not in [1, 1024]", what, c->z_channels);
    if (c->ch < 1 || c->ch > 65536 || c->groups < 1 || c->ch % c->groups)
        return errorf("%s: width ch %d does not split into %d GroupNorm groups", what, c->ch,
                      c->groups);
    for (int l = 0; l < c->num_levels; l++) {
        long w = (long)c->ch * c->ch_mult[l];
        if (c->ch_mult[l] < 1 || w > 65536)
            return errorf("%s: bad channel multiplier %d", what, c->ch_mult[l]);
        if (w % c->groups)
            return errorf("%s: width %ld (ch %d x %d) does not split into %d GroupNorm groups",
                          what, w, c->ch, c->ch_mult[l], c->groups);
    }
    if (c->num_attn < 0 || c->num_attn > KL_MAX_LEVELS)
        return errorf("%s: autoencoder takes 0 to %d attention resolutions", what, KL_MAX_LEVELS);
    for (int a = 0; a < c->num_attn; a++) {
        int reached = 0;
        for (int l = 0; l < c->num_levels; l++) reached |= (c->image_size >> l) == c->attn_resolutions[a];
        if (!reached)
            return errorf("%s: attention resolution %d is not a side the autoencoder reaches "
                          "(%d halved up to %d times)", what, c->attn_resolutions[a],
                          c->image_size, c->num_levels - 1);
    }
    return 0;
}

int kl_latent_size(const KlConfig *c) { return c->image_size >> (c->num_levels - 1); }

// ---------------------------------------------------------------------------
// building: ops in run order, parameters in state_dict order

static KlOp *op_new(KlHalf *h, int cap, int kind, int C, int H, int W) {
    CHECK(h->n_ops < cap);
    KlOp *op = &h->ops[h->n_ops++];
    memset(op, 0, sizeof *op);
    op->kind = kind;
    op->C = C, op->H = H, op->W = W;
    op->OC = C, op->OH = H, op->OW = W;
    return op;
}

static KlOp *conv_op(KlHalf *h, int cap, int C, int OC, int S, int k) {
    KlOp *op = op_new(h, cap, KOP_CONV, C, S, S);
    op->OC = OC, op->k = k;
    return op;
}

static int has_attn(const KlConfig *c, int res) {
    for (int i = 0; i < c->num_attn; i++)
        if (c->attn_resolutions[i] == res) return 1;
    return 0;
}

static const BlockStyle *kl_style(const KlConfig *c, BlockStyle *st) {
    *st = (BlockStyle){.groups = c->groups, .eps = KL_GN_EPS, .zero_init = 0,
                       .skip_key = "nin_shortcut", .proj_key = "proj_out"};
    return st;
}

// mid.block_1, mid.attn_1, mid.block_2 at C channels, side S, with parameters.
static void add_mid(KlHalf *h, int cap, ParamTable *t, const char *half, int C, int S,
                    const BlockStyle *st) {
    char p[PARAM_NAME_MAX];
    keyf(p, "%s.mid.block_1", half);
    resblock_params_style(&op_new(h, cap, KOP_RES, C, S, S)->res, t, p, C, C, S, S, 0, st);
    keyf(p, "%s.mid.attn_1", half);
    attnblock_params_style(&op_new(h, cap, KOP_ATTN, C, S, S)->attn, t, p, C, S, S, 1, st);
    keyf(p, "%s.mid.block_2", half);
    resblock_params_style(&op_new(h, cap, KOP_RES, C, S, S)->res, t, p, C, C, S, S, 0, st);
}

// One level's ResnetBlocks (+ AttnBlocks) from cin to cout at side S, ops in
// run order, parameters as the state_dict lists them (blocks, then attns).
static int add_level(KlHalf *h, int cap, ParamTable *t, const char *prefix, int nblocks,
                     int cin, int cout, int S, int attn, const BlockStyle *st) {
    KlOp *rops[KL_MAX_RES_BLOCKS + 1], *aops[KL_MAX_RES_BLOCKS + 1];
    char p[PARAM_NAME_MAX];
    for (int j = 0; j < nblocks; j++) {
        rops[j] = op_new(h, cap, KOP_RES, cin, S, S);
        rops[j]->OC = cout;
        cin = cout;
        aops[j] = attn ? op_new(h, cap, KOP_ATTN, cout, S, S) : NULL;
    }
    for (int j = 0; j < nblocks; j++) {
        keyf(p, "%s.block.%d", prefix, j);
        resblock_params_style(&rops[j]->res, t, p, rops[j]->C, cout, S, S, 0, st);
    }
    for (int j = 0; attn && j < nblocks; j++) {
        keyf(p, "%s.attn.%d", prefix, j);
        attnblock_params_style(&aops[j]->attn, t, p, cout, S, S, 1, st);
    }
    return cout;
}

static KlOp *head_op(KlHalf *h, int cap, ParamTable *t, const char *half, int C, int OC,
                     int S, int groups) {
    char p[PARAM_NAME_MAX];
    KlOp *op = op_new(h, cap, KOP_HEAD, C, S, S);
    op->OC = OC, op->g = groups;
    keyf(p, "%s.norm_out", half);
    op->norm = params_add_norm(t, p, C);
    keyf(p, "%s.conv_out", half);
    op->conv = params_add_conv(t, p, C, OC, 3, 0);
    return op;
}

static void kl_build(KlVae *k) {
    const KlConfig *c = &k->cfg;
    ParamTable *t = &k->table;
    BlockStyle style;
    const BlockStyle *st = kl_style(c, &style);
    char p[PARAM_NAME_MAX];
    int L = c->num_levels, nrb = c->num_res_blocks, Z = c->z_channels, S = c->image_size;
    int enc_cap = 1 + L * (2 * nrb + 1) + 3 + 2;
    int dec_cap = 2 + 3 + L * (2 * (nrb + 1) + 1) + 1;
    k->enc.ops = xcalloc((size_t)enc_cap, sizeof(KlOp));
    k->dec.ops = xcalloc((size_t)dec_cap, sizeof(KlOp));

    // encoder
    KlHalf *e = &k->enc;
    KlOp *op = conv_op(e, enc_cap, c->in_channels, c->ch, S, 3);
    op->conv = params_add_conv(t, "encoder.conv_in", c->in_channels, c->ch, 3, 0);
    int ch = c->ch, res = S;
    for (int l = 0; l < L; l++) {
        keyf(p, "encoder.down.%d", l);
        ch = add_level(e, enc_cap, t, p, nrb, ch, c->ch * c->ch_mult[l], res, has_attn(c, res), st);
        if (l != L - 1) {
            op = op_new(e, enc_cap, KOP_DOWN, ch, res, res);
            res /= 2;
            op->OH = op->OW = res;
            keyf(p, "encoder.down.%d.downsample.conv", l);
            op->conv = params_add_conv(t, p, ch, ch, 3, 0);
        }
    }
    add_mid(e, enc_cap, t, "encoder", ch, res, st);
    head_op(e, enc_cap, t, "encoder", ch, 2 * Z, res, c->groups);
    KlOp *quant = conv_op(e, enc_cap, 2 * Z, 2 * Z, res, 1);
    k->enc_params = t->total; // + quant_conv, added below

    // decoder: post_quant_conv's and quant_conv's parameters come last
    KlHalf *d = &k->dec;
    KlOp *post = conv_op(d, dec_cap, Z, Z, res, 1);
    ch = c->ch * c->ch_mult[L - 1];
    op = conv_op(d, dec_cap, Z, ch, res, 3);
    op->conv = params_add_conv(t, "decoder.conv_in", Z, ch, 3, 0);
    add_mid(d, dec_cap, t, "decoder", ch, res, st);
    // up.<l> runs from l = L-1 down to 0, but the state_dict lists l = 0
    // first: create the ops in run order, add their parameters afterwards.
    KlOp *blocks[KL_MAX_LEVELS][KL_MAX_RES_BLOCKS + 1], *attns[KL_MAX_LEVELS][KL_MAX_RES_BLOCKS + 1];
    KlOp *ups[KL_MAX_LEVELS];
    int level_res[KL_MAX_LEVELS];
    for (int l = L - 1; l >= 0; l--) {
        int cout = c->ch * c->ch_mult[l], attn = has_attn(c, res);
        level_res[l] = res;
        for (int j = 0; j < nrb + 1; j++) {
            blocks[l][j] = op_new(d, dec_cap, KOP_RES, ch, res, res);
            blocks[l][j]->OC = cout;
            ch = cout;
            attns[l][j] = attn ? op_new(d, dec_cap, KOP_ATTN, ch, res, res) : NULL;
        }
        ups[l] = NULL;
        if (l != 0) {
            ups[l] = op_new(d, dec_cap, KOP_UP, ch, res, res);
            res *= 2;
            ups[l]->OH = ups[l]->OW = res;
        }
    }
    for (int l = 0; l < L; l++) {
        int r = level_res[l];
        for (int j = 0; j < nrb + 1; j++) {
            KlOp *b = blocks[l][j];
            keyf(p, "decoder.up.%d.block.%d", l, j);
            resblock_params_style(&b->res, t, p, b->C, b->OC, r, r, 0, st);
        }
        for (int j = 0; attns[l][0] && j < nrb + 1; j++) {
            keyf(p, "decoder.up.%d.attn.%d", l, j);
            attnblock_params_style(&attns[l][j]->attn, t, p, attns[l][j]->C, r, r, 1, st);
        }
        if (ups[l]) {
            keyf(p, "decoder.up.%d.upsample.conv", l);
            ups[l]->conv = params_add_conv(t, p, ups[l]->C, ups[l]->C, 3, 0);
        }
    }
    CHECK(res == S && ch == c->ch * c->ch_mult[0]);
    op = head_op(d, dec_cap, t, "decoder", ch, c->in_channels, S, c->groups);
    k->last_w = op->conv;
    k->last_w_size = conv_wsize(ch, c->in_channels, 3);
    quant->conv = params_add_conv(t, "quant_conv", 2 * Z, 2 * Z, 1, 0);
    post->conv = params_add_conv(t, "post_quant_conv", Z, Z, 1, 0);
    // encoder + quant_conv: the spec's encoder count
    k->enc_params += conv_wsize(2 * Z, 2 * Z, 1) + (size_t)(2 * Z);
}

// Carves one op's saved tensors (the blocks' activations; mid, mean, rstd)
// from c and grows *work to what its forward (and, with `backward`, its
// backward) needs.
static void op_carve(KlOp *op, Carver *c, int B, int backward, size_t *work) {
    size_t in_n = (size_t)B * op->C * op->H * op->W;
    size_t s = 0, tmp = 0; // conv scratch, mid (a gradient temporary in the backward)
    switch (op->kind) {
    case KOP_CONV:
        s = conv2d_scratch_floats(B, op->C, op->H, op->W, op->OC, op->k, 1, op->k / 2);
        break;
    case KOP_RES: {
        float *p = carve(c, resblock_acts_floats(&op->res, B));
        if (p) resblock_carve(&op->res, p, B);
        *work = max_sz(*work, resblock_work_floats(&op->res, B));
        break;
    }
    case KOP_ATTN: {
        float *p = carve(c, attnblock_acts_floats(&op->attn, B));
        if (p) attnblock_carve(&op->attn, p, B);
        *work = max_sz(*work, attnblock_work_floats(&op->attn, B));
        break;
    }
    case KOP_DOWN:
        tmp = (size_t)B * op->C * (op->H + 1) * (op->W + 1);
        op->mid = carve(c, tmp);
        s = conv2d_scratch_floats(B, op->C, op->H + 1, op->W + 1, op->OC, 3, 2, 0);
        break;
    case KOP_UP:
        tmp = 4 * in_n;
        op->mid = carve(c, tmp);
        s = conv2d_scratch_floats(B, op->C, 2 * op->H, 2 * op->W, op->OC, 3, 1, 1);
        break;
    case KOP_HEAD:
        tmp = in_n;
        op->mid = carve(c, tmp);
        op->mean = carve(c, (size_t)B * op->g);
        op->rstd = carve(c, (size_t)B * op->g);
        s = conv2d_scratch_floats(B, op->C, op->H, op->W, op->OC, 3, 1, 1);
        if (backward) s = max_sz(s, groupnorm_silu_scratch_floats(B, op->C, op->H * op->W));
        break;
    }
    *work = max_sz(*work, (backward ? tmp : 0) + s);
}

static size_t out_floats(const KlOp *op, int B) {
    return (size_t)B * op->OC * op->OH * op->OW;
}

// Lays out one half for training, B items: stream tensors and every op's
// saved tensors in `acts`, stream gradients in `grads`; grows *work to what
// its layers need. With NULL bases it only counts.
static void half_carve(KlHalf *h, Carver *acts, Carver *grads, int B, size_t *work) {
    KlOp *first = &h->ops[0];
    h->x_in = carve(acts, (size_t)B * first->C * first->H * first->W);
    float *cur = h->x_in, *dcur = NULL;
    for (int i = 0; i < h->n_ops; i++) {
        KlOp *op = &h->ops[i];
        op->in = cur, op->din = dcur;
        op_carve(op, acts, B, 1, work);
        cur = op->out = carve(acts, out_floats(op, B));
        dcur = op->dout = carve(grads, out_floats(op, B));
    }
}

// Lays out one half for inference, B items: the stream tensors alternate
// between stream[0] and stream[1] (no op writes its own input) and every
// op's saved tensors start at `saved`, overwritten by the next op. Grows
// *stream_n, *saved_n and *work to the largest stream tensor, op and
// scratch; with NULL bases it only counts. The first op's input is the
// caller's.
static void half_carve_infer(KlHalf *h, float *const stream[2], float *saved, int B,
                             size_t *stream_n, size_t *saved_n, size_t *work) {
    h->x_in = NULL;
    float *cur = NULL;
    for (int i = 0; i < h->n_ops; i++) {
        KlOp *op = &h->ops[i];
        Carver c = {saved, 0};
        op->in = cur, op->din = op->dout = NULL;
        op_carve(op, &c, B, 0, work);
        *saved_n = max_sz(*saved_n, c.used);
        *stream_n = max_sz(*stream_n, out_floats(op, B));
        cur = op->out = stream[i & 1];
    }
}

// The training layout for max_batch items, encoder gradients | decoder
// gradients | encoder acts | decoder acts: with base NULL it only counts
// (acts_floats, train_work_floats), else it carves the ops into base.
static void train_layout(KlVae *k, float *base) {
    Carver ea = {NULL, 0}, eg = {NULL, 0}, da = {NULL, 0}, dg = {NULL, 0};
    size_t work = 0;
    half_carve(&k->enc, &ea, &eg, k->max_batch, &work);
    half_carve(&k->dec, &da, &dg, k->max_batch, &work);
    k->acts_floats = eg.used + dg.used + ea.used + da.used;
    k->train_work_floats = work;
    if (!base) return;
    k->enc.dstream = base;
    k->dec.dstream = base + eg.used;
    Carver eg2 = {base, 0}, dg2 = {base + eg.used, 0};
    Carver ea2 = {base + eg.used + dg.used, 0}, da2 = {base + eg.used + dg.used + ea.used, 0};
    half_carve(&k->enc, &ea2, &eg2, k->max_batch, &work);
    half_carve(&k->dec, &da2, &dg2, k->max_batch, &work);
    CHECK(eg2.used == eg.used && dg2.used == dg.used && ea2.used == ea.used &&
          da2.used == da.used && work == k->train_work_floats);
}

// The inference layout for max_batch items, both halves sharing the stream
// buffers | the saved region: with base NULL it only counts (infer_floats;
// work_floats grows to inference's scratch), else it carves the inference
// ops into base.
static void infer_layout(KlVae *k, float *base) {
    size_t stream_n = 0, saved_n = 0, work = 0;
    float *none[2] = {NULL, NULL};
    half_carve_infer(&k->ienc, none, NULL, k->max_batch, &stream_n, &saved_n, &work);
    half_carve_infer(&k->idec, none, NULL, k->max_batch, &stream_n, &saved_n, &work);
    k->infer_floats = 2 * stream_n + saved_n;
    CHECK(work <= k->train_work_floats);
    k->work_floats = max_sz(k->work_floats, work);
    if (!base) return;
    float *stream[2] = {base, base + stream_n};
    half_carve_infer(&k->ienc, stream, base + 2 * stream_n, k->max_batch, &stream_n, &saved_n,
                     &work);
    half_carve_infer(&k->idec, stream, base + 2 * stream_n, k->max_batch, &stream_n, &saved_n,
                     &work);
}

// An inference copy of a half's ops (the blocks' parameter offsets included),
// to be carved by half_carve_infer.
static void half_copy(KlHalf *dst, const KlHalf *src) {
    memset(dst, 0, sizeof *dst);
    dst->n_ops = src->n_ops;
    dst->ops = xmalloc((size_t)src->n_ops * sizeof(KlOp));
    memcpy(dst->ops, src->ops, (size_t)src->n_ops * sizeof(KlOp));
}

void kl_init(KlVae *k, const KlConfig *cfg, int max_batch) {
    CHECK(max_batch >= 1);
    CHECK(kl_config_check(cfg, "kl_init") == 0);
    memset(k, 0, sizeof *k);
    k->cfg = *cfg;
    k->max_batch = max_batch;
    params_init(&k->table);
    kl_build(k);
    k->params = xmalloc_aligned(k->table.total * sizeof(float));
    k->grads = xmalloc_aligned(k->table.total * sizeof(float));
    memset(k->grads, 0, k->table.total * sizeof(float));
    half_copy(&k->ienc, &k->enc);
    half_copy(&k->idec, &k->dec);

    train_layout(k, NULL); // counts: kl_train_init carves them
    infer_layout(k, NULL);
    k->infer = xmalloc_aligned(k->infer_floats * sizeof(float));
    infer_layout(k, k->infer);
    k->work = xmalloc_aligned(k->work_floats * sizeof(float));
}

// The training activations and scratch: kl_train_init, or else the first
// training forward.
void kl_train_init(KlVae *k) {
    if (k->acts) return;
    k->acts = xmalloc_aligned(k->acts_floats * sizeof(float));
    memset(k->acts, 0, k->acts_floats * sizeof(float));
    train_layout(k, k->acts);
    free(k->work);
    k->work_floats = k->train_work_floats;
    k->work = xmalloc_aligned(k->work_floats * sizeof(float));
    // inference moves into the training activations: a trained model's
    // held-out evaluation then costs no memory beyond training's
    CHECK(k->infer_floats <= k->acts_floats);
    free(k->infer);
    k->infer = k->acts;
    infer_layout(k, k->infer);
}

void kl_init_values(KlVae *k, Rng *rng) { params_init_values(&k->table, k->params, rng); }

void kl_free(KlVae *k) {
    params_free(&k->table);
    free(k->params);
    free(k->grads);
    if (k->infer != k->acts) free(k->infer);
    free(k->acts);
    free(k->work);
    free(k->enc.ops);
    free(k->dec.ops);
    free(k->ienc.ops);
    free(k->idec.ops);
    memset(k, 0, sizeof *k);
}

// ---------------------------------------------------------------------------
// running a half

// Downsample's padding: in (B, C, H, W) -> out (B, C, H+1, W+1), the new
// last row and column zero.
static void pad_rb_forward(float *out, const float *in, int B, int C, int H, int W) {
#pragma omp parallel for schedule(static)
    for (long bc = 0; bc < (long)B * C; bc++) {
        const float *x = in + bc * H * W;
        float *o = out + bc * (H + 1) * (W + 1);
        for (int y = 0; y < H; y++) {
            memcpy(o + (size_t)y * (W + 1), x + (size_t)y * W, (size_t)W * sizeof *x);
            o[(size_t)y * (W + 1) + W] = 0.0f;
        }
        memset(o + (size_t)H * (W + 1), 0, (size_t)(W + 1) * sizeof *o);
    }
}

// din (B, C, H, W) += dout (B, C, H+1, W+1) without its last row and column.
static void pad_rb_backward(float *din, const float *dout, int B, int C, int H, int W) {
#pragma omp parallel for schedule(static)
    for (long bc = 0; bc < (long)B * C; bc++) {
        const float *d = dout + bc * (H + 1) * (W + 1);
        float *o = din + bc * H * W;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) o[(size_t)y * W + x] += d[(size_t)y * (W + 1) + x];
    }
}

// Runs a half on its x_in; the last op writes `out` (B, OC, OH, OW).
static void half_forward(KlHalf *h, float *out, const float *P, int B, float *work) {
    for (int i = 0; i < h->n_ops; i++) {
        KlOp *op = &h->ops[i];
        float *o = i == h->n_ops - 1 ? out : op->out;
        const float *w = P + op->conv;
        switch (op->kind) {
        case KOP_CONV:
            conv2d_forward(o, op->in, w, w + conv_wsize(op->C, op->OC, op->k), B, op->C, op->H,
                           op->W, op->OC, op->k, 1, op->k / 2, work);
            break;
        case KOP_RES:
            resblock_forward(&op->res, o, op->in, NULL, P, B, work);
            break;
        case KOP_ATTN:
            attnblock_forward(&op->attn, o, op->in, P, B, work);
            break;
        case KOP_DOWN:
            pad_rb_forward(op->mid, op->in, B, op->C, op->H, op->W);
            conv2d_forward(o, op->mid, w, w + conv_wsize(op->C, op->OC, 3), B, op->C, op->H + 1,
                           op->W + 1, op->OC, 3, 2, 0, work);
            break;
        case KOP_UP:
            upsample2x_forward(op->mid, op->in, B, op->C, op->H, op->W);
            conv2d_forward(o, op->mid, w, w + conv_wsize(op->C, op->OC, 3), B, op->C, 2 * op->H,
                           2 * op->W, op->OC, 3, 1, 1, work);
            break;
        case KOP_HEAD:
            groupnorm_silu_forward_eps(op->mid, op->mean, op->rstd, op->in, P + op->norm,
                                       P + op->norm + op->C, B, op->C, op->H * op->W, op->g,
                                       KL_GN_EPS);
            conv2d_forward(o, op->mid, w, w + conv_wsize(op->C, op->OC, 3), B, op->C, op->H,
                           op->W, op->OC, 3, 1, 1, work);
            break;
        }
    }
    h->B = B;
}

// dout (B, OC, OH, OW) for the last forward; accumulates into G and into
// din (the first op's input gradient) unless NULL.
static void half_backward(KlHalf *h, float *din, const float *dout, const float *P, float *G,
                          float *work) {
    int B = h->B;
    CHECK(B >= 1);
    // The stream gradients lead the half's gradient buffers; the last op's
    // (at their end) is the caller's dout, never accumulated into.
    const KlOp *last = &h->ops[h->n_ops - 1];
    memset(h->dstream, 0, (size_t)(last->dout - h->dstream) * sizeof(float));
    for (int i = h->n_ops - 1; i >= 0; i--) {
        KlOp *op = &h->ops[i];
        const float *d = i == h->n_ops - 1 ? dout : op->dout;
        float *dx = i == 0 ? din : op->din;
        const float *w = P + op->conv;
        float *gw = G + op->conv, *tmp = work;
        size_t ws = conv_wsize(op->C, op->OC, op->kind == KOP_CONV ? op->k : 3);
        switch (op->kind) {
        case KOP_CONV:
            conv2d_backward(dx, gw, gw + ws, d, op->in, w, B, op->C, op->H, op->W, op->OC,
                            op->k, 1, op->k / 2, work);
            break;
        case KOP_RES:
            CHECK(dx);
            resblock_backward(&op->res, dx, NULL, G, d, op->in, NULL, P, B, work);
            break;
        case KOP_ATTN:
            CHECK(dx);
            attnblock_backward(&op->attn, dx, G, d, op->in, P, B, work);
            break;
        case KOP_DOWN: { // tmp: d padded input
            float *scratch = work + (size_t)B * op->C * (op->H + 1) * (op->W + 1);
            conv2d_backward_set(tmp, gw, gw + ws, d, op->mid, w, B, op->C, op->H + 1, op->W + 1,
                                op->OC, 3, 2, 0, scratch);
            pad_rb_backward(dx, tmp, B, op->C, op->H, op->W);
            break;
        }
        case KOP_UP: { // tmp: d upsampled input
            float *scratch = work + 4 * (size_t)B * op->C * op->H * op->W;
            conv2d_backward_set(tmp, gw, gw + ws, d, op->mid, w, B, op->C, 2 * op->H, 2 * op->W,
                                op->OC, 3, 1, 1, scratch);
            upsample2x_backward(dx, tmp, B, op->C, op->H, op->W);
            break;
        }
        case KOP_HEAD: { // tmp: d SiLU(GN(input))
            float *scratch = work + (size_t)B * op->C * op->H * op->W;
            conv2d_backward_set(tmp, gw, gw + ws, d, op->mid, w, B, op->C, op->H, op->W, op->OC,
                                3, 1, 1, scratch);
            groupnorm_silu_backward(dx, G + op->norm, G + op->norm + op->C, tmp, op->in,
                                    op->mean, op->rstd, P + op->norm, P + op->norm + op->C, B,
                                    op->C, op->H * op->W, op->g, scratch);
            break;
        }
        }
    }
    h->B = 0;
}

// ---------------------------------------------------------------------------
// the API

// moments (B, 2Z, h, w) -> mean, logvar (B, Z, h, w), logvar clamped.
static void moments_split(float *mean, float *logvar, const float *moments, int B, size_t zn) {
    for (int b = 0; b < B; b++) {
        const float *m = moments + (size_t)b * 2 * zn;
        memcpy(mean + (size_t)b * zn, m, zn * sizeof *m);
        float *lv = logvar + (size_t)b * zn;
        for (size_t i = 0; i < zn; i++) {
            float v = m[zn + i];
            lv[i] = v < LOGVAR_MIN ? LOGVAR_MIN : v > LOGVAR_MAX ? LOGVAR_MAX : v;
        }
    }
}

// Encodes x on half e (training or inference) into its last op's buffer.
static void encode_half(KlVae *k, KlHalf *e, float *mean, float *logvar, int B) {
    KlOp *last = &e->ops[e->n_ops - 1];
    size_t zn = (size_t)k->cfg.z_channels * last->OH * last->OW;
    half_forward(e, last->out, k->params, B, k->work); // moments (B, 2Z, h, w)
    moments_split(mean, logvar, last->out, B, zn);
}

void kl_encode(KlVae *k, float *mean, float *logvar, const float *x, int B) {
    CHECK(B >= 1 && B <= k->max_batch);
    k->ienc.ops[0].in = x;
    encode_half(k, &k->ienc, mean, logvar, B);
}

void kl_decode(KlVae *k, float *xhat, const float *z, int B) {
    CHECK(B >= 1 && B <= k->max_batch);
    k->idec.ops[0].in = z;
    half_forward(&k->idec, xhat, k->params, B, k->work);
}

void kl_encode_forward(KlVae *k, float *mean, float *logvar, const float *x, int B) {
    CHECK(B >= 1 && B <= k->max_batch);
    kl_train_init(k);
    const KlConfig *c = &k->cfg;
    memcpy(k->enc.x_in, x, (size_t)B * c->in_channels * c->image_size * c->image_size * sizeof *x);
    encode_half(k, &k->enc, mean, logvar, B);
}

void kl_encode_backward(KlVae *k, float *dx, const float *dmean, const float *dlogvar) {
    KlHalf *e = &k->enc;
    KlOp *last = &e->ops[e->n_ops - 1];
    int B = e->B;
    CHECK(B >= 1);
    size_t zn = (size_t)k->cfg.z_channels * last->OH * last->OW;
    // d moments, in the last op's own gradient buffer (half_backward leaves it)
    float *dm = last->dout;
    for (int b = 0; b < B; b++) {
        const float *m = last->out + (size_t)b * 2 * zn;
        float *d = dm + (size_t)b * 2 * zn;
        memcpy(d, dmean + (size_t)b * zn, zn * sizeof *d);
        const float *dl = dlogvar + (size_t)b * zn;
        for (size_t i = 0; i < zn; i++) {
            float v = m[zn + i];
            d[zn + i] = v >= LOGVAR_MIN && v <= LOGVAR_MAX ? dl[i] : 0.0f;
        }
    }
    half_backward(e, dx, dm, k->params, k->grads, k->work);
}

void kl_decode_forward(KlVae *k, float *xhat, const float *z, int B) {
    CHECK(B >= 1 && B <= k->max_batch);
    kl_train_init(k);
    KlHalf *d = &k->dec;
    const KlOp *first = &d->ops[0];
    memcpy(d->x_in, z, (size_t)B * first->C * first->H * first->W * sizeof *z);
    half_forward(d, xhat, k->params, B, k->work);
}

void kl_decode_backward(KlVae *k, float *dz, const float *dxhat) {
    half_backward(&k->dec, dz, dxhat, k->params, k->grads, k->work);
}

void kl_last_layer_grad(KlVae *k, float *dw, const float *dxhat) {
    const KlHalf *d = &k->dec;
    const KlOp *op = &d->ops[d->n_ops - 1];
    CHECK(d->B >= 1 && op->kind == KOP_HEAD && op->conv == k->last_w);
    memset(dw, 0, k->last_w_size * sizeof *dw);
    conv2d_backward(NULL, dw, NULL, dxhat, op->mid, k->params + op->conv, d->B, op->C, op->H,
                    op->W, op->OC, 3, 1, 1, k->work);
}
