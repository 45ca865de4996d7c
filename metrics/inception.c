// inception.c: the FID Inception-v3 of inception.h.
//
// Every BasicConv2d (conv without bias, BatchNorm, ReLU) becomes one conv
// with a bias: BatchNorm with running statistics is affine per channel, so
// w' = w g / sqrt(v + eps) and b' = beta - m g / sqrt(v + eps) (computed in
// double at load). The ReLU is applied as each conv's output is stored.
//
// Every image is computed on its own: no GEMM ever spans images, so the
// shapes of the GEMMs, and with them the rounding, do not depend on the
// batch (Winograd over a chunk of images gave results that changed in the
// last bits with the chunk's size: OpenBLAS rounds by the GEMM's shape). Convs run two ways:
//  - 3x3 stride-1 pad-1 ones with 16+ channels a side on images of 32x32 or
//    more through conv2d_forward (Winograd, layers.h), one image per call,
//    the threads splitting its transforms and GEMMs;
//  - all others (1x1, strided 3x3, 5x5, the rectangular 1x7, 7x1, 1x3, 3x1
//    that conv2d_forward, square kernels only, does not take, and the 3x3
//    ones on 8x8) here: one GEMM per task, a task being a band of about
//    GEMM_COLS output pixels of one image (a 1x1 conv's column matrix is the
//    image itself). Tasks run across threads, each GEMM single-threaded
//    (see layers.c: OpenBLAS's own threading rounds differently at
//    different thread counts).
// A block's branches write straight into their channel slices of the
// block's output, so the concatenations cost no copies.
//
// Loading reads the file twice: pass 0 reads only shapes (checks them
// against the graph, lays out the parameter table and sizes the
// activations), pass 1 reads the values into place and folds them.
#include "inception.h"

#include <cblas.h>
#include <hdf5.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "h5attr.h"
#include "layers.h"
#include "params.h"
#include "pool.h"

#define BN_EPS 1e-3
#define MIN_BATCH 8       // images per pass at least (more: one per thread)
#define GEMM_COLS 512     // output pixels (GEMM columns) a task aims for
#define MAX_SLOTS 16      // most threads the GEMM convs use: one scratch slot each
#define MAX_CHANNELS 8192 // a file's widths beyond this are not an Inception (4x the real one)
#define MAX_LOGITS (1 << 20)
#define MAX_CONVS 10 // per block
// Winograd's tiles are 4x4 outputs: an 8x8 image is 4 of them, 4 columns
// for each of its 36 GEMMs, where the im2col GEMM has 64.
#define WINO_MIN_PIXELS 1024

// ---------------------------------------------------------------- the graph

enum { FROM_INPUT = -1, FROM_POOL = -2 }; // ConvSpec.from besides a conv index
enum { POOL_NONE, POOL_AVG, POOL_MAX };

typedef struct {
    const char *name; // state_dict prefix, inside its block
    int from;         // conv index it reads, FROM_INPUT or FROM_POOL (the pooled block input)
    int out;          // 1: writes the next channel slice of the block's output
    int kh, kw, s, ph, pw;
} ConvSpec;

// A block's convs in state_dict order, which is also an order they can run
// in; a conv that is not an output writes a temporary.
typedef struct {
    int n;
    int pool;     // how FROM_POOL pools the input (3x3, stride 1, pad 1)
    int pass_max; // reduction blocks: the input max-pooled 3x3 stride 2 is the last slice
    ConvSpec conv[MAX_CONVS];
} BlockSpec;

#define C1 1, 1, 1, 0, 0 // 1x1
#define C3 3, 3, 1, 1, 1 // 3x3 "same"
#define C3S2 3, 3, 2, 0, 0
#define C1x7 1, 7, 1, 0, 3
#define C7x1 7, 1, 1, 3, 0
#define C1x3 1, 3, 1, 0, 1
#define C3x1 3, 1, 1, 1, 0

// FIDInceptionA: Mixed_5b, 5c, 5d
static const BlockSpec SPEC_A = {7, POOL_AVG, 0, {
    {"branch1x1", FROM_INPUT, 1, C1},
    {"branch5x5_1", FROM_INPUT, 0, C1},
    {"branch5x5_2", 1, 1, 5, 5, 1, 2, 2},
    {"branch3x3dbl_1", FROM_INPUT, 0, C1},
    {"branch3x3dbl_2", 3, 0, C3},
    {"branch3x3dbl_3", 4, 1, C3},
    {"branch_pool", FROM_POOL, 1, C1}}};
// InceptionB: Mixed_6a
static const BlockSpec SPEC_B = {4, POOL_NONE, 1, {
    {"branch3x3", FROM_INPUT, 1, C3S2},
    {"branch3x3dbl_1", FROM_INPUT, 0, C1},
    {"branch3x3dbl_2", 1, 0, C3},
    {"branch3x3dbl_3", 2, 1, C3S2}}};
// FIDInceptionC: Mixed_6b .. 6e
static const BlockSpec SPEC_C = {10, POOL_AVG, 0, {
    {"branch1x1", FROM_INPUT, 1, C1},
    {"branch7x7_1", FROM_INPUT, 0, C1},
    {"branch7x7_2", 1, 0, C1x7},
    {"branch7x7_3", 2, 1, C7x1},
    {"branch7x7dbl_1", FROM_INPUT, 0, C1},
    {"branch7x7dbl_2", 4, 0, C7x1},
    {"branch7x7dbl_3", 5, 0, C1x7},
    {"branch7x7dbl_4", 6, 0, C7x1},
    {"branch7x7dbl_5", 7, 1, C1x7},
    {"branch_pool", FROM_POOL, 1, C1}}};
// InceptionD: Mixed_7a
static const BlockSpec SPEC_D = {6, POOL_NONE, 1, {
    {"branch3x3_1", FROM_INPUT, 0, C1},
    {"branch3x3_2", 0, 1, C3S2},
    {"branch7x7x3_1", FROM_INPUT, 0, C1},
    {"branch7x7x3_2", 2, 0, C1x7},
    {"branch7x7x3_3", 3, 0, C7x1},
    {"branch7x7x3_4", 4, 1, C3S2}}};
// FIDInceptionE_1 (Mixed_7b, average pool) and _2 (Mixed_7c, max pool)
#define SPEC_E_CONVS {                      \
    {"branch1x1", FROM_INPUT, 1, C1},       \
    {"branch3x3_1", FROM_INPUT, 0, C1},     \
    {"branch3x3_2a", 1, 1, C1x3},           \
    {"branch3x3_2b", 1, 1, C3x1},           \
    {"branch3x3dbl_1", FROM_INPUT, 0, C1},  \
    {"branch3x3dbl_2", 4, 0, C3},           \
    {"branch3x3dbl_3a", 5, 1, C1x3},        \
    {"branch3x3dbl_3b", 5, 1, C3x1},        \
    {"branch_pool", FROM_POOL, 1, C1}}
static const BlockSpec SPEC_E1 = {9, POOL_AVG, 0, SPEC_E_CONVS};
static const BlockSpec SPEC_E2 = {9, POOL_MAX, 0, SPEC_E_CONVS};

#define N_STEM 5
static const ConvSpec STEM[N_STEM] = {
    {"Conv2d_1a_3x3", FROM_INPUT, 0, C3S2},
    {"Conv2d_2a_3x3", FROM_INPUT, 0, 3, 3, 1, 0, 0},
    {"Conv2d_2b_3x3", FROM_INPUT, 0, C3},
    {"Conv2d_3b_1x1", FROM_INPUT, 0, C1},
    {"Conv2d_4a_3x3", FROM_INPUT, 0, 3, 3, 1, 0, 0}};

#define N_BLOCKS 11
static const struct {
    const char *name;
    const BlockSpec *spec;
} BLOCKS[N_BLOCKS] = {
    {"Mixed_5b", &SPEC_A}, {"Mixed_5c", &SPEC_A}, {"Mixed_5d", &SPEC_A},
    {"Mixed_6a", &SPEC_B}, {"Mixed_6b", &SPEC_C}, {"Mixed_6c", &SPEC_C},
    {"Mixed_6d", &SPEC_C}, {"Mixed_6e", &SPEC_C}, {"Mixed_7a", &SPEC_D},
    {"Mixed_7b", &SPEC_E1}, {"Mixed_7c", &SPEC_E2}};

// ------------------------------------------------------------- the network

typedef struct {
    int cin, cout, kh, kw, s, ph, pw;
    int H, W, OH, OW; // input and output sides
    int wino;         // runs through conv2d_forward (Winograd)
    size_t ow, ob;    // offsets of the folded weight and bias in the parameters
    const float *w;   // (cout, cin, kh, kw)
    const float *b;   // (cout)
} Conv;

typedef struct {
    const char *name;
    const BlockSpec *spec;
    int cin, cout, H, OH;
    Conv c[MAX_CONVS];
    int off[MAX_CONVS]; // output convs: first channel of their slice
    int off_pass;       // pass_max: first channel of the pooled input's slice
} Block;

struct Inception {
    Conv stem[N_STEM];
    Block blk[N_BLOCKS];
    int D, NL;          // features (the last block's channels), logits
    size_t ofw, ofb;    // fc weight (NL, D) and bias (NL) offsets
    const float *fcw, *fcb;
    ParamTable t;       // folded parameters
    float *params;
    // Activations of `batch` images, then scratch, in one allocation. A
    // layer's tasks run across the images of a pass, so that the late
    // layers (one task per image at 17x17 and 8x8) keep every thread busy.
    int batch;
    float *acts;
    float *x, *y;       // (batch, need_xy): stem activations, block inputs and outputs
    float *tmp[2];      // (batch, need_t): a branch's intermediate outputs
    float *pool;        // (batch, need_t): the pooled block input of a pool branch
    float *scratch;     // conv2d_forward's
    float *slots;       // (nslots, slot): the GEMM convs' column matrices and results
    int nslots;
    size_t slot;
    InceptionTap tap;
    void *tap_ctx;
};

// ------------------------------------------------------------ GEMM convs

static int is_1x1(const Conv *c) {
    return c->kh == 1 && c->kw == 1 && c->s == 1 && c->ph == 0 && c->pw == 0;
}

// Output rows per task: a band of about GEMM_COLS pixels, or the whole image.
static int band_rows(const Conv *c) {
    int nr = c->OH * c->OW >= GEMM_COLS ? GEMM_COLS / c->OW : c->OH;
    return nr < 1 ? 1 : nr;
}

// Floats of one slot: the column matrix (K, nc) (none for a 1x1 conv) and
// the GEMM result (cout, nc), nc the columns of a band.
static size_t gemm_slot_floats(const Conv *c) {
    size_t nc = (size_t)band_rows(c) * c->OW, K = (size_t)c->cin * c->kh * c->kw;
    return (is_1x1(c) ? 0 : K * nc) + (size_t)c->cout * nc;
}

// cols (K, nr*OW), K = cin*kh*kw in the weight's (c, i, j) order: output
// rows [r0, r0 + nr) of one image in (cin, H, W).
static void im2col_rect(float *cols, const float *in, const Conv *c, int r0, int nr) {
    int H = c->H, W = c->W, OW = c->OW, s = c->s;
    size_t N = (size_t)nr * OW;
    for (int ch = 0; ch < c->cin; ch++)
        for (int i = 0; i < c->kh; i++)
            for (int j = 0; j < c->kw; j++) {
                // ow reads input column ow*s + sh, inside [0, W) for ow in [lo, hi)
                int sh = j - c->pw;
                int lo = sh < 0 ? (-sh + s - 1) / s : 0;
                int hi = W - 1 - sh < 0 ? 0 : (W - 1 - sh) / s + 1;
                if (hi > OW) hi = OW;
                if (hi < lo) hi = lo;
                float *row = cols + (size_t)((ch * c->kh + i) * c->kw + j) * N;
                for (int oh = r0; oh < r0 + nr; oh++) {
                    float *d = row + (size_t)(oh - r0) * OW;
                    int ih = oh * s - c->ph + i;
                    if (ih < 0 || ih >= H) {
                        memset(d, 0, (size_t)OW * sizeof(float));
                        continue;
                    }
                    const float *src = in + ((size_t)ch * H + ih) * W + sh;
                    for (int ow = 0; ow < lo; ow++) d[ow] = 0.0f;
                    for (int ow = lo; ow < hi; ow++) d[ow] = src[ow * s];
                    for (int ow = hi; ow < OW; ow++) d[ow] = 0.0f;
                }
            }
}

// out channels [off, off + cout) of dst (B, dst_c, OH, OW) = ReLU(conv(in) + b)
static void gemm_conv(Inception *net, const Conv *c, float *dst, int dst_c, int off,
                      const float *in, int B) {
    int nr0 = band_rows(c), bands = (c->OH + nr0 - 1) / nr0;
    int K = c->cin * c->kh * c->kw, HW = c->H * c->W, OHW = c->OH * c->OW;
    size_t res_at = is_1x1(c) ? 0 : (size_t)K * nr0 * c->OW;
    // Never a team of one while several threads are set: a GEMM outside an
    // active parallel region would run OpenBLAS's own threading.
    int threads = omp_get_max_threads() < net->nslots ? omp_get_max_threads() : net->nslots;
#pragma omp parallel num_threads(threads)
    {
        float *slot = net->slots + (size_t)omp_get_thread_num() * net->slot;
        float *res = slot + res_at; // (cout, N)
#pragma omp for schedule(static)
        for (int task = 0; task < B * bands; task++) {
            int b = task / bands, r0 = task % bands * nr0;
            int nr = c->OH - r0 < nr0 ? c->OH - r0 : nr0, N = nr * c->OW;
            const float *src = in + (size_t)b * c->cin * HW;
            const float *cols = src + (size_t)r0 * c->W; // 1x1: rows of the image itself
            int ldb = HW;
            if (!is_1x1(c)) {
                im2col_rect(slot, src, c, r0, nr);
                cols = slot, ldb = N;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, c->cout, N, K, 1.0f, c->w,
                        K, cols, ldb, 0.0f, res, N);
            float *d = dst + ((size_t)b * dst_c + off) * OHW + (size_t)r0 * c->OW;
            for (int oc = 0; oc < c->cout; oc++, d += OHW) {
                const float *r = res + (size_t)oc * N;
                float bias = c->b[oc];
                for (int i = 0; i < N; i++) {
                    float v = r[i] + bias;
                    d[i] = v < 0.0f ? 0.0f : v;
                }
            }
        }
    }
}

// out channels [off, off + cout) of dst (B, dst_c, OH, OW) = ReLU(conv(in) + b)
static void conv_run(Inception *net, const Conv *c, float *dst, int dst_c, int off,
                     const float *in, int B) {
    if (!c->wino) {
        gemm_conv(net, c, dst, dst_c, off, in, B);
        return;
    }
    // One image at a time (its threads split the Winograd transforms and
    // GEMMs), straight into its slice, which is contiguous for one image.
    size_t ohw = (size_t)c->OH * c->OW, hw = (size_t)c->H * c->W;
    for (int b = 0; b < B; b++) {
        float *o = dst + ((size_t)b * dst_c + off) * ohw;
        conv2d_forward(o, in + (size_t)b * c->cin * hw, c->w, c->b, 1, c->cin, c->H, c->W,
                       c->cout, 3, 1, 1, net->scratch);
        relu_forward(o, o, (size_t)c->cout * ohw);
    }
}

static void block_forward(Inception *net, const Block *m, float *out, const float *in, int B) {
    const BlockSpec *bs = m->spec;
    size_t hw = (size_t)m->H * m->H, ohw = (size_t)m->OH * m->OH;
    // Temporaries alternate: a conv reading the block input writes tmp[0],
    // one reading tmp[k] writes tmp[1 - k]. In every block's spec order a
    // temporary is consumed before the next conv from the input reuses it.
    int where[MAX_CONVS];
    for (int i = 0; i < bs->n; i++) {
        const ConvSpec *cs = &bs->conv[i];
        const Conv *c = &m->c[i];
        const float *src = in;
        int from_tmp = -1;
        if (cs->from == FROM_POOL) {
            if (bs->pool == POOL_AVG)
                avgpool2d_forward(net->pool, in, B, m->cin, m->H, m->H, 3, 1, 1);
            else
                maxpool2d_forward(net->pool, in, B, m->cin, m->H, m->H, 3, 1, 1);
            src = net->pool;
        } else if (cs->from >= 0) {
            from_tmp = where[cs->from];
            src = net->tmp[from_tmp];
        }
        if (cs->out) {
            conv_run(net, c, out, m->cout, m->off[i], src, B);
        } else {
            where[i] = from_tmp == 0 ? 1 : 0;
            conv_run(net, c, net->tmp[where[i]], c->cout, 0, src, B);
        }
    }
    if (bs->pass_max)
        for (int b = 0; b < B; b++)
            maxpool2d_forward(out + ((size_t)b * m->cout + m->off_pass) * ohw,
                              in + (size_t)b * m->cin * hw, 1, m->cin, m->H, m->H, 3, 2, 0);
}

static void tap(Inception *net, const char *name, const float *out, int b0, int nb, int C,
                int H) {
    if (net->tap) net->tap(net->tap_ctx, name, out, b0, nb, C, H, H);
}

// img (nb, 3, 299, 299) -> feat (nb, D); images b0.. of the caller's batch
static void chunk_forward(Inception *net, float *feat, const float *img, int b0, int nb) {
    float *x = net->x, *y = net->y, *t;
    const Conv *st = net->stem;
    conv_run(net, &st[0], x, st[0].cout, 0, img, nb);
    tap(net, STEM[0].name, x, b0, nb, st[0].cout, st[0].OH);
    conv_run(net, &st[1], y, st[1].cout, 0, x, nb);
    tap(net, STEM[1].name, y, b0, nb, st[1].cout, st[1].OH);
    conv_run(net, &st[2], x, st[2].cout, 0, y, nb);
    tap(net, STEM[2].name, x, b0, nb, st[2].cout, st[2].OH);
    maxpool2d_forward(y, x, nb, st[2].cout, st[2].OH, st[2].OW, 3, 2, 0);
    tap(net, "maxpool1", y, b0, nb, st[3].cin, st[3].H);
    conv_run(net, &st[3], x, st[3].cout, 0, y, nb);
    tap(net, STEM[3].name, x, b0, nb, st[3].cout, st[3].OH);
    conv_run(net, &st[4], y, st[4].cout, 0, x, nb);
    tap(net, STEM[4].name, y, b0, nb, st[4].cout, st[4].OH);
    maxpool2d_forward(x, y, nb, st[4].cout, st[4].OH, st[4].OW, 3, 2, 0);
    tap(net, "maxpool2", x, b0, nb, net->blk[0].cin, net->blk[0].H);
    for (int i = 0; i < N_BLOCKS; i++) {
        const Block *m = &net->blk[i];
        block_forward(net, m, y, x, nb);
        tap(net, m->name, y, b0, nb, m->cout, m->OH);
        t = x, x = y, y = t;
    }
    const Block *last = &net->blk[N_BLOCKS - 1];
    avgpool2d_forward(feat, x, nb, last->cout, last->OH, last->OH, last->OH, 1, 0);
}

void inception_forward(Inception *net, float *feat, float *logits, const float *img, int B) {
    size_t in_floats = (size_t)3 * INCEPTION_SIZE * INCEPTION_SIZE;
    for (int b0 = 0; b0 < B; b0 += net->batch) {
        int nb = B - b0 < net->batch ? B - b0 : net->batch;
        chunk_forward(net, feat + (size_t)b0 * net->D, img + (size_t)b0 * in_floats, b0, nb);
    }
    if (logits) // one image at a time, as everything: GEMM shapes never depend on B
        for (int b = 0; b < B; b++)
            linear_forward(logits + (size_t)b * net->NL, feat + (size_t)b * net->D, net->fcw,
                           net->fcb, 1, net->D, net->NL);
}

int inception_dim(const Inception *net) { return net->D; }
int inception_logits(const Inception *net) { return net->NL; }

void inception_set_tap(Inception *net, InceptionTap fn, void *ctx) {
    net->tap = fn;
    net->tap_ctx = ctx;
}

// ------------------------------------------------------------------ loading

typedef struct {
    hid_t g; // the /model group
    const char *path;
    int pass;      // 0: shapes; 1: values
    ParamTable raw; // pass 0: the file's tensors that the graph reads, in state_dict order
    Inception *net;
    float *bn;     // pass 1: (4, max_cout) a conv's BatchNorm tensors
    int max_cout;
    size_t need_xy, need_t, need_scratch, need_slot; // floats per image / in all
} Loader;

static void need(size_t *n, size_t v) {
    if (v > *n) *n = v;
}

static void shape_str(char *out, size_t cap, int ndim, const int *dims) {
    size_t len = (size_t)snprintf(out, cap, "(");
    for (int d = 0; d < ndim && len < cap; d++)
        len += dims[d] < 0 ? (size_t)snprintf(out + len, cap - len, "%s?", d ? ", " : "")
                           : (size_t)snprintf(out + len, cap - len, "%s%d", d ? ", " : "",
                                              dims[d]);
    if (len < cap) snprintf(out + len, cap - len, ")");
}

// Pass 0: checks /model/<name> is a float tensor of shape want (ndim
// entries; want[0] < 0: any first dimension, returned there) and records it.
static int tensor_shape(Loader *L, const char *name, int ndim, int *want) {
    if (H5Lexists(L->g, name, H5P_DEFAULT) <= 0)
        return errorf("%s: tensor /model/%s is missing (not an Inception-v3 of the FID "
                      "layout?)", L->path, name);
    hid_t d = H5Dopen2(L->g, name, H5P_DEFAULT);
    if (d < 0) return errorf("%s: /model/%s is not a readable dataset", L->path, name);
    hid_t type = H5Dget_type(d), space = H5Dget_space(d);
    hsize_t hd[H5S_MAX_RANK];
    int nd = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1, rc = -1;
    int got[H5S_MAX_RANK], expect[PARAM_MAX_DIMS];
    if (type < 0 || nd < 0 || H5Sget_simple_extent_dims(space, hd, NULL) < 0) {
        errorf("%s: /model/%s is not a readable dataset", L->path, name);
    } else if (H5Tget_class(type) != H5T_FLOAT) {
        errorf("%s: /model/%s is not a float tensor", L->path, name);
    } else {
        int same = nd == ndim;
        for (int k = 0; k < nd; k++) got[k] = hd[k] > INT32_MAX ? -1 : (int)hd[k];
        for (int k = 0; k < ndim; k++) {
            expect[k] = want[k] < 0 && nd == ndim ? got[k] : want[k];
            if (same && got[k] != expect[k]) same = 0;
        }
        char gs[128], ws[128];
        shape_str(gs, sizeof gs, nd, got);
        shape_str(ws, sizeof ws, ndim, expect);
        if (!same)
            errorf("%s: /model/%s has shape %s, expected %s", L->path, name, gs, ws);
        else if (want[0] < 0 && (got[0] < 1 || got[0] > (ndim == 4 ? MAX_CHANNELS : MAX_LOGITS)))
            errorf("%s: /model/%s has shape %s: %d outputs is not plausible", L->path, name, gs,
                   got[0]);
        else
            rc = 0;
        if (rc == 0) {
            want[0] = got[0];
            params_add(&L->raw, name, ndim, got, 0);
        }
    }
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
    H5Dclose(d);
    return rc;
}

// Pass 1: reads /model/<name> (shape checked in pass 0) into out, refusing
// NaN and infinity.
static int tensor_read(Loader *L, const char *name, float *out) {
    int i = params_find(&L->raw, name);
    CHECK(i >= 0);
    size_t n = L->raw.info[i].size;
    hid_t d = H5Dopen2(L->g, name, H5P_DEFAULT);
    int rc = d >= 0 && H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) >= 0;
    if (d >= 0) H5Dclose(d);
    if (!rc) return errorf("%s: cannot read /model/%s (truncated or corrupt file?)", L->path, name);
    size_t j = first_nonfinite(out, n);
    if (j < n)
        return errorf("%s: /model/%s holds %g at element %zu (a damaged file?)", L->path, name,
                      out[j], j);
    return 0;
}

// One BasicConv2d `prefix` reading cin channels of H x H.
static int conv_load(Loader *L, Conv *c, const ConvSpec *cs, const char *prefix, int cin,
                     int H) {
    static const char *const BN[4] = {"weight", "bias", "running_mean", "running_var"};
    char name[PARAM_NAME_MAX];
    if (L->pass == 0) {
        c->cin = cin, c->kh = cs->kh, c->kw = cs->kw, c->s = cs->s, c->ph = cs->ph,
        c->pw = cs->pw;
        c->H = c->W = H;
        c->OH = (H + 2 * c->ph - c->kh) / c->s + 1, c->OW = (H + 2 * c->pw - c->kw) / c->s + 1;
        CHECK(c->OH >= 1 && c->OW >= 1); // fixed kernels on the fixed input size
        int wd[4] = {-1, cin, c->kh, c->kw};
        snprintf(name, sizeof name, "%s.conv.weight", prefix);
        if (tensor_shape(L, name, 4, wd)) return -1;
        c->cout = wd[0];
        for (int k = 0; k < 4; k++) {
            int bd[1] = {c->cout};
            snprintf(name, sizeof name, "%s.bn.%s", prefix, BN[k]);
            if (tensor_shape(L, name, 1, bd)) return -1;
        }
        c->wino = c->kh == c->kw && c->ph == c->pw && c->OH * c->OW >= WINO_MIN_PIXELS &&
                  conv2d_prep_floats(cin, c->cout, c->kh, c->s, c->ph) > 0;
        snprintf(name, sizeof name, "%s.weight", prefix);
        c->ow = params_add(&L->net->t, name, 4, wd, 0);
        snprintf(name, sizeof name, "%s.bias", prefix);
        c->ob = params_add(&L->net->t, name, 1, &c->cout, 0);
        if (c->wino)
            need(&L->need_scratch, conv2d_scratch_floats(1, cin, H, H, c->cout, 3, 1, 1));
        else
            need(&L->need_slot, gemm_slot_floats(c));
        if (c->cout > L->max_cout) L->max_cout = c->cout;
        return 0;
    }
    float *w = L->net->params + c->ow, *b = L->net->params + c->ob;
    int n = c->cout;
    float *bn[4];
    for (int k = 0; k < 4; k++) bn[k] = L->bn + (size_t)k * n;
    snprintf(name, sizeof name, "%s.conv.weight", prefix);
    if (tensor_read(L, name, w)) return -1;
    for (int k = 0; k < 4; k++) {
        snprintf(name, sizeof name, "%s.bn.%s", prefix, BN[k]);
        if (tensor_read(L, name, bn[k])) return -1;
    }
    size_t per = (size_t)c->cin * c->kh * c->kw;
    for (int oc = 0; oc < n; oc++) {
        if (bn[3][oc] < 0)
            return errorf("%s: /model/%s holds %g at element %d, but a variance is never "
                          "negative", L->path, name, bn[3][oc], oc);
        double scale = bn[0][oc] / sqrt((double)bn[3][oc] + BN_EPS);
        for (size_t i = 0; i < per; i++) w[oc * per + i] = (float)(w[oc * per + i] * scale);
        b[oc] = (float)(bn[1][oc] - bn[2][oc] * scale);
    }
    c->w = w, c->b = b;
    return 0;
}

static int block_load(Loader *L, Block *m, int i, int cin, int H) {
    const BlockSpec *bs = BLOCKS[i].spec;
    char prefix[PARAM_NAME_MAX];
    if (L->pass == 0) m->name = BLOCKS[i].name, m->spec = bs, m->cin = cin, m->H = H;
    int off = 0;
    for (int k = 0; k < bs->n; k++) {
        const ConvSpec *cs = &bs->conv[k];
        int from = cs->from;
        snprintf(prefix, sizeof prefix, "%s.%s", m->name, cs->name);
        if (conv_load(L, &m->c[k], cs, prefix, from >= 0 ? m->c[from].cout : cin,
                      from >= 0 ? m->c[from].OH : H))
            return -1;
        if (L->pass) continue;
        const Conv *c = &m->c[k];
        size_t n = (size_t)c->cout * c->OH * c->OW;
        if (!cs->out) need(&L->need_t, n);
        if (cs->out) m->off[k] = off, off += c->cout, m->OH = c->OH;
    }
    if (L->pass) return 0;
    if (bs->pool != POOL_NONE) need(&L->need_t, (size_t)cin * H * H);
    if (bs->pass_max) m->off_pass = off, off += cin;
    m->cout = off;
    need(&L->need_xy, (size_t)off * m->OH * m->OH);
    return 0;
}

// Reads (pass 0: checks and lays out) the whole network.
static int net_load(Loader *L) {
    Inception *net = L->net;
    int cin = 3, H = INCEPTION_SIZE;
    for (int k = 0; k < N_STEM; k++) {
        Conv *c = &net->stem[k];
        if (conv_load(L, c, &STEM[k], STEM[k].name, cin, H)) return -1;
        cin = c->cout, H = c->OH;
        if (k == 2 || k == 4) { // maxpool1, maxpool2 (3x3 stride 2) follow
            need(&L->need_xy, (size_t)cin * H * H);
            H = (H - 3) / 2 + 1;
        }
        need(&L->need_xy, (size_t)cin * H * H);
    }
    for (int i = 0; i < N_BLOCKS; i++) {
        Block *m = &net->blk[i];
        if (block_load(L, m, i, cin, H)) return -1;
        cin = m->cout, H = m->OH;
    }
    if (L->pass == 0) {
        net->D = cin;
        int fw[2] = {-1, cin}, fb[1];
        if (tensor_shape(L, "fc.weight", 2, fw)) return -1;
        net->NL = fb[0] = fw[0];
        if (tensor_shape(L, "fc.bias", 1, fb)) return -1;
        net->ofw = params_add(&net->t, "fc.weight", 2, fw, 0);
        net->ofb = params_add(&net->t, "fc.bias", 1, fb, 0);
        return 0;
    }
    net->fcw = net->params + net->ofw, net->fcb = net->params + net->ofb;
    if (tensor_read(L, "fc.weight", net->params + net->ofw)) return -1;
    return tensor_read(L, "fc.bias", net->params + net->ofb);
}

// H5Literate callback: the first link of /model the graph does not read.
static herr_t find_stranger(hid_t g, const char *name, const H5L_info_t *info, void *ctx) {
    (void)g, (void)info;
    Loader *L = ctx;
    const char *tail = strrchr(name, '.');
    if (tail && strcmp(tail, ".num_batches_tracked") == 0) return 0; // training bookkeeping
    if (params_find(&L->raw, name) >= 0) return 0;
    errorf("%s: /model/%s is not a tensor of the FID Inception-v3 (a different network?)",
           L->path, name);
    return 1;
}

static size_t acts_floats(Inception *net, const Loader *L) {
    net->nslots = omp_get_max_threads() < MAX_SLOTS ? omp_get_max_threads() : MAX_SLOTS;
    net->slot = (L->need_slot + 15) / 16 * 16;
    net->batch = net->nslots > MIN_BATCH ? net->nslots : MIN_BATCH;
    return net->batch * (2 * L->need_xy + 3 * L->need_t) + L->need_scratch +
           (size_t)net->nslots * net->slot;
}

// The widths come from the file: before allocating, check that the network
// they declare fits in memory (a small file can declare wide tensors).
static int check_memory(Inception *net, const Loader *L) {
    double need = 4.0 * ((double)net->t.total + (double)acts_floats(net, L));
    double mem = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
    if (mem > 0 && need > mem)
        return errorf("%s: the network of these tensors' widths needs %.1f GiB, more than this "
                      "machine's %.1f GiB", L->path, need / (1 << 30), mem / (1 << 30));
    return 0;
}

static void carve(Inception *net, const Loader *L) {
    size_t xy = (size_t)net->batch * L->need_xy, t = (size_t)net->batch * L->need_t;
    float *p = net->acts = xmalloc_aligned(acts_floats(net, L) * sizeof(float));
    net->x = p, p += xy;
    net->y = p, p += xy;
    net->tmp[0] = p, p += t;
    net->tmp[1] = p, p += t;
    net->pool = p, p += t;
    net->scratch = p, p += L->need_scratch;
    net->slots = p;
}

int inception_load(Inception **out, int64_t file, const char *path) {
    *out = NULL;
    h5_quiet();
    if (H5Lexists((hid_t)file, "model", H5P_DEFAULT) <= 0)
        return errorf("%s: has no group /model (not a network file)", path);
    Loader L = {0};
    L.g = H5Gopen2((hid_t)file, "model", H5P_DEFAULT);
    if (L.g < 0) return errorf("%s: cannot open group /model", path);
    L.path = path;
    params_init(&L.raw);
    Inception *net = L.net = xcalloc(1, sizeof *net);
    params_init(&net->t);
    int rc = net_load(&L);
    if (rc == 0) {
        herr_t r = H5Literate(L.g, H5_INDEX_NAME, H5_ITER_NATIVE, NULL, find_stranger, &L);
        if (r < 0) rc = errorf("%s: cannot list group /model", path);
        if (r > 0) rc = -1; // find_stranger said which
    }
    if (rc == 0) rc = check_memory(net, &L);
    if (rc == 0) {
        net->params = xmalloc_aligned(net->t.total * sizeof(float));
        L.bn = xmalloc(4 * (size_t)L.max_cout * sizeof(float));
        L.pass = 1;
        rc = net_load(&L);
        free(L.bn);
    }
    H5Gclose(L.g);
    params_free(&L.raw);
    if (rc) {
        inception_free(net);
        return -1;
    }
    carve(net, &L);
    *out = net;
    return 0;
}

void inception_free(Inception *net) {
    if (!net) return;
    free(net->params);
    free(net->acts);
    params_free(&net->t);
    free(net);
}
