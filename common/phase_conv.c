// phase_conv.c: 4x4 stride-2 convs and transposed convs through Winograd, see
// phase_conv.h.
#include "phase_conv.h"

#include <string.h>

#include "common.h"
#include "winograd.h"

// The 4x4 tap that 3x3 tap j of phase ph stands for, or -1 (a zero tap).
static int tap_conv(int j, int ph) {
    int k = 2 * j - 1 + ph;
    return k >= 0 && k < 4 ? k : -1;
}
static int tap_convt(int j, int ph) {
    int k = 3 + ph - 2 * j;
    return k >= 0 && k < 4 ? k : -1;
}

// dst (B, 4C, H/2, W/2) = the 2x2 phases of src (B, C, H, W)
static void to_phases(float *dst, const float *src, int B, int C, int H, int W) {
    int h = H / 2, w = W / 2;
#pragma omp parallel for schedule(static)
    for (int bc = 0; bc < B * C; bc++) {
        const float *s = src + (size_t)bc * H * W; // (H, W)
        for (int ph = 0; ph < 4; ph++) {
            int py = ph >> 1, px = ph & 1;
            float *d = dst + ((size_t)bc * 4 + ph) * h * w; // (h, w)
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++) d[y * w + x] = s[(2 * y + py) * W + 2 * x + px];
        }
    }
}

// dst (B, C, H, W) (+)= (acc) the image whose 2x2 phases are src (B, 4C, H/2,
// W/2), plus bias[c] (bias may be NULL)
static void from_phases(float *dst, const float *src, const float *bias, int B, int C, int H,
                        int W, int acc) {
    int h = H / 2, w = W / 2;
#pragma omp parallel for schedule(static)
    for (int bc = 0; bc < B * C; bc++) {
        float *d = dst + (size_t)bc * H * W; // (H, W)
        float bv = bias ? bias[bc % C] : 0.0f;
        for (int ph = 0; ph < 4; ph++) {
            int py = ph >> 1, px = ph & 1;
            const float *s = src + ((size_t)bc * 4 + ph) * h * w; // (h, w)
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++) {
                    float *o = d + (2 * y + py) * W + 2 * x + px;
                    *o = (acc ? *o : 0.0f) + s[y * w + x] + bv;
                }
        }
    }
}

// conv: w3 (OC, 4C, 3, 3) from w (OC, C, 4, 4)
static void conv_weights(float *w3, const float *w, int OC, int C) {
#pragma omp parallel for schedule(static)
    for (int o = 0; o < OC; o++)
        for (int c = 0; c < C; c++)
            for (int ph = 0; ph < 4; ph++)
                for (int jy = 0; jy < 3; jy++)
                    for (int jx = 0; jx < 3; jx++) {
                        int ky = tap_conv(jy, ph >> 1), kx = tap_conv(jx, ph & 1);
                        w3[(((size_t)o * 4 * C + 4 * c + ph) * 3 + jy) * 3 + jx] =
                            ky < 0 || kx < 0 ? 0.0f
                                             : w[(((size_t)o * C + c) * 4 + ky) * 4 + kx];
                    }
}

// conv: dw (OC, C, 4, 4) += its taps of dw3 (OC, 4C, 3, 3)
static void conv_weights_adjoint(float *dw, const float *dw3, int OC, int C) {
#pragma omp parallel for schedule(static)
    for (int o = 0; o < OC; o++)
        for (int c = 0; c < C; c++)
            for (int ph = 0; ph < 4; ph++)
                for (int jy = 0; jy < 3; jy++)
                    for (int jx = 0; jx < 3; jx++) {
                        int ky = tap_conv(jy, ph >> 1), kx = tap_conv(jx, ph & 1);
                        if (ky >= 0 && kx >= 0)
                            dw[(((size_t)o * C + c) * 4 + ky) * 4 + kx] +=
                                dw3[(((size_t)o * 4 * C + 4 * c + ph) * 3 + jy) * 3 + jx];
                    }
}

// transposed conv: w3 (4 OC, C, 3, 3) from w (C, OC, 4, 4)
static void convt_weights(float *w3, const float *w, int C, int OC) {
#pragma omp parallel for schedule(static)
    for (int o = 0; o < OC; o++)
        for (int ph = 0; ph < 4; ph++)
            for (int c = 0; c < C; c++)
                for (int jy = 0; jy < 3; jy++)
                    for (int jx = 0; jx < 3; jx++) {
                        int ky = tap_convt(jy, ph >> 1), kx = tap_convt(jx, ph & 1);
                        w3[((((size_t)4 * o + ph) * C + c) * 3 + jy) * 3 + jx] =
                            ky < 0 || kx < 0 ? 0.0f
                                             : w[(((size_t)c * OC + o) * 4 + ky) * 4 + kx];
                    }
}

// transposed conv: dw (C, OC, 4, 4) += its taps of dw3 (4 OC, C, 3, 3); the
// loop runs over c so that each thread owns whole rows of dw
static void convt_weights_adjoint(float *dw, const float *dw3, int C, int OC) {
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++)
        for (int o = 0; o < OC; o++)
            for (int ph = 0; ph < 4; ph++)
                for (int jy = 0; jy < 3; jy++)
                    for (int jx = 0; jx < 3; jx++) {
                        int ky = tap_convt(jy, ph >> 1), kx = tap_convt(jx, ph & 1);
                        if (ky >= 0 && kx >= 0)
                            dw[(((size_t)c * OC + o) * 4 + ky) * 4 + kx] +=
                                dw3[((((size_t)4 * o + ph) * C + c) * 3 + jy) * 3 + jx];
                    }
}

// ---------------------------------------------------------------------------
// conv2d. Scratch: x2, dx2 (B, 4C, H/2, W/2) | w3, dw3 (OC, 4C, 3, 3) | Winograd's

size_t phase_conv_scratch_floats(int B, int C, int H, int W, int OC) {
    size_t n = (size_t)B * C * H * W, nw = (size_t)OC * 4 * C * 9;
    return 2 * n + 2 * nw + winograd_scratch_floats(B, 4 * C, H / 2, W / 2, OC);
}

void phase_conv_forward(float *out, const float *in, const float *w, const float *b,
                        int B, int C, int H, int W, int OC, float *scratch) {
    CHECK(H % 2 == 0 && W % 2 == 0);
    size_t n = (size_t)B * C * H * W, nw = (size_t)OC * 4 * C * 9;
    float *x2 = scratch, *w3 = scratch + 2 * n, *wino = w3 + 2 * nw;
    to_phases(x2, in, B, C, H, W);
    conv_weights(w3, w, OC, C);
    winograd_conv_forward(out, x2, w3, NULL, b, B, 4 * C, H / 2, W / 2, OC, wino);
}

void phase_conv_backward(float *din, float *dw, const float *dout, const float *in,
                         const float *w, int B, int C, int H, int W, int OC,
                         float *scratch, int acc) {
    CHECK(H % 2 == 0 && W % 2 == 0);
    size_t n = (size_t)B * C * H * W, nw = (size_t)OC * 4 * C * 9;
    float *x2 = scratch, *dx2 = x2 + n, *w3 = dx2 + n, *dw3 = w3 + nw, *wino = dw3 + nw;
    to_phases(x2, in, B, C, H, W);
    conv_weights(w3, w, OC, C);
    memset(dw3, 0, nw * sizeof(float));
    winograd_conv_backward(din ? dx2 : NULL, dw3, dout, x2, w3, B, 4 * C, H / 2, W / 2, OC,
                           wino, 0);
    conv_weights_adjoint(dw, dw3, OC, C);
    if (din) from_phases(din, dx2, NULL, B, C, H, W, acc);
}

// ---------------------------------------------------------------------------
// conv_transpose2d. Scratch: y3 (B, 4 OC, H, W) | w3, dw3 (4 OC, C, 3, 3) | Winograd's

size_t phase_convt_scratch_floats(int B, int C, int H, int W, int OC) {
    size_t n = (size_t)B * 4 * OC * H * W, nw = (size_t)4 * OC * C * 9;
    return n + 2 * nw + winograd_scratch_floats(B, C, H, W, 4 * OC);
}

void phase_convt_forward(float *out, const float *in, const float *w, const float *b,
                         int B, int C, int H, int W, int OC, float *scratch) {
    size_t n = (size_t)B * 4 * OC * H * W, nw = (size_t)4 * OC * C * 9;
    float *y3 = scratch, *w3 = y3 + n, *wino = w3 + 2 * nw;
    convt_weights(w3, w, C, OC);
    winograd_conv_forward(y3, in, w3, NULL, NULL, B, C, H, W, 4 * OC, wino);
    from_phases(out, y3, b, B, OC, 2 * H, 2 * W, 0);
}

void phase_convt_backward(float *din, float *dw, const float *dout, const float *in,
                          const float *w, int B, int C, int H, int W, int OC,
                          float *scratch, int acc) {
    size_t n = (size_t)B * 4 * OC * H * W, nw = (size_t)4 * OC * C * 9;
    float *dy3 = scratch, *w3 = dy3 + n, *dw3 = w3 + nw, *wino = dw3 + nw;
    to_phases(dy3, dout, B, OC, 2 * H, 2 * W);
    convt_weights(w3, w, C, OC);
    memset(dw3, 0, nw * sizeof(float));
    winograd_conv_backward(din, dw3, dy3, in, w3, B, C, H, W, 4 * OC, wino, acc);
    convt_weights_adjoint(dw, dw3, C, OC);
}
