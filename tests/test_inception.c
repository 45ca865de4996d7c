// test_inception.c: the FID Inception-v3 (metrics/inception.c) and the pool
// kernels (common/pool.c) against the torch goldens of
// tests/reference/gen_inception.py (tests/golden/inception.h5).
//
// The golden network (reduced widths, random weights and BatchNorm
// statistics, written by convert_fid_inception.py) is loaded through
// inception_load from the golden file itself. Its input is regenerated here
// from the seed the file names (rng.h, as the generator's port does). Every
// top-level block's output is checked through the tap (channel means and
// sampled values), then pool3 and the logits. The result must not depend on
// the thread count nor on how images are grouped into chunks. Files with a
// missing, misshapen, non-finite or foreign tensor are written to a
// temporary folder and must be refused with a message naming file and tensor.
//
//   test_inception [FILE]   FILE: a case of the same layout without the pool
//                           groups (gen_inception.py --full DIR writes the
//                           full-width one, outside CI); prints images/s.
#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "h5attr.h"
#include "inception.h"
#include "pool.h"
#include "rng.h"
#include "testutil.h"

#define TOL_BLOCK 1e-5 // every block's output, reference in float64
#define TOL_FEAT 1e-4  // pool3 and logits (the bound)
#define TOL_POOL 5e-7
#define N_SAMPLE 256
#define SAMPLE_STRIDE 2654435761ULL

static const char *const BLOCK_NAMES[] = {
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
    "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
    "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"};
#define N_NAMES (int)(sizeof BLOCK_NAMES / sizeof BLOCK_NAMES[0])

static char dir[64]; // the temporary folder

// Reads float (or, as int, integer) dataset `name` of an open file; aborts
// if it is missing (a broken golden file is a test bug).
static void *rd_any(hid_t f, const char *name, size_t *n, hid_t mtype) {
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) {
        fprintf(stderr, "golden dataset %s is missing\n", name);
        abort();
    }
    hid_t sp = H5Dget_space(d);
    hssize_t cnt = H5Sget_simple_extent_npoints(sp);
    CHECK(cnt > 0);
    void *buf = xmalloc((size_t)cnt * 4);
    CHECK(H5Dread(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    H5Sclose(sp);
    H5Dclose(d);
    if (n) *n = (size_t)cnt;
    return buf;
}
static float *rd(hid_t f, const char *name, size_t *n) {
    return rd_any(f, name, n, H5T_NATIVE_FLOAT);
}

// ------------------------------------------------------------ pool kernels

// Planes wider than pool.c's row buffer (its output strips) against the
// definition, computed here directly (max exact; sums in another order).
static void test_wide_pools(void) {
    const int H = 3, W = 2500, cases[3][3] = {{3, 1, 1}, {3, 2, 0}, {5, 3, 2}};
    float *x = xmalloc((size_t)H * W * sizeof(float));
    Rng r;
    rng_init(&r, 5);
    rng_uniform_fill(&r, x, (size_t)H * W, -1.0f, 1.0f);
    for (int c = 0; c < 3; c++) {
        int k = cases[c][0], s = cases[c][1], p = cases[c][2];
        int OH = (H + 2 * p - k) / s + 1, OW = (W + 2 * p - k) / s + 1;
        size_t n = (size_t)OH * OW;
        float *mx = nan_buf(n), *av = nan_buf(n), *rmx = nan_buf(n), *rav = nan_buf(n);
        maxpool2d_forward(mx, x, 1, 1, H, W, k, s, p);
        avgpool2d_forward(av, x, 1, 1, H, W, k, s, p);
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                double m = -INFINITY, sum = 0;
                int cnt = 0;
                for (int ih = oh * s - p; ih < oh * s - p + k; ih++)
                    for (int iw = ow * s - p; iw < ow * s - p + k; iw++)
                        if (ih >= 0 && ih < H && iw >= 0 && iw < W) {
                            float v = x[(size_t)ih * W + iw];
                            m = v > m ? v : m, sum += v, cnt++;
                        }
                rmx[(size_t)oh * OW + ow] = (float)m;
                rav[(size_t)oh * OW + ow] = (float)(sum / cnt);
            }
        char what[96];
        snprintf(what, sizeof what, "max pool (1,1,%d,%d) k%d s%d p%d, by definition", H, W, k,
                 s, p);
        check_close(what, mx, rmx, n, 0.0);
        snprintf(what, sizeof what, "avg pool (1,1,%d,%d) k%d s%d p%d, by definition", H, W, k,
                 s, p);
        check_close(what, av, rav, n, TOL_POOL);
        free(mx), free(av), free(rmx), free(rav);
    }
    free(x);
}

static void test_pools(hid_t f) {
    static const char *const KINDS[] = {"max", "avg", "resize"};
    for (int kind = 0; kind < 3; kind++)
        for (int i = 0;; i++) {
            char grp[64], name[96];
            snprintf(grp, sizeof grp, "pool/%s_%d", KINDS[kind], i);
            if (H5Lexists(f, grp, H5P_DEFAULT) <= 0) {
                check_true(kind == 0   ? "max pool cases present"
                           : kind == 1 ? "avg pool cases present"
                                       : "resize cases present",
                           i >= 4);
                break;
            }
            size_t ncfg, nin, nout;
            snprintf(name, sizeof name, "%s/cfg", grp);
            int *c = rd_any(f, name, &ncfg, H5T_NATIVE_INT);
            snprintf(name, sizeof name, "%s/in", grp);
            float *in = rd(f, name, &nin);
            snprintf(name, sizeof name, "%s/out", grp);
            float *ref = rd(f, name, &nout);
            float *out = nan_buf(nout); // an element the kernel forgets fails
            int B = c[0], C = c[1], H = c[2], W = c[3];
            if (kind == 0)
                maxpool2d_forward(out, in, B, C, H, W, c[4], c[5], c[6]);
            else if (kind == 1)
                avgpool2d_forward(out, in, B, C, H, W, c[4], c[5], c[6]);
            else
                resize_bilinear_forward(out, in, B, C, H, W, c[4], c[5]);
            char what[160];
            if (kind < 2)
                snprintf(what, sizeof what, "%s (%d,%d,%d,%d) k%d s%d p%d", grp, B, C, H, W, c[4],
                         c[5], c[6]);
            else
                snprintf(what, sizeof what, "%s (%d,%d,%d,%d) -> %dx%d", grp, B, C, H, W, c[4],
                         c[5]);
            check_close(what, out, ref, nout, kind == 0 ? 0.0 : TOL_POOL);
            free(c), free(in), free(ref), free(out);
        }
    test_wide_pools();
    float x[6] = {-1.0f, 0.0f, 2.5f, NAN, -0.25f, 3.0f}, y[6];
    relu_forward(y, x, 6);
    relu_forward(x, x, 6); // in place
    int ok = 1;
    for (int i = 0; i < 6; i++) ok &= memcmp(&x[i], &y[i], sizeof(float)) == 0;
    check_true("relu_forward: 0, 0, 2.5, NaN (propagated), 0, 3; in place the same",
               ok && y[0] == 0 && y[1] == 0 && y[2] == 2.5f && isnan(y[3]) && y[4] == 0 &&
                   y[5] == 3.0f);
}

// ------------------------------------------------------------------ blocks

typedef struct {
    int B;
    float *mean[N_NAMES];   // (B, C)
    float *sample[N_NAMES]; // (N_SAMPLE)
    int C[N_NAMES];
    int calls[N_NAMES];
    int bad_name;
} Taps;

static void on_block(void *ctx, const char *block, const float *out, int b0, int nb, int C,
                     int H, int W) {
    Taps *t = ctx;
    int k = 0;
    while (k < N_NAMES && strcmp(BLOCK_NAMES[k], block) != 0) k++;
    if (k == N_NAMES) {
        t->bad_name = 1;
        return;
    }
    size_t chw = (size_t)C * H * W, hw = (size_t)H * W, n = (size_t)t->B * chw;
    if (!t->mean[k]) {
        t->C[k] = C;
        t->mean[k] = nan_buf((size_t)t->B * C);
        t->sample[k] = nan_buf(N_SAMPLE);
    }
    t->calls[k]++;
    for (int b = 0; b < nb; b++)
        for (int c = 0; c < C; c++) {
            double s = 0;
            for (size_t i = 0; i < hw; i++) s += out[(size_t)b * chw + c * hw + i];
            t->mean[k][(size_t)(b0 + b) * C + c] = (float)(s / (double)hw);
        }
    for (int j = 0; j < N_SAMPLE; j++) {
        size_t idx = (size_t)((uint64_t)j * SAMPLE_STRIDE % n), b = idx / chw;
        if ((int)b >= b0 && (int)b < b0 + nb) t->sample[k][j] = out[idx - (size_t)b0 * chw];
    }
}

// img (B, 3, 299, 299): rng_uniform_fill(seed) in [-1, 1), as gen_inception.py's port.
static float *make_input(uint64_t seed, int B) {
    size_t n = (size_t)B * 3 * INCEPTION_SIZE * INCEPTION_SIZE;
    float *x = xmalloc(n * sizeof(float));
    Rng r;
    rng_init(&r, seed);
    rng_uniform_fill(&r, x, n, -1.0f, 1.0f);
    return x;
}

static void test_network(hid_t f, const char *path, int timed) {
    Inception *net = NULL;
    if (!check_true("inception_load of the converter's file", inception_load(&net, f, path) == 0))
        return;
    int D = inception_dim(net), NL = inception_logits(net);
    size_t n3, nl;
    float *ref3 = rd(f, "out/pool3", &n3), *refl = rd(f, "out/logits", &nl);
    int B = (int)(n3 / (size_t)D);
    check_true("feature and logit widths follow the file",
               n3 == (size_t)B * D && nl == (size_t)B * NL && B >= 1);

    hid_t g = H5Gopen2(f, "input", H5P_DEFAULT);
    Attrs *a = xcalloc(1, sizeof *a);
    int64_t seed = -1, batch = -1;
    CHECK(g >= 0 && attrs_read_h5(g, path, NULL, 0, a) == 0);
    CHECK(attrs_get_int(a, path, "seed", &seed) == 0);
    CHECK(attrs_get_int(a, path, "batch", &batch) == 0);
    H5Gclose(g);
    free(a);
    CHECK(batch == B);
    float *img = make_input((uint64_t)seed, B);
    size_t nh;
    float *head = rd(f, "input/head", &nh);
    check_close("input regenerated from the seed (rng.h = the port)", img, head, nh, 0.0);
    free(head);

    Taps taps = {.B = B};
    inception_set_tap(net, on_block, &taps);
    float *feat = nan_buf((size_t)B * D), *logits = nan_buf((size_t)B * NL);
    inception_forward(net, feat, logits, img, B);
    inception_set_tap(net, NULL, NULL);
    check_true("tap: every block once per chunk, names as the mirror's", !taps.bad_name);
    for (int k = 0; k < N_NAMES; k++) {
        char name[96], what[96];
        if (!taps.mean[k]) {
            snprintf(what, sizeof what, "%s: block output seen", BLOCK_NAMES[k]);
            check_true(what, 0);
            continue;
        }
        size_t nm, ns;
        snprintf(name, sizeof name, "out/%s/mean", BLOCK_NAMES[k]);
        float *rm = rd(f, name, &nm);
        snprintf(name, sizeof name, "out/%s/sample", BLOCK_NAMES[k]);
        float *rs = rd(f, name, &ns);
        CHECK(ns == N_SAMPLE);
        snprintf(what, sizeof what, "%s channel means", BLOCK_NAMES[k]);
        // another channel count than the mirror's: n = 0, which fails
        check_close(what, taps.mean[k], rm, nm == (size_t)B * taps.C[k] ? nm : 0, TOL_BLOCK);
        snprintf(what, sizeof what, "%s sampled values", BLOCK_NAMES[k]);
        check_close(what, taps.sample[k], rs, ns, TOL_BLOCK);
        free(rm), free(rs), free(taps.mean[k]), free(taps.sample[k]);
    }
    check_close("pool3 (FID features), end to end", feat, ref3, n3, TOL_FEAT);
    check_close("logits, end to end", logits, refl, nl, TOL_FEAT);

    // Thread count: 1 thread against the default, bit for bit.
    int threads = omp_get_max_threads();
    float *f1 = nan_buf((size_t)B * D), *l1 = nan_buf((size_t)B * NL);
    set_threads(1);
    inception_forward(net, f1, l1, img, B);
    set_threads(threads);
    char what[128];
    snprintf(what, sizeof what, "1 thread and %d threads: features and logits bit-identical",
             threads);
    check_true(what, same_bits(f1, feat, (size_t)B * D) && same_bits(l1, logits, (size_t)B * NL));

    // Chunks: 10 images (a full chunk and a short one) alternating the B
    // originals must give each one's result bit for bit, and so must a
    // batch of 1. Timed: 32 images, after a first call (page faults).
    {
        int R = timed ? 32 : 10;
        size_t isz = (size_t)3 * INCEPTION_SIZE * INCEPTION_SIZE;
        float *big = xmalloc((size_t)R * isz * sizeof(float));
        for (int r = 0; r < R; r++)
            memcpy(big + r * isz, img + (size_t)(r % B) * isz, isz * sizeof(float));
        float *fr = nan_buf((size_t)R * D), *lr = nan_buf((size_t)R * NL);
        double t0 = now_seconds();
        inception_forward(net, fr, lr, big, R);
        double dt = now_seconds() - t0;
        if (timed)
            printf("forward: %d images in %.2f s, %.2f images/s at %d threads\n", R, dt, R / dt,
                   omp_get_max_threads());
        int same = 1;
        for (int r = 0; r < R; r++)
            same &= same_bits(fr + (size_t)r * D, feat + (size_t)(r % B) * D, D) &&
                    same_bits(lr + (size_t)r * NL, logits + (size_t)(r % B) * NL, NL);
        check_true(timed ? "a batch of 32: each image as in a batch of 2"
                         : "a batch of 10: each image as in a batch of 2",
                   same);
        inception_forward(net, fr, lr, img + isz, 1);
        check_true("a batch of 1: the second image as in a batch of 2",
                   same_bits(fr, feat + D, D) && same_bits(lr, logits + NL, NL));
        free(big), free(fr), free(lr);
    }
    free(f1), free(l1), free(feat), free(logits), free(img), free(ref3), free(refl);
    inception_free(net);
}

// --------------------------------------------------------------- bad input

static const char *captured = "";

// inception_load of `path` with stderr captured into `captured`.
static int load_captured(const char *path) {
    capture_begin();
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    CHECK(f >= 0);
    Inception *net = (Inception *)&net; // must come back NULL on failure
    int rc = inception_load(&net, f, path);
    H5Fclose(f);
    captured = capture_end();
    if (rc == 0) inception_free(net);
    else if (net != NULL) rc = -2; // a failed load must not hand out a network
    return rc;
}

// Replaces (or adds) /model/<name> with a float32 tensor of shape dims,
// values data (NULL: 0.5 everywhere).
static void put_tensor(hid_t model, const char *name, int ndim, const hsize_t *dims,
                       const float *data) {
    if (H5Lexists(model, name, H5P_DEFAULT) > 0) CHECK(H5Ldelete(model, name, H5P_DEFAULT) >= 0);
    size_t n = 1;
    for (int k = 0; k < ndim; k++) n *= dims[k];
    float *v = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) v[i] = data ? data[i] : 0.5f;
    hid_t sp = H5Screate_simple(ndim, dims, NULL);
    hid_t d = H5Dcreate2(model, name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(d >= 0 && H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0);
    H5Dclose(d);
    H5Sclose(sp);
    free(v);
}

// Shape of /model/<name> into dims; its values into *data when non-NULL.
static int tensor_dims(hid_t model, const char *name, hsize_t *dims, float **data) {
    hid_t d = H5Dopen2(model, name, H5P_DEFAULT);
    CHECK(d >= 0);
    hid_t sp = H5Dget_space(d);
    int nd = H5Sget_simple_extent_dims(sp, dims, NULL);
    if (data) *data = rd(model, name, NULL);
    H5Sclose(sp);
    H5Dclose(d);
    return nd;
}

typedef enum {
    E_MISSING, E_KERNEL, E_CIN, E_BN_LEN, E_FC_IN, E_NAN, E_NEG_VAR, E_STRANGER, E_INT,
    E_NO_MODEL, E_NBT_OK
} Edit;

// A copy of the golden /model at path, with one edit applied to tensor `t`.
static void make_variant(hid_t golden, const char *path, Edit e, const char *t) {
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(f >= 0);
    if (e == E_NO_MODEL) {
        CHECK(H5Ocopy(golden, "model", f, "weights", H5P_DEFAULT, H5P_DEFAULT) >= 0);
        H5Fclose(f);
        return;
    }
    CHECK(H5Ocopy(golden, "model", f, "model", H5P_DEFAULT, H5P_DEFAULT) >= 0);
    hid_t m = H5Gopen2(f, "model", H5P_DEFAULT);
    hsize_t dims[8];
    float *v = NULL;
    int nd = e == E_STRANGER || e == E_NBT_OK // new tensors
                 ? 0
                 : tensor_dims(m, t, dims, e == E_NAN || e == E_NEG_VAR ? &v : NULL);
    switch (e) {
    case E_MISSING:
        CHECK(H5Ldelete(m, t, H5P_DEFAULT) >= 0);
        break;
    case E_KERNEL: { // (c, c, 1, 7) -> (c, c, 7, 1)
        hsize_t k = dims[2];
        dims[2] = dims[3], dims[3] = k;
        put_tensor(m, t, nd, dims, NULL);
        break;
    }
    case E_CIN:
    case E_FC_IN:
        dims[1] += 1;
        put_tensor(m, t, nd, dims, NULL);
        break;
    case E_BN_LEN:
        dims[0] += 1;
        put_tensor(m, t, nd, dims, NULL);
        break;
    case E_NAN:
        v[dims[0] / 2] = NAN;
        put_tensor(m, t, nd, dims, v);
        break;
    case E_NEG_VAR:
        v[0] = -0.25f;
        put_tensor(m, t, nd, dims, v);
        break;
    case E_STRANGER:
    case E_NBT_OK: {
        hsize_t one = 1;
        put_tensor(m, t, 1, &one, NULL);
        break;
    }
    case E_INT: {
        CHECK(H5Ldelete(m, t, H5P_DEFAULT) >= 0);
        hid_t sp = H5Screate_simple(nd, dims, NULL);
        hid_t d = H5Dcreate2(m, t, H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        CHECK(d >= 0);
        H5Dclose(d);
        H5Sclose(sp);
        break;
    }
    default:
        break;
    }
    free(v);
    H5Gclose(m);
    H5Fclose(f);
}

static void test_bad_files(hid_t golden) {
    static const struct {
        Edit e;
        const char *tensor, *what, *needle;
    } CASES[] = {
        {E_MISSING, "Mixed_6c.branch7x7_2.conv.weight", "a missing conv weight", "missing"},
        {E_MISSING, "Mixed_7b.branch_pool.bn.running_var", "a missing BatchNorm variance",
         "missing"},
        {E_MISSING, "fc.bias", "a missing fc bias", "missing"},
        {E_KERNEL, "Mixed_6c.branch7x7_2.conv.weight", "a 7x1 kernel where 1x7 belongs", "shape"},
        {E_CIN, "Mixed_5b.branch1x1.conv.weight", "a conv of another input width", "shape"},
        {E_BN_LEN, "Mixed_7a.branch3x3_2.bn.weight", "a BatchNorm of another width", "shape"},
        {E_FC_IN, "fc.weight", "an fc of another input width", "shape"},
        {E_NAN, "Conv2d_4a_3x3.conv.weight", "a NaN weight", "nan"},
        {E_NEG_VAR, "Mixed_6e.branch_pool.bn.running_var", "a negative variance", "negative"},
        {E_STRANGER, "AuxLogits.fc.weight", "a tensor the network does not have", "not a tensor"},
        {E_INT, "Conv2d_1a_3x3.bn.bias", "an integer tensor", "not a float"},
        {E_NO_MODEL, "", "no /model group", "/model"},
    };
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        char path[PATH_MAX], label[256];
        snprintf(path, sizeof path, "%s/bad%zu.h5", dir, i);
        make_variant(golden, path, CASES[i].e, CASES[i].tensor);
        int rc = load_captured(path);
        int ok = rc == -1 && strstr(captured, "error: ") && strstr(captured, path) &&
                 strstr(captured, CASES[i].tensor) && strstr(captured, CASES[i].needle) &&
                 !strstr(captured, "HDF5-DIAG");
        snprintf(label, sizeof label, "%s -> -1, message names file and tensor", CASES[i].what);
        check_true(label, ok);
        printf("     %s", captured[0] ? captured : "(no message)\n");
        unlink(path);
    }
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/nbt.h5", dir);
    make_variant(golden, path, E_NBT_OK, "Conv2d_1a_3x3.bn.num_batches_tracked");
    check_true("a num_batches_tracked counter beside the tensors is ignored",
               load_captured(path) == 0 && captured[0] == '\0');
    unlink(path);
}

int main(int argc, char **argv) {
    h5_quiet();
    char golden[PATH_MAX];
    const char *path = golden;
    if (argc > 1)
        path = argv[1];
    else
        snprintf(golden, sizeof golden, "%s/inception.h5", GOLDEN_DIR);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        fprintf(stderr, "cannot open %s\n", path);
        return 2;
    }
    test_network(f, path, argc > 1);
    if (argc == 1) {
        test_pools(f);
        snprintf(dir, sizeof dir, "/tmp/ldm_test_inception_XXXXXX");
        CHECK(mkdtemp(dir) != NULL);
        test_bad_files(f);
        rmdir(dir);
    }
    H5Fclose(f);
    return test_summary("inception");
}
