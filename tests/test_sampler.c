// test_sampler.c: noise schedules, DDIM (eta 0 and 0.5, eps and v) and DDPM
// trajectories against tests/reference/gen_unet.py's sampler.h5 (the same
// narrow UNet as unet.h5, replaying the reference's per-step noise), and
// bit-identical sampling at 1 and 2 threads.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "rng.h"
#include "sampler.h"
#include "schedule.h"
#include "testutil.h"
#include "unet.h"

#define SAMPLER "sampler.h5"
#define UNETF "unet.h5"

static void check_schedule(const char *kind, const char *dataset) {
    Schedule s;
    CHECK(schedule_init(&s, 1000, kind, "test") == 0);
    size_t n;
    float *ref = golden_read(SAMPLER, dataset, &n);
    CHECK(n == 1000);
    float got[1000];
    for (int i = 0; i < 1000; i++)
        got[i] = (float)(strstr(dataset, "posterior") ? s.posterior_variance[i] : s.alphas_cumprod[i]);
    char what[96];
    snprintf(what, sizeof what, "schedule %s: %s", kind, dataset);
    check_close(what, got, ref, n, 1e-6);
    free(ref);
    schedule_free(&s);
}

static void test_schedules(void) {
    check_schedule("linear", "linear_alphas_cumprod");
    check_schedule("linear", "linear_posterior_variance");
    check_schedule("cosine", "cosine_alphas_cumprod");
    Schedule s;
    check_true("unknown schedule kind rejected", schedule_init(&s, 1000, "quadratic", "test") < 0);
    check_true("T = 0 rejected", schedule_init(&s, 0, "linear", "test") < 0);
    check_true("prediction names parse", prediction_from_name("eps", "test") == PRED_EPS &&
               prediction_from_name("v", "test") == PRED_V && prediction_from_name("x0", "test") < 0);
}

// The narrow UNet of unet.h5 with its weights, for B items.
static void tiny_unet(UNet *u, int B) {
    size_t n;
    int *v = golden_read_int(UNETF, "config", &n);
    CHECK(n == 10);
    UNetConfig c;
    memset(&c, 0, sizeof c);
    c.latent_channels = v[0], c.latent_size = v[1], c.base_channels = v[2];
    c.num_levels = 2, c.channel_mult[0] = v[3], c.channel_mult[1] = v[4];
    c.num_res_blocks = v[5];
    c.num_attn = 1, c.attn_resolutions[0] = v[6];
    c.num_heads = v[7], c.temb_dim = v[8], c.time_dim = v[9];
    free(v);
    unet_init(u, &c, B);
    float *p = golden_read(UNETF, "params", &n);
    CHECK(n == u->table.total);
    memcpy(u->params, p, n * sizeof *p);
    free(p);
}

static void test_trajectories(void) {
    size_t n;
    int *d = golden_read_int(SAMPLER, "dims", &n);
    int B = d[0], steps = d[1], T = d[2], T_ddpm = d[3];
    free(d);
    UNet u;
    tiny_unet(&u, B);
    size_t nl = (size_t)B * 4 * 8 * 8;
    float *xT = golden_read(SAMPLER, "xT", &n);
    CHECK(n == nl);
    float *x = xmalloc(nl * sizeof(float));
    float *traj = xmalloc((size_t)(steps > T_ddpm ? steps : T_ddpm) * nl * sizeof(float));
    Schedule lin, shortlin;
    CHECK(schedule_init(&lin, T, "linear", "test") == 0);
    CHECK(schedule_init(&shortlin, T_ddpm, "linear", "test") == 0);

    struct {
        const char *name, *what;
        float eta;
        int pred, replay;
    } cases[] = {
        {"ddim_eta0", "DDIM 5 steps, eta 0, eps: every x_t", 0.0f, PRED_EPS, 0},
        {"ddim_v", "DDIM 5 steps, eta 0, v: every x_t", 0.0f, PRED_V, 0},
        {"ddim_eta05", "DDIM 5 steps, eta 0.5, eps, replayed noise", 0.5f, PRED_EPS, 1},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        char name[64];
        snprintf(name, sizeof name, "%s/traj", cases[k].name);
        float *ref = golden_read(SAMPLER, name, &n);
        CHECK(n == (size_t)steps * nl);
        float *noise = NULL;
        if (cases[k].replay) {
            snprintf(name, sizeof name, "%s/noise", cases[k].name);
            noise = golden_read(SAMPLER, name, &n);
            CHECK(n == (size_t)steps * nl);
        }
        memcpy(x, xT, nl * sizeof *x);
        int rc = ddim_sample_ex(&u, &lin, x, B, steps, cases[k].eta, cases[k].pred, NULL, noise, traj);
        check_true("ddim_sample_ex returns 0", rc == 0);
        check_close(cases[k].what, traj, ref, n, 1e-4);
        check_true("  x on return is the last trajectory entry",
                   memcmp(x, traj + (size_t)(steps - 1) * nl, nl * sizeof *x) == 0);
        free(ref);
        free(noise);
    }

    float *ref = golden_read(SAMPLER, "ddpm/traj", &n);
    CHECK(n == (size_t)T_ddpm * nl);
    float *noise = golden_read(SAMPLER, "ddpm/noise", &n);
    memcpy(x, xT, nl * sizeof *x);
    check_true("ddpm_sample_ex returns 0",
               ddpm_sample_ex(&u, &shortlin, x, B, PRED_EPS, NULL, noise, traj) == 0);
    check_close("DDPM T=6, eps, replayed noise: every x_t", traj, ref, (size_t)T_ddpm * nl, 1e-4);
    free(ref);
    free(noise);

    // Errors a user can cause are reported.
    check_true("ddim steps 0 rejected", ddim_sample(&u, &lin, x, B, 0, 0.0f, PRED_EPS, NULL) < 0);
    check_true("ddim steps > T rejected", ddim_sample(&u, &lin, x, B, T + 1, 0.0f, PRED_EPS, NULL) < 0);
    check_true("ddim negative eta rejected", ddim_sample(&u, &lin, x, B, 5, -1.0f, PRED_EPS, NULL) < 0);

    // Same samples at 1 and 2 threads, with the noise drawn from the RNG.
    float *a = xmalloc(nl * sizeof(float)), *b = xmalloc(nl * sizeof(float));
    float *c = xmalloc(nl * sizeof(float)), *e = xmalloc(nl * sizeof(float));
    for (int threads = 1; threads <= 2; threads++) {
        set_threads(threads);
        Rng r;
        rng_init(&r, 42);
        float *o1 = threads == 1 ? a : b, *o2 = threads == 1 ? c : e;
        memcpy(o1, xT, nl * sizeof(float));
        CHECK(ddim_sample(&u, &lin, o1, B, 10, 0.7f, PRED_V, &r) == 0);
        memcpy(o2, xT, nl * sizeof(float));
        CHECK(ddpm_sample(&u, &shortlin, o2, B, PRED_EPS, &r) == 0);
    }
    check_true("DDIM (eta 0.7, rng noise) bit-identical at 1 and 2 threads",
               memcmp(a, b, nl * sizeof(float)) == 0);
    check_true("DDPM (rng noise) bit-identical at 1 and 2 threads",
               memcmp(c, e, nl * sizeof(float)) == 0);
    int differs = memcmp(a, xT, nl * sizeof(float)) != 0;
    check_true("sampling changed x", differs);

    free(a), free(b), free(c), free(e);
    free(xT), free(x), free(traj);
    schedule_free(&lin);
    schedule_free(&shortlin);
    unet_free(&u);
}

int main(void) {
    test_schedules();
    test_trajectories();
    return test_summary("test_sampler");
}
