// test_lpips.c: the LPIPS distance (vae/lpips.h) and the max pool's backward
// (common/pool.h) against the torch goldens of tests/reference/gen_lpips.py.
//  - max pool backward on windows with ties (torch routes to the first
//    maximum), overlapping and padded windows, odd sides; it accumulates;
//  - the narrow network of tests/golden/lpips_net.h5, written by
//    convert_lpips.py from random state_dicts in the published layouts: the
//    per-pair distances, each tap's term and d/d xhat (accumulating, and the
//    forward's state kept for a second backward), at B = 2 of max_batch 3;
//  - VGG16's full widths at 64 x 64, weights regenerated from gen_lpips.py's
//    formula into a file here: distance, terms, gradient; 1 vs 2 threads
//    bit-identical;
//  - bad files: wrong kind, a width attribute missing or out of range, a
//    missing tensor, a wrong shape, a NaN, an extra tensor, too small images.
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "h5attr.h"
#include "lpips.h"
#include "pool.h"
#include "testutil.h"

#define TOL 1e-4 // float32 through 13 convs against a float64 reference
static const char *GF = "lpips.h5";
static const int VGG16[LPIPS_LAYERS] = {64, 128, 256, 512, 512};
static char dir[64];

static float *rd(const char *grp, const char *name, size_t *n) {
    return golden_read(GF, golden_name(grp, name), n);
}

// gen_lpips.py's det_param (det_fill_splitmix) over the file's table.
static void det_params(const ParamTable *t, float *p) {
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *pi = &t->info[i];
        float *x = p + pi->offset;
        det_fill_splitmix(x, pi->size, 1000 + (uint64_t)i);
        int fan_in = pi->ndim == 4 ? pi->shape[1] * pi->shape[2] * pi->shape[3] : 0;
        float bound = fan_in ? (float)sqrt(6.0 / fan_in) : 0.0f;
        for (size_t j = 0; j < pi->size; j++)
            x[j] = strncmp(pi->name, "lin", 3) == 0 ? (x[j] + 1.0f) * 0.5f
                   : fan_in                         ? x[j] * bound
                                                    : x[j] * 0.1f;
    }
}

// gen_lpips.py's images: x, then xhat = x + 0.25 u.
static void det_images(float *x, float *xhat, size_t n, uint64_t seed) {
    det_fill_splitmix(x, n, seed);
    det_fill_splitmix(xhat, n, seed + 1);
    for (size_t i = 0; i < n; i++) xhat[i] = x[i] + 0.25f * xhat[i];
}

// ---- max pool backward

static void test_pool(int i) {
    char grp[32], what[96];
    snprintf(grp, sizeof grp, "pool_%d", i);
    size_t nc, nin, nout;
    char path[64];
    snprintf(path, sizeof path, "%s/cfg", grp);
    int *c = golden_read_int(GF, path, &nc);
    CHECK(nc == 7);
    float *in = rd(grp, "in", &nin), *dout = rd(grp, "dout", &nout);
    float *oref = rd(grp, "out", NULL), *dref = rd(grp, "din", NULL);
    float *out = xmalloc(nout * sizeof(float)), *din = xcalloc(nin, sizeof(float));
    maxpool2d_forward(out, in, c[0], c[1], c[2], c[3], c[4], c[5], c[6]);
    snprintf(what, sizeof what, "%s (%dx%d k%d s%d p%d) forward", grp, c[2], c[3], c[4], c[5],
             c[6]);
    check_close(what, out, oref, nout, 0.0);
    for (int rep = 1; rep <= 2; rep++) {
        maxpool2d_backward(din, dout, in, c[0], c[1], c[2], c[3], c[4], c[5], c[6]);
        float *r = xmalloc(nin * sizeof(float));
        for (size_t j = 0; j < nin; j++) r[j] = rep * dref[j];
        snprintf(what, sizeof what, "%s backward, ties to the first maximum%s", grp,
                 rep == 2 ? " (x2, accumulates)" : "");
        check_close(what, din, r, nin, 1e-6);
        free(r);
    }
    free(c), free(in), free(dout), free(oref), free(dref), free(out), free(din);
}

// ---- the network

// Runs forward, then backward twice with dout, on the images of `grp`'s
// cfg (B, S, seed) and checks them.
static void check_case(Lpips *l, const char *grp, const float *dout) {
    char name[64];
    size_t nc;
    snprintf(name, sizeof name, "%s/cfg", grp);
    int *cfg = golden_read_int(GF, name, &nc);
    CHECK(nc == 3 && cfg[0] <= l->max_batch && cfg[1] == l->size);
    int B = cfg[0];
    uint64_t seed = (uint64_t)cfg[2];
    free(cfg);
    size_t n = (size_t)B * 3 * l->size * l->size, nv, nl, nd;
    float *x = xmalloc(n * sizeof(float)), *xhat = xmalloc(n * sizeof(float));
    det_images(x, xhat, n, seed);
    float *vref = rd(grp, "value", &nv), *lref = rd(grp, "layers", &nl);
    float *dref = rd(grp, "dxhat", &nd);
    CHECK(nv == (size_t)B && nl == (size_t)B * LPIPS_LAYERS && nd == n);
    float out[8];
    char what[96];
    lpips_forward(l, out, x, xhat, B);
    snprintf(what, sizeof what, "%s: distance per pair", grp);
    check_close(what, out, vref, B, TOL);
    snprintf(what, sizeof what, "%s: each tap's term", grp);
    check_close(what, l->layer_out, lref, nl, TOL);
    float *dx = xcalloc(n, sizeof(float)), *r = xmalloc(n * sizeof(float));
    for (int rep = 1; rep <= 2; rep++) {
        lpips_backward(l, dx, dout);
        for (size_t j = 0; j < n; j++) r[j] = rep * dref[j];
        snprintf(what, sizeof what, "%s: d/d xhat%s", grp, rep == 2 ? " (x2, accumulates)" : "");
        check_close(what, dx, r, n, TOL);
    }
    free(x), free(xhat), free(vref), free(lref), free(dref), free(dx), free(r);
}

static void test_small(void) {
    Lpips l;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/lpips_net.h5", GOLDEN_DIR);
    size_t nc;
    int *c = golden_read_int(GF, "small/cfg", &nc);
    CHECK(nc == 3);
    int rc = lpips_load(&l, path, 3, c[1]);
    check_true("the converted narrow network loads", rc == 0);
    if (rc) return;
    check_true("  its widths 8 16 16 24 24",
               l.width[0] == 8 && l.width[1] == 16 && l.width[2] == 16 && l.width[3] == 24 &&
                   l.width[4] == 24);
    float *dout = rd("small", "dout", NULL);
    check_case(&l, "small", dout);
    free(dout), free(c);
    lpips_free(&l);
}

static void run_pair(Lpips *l, float *out, float *dx, const float *x, const float *xhat, int B) {
    float dout[8];
    for (int b = 0; b < B; b++) dout[b] = 1.0f - 0.5f * b;
    lpips_forward(l, out, x, xhat, B);
    memset(dx, 0, (size_t)B * 3 * l->size * l->size * sizeof(float));
    lpips_backward(l, dx, dout);
}

static void test_full(void) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/vgg16.h5", dir);
    lpips_write_test_file(path, VGG16, det_params, NULL);
    Lpips l;
    int rc = lpips_load(&l, path, 1, 64);
    check_true("VGG16-wide network from the formula loads", rc == 0);
    if (rc) return;
    float dout = 1.0f;
    double t0 = now_seconds();
    check_case(&l, "full", &dout);
    printf("     (full width, 64x64, B 1: forward + 2 backwards %.2f s)\n", now_seconds() - t0);

    // 1 vs 2 threads, bit for bit
    size_t n = (size_t)3 * 64 * 64;
    float *x = xmalloc(n * sizeof(float)), *xhat = xmalloc(n * sizeof(float));
    float *d1 = xmalloc(n * sizeof(float)), *d2 = xmalloc(n * sizeof(float));
    det_images(x, xhat, n, 1);
    float o1, o2;
    set_threads(1);
    run_pair(&l, &o1, d1, x, xhat, 1);
    set_threads(2);
    run_pair(&l, &o2, d2, x, xhat, 1);
    check_true("full width: 1 and 2 threads give the same bits (distance, gradient)",
               memcmp(&o1, &o2, sizeof o1) == 0 && memcmp(d1, d2, n * sizeof(float)) == 0);
    free(x), free(xhat), free(d1), free(d2);
    lpips_free(&l);
    unlink(path);
}

// The narrow network on 2 pairs, 1 vs 2 threads (its convs take the im2col
// path as well as Winograd).
static void test_small_threads(void) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/lpips_net.h5", GOLDEN_DIR);
    Lpips l;
    CHECK(lpips_load(&l, path, 2, 48) == 0);
    size_t n = (size_t)2 * 3 * 48 * 48;
    float *x = xmalloc(n * sizeof(float)), *xhat = xmalloc(n * sizeof(float));
    float *d1 = xmalloc(n * sizeof(float)), *d2 = xmalloc(n * sizeof(float));
    det_images(x, xhat, n, 5);
    float o1[2], o2[2];
    set_threads(1);
    run_pair(&l, o1, d1, x, xhat, 2);
    set_threads(2);
    run_pair(&l, o2, d2, x, xhat, 2);
    check_true("narrow, 48x48: 1 and 2 threads give the same bits",
               memcmp(o1, o2, sizeof o1) == 0 && memcmp(d1, d2, n * sizeof(float)) == 0);
    free(x), free(xhat), free(d1), free(d2);
    lpips_free(&l);
}

// ---- bad files (narrow widths: small files)

static const int NARROW[LPIPS_LAYERS] = {8, 16, 16, 24, 24};

static void edit_kind(ParamTable *t, float **p, Attrs *a) {
    (void)t, (void)p;
    CHECK(attrs_set_str(a, "kind", "vae") == 0);
}
static void edit_no_width(ParamTable *t, float **p, Attrs *a) {
    (void)t, (void)p;
    a->n--; // width5 is the last attribute
}
static void edit_width0(ParamTable *t, float **p, Attrs *a) {
    (void)t, (void)p;
    attrs_set_int(a, "width3", 0);
}
static void edit_width_lie(ParamTable *t, float **p, Attrs *a) {
    (void)t, (void)p;
    attrs_set_int(a, "width2", 12);
}
// A table like t without tensor `drop`, with `reshape` given a wider first
// dimension and `extra` added (each NULL: none); values carried by name.
static void rebuild(ParamTable *t, float **p, const char *drop, const char *reshape,
                    const char *extra) {
    ParamTable u;
    params_init(&u);
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *pi = &t->info[i];
        if (drop && strcmp(pi->name, drop) == 0) continue;
        int shape[PARAM_MAX_DIMS];
        memcpy(shape, pi->shape, sizeof shape);
        if (reshape && strcmp(pi->name, reshape) == 0) shape[1]++;
        params_add(&u, pi->name, pi->ndim, shape, 0.0f);
    }
    if (extra) params_add(&u, extra, 1, (int[]){4}, 0.0f);
    float *q = xcalloc(u.total, sizeof(float));
    for (int i = 0; i < u.n; i++) {
        int j = params_find(t, u.info[i].name);
        if (j >= 0 && t->info[j].size <= u.info[i].size)
            memcpy(q + u.info[i].offset, *p + t->info[j].offset,
                   t->info[j].size * sizeof(float));
    }
    params_free(t);
    free(*p);
    *t = u;
    *p = q;
}
static void edit_missing(ParamTable *t, float **p, Attrs *a) {
    (void)a;
    rebuild(t, p, "lin3.model.1.weight", NULL, NULL);
}
static void edit_shape(ParamTable *t, float **p, Attrs *a) {
    (void)a;
    rebuild(t, p, NULL, "features.12.weight", NULL);
}
static void edit_extra(ParamTable *t, float **p, Attrs *a) {
    (void)a;
    rebuild(t, p, NULL, NULL, "features.30.weight");
}
static void edit_nan(ParamTable *t, float **p, Attrs *a) {
    (void)a;
    (*p)[t->info[params_find(t, "features.19.bias")].offset + 3] = NAN;
}

static void expect_bad(const char *what, LpipsEdit edit, int size, const char *needle) {
    char path[PATH_MAX], label[160];
    snprintf(path, sizeof path, "%s/bad.h5", dir);
    lpips_write_test_file(path, NARROW, det_params, edit);
    Lpips l;
    capture_begin();
    int rc = lpips_load(&l, path, 2, size);
    const char *captured = capture_end();
    int ok = rc == -1 && strstr(captured, "error: ") && strstr(captured, path) &&
             (!needle || strstr(captured, needle)) && !strstr(captured, "HDF5-DIAG") &&
             l.params == NULL && l.acts == NULL;
    snprintf(label, sizeof label, "%s -> -1, message names the file%s%s", what,
             needle ? " and " : "", needle ? needle : "");
    check_true(label, ok);
    printf("     %s", captured[0] ? captured : "(no message)\n");
    if (rc == 0) lpips_free(&l);
    unlink(path);
}

static void test_bad_files(void) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/good.h5", dir);
    lpips_write_test_file(path, NARROW, det_params, NULL);
    Lpips l;
    check_true("the unedited narrow file loads", lpips_load(&l, path, 2, 32) == 0);
    lpips_free(&l);
    unlink(path);
    expect_bad("kind \"vae\"", edit_kind, 32, "lpips checkpoint");
    expect_bad("no width5", edit_no_width, 32, "width5");
    expect_bad("width3 = 0", edit_width0, 32, "width3");
    expect_bad("width2 not the tensors' 16", edit_width_lie, 32, "features.5.weight");
    expect_bad("lin3 missing", edit_missing, 32, "lin3.model.1.weight");
    expect_bad("features.12 of the wrong shape", edit_shape, 32, "features.12.weight");
    expect_bad("a NaN in features.19.bias", edit_nan, 32, "features.19.bias");
    // ckpt_read_group counts the tensors rather than naming the extra one
    expect_bad("an extra tensor", edit_extra, 32, "32 tensors");
    expect_bad("8x8 images", NULL, 8, "16x16");
    snprintf(path, sizeof path, "%s/none.h5", dir);
    capture_begin();
    int rc = lpips_load(&l, path, 1, 32);
    const char *captured = capture_end();
    check_true("a missing file -> -1 with a message naming it",
               rc == -1 && strstr(captured, path) != NULL);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/ldm_test_lpips_XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    for (int i = 0; i < 3; i++) test_pool(i);
    test_small();
    test_small_threads();
    test_full();
    test_bad_files();
    rmdir(dir);
    return test_summary("test_lpips");
}
