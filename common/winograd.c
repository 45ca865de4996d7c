// winograd.c: F(4x4, 3x3) convolutions, see winograd.h.
// With G (6x3), B^T (6x6) and A^T (4x6) the transforms of the paper (points
// 0, 1, -1, 2, -2 and infinity), a 4x4 output tile is
//   y = A^T [ sum_c (G g G^T) .* (B^T d B) ] A
// for the 6x6 input tile d (rows 4ty-1 .. 4ty+4, zero outside the image).
// The sum over c, for each of the 36 points of the 6x6 tile separately, is a
// GEMM over all tiles:
//   M[x] (OC, P) = U[x] (OC, C) . V[x] (C, P),  x = 0..35, P tiles,
// 36 multiplications per output tile and channel pair where a direct
// convolution needs 16 x 9 = 144. The backward is the adjoint of each step:
// dM[x] = (A dy A^T)[x], then
//   dU[x] (OC, C) += dM[x] . V[x]^T      -> dw += G^T dU G
//   dV[x] (C, P)   = U[x]^T . dM[x]      -> din += overlap-add of B dV B^T.
// The batch runs in fixed chunks of whole images, about WINO_CHUNK_TILES
// tiles each, so a chunk's transformed tiles stay in cache between the
// transform and its GEMMs; inside a chunk, threads split channels (transforms)
// and the 36 GEMMs, which are independent, so no sum is ever split.
// In float32 the error is a few times F(2x2, 3x3)'s: about 3e-6 of the
// largest output for 256 input channels, against 1e-6 (numpy model of both).
#include "winograd.h"

#include <cblas.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "common.h"

#define TM 4            // output tile side
#define TA (TM + 2)     // input tile side
#define NX (TA * TA)    // points of a transformed tile: 36
#define WINO_CHUNK_TILES 256
#define WINO_SLOTS 16 // most threads a conv uses: one temporary slot each
#define WBLK 256       // (oc, c) pairs a weight transform step takes at a time
#define PBLK 64        // tiles a tile transform step takes at a time: its
                       // streams stay in the L1 cache
// The NX matrices of an array indexed by tile point x (U, V, M) lie this far
// apart: one cache line more than their size, since with sizes that are
// powers of two the rows a transform writes together would all fall in the
// same cache sets.
#define XSTRIDE(n) ((size_t)(n) + 16)

typedef struct {
    int H, W, HW; // image size
    int TH, TW, T; // tiles per image: rows, columns, all
    int nb;        // images per chunk
    int Pc;        // tiles per (full) chunk: nb * T
    int Hp, Wp;    // a plane with its zero border: (TM TH + 2, TM TW + 2)
    int slots;     // threads
} WinoPlan;

// One thread's slot: temporary streams (2 NX, max(Pc, PBLK)), then one
// channel of the chunk copied into bordered planes (nb, Hp, Wp). The tiles are
// gathered from that copy, not from the tensor: there the chunk's images lie
// C H W floats apart (16 KiB for the UNet's 64 channels of 8x8), and the
// gathers across them spent most of their time waiting for memory (`perf
// annotate`); the copy reads each cache line once, with the next images
// prefetched. The border also spares the gathers their masks.
static size_t slot_streams(const WinoPlan *q) {
    return 2 * NX * (size_t)(q->Pc > PBLK ? q->Pc : PBLK);
}
static size_t slot_floats(const WinoPlan *q) {
    return slot_streams(q) + ((size_t)q->nb * q->Hp * q->Wp + 15) / 16 * 16;
}

static WinoPlan wino_plan(int B, int C, int H, int W, int OC) {
    WinoPlan q;
    q.H = H, q.W = W, q.HW = H * W;
    q.TH = (H + TM - 1) / TM, q.TW = (W + TM - 1) / TM, q.T = q.TH * q.TW;
    q.nb = q.T >= WINO_CHUNK_TILES ? 1 : WINO_CHUNK_TILES / q.T;
    if (q.nb > B) q.nb = B;
    // the gather tables hold offsets into a chunk as int32
    int64_t cmax = C > OC ? C : OC;
    while (q.nb > 1 && (int64_t)q.nb * cmax * q.HW > INT32_MAX) q.nb--;
    CHECK(cmax * q.HW <= INT32_MAX);
    q.Pc = q.nb * q.T;
    q.Hp = TM * q.TH + 2, q.Wp = TM * q.TW + 2;
    CHECK((int64_t)q.nb * q.Hp * q.Wp <= INT32_MAX); // the tables index the planes in int32
    q.slots = omp_get_max_threads() < WINO_SLOTS ? omp_get_max_threads() : WINO_SLOTS;
    return q;
}

// Gather tables, int32, built once per call for a full chunk (a shorter last
// chunk uses their prefix, since tiles and pixels are numbered image-major):
//   gin (NX, Pc)       offset of input tile element (i, j) of tile p in the
//                      chunk's bordered planes (nb, Hp, Wp): pixel (y, x) of
//                      image b lies at b Hp Wp + (y + 1) Wp + x + 1
//   gdy (TM*TM, Pc)    offset of output (i, j) of tile p there
//   gout (nb HW)       for each output pixel, its place (k Pc + p) in a
//                      (TM*TM, Pc) array of output tiles
//   gadd (4, nb HW)    for each input pixel, the places (k Pc + p) in an
//                      (NX, Pc) array of input tiles of its copies (tiles
//                      overlap by 2, so at most 2 x 2 of them), or -1
#define TABLE_INTS(Pc) ((size_t)(NX + TM * TM + TM * TM + 4 * TM * TM) * (Pc))

typedef struct {
    int *gin, *gdy, *gout, *gadd;
} WinoTables;

size_t winograd_scratch_floats(int B, int C, int H, int W, int OC) {
    WinoPlan q = wino_plan(B, C, H, W, OC);
    // U and dU (NX, OC, C) | V (NX, C, Pc) | M (NX, OC, Pc) | tables | slots
    return NX * (2 * XSTRIDE((size_t)OC * C) + XSTRIDE((size_t)C * q.Pc) +
                 XSTRIDE((size_t)OC * q.Pc)) +
           TABLE_INTS(q.Pc) + WINO_SLOTS * slot_floats(&q);
}

static WinoTables tables_carve(int *base, const WinoPlan *q) {
    WinoTables t;
    t.gin = base;                             // (NX, Pc)
    t.gdy = t.gin + NX * (size_t)q->Pc;       // (TM*TM, Pc)
    t.gout = t.gdy + TM * TM * (size_t)q->Pc; // (nb HW) <= (TM*TM Pc)
    t.gadd = t.gout + TM * TM * (size_t)q->Pc; // (4, nb HW) <= (4 TM*TM Pc)
    return t;
}

static void tables_build(const WinoTables *t, const WinoPlan *q) {
    int HW = q->HW, W = q->W, Pc = q->Pc, NP = q->nb * HW, Wp = q->Wp;
#pragma omp for schedule(static)
    for (int p = 0; p < Pc; p++) {
        int b = p / q->T, ty = p % q->T / q->TW, tx = p % q->TW;
        int at = b * q->Hp * Wp + TM * ty * Wp + TM * tx; // element (0, 0): pixel (-1, -1)
        for (int i = 0; i < TA; i++)
            for (int j = 0; j < TA; j++) t->gin[(TA * i + j) * Pc + p] = at + i * Wp + j;
        for (int i = 0; i < TM; i++)
            for (int j = 0; j < TM; j++)
                t->gdy[(TM * i + j) * Pc + p] = at + (i + 1) * Wp + j + 1;
    }
#pragma omp for schedule(static)
    for (int px = 0; px < NP; px++) {
        int b = px / HW, y = px % HW / W, x = px % W;
        int p = b * q->T + y / TM * q->TW + x / TM;
        t->gout[px] = (TM * (y % TM) + x % TM) * Pc + p;
        // input (y, x) is element (i, j) of tile (ty, tx) when y = TM ty - 1 + i:
        // i = (y + 1) mod TM in tile row (y + 1) / TM, and i + TM in the row
        // above when that is still inside the tile
        int i0 = (y + 1) % TM, j0 = (x + 1) % TM, k = 0;
        for (int i = i0; i < TA; i += TM)
            for (int j = j0; j < TA; j += TM, k++) {
                int ty = (y + 1 - i) / TM, tx = (x + 1 - j) / TM;
                int ok = y + 1 - i >= 0 && x + 1 - j >= 0 && ty < q->TH && tx < q->TW;
                t->gadd[(size_t)k * NP + px] =
                    ok ? (TA * i + j) * Pc + b * q->T + ty * q->TW + tx : -1;
            }
        for (; k < 4; k++) t->gadd[(size_t)k * NP + px] = -1;
    }
}

// ---------------------------------------------------------------------------
// The transforms run on "streams": arrays over the tiles p of a chunk, one
// per element of a tile, so every pass is a plain loop over p that
// vectorises whatever the image size (8x8 latents have 4 tiles an image, 4x4
// only one). A 2-D transform is a 1-D transform down the columns, then one
// along the rows. The weight transform runs the same way over (oc, c) pairs.
// 1-D maps, with r the result streams and a the argument streams. Each is a
// kernel on explicit restrict pointers, kept out of line so that the promise
// holds (GCC did not vectorise the loops when it read the streams from an
// array of pointers), and a wrapper that takes the arrays.
#define NOINLINE __attribute__((noinline))
#define RS float *restrict
#define AS const float *restrict

// G (6x3) = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6;
//            1/24 -1/12 1/6; 0 0 1]
static NOINLINE void g_1d_k(RS r0, RS r1, RS r2, RS r3, RS r4, RS r5,
                            AS a0, AS a1, AS a2, int n) {
    for (int p = 0; p < n; p++) {
        float x0 = a0[p], x1 = a1[p], x2 = a2[p];
        float s = x0 + x2, q = x0 * (1.0f / 24.0f) + x2 * (1.0f / 6.0f);
        r0[p] = x0 * 0.25f;
        r1[p] = -(s + x1) * (1.0f / 6.0f);
        r2[p] = -(s - x1) * (1.0f / 6.0f);
        r3[p] = q + x1 * (1.0f / 12.0f);
        r4[p] = q - x1 * (1.0f / 12.0f);
        r5[p] = x2;
    }
}
static void g_1d(float *const *r, const float *const *a, int n) {
    g_1d_k(r[0], r[1], r[2], r[3], r[4], r[5], a[0], a[1], a[2], n);
}

// G^T (3x6), the adjoint of g_1d
static NOINLINE void gt_1d_k(RS r0, RS r1, RS r2,
                            AS a0, AS a1, AS a2, AS a3, AS a4, AS a5, int n) {
    for (int p = 0; p < n; p++) {
        float x0 = a0[p], x1 = a1[p], x2 = a2[p], x3 = a3[p], x4 = a4[p], x5 = a5[p];
        r0[p] = x0 * 0.25f - (x1 + x2) * (1.0f / 6.0f) + (x3 + x4) * (1.0f / 24.0f);
        r1[p] = (x2 - x1) * (1.0f / 6.0f) + (x3 - x4) * (1.0f / 12.0f);
        r2[p] = (x3 + x4 - x1 - x2) * (1.0f / 6.0f) + x5;
    }
}
static void gt_1d(float *const *r, const float *const *a, int n) {
    gt_1d_k(r[0], r[1], r[2], a[0], a[1], a[2], a[3], a[4], a[5], n);
}

// B^T (6x6) = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0;
//              0 2 -1 -2 1 0; 0 4 0 -5 0 1]
static NOINLINE void bt_1d_k(RS r0, RS r1, RS r2, RS r3, RS r4, RS r5,
                            AS a0, AS a1, AS a2, AS a3, AS a4, AS a5, int n) {
    for (int p = 0; p < n; p++) {
        float x0 = a0[p], x1 = a1[p], x2 = a2[p], x3 = a3[p], x4 = a4[p], x5 = a5[p];
        float s = x4 - 4.0f * x2, t = x3 - 4.0f * x1, u = x4 - x2, v = 2.0f * (x3 - x1);
        r0[p] = 4.0f * x0 - 5.0f * x2 + x4;
        r1[p] = s + t;
        r2[p] = s - t;
        r3[p] = u + v;
        r4[p] = u - v;
        r5[p] = 4.0f * x1 - 5.0f * x3 + x5;
    }
}
static void bt_1d(float *const *r, const float *const *a, int n) {
    bt_1d_k(r[0], r[1], r[2], r[3], r[4], r[5], a[0], a[1], a[2], a[3], a[4], a[5], n);
}

// B (6x6), the adjoint of bt_1d
static NOINLINE void b_1d_k(RS r0, RS r1, RS r2, RS r3, RS r4, RS r5,
                            AS a0, AS a1, AS a2, AS a3, AS a4, AS a5, int n) {
    for (int p = 0; p < n; p++) {
        float x0 = a0[p], x1 = a1[p], x2 = a2[p], x3 = a3[p], x4 = a4[p], x5 = a5[p];
        r0[p] = 4.0f * x0;
        r1[p] = 4.0f * (x2 - x1) + 2.0f * (x4 - x3) + 4.0f * x5;
        r2[p] = -5.0f * x0 - 4.0f * (x1 + x2) - x3 - x4;
        r3[p] = x1 - x2 + 2.0f * (x3 - x4) - 5.0f * x5;
        r4[p] = x0 + x1 + x2 + x3 + x4;
        r5[p] = x5;
    }
}
static void b_1d(float *const *r, const float *const *a, int n) {
    b_1d_k(r[0], r[1], r[2], r[3], r[4], r[5], a[0], a[1], a[2], a[3], a[4], a[5], n);
}

// A^T (4x6) = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]
static NOINLINE void at_1d_k(RS r0, RS r1, RS r2, RS r3,
                            AS a0, AS a1, AS a2, AS a3, AS a4, AS a5, int n) {
    for (int p = 0; p < n; p++) {
        float x0 = a0[p], x1 = a1[p], x2 = a2[p], x3 = a3[p], x4 = a4[p], x5 = a5[p];
        float s = x1 + x2, d = x1 - x2, s2 = x3 + x4, d2 = x3 - x4;
        r0[p] = x0 + s + s2;
        r1[p] = d + 2.0f * d2;
        r2[p] = s + 4.0f * s2;
        r3[p] = d + 8.0f * d2 + x5;
    }
}
static void at_1d(float *const *r, const float *const *a, int n) {
    at_1d_k(r[0], r[1], r[2], r[3], a[0], a[1], a[2], a[3], a[4], a[5], n);
}

// A (6x4), the adjoint of at_1d
static NOINLINE void a_1d_k(RS r0, RS r1, RS r2, RS r3, RS r4, RS r5,
                            AS a0, AS a1, AS a2, AS a3, int n) {
    for (int p = 0; p < n; p++) {
        float x0 = a0[p], x1 = a1[p], x2 = a2[p], x3 = a3[p];
        float e = x0 + x2, o = x1 + x3, e4 = x0 + 4.0f * x2, o4 = 2.0f * x1 + 8.0f * x3;
        r0[p] = x0;
        r1[p] = e + o;
        r2[p] = e - o;
        r3[p] = e4 + o4;
        r4[p] = e4 - o4;
        r5[p] = x3;
    }
}
static void a_1d(float *const *r, const float *const *a, int n) {
    a_1d_k(r[0], r[1], r[2], r[3], r[4], r[5], a[0], a[1], a[2], a[3], n);
}

typedef void (*Map1d)(float *const *, const float *const *, int);

// 2-D transform of tiles: out (ro x ro) = F in (ri x ri) F^T, F the ro x ri map
// f. Streams: in[k] at in + k * li (k = ri i + j), tmp (ro x ri) at tmp + k *
// lt, out (ro x ro) at out + k * lo.
static void transform_2d(Map1d f, int ri, int ro, float *out, size_t lo, float *tmp,
                         size_t lt, const float *in, size_t li, int n) {
    float *r[TA];
    const float *a[TA];
    for (int j = 0; j < ri; j++) { // columns: tmp (ro, ri) = F in
        for (int i = 0; i < ri; i++) a[i] = in + (size_t)(ri * i + j) * li;
        for (int i = 0; i < ro; i++) r[i] = tmp + (size_t)(ri * i + j) * lt;
        f(r, a, n);
    }
    for (int i = 0; i < ro; i++) { // rows: out (ro, ro) = tmp F^T
        for (int j = 0; j < ri; j++) a[j] = tmp + (size_t)(ri * i + j) * lt;
        for (int j = 0; j < ro; j++) r[j] = out + (size_t)(ro * i + j) * lo;
        f(r, a, n);
    }
}

// transform_2d over P tiles in blocks of PBLK, so that tmp (PBLK-long
// streams) stays in the L1 cache
static void transform_2d_blocked(Map1d f, int ri, int ro, float *out, size_t lo, float *tmp,
                                 const float *in, size_t li, int P) {
    for (int p0 = 0; p0 < P; p0 += PBLK) {
        int m = P - p0 < PBLK ? P - p0 : PBLK;
        transform_2d(f, ri, ro, out + p0, lo, tmp, PBLK, in + p0, li, m);
    }
}

// ---------------------------------------------------------------------------
// Whole-tensor steps, each an `omp for` inside the caller's parallel region.

// This thread's temporary streams
static float *slot_of(float *slots, const WinoPlan *q) {
    return slots + (size_t)omp_get_thread_num() * slot_floats(q);
}

// This thread's bordered planes (nb, Hp, Wp), border zeroed; only the
// interiors are written after this, so the border stays zero for the call
static float *planes_of(float *slots, const WinoPlan *q) {
    float *pl = slot_of(slots, q) + slot_streams(q);
    memset(pl, 0, (slot_floats(q) - slot_streams(q)) * sizeof *pl);
    return pl;
}

// Copies channel c (at src, images step floats apart) of nb images into the
// interiors of the bordered planes
static void planes_fill(float *pl, const float *src, size_t step, int nb, const WinoPlan *q) {
    int W = q->W;
    // The images lie far apart, so the hardware prefetchers miss the next
    // one: fetch about 4 KiB ahead (8 images of an 8x8 plane)
    int ahead = q->HW >= 1024 ? 1 : 1024 / q->HW > 8 ? 8 : 1024 / q->HW;
    for (int b = 0; b < nb; b++) {
        if (b + ahead < nb)
            for (int i = 0; i < q->HW; i += 16) __builtin_prefetch(src + (b + ahead) * step + i);
        for (int y = 0; y < q->H; y++) {
            // rows are short (8 floats in the UNet): a loop, not memcpy calls
            float *restrict d = pl + ((size_t)b * q->Hp + y + 1) * q->Wp + 1;
            const float *restrict s = src + b * step + (size_t)y * W;
#pragma omp simd
            for (int x = 0; x < W; x++) d[x] = s[x];
        }
    }
}

// U[x] (OC, C) = (G g G^T)[x] for w (OC, C, 3, 3), in blocks of pairs: the
// weights' 9 elements are copied out into streams first
static void weights_transform(float *U, const float *w, int OC, int C) {
    size_t n = (size_t)OC * C, nblk = (n + WBLK - 1) / WBLK;
#pragma omp for schedule(static)
    for (size_t bi = 0; bi < nblk; bi++) {
        float g[9 * WBLK], t[3 * TA * WBLK]; // (9, WBLK) weights, (TA, 3) G g
        size_t i0 = bi * WBLK, m = n - i0 < WBLK ? n - i0 : WBLK;
        for (size_t i = 0; i < m; i++)
            for (int k = 0; k < 9; k++) g[k * WBLK + i] = w[9 * (i0 + i) + k];
        transform_2d(g_1d, 3, TA, U + i0, XSTRIDE(n), t, WBLK, g, WBLK, m);
    }
}

// dw (OC, C, 3, 3) += (G^T dU G) for dU (NX, OC, C), in blocks of pairs
static void weights_transform_adjoint(float *dw, const float *dU, int OC, int C) {
    size_t n = (size_t)OC * C, nblk = (n + WBLK - 1) / WBLK;
#pragma omp for schedule(static)
    for (size_t bi = 0; bi < nblk; bi++) {
        float g[9 * WBLK], t[3 * TA * WBLK]; // (9, WBLK) gradients, (3, TA) G^T dU
        size_t i0 = bi * WBLK, m = n - i0 < WBLK ? n - i0 : WBLK;
        transform_2d(gt_1d, TA, 3, g, WBLK, t, WBLK, dU + i0, XSTRIDE(n), m);
        for (size_t i = 0; i < m; i++)
            for (int k = 0; k < 9; k++) dw[9 * (i0 + i) + k] += g[k * WBLK + i];
    }
}

// V[x] (C, P) from the P tiles of img (nb, C, H, W)
static void input_transform(float *V, const float *img, const WinoTables *t, float *slots,
                            int C, int P, const WinoPlan *q) {
    size_t n = (size_t)C * P, Pc = q->Pc;
    float *D = slot_of(slots, q), *T = D + NX * PBLK; // (NX, PBLK) each
    float *pl = planes_of(slots, q);                   // (nb, Hp, Wp)
    int nb = P / q->T;
#pragma omp for schedule(static)
    for (int c = 0; c < C; c++) {
        planes_fill(pl, img + (size_t)c * q->HW, (size_t)C * q->HW, nb, q);
        for (int p0 = 0; p0 < P; p0 += PBLK) {
            int m = P - p0 < PBLK ? P - p0 : PBLK;
            for (int k = 0; k < NX; k++) {
                const int *g = t->gin + k * Pc + p0;
                float *d = D + k * PBLK;
#pragma omp simd
                for (int p = 0; p < m; p++) d[p] = pl[g[p]];
            }
            transform_2d(bt_1d, TA, TA, V + (size_t)c * P + p0, XSTRIDE(n), T, PBLK, D, PBLK,
                         m);
        }
    }
}

// out (nb, OC, H, W) = A^T M[x] A + bias over the P tiles; M (NX, OC, P)
static void output_transform(float *out, const float *M, const float *bias, const WinoTables *t,
                             float *slots, int OC, int nb, int P, const WinoPlan *q) {
    size_t n = (size_t)OC * P, Pc = q->Pc, HW = q->HW;
    float *Y = slot_of(slots, q), *T = Y + TM * TM * Pc; // (TM*TM, Pc), (TM*TA, PBLK)
#pragma omp for schedule(static)
    for (int oc = 0; oc < OC; oc++) {
        transform_2d_blocked(at_1d, TA, TM, Y, Pc, T, M + (size_t)oc * P, XSTRIDE(n), P);
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
    float *DY = slot_of(slots, q), *T = DY + NX * PBLK; // (TM*TM, PBLK), (TA*TM, PBLK)
    float *pl = planes_of(slots, q);                     // (nb, Hp, Wp)
    int nb = P / q->T;
#pragma omp for schedule(static)
    for (int oc = 0; oc < OC; oc++) {
        planes_fill(pl, dout + (size_t)oc * q->HW, (size_t)OC * q->HW, nb, q);
        for (int p0 = 0; p0 < P; p0 += PBLK) {
            int m = P - p0 < PBLK ? P - p0 : PBLK;
            for (int k = 0; k < TM * TM; k++) {
                const int *g = t->gdy + k * Pc + p0;
                float *d = DY + k * PBLK;
#pragma omp simd
                for (int p = 0; p < m; p++) d[p] = pl[g[p]];
            }
            transform_2d(a_1d, TM, TA, dM + (size_t)oc * P + p0, XSTRIDE(n), T, PBLK, DY,
                         PBLK, m);
        }
    }
}

// img (nb, C, H, W) += (acc) or = (!acc) the sum over tiles of B dV[x] B^T,
// each input pixel adding its (at most 4) tile copies in a fixed order
static void input_transform_adjoint(float *img, const float *dV, const WinoTables *t,
                                    float *slots, int C, int nb, int P, const WinoPlan *q,
                                    int acc) {
    size_t n = (size_t)C * P, Pc = q->Pc, HW = q->HW, NP = (size_t)q->nb * HW;
    float *D = slot_of(slots, q), *T = D + NX * Pc; // (NX, Pc), (NX, PBLK)
#pragma omp for schedule(static)
    for (int c = 0; c < C; c++) {
        transform_2d_blocked(b_1d, TA, TA, D, Pc, T, dV + (size_t)c * P, XSTRIDE(n), P);
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

// Carves scratch: U, dU (NX, OC, C) | V (NX, C, Pc) | M (NX, OC, Pc) | tables | slots
typedef struct {
    float *U, *dU, *V, *M, *slots;
    WinoTables t;
} WinoBufs;

static WinoBufs bufs_carve(float *scratch, const WinoPlan *q, int C, int OC) {
    WinoBufs w;
    w.U = scratch;
    w.dU = w.U + NX * XSTRIDE((size_t)OC * C);
    w.V = w.dU + NX * XSTRIDE((size_t)OC * C);
    w.M = w.V + NX * XSTRIDE((size_t)C * q->Pc);
    int *tab = (int *)(w.M + NX * XSTRIDE((size_t)OC * q->Pc));
    w.t = tables_carve(tab, q);
    w.slots = (float *)(tab + TABLE_INTS(q->Pc));
    return w;
}

size_t winograd_weights_floats(int C, int OC) { return NX * XSTRIDE((size_t)OC * C); }

void winograd_weights(float *U, const float *w, int C, int OC) {
#pragma omp parallel
    weights_transform(U, w, OC, C);
}

void winograd_conv_forward(float *out, const float *in, const float *w, const float *U,
                           const float *b, int B, int C, int H, int W, int OC,
                           float *scratch) {
    WinoPlan q = wino_plan(B, C, H, W, OC);
    WinoBufs s = bufs_carve(scratch, &q, C, OC);
    const float *Ux = U ? U : s.U; // (NX, OC, C)
    size_t HW = (size_t)H * W;
#pragma omp parallel num_threads(q.slots)
    {
        tables_build(&s.t, &q);
        if (!U) weights_transform(s.U, w, OC, C);
        for (int b0 = 0; b0 < B; b0 += q.nb) {
            int nb = B - b0 < q.nb ? B - b0 : q.nb, P = nb * q.T;
            input_transform(s.V, in + (size_t)b0 * C * HW, &s.t, s.slots, C, P, &q);
#pragma omp for schedule(static)
            for (int x = 0; x < NX; x++) // M[x] (OC, P) = U[x] (OC, C) V[x] (C, P)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, OC, P, C, 1.0f,
                            Ux + x * XSTRIDE((size_t)OC * C), C,
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
        tables_build(&s.t, &q);
        if (din) weights_transform(s.U, w, OC, C);
        for (int b0 = 0; b0 < B; b0 += q.nb) {
            int nb = B - b0 < q.nb ? B - b0 : q.nb, P = nb * q.T;
            input_transform(s.V, in + (size_t)b0 * C * HW, &s.t, s.slots, C, P, &q);
            output_transform_adjoint(s.M, dout + (size_t)b0 * OC * HW, &s.t, s.slots, OC, P, &q);
#pragma omp for schedule(static)
            for (int x = 0; x < NX; x++) {
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
