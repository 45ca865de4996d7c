// vae-train: trains the VAE (stage 1) on an image set with the negative ELBO.
// Every random draw of step s comes from a stream derived from (seed, s) and
// the data order of epoch e from one derived from (seed, e), so a resumed run
// continues exactly where the checkpoint stopped.
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "checkpoint.h"
#include "common.h"
#include "imageset.h"
#include "optim.h"
#include "progress.h"
#include "rng.h"
#include "toolkit.h"
#include "vae.h"
#include "vae_ckpt.h"

typedef struct {
    const char *data, *out;
    long steps;
    int epochs;
    double minutes;
    int batch;
    double lr, kl_weight;
    int image_size, channels, base_channels, latent_channels;
    int hflip, resume, seed, threads;
    int ckpt_every, eval_every, keep;
} Flags;

static int save(const char *out, const Vae *v, const float *m, const float *vv,
                const Flags *f, long step, const ImageSet *set) {
    Attrs a = {0};
    attrs_set_str(&a, "kind", "vae");
    attrs_set_int(&a, "step", step);
    attrs_set_int(&a, "rng_seed", f->seed);
    attrs_set_int(&a, "rng_counter", step); // per-step streams: the step is the position
    vae_config_to_attrs(&v->cfg, &a);
    attrs_set_int(&a, "batch", f->batch);
    attrs_set_double(&a, "lr", f->lr);
    attrs_set_int(&a, "hflip", f->hflip);
    attrs_set_str(&a, "source", set->source);
    attrs_set_int(&a, "source_items", set->N);
    char hash[17];
    params_hash(hash, &v->table, v->params);
    attrs_set_str(&a, "vae_hash", hash);
    CkptBuffers b = {v->params, m, vv, NULL};
    if (ckpt_write(out, &v->table, b, &a)) return -1;
    keep_numbered_copy(out, step, f->keep);
    return 0;
}

// --resume: settings come from the checkpoint; a given flag that differs is an error.
static int resume_settings(Flags *f, const Opt *o, int no, const Attrs *a, VaeConfig *c) {
    const char *p = f->out;
    VaeConfig s;
    int64_t batch, hflip, seed;
    double lr;
    char source[ATTR_STR_MAX];
    if (vae_config_from_attrs(&s, a, p) || attrs_get_int(a, p, "batch", &batch) ||
        attrs_get_int(a, p, "hflip", &hflip) || attrs_get_int(a, p, "rng_seed", &seed) ||
        attrs_get_double(a, p, "lr", &lr) ||
        attrs_get_str(a, p, "source", source, sizeof source))
        return -1;
    if ((args_given(o, no, "--channels") && resume_conflict_int(p, "--channels", f->channels, s.in_channels)) ||
        (args_given(o, no, "--image-size") && resume_conflict_int(p, "--image-size", f->image_size, s.image_size)) ||
        (args_given(o, no, "--base-channels") && resume_conflict_int(p, "--base-channels", f->base_channels, s.base_channels)) ||
        (args_given(o, no, "--latent-channels") && resume_conflict_int(p, "--latent-channels", f->latent_channels, s.latent_channels)) ||
        (args_given(o, no, "--kl-weight") && resume_conflict_float(p, "--kl-weight", f->kl_weight, s.kl_weight)) ||
        (args_given(o, no, "--batch") && resume_conflict_int(p, "--batch", f->batch, batch)) ||
        (args_given(o, no, "--lr") && resume_conflict_float(p, "--lr", f->lr, lr)) ||
        (args_given(o, no, "--seed") && resume_conflict_int(p, "--seed", f->seed, seed)) ||
        (args_given(o, no, "--hflip") && resume_conflict_int(p, "--hflip", f->hflip, hflip)))
        return -1;
    *c = s;
    f->batch = (int)batch;
    f->lr = lr;
    f->seed = (int)seed;
    f->hflip = (int)hflip;
    // The data set is part of the run: other data would not continue it.
    if (strcmp(source, f->data) != 0)
        return errorf("--data %s contradicts the checkpoint %s (trained on %s)", f->data, p, source);
    return 0;
}

int main(int argc, char **argv) {
    tool_process_init();
    Flags f = {.data = NULL, .out = NULL, .steps = 0, .epochs = 0, .minutes = 0,
               .batch = 128, .lr = 1e-3, .kl_weight = 1e-3, .image_size = 32,
               .channels = 1, .base_channels = 32, .latent_channels = 4,
               .hflip = 0, .resume = 0, .seed = 0, .threads = default_threads(),
               .ckpt_every = 500, .eval_every = 200, .keep = 0};
    Opt opts[] = {
        {"--data", OPT_STR, &f.data, "image source: fashion-mnist, fashion-mnist-test, an IDX file or a folder", 0},
        {"--out", OPT_STR, &f.out, "checkpoint path (HDF5); a log <out>.log.jsonl is written beside it", 0},
        {"--steps", OPT_LONG, &f.steps, "total optimizer steps, counted from the start of the run", 0},
        {"--epochs", OPT_INT, &f.epochs, "total epochs, counted from the start of the run (default 1 if no budget)", 0},
        {"--minutes", OPT_FLOAT, &f.minutes, "wall-clock budget for this invocation, ends with a checkpoint", 0},
        {"--batch", OPT_INT, &f.batch, "batch size", 0},
        {"--lr", OPT_FLOAT, &f.lr, "Adam learning rate", 0},
        {"--kl-weight", OPT_FLOAT, &f.kl_weight, "beta, the weight of the KL term", 0},
        {"--image-size", OPT_INT, &f.image_size, "image side S (multiple of 4)", 0},
        {"--channels", OPT_INT, &f.channels, "image channels, 1 (grey) or 3 (RGB)", 0},
        {"--base-channels", OPT_INT, &f.base_channels, "VAE width (widths b, 2b, 4b)", 0},
        {"--latent-channels", OPT_INT, &f.latent_channels, "latent channels Z", 0},
        {"--hflip", OPT_FLAG, &f.hflip, "random horizontal flips", 0},
        {"--resume", OPT_FLAG, &f.resume, "continue the run in --out (starts fresh if there is none)", 0},
        {"--seed", OPT_INT, &f.seed, "random seed (init, data order, noise)", 0},
        {"--threads", OPT_INT, &f.threads, "threads", 0},
        {"--ckpt-every", OPT_INT, &f.ckpt_every, "steps between periodic checkpoints", 0},
        {"--eval-every", OPT_INT, &f.eval_every, "steps between held-out PSNR evaluations", 0},
        {"--keep", OPT_INT, &f.keep, "also keep the last K step-numbered periodic checkpoints", 0},
    };
    int no = sizeof opts / sizeof *opts;
    int rc = args_parse(argc, argv, opts, no, "--data SRC --out vae.h5 [options]");
    if (rc) return rc > 0 ? 0 : 2;
    if (!f.data || !f.out) return errorf("vae-train: --data and --out are required (see --help)"), 2;
    if (f.batch < 1 || f.steps < 0 || f.epochs < 0 || f.minutes < 0 || f.threads < 1 ||
        f.ckpt_every < 1 || f.eval_every < 1 || f.keep < 0 || !(f.lr > 0))
        return errorf("vae-train: --batch, --threads, --ckpt-every, --eval-every and --lr "
                      "must be positive; budgets and --keep non-negative"), 2;
    if (f.steps && f.epochs) return errorf("vae-train: give --steps or --epochs, not both"), 2;
    set_threads(f.threads);
    h5_quiet();

    VaeConfig cfg;
    vae_config_default(&cfg);
    cfg.in_channels = f.channels;
    cfg.image_size = f.image_size;
    cfg.base_channels = f.base_channels;
    cfg.latent_channels = f.latent_channels;
    cfg.kl_weight = (float)f.kl_weight;
    Attrs ck = {0};
    long step = 0;
    int resuming = 0;
    if (f.resume) {
        if (access(f.out, F_OK) == 0) {
            if (ckpt_read_attrs(f.out, "vae", &ck) || resume_settings(&f, opts, no, &ck, &cfg))
                return 1;
            int64_t s;
            if (attrs_get_int(&ck, f.out, "step", &s)) return 1;
            step = (long)s;
            resuming = 1;
        } else {
            fprintf(stderr, "vae-train: no checkpoint at %s; --resume starts a fresh run\n", f.out);
        }
    }
    if (cfg.in_channels != 1 && cfg.in_channels != 3)
        return errorf("vae-train: --channels must be 1 or 3"), 2;
    if (cfg.image_size < 4 || cfg.image_size % 4)
        return errorf("vae-train: --image-size must be a positive multiple of 4"), 2;
    if (cfg.base_channels < 1 || cfg.latent_channels < 1 || cfg.kl_weight < 0)
        return errorf("vae-train: --base-channels and --latent-channels must be positive, --kl-weight >= 0"), 2;

    ImageSet set;
    if (imageset_load(&set, f.data, cfg.image_size, cfg.in_channels)) return 1;
    // A held-out slice at the end (never trained on) for the PSNR.
    int hold = set.N / 10 < 512 ? set.N / 10 : 512;
    int ntrain = set.N - hold;
    if (ntrain < 1) return errorf("%s: too few images (%d) to train", f.data, set.N), 1;
    int B = f.batch < ntrain ? f.batch : ntrain;
    long spe = (ntrain + B - 1) / B; // steps per epoch; the last batch is partial
    long total = total_steps(f.steps, f.epochs, f.minutes, spe); // 0: only the clock

    Vae v;
    // Resuming loads through vae_load, which checks the sizes the file
    // declares before allocating them.
    if (resuming ? vae_load(&v, f.out, B, NULL) : (vae_init(&v, &cfg, B), 0)) return 1;
    size_t P = v.table.total;
    float *m = xcalloc(P, sizeof(float)), *vv = xcalloc(P, sizeof(float));
    if (resuming) {
        if (ckpt_read_group(f.out, &v.table, "optim/m", m) ||
            ckpt_read_group(f.out, &v.table, "optim/v", vv))
            return 1;
        fprintf(stderr, "vae-train: resuming %s at step %ld\n", f.out, step);
    } else {
        Rng init;
        rng_init(&init, (uint64_t)f.seed);
        params_init_values(&v.table, v.params, &init);
    }
    fprintf(stderr, "vae-train: %d images from %s (%d held out), %zu parameters, "
            "batch %d, %ld steps/epoch, %d threads\n",
            ntrain, set.source, hold, P, B, spe, f.threads);
    if (set.skipped) fprintf(stderr, "vae-train: %d files skipped\n", set.skipped);
    if (total && step >= total) {
        fprintf(stderr, "vae-train: %s is already at step %ld >= %ld; nothing to do\n", f.out, step, total);
        return 0;
    }
    FILE *log = log_open(f.out);
    if (!log) return 1;

    int h = vae_latent_size(&cfg);
    size_t img = (size_t)cfg.in_channels * cfg.image_size * cfg.image_size;
    size_t lat = (size_t)cfg.latent_channels * h * h;
    float *x = xmalloc(B * img * sizeof(float));   // (B, C, S, S)
    float *eps = xmalloc(B * lat * sizeof(float)); // (B, Z, h, w)
    uint8_t *flip = xcalloc(B, 1);
    EpochSampler batches;
    epoch_sampler_init(&batches, ntrain, B, (uint64_t)f.seed);
    AdamConfig adam = {f.lr, 0.9, 0.999, 1e-8, 0.0, 0};

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
        for (int i = 0; i < b; i++) flip[i] = f.hflip ? rng_below(&r, 2) : 0;
        imageset_batch(x, &set, items_idx, b, flip);
        rng_normal_fill(&r, eps, b * lat);

        float loss = vae_forward(&v, x, eps, b);
        if (step + 1 == nan_step) loss = NAN;
        memset(v.grads, 0, P * sizeof(float));
        vae_backward(&v);
        double gsq = 0;
        for (size_t i = 0; i < P; i++) gsq += (double)v.grads[i] * v.grads[i];
        if (!isfinite(loss) || !isfinite(gsq)) {
            progress_end(&prog);
            errorf("vae-train: step %ld: the %s is not finite; stopping without "
                   "overwriting %s", step + 1, isfinite(loss) ? "gradient" : "loss", f.out);
            status = 1;
            break;
        }
        adam_update(v.params, v.grads, m, vv, P, &adam, step + 1);
        step++;
        items += b;

        double el = now_seconds() - t0;
        fprintf(log, "{\"step\": %ld, \"epoch\": %.4f, \"loss\": %.6g, \"rec\": %.6g, "
                "\"kl\": %.6g, \"img_per_s\": %.2f, \"elapsed_s\": %.3f}\n",
                step, (double)step / spe, loss, v.rec, v.kl, items / el, el);
        char parts[160];
        snprintf(parts, sizeof parts, "loss %.3f rec %.3f kl %.1f", loss, v.rec, v.kl);
        int last = run_is_over(step, total, el, budget);
        double left = run_seconds_left(step, prog.step_start, total, el, budget);
        progress_print(&prog, step, total, items, parts, left, last);
        if (step % f.eval_every == 0 || last) {
            double psnr = vae_psnr(&v, &set, ntrain, hold);
            fprintf(log, "{\"step\": %ld, \"heldout_psnr\": %.4f}\n", step, psnr);
            if (!prog.is_tty || last) {
                progress_end(&prog);
                fprintf(stderr, "step %ld: held-out PSNR %.2f dB (%d images)\n", step, psnr, hold);
            }
        }
        fflush(log);
        if (step % f.ckpt_every == 0 || last) {
            if (save(f.out, &v, m, vv, &f, step, &set)) {
                status = 1;
                break;
            }
        }
        if (last) break;
    }
    progress_end(&prog);
    if (status == 0) {
        if (interrupted())
            fprintf(stderr, "vae-train: interrupted; checkpoint written to %s at step %ld\n", f.out, step);
        else
            fprintf(stderr, "vae-train: done, step %ld, %.1f s, checkpoint %s\n", step,
                    now_seconds() - t0, f.out);
    }
    fclose(log);
    epoch_sampler_free(&batches);
    free(x), free(eps), free(flip), free(m), free(vv);
    vae_free(&v);
    imageset_free(&set);
    return status;
}
