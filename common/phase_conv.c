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

// The map between 4x4 weights w (A, Bn, 4, 4) and 3x3 phase weights w3:
//   conv (A = OC, Bn = C):             w3 (OC, 4C, 3, 3), channel 4c + ph
//   transposed (A = C, Bn = OC):       w3 (4 OC, C, 3, 3), channel 4o + ph
// Forward: dst = w3 from src = w (zeros at the unused taps). Adjoint: dst = dw
// += the used taps of src = dw3; each thread owns whole rows a of dw.
static void weights_map(float *dst, const float *src, int A, int Bn, int transposed,
                        int adjoint) {
#pragma omp parallel for schedule(static)
    for (int a = 0; a < A; a++)
        for (int b = 0; b < Bn; b++)
            for (int ph = 0; ph < 4; ph++) {
                size_t ch = transposed ? ((size_t)4 * b + ph) * A + a   // (4 OC, C)
                                       : (size_t)a * 4 * Bn + 4 * b + ph; // (OC, 4C)
                for (int jy = 0; jy < 3; jy++)
                    for (int jx = 0; jx < 3; jx++) {
                        int ky = transposed ? tap_convt(jy, ph >> 1) : tap_conv(jy, ph >> 1);
                        int kx = transposed ? tap_convt(jx, ph & 1) : tap_conv(jx, ph & 1);
                        int ok = ky >= 0 && kx >= 0;
                        size_t i3 = (ch * 3 + jy) * 3 + jx;
                        size_t i4 = ok ? (((size_t)a * Bn + b) * 4 + ky) * 4 + kx : 0;
                        if (!adjoint)
                            dst[i3] = ok ? src[i4] : 0.0f;
                        else if (ok)
                            dst[i4] += src[i3];
                    }
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
    weights_map(w3, w, OC, C, 0, 0);
    winograd_conv_forward(out, x2, w3, NULL, b, B, 4 * C, H / 2, W / 2, OC, wino);
}

void phase_conv_backward(float *din, float *dw, const float *dout, const float *in,
                         const float *w, int B, int C, int H, int W, int OC,
                         float *scratch, int acc) {
    CHECK(H % 2 == 0 && W % 2 == 0);
    size_t n = (size_t)B * C * H * W, nw = (size_t)OC * 4 * C * 9;
    float *x2 = scratch, *dx2 = x2 + n, *w3 = dx2 + n, *dw3 = w3 + nw, *wino = dw3 + nw;
    to_phases(x2, in, B, C, H, W);
    weights_map(w3, w, OC, C, 0, 0);
    memset(dw3, 0, nw * sizeof(float));
    winograd_conv_backward(din ? dx2 : NULL, dw3, dout, x2, w3, B, 4 * C, H / 2, W / 2, OC,
                           wino, 0);
    weights_map(dw, dw3, OC, C, 0, 1);
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
    weights_map(w3, w, C, OC, 1, 0);
    winograd_conv_forward(y3, in, w3, NULL, NULL, B, C, H, W, 4 * OC, wino);
    from_phases(out, y3, b, B, OC, 2 * H, 2 * W, 0);
}

void phase_convt_backward(float *din, float *dw, const float *dout, const float *in,
                          const float *w, int B, int C, int H, int W, int OC,
                          float *scratch, int acc) {
    size_t n = (size_t)B * 4 * OC * H * W, nw = (size_t)4 * OC * C * 9;
    float *dy3 = scratch, *w3 = dy3 + n, *dw3 = w3 + nw, *wino = dw3 + nw;
    to_phases(dy3, dout, B, OC, 2 * H, 2 * W);
    weights_map(w3, w, C, OC, 1, 0);
    memset(dw3, 0, nw * sizeof(float));
    winograd_conv_backward(din, dw3, dy3, in, w3, B, C, H, W, 4 * OC, wino, acc);
    weights_map(dw, dw3, C, OC, 1, 1);
}
