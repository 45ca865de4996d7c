// pool.c: the kernels of pool.h. Planes (item, channel) are split across
// threads; every output element (and in the max pool's backward every input
// gradient) is computed by one thread in a fixed order, so results do not
// depend on the thread count.
#include "pool.h"

#include <math.h>

#include "common.h"

static int pool_out(int n, int k, int s, int p) { return (n + 2 * p - k) / s + 1; }

#define POOL_SPAN 1024 // input columns a row pass reduces at a time (stack buffer)

// One plane x (H, W) -> o (OH, OW), max or average over the window clipped
// to the plane. Separable: for each output row, the window's rows are first
// reduced column by column (contiguous, vectorised loops), then each output
// reduces its k columns of that; output columns go in strips whose input
// columns fit the buffer. The average sums in that order (columns, then
// across) and divides by the count of cells inside the plane.
static void pool_plane(float *o, const float *x, int H, int W, int k, int s, int p,
                       int is_max) {
    int OH = pool_out(H, k, s, p), OW = pool_out(W, k, s, p);
    int strip = (POOL_SPAN - k) / s + 1;
    float col[POOL_SPAN];
    for (int oh = 0; oh < OH; oh++) {
        int h0 = oh * s - p, h1 = h0 + k;
        if (h0 < 0) h0 = 0;
        if (h1 > H) h1 = H;
        for (int o0 = 0; o0 < OW; o0 += strip) {
            int o1 = OW - o0 < strip ? OW : o0 + strip;
            int c0 = o0 * s - p, c1 = (o1 - 1) * s - p + k;
            if (c0 < 0) c0 = 0;
            if (c1 > W) c1 = W;
            int n = c1 - c0;
            const float *r = x + (size_t)h0 * W + c0;
            for (int i = 0; i < n; i++) col[i] = r[i];
            for (int ih = h0 + 1; ih < h1; ih++) {
                r = x + (size_t)ih * W + c0;
                if (is_max)
                    for (int i = 0; i < n; i++) // NaN propagates, as in torch
                        col[i] = r[i] > col[i] || r[i] != r[i] ? r[i] : col[i];
                else
                    for (int i = 0; i < n; i++) col[i] += r[i];
            }
            for (int ow = o0; ow < o1; ow++) {
                int w0 = ow * s - p, w1 = w0 + k;
                if (w0 < 0) w0 = 0;
                if (w1 > W) w1 = W;
                float v = col[w0 - c0];
                for (int iw = w0 + 1; iw < w1; iw++) {
                    float c = col[iw - c0];
                    if (is_max)
                        v = c > v || c != c ? c : v;
                    else
                        v += c;
                }
                o[(size_t)oh * OW + ow] = is_max ? v : v / (float)((h1 - h0) * (w1 - w0));
            }
        }
    }
}

static void pool2d(float *out, const float *in, int B, int C, int H, int W, int k, int s, int p,
                   int is_max) {
    // a window always overlaps the plane (torch's own limit), and fits the buffer
    CHECK(k >= 1 && s >= 1 && p >= 0 && 2 * p <= k && k <= H + 2 * p && k <= W + 2 * p &&
          k < POOL_SPAN);
    size_t OHW = (size_t)pool_out(H, k, s, p) * pool_out(W, k, s, p);
#pragma omp parallel for schedule(static)
    for (long pl = 0; pl < (long)B * C; pl++)
        pool_plane(out + (size_t)pl * OHW, in + (size_t)pl * H * W, H, W, k, s, p, is_max);
}

void maxpool2d_forward(float *out, const float *in, int B, int C, int H, int W, int k, int s,
                       int p) {
    pool2d(out, in, B, C, H, W, k, s, p, 1);
}

// The backward finds each window's maximum again rather than reading indices
// saved by the forward: the forward reduces separably (columns first), which
// gives the maximum but not its first position.
void maxpool2d_backward(float *din, const float *dout, const float *in, int B, int C, int H,
                        int W, int k, int s, int p) {
    CHECK(k >= 1 && s >= 1 && p >= 0 && 2 * p <= k && k <= H + 2 * p && k <= W + 2 * p);
    int OH = pool_out(H, k, s, p), OW = pool_out(W, k, s, p);
#pragma omp parallel for schedule(static)
    for (long pl = 0; pl < (long)B * C; pl++) {
        const float *x = in + (size_t)pl * H * W, *g = dout + (size_t)pl * OH * OW;
        float *dx = din + (size_t)pl * H * W;
        for (int oh = 0; oh < OH; oh++) {
            int h0 = oh * s - p, h1 = h0 + k;
            if (h0 < 0) h0 = 0;
            if (h1 > H) h1 = H;
            for (int ow = 0; ow < OW; ow++) {
                int w0 = ow * s - p, w1 = w0 + k;
                if (w0 < 0) w0 = 0;
                if (w1 > W) w1 = W;
                size_t best = (size_t)h0 * W + w0;
                float m = -INFINITY;
                for (int ih = h0; ih < h1; ih++)
                    for (int iw = w0; iw < w1; iw++) {
                        float v = x[(size_t)ih * W + iw];
                        if (v > m || v != v) {
                            m = v;
                            best = (size_t)ih * W + iw;
                        }
                    }
                dx[best] += g[(size_t)oh * OW + ow];
            }
        }
    }
}

void avgpool2d_forward(float *out, const float *in, int B, int C, int H, int W, int k, int s,
                       int p) {
    pool2d(out, in, B, C, H, W, k, s, p, 0);
}

// Source index and weights of output index i along a side of n inputs with
// scale n / out (a float, as torch's area_pixel_compute_scale): the source
// coordinate scale (i + 0.5) - 0.5 in double, clamped at 0 (torch 1.13's CPU
// kernel keeps it in double: rounding it to float was seen to differ by
// 1e-6 on a 37 -> 10 downsample); the right neighbour stays in range.
static void lerp_at(int *i0, int *i1, float *l0, float *l1, float scale, int i, int n) {
    double src = scale * (i + 0.5) - 0.5;
    if (src < 0) src = 0;
    int a = (int)src;
    float l = (float)(src - a);
    if (l > 1) l = 1;
    *i0 = a;
    *i1 = a < n - 1 ? a + 1 : a;
    *l1 = l;
    *l0 = 1.0f - l;
}

void resize_bilinear_forward(float *out, const float *in, int B, int C, int H, int W, int OH,
                             int OW) {
    float sh = (float)H / (float)OH, sw = (float)W / (float)OW;
#pragma omp parallel for schedule(static)
    for (long pl = 0; pl < (long)B * C; pl++) {
        const float *x = in + (size_t)pl * H * W;
        float *o = out + (size_t)pl * OH * OW;
        for (int oh = 0; oh < OH; oh++) {
            int h0, h1;
            float a0, a1;
            lerp_at(&h0, &h1, &a0, &a1, sh, oh, H);
            const float *r0 = x + (size_t)h0 * W, *r1 = x + (size_t)h1 * W;
            for (int ow = 0; ow < OW; ow++) {
                int w0, w1;
                float b0, b1;
                lerp_at(&w0, &w1, &b0, &b1, sw, ow, W);
                o[(size_t)oh * OW + ow] =
                    a0 * (b0 * r0[w0] + b1 * r0[w1]) + a1 * (b0 * r1[w0] + b1 * r1[w1]);
            }
        }
    }
}

void relu_forward(float *out, const float *in, size_t n) {
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) out[i] = in[i] < 0.0f ? 0.0f : in[i]; // NaN stays NaN
}
