// stats.c: feature statistics, their files, and FID, KID and IS on them.
//
// Everything is accumulated in double, and no result depends on the thread
// count: OpenBLAS's multithreaded dsyrk and LAPACK's dsyevd on top of it
// give results that differ in the last bits between thread counts, so every
// BLAS call here runs single-threaded on work of a fixed shape (OpenBLAS's
// OpenMP build runs a call made inside a parallel region on one thread), and
// the parallelism is ours: over blocks of the covariance's columns, over KID
// subsets. Sums run in an order fixed by the data alone.
#include "stats.h"

#include <cblas.h>
#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "h5attr.h"
#include "paths.h"
#include "rng.h"

// LAPACK's symmetric eigensolver (divide and conquer) from OpenBLAS. Debian's
// OpenBLAS ships no lapacke.h, so it is declared here with the Fortran
// calling convention: every argument by reference, and gfortran's hidden
// lengths of the two character arguments (size_t since gfortran 8) last.
extern void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a,
                    const int *lda, double *w, double *work, const int *lwork, int *iwork,
                    const int *liwork, int *info, size_t jobz_len, size_t uplo_len);

#define COV_CHUNK 512        // rows per update of the covariance
#define COV_BLOCK 64         // columns of the covariance per (single-threaded) GEMM
#define STATS_DIM_MAX 16384  // sigma of the largest is 2 GiB of doubles
#define STATS_KIND "feature-stats"

// ------------------------------------------------------------ statistics

void featstats_compute(FeatStats *s, const float *feat, int64_t n, int D) {
    CHECK(n >= 2 && D >= 1);
    s->D = D;
    s->n = n;
    s->mu = xcalloc((size_t)D, sizeof(double));
    s->sigma = xcalloc((size_t)D * D, sizeof(double));
    double *mu = s->mu, *sigma = s->sigma;
    for (int64_t i = 0; i < n; i++) {
        const float *row = feat + (size_t)i * D;
        for (int d = 0; d < D; d++) mu[d] += row[d];
    }
    for (int d = 0; d < D; d++) mu[d] /= (double)n;
    // Second pass on centred rows: the one-pass E[xx] - mu mu^T loses the
    // covariance to cancellation when the mean is large against the spread.
    double *x = xmalloc((size_t)COV_CHUNK * D * sizeof(double)); // (COV_CHUNK, D)
    const int nblk = (D + COV_BLOCK - 1) / COV_BLOCK;
    for (int64_t i0 = 0; i0 < n; i0 += COV_CHUNK) {
        int rows = (int)(n - i0 < COV_CHUNK ? n - i0 : COV_CHUNK);
        #pragma omp parallel for schedule(static)
        for (int r = 0; r < rows; r++) {
            const float *row = feat + (size_t)(i0 + r) * D;
            for (int d = 0; d < D; d++) x[(size_t)r * D + d] = row[d] - mu[d];
        }
        // Upper triangle, block column by block column:
        // sigma[0:j1, j0:j1] += x[:, 0:j1]^T x[:, j0:j1].
        #pragma omp parallel for schedule(dynamic)
        for (int jb = 0; jb < nblk; jb++) {
            int j0 = jb * COV_BLOCK, nb = D - j0 < COV_BLOCK ? D - j0 : COV_BLOCK;
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, j0 + nb, nb, rows, 1.0, x, D,
                        x + j0, D, 1.0, sigma + j0, D);
        }
    }
    free(x);
    for (int i = 0; i < D; i++)
        for (int j = i; j < D; j++) {
            double v = sigma[(size_t)i * D + j] / (double)(n - 1);
            sigma[(size_t)i * D + j] = sigma[(size_t)j * D + i] = v;
        }
}

void featstats_free(FeatStats *s) {
    free(s->mu);
    free(s->sigma);
    memset(s, 0, sizeof *s);
}

// ------------------------------------------------------------ files

static hid_t fapl_strong(void) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    CHECK(fapl >= 0);
    CHECK(H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) >= 0);
    return fapl;
}

static int write_array(hid_t f, const char *name, int ndim, const hsize_t *dims,
                       hid_t filetype, hid_t memtype, const void *data) {
    hid_t space = H5Screate_simple(ndim, dims, NULL);
    if (space < 0) return -1;
    int rc = -1;
    hid_t d = H5Dcreate2(f, name, filetype, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (d >= 0) {
        if (H5Dwrite(d, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0) rc = 0;
        if (H5Dclose(d) < 0) rc = -1;
    }
    H5Sclose(space);
    return rc;
}

int featstats_write(const char *path, const FeatStats *s, const float *feat, const FeatMeta *m) {
    h5_quiet();
    char tmp[PATH_MAX];
    if (tmp_begin(tmp, sizeof tmp, path)) return -1;
    hid_t fapl = fapl_strong();
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (f < 0) {
        discard_tmp_file(tmp);
        return errorf("%s: cannot create the statistics file (temporary file %s)", path, tmp);
    }
    Attrs *a = xcalloc(1, sizeof *a); // large: see h5attr.h
    attrs_set_str(a, "kind", STATS_KIND);
    attrs_set_int(a, "n", s->n);
    attrs_set_int(a, "dim", s->D);
    // The meta fields are bounded far below ATTR_STR_MAX: these cannot fail.
    attrs_set_str(a, "net", m->net);
    attrs_set_str(a, "net_hash", m->net_hash);
    attrs_set_str(a, "preprocess", m->preprocess);
    const char *failed = NULL;
    hsize_t d1[1] = {(hsize_t)s->D}, d2[2] = {(hsize_t)s->D, (hsize_t)s->D};
    hsize_t df[2] = {(hsize_t)s->n, (hsize_t)s->D};
    if (attrs_write_h5(f, a) < 0) failed = "root attributes";
    if (!failed && write_array(f, "mu", 1, d1, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, s->mu) < 0)
        failed = "/mu";
    if (!failed &&
        write_array(f, "sigma", 2, d2, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, s->sigma) < 0)
        failed = "/sigma";
    if (!failed && feat &&
        write_array(f, "features", 2, df, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, feat) < 0)
        failed = "/features";
    free(a);
    if (H5Fclose(f) < 0 && !failed) failed = "closing the file";
    if (failed) {
        discard_tmp_file(tmp);
        return errorf("%s: writing the statistics failed at %s (disk full or not writable?)",
                      path, failed);
    }
    return commit_tmp_file(tmp, path);
}

static void format_dims(char *out, size_t cap, int ndim, const hsize_t *dims) {
    size_t len = (size_t)snprintf(out, cap, "(");
    for (int d = 0; d < ndim && len < cap; d++)
        len += (size_t)snprintf(out + len, cap - len, "%s%llu", d ? ", " : "",
                                (unsigned long long)dims[d]);
    if (len < cap) snprintf(out + len, cap - len, ")");
}

// Reads float dataset /name of shape want[0..ndim) as memtype into out.
static int read_array(hid_t f, const char *path, const char *name, int ndim,
                      const hsize_t *want, hid_t memtype, void *out) {
    if (H5Lexists(f, name, H5P_DEFAULT) <= 0)
        return errorf("%s: /%s is missing (not a whole statistics file)", path, name);
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) return errorf("%s: /%s is not a readable dataset", path, name);
    hid_t type = H5Dget_type(d), space = H5Dget_space(d);
    hsize_t dims[H5S_MAX_RANK];
    int got = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    char got_s[96], want_s[96];
    format_dims(want_s, sizeof want_s, ndim, want);
    int rc = -1;
    if (type < 0 || got < 0 || H5Sget_simple_extent_dims(space, dims, NULL) < 0) {
        errorf("%s: /%s is not a readable dataset", path, name);
    } else if (H5Tget_class(type) != H5T_FLOAT) {
        errorf("%s: /%s is not a float dataset", path, name);
    } else {
        int same = got == ndim;
        for (int k = 0; same && k < ndim; k++) same = dims[k] == want[k];
        format_dims(got_s, sizeof got_s, got, dims);
        if (!same)
            errorf("%s: /%s has shape %s, expected %s", path, name, got_s, want_s);
        else if (H5Dread(d, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
            errorf("%s: cannot read /%s (truncated or corrupt file?)", path, name);
        else
            rc = 0;
    }
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
    H5Dclose(d);
    return rc;
}

// Values no covariance holds: non-finite entries, a negative variance, or an
// asymmetry beyond what rounding in another tool's covariance leaves (numpy's
// cov is symmetric only to a few ulps). Symmetrises sigma exactly.
static int check_moments(const char *path, double *mu, double *sigma, int D) {
    for (int i = 0; i < D; i++)
        if (!isfinite(mu[i])) return errorf("%s: /mu holds %g at element %d", path, mu[i], i);
    double scale = 0;
    for (size_t i = 0; i < (size_t)D * D; i++) {
        if (!isfinite(sigma[i]))
            return errorf("%s: /sigma holds %g at element %zu", path, sigma[i], i);
    }
    for (int i = 0; i < D; i++) {
        double v = sigma[(size_t)i * D + i];
        if (v < 0)
            return errorf("%s: /sigma has the negative variance %g at (%d, %d): not a "
                          "covariance", path, v, i, i);
        if (v > scale) scale = v;
    }
    for (int i = 0; i < D; i++)
        for (int j = i + 1; j < D; j++) {
            double *u = &sigma[(size_t)i * D + j], *l = &sigma[(size_t)j * D + i];
            if (fabs(*u - *l) > 1e-9 * scale)
                return errorf("%s: /sigma is not symmetric: %.17g at (%d, %d), %.17g at "
                              "(%d, %d)", path, *u, i, j, *l, j, i);
            *u = *l = 0.5 * (*u + *l);
        }
    return 0;
}

int featstats_read(const char *path, FeatStats *s, float **feat, FeatMeta *m) {
    h5_quiet();
    memset(s, 0, sizeof *s);
    memset(m, 0, sizeof *m);
    if (feat) *feat = NULL;
    const char *why;
    if (regular_file(path, &why))
        return errorf("%s: cannot open the statistics file: %s", path, why);
    hid_t fapl = fapl_strong();
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (f < 0)
        return errorf("%s: not a readable HDF5 file (not HDF5, truncated or corrupt)", path);
    static const char *const keys[] = {"kind", "n", "dim", "net", "net_hash", "preprocess"};
    Attrs *a = xcalloc(1, sizeof *a);
    int rc = attrs_read_h5(f, path, keys, 6, a);
    const Attr *kind = rc ? NULL : attrs_find(a, "kind");
    if (!rc && (!kind || kind->type != ATTR_STR || strcmp(kind->s, STATS_KIND) != 0))
        rc = errorf("%s: not a feature statistics file (kind %s%s%s; `ldm-eval stats` writes "
                    "them)", path, kind && kind->type == ATTR_STR ? "'" : "",
                    kind ? kind->type == ATTR_STR ? kind->s : "not a string" : "missing",
                    kind && kind->type == ATTR_STR ? "'" : "");
    int64_t n = 0;
    int D = 0;
    if (!rc) {
        AttrSpec spec[] = {
            {"n", SPEC_INT64, 2, 1e15, &n, 0},
            {"dim", SPEC_INT, 1, STATS_DIM_MAX, &D, 0},
            {"net", SPEC_STR, 1, sizeof m->net - 1, m->net, 0},
            {"net_hash", SPEC_STR, 16, 16, m->net_hash, 0},
            {"preprocess", SPEC_STR, 0, sizeof m->preprocess - 1, m->preprocess, 0},
        };
        rc = attrs_read_specs(a, path, spec, 5);
    }
    free(a);
    if (rc) {
        H5Fclose(f);
        return -1;
    }
    s->D = D;
    s->n = n;
    s->mu = xmalloc((size_t)D * sizeof(double));
    s->sigma = xmalloc((size_t)D * D * sizeof(double));
    hsize_t d1[1] = {(hsize_t)D}, d2[2] = {(hsize_t)D, (hsize_t)D};
    rc = read_array(f, path, "mu", 1, d1, H5T_NATIVE_DOUBLE, s->mu) ||
         read_array(f, path, "sigma", 2, d2, H5T_NATIVE_DOUBLE, s->sigma) ||
         check_moments(path, s->mu, s->sigma, D);
    if (!rc && feat && H5Lexists(f, "features", H5P_DEFAULT) > 0) {
        size_t bytes;
        double mem = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
        if (mul_size((size_t)n, (size_t)D * sizeof(float), &bytes) || (mem > 0 && bytes > mem)) {
            rc = errorf("%s: /features of %lld x %d floats would not fit in memory", path,
                        (long long)n, D);
        } else {
            hsize_t df[2] = {(hsize_t)n, (hsize_t)D};
            *feat = xmalloc(bytes);
            rc = read_array(f, path, "features", 2, df, H5T_NATIVE_FLOAT, *feat);
            size_t i = rc ? 0 : first_nonfinite(*feat, (size_t)n * D);
            if (!rc && i < (size_t)n * D)
                rc = errorf("%s: /features holds %g at element %zu", path, (*feat)[i], i);
        }
    }
    H5Fclose(f);
    if (rc) {
        featstats_free(s);
        if (feat) {
            free(*feat);
            *feat = NULL;
        }
        return -1;
    }
    return 0;
}

int featmeta_check(const FeatMeta *a, const char *ia, const FeatMeta *b, const char *ib) {
    if (strcmp(a->net, b->net) != 0)
        return errorf("%s was made with the network %s, %s with %s: features of different "
                      "networks do not compare", ia, a->net, ib, b->net);
    if (strcmp(a->net_hash, b->net_hash) != 0)
        return errorf("%s and %s were made with different weights of %s (hash %s and %s): "
                      "their features do not compare", ia, ib, a->net, a->net_hash,
                      b->net_hash);
    if (strcmp(a->preprocess, b->preprocess) != 0)
        return errorf("%s and %s were preprocessed differently ('%s' and '%s'): their "
                      "features do not compare", ia, ib, a->preprocess, b->preprocess);
    return 0;
}

// ------------------------------------------------------------ FID

// Eigenvalues w (n) of the symmetric a (n, n); with vectors, a is replaced by
// the eigenvectors, one per row (LAPACK's columns read row-major).
static void sym_eig(double *w, double *a, int n, int vectors) {
    const char jobz = vectors ? 'V' : 'N', uplo = 'U';
    int lwork = -1, liwork = -1, info = 0, iq = 0;
    double wq = 0;
    dsyevd_(&jobz, &uplo, &n, a, &n, w, &wq, &lwork, &iq, &liwork, &info, 1, 1);
    CHECK(info == 0);
    lwork = (int)wq;
    liwork = iq;
    double *work = xmalloc((size_t)lwork * sizeof(double));
    int *iwork = xmalloc((size_t)liwork * sizeof(int));
    dsyevd_(&jobz, &uplo, &n, a, &n, w, work, &lwork, iwork, &liwork, &info, 1, 1);
    free(work);
    free(iwork);
    // info > 0: no convergence, which LAPACK reports only for input holding
    // NaN or infinity; statistics are checked finite where they are made or read.
    CHECK(info == 0);
}

int frechet_distance(double *fd, const FeatStats *a, const FeatStats *b) {
    if (a->D != b->D)
        return errorf("FID: the statistics have different feature dimensions (%d and %d)",
                      a->D, b->D);
    const int D = a->D;
    if (a->n <= D || b->n <= D)
        warnf("FID: %lld and %lld items for %d-dimensional features: the covariance of n <= "
              "D items is singular; the distance is finite but biased, use more items",
              (long long)a->n, (long long)b->n, D);
    // LAPACK's eigensolver is serial around multithreaded BLAS calls whose
    // last bits follow the thread count: all of it runs on one thread.
    const int threads = omp_get_max_threads();
    set_threads(1);
    size_t DD = (size_t)D * D;
    double *v = xmalloc(DD * sizeof(double)); // (D, D) eigenvectors, then M
    double *r = xmalloc(DD * sizeof(double)); // (D, D) Sa^1/2
    double *t = xmalloc(DD * sizeof(double)); // (D, D) Sa^1/2 Sb
    double *w = xmalloc((size_t)D * sizeof(double)); // (D)
    memcpy(v, a->sigma, DD * sizeof(double));
    sym_eig(w, v, D, 1);
    // Sa^1/2 = V^T diag(sqrt w) V with eigenvectors as rows of V: scale row j
    // by w_j^1/4, then one syrk. Round-off makes tiny negative eigenvalues of
    // a positive semi-definite matrix; they are 0.
    for (int j = 0; j < D; j++) {
        double sc = w[j] > 0 ? sqrt(sqrt(w[j])) : 0.0;
        for (int i = 0; i < D; i++) v[(size_t)j * D + i] *= sc;
    }
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, D, D, 1.0, v, D, 0.0, r, D);
    for (int i = 0; i < D; i++)
        for (int j = i + 1; j < D; j++) r[(size_t)j * D + i] = r[(size_t)i * D + j];
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, D, D, D, 1.0, r, D, b->sigma, D,
                0.0, t, D);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, D, D, D, 1.0, t, D, r, D, 0.0, v,
                D);
    // M = Sa^1/2 Sb Sa^1/2 is symmetric up to round-off; the eigensolver
    // reads its upper half, the mean of both halves is the better estimate.
    for (int i = 0; i < D; i++)
        for (int j = i + 1; j < D; j++)
            v[(size_t)i * D + j] = 0.5 * (v[(size_t)i * D + j] + v[(size_t)j * D + i]);
    sym_eig(w, v, D, 0);
    double tr_sqrt = 0, tr = 0, dmu = 0;
    for (int i = 0; i < D; i++) {
        tr_sqrt += w[i] > 0 ? sqrt(w[i]) : 0.0;
        tr += a->sigma[(size_t)i * D + i] + b->sigma[(size_t)i * D + i];
        double d = a->mu[i] - b->mu[i];
        dmu += d * d;
    }
    *fd = dmu + tr - 2 * tr_sqrt;
    set_threads(threads);
    free(v);
    free(r);
    free(t);
    free(w);
    return 0;
}

// ------------------------------------------------------------ KID

// Mean and standard deviation (numpy's np.std, ddof 0) of v[0..n).
static void mean_std(double *mean, double *std, const double *v, int n) {
    double s = 0, q = 0;
    for (int i = 0; i < n; i++) s += v[i];
    s /= n;
    for (int i = 0; i < n; i++) q += (v[i] - s) * (v[i] - s);
    *mean = s;
    *std = sqrt(q / n);
}

// The first m entries of idx become a uniform draw without replacement from
// [0, n) (a partial Fisher-Yates shuffle of the identity).
static void draw_subset(int *idx, int n, int m, Rng *rng) {
    for (int i = 0; i < n; i++) idx[i] = i;
    for (int i = 0; i < m; i++) {
        int j = i + (int)rng_below(rng, (uint32_t)(n - i));
        int tmp = idx[i];
        idx[i] = idx[j];
        idx[j] = tmp;
    }
}

static void gather_rows(double *out, const float *feat, const int *idx, int m, int D) {
    for (int i = 0; i < m; i++)
        for (int d = 0; d < D; d++) out[(size_t)i * D + d] = feat[(size_t)idx[i] * D + d];
}

// Sum of k(x_i, y_j) = (g_ij / D + 1)^3 over the Gram matrix g (m, m): over
// every pair, or (upper: g holds only its upper triangle, x = y) over i != j.
static double kernel_sum(const double *g, int m, int D, int upper) {
    double s = 0;
    for (int i = 0; i < m; i++)
        for (int j = upper ? i + 1 : 0; j < m; j++) {
            double k = g[(size_t)i * m + j] / D + 1.0;
            s += k * k * k;
        }
    return upper ? 2 * s : s;
}

// Binkowski et al. (2018), "Demystifying MMD GANs", their unbiased MMD^2
// estimator: (sum_{i!=j} k(x_i,x_j) + sum_{i!=j} k(y_i,y_j)) / (m (m-1))
// - 2 sum_{i,j} k(x_i,y_j) / m^2, averaged over subsets. The tool's
// defaults, 100 subsets of 1000, are torch-fidelity's (kid_subsets,
// kid_subset_size) and clean-fid's (num_subsets, max_subset_size); the std
// over subsets is numpy's (ddof 0), as torch-fidelity reports it.
// The subsets are drawn first, in order from the seed; then each thread
// takes whole subsets, with single-threaded BLAS.
int kid_score(double *mean, double *std, const float *fa, int64_t na, const float *fb,
              int64_t nb, int D, int subsets, int subset_size, uint64_t seed) {
    if (subsets < 1 || subset_size < 2)
        return errorf("KID: needs at least 1 subset of at least 2 items (got %d of %d)",
                      subsets, subset_size);
    if (na < 2 || nb < 2)
        return errorf("KID: needs at least 2 items a side (got %lld and %lld)", (long long)na,
                      (long long)nb);
    CHECK(na <= INT_MAX && nb <= INT_MAX && D >= 1);
    int m = subset_size;
    if (na < m) m = (int)na;
    if (nb < m) m = (int)nb;
    Rng rng;
    rng_init(&rng, seed);
    int *perm = xmalloc((size_t)(na > nb ? na : nb) * sizeof(int));
    int *ia = xmalloc((size_t)subsets * m * sizeof(int)); // (subsets, m)
    int *ib = xmalloc((size_t)subsets * m * sizeof(int)); // (subsets, m)
    for (int s = 0; s < subsets; s++) {
        draw_subset(perm, (int)na, m, &rng);
        memcpy(ia + (size_t)s * m, perm, (size_t)m * sizeof(int));
        draw_subset(perm, (int)nb, m, &rng);
        memcpy(ib + (size_t)s * m, perm, (size_t)m * sizeof(int));
    }
    free(perm);
    double *vals = xmalloc((size_t)subsets * sizeof(double)); // (subsets) MMD^2 each
    #pragma omp parallel
    {
        double *x = xmalloc((size_t)m * D * sizeof(double)); // (m, D)
        double *y = xmalloc((size_t)m * D * sizeof(double)); // (m, D)
        double *g = xmalloc((size_t)m * m * sizeof(double)); // (m, m) Gram matrix
        #pragma omp for schedule(dynamic)
        for (int s = 0; s < subsets; s++) {
            gather_rows(x, fa, ia + (size_t)s * m, m, D);
            gather_rows(y, fb, ib + (size_t)s * m, m, D);
            cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, m, D, 1.0, x, D, 0.0, g, m);
            double kxx = kernel_sum(g, m, D, 1);
            cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, m, D, 1.0, y, D, 0.0, g, m);
            double kyy = kernel_sum(g, m, D, 1);
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, m, D, 1.0, x, D, y, D, 0.0,
                        g, m);
            double kxy = kernel_sum(g, m, D, 0);
            vals[s] = (kxx + kyy) / ((double)m * (m - 1)) - 2 * kxy / ((double)m * m);
        }
        free(x);
        free(y);
        free(g);
    }
    mean_std(mean, std, vals, subsets);
    free(vals);
    free(ia);
    free(ib);
    return 0;
}

// ------------------------------------------------------------ IS

// log softmax of one row of logits, in double.
static void log_softmax(double *out, const float *z, int K) {
    double mx = z[0], s = 0;
    for (int k = 1; k < K; k++) mx = z[k] > mx ? z[k] : mx;
    for (int k = 0; k < K; k++) s += exp(z[k] - mx);
    double ls = log(s);
    for (int k = 0; k < K; k++) out[k] = z[k] - mx - ls;
}

// Salimans et al. (2016): exp(mean over x of KL(p(y|x) || p(y))) with p(y)
// the mean of p(y|x) over the split. Split i holds items [i n / splits,
// (i + 1) n / splits), so every item counts (the original code dropped the
// remainder of n / splits); no shuffle, unlike torch-fidelity.
int inception_score(double *mean, double *std, const float *logits, int64_t n, int K,
                    int splits) {
    if (splits < 1 || n < splits)
        return errorf("IS: %lld images cannot make %d splits", (long long)n, splits);
    CHECK(K >= 1);
    double *lp = xmalloc((size_t)K * sizeof(double)); // (K) log p(y|x)
    double *py = xmalloc((size_t)K * sizeof(double)); // (K) p(y) of the split
    double *vals = xmalloc((size_t)splits * sizeof(double)); // (splits) IS each
    for (int s = 0; s < splits; s++) {
        int64_t i0 = s * n / splits, i1 = (s + 1) * n / splits;
        memset(py, 0, (size_t)K * sizeof(double));
        for (int64_t i = i0; i < i1; i++) {
            log_softmax(lp, logits + (size_t)i * K, K);
            for (int k = 0; k < K; k++) py[k] += exp(lp[k]);
        }
        for (int k = 0; k < K; k++) py[k] = log(py[k] / (double)(i1 - i0));
        double kl = 0;
        for (int64_t i = i0; i < i1; i++) {
            log_softmax(lp, logits + (size_t)i * K, K);
            double e = 0;
            for (int k = 0; k < K; k++) {
                double p = exp(lp[k]);
                // p underflowing to 0 contributes 0 (its limit), not 0 * -inf.
                if (p > 0) e += p * (lp[k] - py[k]);
            }
            kl += e;
        }
        vals[s] = exp(kl / (double)(i1 - i0));
    }
    mean_std(mean, std, vals, splits);
    free(vals);
    free(lp);
    free(py);
    return 0;
}
