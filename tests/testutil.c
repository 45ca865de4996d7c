#include "testutil.h"

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "common.h"

int test_failures = 0;

static hid_t open_golden(const char *file) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", GOLDEN_DIR, file);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        fprintf(stderr, "cannot open golden file %s\n", path);
        abort();
    }
    return f;
}

static void *read_any(const char *file, const char *name, size_t *n, hid_t mtype, size_t esz) {
    hid_t f = open_golden(file);
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) {
        fprintf(stderr, "golden %s has no dataset %s\n", file, name);
        abort();
    }
    hid_t sp = H5Dget_space(d);
    hssize_t cnt = H5Sget_simple_extent_npoints(sp);
    CHECK(cnt >= 0);
    void *buf = xmalloc((size_t)cnt * esz + 1);
    CHECK(H5Dread(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    H5Sclose(sp);
    H5Dclose(d);
    H5Fclose(f);
    if (n) *n = (size_t)cnt;
    return buf;
}

float *golden_read(const char *file, const char *name, size_t *n) {
    return read_any(file, name, n, H5T_NATIVE_FLOAT, sizeof(float));
}

int *golden_read_int(const char *file, const char *name, size_t *n) {
    return read_any(file, name, n, H5T_NATIVE_INT, sizeof(int));
}

int golden_has(const char *file, const char *name) {
    hid_t f = open_golden(file);
    htri_t r;
    H5E_BEGIN_TRY { r = H5Lexists(f, name, H5P_DEFAULT); }
    H5E_END_TRY;
    H5Fclose(f);
    return r > 0;
}

int check_close(const char *what, const float *got, const float *ref, size_t n, double tol) {
    double maxdiff = 0, maxref = 0;
    int finite = 1;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) finite = 0;
        double d = fabs((double)got[i] - (double)ref[i]);
        if (d > maxdiff || isnan(d)) maxdiff = d;
        if (fabs(ref[i]) > maxref) maxref = fabs(ref[i]);
    }
    double rel = maxref > 0 ? maxdiff / maxref : maxdiff;
    int ok = finite && n > 0 && rel <= tol;
    printf("%s %-48s rel err %.3g (tol %.0e, n=%zu, max|ref| %.3g)\n",
           ok ? "PASS" : "FAIL", what, rel, tol, n, maxref);
    if (!ok) test_failures++;
    return ok;
}

int check_true(const char *what, int cond) {
    printf("%s %s\n", cond ? "PASS" : "FAIL", what);
    if (!cond) test_failures++;
    return cond;
}

int test_summary(const char *suite) {
    printf("%s: %s (%d failure%s)\n", suite, test_failures ? "FAILED" : "ok",
           test_failures, test_failures == 1 ? "" : "s");
    return test_failures ? 1 : 0;
}
