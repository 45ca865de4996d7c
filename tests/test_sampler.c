// test_sampler.c: noise schedules; every sampler's trajectory (DDIM, DDPM,
// DPM-Solver++(2M), Euler-ancestral; eps and v; img2img starts) against
// tests/reference/gen_sampler.py's sampler.h5 (the narrow UNet of unet.h5,
// replaying the reference's per-step noise); the hook (jump back), the
// timesteps and the errors of sample_run; bit-identical sampling at 1 and 2
// threads for every sampler. ldm-edit's rules (tools/edit.c) against
// edit.h5: the img2img start step and start latent, the latent mask, and
// inpainting runs (the hook's replacement and RePaint's jump-backs) of the
// narrow UNet; the pixel composite and mask files.
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "edit.h"
#include "image.h"
#include "rng.h"
#include "sampler.h"
#include "schedule.h"
#include "testutil.h"
#include "unet.h"

#define SAMPLER "sampler.h5"
#define UNETF "unet.h5"
#define B 2
#define NL ((size_t)B * 4 * 8 * 8) // floats of a batch of latents

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

// The narrow UNet of unet.h5 with its weights, for max_batch items; checks that
// sampler.h5 was written from these weights.
static void tiny_unet(UNet *u, int max_batch) {
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
    unet_init(u, &c, max_batch);
    float *p = golden_read(UNETF, "params", &n);
    CHECK(n == u->table.total);
    memcpy(u->params, p, n * sizeof *p);
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += (double)p[i] * (double)(1 + i % 97);
    free(p);
    float *ref = golden_read(SAMPLER, "unet_checksum", &n), got = (float)sum;
    CHECK(n == 1);
    check_close("sampler.h5 was written from unet.h5's weights (else rerun gen_sampler.py)",
                &got, ref, 1, 1e-6);
    free(ref);
}

// gen_sampler.py's class-conditional UNet (34 channels, so that GroupNorm keeps
// the class path) for max_batch items, with the weights of its
// formula_params(): u_i = ((i * 2654435761) mod 2^32) / 2^32 - 0.5 by flat index
// i, then GroupNorm weights 1 + u_i, GroupNorm biases u_i, the class table
// 4 u_i, other biases 0.2 u_i, other weights 2 u_i / sqrt(fan_in).
static void guide_unet(UNet *u, int max_batch) {
    size_t n;
    int *v = golden_read_int(SAMPLER, "guide_config", &n);
    CHECK(n == 8);
    UNetConfig c;
    memset(&c, 0, sizeof c);
    c.latent_channels = v[0], c.latent_size = v[1], c.base_channels = v[2];
    c.num_levels = 1, c.channel_mult[0] = 1, c.num_res_blocks = v[3], c.num_attn = 0;
    c.num_heads = v[4], c.temb_dim = v[5], c.time_dim = v[6], c.num_classes = v[7];
    free(v);
    unet_init(u, &c, max_batch);
    for (int k = 0; k < u->table.n; k++) {
        const ParamInfo *pi = &u->table.info[k];
        const char *dot = strrchr(pi->name, '.');
        for (size_t e = 0; e < pi->size; e++) {
            uint64_t i = pi->offset + e;
            double w = (double)(uint32_t)(i * 2654435761u) / 4294967296.0 - 0.5;
            if (strstr(pi->name, "norm")) w = !strcmp(dot, ".weight") ? 1 + w : w;
            else if (!strncmp(pi->name, "label_emb", 9)) w = 4 * w;
            else if (pi->ndim == 1) w = 0.2 * w;
            else w = (2 * w) * (1 / sqrt((double)(pi->size / pi->shape[0])));
            u->params[i] = (float)w;
        }
    }
}

// The golden cases: one sample_run each, every x_t compared. models[0]: the
// narrow UNet of unet.h5, models[1]: the conditional one of guide_unet().
static void test_goldens(UNet *models[2]) {
    size_t n;
    int *names = golden_read_int(SAMPLER, "cases", &n);
    char *list = xmalloc(n + 1);
    for (size_t i = 0; i < n; i++) list[i] = (char)names[i];
    list[n] = 0;
    free(names);
    float *xT = golden_read(SAMPLER, "xT", &n);
    CHECK(n == NL);
    float *noise = golden_read(SAMPLER, "noise", &n);
    CHECK(n == 8 * NL);
    float *x = xmalloc(NL * sizeof *x);
    int ncases = 0;
    for (char *save, *name = strtok_r(list, "\n", &save); name; name = strtok_r(NULL, "\n", &save)) {
        char ds[96];
        snprintf(ds, sizeof ds, "%s/spec", name);
        float *f = golden_read(SAMPLER, ds, &n);
        CHECK(n == 9);
        int kind = (int)f[0], pred = (int)f[1], cosine = (int)f[2], T = (int)f[3];
        SampleSpec sp = sample_spec((SamplerKind)kind, (int)f[4], pred);
        sp.start = (int)f[5], sp.eta = f[7], sp.guidance = f[8];
        int model = (int)f[6];
        CHECK(model == 0 || model == 1);
        free(f);
        UNet *u = models[model];
        int *y = NULL;
        snprintf(ds, sizeof ds, "%s/y", name);
        if (golden_has(SAMPLER, ds)) {
            y = golden_read_int(SAMPLER, ds, &n);
            CHECK(n == B);
        }
        sp.y = y;
        Schedule s;
        CHECK(schedule_init(&s, T, cosine ? "cosine" : "linear", "test") == 0);
        int runs = sampler_timesteps(&sp, &s, NULL) - sp.start;
        CHECK(runs >= 1 && runs <= 8);
        snprintf(ds, sizeof ds, "%s/traj", name);
        float *ref = golden_read(SAMPLER, ds, &n);
        CHECK(n == (size_t)runs * NL);
        float *traj = xmalloc(n * sizeof *traj);
        snprintf(ds, sizeof ds, "%s/x_start", name);
        if (sp.start) {
            float *xs = golden_read(SAMPLER, ds, &n);
            CHECK(n == NL);
            memcpy(x, xs, NL * sizeof *x);
            free(xs);
        } else {
            memcpy(x, xT, NL * sizeof *x);
        }
        sp.noise = noise, sp.traj = traj;
        char what[160];
        snprintf(what, sizeof what, "%s (%s, %s, %d runs from step %d, w %g): every x_t", name,
                 sampler_name(sp.kind), prediction_name(pred), runs, sp.start, sp.guidance);
        check_true("sample_run returns 0", sample_run(u, &s, x, B, &sp, NULL) == 0);
        check_close(what, traj, ref, (size_t)runs * NL, 1e-4);
        check_true("  x on return is the last trajectory entry",
                   memcmp(x, traj + (size_t)(runs - 1) * NL, NL * sizeof *x) == 0);
        free(ref), free(traj), free(y);
        schedule_free(&s);
        ncases++;
    }
    check_true("sampler.h5 holds the 18 golden cases", ncases == 18);
    free(list), free(xT), free(noise), free(x);
}

// A hook that records what it is called with and jumps back once: after step
// jump_at it puts x back to `back` (x before step jump_to) and returns jump_to.
typedef struct {
    int calls, ks[64], tnext[64];
    int jump_at, jump_to, jumped;
    const float *back;
} HookLog;

static int hook_log(void *ctx, float *x, int k, int t_next) {
    HookLog *h = ctx;
    CHECK(h->calls < 64);
    h->ks[h->calls] = k, h->tnext[h->calls] = t_next, h->calls++;
    if (k == h->jump_at && !h->jumped) {
        h->jumped = 1;
        memcpy(x, h->back, NL * sizeof *x);
        return h->jump_to;
    }
    return k + 1;
}

static void test_api(UNet *u) {
    Schedule lin;
    CHECK(schedule_init(&lin, 1000, "linear", "test") == 0);
    float *xT = xmalloc(NL * sizeof *xT), *x = xmalloc(NL * sizeof *x);
    float *y1 = xmalloc(NL * sizeof *y1), *y2 = xmalloc(NL * sizeof *y2);
    Rng r;
    rng_init(&r, 5);
    rng_normal_fill(&r, xT, NL);

    // Names and timesteps.
    check_true("sampler names parse", sampler_from_name("ddpm", "t") == SAMPLER_DDPM &&
               sampler_from_name("ddim", "t") == SAMPLER_DDIM &&
               sampler_from_name("dpmpp2m", "t") == SAMPLER_DPMPP2M &&
               sampler_from_name("euler_a", "t") == SAMPLER_EULER_A &&
               sampler_from_name("euler", "t") < 0 &&
               !strcmp(sampler_name(SAMPLER_EULER_A), "euler_a"));
    int ts[1000];
    SampleSpec sp = sample_spec(SAMPLER_DPMPP2M, 5, PRED_EPS);
    int nts = sampler_timesteps(&sp, &lin, ts);
    check_true("5 steps on T = 1000 visit 800, 600, 400, 200, 0",
               nts == 5 && ts[0] == 800 && ts[1] == 600 && ts[2] == 400 && ts[3] == 200 && ts[4] == 0);
    sp = sample_spec(SAMPLER_DDPM, 0, PRED_EPS);
    nts = sampler_timesteps(&sp, &lin, ts);
    check_true("DDPM visits T-1 .. 0 whatever `steps`", nts == 1000 && ts[0] == 999 && ts[999] == 0);

    // Errors a user can cause are reported.
    struct {
        const char *what;
        SamplerKind kind;
        int steps, start;
        float eta, w;
        int labels;
    } bad[] = {
        {"steps 0 rejected", SAMPLER_DDIM, 0, 0, 0, 1, 0},
        {"steps > T rejected", SAMPLER_DPMPP2M, 1001, 0, 0, 1, 0},
        {"negative eta rejected (DDIM)", SAMPLER_DDIM, 5, 0, -1, 1, 0},
        {"NaN guidance rejected", SAMPLER_DDIM, 5, 0, 0, NAN, 0},
        {"infinite guidance rejected", SAMPLER_EULER_A, 5, 0, 0, INFINITY, 0},
        {"negative guidance rejected", SAMPLER_DDIM, 5, 0, 0, -0.5f, 0},
        {"guidance on an unconditional UNet rejected", SAMPLER_DDIM, 5, 0, 0, 2, 0},
        {"labels on an unconditional UNet rejected", SAMPLER_DDIM, 5, 0, 0, 1, 1},
        {"start = steps rejected", SAMPLER_DDIM, 5, 5, 0, 1, 0},
        {"negative start rejected", SAMPLER_EULER_A, 5, -1, 0, 1, 0},
    };
    int labels[B] = {0, 0};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        sp = sample_spec(bad[i].kind, bad[i].steps, PRED_EPS);
        sp.start = bad[i].start, sp.eta = bad[i].eta, sp.guidance = bad[i].w;
        sp.y = bad[i].labels ? labels : NULL;
        memcpy(x, xT, NL * sizeof *x);
        check_true(bad[i].what, sample_run(u, &lin, x, B, &sp, &r) < 0 &&
                   memcmp(x, xT, NL * sizeof *x) == 0);
    }
    sp = sample_spec(SAMPLER_DPMPP2M, 5, PRED_EPS);
    sp.eta = -1;
    memcpy(x, xT, NL * sizeof *x);
    check_true("eta is DDIM's alone (ignored by DPM-Solver++)", sample_run(u, &lin, x, B, &sp, NULL) == 0);

    // One step lands on x0 predicted at t = 0 for every deterministic form.
    SamplerKind one[] = {SAMPLER_DDIM, SAMPLER_DPMPP2M, SAMPLER_EULER_A};
    int same = 1;
    for (int i = 0; i < 3; i++) {
        sp = sample_spec(one[i], 1, PRED_V);
        memcpy(i ? y2 : y1, xT, NL * sizeof *x);
        CHECK(sample_run(u, &lin, i ? y2 : y1, B, &sp, &r) == 0);
        if (i) same &= memcmp(y1, y2, NL * sizeof *x) == 0;
    }
    check_true("1 step: DDIM, DPM-Solver++ and Euler-a give the same x0, bit for bit", same);

    // The hook sees every step with the next timestep, and a jump back reruns
    // from there: DDIM is memoryless (the same x_0), DPM-Solver++ restarts
    // its history (the same as an img2img start at the step jumped to).
    float *traj = xmalloc(8 * NL * sizeof *traj); // 7 runs with the jump
    for (int dpm = 0; dpm <= 1; dpm++) {
        sp = sample_spec(dpm ? SAMPLER_DPMPP2M : SAMPLER_DDIM, 5, PRED_EPS);
        sp.traj = traj;
        memcpy(y1, xT, NL * sizeof *x);
        CHECK(sample_run(u, &lin, y1, B, &sp, NULL) == 0);
        float *before2 = xmalloc(NL * sizeof *before2); // x at step 2's timestep
        memcpy(before2, traj + 1 * NL, NL * sizeof *x);
        HookLog h = {.jump_at = 3, .jump_to = 2, .back = before2};
        sp.hook = hook_log, sp.ctx = &h;
        memcpy(y2, xT, NL * sizeof *x);
        CHECK(sample_run(u, &lin, y2, B, &sp, NULL) == 0);
        int seq_ok = h.calls == 7;
        const int want_k[] = {0, 1, 2, 3, 2, 3, 4}, want_t[] = {600, 400, 200, 0, 200, 0, -1};
        for (int i = 0; seq_ok && i < 7; i++)
            seq_ok = h.ks[i] == want_k[i] && h.tnext[i] == want_t[i];
        if (!dpm) {
            check_true("hook: called after every step with (k, t_next); a jump back reruns steps 2, 3",
                       seq_ok);
            check_true("DDIM with a jump back and the same x: the same x_0",
                       memcmp(y1, y2, NL * sizeof *x) == 0);
        } else {
            SampleSpec s2 = sample_spec(SAMPLER_DPMPP2M, 5, PRED_EPS);
            s2.start = 2;
            memcpy(y1, before2, NL * sizeof *x);
            CHECK(sample_run(u, &lin, y1, B, &s2, NULL) == 0);
            check_true("DPM-Solver++: a jump back restarts at first order (= start at that step)",
                       seq_ok && memcmp(y1, y2, NL * sizeof *x) == 0);
        }
        free(before2);
    }
    free(traj);

    // The rng's noise is the replayed noise drawn from the same stream, in order.
    sp = sample_spec(SAMPLER_EULER_A, 4, PRED_EPS);
    float *noise = xmalloc(3 * NL * sizeof *noise); // the last step adds none
    Rng a, b;
    rng_init(&a, 77);
    b = a;
    rng_normal_fill(&b, noise, 3 * NL);
    memcpy(y1, xT, NL * sizeof *x);
    CHECK(sample_run(u, &lin, y1, B, &sp, &a) == 0);
    sp.noise = noise;
    memcpy(y2, xT, NL * sizeof *x);
    CHECK(sample_run(u, &lin, y2, B, &sp, NULL) == 0);
    check_true("Euler-a: rng noise = replayed noise of the same stream",
               memcmp(y1, y2, NL * sizeof *x) == 0 && a.counter == b.counter);
    free(noise);

    free(xT), free(x), free(y1), free(y2);
    schedule_free(&lin);
}

// Same samples at 1 and 2 threads, with the noise drawn from the RNG.
static void test_threads(UNet *u) {
    Schedule lin, shortlin;
    CHECK(schedule_init(&lin, 1000, "linear", "test") == 0);
    CHECK(schedule_init(&shortlin, 6, "linear", "test") == 0);
    float *xT = xmalloc(NL * sizeof *xT), *got[2];
    Rng r;
    rng_init(&r, 9);
    rng_normal_fill(&r, xT, NL);
    struct {
        const char *what;
        SamplerKind kind;
        int steps, pred;
        float eta;
    } cases[] = {
        {"DDIM (eta 0.7, v, rng noise) bit-identical at 1 and 2 threads", SAMPLER_DDIM, 10, PRED_V, 0.7f},
        {"DDPM (rng noise) bit-identical at 1 and 2 threads", SAMPLER_DDPM, 0, PRED_EPS, 0},
        {"DPM-Solver++(2M) (v) bit-identical at 1 and 2 threads", SAMPLER_DPMPP2M, 10, PRED_V, 0},
        {"Euler-a (rng noise) bit-identical at 1 and 2 threads", SAMPLER_EULER_A, 10, PRED_EPS, 0},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        SampleSpec sp = sample_spec(cases[k].kind, cases[k].steps, cases[k].pred);
        sp.eta = cases[k].eta;
        for (int threads = 1; threads <= 2; threads++) {
            set_threads(threads);
            rng_init(&r, 42);
            got[threads - 1] = xmalloc(NL * sizeof(float));
            memcpy(got[threads - 1], xT, NL * sizeof(float));
            CHECK(sample_run(u, cases[k].kind == SAMPLER_DDPM ? &shortlin : &lin,
                             got[threads - 1], B, &sp, &r) == 0);
        }
        check_true(cases[k].what, memcmp(got[0], got[1], NL * sizeof(float)) == 0 &&
                   memcmp(got[0], xT, NL * sizeof(float)) != 0);
        free(got[0]), free(got[1]);
    }
    free(xT);
    schedule_free(&lin);
    schedule_free(&shortlin);
}

// Guidance on the conditional UNet beyond the goldens.
static void test_guided(UNet *g) {
    Schedule lin;
    CHECK(schedule_init(&lin, 1000, "linear", "test") == 0);
    float *xT = xmalloc(NL * sizeof *xT), *a = xmalloc(NL * sizeof *a), *b = xmalloc(NL * sizeof *b);
    Rng r;
    rng_init(&r, 11);
    rng_normal_fill(&r, xT, NL);
    int K = g->cfg.num_classes, y[B] = {1, 2};

    SampleSpec sp = sample_spec(SAMPLER_DDIM, 5, PRED_EPS);
    memcpy(a, xT, NL * sizeof *a);
    CHECK(sample_run(g, &lin, a, B, &sp, NULL) == 0);
    sp.y = y, sp.guidance = 0;
    memcpy(b, xT, NL * sizeof *b);
    CHECK(sample_run(g, &lin, b, B, &sp, NULL) == 0);
    check_true("guidance 0 with labels = no labels (the null class), bit for bit",
               memcmp(a, b, NL * sizeof *a) == 0);
    sp.y = NULL, sp.guidance = 3;
    memcpy(b, xT, NL * sizeof *b);
    CHECK(sample_run(g, &lin, b, B, &sp, NULL) == 0);
    check_true("guidance without labels has no effect", memcmp(a, b, NL * sizeof *a) == 0);
    sp.y = y, sp.guidance = 3;
    memcpy(b, xT, NL * sizeof *b);
    CHECK(sample_run(g, &lin, b, B, &sp, NULL) == 0);
    check_true("guidance 3 with labels changes the samples", memcmp(a, b, NL * sizeof *a) != 0);

    int bad[][B] = {{0, K + 1}, {-1, 0}};
    for (int i = 0; i < 2; i++) {
        sp.y = bad[i];
        memcpy(b, xT, NL * sizeof *b);
        check_true(i ? "label -1 rejected" : "label K + 1 rejected",
                   sample_run(g, &lin, b, B, &sp, NULL) < 0 && memcmp(b, xT, NL * sizeof *b) == 0);
    }

    sp = sample_spec(SAMPLER_EULER_A, 6, PRED_V);
    sp.y = y, sp.guidance = 2.0f;
    for (int threads = 1; threads <= 2; threads++) {
        set_threads(threads);
        rng_init(&r, 3);
        float *o = threads == 1 ? a : b;
        memcpy(o, xT, NL * sizeof *o);
        CHECK(sample_run(g, &lin, o, B, &sp, &r) == 0);
    }
    check_true("guided Euler-a (w 2, rng noise) bit-identical at 1 and 2 threads",
               memcmp(a, b, NL * sizeof *a) == 0);
    free(xT), free(a), free(b);
    schedule_free(&lin);
}

// ---- ldm-edit (tools/edit.c) against edit.h5

#define EDIT "edit.h5"
#define ES 32 // the pixel side of edit.h5's masks (latents 8 x 8)

// Latent masks from edit.h5's pixel masks by edit_latent_mask, checked against
// the mirror's; lat (B, 8, 8).
static void edit_masks(uint8_t *lat) {
    size_t n;
    float *px = golden_read(EDIT, "px", &n), *ref = golden_read(EDIT, "lat", &n);
    CHECK(n == B * 64);
    uint8_t pm[ES * ES];
    int same = 1, any = 0;
    for (int b = 0; b < B; b++) {
        for (int i = 0; i < ES * ES; i++) pm[i] = px[b * ES * ES + i] > 0.5f;
        edit_latent_mask(lat + b * 64, pm, ES, 8);
        for (int i = 0; i < 64; i++)
            same &= lat[b * 64 + i] == (ref[b * 64 + i] > 0.5f), any |= lat[b * 64 + i];
    }
    check_true("edit: latent mask (a cell to fill when any pixel of its 4x4 block is) = the mirror's",
               same && any);
    free(px), free(ref);
}

static void test_edit_goldens(UNet *u) {
    size_t n;
    int *st = golden_read_int(EDIT, "starts", &n);
    CHECK(n % 3 == 0);
    int ok = 1;
    for (size_t i = 0; i < n; i += 3) ok &= edit_start_step(st[i] / 1e6, st[i + 1]) == st[i + 2];
    check_true("edit: img2img start steps n - max(1, round(s n)) = the mirror's (63 pairs)",
               ok && n == 63 * 3);
    free(st);

    float *x0 = golden_read(EDIT, "x0", &n);
    CHECK(n == NL);
    float *start_noise = golden_read(EDIT, "start_noise", &n);
    float *noise = golden_read(EDIT, "noise", &n);
    size_t draws_max = n / NL;
    float *hook_noise = golden_read(EDIT, "hook_noise", &n);
    CHECK(n == draws_max * NL);
    Schedule lin;
    CHECK(schedule_init(&lin, 1000, "linear", "test") == 0);
    float *x = xmalloc(NL * sizeof *x);

    // img2img: the start latent of strength 0.3 over DDIM-10; pure noise at start 0.
    int *spec = golden_read_int(EDIT, "img2img_start/spec", &n);
    SampleSpec sp = sample_spec(SAMPLER_DDIM, spec[1], PRED_EPS);
    sp.start = edit_start_step(spec[0] / 1e6, spec[1]);
    check_true("edit: strength 0.3 of 10 steps starts at step 7", sp.start == spec[2] && sp.start == 7);
    free(spec);
    memcpy(x, start_noise, NL * sizeof *x);
    edit_start_latent(x, &lin, &sp, x0, B, NL / B);
    float *ref = golden_read(EDIT, "img2img_start/x_start", &n);
    check_close("edit: img2img start latent (x0 noised to t = 200, replayed noise)", x, ref, NL, 1e-6);
    free(ref);
    sp.start = 0;
    memcpy(x, start_noise, NL * sizeof *x);
    edit_start_latent(x, &lin, &sp, x0, B, NL / B);
    check_true("edit: start 0 is the noise itself", memcmp(x, start_noise, NL * sizeof *x) == 0);

    uint8_t lat[B * 64];
    edit_masks(lat);

    int *names = golden_read_int(EDIT, "cases", &n);
    char *list = xmalloc(n + 1);
    for (size_t i = 0; i < n; i++) list[i] = (char)names[i];
    list[n] = 0;
    free(names);
    int ncases = 0;
    for (char *save, *name = strtok_r(list, "\n", &save); name; name = strtok_r(NULL, "\n", &save)) {
        char ds[96];
        snprintf(ds, sizeof ds, "%s/spec", name);
        float *f = golden_read(EDIT, ds, &n);
        CHECK(n == 6);
        int T = (int)f[2], R = (int)f[5];
        sp = sample_spec((SamplerKind)f[0], (int)f[3], (int)f[1]);
        sp.eta = f[4];
        free(f);
        snprintf(ds, sizeof ds, "%s/ints", name);
        int *iv = golden_read_int(EDIT, ds, &n);
        CHECK(n == 3);
        Schedule s;
        CHECK(schedule_init(&s, T, "linear", "test") == 0);
        int nsteps = sampler_timesteps(&sp, &s, NULL);
        sp.start = edit_start_step(iv[0] / 1e6, nsteps);
        memcpy(x, start_noise, NL * sizeof *x);
        edit_start_latent(x, &s, &sp, x0, B, NL / B);
        Inpaint inp;
        edit_inpaint_init(&inp, &s, &sp, B, 4, 8, R);
        inp.x0 = x0, inp.fill = lat, inp.noise = hook_noise;
        snprintf(ds, sizeof ds, "%s/traj", name);
        ref = golden_read(EDIT, ds, &n);
        int runs = (int)(n / NL);
        CHECK(runs <= (int)draws_max && runs == (nsteps - sp.start) * R);
        float *traj = xmalloc((size_t)runs * NL * sizeof *traj);
        sp.noise = noise, sp.traj = traj, sp.hook = edit_inpaint_hook, sp.ctx = &inp;
        char what[160];
        snprintf(what, sizeof what, "edit: %s (%s, %s, steps %d..%d, resample %d): every x_t", name,
                 sampler_name(sp.kind), prediction_name(sp.prediction), sp.start, nsteps - 1, R);
        check_true("edit: start step = the mirror's", sp.start == iv[1]);
        check_true("sample_run with the inpainting hook returns 0",
                   sample_run(u, &s, x, B, &sp, NULL) == 0);
        check_close(what, traj, ref, n, 1e-4);
        free(ref);
        snprintf(ds, sizeof ds, "%s/x_final", name);
        ref = golden_read(EDIT, ds, &n);
        check_close("  x_0 after the last hook", x, ref, NL, 1e-4);
        int kept = 1;
        for (size_t j = 0; j < NL; j++)
            if (!lat[j / (4 * 64) * 64 + j % 64]) kept &= x[j] == x0[j];
        check_true("  the kept cells of x_0 are the input's latent, bit for bit", kept);
        check_true("  the hook drew the mirror's noise entries", inp.draws == iv[2]);
        free(ref), free(traj), free(iv);
        edit_inpaint_free(&inp);
        schedule_free(&s);
        ncases++;
    }
    check_true("edit.h5 holds the 6 inpainting cases", ncases == 6);

    // The hook's rng noise is the replayed noise of the same stream; an
    // inpainting run is bit-identical at 1 and 2 threads.
    float *got[3];
    for (int run = 0; run < 3; run++) {
        sp = sample_spec(SAMPLER_DDIM, 5, PRED_V);
        sp.eta = 0.5f, sp.start = 1;
        Inpaint inp;
        edit_inpaint_init(&inp, &lin, &sp, B, 4, 8, 2);
        inp.x0 = x0, inp.fill = lat;
        Rng r, hr;
        rng_init(&r, 8);
        rng_init(&hr, 9);
        inp.rng = hr;
        float *buf = NULL;
        if (run == 2) { // replay what hr draws
            buf = xmalloc(draws_max * NL * sizeof *buf);
            rng_normal_fill(&hr, buf, draws_max * NL);
            inp.noise = buf;
        }
        set_threads(run == 1 ? 2 : 1);
        got[run] = xmalloc(NL * sizeof(float));
        memcpy(got[run], start_noise, NL * sizeof(float));
        edit_start_latent(got[run], &lin, &sp, x0, B, NL / B);
        sp.hook = edit_inpaint_hook, sp.ctx = &inp;
        CHECK(sample_run(u, &lin, got[run], B, &sp, &r) == 0);
        edit_inpaint_free(&inp);
        free(buf);
    }
    check_true("edit: inpainting (DDIM eta 0.5, resample 2, rng noise) bit-identical at 1 and 2 threads",
               memcmp(got[0], got[1], NL * sizeof(float)) == 0);
    check_true("edit: the hook's rng noise = the replay of the same stream",
               memcmp(got[0], got[2], NL * sizeof(float)) == 0);
    for (int run = 0; run < 3; run++) free(got[run]);
    free(list), free(x0), free(start_noise), free(noise), free(hook_noise), free(x);
    schedule_free(&lin);
}

// The pixel composite: the input's own bytes from EDIT_BLEND_PX pixels off
// the mask, the decoded pixel on it, a linear blend in the distance between.
static void test_edit_composite(void) {
    enum { S = 16, C = 3 };
    uint8_t in[S * S * C], out[S * S * C], px[S * S] = {0}, want[S * S * C];
    float dec[C * S * S];
    Rng r;
    rng_init(&r, 4);
    rng_uniform_fill(&r, dec, C * S * S, -1.2f, 1.2f);
    for (int i = 0; i < S * S * C; i++) in[i] = (uint8_t)rng_below(&r, 256);
    px[5 * S + 6] = px[5 * S + 7] = 1; // two pixels to fill at (x 6..7, y 5)
    edit_composite(out, in, dec, px, C, S);
    int ok_far = 1, ok_in = 1, ok_blend = 1, nfar = 0, nblend = 0;
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            double d = fmin(hypot(x - 6, y - 5), hypot(x - 7, y - 5));
            for (int c = 0; c < C; c++) {
                int i = (y * S + x) * C + c;
                float v = dec[c * S * S + y * S + x], a = (float)(1 - d / EDIT_BLEND_PX);
                if (d >= EDIT_BLEND_PX) ok_far &= out[i] == in[i], nfar += c == 0;
                else if (d == 0) ok_in &= out[i] == image_pixel_u8(v);
                else {
                    uint8_t w = image_pixel_u8(a * v + (1 - a) * (in[i] / 127.5f - 1));
                    ok_blend &= abs(out[i] - w) <= 1, nblend += c == 0;
                }
            }
        }
    check_true("edit composite: pixels >= 4 px from the mask are the input's bytes",
               ok_far && nfar > 200);
    check_true("edit composite: pixels to fill are the decoded image's", ok_in);
    check_true("edit composite: pixels within 4 px blend linearly in the distance",
               ok_blend && nblend > 30);
    edit_composite(out, in, dec, NULL, C, S);
    image_to_u8(want, dec, C, S, S);
    check_true("edit composite without a mask: the decoded image", memcmp(out, want, sizeof out) == 0);

    // Mask files: the 128 threshold, nearest resizing, not an image.
    char dir[] = "/tmp/test_edit_XXXXXX", path[64];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof path, "%s/m.png", dir);
    enum { MW = 48, MH = 40 };
    uint8_t m[MW * MH];
    for (int i = 0; i < MW * MH; i++) m[i] = (uint8_t)rng_below(&r, 256);
    // pixel (x, y) takes the mask's (floor((x + 0.5) MW / S), floor((y + 0.5) MH / S)):
    // (1, 1) for (0, 0), (4, 1) for (1, 0)
    m[1 * MW + 1] = 128, m[1 * MW + 4] = 127;
    CHECK(png_write(path, m, MW, MH, 1) == 0);
    int resized = 0;
    CHECK(edit_mask_load(px, path, S, &resized) == 0);
    int ok = px[0] == 1 && px[1] == 0;
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++)
            ok &= px[y * S + x] ==
                  (m[(2 * y + 1) * MH / (2 * S) * MW + (2 * x + 1) * MW / (2 * S)] >= 128);
    check_true("edit mask: grey >= 128 to fill; 48x40 resized (nearest, pixel centres) to 16x16",
               ok && resized);
    write_file(path, "not a picture", strlen("not a picture"));
    check_true("edit mask: a file that is not an image is refused",
               edit_mask_load(px, path, S, &resized) < 0);
    remove(path);
    rmdir(dir);
}

int main(void) {
    test_schedules();
    UNet u, g;
    tiny_unet(&u, B);
    guide_unet(&g, 2 * B); // a guided step batches 2B items
    UNet *models[2] = {&u, &g};
    test_goldens(models);
    test_api(&u);
    test_threads(&u);
    test_guided(&g);
    test_edit_goldens(&u);
    test_edit_composite();
    unet_free(&u);
    unet_free(&g);
    return test_summary("test_sampler");
}
