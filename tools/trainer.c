// trainer.c: the run loop (see trainer.h).
#include "trainer.h"

#include <dirent.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "dist.h"
#include "paths.h"
#include "plot.h"
#include "progress.h"

// Points kept for the loss plot. When full, neighbours are averaged in pairs,
// so a run of any length plots from bounded memory.
#define PLOT_POINTS 16384

Rng run_stream(uint64_t seed, uint64_t kind, uint64_t index) {
    Rng base;
    rng_init(&base, seed);
    Rng k = rng_derive(&base, kind);
    return rng_derive(&k, index);
}

void metrics_add(Metrics *m, const char *key, double v) {
    CHECK(m->n < METRICS_MAX);
    m->key[m->n] = key;
    m->v[m->n++] = v;
}

// ---------------------------------------------------------------- flags

void trainer_init(Trainer *t) {
    memset(t, 0, sizeof *t);
    t->batch = 128;
    t->lr = 1e-3;
    t->threads = omp_get_num_procs();
    t->ckpt_every = 500;
    t->eval_every = 200;
    t->grad_chunks = 1;
    t->perm_epoch = t->perm_next_epoch = -1;
    dist_init();
}

void trainer_free(Trainer *t) {
    free(t->perm);
    free(t->perm_next);
    t->perm = t->perm_next = NULL;
}

int trainer_parse(Trainer *t, int argc, char **argv, const Opt *own, int nown,
                  const char *usage) {
    const Opt shared[] = {
        {"--out", OPT_STR, &t->out, "checkpoint path (HDF5); beside it <out>.log.jsonl and the loss plot <out>.loss.png"},
        {"--steps", OPT_LONG, &t->steps, "total optimizer steps, counted from the start of the run", .hi = 1e15},
        {"--epochs", OPT_INT, &t->epochs, "total epochs over the data, counted from the start of the run (default 1 when no budget is given)", .hi = 1e9},
        {"--minutes", OPT_FLOAT, &t->minutes, "wall-clock budget for this invocation, ends with a checkpoint", .hi = 1e9},
        {"--batch", OPT_INT, &t->batch, "batch size", .attr = "batch", .lo = 1, .hi = 1 << 20},
        {"--lr", OPT_FLOAT, &t->lr, "learning rate", .attr = "lr", .lo = 1e-12, .hi = 10},
        {"--resume", OPT_FLAG, &t->resume, "continue the run in --out (starts fresh if there is none)"},
        {"--seed", OPT_INT, &t->seed, "random seed (init, data order, every draw)", .attr = "rng_seed", .hi = INT_MAX},
        {"--threads", OPT_INT, &t->threads, "threads", .lo = 1, .hi = 1024},
        {"--ckpt-every", OPT_INT, &t->ckpt_every, "steps between periodic checkpoints", .lo = 1, .hi = INT_MAX},
        {"--eval-every", OPT_INT, &t->eval_every, "steps between held-out evaluations (and loss plots)", .lo = 1, .hi = INT_MAX},
        {"--keep", OPT_INT, &t->keep, "also keep the last K step-numbered periodic checkpoints", .hi = 1 << 20},
    };
    // Not Opt.attr: checkpoints of one chunk, those written before chunks
    // existed too, do not store it (trainer_resume).
    const Opt chunks = {"--grad-chunks", OPT_INT, &t->grad_chunks, "G: the batch's gradient "
                        "is summed over G chunks in a fixed tree (a power of two; under mpirun "
                        "-np K a multiple of K); the training depends on G, not on K",
                        .lo = 1, .hi = 1 << 20};
    int ns = sizeof shared / sizeof *shared;
    CHECK(nown + ns + 1 <= (int)(sizeof t->opts / sizeof *t->opts));
    memcpy(t->opts, own, (size_t)nown * sizeof *own);
    memcpy(t->opts + nown, shared, sizeof shared);
    t->nopts = nown + ns;
    if (t->data_parallel) t->opts[t->nopts++] = chunks;
    int rc = args_parse(argc, argv, t->opts, t->nopts, usage);
    if (rc) return rc;
    const char *prog = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    if (!t->out) return errorf("%s: --out is required (see --help)", prog);
    if (t->steps && t->epochs) return errorf("%s: give --steps or --epochs, not both", prog);
    set_threads(t->threads);
    return 0;
}

int trainer_given(const Trainer *t, const char *name) {
    return args_given(t->opts, t->nopts, name);
}

// Takes option o's value from checkpoint attribute o->attr; a flag given
// with another value is an error.
static int resume_opt(Opt *o, const Attrs *a, const char *path) {
    const Attr *x = attrs_find(a, o->attr);
    if (!x) return o->attr_optional ? 0 : errorf("%s: missing attribute '%s'", path, o->attr);
    if (o->type == OPT_STR) {
        if (x->type != ATTR_STR) return errorf("%s: attribute '%s' is not a string", path, o->attr);
        const char **p = o->ptr;
        if (o->given && strcmp(*p, x->s))
            return errorf("%s %s contradicts the checkpoint %s (%s); drop the flag to use "
                          "the checkpoint's value", o->name, *p, path, x->s);
        *p = x->s;
        return 0;
    }
    double v;
    if (x->type == ATTR_INT) v = (double)x->i;
    else if (x->type == ATTR_DOUBLE && o->type == OPT_FLOAT) v = x->d;
    else return errorf("%s: attribute '%s' is not %s", path, o->attr,
                       o->type == OPT_FLOAT ? "a number" : "an integer");
    int ranged = o->lo != 0 || o->hi != 0;
    double lo = ranged ? o->lo : o->type == OPT_LONG ? (double)LONG_MIN : INT_MIN;
    double hi = ranged ? o->hi : o->type == OPT_LONG ? (double)LONG_MAX : INT_MAX;
    if (o->type == OPT_FLAG) lo = 0, hi = 1;
    if (!isfinite(v) || v < lo || v > hi)
        return errorf("%s: attribute '%s' is %.15g, expected a value between %.15g and %.15g "
                      "(the range of %s)", path, o->attr, v, lo, hi, o->name);
    double given = o->type == OPT_FLOAT ? *(double *)o->ptr
                 : o->type == OPT_LONG  ? (double)*(long *)o->ptr
                                        : (double)*(int *)o->ptr;
    int differs = o->type == OPT_FLOAT ? (float)given != (float)v : given != v;
    if (o->given && differs)
        return errorf("%s %g contradicts the checkpoint %s (%g); drop the flag to use the "
                      "checkpoint's value", o->name, given, path, v);
    if (o->type == OPT_FLOAT) *(double *)o->ptr = v;
    else if (o->type == OPT_LONG) *(long *)o->ptr = (long)v;
    else *(int *)o->ptr = (int)v;
    return 0;
}

int trainer_resume(Trainer *t, const char *kind, Attrs *a) {
    memset(a, 0, sizeof *a);
    if (!t->resume) return 0;
    if (access(t->out, F_OK) != 0) {
        if (dist_rank() == 0)
            fprintf(stderr, "no checkpoint at %s; --resume starts a fresh run\n", t->out);
        return 0;
    }
    if (ckpt_read_attrs(t->out, kind, a)) return -1;
    for (int i = 0; i < t->nopts; i++)
        if (t->opts[i].attr && resume_opt(&t->opts[i], a, t->out)) return -1;
    if (t->data_parallel) {
        int g = 1;
        const AttrSpec gs = {"grad_chunks", SPEC_INT, 1, 1 << 20, &g, SPEC_OPTIONAL};
        if (attrs_read_specs(a, t->out, &gs, 1)) return -1;
        if (trainer_given(t, "--grad-chunks") && t->grad_chunks != g)
            return errorf("--grad-chunks %d contradicts the checkpoint %s (%d); drop the flag "
                          "to use the checkpoint's value", t->grad_chunks, t->out, g);
        t->grad_chunks = g;
    }
    int64_t step;
    if (attrs_get_int(a, t->out, "step", &step)) return -1;
    if (step < 0 || step > (int64_t)1e15)
        return errorf("%s: attribute 'step' is %lld, expected 0 or more", t->out, (long long)step);
    t->step = (long)step;
    t->resuming = 1;
    set_threads(t->threads);
    return 0;
}

// errorf on rank 0 only, for an error every rank meets alike; -1.
#define all_ranks_error(...) (dist_rank() == 0 ? errorf(__VA_ARGS__) : -1)

int trainer_set_data(Trainer *t, int64_t n, const char *what) {
    t->nheld = n / 10 < 512 ? n / 10 : 512;
    t->ntrain = n - t->nheld;
    if (t->ntrain < 1) return errorf("%s: too few items (%lld) to train", what, (long long)n);
    CHECK(t->ntrain <= INT_MAX); // item indices are int
    t->B = t->batch < t->ntrain ? t->batch : t->ntrain;
    t->steps_per_epoch = (long)((t->ntrain + t->B - 1) / t->B);
    if (t->steps) t->total = t->steps;
    else if (t->epochs) t->total = (long)t->epochs * t->steps_per_epoch;
    else t->total = t->minutes > 0 ? 0 : t->steps_per_epoch;
    // Every rank meets these alike: rank 0 says it.
    int G = t->grad_chunks, K = dist_size();
    if (K > 1 && !t->data_parallel)
        return all_ranks_error("%s: started as %d ranks, but this program trains on one "
                               "process only", what, K);
    if ((G & (G - 1)) || G > t->B)
        return all_ranks_error("--grad-chunks %d: expected a power of two no larger than the "
                               "batch (%lld)", G, (long long)t->B);
    if (K & (K - 1))
        return all_ranks_error("mpirun -np %d: the number of ranks must be a power of two", K);
    if (G % K && t->resuming)
        return all_ranks_error("mpirun -np %d: the run in %s has --grad-chunks %d, which %d "
                               "ranks cannot share: resume it on a power-of-two number of "
                               "ranks dividing %d", K, t->out, G, K, G);
    if (G % K)
        return all_ranks_error("mpirun -np %d: --grad-chunks %d is not a multiple of the ranks; "
                               "give --grad-chunks %d (or a larger power of two: the training "
                               "depends on --grad-chunks, not on the ranks, and one process "
                               "with the same --grad-chunks trains the same)", K, G, K);
    t->chunk = (int)((t->B + G - 1) / G);
    t->chunks = G / K;
    t->perm = xmalloc((size_t)t->ntrain * sizeof(int));
    t->perm_next = xmalloc((size_t)t->ntrain * sizeof(int));
    return 0;
}

// ---------------------------------------------------------------- data order

// The items of 0-based step `step`: epoch e visits the training items in a
// permutation drawn from run_stream(seed, STREAM_EPOCH, e), in ceil(n / B)
// steps (the last one partial), so they follow from (seed, step) alone. Two
// epochs' orders are kept, for a step and the one after it.
static Batch batch_of(Trainer *t, long step) {
    long epoch = step / t->steps_per_epoch, pos = step % t->steps_per_epoch;
    int n = (int)t->ntrain;
    if (t->perm_epoch != epoch && t->perm_next_epoch != epoch) {
        // Replace the older of the two.
        int *tmp = t->perm;
        long te = t->perm_epoch;
        if (t->perm_epoch > t->perm_next_epoch) {
            t->perm = t->perm_next, t->perm_next = tmp;
            t->perm_epoch = t->perm_next_epoch, t->perm_next_epoch = te;
        }
        for (int i = 0; i < n; i++) t->perm[i] = i;
        Rng r = run_stream((uint64_t)t->seed, STREAM_EPOCH, (uint64_t)epoch);
        rng_shuffle(&r, t->perm, n);
        t->perm_epoch = epoch;
    }
    const int *perm = t->perm_epoch == epoch ? t->perm : t->perm_next;
    int64_t start = pos * t->B;
    int total = (int)(n - start < t->B ? n - start : t->B);
    // This rank's chunks: a slice of the batch, empty for the last ranks of
    // a short batch.
    int64_t share = (int64_t)t->chunks * t->chunk, lo = dist_rank() * share, hi = lo + share;
    lo = lo < total ? lo : total, hi = hi < total ? hi : total;
    Batch b = {perm + start + lo, (int)(hi - lo), (int)lo, total, t->chunk, t->chunks};
    return b;
}

// ---------------------------------------------------------------- log and plot

typedef struct {
    double *x, *y; // (PLOT_POINTS)
    long n;
} Series;

static void series_init(Series *s) {
    s->x = xmalloc(PLOT_POINTS * sizeof(double));
    s->y = xmalloc(PLOT_POINTS * sizeof(double));
    s->n = 0;
}

static void series_free(Series *s) { free(s->x), free(s->y); }

static void series_add(Series *s, double x, double y) {
    if (!isfinite(y)) return;
    if (s->n == PLOT_POINTS) {
        for (long i = 0; i < PLOT_POINTS / 2; i++) {
            s->x[i] = 0.5 * (s->x[2 * i] + s->x[2 * i + 1]);
            s->y[i] = 0.5 * (s->y[2 * i] + s->y[2 * i + 1]);
        }
        s->n = PLOT_POINTS / 2;
    }
    s->x[s->n] = x, s->y[s->n++] = y;
}

// The length of `out` without a ".h5" ending: the stem of the files beside it.
static int stem_len(const char *out) {
    size_t len = strlen(out);
    if (len > 3 && !strcmp(out + len - 3, ".h5")) len -= 3;
    return (int)len;
}

int trainer_sibling(char *buf, const char *out, const char *suffix) {
    return path_printf(buf, PATH_MAX, "%.*s%s", stem_len(out), out, suffix);
}

// The files a run writes beside its checkpoint: the log "<out>.log.jsonl"
// and the loss plot "<out minus .h5>.loss.png" (buffers of PATH_MAX bytes).
static int run_files(const char *out, char *log_path, char *plot_path) {
    return path_printf(log_path, PATH_MAX, "%s.log.jsonl", out) ||
           trainer_sibling(plot_path, out, ".loss.png");
}

// The step-numbered copy of checkpoint `out` (--keep):
// "<out minus .h5>.step<N>.h5", in a buffer of PATH_MAX bytes.
static int numbered_path(char *buf, const char *out, long step) {
    char suffix[40];
    snprintf(suffix, sizeof suffix, ".step%ld.h5", step);
    return trainer_sibling(buf, out, suffix);
}

// 1 (and *step) if file name `name` is that of a numbered copy of the
// checkpoint whose file name is `out_name`.
static int numbered_step(const char *name, const char *out_name, long *step) {
    int sl = stem_len(out_name);
    char tail[8];
    return !strncmp(name, out_name, (size_t)sl) &&
           sscanf(name + sl, ".step%ld.h%2s", step, tail) == 2 && !strcmp(tail, "5");
}

static const char *file_name(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

int trainer_check_paths(const Trainer *t, const PathArg *inputs, int n) {
    char log_path[PATH_MAX], plot_path[PATH_MAX];
    if (check_output_path((PathArg){"--out", t->out}, OUT_FILE, inputs, n) ||
        run_files(t->out, log_path, plot_path) ||
        check_output_path((PathArg){"the log of --out", log_path}, OUT_FILE, inputs, n) ||
        check_output_path((PathArg){"the loss plot of --out", plot_path}, OUT_FILE, inputs, n))
        return -1;
    // --keep deletes the older numbered copies it finds beside --out.
    for (int i = 0; i < n && t->keep > 0; i++) {
        long step;
        char copy[PATH_MAX];
        struct stat a, b;
        if (inputs[i].path && numbered_step(file_name(inputs[i].path), file_name(t->out), &step) &&
            numbered_path(copy, t->out, step) == 0 && stat(copy, &a) == 0 &&
            stat(inputs[i].path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
            return errorf("%s: %s is named like a step-numbered copy of --out %s, which "
                          "--keep deletes", inputs[i].path, inputs[i].flag, t->out);
    }
    return 0;
}

// JSON has no NaN or infinity: those are written as null.
static void json_number(FILE *f, const char *key, double v) {
    if (isfinite(v)) fprintf(f, ", \"%s\": %.6g", key, v);
    else fprintf(f, ", \"%s\": null", key);
}

// The value of "key": in a log line, if present and a number.
static int json_get(const char *line, const char *key, double *v) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *p = strstr(line, pat);
    if (!p) return 0;
    char *end;
    *v = strtod(p + strlen(pat), &end);
    return end != p + strlen(pat);
}

// A resumed run continues the log and the plot from the steps before it.
// Lines past the checkpoint's step (a run that crashed after its last
// checkpoint) are dropped from the log, so that they are neither plotted nor
// doubled by the steps the resumed run logs again. The held-out figure is the
// line's "heldout_..." key.
static int resume_log(Series *train, Series *held, Series *meas, const char *meas_key,
                      const char *path, long upto) {
    FILE *f = fopen_regular(path, NULL);
    if (!f) return 0; // no log yet: nothing to continue
    char tmp[PATH_MAX], line[1024];
    if (tmp_path_for(tmp, sizeof tmp, path)) {
        fclose(f);
        return -1;
    }
    FILE *o = fopen(tmp, "w");
    if (!o) {
        fclose(f);
        return errorf("%s: cannot write (trimming the log %s)", tmp, path);
    }
    while (fgets(line, sizeof line, f)) {
        double s, v;
        int has_step = json_get(line, "step", &s);
        if (has_step && s > upto) continue;
        fputs(line, o);
        if (!has_step) continue;
        if (json_get(line, "loss", &v)) series_add(train, s, v);
        const char *h = strstr(line, "\"heldout_");
        if (h && sscanf(strchr(h + 1, '"') + 1, ": %lf", &v) == 1) series_add(held, s, v);
        if (meas_key && json_get(line, meas_key, &v)) series_add(meas, s, v);
    }
    fclose(f);
    if (fclose(o) != 0) {
        unlink(tmp);
        return errorf("%s: cannot write (trimming the log %s)", tmp, path);
    }
    return rename(tmp, path) == 0 ? 0 : errorf("%s: cannot replace the log", path);
}

// A fresh run starts a fresh log (the previous one is kept as
// <log>.prev); a resumed run appends.
static FILE *open_log(const char *path, int resuming) {
    if (!resuming && access(path, F_OK) == 0) {
        char prev[PATH_MAX];
        if (path_printf(prev, sizeof prev, "%s.prev", path)) return NULL;
        if (rename(path, prev) != 0) {
            errorf("%s: cannot move the previous run's log aside to %s", path, prev);
            return NULL;
        }
        fprintf(stderr, "the previous log %s is kept as %s\n", path, prev);
    }
    FILE *f = fopen(path, "a");
    if (!f) errorf("%s: cannot open the log for writing", path);
    return f;
}

// ---------------------------------------------------------------- the loop

// LDM_FAULT_NAN_STEP=N (tests/robust_test.sh) makes the loss of step N
// (1-based, as logged) NaN, to check that the guard stops the run.
static long fault_nan_step(void) {
    const char *s = getenv("LDM_FAULT_NAN_STEP");
    return s ? atol(s) : 0;
}

// LDM_FAULT_DIVERGE_STEP=N (tests/mpi_test.sh): from step N (as logged) on,
// the last rank reports other weights, to check that the ranks' comparison
// stops the run.
static long fault_diverge_step(void) {
    const char *s = getenv("LDM_FAULT_DIVERGE_STEP");
    return s ? atol(s) : 0;
}

static int cmp_long_desc(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x < y) - (x > y);
}

// With keep > 0: a step-numbered copy "<out minus .h5>.step<N>.h5" (a hard
// link to the new file, so no second write), and only the newest `keep`.
static void keep_numbered_copy(const char *out, long step, int keep) {
    if (keep <= 0) return;
    char name[PATH_MAX], dir[PATH_MAX];
    if (numbered_path(name, out, step)) return;
    unlink(name);
    if (link(out, name) != 0) warnf("%s: cannot keep a numbered copy", name);
    const char *base = file_name(out);
    if (path_printf(dir, sizeof dir, "%.*s", (int)(base - out), out)) return;
    DIR *d = opendir(dir[0] ? dir : ".");
    if (!d) return;
    // Copies past this step belong to a longer run this one restarted or
    // resumed from before; they are not counted (nor deleted).
    long *steps = NULL, s;
    int n = 0, cap = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (!numbered_step(e->d_name, base, &s) || s > step) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            steps = realloc(steps, (size_t)cap * sizeof *steps);
            CHECK(steps != NULL);
        }
        steps[n++] = s;
    }
    closedir(d);
    qsort(steps, n, sizeof *steps, cmp_long_desc);
    for (int i = keep; i < n; i++)
        if (numbered_path(name, out, steps[i]) == 0) unlink(name);
    free(steps);
}

// Writes the checkpoint to `path`: t->out (then --keep's numbered copies)
// or the best-so-far copy.
static int save(Trainer *t, const TrainerHooks *h, const char *path) {
    Attrs a = {0};
    attrs_set_str(&a, "kind", h->kind);
    attrs_set_int(&a, "step", t->step);
    attrs_set_int(&a, "rng_counter", t->step); // per-step streams: the step is the position
    if (t->grad_chunks > 1) attrs_set_int(&a, "grad_chunks", t->grad_chunks);
    for (int i = 0; i < t->nopts; i++) {
        const Opt *o = &t->opts[i];
        if (!o->attr) continue;
        switch (o->type) {
        case OPT_INT: case OPT_FLAG: attrs_set_int(&a, o->attr, *(int *)o->ptr); break;
        case OPT_LONG: attrs_set_int(&a, o->attr, *(long *)o->ptr); break;
        case OPT_FLOAT: attrs_set_double(&a, o->attr, *(double *)o->ptr); break;
        case OPT_STR:
            if (attrs_set_str(&a, o->attr, *(const char **)o->ptr)) return -1;
            break;
        case OPT_SIZE: CHECK(0 && "sizes are not stored"); break;
        }
    }
    if (h->save(h->state, path, &a)) return -1;
    if (path == t->out) keep_numbered_copy(t->out, t->step, t->keep);
    return 0;
}

static void draw_plot(const char *path, const TrainerHooks *h, const char *out,
                      const Series *train, const Series *held, const char *held_axis,
                      const Series *meas) {
    PlotSeries tr = {train->x, train->y, train->n, "training loss"};
    PlotSeries he = {held->x, held->y, held->n, held_axis ? held_axis : "held-out loss"};
    PlotSeries me = {meas->x, meas->y, h->measure ? meas->n : 0, h->measure_axis};
    char title[256];
    snprintf(title, sizeof title, "%s: %s", h->name, out); // the plot cuts a long title itself
    if (plot_losses_png(path, &(PlotSpec){title, tr, he, held_axis, me, h->measure_axis}))
        warnf("%s: loss plot not written", path);
}

// The lowest finite value of a series, or +inf.
static double series_min(const Series *s) {
    double m = INFINITY;
    for (long i = 0; i < s->n; i++)
        if (isfinite(s->y[i]) && s->y[i] < m) m = s->y[i];
    return m;
}

// What the ranks must agree on at the start: every flag's value (after
// --resume took the checkpoint's) and the step they start from.
static uint64_t flags_hash(const Trainer *t) {
    uint64_t h = FNV_OFFSET;
    for (int i = 0; i < t->nopts; i++) {
        const Opt *o = &t->opts[i];
        h = fnv1a64(h, o->name, strlen(o->name) + 1);
        switch (o->type) {
        case OPT_INT: case OPT_FLAG: h = fnv1a64(h, o->ptr, sizeof(int)); break;
        case OPT_LONG: h = fnv1a64(h, o->ptr, sizeof(long)); break;
        case OPT_FLOAT: h = fnv1a64(h, o->ptr, sizeof(double)); break;
        case OPT_SIZE: h = fnv1a64(h, o->ptr, sizeof(size_t)); break;
        case OPT_STR: {
            const char *v = *(const char **)o->ptr;
            h = v ? fnv1a64(h, v, strlen(v) + 1) : fnv1a64(h, "\xff", 1);
            break;
        }
        }
    }
    long at[2] = {t->resuming, t->step};
    return fnv1a64(h, at, sizeof at);
}

// Under mpirun: rank 0's status (of work only it does) on every rank.
static int root_status(int rc) { return dist_size() > 1 ? dist_bcast_int(rc) : rc; }

int trainer_run(Trainer *t, const TrainerHooks *h) {
    const int root = dist_rank() == 0, K = dist_size();
    CHECK(K == 1 || (t->data_parallel && h->weights_hash));
    if (t->total && t->step >= t->total) {
        if (root)
            fprintf(stderr, "%s: %s is already at step %ld >= %ld; nothing to do\n", h->name,
                    t->out, t->step, t->total);
        return 0;
    }
    if (t->nheld == 0 && root)
        fprintf(stderr, "%s: fewer than 10 items: none held out, no evaluation\n", h->name);
    char log_path[PATH_MAX], plot_path[PATH_MAX];
    if (run_files(t->out, log_path, plot_path)) return 1;
    Series train, held, meas;
    series_init(&train), series_init(&held), series_init(&meas);
    CHECK(!h->measure || (h->measure_key && h->measure_every > 0));
    char best_path[PATH_MAX];
    if (h->measure && h->measure_keep_best && trainer_sibling(best_path, t->out, ".best.h5"))
        return 1;
    // Only rank 0 writes the log; every rank learns whether it could.
    FILE *log = NULL;
    int failed = root && t->resuming &&
                 resume_log(&train, &held, &meas, h->measure ? h->measure_key : NULL, log_path,
                            t->step);
    if (root && !failed) failed = !(log = open_log(log_path, t->resuming));
    if (K > 1 && dist_start(h->name, failed, flags_hash(t), t->data_hash,
                            h->weights_hash(h->state)))
        failed = 1;
    if (failed) {
        if (log) fclose(log);
        return 1;
    }
    double best = series_min(&meas);
    const char *held_axis = NULL; // the evaluation's, once it has run

    interrupt_install();
    Progress prog;
    progress_init(&prog, t->step);
    double t0 = now_seconds(), budget = t->minutes * 60.0;
    long items = 0, nan_step = fault_nan_step(), diverge_step = fault_diverge_step();
    int status = 0, signalled = 0;
    while (!t->total || t->step < t->total) {
        Batch cur = batch_of(t, t->step);
        Batch next = {NULL, 0};
        if (!t->total || t->step + 1 < t->total) next = batch_of(t, t->step + 1);
        Metrics m = {0};
        if (h->step(h->state, t->step, cur, next, &m)) {
            status = 1;
            break;
        }
        CHECK(m.n >= 1);
        if (t->step + 1 == nan_step) m.v[0] = NAN;
        int bad = -1;
        for (int i = 0; i < m.n && bad < 0; i++)
            if (!isfinite(m.v[i])) bad = i;
        if (bad >= 0) { // the figures are the batch's, the same on every rank
            if (root) {
                progress_end(&prog);
                errorf("%s: step %ld: the %s is not finite; stopping without overwriting %s",
                       h->name, t->step + 1, m.key[bad], t->out);
            }
            status = 1;
            break;
        }
        t->step++;
        items += cur.total;

        double el = now_seconds() - t0;
        char parts[160];
        int len = 0;
        if (log)
            fprintf(log, "{\"step\": %ld, \"epoch\": %.4f", t->step,
                    (double)t->step / t->steps_per_epoch);
        for (int i = 0; i < m.n; i++) {
            if (log) json_number(log, m.key[i], m.v[i]);
            if (len < (int)sizeof parts)
                len += snprintf(parts + len, sizeof parts - len, "%s%s %.4g", i ? " " : "",
                                m.key[i], m.v[i]);
        }
        if (log) fprintf(log, ", \"img_per_s\": %.2f, \"elapsed_s\": %.3f}\n", items / el, el);
        series_add(&train, (double)t->step, m.v[0]);
        int last = (t->total && t->step >= t->total) || (budget > 0 && el >= budget) ||
                   interrupted();
        if (K > 1) { // any rank's budget or interrupt ends every rank's run
            int why = dist_or(last | (interrupted() ? 2 : 0));
            last = why != 0, signalled = signalled || (why & 2);
        }
        double left = budget > 0 ? fmax(0, budget - el) : -1;
        if (t->total && budget > 0)
            left = fmin(left, el / (t->step - prog.step_start) * (t->total - t->step));
        if (root) progress_print(&prog, t->step, t->total, items, parts, left, last);
        int evaluate = t->nheld > 0 && (t->step % t->eval_every == 0 || last);
        int ckpt = t->step % t->ckpt_every == 0 || last;
        if (K > 1 && (evaluate || ckpt)) {
            uint64_t w = h->weights_hash(h->state);
            if (diverge_step && t->step >= diverge_step && dist_rank() == K - 1) w ^= 1;
            if (dist_same(h->name, w, "weights")) {
                status = 1;
                break;
            }
        }
        if (evaluate) {
            int rc = 0;
            Metrics e = {0};
            if (root && h->evaluate(h->state, t->step, &e)) rc = 1;
            if (root && rc == 0) {
                CHECK(e.n >= 1);
                fprintf(log, "{\"step\": %ld", t->step);
                for (int i = 0; i < e.n; i++) json_number(log, e.key[i], e.v[i]);
                fprintf(log, "}\n");
                fflush(log);
                if (!prog.is_tty || last) {
                    progress_end(&prog);
                    fprintf(stderr, "step %ld: %s\n", t->step, e.text);
                }
                if (!isfinite(e.v[0])) {
                    progress_end(&prog);
                    errorf("%s: step %ld: the %s is not finite; stopping without overwriting %s",
                           h->name, t->step, e.key[0], t->out);
                    rc = 1;
                } else {
                    series_add(&held, (double)t->step, e.v[0]);
                    held_axis = e.axis;
                    draw_plot(plot_path, h, t->out, &train, &held, held_axis, &meas);
                }
            }
            if (root_status(rc)) {
                status = 1;
                break;
            }
        }
        if (log) fflush(log);
        if (root && h->extra && h->extra_every > 0 && (t->step % h->extra_every == 0 || last))
            h->extra(h->state, t->step);
        int new_best = 0;
        if (root && h->measure && (t->step % h->measure_every == 0 || last)) {
            Metrics e = {0};
            progress_end(&prog);
            if (h->measure(h->state, t->step, &e) == 0) {
                CHECK(e.n >= 1 && !strcmp(e.key[0], h->measure_key));
                fprintf(log, "{\"step\": %ld", t->step);
                for (int i = 0; i < e.n; i++) json_number(log, e.key[i], e.v[i]);
                fprintf(log, "}\n");
                fflush(log);
                fprintf(stderr, "step %ld: %s\n", t->step, e.text);
                series_add(&meas, (double)t->step, e.v[0]);
                new_best = h->measure_keep_best && isfinite(e.v[0]) && e.v[0] < best;
                if (new_best) best = e.v[0];
                draw_plot(plot_path, h, t->out, &train, &held, held_axis, &meas);
            } else {
                warnf("%s: step %ld: the %s was not measured; the run goes on", h->name,
                      t->step, h->measure_key);
            }
        }
        if (ckpt && root_status(root ? save(t, h, t->out) : 0)) {
            status = 1;
            break;
        }
        if (new_best && save(t, h, best_path) == 0)
            fprintf(stderr, "%s: step %ld: best %s so far (%.4g): %s\n", h->name, t->step,
                    h->measure_key, best, best_path);
        if (last) break;
    }
    if (root) progress_end(&prog);
    if (status == 0 && root) {
        if (K > 1 ? signalled : interrupted())
            fprintf(stderr, "%s: interrupted; checkpoint written to %s at step %ld\n", h->name,
                    t->out, t->step);
        else
            fprintf(stderr, "%s: done, step %ld, %.1f s, checkpoint %s, loss plot %s\n",
                    h->name, t->step, now_seconds() - t0, t->out, plot_path);
    }
    if (log) fclose(log);
    series_free(&train), series_free(&held), series_free(&meas);
    return status;
}
