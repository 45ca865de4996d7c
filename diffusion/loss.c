// loss.c: the diffusion training loss.
#include "loss.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "layers.h"

void diffusion_loss_init(DiffusionLoss *l, int max_batch, size_t n) {
    CHECK(max_batch >= 1 && n >= 1);
    memset(l, 0, sizeof *l);
    l->max_batch = max_batch;
    l->n = n;
    size_t bytes = (size_t)max_batch * n * sizeof(float);
    l->xt = xmalloc_aligned(bytes);
    l->pred = xmalloc_aligned(bytes);
    l->target = xmalloc_aligned(bytes);
    l->dpred = xmalloc_aligned(bytes);
}

void diffusion_loss_free(DiffusionLoss *l) {
    free(l->xt);
    free(l->pred);
    free(l->target);
    free(l->dpred);
    memset(l, 0, sizeof *l);
}

float diffusion_loss_forward(DiffusionLoss *l, UNet *u, const Schedule *s, int prediction,
                             const float *x0, const float *noise, const int *t, int B) {
    return diffusion_loss_forward_labels(l, u, s, prediction, x0, noise, t, NULL, B);
}

float diffusion_loss_forward_labels(DiffusionLoss *l, UNet *u, const Schedule *s,
                                    int prediction, const float *x0, const float *noise,
                                    const int *t, const int *y, int B) {
    const UNetConfig *c = &u->cfg;
    size_t n = l->n;
    CHECK(n == (size_t)c->latent_channels * c->latent_size * c->latent_size);
    CHECK(B >= 1 && B <= l->max_batch);
    q_sample(l->xt, s, x0, noise, t, B, n);
    diffusion_target(l->target, s, prediction, x0, noise, t, B, n);
    unet_forward(u, l->pred, l->xt, t, y, B);
    l->B = B;
    return (float)(sq_err_forward(l->pred, l->target, (size_t)B * n) / ((double)B * n));
}

void diffusion_loss_backward(DiffusionLoss *l, UNet *u) {
    size_t N = (size_t)l->B * l->n;
    CHECK(l->B >= 1 && u->B == l->B);
    memset(l->dpred, 0, N * sizeof *l->dpred);
    sq_err_backward(l->dpred, l->pred, l->target, N, (float)(1.0 / (double)N));
    unet_backward(u, l->dpred);
}
