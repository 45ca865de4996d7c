// unet.c: the UNet as a flat list of ops (ResBlock, Attn, Downsample,
// Upsample, Concat) run forward in order and backward in reverse. Tensors
// between ops ("stream" tensors) have gradient buffers of their own, so a skip
// tensor gathers its gradient from both of its consumers (the next down-path
// op and the up-path concat) before its producer's backward runs.
#include "unet.h"

#include <string.h>

#include "common.h"
#include "layers.h"
#include "rng.h"

// ---------------------------------------------------------------------------
// small helpers

static void zero(float *x, size_t n) { memset(x, 0, n * sizeof *x); }

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

static size_t conv_wsize(int cin, int cout, int k) { return (size_t)cout * cin * k * k; }

// ---------------------------------------------------------------------------
// UNetConfig

void unet_config_default(UNetConfig *c) {
    memset(c, 0, sizeof *c);
    c->latent_channels = 4;
    c->latent_size = 8;
    c->base_channels = 64;
    c->num_levels = 2;
    c->channel_mult[0] = 1;
    c->channel_mult[1] = 2;
    c->num_res_blocks = 2;
    c->num_attn = 1;
    c->attn_resolutions[0] = 4;
    c->num_heads = 1;
    c->temb_dim = 256;
    c->time_dim = 64;
}

void unet_config_levels(UNetConfig *c, int h) {
    int L = 0, side = h;
    c->latent_size = h;
    c->channel_mult[L++] = 1;
    while (side > 4 && side % 2 == 0 && L < UNET_MAX_LEVELS) {
        side /= 2;
        c->channel_mult[L++] = 2;
    }
    c->num_levels = L;
    c->num_attn = 1;
    c->attn_resolutions[0] = side;
}

int unet_config_check(const UNetConfig *c, const char *what) {
    if (c->latent_channels < 1 || c->latent_size < 1 || c->base_channels < 1)
        return errorf("%s: UNet latent channels, latent size and base channels must be positive", what);
    if (c->num_levels < 1 || c->num_levels > UNET_MAX_LEVELS)
        return errorf("%s: UNet needs 1 to %d channel multipliers, got %d", what,
                      UNET_MAX_LEVELS, c->num_levels);
    if (c->latent_size % (1 << (c->num_levels - 1)) != 0)
        return errorf("%s: latent size %d is not divisible by 2^%d (one halving per level)",
                      what, c->latent_size, c->num_levels - 1);
    if (c->num_res_blocks < 1 || c->num_res_blocks > UNET_MAX_RES_BLOCKS)
        return errorf("%s: UNet takes 1 to %d ResBlocks a level, got %d", what,
                      UNET_MAX_RES_BLOCKS, c->num_res_blocks);
    if (c->num_attn < 0 || c->num_attn > UNET_MAX_LEVELS)
        return errorf("%s: UNet takes 0 to %d attention resolutions", what, UNET_MAX_LEVELS);
    if (c->num_heads < 1) return errorf("%s: UNet needs at least one attention head", what);
    for (int a = 0; a < c->num_attn; a++) {
        int reached = 0;
        for (int l = 0; l < c->num_levels; l++)
            reached |= (c->latent_size >> l) == c->attn_resolutions[a];
        if (!reached)
            return errorf("%s: attention resolution %d is not a side the UNet reaches (%d halved "
                          "up to %d times)", what, c->attn_resolutions[a], c->latent_size,
                          c->num_levels - 1);
    }
    for (int l = 0; l < c->num_levels; l++) {
        long ch = (long)c->base_channels * c->channel_mult[l];
        if (c->channel_mult[l] < 1 || ch > 65536)
            return errorf("%s: bad channel multiplier %d", what, c->channel_mult[l]);
        if (ch % c->num_heads != 0)
            return errorf("%s: %ld channels do not split into %d heads", what, ch, c->num_heads);
    }
    if (c->temb_dim < 1 || c->time_dim < 2 || c->time_dim % 2 != 0)
        return errorf("%s: UNet time embedding needs an even time_dim and a positive temb_dim", what);
    if (c->num_classes < 0 || c->num_classes > UNET_MAX_CLASSES)
        return errorf("%s: UNet takes 0 (unconditional) to %d classes, got %d", what,
                      UNET_MAX_CLASSES, c->num_classes);
    if ((long)(c->num_classes + 1) * c->temb_dim > 1L << 28)
        return errorf("%s: a class table of %d x %d floats is implausibly large", what,
                      c->num_classes + 1, c->temb_dim);
    return 0;
}

// ---------------------------------------------------------------------------
// the UNet's blocks

static const BlockStyle unet_style = {
    .groups = 0, .eps = 1e-5, .zero_init = 1, .skip_key = "skip", .proj_key = "proj"};

void resblock_params(ResBlock *r, ParamTable *t, const char *prefix, int cin,
                     int cout, int H, int W, int temb_dim) {
    resblock_params_style(r, t, prefix, cin, cout, H, W, temb_dim, &unet_style);
}

void attnblock_params(AttnBlock *a, ParamTable *t, const char *prefix, int C,
                      int H, int W, int heads) {
    attnblock_params_style(a, t, prefix, C, H, W, heads, &unet_style);
}

// ---------------------------------------------------------------------------
// TimeEmbed

void time_embed_params(TimeEmbed *te, ParamTable *t, const char *prefix,
                       int time_dim, int temb_dim) {
    char name[PARAM_NAME_MAX];
    memset(te, 0, sizeof *te);
    te->time_dim = time_dim, te->temb_dim = temb_dim;
    param_key(name, prefix, "0");
    te->lin1 = params_add_linear(t, name, time_dim, temb_dim);
    param_key(name, prefix, "2");
    te->lin2 = params_add_linear(t, name, temb_dim, temb_dim);
}

void time_embed_add_classes(TimeEmbed *te, ParamTable *t, const char *key, int num_classes) {
    CHECK(num_classes >= 1 && te->num_classes == 0);
    int shape[2] = {num_classes + 1, te->temb_dim};
    te->num_classes = num_classes;
    te->classes = params_add(t, key, 2, shape, 0.0f); // zero here: unet_init_values
}

size_t time_embed_acts_floats(const TimeEmbed *te, int B) {
    return (size_t)B * (te->time_dim + 5 * te->temb_dim);
}

void time_embed_carve(TimeEmbed *te, float *acts, int B) {
    size_t n = (size_t)B * te->temb_dim;
    Carver c = {acts, 0};
    te->emb = carve(&c, (size_t)B * te->time_dim);
    te->h = carve(&c, n);
    te->hact = carve(&c, n);
    te->temb = carve(&c, n);
    te->dh = carve(&c, 2 * n);
    CHECK(c.used == time_embed_acts_floats(te, B));
}

void time_embed_forward(TimeEmbed *te, float *temb_act, const int *t, const int *y,
                        const float *params, int B) {
    const float *P = params;
    int D = te->time_dim, E = te->temb_dim;
    size_t n = (size_t)B * E;
    CHECK((y != NULL) == (te->num_classes > 0));
    timestep_embedding(te->emb, t, B, D);
    linear_forward(te->h, te->emb, P + te->lin1, P + te->lin1 + (size_t)E * D, B, D, E);
    silu_forward(te->hact, te->h, n);
    linear_forward(te->temb, te->hact, P + te->lin2, P + te->lin2 + (size_t)E * E, B, E, E);
    for (int i = 0; y && i < B; i++) { // B x temb_dim adds: not worth threads
        CHECK(y[i] >= 0 && y[i] <= te->num_classes);
        const float *row = P + te->classes + (size_t)y[i] * E;
        float *dst = te->temb + (size_t)i * E;
        for (int j = 0; j < E; j++) dst[j] += row[j];
    }
    silu_forward(temb_act, te->temb, n);
}

void time_embed_backward(const TimeEmbed *te, float *grads, const float *dtemb_act,
                         const int *y, const float *params, int B) {
    const float *P = params;
    float *G = grads;
    int D = te->time_dim, E = te->temb_dim;
    size_t n = (size_t)B * E;
    float *d0 = te->dh, *d1 = te->dh + n;
    CHECK((y != NULL) == (te->num_classes > 0));
    zero(d0, n); // d temb
    silu_backward(d0, dtemb_act, te->temb, n);
    // d temb is also the gradient of each item's class row. Items sharing a
    // label add into one row, in item order: the sum never depends on threads.
    for (int i = 0; y && i < B; i++) {
        float *row = G + te->classes + (size_t)y[i] * E;
        const float *src = d0 + (size_t)i * E;
        for (int j = 0; j < E; j++) row[j] += src[j];
    }
    zero(d1, n); // d hact
    linear_backward(d1, G + te->lin2, G + te->lin2 + (size_t)E * E, d0, te->hact,
                    P + te->lin2, B, E, E);
    zero(d0, n); // d h
    silu_backward(d0, d1, te->h, n);
    linear_backward(NULL, G + te->lin1, G + te->lin1 + (size_t)E * D, d0, te->emb,
                    P + te->lin1, B, D, E);
}

// ---------------------------------------------------------------------------
// the op list

enum { OP_RES, OP_ATTN, OP_DOWN, OP_UP, OP_CONCAT };

// conv_in's output, one per down-path ResBlock, one per Downsample
#define MAX_SKIPS (1 + UNET_MAX_LEVELS * (UNET_MAX_RES_BLOCKS + 1))

struct UNetOp {
    int kind;
    int C, C2, H, W;     // input dims (C2: the concatenated skip's channels)
    int OC, OH, OW;      // output dims
    int push_skip;       // down path: the output is a skip tensor
    ResBlock res;        // OP_RES
    AttnBlock attn;      // OP_ATTN
    size_t conv;         // OP_DOWN, OP_UP: the conv's weight offset
    const float *prep;   // OP_UP: the conv's prepared weights, or NULL
    float *up;           // OP_UP: (B, C, 2H, 2W) nearest-upsampled input
    // stream tensors and their gradients
    float *in, *in2, *out;
    float *din, *din2, *dout;
};

static UNetOp *op_new(UNet *u, int kind, int C, int H, int W) {
    UNetOp *op = &u->ops[u->n_ops++];
    memset(op, 0, sizeof *op);
    op->kind = kind;
    op->C = C, op->H = H, op->W = W;
    op->OC = C, op->OH = H, op->OW = W;
    return op;
}

static int has_attn(const UNetConfig *c, int res) {
    for (int i = 0; i < c->num_attn; i++)
        if (c->attn_resolutions[i] == res) return 1;
    return 0;
}

// Adds the parameters in the mirror's state_dict order (all ResBlocks of a
// level, then its Attns, then its resampling conv) and the ops in run order.
static void unet_build(UNet *u) {
    const UNetConfig *c = &u->cfg;
    ParamTable *t = &u->table;
    char prefix[PARAM_NAME_MAX], name[PARAM_NAME_MAX];
    int L = c->num_levels, nrb = c->num_res_blocks, b = c->base_channels;
    int cap = L * (2 * nrb + 1) + 3 + L * (3 * (nrb + 1) + 1);
    u->ops = xcalloc((size_t)cap, sizeof *u->ops);
    u->n_ops = 0;

    time_embed_params(&u->te, t, "time_embed", c->time_dim, c->temb_dim);
    if (c->num_classes) time_embed_add_classes(&u->te, t, "label_emb.weight", c->num_classes);
    u->conv_in = params_add_conv(t, "conv_in", c->latent_channels, b, 3, 0);

    int ch = b, res = c->latent_size;
    int skip_ch[MAX_SKIPS], nskip = 0;
    skip_ch[nskip++] = ch;
    UNetOp *rops[UNET_MAX_RES_BLOCKS + 1], *aops[UNET_MAX_RES_BLOCKS + 1];
    for (int l = 0; l < L; l++) {
        int cout = b * c->channel_mult[l], attn = has_attn(c, res);
        for (int j = 0; j < nrb; j++) {
            rops[j] = op_new(u, OP_RES, ch, res, res);
            rops[j]->OC = cout;
            ch = cout;
            aops[j] = attn ? op_new(u, OP_ATTN, ch, res, res) : NULL;
            (attn ? aops[j] : rops[j])->push_skip = 1;
            skip_ch[nskip++] = ch;
        }
        for (int j = 0; j < nrb; j++) {
            snprintf(prefix, sizeof prefix, "down.%d.res.%d", l, j);
            resblock_params(&rops[j]->res, t, prefix, rops[j]->C, rops[j]->OC, res, res, c->temb_dim);
        }
        for (int j = 0; attn && j < nrb; j++) {
            snprintf(prefix, sizeof prefix, "down.%d.attn.%d", l, j);
            attnblock_params(&aops[j]->attn, t, prefix, ch, res, res, c->num_heads);
        }
        if (l != L - 1) {
            UNetOp *op = op_new(u, OP_DOWN, ch, res, res);
            res = (res + 1) / 2;
            op->OH = op->OW = res;
            op->push_skip = 1;
            snprintf(name, sizeof name, "down.%d.downsample", l);
            op->conv = params_add_conv(t, name, ch, ch, 3, 0);
            skip_ch[nskip++] = ch;
        }
    }

    UNetOp *op = op_new(u, OP_RES, ch, res, res);
    resblock_params(&op->res, t, "mid.res1", ch, ch, res, res, c->temb_dim);
    op = op_new(u, OP_ATTN, ch, res, res);
    attnblock_params(&op->attn, t, "mid.attn", ch, res, res, c->num_heads);
    op = op_new(u, OP_RES, ch, res, res);
    resblock_params(&op->res, t, "mid.res2", ch, ch, res, res, c->temb_dim);

    for (int l = L - 1, ui = 0; l >= 0; l--, ui++) {
        int cout = b * c->channel_mult[l], attn = has_attn(c, res);
        for (int j = 0; j < nrb + 1; j++) {
            UNetOp *cat = op_new(u, OP_CONCAT, ch, res, res);
            CHECK(nskip > 0);
            cat->C2 = skip_ch[--nskip];
            cat->OC = ch + cat->C2;
            rops[j] = op_new(u, OP_RES, cat->OC, res, res);
            rops[j]->OC = cout;
            ch = cout;
            aops[j] = attn ? op_new(u, OP_ATTN, ch, res, res) : NULL;
        }
        for (int j = 0; j < nrb + 1; j++) {
            snprintf(prefix, sizeof prefix, "up.%d.res.%d", ui, j);
            resblock_params(&rops[j]->res, t, prefix, rops[j]->C, rops[j]->OC, res, res, c->temb_dim);
        }
        for (int j = 0; attn && j < nrb + 1; j++) {
            snprintf(prefix, sizeof prefix, "up.%d.attn.%d", ui, j);
            attnblock_params(&aops[j]->attn, t, prefix, ch, res, res, c->num_heads);
        }
        if (l != 0) {
            op = op_new(u, OP_UP, ch, res, res);
            res *= 2;
            op->OH = op->OW = res;
            snprintf(name, sizeof name, "up.%d.upsample", ui);
            op->conv = params_add_conv(t, name, ch, ch, 3, 0);
        }
    }
    CHECK(nskip == 0 && u->n_ops <= cap);
    CHECK(ch == b * c->channel_mult[0] && res == c->latent_size);
    u->out_norm = params_add_norm(t, "out_norm", ch);
    u->out_conv = params_add_conv(t, "out_conv", ch, c->latent_channels, 3, 1);
}

// Lays out every activation for B items: block tensors and stream tensors in
// `acts`, stream gradients in `grads` (contiguous, so one memset clears them),
// and sizes the shared work buffer. With NULL bases it only counts.
static void unet_carve(UNet *u, Carver *acts, Carver *grads, int B) {
    const UNetConfig *c = &u->cfg;
    int Z = c->latent_channels, S = c->latent_size, b = c->base_channels;
    size_t lat = (size_t)B * Z * S * S;
    int ch = b * c->channel_mult[0]; // channels entering the head
    size_t max_chw = (size_t)b * S * S; // largest tensor handled at UNet level
    size_t conv_scratch = max_sz(conv2d_scratch_floats(B, Z, S, S, b, 3, 1, 1),
                                 conv2d_scratch_floats(B, ch, S, S, Z, 3, 1, 1));
    conv_scratch = max_sz(conv_scratch, groupnorm_silu_scratch_floats(B, ch, S * S));
    size_t block_work = 0;

    u->x_in = carve(acts, lat);
    float *p = carve(acts, time_embed_acts_floats(&u->te, B));
    if (p) time_embed_carve(&u->te, p, B);
    u->temb_act = carve(acts, (size_t)B * c->temb_dim);
    u->dtemb_act = carve(acts, (size_t)B * c->temb_dim);

    // stream: conv_in output s0, then one output per op
    float *cur = u->h0 = carve(acts, (size_t)B * b * S * S);
    float *dcur = u->dh0 = carve(grads, (size_t)B * b * S * S);
    float *stack[MAX_SKIPS], *dstack[MAX_SKIPS];
    int nskip = 0;
    stack[nskip] = cur, dstack[nskip++] = dcur;
    for (int i = 0; i < u->n_ops; i++) {
        UNetOp *op = &u->ops[i];
        op->in = cur, op->din = dcur;
        size_t in_chw = (size_t)op->C * op->H * op->W;
        switch (op->kind) {
        case OP_RES:
            p = carve(acts, resblock_acts_floats(&op->res, B));
            if (p) resblock_carve(&op->res, p, B);
            block_work = max_sz(block_work, resblock_work_floats(&op->res, B));
            break;
        case OP_ATTN:
            p = carve(acts, attnblock_acts_floats(&op->attn, B));
            if (p) attnblock_carve(&op->attn, p, B);
            block_work = max_sz(block_work, attnblock_work_floats(&op->attn, B));
            break;
        case OP_DOWN:
            conv_scratch = max_sz(conv_scratch, conv2d_scratch_floats(B, op->C, op->H, op->W,
                                                                      op->C, 3, 2, 1));
            break;
        case OP_UP:
            op->up = carve(acts, 4 * (size_t)B * in_chw);
            max_chw = max_sz(max_chw, 4 * in_chw);
            conv_scratch = max_sz(conv_scratch, conv2d_scratch_floats(B, op->C, 2 * op->H,
                                                                      2 * op->W, op->C, 3, 1, 1));
            break;
        case OP_CONCAT:
            CHECK(nskip > 0);
            nskip--;
            op->in2 = stack[nskip], op->din2 = dstack[nskip];
            break;
        }
        size_t out_n = (size_t)B * op->OC * op->OH * op->OW;
        cur = op->out = carve(acts, out_n);
        dcur = op->dout = carve(grads, out_n);
        max_chw = max_sz(max_chw, (size_t)op->OC * op->OH * op->OW);
        if (op->push_skip) stack[nskip] = cur, dstack[nskip++] = dcur;
    }
    CHECK(nskip == 0);
    u->hlast = cur, u->dhlast = dcur;
    int G = groupnorm_groups(ch);
    size_t head = (size_t)B * ch * S * S;
    u->head_act = carve(acts, head);
    u->head_mean = carve(acts, (size_t)B * G);
    u->head_rstd = carve(acts, (size_t)B * G);
    // UNet-level work: one (B, max C*H*W) gradient buffer, then the conv /
    // GroupNorm+SiLU scratch.
    u->max_chw = max_chw;
    u->work_floats = max_sz(block_work, (size_t)B * max_chw + conv_scratch);
}

void unet_init(UNet *u, const UNetConfig *cfg, int max_batch) {
    CHECK(max_batch >= 1);
    CHECK(unet_config_check(cfg, "unet_init") == 0);
    memset(u, 0, sizeof *u);
    u->cfg = *cfg;
    u->max_batch = max_batch;
    params_init(&u->table);
    unet_build(u);
    u->params = xmalloc_aligned(u->table.total * sizeof(float));
    u->grads = xmalloc_aligned(u->table.total * sizeof(float));
    zero(u->grads, u->table.total);

    Carver acts = {NULL, 0}, grads = {NULL, 0};
    unet_carve(u, &acts, &grads, max_batch);
    size_t ngrads = u->dstream_floats = grads.used;
    u->acts_floats = grads.used + acts.used;
    u->acts = xmalloc_aligned(u->acts_floats * sizeof(float));
    zero(u->acts, u->acts_floats);
    Carver g2 = {u->acts, 0}, a2 = {u->acts + ngrads, 0};
    unet_carve(u, &a2, &g2, max_batch);
    CHECK(g2.used == ngrads && ngrads + a2.used == u->acts_floats);
    u->work = xmalloc_aligned(u->work_floats * sizeof(float));
    u->labels = xmalloc((size_t)max_batch * sizeof *u->labels);
}

void unet_init_values(UNet *u, Rng *rng) {
    params_init_values(&u->table, u->params, rng);
    const TimeEmbed *te = &u->te;
    if (te->num_classes)
        rng_normal_fill(rng, u->params + te->classes, (size_t)(te->num_classes + 1) * te->temb_dim);
}

// Walks the convs that can take prepared weights (the ResBlocks' and the
// upsampling ones; conv_in and out_conv, with the latent channels on one
// side, are left to transform their own), and with `apply` transforms them
// into u->prep and points the ops at them, without it clears the pointers.
// Returns the floats they take.
static size_t fix_weights_walk(UNet *u, int apply) {
    size_t off = 0;
    const float *P = u->params;
    for (int i = 0; i < u->n_ops; i++) {
        UNetOp *op = &u->ops[i];
        if (op->kind == OP_RES) {
            ResBlock *r = &op->res;
            size_t n1 = conv2d_prep_floats(r->cin, r->cout, 3, 1, 1);
            size_t n2 = conv2d_prep_floats(r->cout, r->cout, 3, 1, 1);
            if (apply) {
                conv2d_prep(u->prep + off, P + r->conv1, r->cin, r->cout, 3, 1, 1);
                conv2d_prep(u->prep + off + n1, P + r->conv2, r->cout, r->cout, 3, 1, 1);
            }
            r->prep1 = apply && n1 ? u->prep + off : NULL;
            r->prep2 = apply && n2 ? u->prep + off + n1 : NULL;
            off += n1 + n2;
        } else if (op->kind == OP_UP) {
            size_t n = conv2d_prep_floats(op->C, op->C, 3, 1, 1);
            if (apply) conv2d_prep(u->prep + off, P + op->conv, op->C, op->C, 3, 1, 1);
            op->prep = apply && n ? u->prep + off : NULL;
            off += n;
        }
    }
    return off;
}

void unet_fix_weights(UNet *u, int fixed) {
    if (fixed && !u->prep) {
        u->prep_floats = fix_weights_walk(u, 0);
        u->prep = xmalloc_aligned((u->prep_floats ? u->prep_floats : 1) * sizeof(float));
    }
    fix_weights_walk(u, fixed);
}

void unet_free(UNet *u) {
    free(u->prep);
    params_free(&u->table);
    free(u->params);
    free(u->grads);
    free(u->acts);
    free(u->work);
    free(u->labels);
    free(u->ops);
    memset(u, 0, sizeof *u);
}

void unet_forward(UNet *u, float *out, const float *x, const int *t, const int *y, int B) {
    const UNetConfig *c = &u->cfg;
    const float *P = u->params;
    CHECK(B >= 1 && B <= u->max_batch);
    const int K = c->num_classes;
    const int *lab = NULL;
    if (K > 0) {
        for (int i = 0; i < B; i++) u->labels[i] = y ? y[i] : K; // NULL: the null class
        lab = u->labels;
    } else {
        CHECK(y == NULL);
    }
    int Z = c->latent_channels, S = c->latent_size, b = c->base_channels;
    int ch = b * c->channel_mult[0], HW = S * S;
    float *scratch = u->work; // the forward needs no gradient buffers
    u->B = B;
    if (u->x_in != x) memcpy(u->x_in, x, (size_t)B * Z * HW * sizeof *x);
    time_embed_forward(&u->te, u->temb_act, t, lab, P, B);
    conv2d_forward(u->h0, u->x_in, P + u->conv_in, P + u->conv_in + conv_wsize(Z, b, 3),
                   B, Z, S, S, b, 3, 1, 1, scratch);
    for (int i = 0; i < u->n_ops; i++) {
        UNetOp *op = &u->ops[i];
        switch (op->kind) {
        case OP_RES:
            resblock_forward(&op->res, op->out, op->in, u->temb_act, P, B, u->work);
            break;
        case OP_ATTN:
            attnblock_forward(&op->attn, op->out, op->in, P, B, u->work);
            break;
        case OP_DOWN:
            conv2d_forward(op->out, op->in, P + op->conv, P + op->conv + conv_wsize(op->C, op->C, 3),
                           B, op->C, op->H, op->W, op->C, 3, 2, 1, scratch);
            break;
        case OP_UP:
            upsample2x_forward(op->up, op->in, B, op->C, op->H, op->W);
            conv2d_forward_prep(op->out, op->up, P + op->conv, op->prep,
                                P + op->conv + conv_wsize(op->C, op->C, 3), B, op->C,
                                2 * op->H, 2 * op->W, op->C, 3, 1, 1, scratch);
            break;
        case OP_CONCAT:
            concat_channels_forward(op->out, op->in, op->in2, B, op->C, op->C2, op->H * op->W);
            break;
        }
    }
    int G = groupnorm_groups(ch);
    groupnorm_silu_forward(u->head_act, u->head_mean, u->head_rstd, u->hlast, P + u->out_norm,
                           P + u->out_norm + ch, B, ch, HW, G);
    conv2d_forward(out, u->head_act, P + u->out_conv, P + u->out_conv + conv_wsize(ch, Z, 3),
                   B, ch, S, S, Z, 3, 1, 1, scratch);
}

void unet_backward(UNet *u, const float *dout) {
    const UNetConfig *c = &u->cfg;
    const float *P = u->params;
    float *G = u->grads;
    int B = u->B;
    CHECK(B >= 1);
    int Z = c->latent_channels, S = c->latent_size, b = c->base_channels;
    int ch = b * c->channel_mult[0], HW = S * S;
    // UNet-level work: a gradient buffer of the largest tensor, then scratch.
    size_t maxn = (size_t)B * u->max_chw;
    float *w0 = u->work, *scratch = u->work + maxn;

    zero(u->acts, u->dstream_floats); // stream gradients lead the allocation
    zero(u->dtemb_act, (size_t)B * c->temb_dim);

    // head: out_conv <- SiLU <- out_norm
    conv2d_backward_set(w0, G + u->out_conv, G + u->out_conv + conv_wsize(ch, Z, 3), dout,
                    u->head_act, P + u->out_conv, B, ch, S, S, Z, 3, 1, 1, scratch); // w0: d head_act
    groupnorm_silu_backward(u->dhlast, G + u->out_norm, G + u->out_norm + ch, w0, u->hlast,
                            u->head_mean, u->head_rstd, P + u->out_norm,
                            P + u->out_norm + ch, B, ch, HW, groupnorm_groups(ch), scratch);

    for (int i = u->n_ops - 1; i >= 0; i--) {
        const UNetOp *op = &u->ops[i];
        size_t ws = conv_wsize(op->C, op->C, 3);
        switch (op->kind) {
        case OP_RES:
            resblock_backward(&op->res, op->din, u->dtemb_act, G, op->dout, op->in,
                              u->temb_act, P, B, u->work);
            break;
        case OP_ATTN:
            attnblock_backward(&op->attn, op->din, G, op->dout, op->in, P, B, u->work);
            break;
        case OP_DOWN:
            conv2d_backward(op->din, G + op->conv, G + op->conv + ws, op->dout, op->in,
                            P + op->conv, B, op->C, op->H, op->W, op->C, 3, 2, 1, scratch);
            break;
        case OP_UP: {
            // w0: d up (B, C, 2H, 2W)
            conv2d_backward_set(w0, G + op->conv, G + op->conv + ws, op->dout, op->up,
                            P + op->conv, B, op->C, 2 * op->H, 2 * op->W, op->C, 3, 1, 1, scratch);
            upsample2x_backward(op->din, w0, B, op->C, op->H, op->W);
            break;
        }
        case OP_CONCAT:
            concat_channels_backward(op->din, op->din2, op->dout, B, op->C, op->C2,
                                     op->H * op->W);
            break;
        }
    }
    conv2d_backward(NULL, G + u->conv_in, G + u->conv_in + conv_wsize(Z, b, 3), u->dh0,
                    u->x_in, P + u->conv_in, B, Z, S, S, b, 3, 1, 1, scratch);
    time_embed_backward(&u->te, G, u->dtemb_act, c->num_classes ? u->labels : NULL, P, B);
}
