// edit.c: the rules of ldm-edit's img2img and inpainting (see edit.h).
#include "edit.h"

#include <math.h>
#include <string.h>

#include "common.h"
#include "image.h"

int edit_start_step(double strength, int nsteps) {
    CHECK(strength > 0 && strength <= 1 && nsteps >= 1);
    long run = lround(strength * nsteps);
    return nsteps - (int)(run < 1 ? 1 : run);
}

void edit_start_latent(float *x, const Schedule *s, const SampleSpec *sp, const float *x0,
                       int B, size_t n) {
    if (sp->start == 0) return;
    int nsteps = sampler_timesteps(sp, s, NULL);
    CHECK(sp->start > 0 && sp->start < nsteps);
    int *ts = xmalloc((size_t)nsteps * sizeof *ts), *t = xmalloc((size_t)B * sizeof *t);
    sampler_timesteps(sp, s, ts);
    for (int b = 0; b < B; b++) t[b] = ts[sp->start];
    q_sample(x, s, x0, x, t, B, n); // elementwise: in place is fine
    free(ts), free(t);
}

int edit_mask_load(uint8_t *px, const char *path, int S, int *resized) {
    int w, h;
    const char *why = NULL;
    uint8_t *m = image_load(path, 1, &w, &h, &why);
    if (!m) return errorf("%s: the mask is not an image that can be read (%s)", path, why);
    for (int y = 0; y < S; y++) {
        int sy = (int)(((int64_t)2 * y + 1) * h / (2 * (int64_t)S)); // floor((y + 0.5) h / S)
        for (int x = 0; x < S; x++) {
            int sx = (int)(((int64_t)2 * x + 1) * w / (2 * (int64_t)S));
            px[(size_t)y * S + x] = m[(size_t)sy * w + sx] >= 128;
        }
    }
    *resized = w != S || h != S;
    image_free(m);
    return 0;
}

void edit_latent_mask(uint8_t *lat, const uint8_t *px, int S, int h) {
    CHECK(h >= 1 && S % h == 0);
    int f = S / h;
    for (int i = 0; i < h; i++)
        for (int j = 0; j < h; j++) {
            uint8_t any = 0;
            for (int y = i * f; y < (i + 1) * f; y++)
                for (int x = j * f; x < (j + 1) * f; x++) any |= px[(size_t)y * S + x];
            lat[i * h + j] = any;
        }
}

void edit_inpaint_init(Inpaint *p, const Schedule *s, const SampleSpec *sp, int B, int Z,
                       int h, int resample) {
    CHECK(resample >= 1);
    memset(p, 0, sizeof *p);
    p->sched = s;
    p->nsteps = sampler_timesteps(sp, s, NULL);
    CHECK(p->nsteps >= 1);
    p->ts = xmalloc((size_t)p->nsteps * sizeof *p->ts);
    sampler_timesteps(sp, s, p->ts);
    p->B = B, p->Z = Z, p->hw = h * h, p->resample = resample;
    p->z = xmalloc_aligned((size_t)B * Z * h * h * sizeof *p->z);
}

void edit_inpaint_free(Inpaint *p) {
    free(p->ts);
    free(p->z);
    memset(p, 0, sizeof *p);
}

// The next (B, Z, h, w) N(0, I) draw into p->z.
static void next_noise(Inpaint *p, size_t n) {
    if (p->noise) memcpy(p->z, p->noise + (size_t)p->draws * n, n * sizeof *p->z);
    else rng_normal_fill(&p->rng, p->z, n);
    p->draws++;
}

int edit_inpaint_hook(void *ctx, float *x, int k, int t_next) {
    Inpaint *p = ctx;
    CHECK(k >= 0 && k < p->nsteps);
    const size_t hw = (size_t)p->hw, n = (size_t)p->B * p->Z * hw;
    const double ab_next = t_next >= 0 ? p->sched->alphas_cumprod[t_next] : 1.0;
    // 1. The known cells: the input noised to t_next (x0 itself at the end).
    if (t_next >= 0) next_noise(p, n);
    const float a = (float)sqrt(ab_next), c = (float)sqrt(1 - ab_next);
    const float *x0 = p->x0, *z = p->z;
    const uint8_t *fill = p->fill;
    const int Z = p->Z, last = t_next < 0;
#pragma omp parallel for schedule(static)
    for (size_t j = 0; j < n; j++) {
        size_t cell = j / (Z * hw) * hw + j % hw; // (b, i) of element (b, z, i)
        if (!fill[cell]) x[j] = last ? x0[j] : a * x0[j] + c * z[j];
    }
    if (p->jumps + 1 >= p->resample) {
        p->jumps = 0;
        return k + 1;
    }
    // 2. RePaint's jump back: q(x_t | x_next) with the schedule's ratio.
    p->jumps++;
    next_noise(p, n);
    double r = p->sched->alphas_cumprod[p->ts[k]] / ab_next;
    const float ra = (float)sqrt(r), rc = (float)sqrt(1 - r);
#pragma omp parallel for schedule(static)
    for (size_t j = 0; j < n; j++) x[j] = ra * x[j] + rc * z[j];
    return k;
}

void edit_composite(uint8_t *out, const uint8_t *in, const float *dec, const uint8_t *px,
                    int C, int S) {
    if (!px) {
        image_to_u8(out, dec, C, S, S);
        return;
    }
    const size_t plane = (size_t)S * S;
    const int R = EDIT_BLEND_PX;
#pragma omp parallel for schedule(static)
    for (int y = 0; y < S; y++) {
        for (int x = 0; x < S; x++) {
            // the squared distance to the nearest pixel to fill, when < R^2
            int d2 = R * R;
            for (int dy = -R + 1; dy < R; dy++) {
                if (y + dy < 0 || y + dy >= S) continue;
                for (int dx = -R + 1; dx < R; dx++)
                    if (x + dx >= 0 && x + dx < S && px[(size_t)(y + dy) * S + x + dx] &&
                        dx * dx + dy * dy < d2)
                        d2 = dx * dx + dy * dy;
            }
            float a = d2 >= R * R ? 0.0f : 1.0f - (float)sqrt((double)d2) / R;
            size_t p = (size_t)y * S + x;
            for (int ch = 0; ch < C; ch++) {
                uint8_t u = in[p * C + ch];
                float v = dec[ch * plane + p];
                out[p * C + ch] = a == 0.0f ? u
                                  : image_pixel_u8(a * v + (1 - a) * ((float)u / 127.5f - 1.0f));
            }
        }
    }
}
