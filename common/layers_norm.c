// layers_norm.c: the kernels of layers_gan.h (BatchNorm, LeakyReLU, and the
// losses of the GAN autoencoder objective). Per-channel statistics are one
// channel per task, summed in a fixed (item, position) order; whole-tensor
// sums are split into a fixed number of chunks added in order. Neither
// depends on the thread count.
#include "layers_gan.h"

#include <math.h>

#include "common.h"

// ---------------------------------------------------------------------------
// BatchNorm2d (training mode)

void batchnorm_forward(float *out, float *mean, float *rstd, const float *in,
                       const float *w, const float *b, int B, int C, int HW) {
    size_t n = (size_t)B * HW;
    CHECK(n >= 2);
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        // two passes: the variance from centred values does not cancel
        double s = 0.0;
        for (int bi = 0; bi < B; bi++) {
            const float *x = in + ((size_t)bi * C + c) * HW; // (HW)
            for (int i = 0; i < HW; i++) s += x[i];
        }
        double mu = s / (double)n, v = 0.0;
        for (int bi = 0; bi < B; bi++) {
            const float *x = in + ((size_t)bi * C + c) * HW;
            for (int i = 0; i < HW; i++) v += (x[i] - mu) * (x[i] - mu);
        }
        double rs = 1.0 / sqrt(v / (double)n + BATCHNORM_EPS);
        mean[c] = (float)mu;
        rstd[c] = (float)rs;
        // normalisation and affine folded into one scale and shift
        float sc = (float)(rs * w[c]), sh = (float)(b[c] - mu * rs * w[c]);
        for (int bi = 0; bi < B; bi++) {
            const float *x = in + ((size_t)bi * C + c) * HW;
            float *o = out + ((size_t)bi * C + c) * HW;
            for (int i = 0; i < HW; i++) o[i] = x[i] * sc + sh;
        }
    }
}

void batchnorm_backward(float *din, float *dw, float *db, const float *dout,
                        const float *in, const float *mean, const float *rstd,
                        const float *w, int B, int C, int HW) {
    size_t n = (size_t)B * HW;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        double mu = mean[c], rs = rstd[c], sd = 0.0, sdx = 0.0;
        for (int bi = 0; bi < B; bi++) {
            const float *x = in + ((size_t)bi * C + c) * HW;   // (HW)
            const float *d = dout + ((size_t)bi * C + c) * HW; // (HW)
            for (int i = 0; i < HW; i++) {
                sd += d[i];
                sdx += d[i] * ((x[i] - mu) * rs);
            }
        }
        dw[c] += (float)sdx;
        db[c] += (float)sd;
        if (!din) continue;
        // din = w rstd (dout - mean(dout) - xhat mean(dout xhat)): the batch
        // statistics depend on every input of the channel
        double k = w[c] * rs, m1 = sd / (double)n, m2 = sdx / (double)n;
        for (int bi = 0; bi < B; bi++) {
            const float *x = in + ((size_t)bi * C + c) * HW;
            const float *d = dout + ((size_t)bi * C + c) * HW;
            float *g = din + ((size_t)bi * C + c) * HW;
            for (int i = 0; i < HW; i++)
                g[i] += (float)(k * (d[i] - m1 - (x[i] - mu) * rs * m2));
        }
    }
}

void batchnorm_update_running(float *running_mean, float *running_var, const float *mean,
                              const float *rstd, int C, size_t n, float momentum) {
    CHECK(n >= 2);
    double m = momentum;
    for (int c = 0; c < C; c++) {
        double rs = rstd[c], var = 1.0 / (rs * rs) - BATCHNORM_EPS;
        if (var < 0.0) var = 0.0; // rounding of a constant channel's rstd
        double unbiased = var * (double)n / (double)(n - 1);
        running_mean[c] = (float)((1.0 - m) * running_mean[c] + m * mean[c]);
        running_var[c] = (float)((1.0 - m) * running_var[c] + m * unbiased);
    }
}

// ---------------------------------------------------------------------------
// LeakyReLU

void leaky_relu_forward(float *out, const float *in, float slope, size_t n) {
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = in[i] > 0.0f ? in[i] : slope * in[i];
}

void leaky_relu_backward(float *din, const float *dout, const float *x, float slope,
                         size_t n) {
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) din[i] += x[i] > 0.0f ? dout[i] : slope * dout[i];
}

void leaky_relu_backward_set(float *din, const float *dout, const float *x, float slope,
                             size_t n) {
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) din[i] = x[i] > 0.0f ? dout[i] : slope * dout[i];
}

// ---------------------------------------------------------------------------
// losses

#define SUM_CHUNKS 64

double l1_forward(const float *a, const float *b, size_t n) {
    double part[SUM_CHUNKS];
    size_t chunk = (n + SUM_CHUNKS - 1) / SUM_CHUNKS;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < SUM_CHUNKS; c++) {
        size_t lo = (size_t)c * chunk, hi = lo + chunk < n ? lo + chunk : n;
        double acc = 0.0;
        for (size_t i = lo; i < hi; i++) acc += fabs((double)a[i] - (double)b[i]);
        part[c] = acc;
    }
    double sum = 0.0;
    for (int c = 0; c < SUM_CHUNKS; c++) sum += part[c];
    return sum;
}

void l1_backward(float *da, const float *a, const float *b, size_t n, float scale) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        da[i] += a[i] > b[i] ? scale : a[i] < b[i] ? -scale : 0.0f;
}

// The logits are few (B x 6 x 6 patches), so these sums are serial.
double hinge_d_loss_forward(const float *real, const float *fake, size_t n_real,
                            size_t n_fake) {
    CHECK(n_real > 0 && n_fake > 0);
    double sr = 0.0, sf = 0.0;
    for (size_t i = 0; i < n_real; i++) sr += fmax(0.0, 1.0 - real[i]);
    for (size_t i = 0; i < n_fake; i++) sf += fmax(0.0, 1.0 + fake[i]);
    return 0.5 * (sr / (double)n_real + sf / (double)n_fake);
}

void hinge_d_loss_backward(float *dreal, float *dfake, const float *real, const float *fake,
                           size_t n_real, size_t n_fake, float scale) {
    float gr = (float)(-0.5 * scale / (double)n_real), gf = (float)(0.5 * scale / (double)n_fake);
    if (dreal)
        for (size_t i = 0; i < n_real; i++)
            if (real[i] < 1.0f) dreal[i] += gr;
    if (dfake)
        for (size_t i = 0; i < n_fake; i++)
            if (fake[i] > -1.0f) dfake[i] += gf;
}

double gan_g_loss_forward(const float *fake, size_t n) {
    CHECK(n > 0);
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += fake[i];
    return -s / (double)n;
}

void gan_g_loss_backward(float *dfake, size_t n, float scale) {
    float g = (float)(-(double)scale / (double)n);
    for (size_t i = 0; i < n; i++) dfake[i] += g;
}

double gan_adaptive_weight(const float *grad_nll, const float *grad_g, size_t n,
                           double disc_weight) {
    double snll = 0.0, sg = 0.0;
    for (size_t i = 0; i < n; i++) {
        snll += (double)grad_nll[i] * grad_nll[i];
        sg += (double)grad_g[i] * grad_g[i];
    }
    double w = sqrt(snll) / (sqrt(sg) + 1e-4);
    // fmin/fmax would turn a NaN into a bound; the caller's finiteness check
    // must see it
    if (w < 0.0) w = 0.0;
    if (w > 1e4) w = 1e4;
    return w * disc_weight;
}
