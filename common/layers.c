// layers.c: the forward/backward kernels declared in layers.h.
// Large contractions go through cblas_sgemm (OpenMP OpenBLAS: a call outside a
// parallel region uses every thread, a call inside one runs single-threaded).
// Everything else is split across threads by independent outputs only, and
// every reduction runs in a fixed order, so results do not depend on the
// thread count.
#include "layers.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "common.h"
#include "phase_conv.h"
#include "winograd.h"

// ---------------------------------------------------------------------------
// C (M, N) = alpha op(A) (M, K) op(B) (K, N) + beta C, as single-threaded
// GEMMs over fixed blocks of C run in parallel. Multithreaded OpenBLAS calls
// were seen to round differently at 1 and 2 threads; here each element comes
// from one single-threaded GEMM whatever the thread count. The longer side is
// split, so the operand packed again for every block is the smaller one.
#define GEMM_BLOCK 64

static void gemm_split(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K,
                       float alpha, const float *A, int lda, const float *B, int ldb,
                       float beta, float *C, int ldc) {
    int rows = M > N, len = rows ? M : N;
    // at least two blocks: a GEMM outside an active parallel region would
    // run OpenBLAS's own threading (its thread wake-ups cost more than these
    // small GEMMs, and its split is not ours)
    int blk = len > 2 * GEMM_BLOCK ? GEMM_BLOCK : len > 1 ? (len + 1) / 2 : 1;
    int nblk = (len + blk - 1) / blk;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < nblk; i++) {
        int o = i * blk, n = len - o < blk ? len - o : blk;
        if (rows) {
            const float *Ab = ta == CblasNoTrans ? A + (size_t)o * lda : A + o;
            cblas_sgemm(CblasRowMajor, ta, tb, n, N, K, alpha, Ab, lda, B, ldb, beta,
                        C + (size_t)o * ldc, ldc);
        } else {
            const float *Bb = tb == CblasNoTrans ? B + o : B + (size_t)o * ldb;
            cblas_sgemm(CblasRowMajor, ta, tb, M, n, K, alpha, A, lda, Bb, ldb, beta,
                        C + o, ldc);
        }
    }
}

// ---------------------------------------------------------------------------
// im2col / col2im and layout permutes shared by conv2d and conv_transpose2d.
// The column matrix is (C*k*k, B*OH*OW): row (c, ki, kj), column (b, oh, ow),
// holding img[b, c, oh*s - p + ki, ow*s - p + kj] (0 in the padding).
// Each of them (defined with the conv code below) is serial over a range
// [p0, p1) of its (item, channel) planes: a conv chunk's thread runs one over
// all of its chunk's planes, and a batch-wide call splits the batch's planes
// across the threads of a parallel region (thread_range). No two planes
// share an output element, so the split never changes a result.

// This thread's share [*p0, *p1) of n planes, in a parallel region: one
// contiguous range a thread, as a static schedule of a loop over the planes
// would give (a split by items instead, with each thread writing part of
// every row, made the 1x1 convs' backward 6 to 8% slower).
static void thread_range(size_t *p0, size_t *p1, size_t n) {
    size_t T = (size_t)omp_get_num_threads(), i = (size_t)omp_get_thread_num();
    *p0 = n * i / T;
    *p1 = n * (i + 1) / T;
}

// Range [*lo, *hi) of output positions o whose input o*s - p + kk lies in [0, n).
static void valid_range(int *lo, int *hi, int kk, int s, int p, int n, int on) {
    // o*s >= p - kk  and  o*s <= n - 1 + p - kk
    int a = p - kk, l = a <= 0 ? 0 : (a + s - 1) / s;
    int bnd = n - 1 + p - kk, h = bnd < 0 ? 0 : bnd / s + 1;
    if (h > on) h = on;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

// Sums run in double over SUM_LANES interleaved partial sums, added in a
// fixed order at the end: the compiler vectorises them (one long chain of
// dependent double additions does not), and the order never depends on the
// thread count.
#define SUM_LANES 8

static double sum_lanes(const double *acc, double tail) {
    double s = 0.0;
    for (int l = 0; l < SUM_LANES; l++) s += acc[l];
    return s + tail;
}

// Adds x[i] into lane i mod SUM_LANES for the first n - n % SUM_LANES
// values; returns the sum of the rest
static double add_lanes(double *acc, const float *x, size_t n) {
    size_t i = 0, nl = n - n % SUM_LANES;
    for (; i < nl; i += SUM_LANES)
        for (int l = 0; l < SUM_LANES; l++) acc[l] += x[i + l];
    double tail = 0.0;
    for (; i < n; i++) tail += x[i];
    return tail;
}

// db (C) += sum over b, hw of dout (B, C, HW), in double, fixed order.
static void bias_backward(float *db, const float *dout, int B, int C, int HW) {
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        double acc[SUM_LANES] = {0}, tail = 0.0;
        for (int b = 0; b < B; b++) tail += add_lanes(acc, dout + ((size_t)b * C + c) * HW, HW);
        db[c] += (float)sum_lanes(acc, tail);
    }
}

// ---------------------------------------------------------------------------
// conv2d, run in chunks of whole images. A chunk's column matrix is built
// and consumed by one thread while it is still in that core's cache, by a
// single-threaded GEMM (OpenBLAS's OpenMP build runs single-threaded inside
// a parallel region), instead of a batch-wide column matrix that goes out to
// memory and back. Chunks are a fixed split of the batch (never of the
// thread count) and every output element comes from one GEMM, so results
// are the same at any thread count; weight gradients are summed per chunk
// and the chunk partials added in chunk order.

#define CONV_CHUNK_COLS 256 // GEMM columns (images x output pixels) a chunk aims for
#define CONV_SLOTS 16       // most threads a conv uses: one scratch slot each

static int conv_out(int n, int k, int s, int p) { return (n + 2 * p - k) / s + 1; }

typedef struct {
    int B, C, H, W, OC, k, s, p, OH, OW;
    int K;        // C*k*k: rows of a column matrix
    int KO;       // OC*k*k: rows of dout's column matrix (stride-1 input gradient)
    int nb;       // images per chunk
    int nchunks;  // ceil(B / nb)
    int slots;    // min(nchunks, CONV_SLOTS)
    size_t slot;  // floats of one slot
    int dflip;    // stride 1: input gradient as a conv of dout with flipped weights
} ConvPlan;

static ConvPlan conv_plan(int B, int C, int H, int W, int OC, int k, int s, int p) {
    ConvPlan q;
    q.B = B, q.C = C, q.H = H, q.W = W, q.OC = OC, q.k = k, q.s = s, q.p = p;
    q.OH = conv_out(H, k, s, p), q.OW = conv_out(W, k, s, p);
    q.K = C * k * k, q.KO = OC * k * k;
    int ohw = q.OH * q.OW;
    q.nb = ohw >= CONV_CHUNK_COLS ? 1 : CONV_CHUNK_COLS / ohw;
    if (q.nb > B) q.nb = B;
    q.nchunks = (B + q.nb - 1) / q.nb;
    q.slots = q.nchunks < CONV_SLOTS ? q.nchunks : CONV_SLOTS;
    q.dflip = s == 1 && p <= k - 1; // its padding k-1-p must be >= 0
    size_t nc = (size_t)q.nb * ohw, ni = (size_t)q.nb * H * W;
    // cols (K, nc) or dout's cols (KO, ni) | dout chunk / GEMM result (OC, nc) | din chunk (C, ni)
    size_t a = (size_t)q.K * nc, a2 = (size_t)q.KO * ni;
    q.slot = (a > a2 ? a : a2) + (size_t)OC * nc + (size_t)C * ni;
    return q;
}

// Threads for a conv's parallel region: never more than there are slots.
static int conv_threads(const ConvPlan *q) {
    int t = omp_get_max_threads();
    return t < q->slots ? t : q->slots;
}

// Small planes (the UNet's 4x4 and 8x8, the VAE's up to 32x32): each task
// copies one (item, channel) plane into a zero-bordered local buffer once,
// then every (ki, kj) row is a plain strided read of it, with no bounds
// tests and no library calls on rows that are only 4 to 32 floats long.
// GCC would turn the short copy loops back into memcpy/memset calls, which
// is what this layout is meant to avoid; the attribute keeps them as loops.
#define IM2COL_PAD_MAX 4096 // floats of padded plane kept on the stack

// One (item, channel) plane into its k*k rows of a column matrix with N
// columns, at column offset col0 (serial; called per task).
__attribute__((optimize("no-tree-loop-distribute-patterns")))
static void im2col_plane(float *cols, size_t N, size_t col0, const float *plane, int c,
                         int H, int W, int k, int s, int p, int OH, int OW) {
    int PH = (OH - 1) * s + k, PW = (OW - 1) * s + k;
    if ((size_t)PH * PW <= IM2COL_PAD_MAX) {
        float pad[IM2COL_PAD_MAX]; // (PH, PW): the plane at offset (p, p), zeros around
        for (int y = 0; y < PH; y++) {
            int iy = y - p;
            float *prow = pad + (size_t)y * PW;
            if (iy < 0 || iy >= H) {
                for (int x = 0; x < PW; x++) prow[x] = 0.0f;
                continue;
            }
            const float *src = plane + (size_t)iy * W;
            for (int x = 0; x < PW; x++) {
                int ix = x - p;
                prow[x] = ix >= 0 && ix < W ? src[ix] : 0.0f;
            }
        }
        for (int ki = 0; ki < k; ki++) {
            for (int kj = 0; kj < k; kj++) {
                float *dst = cols + (size_t)((c * k + ki) * k + kj) * N + col0;
                for (int oh = 0; oh < OH; oh++) {
                    const float *src = pad + (size_t)(oh * s + ki) * PW + kj;
                    float *d = dst + (size_t)oh * OW;
                    if (s == 1) {
                        for (int ow = 0; ow < OW; ow++) d[ow] = src[ow];
                    } else {
                        for (int ow = 0; ow < OW; ow++) d[ow] = src[ow * s];
                    }
                }
            }
        }
        return;
    }
    for (int ki = 0; ki < k; ki++) {
        for (int kj = 0; kj < k; kj++) {
            int lo, hi;
            valid_range(&lo, &hi, kj, s, p, W, OW);
            float *dst = cols + (size_t)((c * k + ki) * k + kj) * N + col0;
            int sh = kj - p; // ow maps to iw = ow * s + sh
            for (int oh = 0; oh < OH; oh++, dst += OW) {
                int ih = oh * s - p + ki;
                if (ih < 0 || ih >= H) {
                    memset(dst, 0, (size_t)OW * sizeof(float));
                    continue;
                }
                const float *src = plane + (size_t)ih * W; // input row
                for (int ow = 0; ow < lo; ow++) dst[ow] = 0.0f;
                if (s == 1) {
                    memcpy(dst + lo, src + lo + sh, (size_t)(hi - lo) * sizeof(float));
                } else {
                    for (int ow = lo; ow < hi; ow++) dst[ow] = src[ow * s + sh];
                }
                for (int ow = hi; ow < OW; ow++) dst[ow] = 0.0f;
            }
        }
    }
}

// cols (C*k*k, nb*OH*OW) of images img (nb, C, H, W): planes [p0, p1) in
// (channel, item) order.
static void im2col(float *cols, const float *img, int nb, int C, int H, int W,
                   int k, int s, int p, int OH, int OW, size_t p0, size_t p1) {
    size_t OHW = (size_t)OH * OW, N = (size_t)nb * OHW;
    for (size_t pl = p0; pl < p1; pl++) {
        size_t c = pl / nb, b = pl % nb;
        im2col_plane(cols, N, b * OHW, img + (b * C + c) * H * W, (int)c, H, W, k, s, p,
                     OH, OW);
    }
}

// img (nb, C, H, W) += the adjoint of im2col applied to cols (C*k*k, nb*OH*OW):
// planes [p0, p1) in (item, channel) order, each element summing its
// contributions in the fixed (ki, kj, oh, ow) order.
static void col2im_add(float *img, const float *cols, int nb, int C, int H, int W,
                       int k, int s, int p, int OH, int OW, size_t p0, size_t p1) {
    size_t OHW = (size_t)OH * OW, N = (size_t)nb * OHW;
    for (size_t pl = p0; pl < p1; pl++) {
        size_t b = pl / C, c = pl % C;
        float *plane = img + pl * H * W;
        for (int ki = 0; ki < k; ki++) {
            for (int kj = 0; kj < k; kj++) {
                int lo, hi;
                valid_range(&lo, &hi, kj, s, p, W, OW);
                const float *row = cols + ((c * k + ki) * k + kj) * N + b * OHW;
                for (int oh = 0; oh < OH; oh++) {
                    int ih = oh * s - p + ki;
                    if (ih < 0 || ih >= H) continue;
                    float *dst = plane + (size_t)ih * W; // input row
                    const float *src = row + (size_t)oh * OW;
                    int sh = kj - p;
                    for (int ow = lo; ow < hi; ow++) dst[ow * s + sh] += src[ow];
                }
            }
        }
    }
}

// dst (C, nb*HW) <- src (nb, C, HW): planes [p0, p1) of dst in (channel, item) order
static void nchw_to_cn(float *dst, const float *src, int nb, int C, int HW, size_t p0,
                       size_t p1) {
    for (size_t pl = p0; pl < p1; pl++) {
        size_t c = pl / nb, b = pl % nb;
        memcpy(dst + pl * HW, src + (b * C + c) * HW, (size_t)HW * sizeof(float));
    }
}

// dst (nb, C, HW) <- (accumulate ? dst : 0) + src (C, nb*HW) + bias (C) (bias
// may be NULL): planes [p0, p1) of dst in (item, channel) order
static void cn_to_nchw(float *dst, const float *src, const float *bias, int nb, int C,
                       int HW, int accumulate, size_t p0, size_t p1) {
    for (size_t pl = p0; pl < p1; pl++) {
        size_t b = pl / C, c = pl % C;
        float *d = dst + pl * HW;
        const float *sp = src + (c * nb + b) * HW;
        float bv = bias ? bias[c] : 0.0f;
        if (accumulate) {
            for (int i = 0; i < HW; i++) d[i] += sp[i] + bv;
        } else {
            for (int i = 0; i < HW; i++) d[i] = sp[i] + bv;
        }
    }
}

// 1x1 convs need no column matrix: the forward is one GEMM per item, and
// the backward's weight gradient one batch-wide GEMM on channel-major copies
// (measured faster than chunks for these: the chunk copies cost as much as
// their GEMMs).
static int conv_is_1x1(int k, int s, int p) { return k == 1 && s == 1 && p == 0; }
// 3x3 stride-1 "same" convs, most of both networks' work, go through Winograd
// (winograd.h) unless a side has few channels: then its GEMMs are too thin
// to pay for the transforms (measured slower for 4 -> 64, 64 -> 4, 1 -> 32).
#define WINO_MIN_CHANNELS 16
static int conv_is_wino(int C, int OC, int k, int s, int p) {
    return k == 3 && s == 1 && p == 1 && C >= WINO_MIN_CHANNELS && OC >= WINO_MIN_CHANNELS;
}

// 4x4 stride-2 pad-1 convs and transposed convs (the VAE's resampling) run
// as 3x3 convs on 2x2 phases, through Winograd (phase_conv.h), when the
// 3x3 conv they become has WINO_MIN_CHANNELS a side.
static int conv_is_phase(int C, int OC, int H, int W, int k, int s, int p) {
    return k == 4 && s == 2 && p == 1 && H % 2 == 0 && W % 2 == 0 &&
           4 * C >= WINO_MIN_CHANNELS && OC >= WINO_MIN_CHANNELS;
}
static int convt_is_phase(int C, int OC, int k, int s, int p) {
    return k == 4 && s == 2 && p == 1 && C >= WINO_MIN_CHANNELS && 4 * OC >= WINO_MIN_CHANNELS;
}

size_t conv2d_scratch_floats(int B, int C, int H, int W, int OC, int k, int s, int p) {
    if (conv_is_wino(C, OC, k, s, p)) return winograd_scratch_floats(B, C, H, W, OC);
    if (conv_is_phase(C, OC, H, W, k, s, p)) return phase_conv_scratch_floats(B, C, H, W, OC);
    if (conv_is_1x1(k, s, p)) // in and dout, channel-major (C + OC, B*H*W)
        return ((size_t)C + OC) * B * H * W;
    ConvPlan q = conv_plan(B, C, H, W, OC, k, s, p);
    // slots | per-chunk weight-gradient partials (nchunks, OC, K) | flipped weights (C, KO)
    return (size_t)q.slots * q.slot + (size_t)q.nchunks * OC * q.K + (size_t)C * q.KO;
}

size_t conv2d_prep_floats(int C, int OC, int k, int s, int p) {
    return conv_is_wino(C, OC, k, s, p) ? winograd_weights_floats(C, OC) : 0;
}

void conv2d_prep(float *prep, const float *w, int C, int OC, int k, int s, int p) {
    if (conv_is_wino(C, OC, k, s, p)) winograd_weights(prep, w, C, OC);
}

void conv2d_forward(float *out, const float *in, const float *w, const float *b,
                    int B, int C, int H, int W, int OC, int k, int s, int p,
                    float *scratch) {
    conv2d_forward_prep(out, in, w, NULL, b, B, C, H, W, OC, k, s, p, scratch);
}

void conv2d_forward_prep(float *out, const float *in, const float *w, const float *prep,
                         const float *b, int B, int C, int H, int W, int OC, int k, int s,
                         int p, float *scratch) {
    if (conv_is_wino(C, OC, k, s, p)) {
        winograd_conv_forward(out, in, w, prep, b, B, C, H, W, OC, scratch);
        return;
    }
    if (conv_is_phase(C, OC, H, W, k, s, p)) {
        phase_conv_forward(out, in, w, b, B, C, H, W, OC, scratch);
        return;
    }
    if (conv_is_1x1(k, s, p)) {
        size_t HW = (size_t)H * W;
        // in_b (C, HW) is already the column matrix; one small GEMM per
        // item, items split across threads (each GEMM single-threaded).
#pragma omp parallel for schedule(static)
        for (int bi = 0; bi < B; bi++) {
            float *o = out + (size_t)bi * OC * HW; // (OC, HW)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, OC, (int)HW, C,
                        1.0f, w, C, in + (size_t)bi * C * HW, (int)HW, 0.0f, o, (int)HW);
            if (b)
                for (int oc = 0; oc < OC; oc++)
                    for (size_t i = 0; i < HW; i++) o[oc * HW + i] += b[oc];
        }
        return;
    }
    ConvPlan q = conv_plan(B, C, H, W, OC, k, s, p);
    size_t OHW = (size_t)q.OH * q.OW, HW = (size_t)H * W;
#pragma omp parallel num_threads(conv_threads(&q))
    {
        float *slot = scratch + (size_t)omp_get_thread_num() * q.slot;
#pragma omp for schedule(static)
        for (int ci = 0; ci < q.nchunks; ci++) {
            int b0 = ci * q.nb, nb = B - b0 < q.nb ? B - b0 : q.nb;
            int nc = nb * (int)OHW;
            float *cols = slot;                             // (K, nb*OHW)
            float *res = slot + (size_t)q.K * q.nb * OHW;   // (OC, nb*OHW)
            im2col(cols, in + (size_t)b0 * C * HW, nb, C, H, W, k, s, p, q.OH, q.OW, 0,
                   (size_t)C * nb);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, OC, nc, q.K,
                        1.0f, w, q.K, cols, nc, 0.0f, res, nc);
            cn_to_nchw(out + (size_t)b0 * OC * OHW, res, b, nb, OC, (int)OHW, 0, 0,
                       (size_t)OC * nb);
        }
    }
}

// acc: din += (conv2d_backward) or din = (conv2d_backward_set) its gradient.
static void conv2d_backward_impl(float *din, float *dw, float *db, const float *dout,
                                 const float *in, const float *w,
                                 int B, int C, int H, int W, int OC, int k, int s, int p,
                                 float *scratch, int acc) {
    if (conv_is_wino(C, OC, k, s, p)) {
        if (db) bias_backward(db, dout, B, OC, H * W);
        winograd_conv_backward(din, dw, dout, in, w, B, C, H, W, OC, scratch, acc);
        return;
    }
    if (conv_is_phase(C, OC, H, W, k, s, p)) {
        if (db) bias_backward(db, dout, B, OC, H * W / 4);
        phase_conv_backward(din, dw, dout, in, w, B, C, H, W, OC, scratch, acc);
        return;
    }
    if (conv_is_1x1(k, s, p)) {
        int HW = H * W;
        size_t N = (size_t)B * HW;
        float *inp = scratch, *doutp = scratch + (size_t)C * N; // (C, N), (OC, N)
        if (db) bias_backward(db, dout, B, OC, HW);
#pragma omp parallel
        {
            size_t p0, p1, q0, q1;
            thread_range(&p0, &p1, (size_t)OC * B);
            thread_range(&q0, &q1, (size_t)C * B);
            nchw_to_cn(doutp, dout, B, OC, HW, p0, p1);
            nchw_to_cn(inp, in, B, C, HW, q0, q1);
        }
        // dW (OC, C) += dout_perm (OC, N) x in_perm^T (N, C)
        gemm_split(CblasNoTrans, CblasTrans, OC, C, (int)N,
                    1.0f, doutp, (int)N, inp, (int)N, 1.0f, dw, C);
        if (!din) return;
        // din_b (C, HW) (+)= W^T (C, OC) x dout_b (OC, HW), items across threads
#pragma omp parallel for schedule(static)
        for (int bi = 0; bi < B; bi++)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C, HW, OC,
                        1.0f, w, C, dout + (size_t)bi * OC * HW, HW, acc ? 1.0f : 0.0f,
                        din + (size_t)bi * C * HW, HW);
        return;
    }
    ConvPlan q = conv_plan(B, C, H, W, OC, k, s, p);
    size_t OHW = (size_t)q.OH * q.OW, HW = (size_t)H * W;
    float *dwp = scratch + (size_t)q.slots * q.slot;     // (nchunks, OC, K)
    float *wf = dwp + (size_t)q.nchunks * OC * q.K;       // (C, OC*k*k)
    if (db) bias_backward(db, dout, B, OC, (int)OHW);
    if (din && q.dflip) {
        // A stride-1 conv's input gradient is itself a stride-1 conv of dout
        // with the kernel flipped in space and its channel axes swapped,
        // padded by k-1-p: a gather (im2col) instead of col2im's scatter.
#pragma omp parallel for schedule(static) if ((size_t)C * q.KO >= 16384)
        for (int c = 0; c < C; c++)
            for (int oc = 0; oc < OC; oc++)
                for (int t = 0; t < k * k; t++)
                    wf[((size_t)c * OC + oc) * k * k + t] =
                        w[((size_t)oc * C + c) * k * k + (k * k - 1 - t)];
    }
#pragma omp parallel num_threads(conv_threads(&q))
    {
        float *slot = scratch + (size_t)omp_get_thread_num() * q.slot;
#pragma omp for schedule(static)
        for (int ci = 0; ci < q.nchunks; ci++) {
            int b0 = ci * q.nb, nb = B - b0 < q.nb ? B - b0 : q.nb;
            int nc = nb * (int)OHW, ni = nb * (int)HW;
            size_t big = (size_t)q.K * q.nb * OHW, big2 = (size_t)q.KO * q.nb * HW;
            float *cols = slot;                                      // (K, nb*OHW)
            float *doutc = slot + (big > big2 ? big : big2);         // (OC, nb*OHW)
            float *dinc = doutc + (size_t)OC * q.nb * OHW;           // (C, nb*HW)
            const float *dout_b = dout + (size_t)b0 * OC * OHW;      // (nb, OC, OH, OW)
            im2col(cols, in + (size_t)b0 * C * HW, nb, C, H, W, k, s, p, q.OH, q.OW, 0,
                   (size_t)C * nb);
            nchw_to_cn(doutc, dout_b, nb, OC, (int)OHW, 0, (size_t)OC * nb);
            // this chunk's dW (OC, K) = dout_c (OC, nc) x cols^T (nc, K)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, OC, q.K, nc,
                        1.0f, doutc, nc, cols, nc, 0.0f, dwp + (size_t)ci * OC * q.K, q.K);
            if (!din) continue;
            float *din_b = din + (size_t)b0 * C * HW;                // (nb, C, H, W)
            if (q.dflip) {
                // dcols (OC*k*k, nb*HW) of dout, then din_c (C, nb*HW) = wf x dcols
                im2col(cols, dout_b, nb, OC, q.OH, q.OW, k, 1, k - 1 - p, H, W, 0,
                       (size_t)OC * nb);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, C, ni, q.KO,
                            1.0f, wf, q.KO, cols, ni, 0.0f, dinc, ni);
                cn_to_nchw(din_b, dinc, NULL, nb, C, (int)HW, acc, 0, (size_t)C * nb);
            } else {
                // dcols (K, nc) = W^T (K, OC) x dout_c (OC, nc), scattered back
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, q.K, nc, OC,
                            1.0f, w, q.K, doutc, nc, 0.0f, cols, nc);
                if (!acc) memset(din_b, 0, (size_t)nb * C * HW * sizeof(float));
                col2im_add(din_b, cols, nb, C, H, W, k, s, p, q.OH, q.OW, 0, (size_t)C * nb);
            }
        }
    }
    // dW += the chunk partials, in chunk order
    size_t nw = (size_t)OC * q.K;
#pragma omp parallel for schedule(static) if (nw >= 4096)
    for (size_t i = 0; i < nw; i++) {
        float acc = dw[i];
        for (int ci = 0; ci < q.nchunks; ci++) acc += dwp[(size_t)ci * nw + i];
        dw[i] = acc;
    }
}

void conv2d_backward(float *din, float *dw, float *db, const float *dout,
                     const float *in, const float *w,
                     int B, int C, int H, int W, int OC, int k, int s, int p,
                     float *scratch) {
    conv2d_backward_impl(din, dw, db, dout, in, w, B, C, H, W, OC, k, s, p, scratch, 1);
}

void conv2d_backward_set(float *din, float *dw, float *db, const float *dout,
                         const float *in, const float *w,
                         int B, int C, int H, int W, int OC, int k, int s, int p,
                         float *scratch) {
    conv2d_backward_impl(din, dw, db, dout, in, w, B, C, H, W, OC, k, s, p, scratch, 0);
}

// ---------------------------------------------------------------------------
// conv_transpose2d: the adjoint of the conv2d that maps (OC, OH, OW) to
// (C, H, W) with weight (C, OC, k, k), which is PyTorch's layout as it stands.

static int convt_out(int n, int k, int s, int p) { return (n - 1) * s - 2 * p + k; }

size_t conv_transpose2d_scratch_floats(int B, int C, int H, int W, int OC, int k, int s,
                                       int p) {
    if (convt_is_phase(C, OC, k, s, p)) return phase_convt_scratch_floats(B, C, H, W, OC);
    size_t N = (size_t)B * H * W;
    // cols (OC*k*k, N) + input permuted / input gradient permuted (C, N)
    return ((size_t)OC * k * k + C) * N;
}

void conv_transpose2d_forward(float *out, const float *in, const float *w,
                              const float *b, int B, int C, int H, int W,
                              int OC, int k, int s, int p, float *scratch) {
    if (convt_is_phase(C, OC, k, s, p)) {
        phase_convt_forward(out, in, w, b, B, C, H, W, OC, scratch);
        return;
    }
    int OH = convt_out(H, k, s, p), OW = convt_out(W, k, s, p);
    size_t HW = (size_t)H * W, N = (size_t)B * HW, OHW = (size_t)OH * OW;
    int M = OC * k * k;
    float *cols = scratch;                 // (OC*k*k, B*H*W)
    float *inp = scratch + (size_t)M * N;  // (C, B*H*W)
#pragma omp parallel
    {
        size_t p0, p1;
        thread_range(&p0, &p1, (size_t)C * B);
        nchw_to_cn(inp, in, B, C, (int)HW, p0, p1);
    }
    // cols (M, N) = W^T (M, C) x in_perm (C, N)
    gemm_split(CblasTrans, CblasNoTrans, M, (int)N, C,
                1.0f, w, M, inp, (int)N, 0.0f, cols, (int)N);
    // each thread's (item, channel) planes of out: the bias, then col2im's sums
#pragma omp parallel
    {
        size_t p0, p1;
        thread_range(&p0, &p1, (size_t)B * OC);
        for (size_t pl = p0; pl < p1; pl++) {
            float *o = out + pl * OHW;
            float bv = b ? b[pl % OC] : 0.0f;
            for (size_t i = 0; i < OHW; i++) o[i] = bv;
        }
        col2im_add(out, cols, B, OC, OH, OW, k, s, p, H, W, p0, p1);
    }
}

// acc: din += (conv_transpose2d_backward) or din = (..._set) its gradient.
static void conv_transpose2d_backward_impl(float *din, float *dw, float *db,
                                           const float *dout, const float *in,
                                           const float *w, int B, int C, int H, int W,
                                           int OC, int k, int s, int p, float *scratch,
                                           int acc) {
    int OH = convt_out(H, k, s, p), OW = convt_out(W, k, s, p);
    size_t HW = (size_t)H * W, N = (size_t)B * HW, OHW = (size_t)OH * OW;
    int M = OC * k * k;
    if (db) bias_backward(db, dout, B, OC, (int)OHW);
    if (convt_is_phase(C, OC, k, s, p)) {
        phase_convt_backward(din, dw, dout, in, w, B, C, H, W, OC, scratch, acc);
        return;
    }
    float *dcols = scratch;                // (OC*k*k, B*H*W)
    float *inp = scratch + (size_t)M * N;  // (C, B*H*W)
#pragma omp parallel
    {
        size_t p0, p1, q0, q1;
        thread_range(&p0, &p1, (size_t)OC * B);
        thread_range(&q0, &q1, (size_t)C * B);
        im2col(dcols, dout, B, OC, OH, OW, k, s, p, H, W, p0, p1);
        nchw_to_cn(inp, in, B, C, (int)HW, q0, q1);
    }
    // dW (C, M) += in_perm (C, N) x dcols^T (N, M)
    gemm_split(CblasNoTrans, CblasTrans, C, M, (int)N,
                1.0f, inp, (int)N, dcols, (int)N, 1.0f, dw, M);
    if (!din) return;
    // din_perm (C, N) = W (C, M) x dcols (M, N), reusing the in_perm space
    gemm_split(CblasNoTrans, CblasNoTrans, C, (int)N, M,
                1.0f, w, M, dcols, (int)N, 0.0f, inp, (int)N);
#pragma omp parallel
    {
        size_t p0, p1;
        thread_range(&p0, &p1, (size_t)B * C);
        cn_to_nchw(din, inp, NULL, B, C, (int)HW, acc, p0, p1);
    }
}

void conv_transpose2d_backward(float *din, float *dw, float *db,
                               const float *dout, const float *in,
                               const float *w, int B, int C, int H, int W,
                               int OC, int k, int s, int p, float *scratch) {
    conv_transpose2d_backward_impl(din, dw, db, dout, in, w, B, C, H, W, OC, k, s, p,
                                   scratch, 1);
}

void conv_transpose2d_backward_set(float *din, float *dw, float *db,
                                   const float *dout, const float *in,
                                   const float *w, int B, int C, int H, int W,
                                   int OC, int k, int s, int p, float *scratch) {
    conv_transpose2d_backward_impl(din, dw, db, dout, in, w, B, C, H, W, OC, k, s, p,
                                   scratch, 0);
}

// ---------------------------------------------------------------------------
// linear

void linear_forward(float *out, const float *in, const float *w, const float *b,
                    int N, int IN, int OUT) {
    float beta = 0.0f;
    if (b) {
        for (int n = 0; n < N; n++) memcpy(out + (size_t)n * OUT, b, (size_t)OUT * sizeof(float));
        beta = 1.0f;
    }
    // out (N, OUT) = in (N, IN) x w^T (IN, OUT) (+ bias)
    gemm_split(CblasNoTrans, CblasTrans, N, OUT, IN,
                1.0f, in, IN, w, IN, beta, out, OUT);
}

void linear_backward(float *din, float *dw, float *db, const float *dout,
                     const float *in, const float *w, int N, int IN, int OUT) {
    if (din) // din (N, IN) += dout (N, OUT) x w (OUT, IN)
        gemm_split(CblasNoTrans, CblasNoTrans, N, IN, OUT,
                    1.0f, dout, OUT, w, IN, 1.0f, din, IN);
    // dw (OUT, IN) += dout^T (OUT, N) x in (N, IN)
    gemm_split(CblasTrans, CblasNoTrans, OUT, IN, N,
                1.0f, dout, OUT, in, IN, 1.0f, dw, IN);
    if (db) {
        for (int o = 0; o < OUT; o++) {
            double acc = 0.0;
            for (int n = 0; n < N; n++) acc += dout[(size_t)n * OUT + o];
            db[o] += (float)acc;
        }
    }
}

// ---------------------------------------------------------------------------
// SiLU. libm's expf is a call per element, which keeps GCC from vectorising
// the loop (it was 5 to 16% of a training step). exp_approx is inline,
// branch-free float arithmetic that vectorises (AVX-512 here), within 1 ulp
// of e^x (0.92 ulp measured against double exp over [-87, 88]); beyond that
// range sigmoid is already 0 or 1 in float.

// e^x for x clamped to [-87, 88] (so 2^n stays a normal float):
// x = n ln2 + r with |r| <= ln2/2, e^r by a degree-7 Taylor polynomial
// (truncation error below 1e-8 relative), times 2^n built in the exponent bits.
static inline float exp_approx(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    // round x/ln2 to an integer by adding 1.5 * 2^23: the sum's low mantissa
    // bits are the integer (the classic shifter trick, exact in float)
    const float shifter = 12582912.0f;
    float t = x * 1.44269504f + shifter;
    float n = t - shifter;
    // r = x - n ln2 with ln2 split in two, so n * hi is exact
    float r = fmaf(-n, 0.693145751953125f, x);
    r = fmaf(-n, 1.428606765330187e-06f, r);
    float p = 1.0f / 5040.0f;
    p = fmaf(p, r, 1.0f / 720.0f);
    p = fmaf(p, r, 1.0f / 120.0f);
    p = fmaf(p, r, 1.0f / 24.0f);
    p = fmaf(p, r, 1.0f / 6.0f);
    p = fmaf(p, r, 0.5f);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    int32_t ti;
    memcpy(&ti, &t, sizeof ti);
    int32_t bits = (ti - 0x4B400000 + 127) << 23; // 2^n
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

void silu_forward(float *out, const float *in, size_t n) {
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x = in[i];
        out[i] = x / (1.0f + exp_approx(-x));
    }
}

void silu_backward(float *din, const float *dout, const float *in, size_t n) {
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x = in[i];
        float sg = 1.0f / (1.0f + exp_approx(-x));
        din[i] += dout[i] * sg * (1.0f + x * (1.0f - sg));
    }
}

void silu_backward_set(float *din, const float *dout, const float *in, size_t n) {
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x = in[i];
        float sg = 1.0f / (1.0f + exp_approx(-x));
        din[i] = dout[i] * sg * (1.0f + x * (1.0f - sg));
    }
}

// ---------------------------------------------------------------------------
// GroupNorm

// mean and 1 / sqrt(var + eps) of x (n), two passes: the variance from
// centred values does not cancel
static void group_stats(double *mu, double *rs, const float *x, size_t n, double eps) {
    double acc[SUM_LANES] = {0};
    double m = sum_lanes(acc, add_lanes(acc, x, n)) / (double)n;
    for (int l = 0; l < SUM_LANES; l++) acc[l] = 0.0;
    double tail = 0.0;
    size_t i = 0, nl = n - n % SUM_LANES;
    for (; i < nl; i += SUM_LANES)
        for (int l = 0; l < SUM_LANES; l++) {
            double d = x[i + l] - m;
            acc[l] += d * d;
        }
    for (; i < n; i++) tail += (x[i] - m) * (x[i] - m);
    *mu = m;
    *rs = 1.0 / sqrt(sum_lanes(acc, tail) / (double)n + eps);
}

int groupnorm_groups(int C) {
    int g = C < 32 ? C : 32;
    while (g > 1 && C % g) g--;
    return g;
}

void groupnorm_forward(float *out, float *mean, float *rstd, const float *in,
                       const float *w, const float *b, int B, int C, int HW, int G) {
    groupnorm_forward_eps(out, mean, rstd, in, w, b, B, C, HW, G, 1e-5);
}

void groupnorm_forward_eps(float *out, float *mean, float *rstd, const float *in,
                           const float *w, const float *b, int B, int C, int HW, int G,
                           double eps) {
    int cg = C / G;
    size_t n = (size_t)cg * HW;
#pragma omp parallel for collapse(2) schedule(static)
    for (int bi = 0; bi < B; bi++) {
        for (int g = 0; g < G; g++) {
            size_t base = ((size_t)bi * C + (size_t)g * cg) * HW; // group's (cg, HW)
            const float *x = in + base;
            double mu, rs;
            group_stats(&mu, &rs, x, n, eps);
            mean[bi * G + g] = (float)mu;
            rstd[bi * G + g] = (float)rs;
            float *o = out + base;
            for (int c = 0; c < cg; c++) {
                int ch = g * cg + c;
                // fold normalisation and affine into one scale and shift
                float sc = (float)(rs * w[ch]);
                float sh = (float)(b[ch] - mu * rs * w[ch]);
                for (int i = 0; i < HW; i++) o[c * HW + i] = x[c * HW + i] * sc + sh;
            }
        }
    }
}

void groupnorm_backward(float *din, float *dw, float *db, const float *dout,
                        const float *in, const float *mean, const float *rstd,
                        const float *w, int B, int C, int HW, int G) {
    int cg = C / G;
    // weight and bias gradients: one channel per thread, summed over items in order
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        int g = c / cg;
        double sw = 0.0, sb = 0.0;
        for (int bi = 0; bi < B; bi++) {
            const float *x = in + ((size_t)bi * C + c) * HW;
            const float *d = dout + ((size_t)bi * C + c) * HW;
            double mu = mean[bi * G + g], rs = rstd[bi * G + g];
            for (int i = 0; i < HW; i++) {
                sw += d[i] * ((x[i] - mu) * rs);
                sb += d[i];
            }
        }
        dw[c] += (float)sw;
        db[c] += (float)sb;
    }
    if (!din) return;
    size_t n = (size_t)cg * HW;
    // din = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dout * w
#pragma omp parallel for collapse(2) schedule(static)
    for (int bi = 0; bi < B; bi++) {
        for (int g = 0; g < G; g++) {
            size_t base = ((size_t)bi * C + (size_t)g * cg) * HW;
            const float *x = in + base, *d = dout + base;
            double mu = mean[bi * G + g], rs = rstd[bi * G + g];
            double s1 = 0.0, s2 = 0.0;
            for (int c = 0; c < cg; c++) {
                double wc = w[g * cg + c];
                for (int i = 0; i < HW; i++) {
                    double dx = d[c * HW + i] * wc;
                    s1 += dx;
                    s2 += dx * ((x[c * HW + i] - mu) * rs);
                }
            }
            double m1 = s1 / (double)n, m2 = s2 / (double)n;
            float *o = din + base;
            for (int c = 0; c < cg; c++) {
                double wc = w[g * cg + c];
                for (int i = 0; i < HW; i++) {
                    double xh = (x[c * HW + i] - mu) * rs;
                    o[c * HW + i] += (float)(rs * (d[c * HW + i] * wc - m1 - xh * m2));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// GroupNorm then SiLU, as the UNet applies them before every 3x3 conv. Only
// the SiLU output (the conv's input) and the group statistics are stored;
// the backward recomputes the GroupNorm output y = x * sc + sh from them with
// the same float operations as the forward, so y is bit-identical.

void groupnorm_silu_forward(float *act, float *mean, float *rstd, const float *in,
                            const float *w, const float *b, int B, int C, int HW, int G) {
    groupnorm_silu_forward_eps(act, mean, rstd, in, w, b, B, C, HW, G, 1e-5);
}

void groupnorm_silu_forward_eps(float *act, float *mean, float *rstd, const float *in,
                                const float *w, const float *b, int B, int C, int HW,
                                int G, double eps) {
    int cg = C / G;
#pragma omp parallel for collapse(2) schedule(static)
    for (int bi = 0; bi < B; bi++) {
        for (int g = 0; g < G; g++) {
            size_t base = ((size_t)bi * C + (size_t)g * cg) * HW; // group's (cg, HW)
            double mu, rs;
            group_stats(&mu, &rs, in + base, (size_t)cg * HW, eps);
            mean[bi * G + g] = (float)mu;
            rstd[bi * G + g] = (float)rs;
            for (int c = 0; c < cg; c++) {
                int ch = g * cg + c;
                float sc = (float)(rs * w[ch]), sh = (float)(b[ch] - mu * rs * w[ch]);
                const float *x = in + base + (size_t)c * HW;
                float *o = act + base + (size_t)c * HW;
#pragma omp simd
                for (int i = 0; i < HW; i++) {
                    float y = x[i] * sc + sh;
                    o[i] = y / (1.0f + exp_approx(-y));
                }
            }
        }
    }
}

size_t groupnorm_silu_scratch_floats(int B, int C, int HW) {
    // dy (B, C, HW) | per-(item, channel) partials of dw and db, 2 x (B, C)
    // doubles, after at most one float of padding to align them
    return (size_t)B * C * HW + 4 * (size_t)B * C + 1;
}

// acc: din += (groupnorm_silu_backward) or din = (..._set) its gradient.
static void groupnorm_silu_backward_impl(float *din, float *dw, float *db, const float *dact,
                                         const float *in, const float *mean,
                                         const float *rstd, const float *w, const float *b,
                                         int B, int C, int HW, int G, float *scratch,
                                         int acc) {
    int cg = C / G;
    size_t n = (size_t)cg * HW;
    float *dyall = scratch;                                        // (B, C, HW)
    uintptr_t pa = (uintptr_t)(scratch + (size_t)B * C * HW);
    double *pw = (double *)((pa + 7) & ~(uintptr_t)7);             // (B, C)
    double *pb = pw + (size_t)B * C;                               // (B, C)
#pragma omp parallel for collapse(2) schedule(static)
    for (int bi = 0; bi < B; bi++) {
        for (int g = 0; g < G; g++) {
            size_t base = ((size_t)bi * C + (size_t)g * cg) * HW;
            double mu = mean[bi * G + g], rs = rstd[bi * G + g];
            float fmu = (float)mu, frs = (float)rs;
            double s1 = 0.0, s2 = 0.0; // sums of dxhat and dxhat * xhat over the group
            for (int c = 0; c < cg; c++) {
                int ch = g * cg + c;
                float sc = (float)(rs * w[ch]), sh = (float)(b[ch] - mu * rs * w[ch]);
                const float *x = in + base + (size_t)c * HW, *da = dact + base + (size_t)c * HW;
                float *dy = dyall + base + (size_t)c * HW; // d GroupNorm output
#pragma omp simd
                for (int i = 0; i < HW; i++) {
                    float y = x[i] * sc + sh;
                    float sg = 1.0f / (1.0f + exp_approx(-y));
                    dy[i] = da[i] * sg * (1.0f + y * (1.0f - sg));
                }
                double aw[SUM_LANES] = {0}, ab[SUM_LANES] = {0}, tw = 0.0, tb = 0.0;
                int i = 0, nl = HW - HW % SUM_LANES;
                for (; i < nl; i += SUM_LANES)
                    for (int l = 0; l < SUM_LANES; l++) {
                        aw[l] += dy[i + l] * ((x[i + l] - fmu) * frs);
                        ab[l] += dy[i + l];
                    }
                for (; i < HW; i++) {
                    tw += dy[i] * ((x[i] - fmu) * frs);
                    tb += dy[i];
                }
                double sw = sum_lanes(aw, tw), sb = sum_lanes(ab, tb);
                pw[(size_t)bi * C + ch] = sw;
                pb[(size_t)bi * C + ch] = sb;
                s1 += sb * w[ch];
                s2 += sw * w[ch];
            }
            if (!din) continue;
            // din = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dy * w
            float m1 = (float)(s1 / (double)n), m2 = (float)(s2 / (double)n);
            for (int c = 0; c < cg; c++) {
                float wc = w[g * cg + c];
                const float *x = in + base + (size_t)c * HW, *dy = dyall + base + (size_t)c * HW;
                float *o = din + base + (size_t)c * HW;
                if (acc) {
#pragma omp simd
                    for (int i = 0; i < HW; i++)
                        o[i] += frs * (dy[i] * wc - m1 - (x[i] - fmu) * frs * m2);
                } else {
#pragma omp simd
                    for (int i = 0; i < HW; i++)
                        o[i] = frs * (dy[i] * wc - m1 - (x[i] - fmu) * frs * m2);
                }
            }
        }
    }
    // weight and bias gradients: per channel, the item partials added in item order
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        double sw = 0.0, sb = 0.0;
        for (int bi = 0; bi < B; bi++) {
            sw += pw[(size_t)bi * C + c];
            sb += pb[(size_t)bi * C + c];
        }
        dw[c] += (float)sw;
        db[c] += (float)sb;
    }
}

void groupnorm_silu_backward(float *din, float *dw, float *db, const float *dact,
                             const float *in, const float *mean, const float *rstd,
                             const float *w, const float *b, int B, int C, int HW, int G,
                             float *scratch) {
    groupnorm_silu_backward_impl(din, dw, db, dact, in, mean, rstd, w, b, B, C, HW, G,
                                 scratch, 1);
}

void groupnorm_silu_backward_set(float *din, float *dw, float *db, const float *dact,
                                 const float *in, const float *mean, const float *rstd,
                                 const float *w, const float *b, int B, int C, int HW,
                                 int G, float *scratch) {
    groupnorm_silu_backward_impl(din, dw, db, dact, in, mean, rstd, w, b, B, C, HW, G,
                                 scratch, 0);
}

// ---------------------------------------------------------------------------
// nearest upsampling x2

void upsample2x_forward(float *out, const float *in, int B, int C, int H, int W) {
    int OW = 2 * W;
#pragma omp parallel for schedule(static)
    for (int pl = 0; pl < B * C; pl++) {
        const float *x = in + (size_t)pl * H * W;
        float *o = out + (size_t)pl * 4 * H * W;
        for (int i = 0; i < H; i++) {
            float *r0 = o + (size_t)(2 * i) * OW, *r1 = r0 + OW;
            for (int j = 0; j < W; j++) {
                float v = x[i * W + j];
                r0[2 * j] = r0[2 * j + 1] = v;
                r1[2 * j] = r1[2 * j + 1] = v;
            }
        }
    }
}

void upsample2x_backward(float *din, const float *dout, int B, int C, int H, int W) {
    int OW = 2 * W;
#pragma omp parallel for schedule(static)
    for (int pl = 0; pl < B * C; pl++) {
        float *dx = din + (size_t)pl * H * W;
        const float *d = dout + (size_t)pl * 4 * H * W;
        for (int i = 0; i < H; i++) {
            const float *r0 = d + (size_t)(2 * i) * OW, *r1 = r0 + OW;
            for (int j = 0; j < W; j++)
                dx[i * W + j] += (r0[2 * j] + r0[2 * j + 1]) + (r1[2 * j] + r1[2 * j + 1]);
        }
    }
}

// ---------------------------------------------------------------------------
// concatenation on channels

void concat_channels_forward(float *out, const float *a, const float *b,
                             int B, int Ca, int Cb, int HW) {
    size_t na = (size_t)Ca * HW, nb = (size_t)Cb * HW;
#pragma omp parallel for schedule(static)
    for (int bi = 0; bi < B; bi++) {
        float *o = out + (size_t)bi * (na + nb);
        memcpy(o, a + (size_t)bi * na, na * sizeof(float));
        memcpy(o + na, b + (size_t)bi * nb, nb * sizeof(float));
    }
}

void concat_channels_backward(float *da, float *db, const float *dout,
                              int B, int Ca, int Cb, int HW) {
    size_t na = (size_t)Ca * HW, nb = (size_t)Cb * HW;
#pragma omp parallel for schedule(static)
    for (int bi = 0; bi < B; bi++) {
        const float *d = dout + (size_t)bi * (na + nb);
        if (da) {
            float *x = da + (size_t)bi * na;
            for (size_t i = 0; i < na; i++) x[i] += d[i];
        }
        if (db) {
            float *x = db + (size_t)bi * nb;
            for (size_t i = 0; i < nb; i++) x[i] += d[na + i];
        }
    }
}

// ---------------------------------------------------------------------------
// per-(item, channel) bias over space

void add_channel_bias_forward(float *x, const float *v, int B, int C, int HW) {
#pragma omp parallel for schedule(static)
    for (int pl = 0; pl < B * C; pl++) {
        float *r = x + (size_t)pl * HW;
        float vv = v[pl];
        for (int i = 0; i < HW; i++) r[i] += vv;
    }
}

void add_channel_bias_backward(float *dv, const float *dx, int B, int C, int HW) {
#pragma omp parallel for schedule(static)
    for (int pl = 0; pl < B * C; pl++) {
        double acc[SUM_LANES] = {0};
        double tail = add_lanes(acc, dx + (size_t)pl * HW, HW);
        dv[pl] += (float)sum_lanes(acc, tail);
    }
}

// ---------------------------------------------------------------------------
// losses. The sums are split into a fixed number of chunks (not one per
// thread) whose partials are added in order, so they are thread-count invariant.

#define LOSS_CHUNKS 64

double sq_err_forward(const float *a, const float *b, size_t n) {
    double part[LOSS_CHUNKS];
    size_t chunk = (n + LOSS_CHUNKS - 1) / LOSS_CHUNKS;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < LOSS_CHUNKS; c++) {
        size_t lo = (size_t)c * chunk, hi = lo + chunk < n ? lo + chunk : n;
        double acc = 0.0;
        for (size_t i = lo; i < hi; i++) {
            double d = (double)a[i] - (double)b[i];
            acc += d * d;
        }
        part[c] = acc;
    }
    double sum = 0.0;
    for (int c = 0; c < LOSS_CHUNKS; c++) sum += part[c];
    return sum;
}

void sq_err_backward(float *da, const float *a, const float *b, size_t n, float scale) {
    float s2 = 2.0f * scale;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) da[i] += s2 * (a[i] - b[i]);
}

double gaussian_kl_forward(const float *mean, const float *logvar, size_t n) {
    double part[LOSS_CHUNKS];
    size_t chunk = (n + LOSS_CHUNKS - 1) / LOSS_CHUNKS;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < LOSS_CHUNKS; c++) {
        size_t lo = (size_t)c * chunk, hi = lo + chunk < n ? lo + chunk : n;
        double acc = 0.0;
        for (size_t i = lo; i < hi; i++) {
            double m = mean[i], lv = logvar[i];
            acc += 0.5 * (m * m + exp(lv) - 1.0 - lv);
        }
        part[c] = acc;
    }
    double sum = 0.0;
    for (int c = 0; c < LOSS_CHUNKS; c++) sum += part[c];
    return sum;
}

void gaussian_kl_backward(float *dmean, float *dlogvar, const float *mean,
                          const float *logvar, size_t n, float scale) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        if (dmean) dmean[i] += scale * mean[i];
        if (dlogvar) dlogvar[i] += scale * 0.5f * (expf(logvar[i]) - 1.0f);
    }
}

// ---------------------------------------------------------------------------
// attention. Per (item, head), with D = C / heads, Q, K, V are (D, T) slices
// of the channel-major inputs. S (T, T) = Q^T K * scale, P = softmax rows,
// out (D, T) = V P^T. (item, head) pairs run on separate threads, each doing
// its own single-threaded GEMMs.

void attention_forward(float *out, float *att, const float *q, const float *k,
                       const float *v, int B, int C, int T, int heads) {
    int D = C / heads;
    float scale = 1.0f / sqrtf((float)D);
    size_t TT = (size_t)T * T;
#pragma omp parallel for collapse(2) schedule(static)
    for (int bi = 0; bi < B; bi++) {
        for (int h = 0; h < heads; h++) {
            size_t off = ((size_t)bi * C + (size_t)h * D) * T; // (D, T) slice
            float *P = att + ((size_t)bi * heads + h) * TT;    // (T, T)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, T, D,
                        scale, q + off, T, k + off, T, 0.0f, P, T);
            for (int i = 0; i < T; i++) {
                float *r = P + (size_t)i * T;
                float mx = r[0];
                for (int j = 1; j < T; j++) mx = r[j] > mx ? r[j] : mx;
                double sum = 0.0;
                for (int j = 0; j < T; j++) {
                    r[j] = expf(r[j] - mx);
                    sum += r[j];
                }
                float inv = (float)(1.0 / sum);
                for (int j = 0; j < T; j++) r[j] *= inv;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, D, T, T,
                        1.0f, v + off, T, P, T, 0.0f, out + off, T);
        }
    }
}

size_t attention_scratch_floats(int B, int C, int T, int heads) {
    (void)C;
    return (size_t)B * heads * T * T; // dP / dS (B, heads, T, T)
}

// beta 1: dq, dk, dv += their gradients (attention_backward); 0: = (..._set).
static void attention_backward_impl(float *dq, float *dk, float *dv, const float *dout,
                                    const float *att, const float *q, const float *k,
                                    const float *v, int B, int C, int T, int heads,
                                    float *scratch, float beta) {
    int D = C / heads;
    float scale = 1.0f / sqrtf((float)D);
    size_t TT = (size_t)T * T;
#pragma omp parallel for collapse(2) schedule(static)
    for (int bi = 0; bi < B; bi++) {
        for (int h = 0; h < heads; h++) {
            size_t off = ((size_t)bi * C + (size_t)h * D) * T;
            const float *P = att + ((size_t)bi * heads + h) * TT; // (T, T)
            float *dS = scratch + ((size_t)bi * heads + h) * TT;  // (T, T)
            // dV (D, T) (+)= dout (D, T) x P (T, T)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, D, T, T,
                        1.0f, dout + off, T, P, T, beta, dv + off, T);
            // dP (T, T) = dout^T (T, D) x V (D, T)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, T, D,
                        1.0f, dout + off, T, v + off, T, 0.0f, dS, T);
            // softmax backward: dS = P * (dP - sum_j P dP)
            for (int i = 0; i < T; i++) {
                const float *pr = P + (size_t)i * T;
                float *r = dS + (size_t)i * T;
                double dot = 0.0;
                for (int j = 0; j < T; j++) dot += (double)pr[j] * r[j];
                float fd = (float)dot;
                for (int j = 0; j < T; j++) r[j] = pr[j] * (r[j] - fd);
            }
            // dQ (D, T) (+)= scale * K (D, T) x dS^T (T, T)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, D, T, T,
                        scale, k + off, T, dS, T, beta, dq + off, T);
            // dK (D, T) (+)= scale * Q (D, T) x dS (T, T)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, D, T, T,
                        scale, q + off, T, dS, T, beta, dk + off, T);
        }
    }
}

void attention_backward(float *dq, float *dk, float *dv, const float *dout,
                        const float *att, const float *q, const float *k,
                        const float *v, int B, int C, int T, int heads,
                        float *scratch) {
    attention_backward_impl(dq, dk, dv, dout, att, q, k, v, B, C, T, heads, scratch, 1.0f);
}

void attention_backward_set(float *dq, float *dk, float *dv, const float *dout,
                            const float *att, const float *q, const float *k,
                            const float *v, int B, int C, int T, int heads,
                            float *scratch) {
    attention_backward_impl(dq, dk, dv, dout, att, q, k, v, B, C, T, heads, scratch, 0.0f);
}

// ---------------------------------------------------------------------------
// sinusoidal time embedding (computed in double, then rounded once)

void timestep_embedding(float *out, const int *t, int B, int dim) {
    int half = dim / 2;
    for (int bi = 0; bi < B; bi++) {
        for (int i = 0; i < half; i++) {
            double f = exp(-log(10000.0) * i / half);
            double a = (double)t[bi] * f;
            out[(size_t)bi * dim + i] = (float)sin(a);
            out[(size_t)bi * dim + half + i] = (float)cos(a);
        }
    }
}
