// dist.c: the MPI side of data-parallel training (see dist.h). Built
// without LDM_MPI it is the one-rank case.
#include "dist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#ifdef LDM_MPI
#include <mpi.h>
#endif

static int g_rank = 0, g_size = 1;

#ifdef LDM_MPI
static int g_mpi;      // MPI initialized by dist_init
static int g_started;  // dist_start has run (or the exit handler stood in for it)

// What each rank reports at the start of a run.
typedef struct {
    int32_t failed, pad;
    uint64_t flags, data, weights;
} StartReport;

// A launcher's environment: Open MPI's mpirun, or any PMI/PMIx launcher
// (MPICH's hydra, Slurm's srun). Started without one, a program calls no
// MPI, so it runs exactly as a build without MPI does.
static int launched(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK") ||
           getenv("PMI_SIZE");
}

static void start_gather(const StartReport *mine, StartReport *all) {
    g_started = 1;
    MPI_Allgather(mine, sizeof *mine, MPI_BYTE, all, sizeof *mine, MPI_BYTE, MPI_COMM_WORLD);
}

// A rank leaving before dist_start (failed setup, bad flag, --help) still
// takes part in it as a failed rank, so that ranks waiting there learn it
// instead of waiting for ever; then MPI ends.
static void dist_exit(void) {
    if (!g_started) {
        StartReport mine = {.failed = 1};
        StartReport *all = xmalloc((size_t)g_size * sizeof *all);
        start_gather(&mine, all);
        free(all);
    }
    MPI_Finalize();
}
#endif

void dist_init(void) {
#ifdef LDM_MPI
    if (g_mpi || !launched()) return;
    int ok = 0;
    MPI_Initialized(&ok);
    if (!ok) MPI_Init(NULL, NULL);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    g_mpi = 1;
    atexit(dist_exit);
#endif
}

int dist_rank(void) { return g_rank; }
int dist_size(void) { return g_size; }

int dist_start(const char *prog, int failed, uint64_t flags, uint64_t data,
               uint64_t weights) {
    if (g_size == 1) return failed ? -1 : 0;
#ifdef LDM_MPI
    StartReport mine = {failed != 0, 0, flags, data, weights};
    StartReport *all = xmalloc((size_t)g_size * sizeof *all);
    start_gather(&mine, all);
    // The first rank that is well speaks: a failed rank said its own message
    // and may not be here.
    int speaker = 0;
    while (speaker < g_size && all[speaker].failed) speaker++;
    int bad = 0;
    for (int r = 0; r < g_size; r++) {
        const char *why = all[r].failed ? "stopped during its setup (its message is above)"
                        : all[0].failed ? NULL
                        : all[r].flags != all[0].flags
                            ? "has other flags than rank 0 (every rank must get the same "
                              "command line and, resuming, the same checkpoint)"
                        : all[r].data != all[0].data
                            ? "reads other data than rank 0 (every rank must read the same "
                              "data: latent cache or images)"
                        : all[r].weights != all[0].weights
                            ? "starts from other weights than rank 0 (every rank must read "
                              "the same checkpoint)"
                            : NULL;
        if (!why) continue;
        if (g_rank == speaker)
            fprintf(stderr, "%s: rank %d of %d %s; every rank stops\n", prog, r, g_size, why);
        bad = 1;
    }
    free(all);
    return bad ? -1 : 0;
#else
    (void)prog, (void)flags, (void)data, (void)weights;
    return -1;
#endif
}

int dist_or(int v) {
#ifdef LDM_MPI
    if (g_size > 1) {
        int out = 0;
        MPI_Allreduce(&v, &out, 1, MPI_INT, MPI_BOR, MPI_COMM_WORLD);
        return out;
    }
#endif
    return v;
}

int dist_bcast_int(int v) {
#ifdef LDM_MPI
    if (g_size > 1) MPI_Bcast(&v, 1, MPI_INT, 0, MPI_COMM_WORLD);
#endif
    return v;
}

int dist_same(const char *prog, uint64_t h, const char *what) {
#ifdef LDM_MPI
    if (g_size > 1) {
        uint64_t *all = xmalloc((size_t)g_size * sizeof *all);
        MPI_Allgather(&h, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, MPI_COMM_WORLD);
        int bad = -1;
        for (int r = 1; r < g_size && bad < 0; r++)
            if (all[r] != all[0]) bad = r;
        free(all);
        if (bad >= 0 && g_rank == 0)
            fprintf(stderr, "%s: the %s of rank %d of %d differ from rank 0's; every rank "
                    "stops\n", prog, what, bad, g_size);
        return bad >= 0 ? -1 : 0;
    }
#endif
    (void)prog, (void)h, (void)what;
    return 0;
}

double dist_bytes_per_sum(size_t n) {
    // An all-to-all of the segments, then an all-gather of the sums: each
    // rank sends K - 1 of its K segments twice.
    return 2.0 * (g_size - 1) / g_size * (double)n * sizeof(float);
}

// ---------------------------------------------------------------- gradient sums

void gradsum_init(GradSum *g, size_t n, int leaves, int nfig) {
    CHECK(leaves >= 1 && (leaves & (leaves - 1)) == 0 && n >= 1);
    CHECK(nfig >= 1 && nfig <= GRADSUM_FIGS);
    memset(g, 0, sizeof *g);
    g->n = n;
    g->leaves = leaves;
    g->nfig = nfig;
    while ((1 << g->levels) < leaves) g->levels++;
    if (g->levels) {
        g->slot = xmalloc((size_t)g->levels * sizeof *g->slot);
        g->slot_fig = xmalloc((size_t)g->levels * sizeof *g->slot_fig);
        for (int l = 0; l < g->levels; l++) g->slot[l] = xmalloc_aligned(n * sizeof(float));
    }
    if (g_size > 1) {
        int K = g_size;
        CHECK(n <= (size_t)INT32_MAX - K); // MPI counts and offsets are int
        size_t stride = n / K + 1;
        g->seg = xmalloc_aligned((size_t)K * stride * sizeof(float));
        g->peer = xmalloc((size_t)K * (GRADSUM_FIGS + 1) * sizeof *g->peer);
        g->cnt = xmalloc(4 * (size_t)K * sizeof *g->cnt);
        int *cnt = g->cnt, *off = cnt + K, *rcnt = cnt + 2 * K, *roff = cnt + 3 * K;
        for (int j = 0; j < K; j++) {
            size_t a = n * (size_t)j / K, b = n * (size_t)(j + 1) / K;
            off[j] = (int)a, cnt[j] = (int)(b - a);
        }
        for (int r = 0; r < K; r++) rcnt[r] = cnt[g_rank], roff[r] = (int)((size_t)r * stride);
    }
}

void gradsum_free(GradSum *g) {
    for (int l = 0; l < g->levels; l++) free(g->slot[l]);
    free(g->slot), free(g->slot_fig), free(g->seg), free(g->peer), free(g->cnt);
    memset(g, 0, sizeof *g);
}

// a += b, elementwise (the same sums at any thread count).
static void add_into(float *restrict a, const float *restrict b, size_t n) {
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) a[i] += b[i];
}

void gradsum_add(GradSum *g, float *grad, const double *fig, double weight) {
    CHECK(g->added < g->leaves);
    size_t n = g->n;
    double f[GRADSUM_FIGS];
    for (int k = 0; k < g->nfig; k++) f[k] = fig[k] * weight;
    if (weight != 1.0) {
        float w = (float)weight;
        #pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) grad[i] *= w;
    }
    // Chunk i closes one subtree per trailing one bit of i: a binary counter
    // whose digit l holds the sum of the last whole subtree of 2^l chunks.
    int i = g->added++, l = 0;
    float *carry = grad;
    for (; (i >> l) & 1; l++) {
        add_into(g->slot[l], carry, n);
        for (int k = 0; k < g->nfig; k++) f[k] = g->slot_fig[l][k] + f[k];
        carry = g->slot[l];
    }
    if (g->added == g->leaves) { // the root of this rank's subtree
        if (carry != grad) memcpy(grad, carry, n * sizeof(float));
        memcpy(g->fig, f, sizeof f);
        return;
    }
    if (carry == grad) {
        memcpy(g->slot[l], grad, n * sizeof(float));
    } else { // carry is slot l - 1, free now: the buffers trade places
        float *tmp = g->slot[l];
        g->slot[l] = carry, g->slot[l - 1] = tmp;
    }
    memcpy(g->slot_fig[l], f, sizeof f);
}

#ifdef LDM_MPI
// The upper levels of the tree, across ranks: x[r] for r in 0..K-1 (each
// `len` values `stride` apart) summed pairwise as the chunks below them.
static void tree_levels_f(float *x, size_t len, size_t stride) {
    for (int s = 1; s < g_size; s *= 2)
        for (int r = 0; r + s < g_size; r += 2 * s)
            add_into(x + (size_t)r * stride, x + (size_t)(r + s) * stride, len);
}
#endif

int gradsum_reduce(GradSum *g, const char *prog, int failed, float *grad, double *fig) {
    CHECK(failed || g->added == g->leaves);
    g->added = 0;
    if (g_size == 1) {
        memcpy(fig, g->fig, (size_t)g->nfig * sizeof *fig);
        return failed ? -1 : 0;
    }
#ifdef LDM_MPI
    // Every rank's figures and failure flag, then the tree's upper levels
    // over the figures as over the gradients.
    int K = g_size, w = GRADSUM_FIGS + 1;
    double mine[GRADSUM_FIGS + 1] = {0}, *all = g->peer;
    if (!failed) memcpy(mine, g->fig, sizeof g->fig);
    mine[GRADSUM_FIGS] = failed != 0;
    MPI_Allgather(mine, w, MPI_DOUBLE, all, w, MPI_DOUBLE, MPI_COMM_WORLD);
    int bad = -1;
    for (int r = 0; r < K && bad < 0; r++)
        if (all[r * w + GRADSUM_FIGS] != 0) bad = r;
    if (bad >= 0) {
        if (g_rank == 0)
            fprintf(stderr, "%s: rank %d of %d failed in this step (its message is above); "
                    "every rank stops\n", prog, bad, K);
        return -1;
    }
    for (int s = 1; s < K; s *= 2)
        for (int r = 0; r + s < K; r += 2 * s)
            for (int k = 0; k < g->nfig; k++) all[r * w + k] += all[(r + s) * w + k];
    memcpy(fig, all, (size_t)g->nfig * sizeof *fig);

    // Rank j sums segment j of every rank's subtree, then every rank gathers
    // all the sums: a reduce-scatter and all-gather in a fixed order.
    int *cnt = g->cnt, *off = cnt + K, *rcnt = cnt + 2 * K, *roff = cnt + 3 * K;
    size_t len = (size_t)cnt[g_rank];
    MPI_Alltoallv(grad, cnt, off, MPI_FLOAT, g->seg, rcnt, roff, MPI_FLOAT, MPI_COMM_WORLD);
    tree_levels_f(g->seg, len, g->n / K + 1);
    MPI_Allgatherv(g->seg, (int)len, MPI_FLOAT, grad, cnt, off, MPI_FLOAT, MPI_COMM_WORLD);
    return 0;
#else
    (void)prog, (void)grad;
    return -1;
#endif
}
