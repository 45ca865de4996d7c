// trainer.h: the one run loop of vae-train and ldm-train (and of every
// trainer to come). It owns what every training run has: the flags they share,
// --resume, SIGINT/SIGTERM, the --steps/--epochs/--minutes budgets, the data
// order, the non-finite guard, progress with speed and ETA, the JSON-lines
// log, the loss plot, held-out evaluation and checkpoint cadence and --keep.
// A program supplies its step, evaluation, save (and optional extra periodic
// work) as callbacks over its own state; a model with two optimizers (an
// autoencoder and its discriminator) does both updates inside its step and
// writes both in its save, and reports each loss as a metric.
//
// Data-parallel (dist.h): under mpirun every rank runs the same main(); the
// loop agrees on the flags, data and weights at the start, gives each rank
// its share of every batch, stops every rank together (an interrupt or a
// failure on any rank, the budget of any), and only rank 0 writes the log,
// the plot and the checkpoints and runs the evaluation, extra and measure
// hooks.
//
// The order of use in a trainer's main():
//   trainer_init -> trainer_parse (shared + own flags) -> trainer_check_paths
//   (the outputs against the inputs) -> trainer_resume
//   (reads the checkpoint's settings into the flags) -> set up data and model
//   -> trainer_set_data -> trainer_run -> trainer_free.
#pragma once
#include <stdint.h>

#include "args.h"
#include "checkpoint.h"
#include "paths.h"
#include "rng.h"

// Random streams of a training run. Every draw of step s comes from
// run_stream(seed, STREAM_STEP, s) and the data order of epoch e from
// run_stream(seed, STREAM_EPOCH, e): the state to resume is (seed, step).
enum { STREAM_STEP = 1, STREAM_EPOCH = 2, STREAM_EVAL = 3, STREAM_SAMPLE = 4 };
Rng run_stream(uint64_t seed, uint64_t kind, uint64_t index);

// Named figures of one step or evaluation, in the order they are logged.
// The first of a step's metrics is its loss (plotted, smoothed); the first of
// an evaluation's is the held-out figure (plotted against its own axis).
#define METRICS_MAX 8
typedef struct {
    int n;
    const char *key[METRICS_MAX]; // JSON key, e.g. "loss", "heldout_psnr"
    double v[METRICS_MAX];
    char text[160];               // evaluation only: the line shown on stderr
    const char *axis;             // evaluation only: the plot's axis label for a
                                  // figure in other units than the loss (NULL: same)
} Metrics;
void metrics_add(Metrics *m, const char *key, double v);

// The items of one step on this rank: indices into the training items
// [0, ntrain). On one process with one gradient chunk (the default) that is
// the whole batch: first = 0, total = n, chunks = 1, chunk = n.
//
// A data-parallel program (Trainer.data_parallel) computes its gradient in
// `chunks` chunks of `chunk` items in order (batch_chunk; the last ones of a
// short batch hold fewer items or none), hands each to gradsum_add and sums
// them with gradsum_reduce (dist.h). Every per-item draw of item i must be
// keyed by its place in the step's batch, first + i, not by i: draw for all
// `total` items and use this rank's slice, so that any number of ranks draws
// what one process draws. A step that fails (a read error) still calls
// gradsum_reduce, with failed = 1, so that every rank stops with it.
typedef struct {
    const int *idx;
    int n;
    int first;  // the place of idx[0] in the step's batch (over all ranks)
    int total;  // the items of the step over all ranks
    int chunk;  // items per gradient chunk
    int chunks; // the chunks of this rank
} Batch;

// The items of chunk c of b: b.idx[*lo ..], returns their number (0: an
// empty chunk, which adds a zero gradient).
static inline int batch_chunk(Batch b, int c, int *lo) {
    *lo = c * b.chunk;
    int n = b.n - *lo;
    return n < 0 ? 0 : n < b.chunk ? n : b.chunk;
}

typedef struct {
    const char *name; // program name for messages, e.g. "vae-train"
    const char *kind; // the checkpoint's `kind` attribute
    void *state;
    // One optimizer step (0-based `step`) on `cur`; `next` is the batch of the
    // following step (n = 0 at the end of the run), to read ahead. Adds its
    // figures to m, the loss first; the loop stops the run, without saving,
    // when any is not finite. -1 (message printed): the run stops, unsaved.
    int (*step)(void *state, long step, Batch cur, Batch next, Metrics *m);
    // Held-out evaluation after `step` steps; fills m (and m->text).
    int (*evaluate)(void *state, long step, Metrics *m);
    // Writes the checkpoint (atomically) to `path` with `attrs` (the loop's
    // own: kind, step, shared flags) added to the program's.
    int (*save)(void *state, const char *path, const Attrs *attrs);
    // Optional: extra work every `extra_every` steps and at the end (e.g. a
    // sample grid). A failure is reported and the run goes on.
    int (*extra)(void *state, long step);
    int extra_every;
    // Optional: a measure of the model every `measure_every` steps and at the
    // end (e.g. the FD of samples). Its first figure, `measure_key`, is logged
    // as its own line, drawn on the loss plot's right axis (`measure_axis`)
    // and, with measure_keep_best, keeps the checkpoint of its lowest value so
    // far at "<out minus .h5>.best.h5". A failure is reported and the run goes on.
    int (*measure)(void *state, long step, Metrics *m);
    int measure_every;
    const char *measure_key, *measure_axis;
    int measure_keep_best;
    // Data-parallel programs: a hash of the weights (fnv1a64), which every
    // rank must agree on at the start, at every evaluation and before every
    // checkpoint; a mismatch stops the run.
    uint64_t (*weights_hash)(void *state);
} TrainerHooks;

typedef struct {
    // Shared flags (declared once, in trainer.c). Programs set their defaults
    // before trainer_parse.
    const char *out;
    long steps;
    int epochs;
    double minutes, lr;
    int batch, seed, threads, resume, ckpt_every, eval_every, keep;

    int grad_chunks;           // --grad-chunks, G (data-parallel programs)

    // Set by the program before trainer_parse: its step follows Batch's
    // chunks and sums them with gradsum (dist.h), so it takes --grad-chunks
    // and runs under mpirun on more than one rank.
    int data_parallel;
    // Set by the program before trainer_run: a hash (fnv1a64) of what
    // identifies its data (e.g. the latent cache's attributes), which every
    // rank must agree on.
    uint64_t data_hash;

    // Every flag of the program: its own, then the shared ones.
    Opt opts[64];
    int nopts;
    // Set by trainer_resume / trainer_set_data.
    int resuming;
    long step;                 // steps done (from the checkpoint when resuming)
    int64_t ntrain, nheld, B;  // training items, held-out items, batch
    long steps_per_epoch, total; // total: 0 = only the clock
    int chunk, chunks;         // items per gradient chunk, this rank's chunks
    int *perm;                 // (ntrain) the order of epoch perm_epoch
    int *perm_next;            // (ntrain) the order of epoch perm_next_epoch
    long perm_epoch, perm_next_epoch;
} Trainer;

void trainer_init(Trainer *t);
void trainer_free(Trainer *t);
// Parses the program's own flags `own` followed by the shared ones. Returns
// 0 to go on, 1 after --help, -1 on a bad flag (message printed).
int trainer_parse(Trainer *t, int argc, char **argv, const Opt *own, int nown,
                  const char *usage);
// 1 if flag `name` (own or shared) was on the command line.
int trainer_given(const Trainer *t, const char *name);
// The files a run writes - --out, its log and loss plot - checked against
// the program's input files (check_output_path), and no input named like a
// step-numbered copy that --keep would delete. Called right after
// trainer_parse, before any work. 0 or -1 (message printed).
int trainer_check_paths(const Trainer *t, const PathArg *inputs, int n);
// "<out minus .h5><suffix>" into buf (PATH_MAX bytes): a file written beside
// the checkpoint. -1 with a message when it does not fit.
int trainer_sibling(char *buf, const char *out, const char *suffix);
// With --resume and a checkpoint at --out: reads its attributes (into *a),
// checks its kind, and sets every flag that names an attribute (Opt.attr) to
// the checkpoint's value (validated against the flag's range); a given flag
// that differs is an error. Sets t->resuming and t->step. 0 or -1.
int trainer_resume(Trainer *t, const char *kind, Attrs *a);
// The data: n items of which the last min(n / 10, 512) are held out; the
// batch is clamped to the training items. -1 with a message when too few.
// Also cuts the batch into --grad-chunks chunks of ceil(B / G) items, G / K
// of them on each of the K ranks: -1 with a message when G is not a power of
// two, exceeds the batch or is not a multiple of K (a power of two too).
int trainer_set_data(Trainer *t, int64_t n, const char *what);
// Runs until a budget ends or an interrupt; 0 on success (including an
// interrupt that ended with a checkpoint), 1 on failure.
int trainer_run(Trainer *t, const TrainerHooks *h);
