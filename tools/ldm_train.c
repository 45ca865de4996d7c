// ldm-train: trains the latent UNet (stage 2) on a latent cache with the
// DDPM noise-prediction loss, AdamW, gradient clipping and an EMA of the
// weights. Random streams as in vae-train (toolkit.h): the state to resume is
// (seed, step), plus the optimizer moments and the EMA in the checkpoint.
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "checkpoint.h"
#include "common.h"
#include "image.h"
#include "latent_cache.h"
#include "optim.h"
#include "progress.h"
#include "rng.h"
#include "sampler.h"
#include "schedule.h"
#include "toolkit.h"
#include "unet.h"
#include "unet_ckpt.h"
#include "vae_ckpt.h"

#define T_STEPS 1000
#define SAMPLE_N 64

typedef struct {
    const char *latents, *out, *vae, *schedule, *prediction, *mult, *attn;
    long steps;
    int epochs;
    double minutes, lr, ema;
    int batch, base_channels, num_res_blocks, heads;
    int resume, seed, threads, ckpt_every, eval_every, sample_every, keep;
} Flags;

// Everything about the run that a resume must not change.
typedef struct {
    UNetConfig cfg;
    char schedule[ATTR_STR_MAX];
    int prediction;
    double scale_factor;
    char vae_hash[17];
    int image_size, in_channels, cache_items;
} RunInfo;

static void info_to_attrs(const RunInfo *r, const Flags *f, Attrs *a) {
    unet_config_to_attrs(&r->cfg, a);
    attrs_set_int(a, "T", T_STEPS);
    attrs_set_str(a, "schedule", r->schedule);
    attrs_set_str(a, "prediction", prediction_name(r->prediction));
    attrs_set_double(a, "scale_factor", r->scale_factor);
    attrs_set_str(a, "vae_hash", r->vae_hash);
    attrs_set_int(a, "image_size", r->image_size);
    attrs_set_int(a, "in_channels", r->in_channels);
    attrs_set_int(a, "cache_items", r->cache_items);
    attrs_set_str(a, "latents", f->latents);
    attrs_set_int(a, "batch", f->batch);
    attrs_set_double(a, "lr", f->lr);
    attrs_set_double(a, "ema_decay", f->ema);
    attrs_set_int(a, "rng_seed", f->seed);
}

static int save(const char *out, const UNet *u, const float *m, const float *v,
                const float *ema, const RunInfo *r, const Flags *f, long step) {
    Attrs a = {0};
    attrs_set_str(&a, "kind", "unet");
    attrs_set_int(&a, "step", step);
    attrs_set_int(&a, "rng_counter", step);
    info_to_attrs(r, f, &a);
    CkptBuffers b = {u->params, m, v, ema};
    if (ckpt_write(out, &u->table, b, &a)) return -1;
    keep_numbered_copy(out, step, f->keep);
    return 0;
}

// --resume: the checkpoint's settings win; a given flag that differs is an error.
static int resume_settings(Flags *f, const Opt *o, int no, const Attrs *a, RunInfo *r) {
    const char *p = f->out;
    UNetConfig c;
    int64_t batch, seed, items;
    double lr, ema, scale;
    char sched[ATTR_STR_MAX], pred[ATTR_STR_MAX], hash[ATTR_STR_MAX];
    if (unet_config_from_attrs(&c, a, p) || attrs_get_int(a, p, "batch", &batch) ||
        attrs_get_int(a, p, "rng_seed", &seed) || attrs_get_double(a, p, "lr", &lr) ||
        attrs_get_double(a, p, "ema_decay", &ema) ||
        attrs_get_double(a, p, "scale_factor", &scale) ||
        attrs_get_int(a, p, "cache_items", &items) ||
        attrs_get_str(a, p, "schedule", sched, sizeof sched) ||
        attrs_get_str(a, p, "prediction", pred, sizeof pred) ||
        attrs_get_str(a, p, "vae_hash", hash, sizeof hash))
        return -1;
    char mult[128], attn[128];
    int_list_format(mult, sizeof mult, c.channel_mult, c.num_levels);
    int_list_format(attn, sizeof attn, c.attn_resolutions, c.num_attn);
    if ((args_given(o, no, "--base-channels") && resume_conflict_int(p, "--base-channels", f->base_channels, c.base_channels)) ||
        (args_given(o, no, "--num-res-blocks") && resume_conflict_int(p, "--num-res-blocks", f->num_res_blocks, c.num_res_blocks)) ||
        (args_given(o, no, "--heads") && resume_conflict_int(p, "--heads", f->heads, c.num_heads)) ||
        (args_given(o, no, "--batch") && resume_conflict_int(p, "--batch", f->batch, batch)) ||
        (args_given(o, no, "--seed") && resume_conflict_int(p, "--seed", f->seed, seed)) ||
        (args_given(o, no, "--lr") && resume_conflict_float(p, "--lr", f->lr, lr)) ||
        (args_given(o, no, "--ema") && resume_conflict_float(p, "--ema", f->ema, ema)))
        return -1;
    if (args_given(o, no, "--channel-mult") && strcmp(f->mult, mult))
        return errorf("--channel-mult %s contradicts the checkpoint %s (%s)", f->mult, p, mult);
    if (args_given(o, no, "--attn-res") && strcmp(f->attn, attn))
        return errorf("--attn-res %s contradicts the checkpoint %s (%s)", f->attn, p, attn);
    if (args_given(o, no, "--schedule") && strcmp(f->schedule, sched))
        return errorf("--schedule %s contradicts the checkpoint %s (%s)", f->schedule, p, sched);
    if (args_given(o, no, "--prediction") && strcmp(f->prediction, pred))
        return errorf("--prediction %s contradicts the checkpoint %s (%s)", f->prediction, p, pred);
    if (strcmp(hash, r->vae_hash) || items != r->cache_items || (float)scale != (float)r->scale_factor)
        return errorf("--latents %s contradicts the checkpoint %s (trained on a cache of "
                      "%lld items from VAE %s)", f->latents, p, (long long)items, hash);
    r->cfg = c;
    snprintf(r->schedule, sizeof r->schedule, "%s", sched);
    if ((r->prediction = prediction_from_name(pred)) < 0) return -1;
    f->batch = (int)batch;
    f->seed = (int)seed;
    f->lr = lr;
    f->ema = ema;
    return 0;
}

// x0 = scale * (mean + exp(logvar / 2) * eps) for items idx[0..B).
static void draw_latents(float *x0, const float *mean, const float *logvar,
                         const int *idx, int B, size_t n, double scale, Rng *r,
                         float *eps) {
    rng_normal_fill(r, eps, (size_t)B * n);
    #pragma omp parallel for schedule(static)
    for (int i = 0; i < B; i++) {
        const float *m = mean + (size_t)idx[i] * n, *lv = logvar + (size_t)idx[i] * n;
        for (size_t j = 0; j < n; j++)
            x0[i * n + j] = (float)scale * (m[j] + expf(0.5f * lv[j]) * eps[i * n + j]);
    }
}

// Mean loss over the held-out items with noise and t fixed for the whole run.
static double heldout_loss(UNet *u, const Schedule *s, int pred, const float *mean,
                           const float *logvar, int start, int n, double scale,
                           uint64_t seed, float *x0, float *noise, int *t, int *idx) {
    Rng r = run_stream(seed, STREAM_EVAL, 0);
    size_t ln = (size_t)u->cfg.latent_channels * u->cfg.latent_size * u->cfg.latent_size;
    double sum = 0;
    int B = u->max_batch;
    for (int i0 = 0; i0 < n; i0 += B) {
        int b = n - i0 < B ? n - i0 : B;
        for (int i = 0; i < b; i++) idx[i] = start + i0 + i;
        draw_latents(x0, mean, logvar, idx, b, ln, scale, &r, noise);
        rng_normal_fill(&r, noise, b * ln);
        for (int i = 0; i < b; i++) t[i] = (int)rng_below(&r, T_STEPS);
        sum += (double)diffusion_loss_forward(u, s, pred, x0, noise, t, b) * b;
    }
    return sum / n;
}

// A DDIM-50 grid from the EMA weights, from its own stream (the same noise
// every time, so grids of one run compare), decoded with the VAE.
static int sample_grid(UNet *u, float *ema, const Schedule *s, int pred, Vae *vae,
                       double scale, uint64_t seed, const char *out, long step) {
    const UNetConfig *c = &u->cfg;
    size_t ln = (size_t)c->latent_channels * c->latent_size * c->latent_size;
    size_t img = (size_t)vae->cfg.in_channels * vae->cfg.image_size * vae->cfg.image_size;
    float *z = xmalloc(SAMPLE_N * ln * sizeof(float));  // (n, Z, h, w)
    float *x = xmalloc(SAMPLE_N * img * sizeof(float)); // (n, C, S, S)
    Rng r = run_stream(seed, STREAM_SAMPLE, 0);
    rng_normal_fill(&r, z, SAMPLE_N * ln);
    float *raw = u->params;
    u->params = ema;
    for (int i0 = 0; i0 < SAMPLE_N; i0 += u->max_batch) {
        int b = SAMPLE_N - i0 < u->max_batch ? SAMPLE_N - i0 : u->max_batch;
        ddim_sample(u, s, z + i0 * ln, b, 50, 0.0f, pred, &r);
    }
    u->params = raw;
    for (size_t j = 0; j < SAMPLE_N * ln; j++) z[j] = (float)(z[j] / scale);
    for (int i0 = 0; i0 < SAMPLE_N; i0 += vae->max_batch) {
        int b = SAMPLE_N - i0 < vae->max_batch ? SAMPLE_N - i0 : vae->max_batch;
        vae_decode(vae, x + i0 * img, z + i0 * ln, b);
    }
    char path[4096];
    size_t len = strlen(out);
    if (len > 3 && !strcmp(out + len - 3, ".h5")) len -= 3;
    snprintf(path, sizeof path, "%.*s.samples-step%ld.png", (int)len, out, step);
    int rc = png_write_grid(path, x, SAMPLE_N, vae->cfg.in_channels, vae->cfg.image_size,
                            vae->cfg.image_size, 8);
    if (rc == 0) fprintf(stderr, "ldm-train: step %ld: samples in %s\n", step, path);
    free(z), free(x);
    return rc;
}

int main(int argc, char **argv) {
    tool_process_init();
    Flags f = {.latents = NULL, .out = NULL, .vae = NULL, .schedule = "linear",
               .prediction = "eps", .mult = "1,2", .attn = "4", .lr = 2e-4, .ema = 0.999,
               .batch = 128, .base_channels = 64, .num_res_blocks = 2, .heads = 1,
               .seed = 0, .threads = default_threads(), .ckpt_every = 1000,
               .eval_every = 500, .sample_every = 0, .keep = 0};
    Opt opts[] = {
        {"--latents", OPT_STR, &f.latents, "latent cache from vae-encode", 0},
        {"--out", OPT_STR, &f.out, "checkpoint path (HDF5); a log <out>.log.jsonl is written beside it", 0},
        {"--steps", OPT_LONG, &f.steps, "total optimizer steps, counted from the start of the run", 0},
        {"--epochs", OPT_INT, &f.epochs, "total epochs over the cache, from the start of the run (default 1 if no budget)", 0},
        {"--minutes", OPT_FLOAT, &f.minutes, "wall-clock budget for this invocation, ends with a checkpoint", 0},
        {"--batch", OPT_INT, &f.batch, "batch size", 0},
        {"--lr", OPT_FLOAT, &f.lr, "AdamW learning rate", 0},
        {"--schedule", OPT_STR, &f.schedule, "noise schedule: linear or cosine (T = 1000)", 0},
        {"--prediction", OPT_STR, &f.prediction, "what the UNet predicts: eps or v", 0},
        {"--ema", OPT_FLOAT, &f.ema, "EMA decay (with the latent-diffusion warm-up)", 0},
        {"--base-channels", OPT_INT, &f.base_channels, "UNet base width", 0},
        {"--channel-mult", OPT_STR, &f.mult, "width multipliers per level", 0},
        {"--num-res-blocks", OPT_INT, &f.num_res_blocks, "ResBlocks per level", 0},
        {"--attn-res", OPT_STR, &f.attn, "latent sides that get attention, e.g. 4 or 8,4", 0},
        {"--heads", OPT_INT, &f.heads, "attention heads", 0},
        {"--resume", OPT_FLAG, &f.resume, "continue the run in --out (starts fresh if there is none)", 0},
        {"--seed", OPT_INT, &f.seed, "random seed (init, data order, noise, t)", 0},
        {"--threads", OPT_INT, &f.threads, "threads", 0},
        {"--ckpt-every", OPT_INT, &f.ckpt_every, "steps between periodic checkpoints", 0},
        {"--eval-every", OPT_INT, &f.eval_every, "steps between held-out loss evaluations", 0},
        {"--sample-every", OPT_INT, &f.sample_every, "steps between sample grids (needs --vae)", 0},
        {"--vae", OPT_STR, &f.vae, "the VAE that made the cache, to decode sample grids", 0},
        {"--keep", OPT_INT, &f.keep, "also keep the last K step-numbered periodic checkpoints", 0},
    };
    int no = sizeof opts / sizeof *opts;
    int rc = args_parse(argc, argv, opts, no, "--latents latents.h5 --out unet.h5 [options]");
    if (rc) return rc > 0 ? 0 : 2;
    if (!f.latents || !f.out) return errorf("ldm-train: --latents and --out are required (see --help)"), 2;
    if (f.batch < 1 || f.steps < 0 || f.epochs < 0 || f.minutes < 0 || f.threads < 1 ||
        f.ckpt_every < 1 || f.eval_every < 1 || f.sample_every < 0 || f.keep < 0 ||
        !(f.lr > 0) || !(f.ema >= 0 && f.ema < 1))
        return errorf("ldm-train: --batch, --threads, --ckpt-every, --eval-every and --lr must "
                      "be positive, --ema in [0, 1), budgets non-negative"), 2;
    if (f.steps && f.epochs) return errorf("ldm-train: give --steps or --epochs, not both"), 2;
    if (f.sample_every && !f.vae) return errorf("ldm-train: --sample-every needs --vae"), 2;
    set_threads(f.threads);
    h5_quiet();

    LatentCache cache;
    if (latent_cache_open(&cache, f.latents)) return 1;
    RunInfo run = {0};
    run.scale_factor = cache.scale_factor;
    snprintf(run.vae_hash, sizeof run.vae_hash, "%s", cache.vae_hash);
    run.image_size = cache.image_size;
    run.in_channels = cache.in_channels;
    run.cache_items = cache.N;
    unet_config_default(&run.cfg);
    UNetConfig *cfg = &run.cfg;
    cfg->latent_channels = cache.Z;
    cfg->latent_size = cache.h;
    if (cache.h != cache.w) return errorf("%s: latents are not square (%dx%d)", f.latents, cache.h, cache.w), 1;
    cfg->base_channels = f.base_channels;
    cfg->num_res_blocks = f.num_res_blocks;
    cfg->num_heads = f.heads;
    if ((cfg->num_levels = int_list_parse(cfg->channel_mult, UNET_MAX_LEVELS, f.mult, "--channel-mult")) < 0)
        return 2;
    if ((cfg->num_attn = int_list_parse(cfg->attn_resolutions, UNET_MAX_LEVELS, f.attn, "--attn-res")) < 0)
        return 2;
    snprintf(run.schedule, sizeof run.schedule, "%s", f.schedule);
    if ((run.prediction = prediction_from_name(f.prediction)) < 0) return 2;

    Attrs ck = {0};
    long step = 0;
    int resuming = 0;
    if (f.resume) {
        if (access(f.out, F_OK) == 0) {
            int64_t s;
            if (ckpt_read_attrs(f.out, "unet", &ck) || resume_settings(&f, opts, no, &ck, &run) ||
                attrs_get_int(&ck, f.out, "step", &s))
                return 1;
            step = (long)s;
            resuming = 1;
            if (cfg->latent_channels != cache.Z || cfg->latent_size != cache.h)
                return errorf("%s: latents (%d, %d, %d) do not match the UNet of %s (%d, %d, %d)",
                              f.latents, cache.Z, cache.h, cache.w, f.out, cfg->latent_channels,
                              cfg->latent_size, cfg->latent_size), 1;
        } else {
            fprintf(stderr, "ldm-train: no checkpoint at %s; --resume starts a fresh run\n", f.out);
        }
    }
    if (unet_config_check(cfg, "ldm-train")) return 2;
    Schedule sched;
    if (schedule_init(&sched, T_STEPS, run.schedule)) return 2;

    Vae vae;
    if (f.sample_every) {
        if (vae_load(&vae, f.vae, SAMPLE_N, NULL) || check_cache_matches_vae(&cache, &vae, f.vae))
            return 1;
    }

    // The whole cache in memory (mean and logvar), read in batches.
    size_t ln = (size_t)cache.Z * cache.h * cache.w;
    int N = cache.N;
    float *mean = xmalloc((size_t)N * ln * sizeof(float));   // (N, Z, h, w)
    float *logvar = xmalloc((size_t)N * ln * sizeof(float)); // (N, Z, h, w)
    for (int i0 = 0; i0 < N; i0 += 4096) {
        int b = N - i0 < 4096 ? N - i0 : 4096;
        if (latent_cache_read(&cache, i0, b, mean + i0 * ln, logvar + i0 * ln, NULL)) return 1;
    }
    latent_cache_close(&cache);
    int hold = N / 10 < 512 ? N / 10 : 512;
    int ntrain = N - hold;
    if (ntrain < 1) return errorf("%s: too few latents (%d) to train", f.latents, N), 1;
    int B = f.batch < ntrain ? f.batch : ntrain;
    long spe = (ntrain + B - 1) / B;
    long total = total_steps(f.steps, f.epochs, f.minutes, spe); // 0: only the clock

    UNet u;
    // Resuming loads through unet_load, which checks the sizes the file
    // declares before allocating them.
    if (resuming ? unet_load(&u, f.out, "model", B, NULL) : (unet_init(&u, cfg, B), 0)) return 1;
    size_t P = u.table.total;
    float *m = xcalloc(P, sizeof(float)), *v = xcalloc(P, sizeof(float));
    float *ema = xmalloc(P * sizeof(float));
    if (resuming) {
        if (ckpt_read_group(f.out, &u.table, "optim/m", m) ||
            ckpt_read_group(f.out, &u.table, "optim/v", v) ||
            ckpt_read_group(f.out, &u.table, "ema", ema))
            return 1;
        fprintf(stderr, "ldm-train: resuming %s at step %ld\n", f.out, step);
    } else {
        Rng init;
        rng_init(&init, (uint64_t)f.seed);
        params_init_values(&u.table, u.params, &init);
        memcpy(ema, u.params, P * sizeof(float));
    }
    fprintf(stderr, "ldm-train: %d latents (%d, %d, %d) from %s (%d held out), %zu parameters, "
            "batch %d, %ld steps/epoch, %s schedule, %s-prediction, %d threads\n",
            ntrain, cache.Z, cache.h, cache.w, f.latents, hold, P, B, spe, run.schedule,
            prediction_name(run.prediction), f.threads);
    if (total && step >= total) {
        fprintf(stderr, "ldm-train: %s is already at step %ld >= %ld; nothing to do\n", f.out, step, total);
        return 0;
    }
    FILE *log = log_open(f.out);
    if (!log) return 1;

    float *x0 = xmalloc(B * ln * sizeof(float));    // (B, Z, h, w)
    float *noise = xmalloc(B * ln * sizeof(float)); // (B, Z, h, w)
    int *t = xmalloc(B * sizeof(int));
    int *idx = xmalloc(B * sizeof(int));
    EpochSampler batches;
    epoch_sampler_init(&batches, ntrain, B, (uint64_t)f.seed);
    AdamConfig adamw = {f.lr, 0.9, 0.999, 1e-8, 0.0, 1};

    interrupt_install();
    Progress prog;
    progress_init(&prog, step);
    double t0 = now_seconds(), budget = f.minutes * 60.0;
    long items = 0, nan_step = fault_nan_step();
    int status = 0;
    while (!total || step < total) {
        const int *items_idx;
        int b = epoch_sampler_batch(&batches, step, &items_idx);
        Rng r = run_stream((uint64_t)f.seed, STREAM_STEP, (uint64_t)step);
        draw_latents(x0, mean, logvar, items_idx, b, ln, run.scale_factor, &r, noise);
        rng_normal_fill(&r, noise, b * ln);
        for (int i = 0; i < b; i++) t[i] = (int)rng_below(&r, T_STEPS);

        float loss = diffusion_loss_forward(&u, &sched, run.prediction, x0, noise, t, b);
        if (step + 1 == nan_step) loss = NAN;
        memset(u.grads, 0, P * sizeof(float));
        diffusion_loss_backward(&u);
        double gnorm = clip_grad_norm(u.grads, P, 1.0);
        if (!isfinite(loss) || !isfinite(gnorm)) {
            progress_end(&prog);
            errorf("ldm-train: step %ld: the %s is not finite; stopping without "
                   "overwriting %s", step + 1, isfinite(loss) ? "gradient" : "loss", f.out);
            status = 1;
            break;
        }
        adam_update(u.params, u.grads, m, v, P, &adamw, step + 1);
        ema_update(ema, u.params, P, ema_decay((float)f.ema, step + 1));
        step++;
        items += b;

        double el = now_seconds() - t0;
        fprintf(log, "{\"step\": %ld, \"epoch\": %.4f, \"loss\": %.6g, \"grad_norm\": %.6g, "
                "\"img_per_s\": %.2f, \"elapsed_s\": %.3f}\n",
                step, (double)step / spe, loss, gnorm, items / el, el);
        char parts[160];
        snprintf(parts, sizeof parts, "loss %.4f |g| %.3f", loss, gnorm);
        int last = run_is_over(step, total, el, budget);
        double left = run_seconds_left(step, prog.step_start, total, el, budget);
        progress_print(&prog, step, total, items, parts, left, last);
        if (step % f.eval_every == 0 || last) {
            double hl = heldout_loss(&u, &sched, run.prediction, mean, logvar, ntrain, hold,
                                     run.scale_factor, (uint64_t)f.seed, x0, noise, t, idx);
            fprintf(log, "{\"step\": %ld, \"heldout_loss\": %.6g}\n", step, hl);
            if (!prog.is_tty || last) {
                progress_end(&prog);
                fprintf(stderr, "step %ld: held-out loss %.4f (%d latents)\n", step, hl, hold);
            }
        }
        fflush(log);
        if (f.sample_every && (step % f.sample_every == 0 || last))
            sample_grid(&u, ema, &sched, run.prediction, &vae, run.scale_factor,
                        (uint64_t)f.seed, f.out, step);
        if (step % f.ckpt_every == 0 || last) {
            if (save(f.out, &u, m, v, ema, &run, &f, step)) {
                status = 1;
                break;
            }
        }
        if (last) break;
    }
    progress_end(&prog);
    if (status == 0) {
        if (interrupted())
            fprintf(stderr, "ldm-train: interrupted; checkpoint written to %s at step %ld\n", f.out, step);
        else
            fprintf(stderr, "ldm-train: done, step %ld, %.1f s, checkpoint %s\n", step,
                    now_seconds() - t0, f.out);
    }
    fclose(log);
    epoch_sampler_free(&batches);
    free(x0), free(noise), free(t), free(idx), free(m), free(v), free(ema);
    free(mean), free(logvar);
    unet_free(&u);
    schedule_free(&sched);
    if (f.sample_every) vae_free(&vae);
    return status;
}
