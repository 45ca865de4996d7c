// dist.h: data-parallel training over MPI ranks (meson -Dmpi=auto). Every
// rank holds the whole model and takes its share of every batch; the
// gradients are summed in an order fixed by the batch alone, so K = 1, 2, 4
// ranks train bit-identically (at one thread per rank: a rank's own sums
// depend on its thread count).
//
// The batch of a step is cut into G chunks of ceil(B / G) items (the run's
// --grad-chunks; the last chunks of a short batch hold fewer items or none),
// and the G chunk gradients are summed over a balanced binary tree: rank r
// computes the subtree of chunks [r G/K, (r+1) G/K) (G and K powers of two, K
// dividing G), the levels above it are summed across ranks in the same
// shape. With one chunk and one rank nothing is cut or copied: the step is
// the single-process step.
//
// Without MPI (not built in, or a program started without mpirun) this is
// the one-rank case and calls no MPI at all. A program started by mpirun (or
// another launcher that sets the PMI/PMIx environment) initializes MPI in
// dist_init and finalizes it at exit.
#pragma once
#include <stddef.h>
#include <stdint.h>

// Initializes MPI when started by a launcher, once; registers the exit
// path (see dist_start). Safe to call more than once.
void dist_init(void);
int dist_rank(void); // this process, 0..size-1 (0 without MPI)
int dist_size(void); // the ranks, K (1 without MPI)

// The start of a run: every rank reports its setup status and its hashes of
// the flags, the data and the weights; all ranks must be well and agree.
// Returns 0, or -1 on every rank with a message naming the ranks that failed
// or disagree. A process that exits before calling it (a failed setup, a bad
// flag, --help) takes part from its exit handler as a failed rank, so no rank
// waits for it.
int dist_start(const char *prog, int failed, uint64_t flags, uint64_t data,
               uint64_t weights);
// The bitwise OR of v over the ranks, on every rank (e.g. "stop after this
// step", "interrupted").
int dist_or(int v);
// The value of rank 0 on every rank.
int dist_bcast_int(int v);
// 0 if `h` is the same on every rank, else -1 on every rank with a message
// (from rank 0) naming the first rank whose value differs from rank 0's and
// `what`.
int dist_same(const char *prog, uint64_t h, const char *what);
// Bytes one rank sends per reduction of n floats (for the run's summary).
double dist_bytes_per_sum(size_t n);

// The fixed-order sum of a step's chunk gradients across ranks. The program
// computes its chunks in order, each gradient into the same buffer `grad`
// (zeroed before each chunk), and hands each to gradsum_add with the chunk's
// figures (its loss and the loss's terms); gradsum_reduce then leaves the sum
// of all ranks' chunks in `grad` on every rank, and the figures' sums.
#define GRADSUM_FIGS 8
typedef struct {
    size_t n;      // floats of a gradient
    int leaves;    // chunks of this rank (a power of two)
    int levels;    // log2(leaves)
    int nfig;      // figures per chunk
    int added;     // chunks added in this step
    float **slot;  // (levels) partial sums of whole subtrees, n floats each
    double (*slot_fig)[GRADSUM_FIGS]; // (levels) their figures
    double fig[GRADSUM_FIGS];         // the figures of this rank's subtree, when complete
    // MPI only, with K ranks:
    float *seg;    // (K, n / K + 1) segment j of every rank's subtree on rank j
    double *peer;  // (K, GRADSUM_FIGS + 1) every rank's figures and failure flag
    int *cnt;      // (4, K) counts and offsets of the segments sent and received
} GradSum;

// leaves: Trainer.chunks; nfig: 1..GRADSUM_FIGS.
void gradsum_init(GradSum *g, size_t n, int leaves, int nfig);
void gradsum_free(GradSum *g);
// The gradient `grad` (n) of the next chunk and its figures fig (nfig), all
// scaled by `weight`: the chunk's share of a figure that is a mean over the
// batch's items (n / Batch.total; 1: as they are). `grad` may be
// overwritten; an empty chunk adds zeros.
void gradsum_add(GradSum *g, float *grad, const double *fig, double weight);
// After this rank's chunks: the sum of every rank's chunks into `grad` and of
// their figures into fig (nfig), on every rank. failed: this rank's step
// failed (its message printed; no chunks need to be added); then -1 on every
// rank, with a message from rank 0 naming the first failed rank. The call is
// collective: a step that fails must still make it.
int gradsum_reduce(GradSum *g, const char *prog, int failed, float *grad, double *fig);
