// klgan.c: the kl-gan autoencoder loss (klgan.h).
#include "klgan.h"

#include <math.h>
#include <string.h>

#include "common.h"
#include "layers.h"
#include "layers_gan.h"

void klgan_config_default(KlGanConfig *c) {
    *c = (KlGanConfig){.kl_weight = 1e-6f, .disc_weight = 0.5f, .perceptual_weight = 1.0f,
                       .disc_start = 0};
}

static size_t img_floats(const KlVae *ae) {
    return (size_t)ae->cfg.in_channels * ae->cfg.image_size * ae->cfg.image_size;
}

static size_t lat_floats(const KlVae *ae) {
    size_t h = (size_t)kl_latent_size(&ae->cfg);
    return (size_t)ae->cfg.z_channels * h * h;
}

static size_t logit_floats(const KlGan *g) {
    if (!g->d) return 0;
    size_t P = (size_t)patchgan_out_size(&g->d->cfg);
    return P * P;
}

void klgan_init(KlGan *g, const KlGanConfig *c, KlVae *ae, Patchgan *d, Lpips *lp,
                int max_batch) {
    CHECK(max_batch > 0 && max_batch <= ae->max_batch);
    CHECK(!d || (d->max_batch >= max_batch && d->cfg.image_size == ae->cfg.image_size &&
                 d->cfg.in_channels == ae->cfg.in_channels));
    CHECK(!lp || (lp->max_batch >= max_batch && lp->size == ae->cfg.image_size &&
                  ae->cfg.in_channels == 3));
    memset(g, 0, sizeof *g);
    g->cfg = *c, g->ae = ae, g->d = d, g->lp = lp, g->max_batch = max_batch;
    kl_train_init(ae); // before the step loop, not inside its first step
    size_t B = (size_t)max_batch, lat = B * lat_floats(ae), img = B * img_floats(ae);
    size_t logits = B * logit_floats(g), lw = ae->last_w_size;
    size_t total = 5 * lat + 3 * img + 2 * B + 2 * logits + 2 * lw;
    float *p = g->buf = xcalloc(total, sizeof(float));
    g->mean = p, p += lat;
    g->logvar = p, p += lat;
    g->z = p, p += lat;
    g->dmean = p, p += lat;
    g->dlogvar = p, p += lat;
    g->xhat = p, p += img;
    g->dxhat = p, p += img;
    g->dxg = p, p += img;
    g->lp_out = p, p += B;
    g->lp_dout = p, p += B;
    g->dlogits = p, p += logits;
    g->real = p, p += logits;
    g->dw_nll = p, p += lw;
    g->dw_g = p, p += lw;
    CHECK(p == g->buf + total);
}

void klgan_free(KlGan *g) {
    free(g->buf);
    memset(g, 0, sizeof *g);
}

static double mean_of(const float *x, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += x[i];
    return s / (double)n;
}

double klgan_ae_backward(KlGan *g, const float *x, const float *eps, int B, int disc) {
    CHECK(B > 0 && B <= g->max_batch);
    CHECK(!disc || g->d);
    KlVae *ae = g->ae;
    const KlGanConfig *c = &g->cfg;
    size_t n = img_floats(ae), nb = (size_t)B * n, lat = (size_t)B * lat_floats(ae);
    g->B = B, g->eps = eps;

    kl_encode_forward(ae, g->mean, g->logvar, x, B);
    for (size_t j = 0; j < lat; j++) g->z[j] = g->mean[j] + expf(0.5f * g->logvar[j]) * eps[j];
    kl_decode_forward(ae, g->xhat, g->z, B);

    // nll and its gradient at the reconstruction: L1, plus LPIPS counted once
    // per element of its image.
    memset(g->dxhat, 0, nb * sizeof(float));
    g->l1 = l1_forward(g->xhat, x, nb) / B;
    l1_backward(g->dxhat, g->xhat, x, nb, 1.0f / (float)B);
    g->lpips = 0.0;
    if (g->lp) {
        lpips_forward(g->lp, g->lp_out, x, g->xhat, B);
        double s = 0.0;
        for (int b = 0; b < B; b++) s += g->lp_out[b];
        g->lpips = s / B;
        float per = c->perceptual_weight * (float)n / (float)B;
        for (int b = 0; b < B; b++) g->lp_dout[b] = per;
        lpips_backward(g->lp, g->dxhat, g->lp_dout);
    }
    g->nll = g->l1 + (double)c->perceptual_weight * (double)n * g->lpips;
    g->kl = gaussian_kl_forward(g->mean, g->logvar, lat) / B;

    g->g = g->w = g->logits_fake = 0.0;
    if (disc) {
        // g = -mean(D(x_hat)); its gradient at x_hat goes through D, whose own
        // parameter gradients from this pass are not wanted.
        size_t nl = (size_t)B * logit_floats(g);
        const float *fake = patchgan_forward(g->d, g->xhat, B);
        if (!g->keep_running) patchgan_update_running(g->d);
        g->g = gan_g_loss_forward(fake, nl);
        g->logits_fake = mean_of(fake, nl);
        memset(g->dlogits, 0, nl * sizeof(float));
        gan_g_loss_backward(g->dlogits, nl, 1.0f);
        memset(g->dxg, 0, nb * sizeof(float));
        patchgan_backward(g->d, g->dxg, g->dlogits);
        memset(g->d->grads, 0, g->d->table.total * sizeof(float));
        kl_last_layer_grad(ae, g->dw_nll, g->dxhat);
        kl_last_layer_grad(ae, g->dw_g, g->dxg);
        g->w = gan_adaptive_weight(g->dw_nll, g->dw_g, ae->last_w_size, c->disc_weight);
        float w = (float)g->w;
        for (size_t i = 0; i < nb; i++) g->dxhat[i] += w * g->dxg[i];
    }
    g->loss = g->nll + g->w * g->g + (double)c->kl_weight * g->kl;

    // Back through the decoder to z, the reparameterisation, the KL term and
    // the encoder.
    memset(g->dmean, 0, lat * sizeof(float));
    kl_decode_backward(ae, g->dmean, g->dxhat); // dz lands in dmean
    for (size_t j = 0; j < lat; j++)
        g->dlogvar[j] = g->dmean[j] * eps[j] * 0.5f * expf(0.5f * g->logvar[j]);
    gaussian_kl_backward(g->dmean, g->dlogvar, g->mean, g->logvar, lat,
                         c->kl_weight / (float)B);
    kl_encode_backward(ae, NULL, g->dmean, g->dlogvar);
    return g->loss;
}

double klgan_d_backward(KlGan *g, const float *x) {
    CHECK(g->d && g->B > 0);
    Patchgan *d = g->d;
    int B = g->B;
    size_t nl = (size_t)B * logit_floats(g);
    memset(d->grads, 0, d->table.total * sizeof(float));
    // The hinge loss is a sum of a real and a fake part, so each pass's
    // backward runs right after its forward, on that pass's activations.
    const float *real = patchgan_forward(d, x, B);
    if (!g->keep_running) patchgan_update_running(d);
    memcpy(g->real, real, nl * sizeof(float));
    memset(g->dlogits, 0, nl * sizeof(float));
    hinge_d_loss_backward(g->dlogits, NULL, g->real, NULL, nl, nl, 1.0f);
    patchgan_backward(d, NULL, g->dlogits);
    const float *fake = patchgan_forward(d, g->xhat, B);
    if (!g->keep_running) patchgan_update_running(d);
    memset(g->dlogits, 0, nl * sizeof(float));
    hinge_d_loss_backward(NULL, g->dlogits, NULL, fake, nl, nl, 1.0f);
    patchgan_backward(d, NULL, g->dlogits);
    g->d_loss = hinge_d_loss_forward(g->real, fake, nl, nl);
    g->logits_real = mean_of(g->real, nl);
    return g->d_loss;
}
