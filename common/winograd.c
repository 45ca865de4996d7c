// winograd.c: F(2x2, 3x3) convolutions, see winograd.h.
// With G (4x3), B^T (4x4) and A^T (2x4) the transforms of the paper, a 2x2
// output tile is y = A^T [ sum_c (G g G^T) .* (B^T d B) ] A for the 4x4 input
// tile d (rows 2ty-1 .. 2ty+2, zero outside the image). The sum over c, for
// each of the 16 points of the 4x4 tile separately, is a GEMM over all tiles:
//   M[x] (OC, P) = U[x] (OC, C) . V[x] (C, P),  x = 0..15, P tiles.
// The backward is the adjoint of each step: dM[x] = (A dy A^T)[x], then
//   dU[x] (OC, C) += dM[x] . V[x]^T      -> dw += G^T dU G
//   dV[x] (C, P)   = U[x]^T . dM[x]      -> din += overlap-add of B dV B^T.
// The batch runs in fixed chunks of whole images, about WINO_CHUNK_TILES
// tiles each, so a chunk's transformed tiles stay in cache between the
// transform and its GEMMs; inside a chunk, threads split channels (transforms)
// and the 16 GEMMs, which are independent, so no sum is ever split.
#include "winograd.h"

#include <cblas.h>
#include <omp.h>
#include <stdint.h>

#include "common.h"

#define WINO_CHUNK_TILES 512
#define WINO_SLOTS 16 // most threads a conv uses: one temporary slot each
// The 16 matrices of an array indexed by tile point x (U, V, M) lie this far
// apart: one cache line more than their size, since with sizes that are
// powers of two the 16 rows a transform writes together would all fall in
// the same cache sets.
#define XSTRIDE(n) ((size_t)(n) + 16)

typedef struct {
    int H, W, HW; // image size
    int TH, TW, T; // tiles per image: rows, columns, all
    int nb;        // images per chunk
    int Pc;        // tiles per (full) chunk: nb * T
    int slots;     // threads
} WinoPlan;

static WinoPlan wino_plan(int B, int C, int H, int W, int OC) {
    WinoPlan q;
    q.H = H, q.W = W, q.HW = H * W;
    q.TH = (H + 1) / 2, q.TW = (W + 1) / 2, q.T = q.TH * q.TW;
    q.nb = q.T >= WINO_CHUNK_TILES ? 1 : WINO_CHUNK_TILES / q.T;
    if (q.nb > B) q.nb = B;
    // the gather tables hold offsets into a chunk as int32
    int64_t cmax = C > OC ? C : OC;
    while (q.nb > 1 && (int64_t)q.nb * cmax * q.HW > INT32_MAX) q.nb--;
    CHECK(cmax * q.HW <= INT32_MAX);
    q.Pc = q.nb * q.T;
    q.slots = omp_get_max_threads() < WINO_SLOTS ? omp_get_max_threads() : WINO_SLOTS;
    return q;
}

// Gather tables, int32, built once per call for a full chunk (a shorter last
// chunk uses their prefix, since tiles and pixels are numbered image-major):
//   gin (16, Pc)     offset of input tile element (i, j) of tile p in the
//                    chunk's images (C channels), or -1 in the zero padding
//   gdy (4, Pc)      offset of output (i, j) of tile p in (OC channels), or -1
//   gout (nb HW)     for each output pixel, its place (k Pc + p) in a (4, Pc)
//                    array of output tiles
//   gadd (4, nb HW)  for each input pixel, the places (k Pc + p) in a (16, Pc)
//                    array of input tiles of its (at most 4) copies, or -1
#define WINO_TABLE_INTS(q) (40 * (size_t)(q).Pc)

size_t winograd_scratch_floats(int B, int C, int H, int W, int OC) {
    WinoPlan q = wino_plan(B, C, H, W, OC);
    // U and dU (16, OC, C) | V (16, C, Pc) | M (16, OC, Pc) | tables | slots (32, Pc)
    return 16 * (2 * XSTRIDE((size_t)OC * C) + XSTRIDE((size_t)C * q.Pc) +
                 XSTRIDE((size_t)OC * q.Pc)) + WINO_TABLE_INTS(q) +
           (size_t)WINO_SLOTS * 32 * q.Pc;
}

// ---------------------------------------------------------------------------
// The transforms of one tile. Arrays are row-major 4x4 (index 4 i + j).

// u = G g G^T, G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1], g (3, 3); u's
// 16 elements at stride lu.
// Written out without loops so that callers' loops over many tiles vectorise.
#define G_1D(r0, r1, r2, r3, a0, a1, a2)                                       \
    (r0 = (a0), r1 = 0.5f * ((a0) + (a1) + (a2)), r2 = 0.5f * ((a0) - (a1) + (a2)), r3 = (a2))
static inline void weight_tile(float *u, size_t lu, const float *g) {
    float t[12]; // (4, 3) = G g
    G_1D(t[0], t[3], t[6], t[9], g[0], g[3], g[6]);
    G_1D(t[1], t[4], t[7], t[10], g[1], g[4], g[7]);
    G_1D(t[2], t[5], t[8], t[11], g[2], g[5], g[8]);
    G_1D(u[0], u[lu], u[2 * lu], u[3 * lu], t[0], t[1], t[2]);
    G_1D(u[4 * lu], u[5 * lu], u[6 * lu], u[7 * lu], t[3], t[4], t[5]);
    G_1D(u[8 * lu], u[9 * lu], u[10 * lu], u[11 * lu], t[6], t[7], t[8]);
    G_1D(u[12 * lu], u[13 * lu], u[14 * lu], u[15 * lu], t[9], t[10], t[11]);
}

// g (3, 3) += G^T du G, the adjoint of weight_tile
#define GT_1D(r0, r1, r2, a0, a1, a2, a3)                                      \
    (r0 = (a0) + 0.5f * ((a1) + (a2)), r1 = 0.5f * ((a1) - (a2)), r2 = 0.5f * ((a1) + (a2)) + (a3))
static inline void weight_tile_adjoint(float *g, const float du[16]) {
    float t[12], r[9]; // t (4, 3) = du G, r (3, 3) = G^T t
    GT_1D(t[0], t[1], t[2], du[0], du[1], du[2], du[3]);
    GT_1D(t[3], t[4], t[5], du[4], du[5], du[6], du[7]);
    GT_1D(t[6], t[7], t[8], du[8], du[9], du[10], du[11]);
    GT_1D(t[9], t[10], t[11], du[12], du[13], du[14], du[15]);
    GT_1D(r[0], r[3], r[6], t[0], t[3], t[6], t[9]);
    GT_1D(r[1], r[4], r[7], t[1], t[4], t[7], t[10]);
    GT_1D(r[2], r[5], r[8], t[2], t[5], t[8], t[11]);
    for (int k = 0; k < 9; k++) g[k] += r[k];
}

// The input and output transforms run on "streams": arrays over the tiles p
// of a chunk, one per element of the 4x4 (or 2x2) tile, so every pass is a
// plain loop over p that vectorises whatever the image size (8x8 latents
// have 16 tiles an image, 4x4 only 4). A 2-D transform is a 1-D transform
// down the columns, then one along the rows. Stream k of a (., Pc) array
// starts at k * Pc.

// 1-D B^T: r = [a0 - a2, a1 + a2, a2 - a1, a1 - a3]
static void bt_1d(float *restrict r0, float *restrict r1, float *restrict r2, float *restrict r3, const float *restrict a0,
                  const float *restrict a1, const float *restrict a2, const float *restrict a3, int P) {
    for (int p = 0; p < P; p++) {
        float x0 = a0[p], x1 = a1[p], x2 = a2[p], x3 = a3[p];
        r0[p] = x0 - x2, r1[p] = x1 + x2, r2[p] = x2 - x1, r3[p] = x1 - x3;
    }
}

// 1-D B, the adjoint of bt_1d: r = [a0, a1 - a2 + a3, a1 + a2 - a0, -a3]
static void b_1d(float *restrict r0, float *restrict r1, float *restrict r2, float *restrict r3, const float *restrict a0,
                 const float *restrict a1, const float *restrict a2, const float *restrict a3, int P) {
    for (int p = 0; p < P; p++) {
        float x0 = a0[p], x1 = a1[p], x2 = a2[p], x3 = a3[p];
        r0[p] = x0, r1[p] = x1 - x2 + x3, r2[p] = x1 + x2 - x0, r3[p] = -x3;
    }
}

// 1-D A^T: r = [a0 + a1 + a2, a1 - a2 - a3]
static void at_1d(float *restrict r0, float *restrict r1, const float *restrict a0, const float *restrict a1, const float *restrict a2,
                  const float *restrict a3, int P) {
    for (int p = 0; p < P; p++) {
        float x0 = a0[p], x1 = a1[p], x2 = a2[p], x3 = a3[p];
        r0[p] = x0 + x1 + x2, r1[p] = x1 - x2 - x3;
    }
}

// 1-D A, the adjoint of at_1d: r = [a0, a0 + a1, a0 - a1, -a1]
static void a_1d(float *restrict r0, float *restrict r1, float *restrict r2, float *restrict r3, const float *restrict a0, const float *restrict a1,
                 int P) {
    for (int p = 0; p < P; p++) {
        float x0 = a0[p], x1 = a1[p];
        r0[p] = x0, r1[p] = x0 + x1, r2[p] = x0 - x1, r3[p] = -x1;
    }
}

// v = B^T d B (adjoint: B dv B^T): 16 streams each, at strides lv, lt, ld
static void tile44_transform(float *v, size_t lv, float *t, size_t lt, const float *d,
                             size_t ld, int P, int adjoint) {
    void (*f)(float *, float *, float *, float *, const float *, const float *,
              const float *, const float *, int) = adjoint ? b_1d : bt_1d;
    for (int j = 0; j < 4; j++) // columns: rows i combine
        f(t + j * lt, t + (4 + j) * lt, t + (8 + j) * lt, t + (12 + j) * lt, d + j * ld,
          d + (4 + j) * ld, d + (8 + j) * ld, d + (12 + j) * ld, P);
    for (int i = 0; i < 4; i++) // rows: columns j combine
        f(v + 4 * i * lv, v + (4 * i + 1) * lv, v + (4 * i + 2) * lv, v + (4 * i + 3) * lv,
          t + 4 * i * lt, t + (4 * i + 1) * lt, t + (4 * i + 2) * lt, t + (4 * i + 3) * lt, P);
}

// y (4 streams at ld) = A^T m A, m 16 streams at lm; t 8 streams at ld
static void output_tiles(float *y, float *t, const float *m, size_t lm, size_t ld, int P) {
    for (int j = 0; j < 4; j++) // t (2, 4)
        at_1d(t + j * ld, t + (4 + j) * ld, m + j * lm, m + (4 + j) * lm, m + (8 + j) * lm,
              m + (12 + j) * lm, P);
    for (int i = 0; i < 2; i++) // y (2, 2)
        at_1d(y + 2 * i * ld, y + (2 * i + 1) * ld, t + 4 * i * ld, t + (4 * i + 1) * ld,
              t + (4 * i + 2) * ld, t + (4 * i + 3) * ld, P);
}

// dm (16 streams at lm) = A dy A^T, dy 4 streams at ld; t 8 streams at ld
static void output_tiles_adjoint(float *dm, size_t lm, float *t, const float *dy, size_t ld,
                                 int P) {
    for (int j = 0; j < 2; j++) // t (4, 2)
        a_1d(t + j * ld, t + (2 + j) * ld, t + (4 + j) * ld, t + (6 + j) * ld, dy + j * ld,
             dy + (2 + j) * ld, P);
    for (int i = 0; i < 4; i++) // dm (4, 4)
        a_1d(dm + 4 * i * lm, dm + (4 * i + 1) * lm, dm + (4 * i + 2) * lm,
             dm + (4 * i + 3) * lm, t + 2 * i * ld, t + (2 * i + 1) * ld, P);
}

// ---------------------------------------------------------------------------
// Whole-tensor steps, each an `omp for` inside the caller's parallel region.
// The per-tile loops run over the tiles p of a chunk with the tiles' elements
// fetched through the gather tables, so they vectorise across tiles whatever
// the image size (8x8 latents have 16 tiles, 4x4 only 4).

typedef struct {
    int *gin, *gdy, *gout, *gadd;
} WinoTables;

static WinoTables tables_carve(int *base, const WinoPlan *q) {
    WinoTables t;
    t.gin = base;                                 // (16, Pc)
    t.gdy = t.gin + 16 * (size_t)q->Pc;           // (4, Pc)
    t.gout = t.gdy + 4 * (size_t)q->Pc;           // (nb HW) <= (4 Pc)
    t.gadd = t.gout + 4 * (size_t)q->Pc;          // (4, nb HW) <= (16 Pc)
    return t;
}

static void tables_build(const WinoTables *t, const WinoPlan *q, int C, int OC) {
    int HW = q->HW, W = q->W, H = q->H, Pc = q->Pc, NP = q->nb * HW;
#pragma omp for schedule(static)
    for (int p = 0; p < Pc; p++) {
        int b = p / q->T, ty = p % q->T / q->TW, tx = p % q->TW;
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) {
                int y = 2 * ty - 1 + i, x = 2 * tx - 1 + j;
                int ok = y >= 0 && y < H && x >= 0 && x < W;
                t->gin[(4 * i + j) * Pc + p] = ok ? b * C * HW + y * W + x : -1;
            }
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 2; j++) {
                int y = 2 * ty + i, x = 2 * tx + j;
                t->gdy[(2 * i + j) * Pc + p] = y < H && x < W ? b * OC * HW + y * W + x : -1;
            }
    }
#pragma omp for schedule(static)
    for (int px = 0; px < NP; px++) {
        int b = px / HW, y = px % HW / W, x = px % W;
        int p = b * q->T + y / 2 * q->TW + x / 2;
        t->gout[px] = (2 * (y % 2) + x % 2) * Pc + p;
        // input (y, x) is element (i, j) of tile (ty, tx) when y = 2 ty - 1 + i
        int i0 = (y + 1) % 2, j0 = (x + 1) % 2, k = 0;
        for (int i = i0; i < 4; i += 2)
            for (int j = j0; j < 4; j += 2, k++) {
                int ty = (y + 1 - i) / 2, tx = (x + 1 - j) / 2;
                int ok = ty >= 0 && ty < q->TH && tx >= 0 && tx < q->TW && y + 1 - i >= 0 &&
                         x + 1 - j >= 0;
                t->gadd[(size_t)k * NP + px] =
                    ok ? (4 * i + j) * Pc + b * q->T + ty * q->TW + tx : -1;
            }
    }
}

// U[x] (OC, C) from w (OC, C, 3, 3); U (16, OC, C)
static void weights_transform(float *U, const float *w, int OC, int C) {
    size_t n = (size_t)OC * C;
#pragma omp for simd schedule(static)
    for (size_t i = 0; i < n; i++) weight_tile(U + i, XSTRIDE(n), w + 9 * i);
}

// dw (OC, C, 3, 3) += G^T dU G; dU (16, OC, C)
static void weights_transform_adjoint(float *dw, const float *dU, int OC, int C) {
    size_t n = (size_t)OC * C;
#pragma omp for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float du[16];
            for (int x = 0; x < 16; x++) du[x] = dU[x * XSTRIDE(n) + i];
        weight_tile_adjoint(dw + 9 * i, du);
    }
}

// This thread's temporary streams: (32, Pc)
static float *slot_of(float *slots, const WinoPlan *q) {
    return slots + (size_t)omp_get_thread_num() * 32 * q->Pc;
}

// V[x] (C, P) from the P tiles of img (nb, C, H, W)
static void input_transform(float *V, const float *img, const WinoTables *t, float *slots,
                            int C, int P, const WinoPlan *q) {
    size_t n = (size_t)C * P, Pc = q->Pc;
    float *D = slot_of(slots, q), *T = D + 16 * Pc; // (16, Pc) each
#pragma omp for schedule(static)
    for (int c = 0; c < C; c++) {
        const float *src = img + (size_t)c * q->HW; // channel c of image 0
        for (int k = 0; k < 16; k++) {
            const int *g = t->gin + k * Pc;
            float *d = D + k * Pc;
#pragma omp simd
            for (int p = 0; p < P; p++) d[p] = g[p] >= 0 ? src[g[p]] : 0.0f;
        }
        tile44_transform(V + (size_t)c * P, XSTRIDE(n), T, Pc, D, Pc, P, 0);
    }
}

// out (nb, OC, H, W) = A^T M[x] A + bias over the P tiles; M (16, OC, P)
static void output_transform(float *out, const float *M, const float *bias, const WinoTables *t,
                             float *slots, int OC, int nb, int P, const WinoPlan *q) {
    size_t n = (size_t)OC * P, Pc = q->Pc, HW = q->HW;
    float *Y = slot_of(slots, q), *T = Y + 16 * Pc; // (4, Pc), (8, Pc)
#pragma omp for schedule(static)
    for (int oc = 0; oc < OC; oc++) {
        output_tiles(Y, T, M + (size_t)oc * P, XSTRIDE(n), Pc, P);
        float bv = bias ? bias[oc] : 0.0f;
        for (int b = 0; b < nb; b++) {
            float *o = out + ((size_t)b * OC + oc) * HW; // (H, W)
            const int *g = t->gout + (size_t)b * HW;
#pragma omp simd
            for (size_t i = 0; i < HW; i++) o[i] = Y[g[i]] + bv;
        }
    }
}

// dM[x] (OC, P) = (A dy A^T)[x] for the P tiles of dout (nb, OC, H, W)
static void output_transform_adjoint(float *dM, const float *dout, const WinoTables *t,
                                     float *slots, int OC, int P, const WinoPlan *q) {
    size_t n = (size_t)OC * P, Pc = q->Pc;
    float *DY = slot_of(slots, q), *T = DY + 16 * Pc; // (4, Pc), (8, Pc)
#pragma omp for schedule(static)
    for (int oc = 0; oc < OC; oc++) {
        const float *src = dout + (size_t)oc * q->HW; // channel oc of image 0
        for (int k = 0; k < 4; k++) {
            const int *g = t->gdy + k * Pc;
            float *d = DY + k * Pc;
#pragma omp simd
            for (int p = 0; p < P; p++) d[p] = g[p] >= 0 ? src[g[p]] : 0.0f;
        }
        output_tiles_adjoint(dM + (size_t)oc * P, XSTRIDE(n), T, DY, Pc, P);
    }
}

// img (nb, C, H, W) += (acc) or = (!acc) the sum over tiles of B dV[x] B^T,
// each input pixel adding its (at most 4) tile copies in a fixed order
static void input_transform_adjoint(float *img, const float *dV, const WinoTables *t,
                                    float *slots, int C, int nb, int P, const WinoPlan *q,
                                    int acc) {
    size_t n = (size_t)C * P, Pc = q->Pc, HW = q->HW, NP = (size_t)q->nb * HW;
    float *D = slot_of(slots, q), *T = D + 16 * Pc; // (16, Pc) each
#pragma omp for schedule(static)
    for (int c = 0; c < C; c++) {
        tile44_transform(D, Pc, T, Pc, dV + (size_t)c * P, XSTRIDE(n), P, 1);
        for (int b = 0; b < nb; b++) {
            float *o = img + ((size_t)b * C + c) * HW; // (H, W)
            const int *g = t->gadd + (size_t)b * HW;
#pragma omp simd
            for (size_t i = 0; i < HW; i++) {
                float s = 0.0f;
                for (int k = 0; k < 4; k++) {
                    int gi = g[k * NP + i];
                    s += gi >= 0 ? D[gi] : 0.0f;
                }
                o[i] = acc ? o[i] + s : s;
            }
        }
    }
}

// ---------------------------------------------------------------------------

// Carves scratch: U, dU (16, OC, C) | V (16, C, Pc) | M (16, OC, Pc) | tables | slots
typedef struct {
    float *U, *dU, *V, *M, *slots;
    WinoTables t;
} WinoBufs;

static WinoBufs bufs_carve(float *scratch, const WinoPlan *q, int C, int OC) {
    WinoBufs w;
    w.U = scratch;
    w.dU = w.U + 16 * XSTRIDE((size_t)OC * C);
    w.V = w.dU + 16 * XSTRIDE((size_t)OC * C);
    w.M = w.V + 16 * XSTRIDE((size_t)C * q->Pc);
    int *tab = (int *)(w.M + 16 * XSTRIDE((size_t)OC * q->Pc));
    w.t = tables_carve(tab, q);
    w.slots = (float *)(tab + WINO_TABLE_INTS(*q));
    return w;
}

void winograd_conv_forward(float *out, const float *in, const float *w, const float *b,
                           int B, int C, int H, int W, int OC, float *scratch) {
    WinoPlan q = wino_plan(B, C, H, W, OC);
    WinoBufs s = bufs_carve(scratch, &q, C, OC);
    size_t HW = (size_t)H * W;
#pragma omp parallel num_threads(q.slots)
    {
        tables_build(&s.t, &q, C, OC);
        weights_transform(s.U, w, OC, C);
        for (int b0 = 0; b0 < B; b0 += q.nb) {
            int nb = B - b0 < q.nb ? B - b0 : q.nb, P = nb * q.T;
            input_transform(s.V, in + (size_t)b0 * C * HW, &s.t, s.slots, C, P, &q);
#pragma omp for schedule(static)
            for (int x = 0; x < 16; x++) // M[x] (OC, P) = U[x] (OC, C) V[x] (C, P)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, OC, P, C, 1.0f,
                            s.U + x * XSTRIDE((size_t)OC * C), C,
                            s.V + x * XSTRIDE((size_t)C * P), P, 0.0f,
                            s.M + x * XSTRIDE((size_t)OC * P), P);
            output_transform(out + (size_t)b0 * OC * HW, s.M, b, &s.t, s.slots, OC, nb, P, &q);
        }
    }
}

void winograd_conv_backward(float *din, float *dw, const float *dout, const float *in,
                            const float *w, int B, int C, int H, int W, int OC,
                            float *scratch, int acc) {
    WinoPlan q = wino_plan(B, C, H, W, OC);
    WinoBufs s = bufs_carve(scratch, &q, C, OC);
    size_t HW = (size_t)H * W;
#pragma omp parallel num_threads(q.slots)
    {
        tables_build(&s.t, &q, C, OC);
        if (din) weights_transform(s.U, w, OC, C);
        for (int b0 = 0; b0 < B; b0 += q.nb) {
            int nb = B - b0 < q.nb ? B - b0 : q.nb, P = nb * q.T;
            input_transform(s.V, in + (size_t)b0 * C * HW, &s.t, s.slots, C, P, &q);
            output_transform_adjoint(s.M, dout + (size_t)b0 * OC * HW, &s.t, s.slots, OC, P, &q);
#pragma omp for schedule(static)
            for (int x = 0; x < 16; x++) {
                float *Vx = s.V + x * XSTRIDE((size_t)C * P);
                float *dMx = s.M + x * XSTRIDE((size_t)OC * P);
                // dU[x] (OC, C) (+)= dM[x] (OC, P) V[x]^T (P, C), chunks in order
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, OC, C, P, 1.0f, dMx, P,
                            Vx, P, b0 ? 1.0f : 0.0f, s.dU + x * XSTRIDE((size_t)OC * C), C);
                if (din) // V[x] is used up: it takes dV[x] (C, P) = U[x]^T dM[x]
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C, P, OC, 1.0f,
                                s.U + x * XSTRIDE((size_t)OC * C), C, dMx, P, 0.0f, Vx, P);
            }
            if (din)
                input_transform_adjoint(din + (size_t)b0 * C * HW, s.V, &s.t, s.slots, C, nb,
                                        P, &q, acc);
        }
        weights_transform_adjoint(dw, s.dU, OC, C);
    }
}
