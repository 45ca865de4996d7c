// test_metrics.c: feature statistics and FID/KID/IS against numpy
// (tests/reference/gen_metrics.py -> tests/golden/metrics.h5), the measure's
// anchors, the statistics file round trip and its bad files, and the
// Fashion-MNIST feature network: at random reduced-width weights against the
// PyTorch classifier (fmnist_small.h5), through the preprocessing, and the
// committed metrics/fmnist-cnn.h5 on the real test images (features against
// PyTorch's, predictions, and the FD of the test set's halves, of training
// against test images, and of noise against test images).
#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "featnet.h"
#include "h5attr.h"
#include "imageset.h"
#include "inception.h"
#include "pool.h"
#include "rng.h"
#include "stats.h"
#include "testutil.h"

#define GOLD "metrics.h5"
#define REAL_NET GOLDEN_DIR "/../../metrics/fmnist-cnn.h5"
#define SMALL_NET GOLDEN_DIR "/fmnist_small.h5"

static char dir[64];

static void path_in_dir(char *out, const char *name) {
    snprintf(out, PATH_MAX, "%s/%s", dir, name);
}

// ---- golden doubles and comparisons in double
static double *gold_d(const char *name, size_t *n) { return golden_read_double(GOLD, name, n); }

static double gold_scalar(const char *name) {
    double *v = gold_d(name, NULL), x = v[0];
    free(v);
    return x;
}

static int check_close_d(const char *what, const double *got, const double *ref, size_t n,
                         double tol) {
    double maxdiff = 0, maxref = 0;
    int finite = 1;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) finite = 0;
        double d = fabs(got[i] - ref[i]);
        if (d > maxdiff || isnan(d)) maxdiff = d;
        if (fabs(ref[i]) > maxref) maxref = fabs(ref[i]);
    }
    double rel = maxref > 0 ? maxdiff / maxref : maxdiff;
    int ok = finite && n > 0 && rel <= tol;
    printf("%s %-48s rel err %.3g (tol %.0e, n=%zu, max|ref| %.3g)\n", ok ? "PASS" : "FAIL",
           what, rel, tol, n, maxref);
    if (!ok) test_failures++;
    return ok;
}

static void check_scalar(const char *what, double got, double ref, double tol) {
    printf("     %s: got %.10g, reference %.10g\n", what, got, ref);
    check_close_d(what, &got, &ref, 1, tol);
}

// ---- HDF5 edits, to make bad files from good ones
static hid_t open_rw(const char *path) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    CHECK(f >= 0);
    return f;
}

static void h5_delete(const char *path, const char *name) {
    hid_t f = open_rw(path);
    CHECK(H5Ldelete(f, name, H5P_DEFAULT) >= 0);
    H5Fclose(f);
}

// Replaces (or creates) float64 dataset `name` of shape dims with zeros.
static void h5_put_zeros(const char *path, const char *name, int ndim, const hsize_t *dims) {
    hid_t f = open_rw(path);
    if (H5Lexists(f, name, H5P_DEFAULT) > 0) CHECK(H5Ldelete(f, name, H5P_DEFAULT) >= 0);
    hid_t sp = H5Screate_simple(ndim, dims, NULL);
    hid_t d = H5Dcreate2(f, name, H5T_IEEE_F64LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(d >= 0);
    hssize_t cnt = H5Sget_simple_extent_npoints(sp);
    double *z = xcalloc((size_t)cnt, sizeof(double));
    CHECK(H5Dwrite(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, z) >= 0);
    free(z);
    H5Dclose(d);
    H5Sclose(sp);
    H5Fclose(f);
}

// Sets element i of dataset `name` (any float type) to v.
static void h5_poke(const char *path, const char *name, size_t i, double v) {
    hid_t f = open_rw(path);
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    CHECK(d >= 0);
    hid_t sp = H5Dget_space(d);
    hssize_t cnt = H5Sget_simple_extent_npoints(sp);
    double *x = xmalloc((size_t)cnt * sizeof(double));
    CHECK(H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) >= 0);
    x[i] = v;
    CHECK(H5Dwrite(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) >= 0);
    free(x);
    H5Sclose(sp);
    H5Dclose(d);
    H5Fclose(f);
}

static void h5_set_kind(const char *path, const char *kind) {
    hid_t f = open_rw(path);
    if (H5Aexists(f, "kind") > 0) CHECK(H5Adelete(f, "kind") >= 0);
    if (kind) {
        hid_t t = H5Tcopy(H5T_C_S1);
        H5Tset_size(t, strlen(kind) + 1);
        hid_t sp = H5Screate(H5S_SCALAR);
        hid_t a = H5Acreate2(f, "kind", t, sp, H5P_DEFAULT, H5P_DEFAULT);
        CHECK(a >= 0 && H5Awrite(a, t, kind) >= 0);
        H5Aclose(a);
        H5Sclose(sp);
        H5Tclose(t);
    }
    H5Fclose(f);
}

// ---- statistics and measures against numpy

static void test_stats_numpy(void) {
    size_t na, nb, ns;
    float *a = golden_read(GOLD, "feat/a", &na), *b = golden_read(GOLD, "feat/b", &nb);
    float *s = golden_read(GOLD, "feat/s", &ns);
    const int D = 16;
    na /= D, nb /= D, ns /= D;
    FeatStats sa, sb, ss;
    featstats_compute(&sa, a, (int64_t)na, D);
    featstats_compute(&sb, b, (int64_t)nb, D);
    featstats_compute(&ss, s, (int64_t)ns, D);
    double *mu = gold_d("feat/mu_a", NULL), *sig = gold_d("feat/sigma_a", NULL);
    check_close_d("featstats mu vs np.mean", sa.mu, mu, D, 1e-12);
    check_close_d("featstats sigma vs np.cov", sa.sigma, sig, (size_t)D * D, 1e-12);
    free(mu);
    free(sig);

    double fd;
    check_true("frechet_distance a, b returns 0", frechet_distance(&fd, &sa, &sb) == 0);
    check_scalar("FID(a, b) vs numpy", fd, gold_scalar("feat/fid_ab"), 1e-6);
    capture_begin();
    int rc = frechet_distance(&fd, &ss, &sa);
    const char *captured = capture_end();
    check_true("FID of n < D items: returns 0, finite", rc == 0 && isfinite(fd));
    check_true("FID of n < D items: warns that the covariance is singular",
               strstr(captured, "singular") != NULL);
    printf("     %s", captured);
    check_scalar("FID(s, a), n = 10 < D = 16, vs numpy", fd, gold_scalar("feat/fid_sa"), 1e-6);

    // Anchors: a set against itself is 0 up to round-off (the trace is the
    // scale); a different dimension is refused.
    double tr = 0;
    for (int i = 0; i < D; i++) tr += sa.sigma[i * D + i];
    frechet_distance(&fd, &sa, &sa);
    printf("     FD(a, a) = %.3g, tr(Sa) = %.4g\n", fd, tr);
    check_true("FD of a set against itself ~ 0 (|FD| < 1e-6 tr)", fabs(fd) < 1e-6 * tr);
    FeatStats s15;
    featstats_compute(&s15, a, (int64_t)na, D - 1); // the rows read differently: any (n, 15)
    capture_begin();
    rc = frechet_distance(&fd, &sa, &s15);
    capture_end();
    check_error("FID of D = 16 against D = 15", rc, "16", "15");
    featstats_free(&s15);

    // KID: equal-size whole sets, so any draw of 250 of 250 is the numpy value.
    double km, ks;
    rc = kid_score(&km, &ks, a, 250, b, 250, D, 3, 1000, 1);
    check_true("kid_score returns 0", rc == 0);
    check_scalar("KID(a[:250], b) whole sets vs numpy", km, gold_scalar("feat/kid_ab"), 1e-9);
    check_true("KID of the same whole set drawn 3 times: std ~ 0", ks < 1e-12 * fabs(km));
    double k1, s1, k2, s2, k3, s3;
    kid_score(&k1, &s1, a, (int64_t)na, b, (int64_t)nb, D, 20, 100, 7);
    kid_score(&k2, &s2, a, (int64_t)na, b, (int64_t)nb, D, 20, 100, 7);
    kid_score(&k3, &s3, a, (int64_t)na, b, (int64_t)nb, D, 20, 100, 8);
    printf("     KID 20 subsets of 100: seed 7 %.6g +- %.3g, seed 8 %.6g +- %.3g, whole sets "
           "%.6g\n", k1, s1, k3, s3, km);
    check_true("KID subsets: same seed, same value", k1 == k2 && s1 == s2);
    check_true("KID subsets: another seed, another draw", k1 != k3);
    check_true("KID subsets: unbiased, within 4 standard errors of the whole-set value",
               fabs(k1 - km) < 4 * s1 / sqrt(20.0) && fabs(k3 - km) < 4 * s3 / sqrt(20.0));
    kid_score(&k1, &s1, a, 150, a + 150 * D, 150, D, 20, 100, 7);
    printf("     KID of two halves of a: %.3g +- %.3g\n", k1, s1);
    check_true("KID of two halves of one set ~ 0 (< 5% of KID(a, b))", fabs(k1) < 0.05 * km);
    capture_begin();
    rc = kid_score(&k1, &s1, a, 1, b, (int64_t)nb, D, 20, 100, 7);
    capture_end();
    check_error("KID of 1 item", rc, "KID", NULL);

    size_t nl;
    float *logits = golden_read(GOLD, "is/logits", &nl);
    double im, is;
    rc = inception_score(&im, &is, logits, (int64_t)(nl / 10), 10, 10);
    check_true("inception_score returns 0", rc == 0);
    check_scalar("IS mean, 103 items in 10 splits, vs numpy", im, gold_scalar("is/mean_10"), 1e-9);
    check_scalar("IS std vs numpy", is, gold_scalar("is/std_10"), 1e-9);
    // Anchors: identical predictions give 1; confident predictions spread
    // evenly over K classes give K.
    float *z = xcalloc(100 * 10, sizeof(float));
    inception_score(&im, &is, z, 100, 10, 5);
    check_true("IS of identical predictions = 1", fabs(im - 1) < 1e-12 && is < 1e-12);
    for (int i = 0; i < 100; i++) z[i * 10 + i % 10] = 50;
    inception_score(&im, &is, z, 100, 10, 5);
    printf("     IS of confident, even predictions over 10 classes: %.6f\n", im);
    check_true("IS of confident predictions even over K = 10 classes ~ 10", fabs(im - 10) < 1e-6);
    capture_begin();
    rc = inception_score(&im, &is, z, 5, 10, 10);
    capture_end();
    check_error("IS of 5 items in 10 splits", rc, "IS", NULL);
    free(z);
    free(logits);

    featstats_free(&sa);
    featstats_free(&sb);
    featstats_free(&ss);
    free(a);
    free(b);
    free(s);
}

// ---- statistics files

static void test_stats_files(void) {
    size_t na;
    float *a = golden_read(GOLD, "feat/a", &na);
    const int D = 16;
    na /= D;
    FeatStats s;
    featstats_compute(&s, a, (int64_t)na, D);
    FeatMeta m = {"fmnist-cnn", "0123456789abcdef", "[-1,1]; bilinear to 32x32"};
    char p[PATH_MAX], p2[PATH_MAX], bad[PATH_MAX];
    path_in_dir(p, "stats.h5");
    path_in_dir(p2, "stats_nofeat.h5");
    path_in_dir(bad, "bad.h5");
    check_true("featstats_write with features", featstats_write(p, &s, a, &m) == 0);
    check_true("featstats_write without features", featstats_write(p2, &s, NULL, &m) == 0);
    FeatStats r;
    FeatMeta rm;
    float *rf = NULL;
    int rc = featstats_read(p, &r, &rf, &rm);
    check_true("featstats_read", rc == 0);
    if (rc == 0) {
        check_true("round trip: n, D", r.n == s.n && r.D == s.D);
        check_true("round trip: mu, sigma bitwise",
                   memcmp(r.mu, s.mu, D * sizeof(double)) == 0 &&
                       memcmp(r.sigma, s.sigma, (size_t)D * D * sizeof(double)) == 0);
        check_true("round trip: features bitwise",
                   rf && memcmp(rf, a, na * D * sizeof(float)) == 0);
        check_true("round trip: meta", memcmp(&rm, &m, sizeof m) == 0 ||
                                           (!strcmp(rm.net, m.net) &&
                                            !strcmp(rm.net_hash, m.net_hash) &&
                                            !strcmp(rm.preprocess, m.preprocess)));
        check_true("featmeta_check of equal meta: 0", featmeta_check(&rm, p, &m, "x") == 0);
        featstats_free(&r);
        free(rf);
    }
    rc = featstats_read(p2, &r, &rf, &rm);
    check_true("a file without /features reads, *feat NULL", rc == 0 && rf == NULL);
    if (rc == 0) featstats_free(&r);

    FeatMeta o = m;
    snprintf(o.net, sizeof o.net, "inception-fid");
    capture_begin();
    rc = featmeta_check(&m, "ref.h5", &o, "samples");
    capture_end();
    check_error("featmeta_check: another network", rc, "ref.h5", "inception-fid");
    o = m;
    o.net_hash[3] = 'f';
    capture_begin();
    rc = featmeta_check(&m, "ref.h5", &o, "samples");
    capture_end();
    check_error("featmeta_check: other weights", rc, "ref.h5", o.net_hash);
    o = m;
    snprintf(o.preprocess, sizeof o.preprocess, "[-1,1]; nearest to 32x32");
    capture_begin();
    rc = featmeta_check(&m, "ref.h5", &o, "samples");
    capture_end();
    check_error("featmeta_check: other preprocessing", rc, "ref.h5", "nearest");

    // Bad files, each from the good one.
    hsize_t dd[2] = {D, D + 1};
    struct {
        const char *what, *needle;
    } cases[] = {
        {"stats file without /sigma", "/sigma"},
        {"stats file with /sigma (16, 17)", "(16, 17)"},
        {"stats file with NaN in /mu", "/mu"},
        {"stats file with asymmetric /sigma", "symmetric"},
        {"stats file with negative variance", "negative"},
        {"stats file with NaN in /features", "/features"},
        {"stats file of another kind", "kind"},
        {"stats file with n = 1", "'n'"},
    };
    for (int c = 0; c < 8; c++) {
        copy_file(bad, p);
        switch (c) {
        case 0: h5_delete(bad, "sigma"); break;
        case 1: h5_put_zeros(bad, "sigma", 2, dd); break;
        case 2: h5_poke(bad, "mu", 3, NAN); break;
        case 3: h5_poke(bad, "sigma", 1, 1.0 + s.sigma[1]); break;
        case 4: h5_poke(bad, "sigma", (size_t)2 * D + 2, -1.0); break;
        case 5: h5_poke(bad, "features", 7, INFINITY); break;
        case 6: h5_set_kind(bad, "fmnist-cnn"); break;
        case 7: {
            hid_t f = open_rw(bad);
            CHECK(H5Adelete(f, "n") >= 0);
            hid_t sp = H5Screate(H5S_SCALAR);
            hid_t at = H5Acreate2(f, "n", H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
            int64_t one = 1;
            CHECK(at >= 0 && H5Awrite(at, H5T_NATIVE_INT64, &one) >= 0);
            H5Aclose(at);
            H5Sclose(sp);
            H5Fclose(f);
            break;
        }
        }
        capture_begin();
        rc = featstats_read(bad, &r, &rf, &rm);
        capture_end();
        check_error(cases[c].what, rc, bad, cases[c].needle);
    }
    capture_begin();
    rc = featstats_read(SMALL_NET, &r, NULL, &rm);
    capture_end();
    check_error("a network file read as statistics", rc, "fmnist_small.h5", "kind");
    featstats_free(&s);
    free(a);
}

// ---- the Fashion-MNIST network at random weights

static void check_case(FeatNet *net, const char *name, int C, int H, int W) {
    char key[64], what[96];
    size_t n;
    snprintf(key, sizeof key, "small/x%s", name);
    float *x = golden_read(GOLD, key, &n);
    int B = (int)(n / ((size_t)C * H * W));
    snprintf(key, sizeof key, "small/feat%s", name);
    float *rf = golden_read(GOLD, key, NULL);
    snprintf(key, sizeof key, "small/logits%s", name);
    float *rl = golden_read(GOLD, key, NULL);
    float *f = xmalloc((size_t)B * net->dim * sizeof(float));
    float *l = xmalloc((size_t)B * net->n_logits * sizeof(float));
    featnet_forward(net, f, l, x, B, C, H, W);
    snprintf(what, sizeof what, "small net %dx%dx%d: features", C, H, W);
    check_close(what, f, rf, (size_t)B * net->dim, 1e-4);
    snprintf(what, sizeof what, "small net %dx%dx%d: logits", C, H, W);
    check_close(what, l, rl, (size_t)B * net->n_logits, 1e-4);
    free(x);
    free(rf);
    free(rl);
    free(f);
    free(l);
}

static void test_small_net(void) {
    FeatNet net;
    int rc = featnet_load(&net, SMALL_NET);
    check_true("featnet_load fmnist_small.h5", rc == 0);
    if (rc) return;
    printf("     %s, hash %s, D %d, %d logits, input %dx%dx%d\n     preprocess: %s\n", net.name,
           net.hash, net.dim, net.n_logits, net.in_c, net.in_size, net.in_size, net.preprocess);
    check_true("widths from the tensors: D 24, 10 logits, input 1x32x32",
               net.dim == 24 && net.n_logits == 10 && net.in_c == 1 && net.in_size == 32 &&
                   !strcmp(net.name, "fmnist-cnn") && strlen(net.hash) == 16);
    check_case(&net, "32", 1, 32, 32);
    check_case(&net, "28", 1, 28, 28);
    check_case(&net, "rgb32", 3, 32, 32);
    check_case(&net, "rgb", 3, 24, 40);

    // An image's features do not depend on the batch it is in: 70 images
    // (a full chunk and a part) against each one alone, logits not asked.
    size_t n;
    float *x = golden_read(GOLD, "small/x32", &n);
    const int B = 70, D = net.dim, P = 32 * 32;
    float *xb = xmalloc((size_t)B * P * sizeof(float));
    for (int i = 0; i < B; i++)
        memcpy(xb + (size_t)i * P, x + (size_t)(i % 5) * P, P * sizeof(float));
    float *fb = xmalloc((size_t)B * D * sizeof(float)), *f1 = xmalloc((size_t)D * sizeof(float));
    featnet_forward(&net, fb, NULL, xb, B, 1, 32, 32);
    int same = 1;
    for (int i = 0; i < B; i++) {
        featnet_forward(&net, f1, NULL, xb + (size_t)i * P, 1, 1, 32, 32);
        same &= memcmp(f1, fb + (size_t)i * D, D * sizeof(float)) == 0;
    }
    check_true("features of 70 images in one call = each alone (bitwise)", same);
    // Nor on the thread count.
    float *f2 = xmalloc((size_t)B * D * sizeof(float));
    set_threads(1);
    featnet_forward(&net, f2, NULL, xb, B, 1, 32, 32);
    set_threads(2);
    featnet_forward(&net, fb, NULL, xb, B, 1, 32, 32);
    check_true("features on 1 thread = on 2 threads (bitwise)",
               memcmp(f2, fb, (size_t)B * D * sizeof(float)) == 0);
    free(f2);
    free(x);
    free(xb);
    free(fb);
    free(f1);
    FeatNet again;
    featnet_load(&again, SMALL_NET);
    check_true("hash: the same file, the same hash", !strcmp(again.hash, net.hash));
    featnet_free(&again);

    // Bad weight files, each from the good one.
    char bad[PATH_MAX];
    path_in_dir(bad, "badnet.h5");
    copy_file(bad, SMALL_NET);
    h5_poke(bad, "model/fc2.bias", 3, 0.125);
    rc = featnet_load(&again, bad);
    check_true("hash: one weight changed, another hash", rc == 0 && strcmp(again.hash, net.hash));
    if (rc == 0) featnet_free(&again);
    struct {
        const char *what, *n1;
    } cases[] = {
        {"net without conv2.weight", "conv2.weight"},
        {"net with fc1.weight (24, 100)", "fc1.weight"},
        {"net with conv3.bias (31)", "conv3.bias"},
        {"net with NaN in conv1.bias", "conv1.bias"},
        {"net with an extra tensor", "tensors"},
        {"net of kind vae", "vae"},
        {"net without kind", "kind"},
        {"net without /model", "conv1.weight"},
    };
    for (int c = 0; c < 8; c++) {
        copy_file(bad, SMALL_NET);
        switch (c) {
        case 0: h5_delete(bad, "model/conv2.weight"); break;
        case 1: h5_put_zeros(bad, "model/fc1.weight", 2, (hsize_t[]){24, 100}); break;
        case 2: h5_put_zeros(bad, "model/conv3.bias", 1, (hsize_t[]){31}); break;
        case 3: h5_poke(bad, "model/conv1.bias", 0, NAN); break;
        case 4: h5_put_zeros(bad, "model/fc3.weight", 2, (hsize_t[]){2, 2}); break;
        case 5: h5_set_kind(bad, "vae"); break;
        case 6: h5_set_kind(bad, NULL); break;
        case 7: h5_delete(bad, "model"); break;
        }
        capture_begin();
        rc = featnet_load(&again, bad);
        capture_end();
        check_error(cases[c].what, rc, bad, cases[c].n1);
    }
    featnet_free(&net);
}

// ---- Inception through featnet: the reduced-width golden network of
// test_inception.c, and the preprocessing of a 3-channel network: a grey
// 32 x 32 image resized to 299 x 299 and replicated to RGB, exactly as done
// here by hand.

static void test_inception_net(void) {
    FeatNet net;
    int rc = featnet_load(&net, GOLDEN_DIR "/inception.h5");
    check_true("featnet_load of the golden inception-fid file", rc == 0);
    if (rc) return;
    printf("     %s, hash %s, D %d, %d logits\n     preprocess: %s\n", net.name, net.hash,
           net.dim, net.n_logits, net.preprocess);
    check_true("inception-fid: input 3 x 299 x 299, widths from the network",
               !strcmp(net.name, "inception-fid") && net.in_c == 3 && net.in_size == 299 &&
                   net.dim == inception_dim(net.inc) && net.n_logits == inception_logits(net.inc));
    const int S = 299;
    const size_t SS = (size_t)S * S;
    float x[32 * 32];
    Rng rng;
    rng_init(&rng, 5);
    rng_uniform_fill(&rng, x, 32 * 32, -1, 1);
    float *rs = xmalloc(SS * sizeof(float)), *in = xmalloc(3 * SS * sizeof(float));
    resize_bilinear_forward(rs, x, 1, 1, 32, 32, S, S);
    for (int c = 0; c < 3; c++) memcpy(in + c * SS, rs, SS * sizeof(float));
    float *f1 = xmalloc((size_t)net.dim * sizeof(float));
    float *f2 = xmalloc((size_t)net.dim * sizeof(float));
    float *l1 = xmalloc((size_t)net.n_logits * sizeof(float));
    float *l2 = xmalloc((size_t)net.n_logits * sizeof(float));
    featnet_forward(&net, f1, l1, x, 1, 1, 32, 32);
    inception_forward(net.inc, f2, l2, in, 1);
    check_true("inception-fid: grey 32x32 through featnet = resized, replicated by hand (bitwise)",
               !memcmp(f1, f2, (size_t)net.dim * sizeof(float)) &&
                   !memcmp(l1, l2, (size_t)net.n_logits * sizeof(float)));
    free(rs);
    free(in);
    free(f1);
    free(f2);
    free(l1);
    free(l2);
    featnet_free(&net);
}

// ---- the committed network on real images

static float *to_float(const ImageSet *s, int i0, int n) {
    size_t P = (size_t)s->C * s->S * s->S;
    float *x = xmalloc((size_t)n * P * sizeof(float));
    for (size_t i = 0; i < (size_t)n * P; i++)
        x[i] = s->pixels[(size_t)i0 * P + i] / 127.5f - 1.0f;
    return x;
}

static void fd_of(double *fd, const float *fa, int na, const float *fb, int nb, int D) {
    FeatStats a, b;
    featstats_compute(&a, fa, na, D);
    featstats_compute(&b, fb, nb, D);
    CHECK(frechet_distance(fd, &a, &b) == 0);
    featstats_free(&a);
    featstats_free(&b);
}

static void test_real_net(void) {
    FeatNet net;
    int rc = featnet_load(&net, REAL_NET);
    check_true("featnet_load metrics/fmnist-cnn.h5", rc == 0);
    if (rc) return;
    printf("     %s, hash %s, D %d\n", net.name, net.hash, net.dim);
    check_true("the domain net: D 128, 10 logits", net.dim == 128 && net.n_logits == 10);
    ImageSet te, tr;
    CHECK(imageset_load(&te, "fashion-mnist-test", 32, 1) == 0 && te.N == 10000 && te.labels);
    CHECK(imageset_load(&tr, "fashion-mnist", 32, 1) == 0);
    const int N = te.N, D = net.dim, H = N / 2;
    float *x = to_float(&te, 0, N);
    float *f = xmalloc((size_t)N * D * sizeof(float));
    float *l = xmalloc((size_t)N * 10 * sizeof(float));
    double t0 = now_seconds();
    featnet_forward(&net, f, l, x, N, 1, 32, 32);
    double dt = now_seconds() - t0;
    printf("     features of the 10,000 test images: %.2f s (%.0f images/s)\n", dt, N / dt);

    float *rf = golden_read(GOLD, "real/feat", NULL), *rl = golden_read(GOLD, "real/logits", NULL);
    check_close("real net, 16 test images: features vs PyTorch", f, rf, 16 * 128, 1e-4);
    check_close("real net, 16 test images: logits vs PyTorch", l, rl, 16 * 10, 1e-4);
    int agree = 1, correct = 0;
    for (int i = 0; i < N; i++) {
        int am = 0;
        for (int k = 1; k < 10; k++)
            if (l[i * 10 + k] > l[i * 10 + am]) am = k;
        if (i < 16) {
            int rm = 0;
            for (int k = 1; k < 10; k++)
                if (rl[i * 10 + k] > rl[i * 10 + rm]) rm = k;
            agree &= am == rm;
        }
        correct += am == te.labels[i];
    }
    check_true("real net, 16 test images: the same classes as PyTorch", agree);
    printf("     test accuracy of the C forward: %.4f\n", correct / (double)N);
    check_true("real net classifies the test set (accuracy > 0.85)", correct > 0.85 * N);

    double fd_half, fd_train, fd_noise, fd1;
    set_threads(1);
    fd_of(&fd1, f, H, f + (size_t)H * D, N - H, D);
    set_threads(2);
    fd_of(&fd_half, f, H, f + (size_t)H * D, N - H, D);
    printf("     FD of the test halves on 1 thread %.17g, on 2 threads %.17g\n", fd1, fd_half);
    check_true("FD (statistics, eigendecompositions) on 1 thread = on 2 threads (bitwise)",
               fd1 == fd_half);
    check_scalar("FD test[:5000] vs test[5000:] vs PyTorch features", fd_half,
                 gold_scalar("real/fid_halves"), 1e-4);
    float *xt = to_float(&tr, 0, H), *ft = xmalloc((size_t)H * D * sizeof(float));
    featnet_forward(&net, ft, NULL, xt, H, 1, 32, 32);
    fd_of(&fd_train, ft, H, f + (size_t)H * D, N - H, D);
    // Noise is far from anything; 1000 images show it (5000 give about 670).
    const int NN = 1000;
    Rng rng;
    rng_init(&rng, 0);
    rng_uniform_fill(&rng, xt, (size_t)NN * 32 * 32, -1, 1);
    featnet_forward(&net, ft, NULL, xt, NN, 1, 32, 32);
    fd_of(&fd_noise, ft, NN, f + (size_t)H * D, N - H, D);
    printf("     FD (fmnist-cnn): test[:5000] vs test[5000:] %.4f, train[:5000] vs test[5000:] "
           "%.4f, uniform noise (%d) vs test[5000:] %.4f\n", fd_half, fd_train, NN, fd_noise);
    check_true("anchor: train against test small (< 3 x the test halves' FD)",
               fd_train < 3 * fd_half);
    check_true("anchor: noise against test large (> 100 x the test halves' FD)",
               fd_noise > 100 * fd_half);
    double km, ks, im, is;
    double km1, ks1;
    set_threads(1);
    kid_score(&km1, &ks1, f, H, f + (size_t)H * D, N - H, D, 10, 1000, 0);
    set_threads(2);
    kid_score(&km, &ks, f, H, f + (size_t)H * D, N - H, D, 10, 1000, 0);
    check_true("KID on 1 thread = on 2 threads (bitwise)", km1 == km && ks1 == ks);
    inception_score(&im, &is, l, N, 10, 10);
    printf("     KID test halves (10 subsets of 1000): %.6f +- %.6f; IS of the test set "
           "(10 splits): %.4f +- %.4f\n", km, ks, im, is);
    free(x);
    free(f);
    free(l);
    free(rf);
    free(rl);
    free(xt);
    free(ft);
    imageset_free(&te);
    imageset_free(&tr);
    featnet_free(&net);
}

int main(void) {
    h5_quiet();
    snprintf(dir, sizeof dir, "/tmp/test_metrics.XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    test_stats_numpy();
    test_stats_files();
    test_small_net();
    test_inception_net();
    test_real_net();
    CHECK(remove_tree(dir) == 0);
    return test_summary("metrics");
}
