// test_layers.c: every kernel of common/layers.h against the torch goldens of
// tests/reference/gen_layers.py (tests/golden/layers.h5).
// Each backward runs twice into the same zeroed buffers: after the first call
// the gradients must equal the reference, after the second twice the
// reference (backward accumulates). Forward outputs start as NaN so an element
// the kernel forgets to write fails the check. Finite differences of the C
// forward cross-check the conv2d and GroupNorm goldens, and a few kernels are
// run at 1 and 2 threads to check the results are bit-identical.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "layers.h"
#include "winograd.h"
#include "testutil.h"

#define TOL 1e-5
#define FD_TOL 1e-3
static const char *GF = "layers.h5";

static float *rd(const char *grp, const char *name, size_t *n) {
    return golden_read(GF, golden_name(grp, name), n);
}

static void check_fwd(const char *grp, const char *what, const float *got, const float *ref,
                      size_t n) {
    check_scaled(grp, what, got, ref, n, 1.0f, TOL);
}

static uint64_t lcg_state = 0x9e3779b97f4a7c15ULL;
static size_t rand_index(size_t n) {
    lcg_state = lcg_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (size_t)(lcg_state >> 33) % n;
}

// ---------------------------------------------------------------------------

typedef struct {
    int B, C, H, W, OC, k, s, p;
} ConvDims;

static double conv2d_loss(const ConvDims *d, float *out, const float *in, const float *w,
                          const float *b, const float *dout, size_t nout, float *scratch) {
    conv2d_forward(out, in, w, b, d->B, d->C, d->H, d->W, d->OC, d->k, d->s, d->p, scratch);
    return dot_d(out, dout, nout);
}

// Central differences of L = sum(out * dout) at a few random elements of x,
// compared with the golden gradient at those elements.
#define FD_N 8
static void conv2d_fd(const char *grp, const char *what, const ConvDims *d, float *x, size_t nx,
                      const float *gref, float *out, float *in, float *w, const float *b,
                      const float *dout, size_t nout, float *scratch) {
    float fd[FD_N], ref[FD_N];
    const float h = 0.05f;
    for (int t = 0; t < FD_N; t++) {
        size_t i = rand_index(nx);
        float x0 = x[i];
        x[i] = x0 + h;
        double lp = conv2d_loss(d, out, in, w, b, dout, nout, scratch);
        x[i] = x0 - h;
        double lm = conv2d_loss(d, out, in, w, b, dout, nout, scratch);
        x[i] = x0;
        fd[t] = (float)((lp - lm) / (2.0 * h));
        ref[t] = gref[i];
    }
    char name[128];
    snprintf(name, sizeof name, "%s %s finite differences vs golden", grp, what);
    check_close(name, fd, ref, FD_N, FD_TOL);
}

static void test_conv2d(int ci) {
    char grp[32];
    snprintf(grp, sizeof grp, "conv2d_%d", ci);
    int *c = golden_read_cfg(GF, grp, 9);
    ConvDims d = {c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]};
    int hb = c[8];
    free(c);
    size_t nin, nw, nout, nb = (size_t)d.OC;
    float *in = rd(grp, "in", &nin), *w = rd(grp, "w", &nw), *dout = rd(grp, "dout", &nout);
    float *oref = rd(grp, "out", NULL), *dinr = rd(grp, "din", NULL), *dwr = rd(grp, "dw", NULL);
    float *b = hb ? rd(grp, "b", NULL) : NULL, *dbr = hb ? rd(grp, "db", NULL) : NULL;
    size_t ns = conv2d_scratch_floats(d.B, d.C, d.H, d.W, d.OC, d.k, d.s, d.p);
    float *scratch = xmalloc(ns * sizeof(float) + 1);
    float *out = nan_buf(nout);
    conv2d_forward(out, in, w, b, d.B, d.C, d.H, d.W, d.OC, d.k, d.s, d.p, scratch);
    check_fwd(grp, "out", out, oref, nout);

    float *din = zero_buf(nin), *dw = zero_buf(nw), *db = zero_buf(nb);
    for (int rep = 1; rep <= 2; rep++) {
        conv2d_backward(din, dw, hb ? db : NULL, dout, in, w, d.B, d.C, d.H, d.W, d.OC, d.k,
                        d.s, d.p, scratch);
        check_scaled(grp, "din", din, dinr, nin, (float)rep, TOL);
        check_scaled(grp, "dw", dw, dwr, nw, (float)rep, TOL);
        if (hb) check_scaled(grp, "db", db, dbr, nb, (float)rep, TOL);
    }
    // without an input gradient (first layer)
    memset(dw, 0, nw * sizeof(float));
    memset(db, 0, nb * sizeof(float));
    conv2d_backward(NULL, dw, hb ? db : NULL, dout, in, w, d.B, d.C, d.H, d.W, d.OC, d.k, d.s,
                    d.p, scratch);
    check_scaled(grp, "dw (din NULL)", dw, dwr, nw, 1.0f, TOL);
    if (hb) check_scaled(grp, "db (din NULL)", db, dbr, nb, 1.0f, TOL);
    // the '=' form overwrites whatever din held
    for (size_t i = 0; i < nin; i++) din[i] = NAN;
    conv2d_backward_set(din, dw, NULL, dout, in, w, d.B, d.C, d.H, d.W, d.OC, d.k, d.s, d.p,
                        scratch);
    check_scaled(grp, "din (set)", din, dinr, nin, 1.0f, TOL);

    if (ci < 2 || ci == 3 || ci == 7) {
        conv2d_fd(grp, "din", &d, in, nin, dinr, out, in, w, b, dout, nout, scratch);
        conv2d_fd(grp, "dw", &d, w, nw, dwr, out, in, w, b, dout, nout, scratch);
    }
    free(in), free(w), free(dout), free(oref), free(dinr), free(dwr), free(b), free(dbr);
    free(scratch), free(out), free(din), free(dw), free(db);
}

static void test_convt2d(int ci) {
    char grp[32];
    snprintf(grp, sizeof grp, "convt2d_%d", ci);
    int *c = golden_read_cfg(GF, grp, 8);
    int B = c[0], C = c[1], H = c[2], W = c[3], OC = c[4], k = c[5], s = c[6], p = c[7];
    free(c);
    size_t nin, nw, nout, nb;
    float *in = rd(grp, "in", &nin), *w = rd(grp, "w", &nw), *b = rd(grp, "b", &nb);
    float *dout = rd(grp, "dout", &nout), *oref = rd(grp, "out", NULL);
    float *dinr = rd(grp, "din", NULL), *dwr = rd(grp, "dw", NULL), *dbr = rd(grp, "db", NULL);
    CHECK(nout == (size_t)B * OC * ((H - 1) * s - 2 * p + k) * ((W - 1) * s - 2 * p + k));
    float *scratch =
        xmalloc(conv_transpose2d_scratch_floats(B, C, H, W, OC, k, s, p) * sizeof(float) + 1);
    float *out = nan_buf(nout);
    conv_transpose2d_forward(out, in, w, b, B, C, H, W, OC, k, s, p, scratch);
    check_fwd(grp, "out", out, oref, nout);
    float *din = zero_buf(nin), *dw = zero_buf(nw), *db = zero_buf(nb);
    for (int rep = 1; rep <= 2; rep++) {
        conv_transpose2d_backward(din, dw, db, dout, in, w, B, C, H, W, OC, k, s, p, scratch);
        check_scaled(grp, "din", din, dinr, nin, (float)rep, TOL);
        check_scaled(grp, "dw", dw, dwr, nw, (float)rep, TOL);
        check_scaled(grp, "db", db, dbr, nb, (float)rep, TOL);
    }
    memset(dw, 0, nw * sizeof(float));
    memset(db, 0, nb * sizeof(float));
    conv_transpose2d_backward(NULL, dw, db, dout, in, w, B, C, H, W, OC, k, s, p, scratch);
    check_scaled(grp, "dw (din NULL)", dw, dwr, nw, 1.0f, TOL);
    check_scaled(grp, "db (din NULL)", db, dbr, nb, 1.0f, TOL);
    for (size_t i = 0; i < nin; i++) din[i] = NAN;
    conv_transpose2d_backward_set(din, dw, NULL, dout, in, w, B, C, H, W, OC, k, s, p, scratch);
    check_scaled(grp, "din (set)", din, dinr, nin, 1.0f, TOL);
    free(in), free(w), free(b), free(dout), free(oref), free(dinr), free(dwr), free(dbr);
    free(scratch), free(out), free(din), free(dw), free(db);
}

static void test_linear(void) {
    const char *grp = "linear";
    int *c = golden_read_cfg(GF, grp, 3);
    int N = c[0], IN = c[1], OUT = c[2];
    free(c);
    size_t nin, nw, nb, nout;
    float *in = rd(grp, "in", &nin), *w = rd(grp, "w", &nw), *b = rd(grp, "b", &nb);
    float *dout = rd(grp, "dout", &nout), *oref = rd(grp, "out", NULL);
    float *dinr = rd(grp, "din", NULL), *dwr = rd(grp, "dw", NULL), *dbr = rd(grp, "db", NULL);
    float *out = nan_buf(nout);
    linear_forward(out, in, w, b, N, IN, OUT);
    check_fwd(grp, "out", out, oref, nout);
    float *din = zero_buf(nin), *dw = zero_buf(nw), *db = zero_buf(nb);
    for (int rep = 1; rep <= 2; rep++) {
        linear_backward(din, dw, db, dout, in, w, N, IN, OUT);
        check_scaled(grp, "din", din, dinr, nin, (float)rep, TOL);
        check_scaled(grp, "dw", dw, dwr, nw, (float)rep, TOL);
        check_scaled(grp, "db", db, dbr, nb, (float)rep, TOL);
    }
    free(in), free(w), free(b), free(dout), free(oref), free(dinr), free(dwr), free(dbr);
    free(out), free(din), free(dw), free(db);
}

static void test_silu(void) {
    const char *grp = "silu";
    size_t n;
    float *in = rd(grp, "in", &n), *dout = rd(grp, "dout", NULL);
    float *oref = rd(grp, "out", NULL), *dinr = rd(grp, "din", NULL);
    float *out = nan_buf(n), *din = zero_buf(n);
    silu_forward(out, in, n);
    check_fwd(grp, "out", out, oref, n);
    for (int rep = 1; rep <= 2; rep++) {
        silu_backward(din, dout, in, n);
        check_scaled(grp, "din", din, dinr, n, (float)rep, TOL);
    }
    memcpy(out, in, n * sizeof(float));
    silu_forward(out, out, n);
    check_fwd(grp, "out (in place)", out, oref, n);
    free(in), free(dout), free(oref), free(dinr), free(out), free(din);
}

typedef struct {
    int B, C, HW, G;
    float *w, *b, *dout, *out, *mean, *rstd;
} GnCtx;

static double gn_loss(GnCtx *g, const float *in) {
    groupnorm_forward(g->out, g->mean, g->rstd, in, g->w, g->b, g->B, g->C, g->HW, g->G);
    return dot_d(g->out, g->dout, (size_t)g->B * g->C * g->HW);
}

static void gn_fd(const char *grp, const char *what, GnCtx *g, float *x, size_t nx,
                  const float *gref, float *in) {
    float fd[FD_N], ref[FD_N];
    const float h = 1e-2f;
    for (int t = 0; t < FD_N; t++) {
        size_t i = rand_index(nx);
        float x0 = x[i];
        x[i] = x0 + h;
        double lp = gn_loss(g, in);
        x[i] = x0 - h;
        double lm = gn_loss(g, in);
        x[i] = x0;
        fd[t] = (float)((lp - lm) / (2.0 * h));
        ref[t] = gref[i];
    }
    char name[128];
    snprintf(name, sizeof name, "%s %s finite differences vs golden", grp, what);
    check_close(name, fd, ref, FD_N, FD_TOL);
}

static void test_groupnorm(int ci) {
    char grp[32];
    snprintf(grp, sizeof grp, "groupnorm_%d", ci);
    int *c = golden_read_cfg(GF, grp, 4);
    int B = c[0], C = c[1], HW = c[2], G = c[3];
    free(c);
    size_t n, nc, ng;
    float *in = rd(grp, "in", &n), *w = rd(grp, "w", &nc), *b = rd(grp, "b", NULL);
    float *dout = rd(grp, "dout", NULL), *oref = rd(grp, "out", NULL);
    float *mref = rd(grp, "mean", &ng), *rref = rd(grp, "rstd", NULL);
    float *dinr = rd(grp, "din", NULL), *dwr = rd(grp, "dw", NULL), *dbr = rd(grp, "db", NULL);
    float *out = nan_buf(n), *mean = nan_buf(ng), *rstd = nan_buf(ng);
    groupnorm_forward(out, mean, rstd, in, w, b, B, C, HW, G);
    check_fwd(grp, "out", out, oref, n);
    check_fwd(grp, "mean", mean, mref, ng);
    check_fwd(grp, "rstd", rstd, rref, ng);
    float *din = zero_buf(n), *dw = zero_buf(nc), *db = zero_buf(nc);
    for (int rep = 1; rep <= 2; rep++) {
        groupnorm_backward(din, dw, db, dout, in, mean, rstd, w, B, C, HW, G);
        check_scaled(grp, "din", din, dinr, n, (float)rep, TOL);
        check_scaled(grp, "dw", dw, dwr, nc, (float)rep, TOL);
        check_scaled(grp, "db", db, dbr, nc, (float)rep, TOL);
    }
    if (ci < 2) {
        GnCtx g = {B, C, HW, G, w, b, dout, out, mean, rstd};
        gn_fd(grp, "din", &g, in, n, dinr, in);
        gn_fd(grp, "dw", &g, w, nc, dwr, in);
        gn_fd(grp, "db", &g, b, nc, dbr, in);
    }
    free(in), free(w), free(b), free(dout), free(oref), free(mref), free(rref);
    free(dinr), free(dwr), free(dbr), free(out), free(mean), free(rstd);
    free(din), free(dw), free(db);
}

// The fused GroupNorm+SiLU against the separate kernels (themselves checked
// against torch above) on the golden GroupNorm cases: forward, the
// accumulating backward (twice), and the '=' backward over a garbage din.
static void test_groupnorm_silu(int ci) {
    char grp[32];
    snprintf(grp, sizeof grp, "groupnorm_%d", ci);
    int *c = golden_read_cfg(GF, grp, 4);
    int B = c[0], C = c[1], HW = c[2], G = c[3];
    free(c);
    size_t n, nc, ng = (size_t)B * G;
    float *in = rd(grp, "in", &n), *w = rd(grp, "w", &nc), *b = rd(grp, "b", NULL);
    float *dact = rd(grp, "dout", NULL);
    float *gn = nan_buf(n), *act_ref = nan_buf(n), *mean = nan_buf(ng), *rstd = nan_buf(ng);
    groupnorm_forward(gn, mean, rstd, in, w, b, B, C, HW, G);
    silu_forward(act_ref, gn, n);
    float *dgn = zero_buf(n), *din_ref = zero_buf(n), *dw_ref = zero_buf(nc), *db_ref = zero_buf(nc);
    silu_backward(dgn, dact, gn, n);
    groupnorm_backward(din_ref, dw_ref, db_ref, dgn, in, mean, rstd, w, B, C, HW, G);

    float *act = nan_buf(n), *m2 = nan_buf(ng), *r2 = nan_buf(ng);
    float *scratch = nan_buf(groupnorm_silu_scratch_floats(B, C, HW));
    groupnorm_silu_forward(act, m2, r2, in, w, b, B, C, HW, G);
    check_fwd(grp, "fused act vs separate", act, act_ref, n);
    float *din = zero_buf(n), *dw = zero_buf(nc), *db = zero_buf(nc);
    for (int rep = 1; rep <= 2; rep++) {
        groupnorm_silu_backward(din, dw, db, dact, in, m2, r2, w, b, B, C, HW, G, scratch);
        check_scaled(grp, "fused din vs separate", din, din_ref, n, (float)rep, TOL);
        check_scaled(grp, "fused dw vs separate", dw, dw_ref, nc, (float)rep, TOL);
        check_scaled(grp, "fused db vs separate", db, db_ref, nc, (float)rep, TOL);
    }
    float *dset = nan_buf(n);
    memset(dw, 0, nc * sizeof(float));
    memset(db, 0, nc * sizeof(float));
    groupnorm_silu_backward_set(dset, dw, db, dact, in, m2, r2, w, b, B, C, HW, G, scratch);
    check_scaled(grp, "fused din (=) vs separate", dset, din_ref, n, 1.0f, TOL);
    free(in), free(w), free(b), free(dact), free(gn), free(act_ref), free(mean), free(rstd);
    free(dgn), free(din_ref), free(dw_ref), free(db_ref), free(act), free(m2), free(r2);
    free(scratch), free(din), free(dw), free(db), free(dset);
}

static void test_groupnorm_groups(void) {
    check_true("groupnorm_groups: 64->32, 128->32, 8->8, 4->4, 48->24, 3->3",
               groupnorm_groups(64) == 32 && groupnorm_groups(128) == 32 &&
                   groupnorm_groups(8) == 8 && groupnorm_groups(4) == 4 &&
                   groupnorm_groups(48) == 24 && groupnorm_groups(3) == 3);
}

static void test_upsample(void) {
    const char *grp = "upsample2x";
    int *c = golden_read_cfg(GF, grp, 4);
    int B = c[0], C = c[1], H = c[2], W = c[3];
    free(c);
    size_t nin, nout;
    float *in = rd(grp, "in", &nin), *dout = rd(grp, "dout", &nout);
    float *oref = rd(grp, "out", NULL), *dinr = rd(grp, "din", NULL);
    float *out = nan_buf(nout), *din = zero_buf(nin);
    upsample2x_forward(out, in, B, C, H, W);
    check_fwd(grp, "out", out, oref, nout);
    for (int rep = 1; rep <= 2; rep++) {
        upsample2x_backward(din, dout, B, C, H, W);
        check_scaled(grp, "din", din, dinr, nin, (float)rep, TOL);
    }
    free(in), free(dout), free(oref), free(dinr), free(out), free(din);
}

static void test_concat(void) {
    const char *grp = "concat";
    int *c = golden_read_cfg(GF, grp, 4);
    int B = c[0], Ca = c[1], Cb = c[2], HW = c[3];
    free(c);
    size_t na, nb, nout;
    float *a = rd(grp, "a", &na), *b = rd(grp, "b", &nb), *dout = rd(grp, "dout", &nout);
    float *oref = rd(grp, "out", NULL), *dar = rd(grp, "da", NULL), *dbr = rd(grp, "db", NULL);
    float *out = nan_buf(nout), *da = zero_buf(na), *db = zero_buf(nb);
    concat_channels_forward(out, a, b, B, Ca, Cb, HW);
    check_fwd(grp, "out", out, oref, nout);
    for (int rep = 1; rep <= 2; rep++) {
        concat_channels_backward(da, db, dout, B, Ca, Cb, HW);
        check_scaled(grp, "da", da, dar, na, (float)rep, TOL);
        check_scaled(grp, "db", db, dbr, nb, (float)rep, TOL);
    }
    free(a), free(b), free(dout), free(oref), free(dar), free(dbr);
    free(out), free(da), free(db);
}

static void test_chanbias(void) {
    const char *grp = "chanbias";
    int *c = golden_read_cfg(GF, grp, 3);
    int B = c[0], C = c[1], HW = c[2];
    free(c);
    size_t nx, nv;
    float *x = rd(grp, "x", &nx), *v = rd(grp, "v", &nv), *dout = rd(grp, "dout", NULL);
    float *oref = rd(grp, "out", NULL), *dvr = rd(grp, "dv", NULL);
    float *dv = zero_buf(nv);
    add_channel_bias_forward(x, v, B, C, HW);
    check_fwd(grp, "out", x, oref, nx);
    for (int rep = 1; rep <= 2; rep++) {
        add_channel_bias_backward(dv, dout, B, C, HW);
        check_scaled(grp, "dv", dv, dvr, nv, (float)rep, TOL);
    }
    free(x), free(v), free(dout), free(oref), free(dvr), free(dv);
}

static void test_losses(void) {
    size_t n;
    float *a = rd("sq_err", "a", &n), *b = rd("sq_err", "b", NULL);
    float *lref = rd("sq_err", "loss", NULL), *dar = rd("sq_err", "da", NULL);
    float *scale = rd("sq_err", "scale", NULL);
    float loss = (float)sq_err_forward(a, b, n);
    check_fwd("sq_err", "loss", &loss, lref, 1);
    float *da = zero_buf(n);
    for (int rep = 1; rep <= 2; rep++) {
        sq_err_backward(da, a, b, n, scale[0]);
        check_scaled("sq_err", "da", da, dar, n, (float)rep, TOL);
    }
    free(a), free(b), free(lref), free(dar), free(scale), free(da);

    float *m = rd("gaussian_kl", "mean", &n), *lv = rd("gaussian_kl", "logvar", NULL);
    lref = rd("gaussian_kl", "loss", NULL);
    scale = rd("gaussian_kl", "scale", NULL);
    float *dmr = rd("gaussian_kl", "dmean", NULL), *dlr = rd("gaussian_kl", "dlogvar", NULL);
    loss = (float)gaussian_kl_forward(m, lv, n);
    check_fwd("gaussian_kl", "loss", &loss, lref, 1);
    float *dm = zero_buf(n), *dl = zero_buf(n);
    for (int rep = 1; rep <= 2; rep++) {
        gaussian_kl_backward(dm, dl, m, lv, n, scale[0]);
        check_scaled("gaussian_kl", "dmean", dm, dmr, n, (float)rep, TOL);
        check_scaled("gaussian_kl", "dlogvar", dl, dlr, n, (float)rep, TOL);
    }
    free(m), free(lv), free(lref), free(scale), free(dmr), free(dlr), free(dm), free(dl);
}

static void test_attention(int ci) {
    char grp[32];
    snprintf(grp, sizeof grp, "attention_%d", ci);
    int *c = golden_read_cfg(GF, grp, 4);
    int B = c[0], C = c[1], T = c[2], heads = c[3];
    free(c);
    size_t n, na;
    float *q = rd(grp, "q", &n), *k = rd(grp, "k", NULL), *v = rd(grp, "v", NULL);
    float *dout = rd(grp, "dout", NULL), *oref = rd(grp, "out", NULL);
    float *aref = rd(grp, "att", &na);
    float *dqr = rd(grp, "dq", NULL), *dkr = rd(grp, "dk", NULL), *dvr = rd(grp, "dv", NULL);
    CHECK(na == (size_t)B * heads * T * T);
    float *out = nan_buf(n), *att = nan_buf(na);
    float *scratch = xmalloc(attention_scratch_floats(B, C, T, heads) * sizeof(float) + 1);
    attention_forward(out, att, q, k, v, B, C, T, heads);
    check_fwd(grp, "out", out, oref, n);
    check_fwd(grp, "att", att, aref, na);
    float *dq = zero_buf(n), *dk = zero_buf(n), *dv = zero_buf(n);
    for (int rep = 1; rep <= 2; rep++) {
        attention_backward(dq, dk, dv, dout, att, q, k, v, B, C, T, heads, scratch);
        check_scaled(grp, "dq", dq, dqr, n, (float)rep, TOL);
        check_scaled(grp, "dk", dk, dkr, n, (float)rep, TOL);
        check_scaled(grp, "dv", dv, dvr, n, (float)rep, TOL);
    }
    free(q), free(k), free(v), free(dout), free(oref), free(aref), free(dqr), free(dkr);
    free(dvr), free(out), free(att), free(scratch), free(dq), free(dk), free(dv);
}

static void test_timestep(void) {
    int *c = golden_read_cfg(GF, "timestep", 2);
    int B = c[0], dim = c[1];
    free(c);
    size_t nt, n;
    int *t = golden_read_int(GF, "timestep/t", &nt);
    float *oref = rd("timestep", "out", &n);
    CHECK(nt == (size_t)B && n == (size_t)B * dim);
    float *out = nan_buf(n);
    timestep_embedding(out, t, B, dim);
    check_close("timestep_embedding out (tol 1e-6)", out, oref, n, 1e-6);
    free(t), free(oref), free(out);
}

// ---------------------------------------------------------------------------
// Thread-count invariance: conv2d, conv_transpose2d, GroupNorm and attention
// forward + backward on the golden inputs at 1 and at 2 threads must give
// bit-identical results.

static void run_conv_group(float *res, int threads) {
    set_threads(threads);
    const char *grp = "conv2d_1";
    int *c = golden_read_cfg(GF, grp, 9);
    ConvDims d = {c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]};
    free(c);
    size_t nin, nw, nout;
    float *in = rd(grp, "in", &nin), *w = rd(grp, "w", &nw), *b = rd(grp, "b", NULL);
    float *dout = rd(grp, "dout", &nout);
    float *scratch =
        xmalloc(conv2d_scratch_floats(d.B, d.C, d.H, d.W, d.OC, d.k, d.s, d.p) * sizeof(float));
    float *out = res, *din = res + nout, *dw = din + nin, *db = dw + nw;
    memset(din, 0, (nin + nw + (size_t)d.OC) * sizeof(float));
    conv2d_forward(out, in, w, b, d.B, d.C, d.H, d.W, d.OC, d.k, d.s, d.p, scratch);
    conv2d_backward(din, dw, db, dout, in, w, d.B, d.C, d.H, d.W, d.OC, d.k, d.s, d.p, scratch);
    free(in), free(w), free(b), free(dout), free(scratch);
}

static void run_gn_att(float *res, int threads) {
    set_threads(threads);
    const char *grp = "groupnorm_1";
    int *c = golden_read_cfg(GF, grp, 4);
    int B = c[0], C = c[1], HW = c[2], G = c[3];
    free(c);
    size_t n;
    float *in = rd(grp, "in", &n), *w = rd(grp, "w", NULL), *b = rd(grp, "b", NULL);
    float *dout = rd(grp, "dout", NULL);
    float *out = res, *mean = out + n, *rstd = mean + B * G, *din = rstd + B * G;
    float *dw = din + n, *db = dw + C;
    memset(din, 0, (n + 2 * (size_t)C) * sizeof(float));
    groupnorm_forward(out, mean, rstd, in, w, b, B, C, HW, G);
    groupnorm_backward(din, dw, db, dout, in, mean, rstd, w, B, C, HW, G);
    free(in), free(w), free(b), free(dout);
    float *r = db + C;
    grp = "attention_1";
    c = golden_read_cfg(GF, grp, 4);
    B = c[0], C = c[1];
    int T = c[2], heads = c[3];
    free(c);
    float *q = rd(grp, "q", &n), *k = rd(grp, "k", NULL), *v = rd(grp, "v", NULL);
    dout = rd(grp, "dout", NULL);
    float *scratch = xmalloc(attention_scratch_floats(B, C, T, heads) * sizeof(float));
    float *ao = r, *att = ao + n, *dq = att + (size_t)B * heads * T * T, *dk = dq + n,
          *dv = dk + n;
    memset(dq, 0, 3 * n * sizeof(float));
    attention_forward(ao, att, q, k, v, B, C, T, heads);
    attention_backward(dq, dk, dv, dout, att, q, k, v, B, C, T, heads, scratch);
    free(q), free(k), free(v), free(dout), free(scratch);
}

static void test_threads(void) {
    const size_t cap = 1 << 16;
    float *r1 = zero_buf(cap), *r2 = zero_buf(cap);
    run_conv_group(r1, 1);
    run_conv_group(r2, 2);
    check_true("conv2d fwd+bwd bit-identical at 1 and 2 threads",
               memcmp(r1, r2, cap * sizeof(float)) == 0);
    memset(r1, 0, cap * sizeof(float));
    memset(r2, 0, cap * sizeof(float));
    run_gn_att(r1, 1);
    run_gn_att(r2, 2);
    check_true("groupnorm + attention fwd+bwd bit-identical at 1 and 2 threads",
               memcmp(r1, r2, cap * sizeof(float)) == 0);
    free(r1), free(r2);
}

// ---------------------------------------------------------------------------
// Winograd F(2x2, 3x3) itself (conv2d uses it for 3x3 stride-1 convs with
// 16+ channels a side; golden conv2d_6 is one). Here narrow and wide shapes
// with several chunks, odd sizes, one-row planes and whole-image chunks are
// checked against a direct convolution in double, and at 1 against 2 threads.

static float rand_sym(void) { return (float)rand_index(20001) / 10000.0f - 1.0f; }

// out (B, OC, H, W), din (B, C, H, W), dw (OC, C, 3, 3) of a direct 3x3 pad-1 conv
static void conv3x3_direct(double *out, double *din, double *dw, const float *in,
                           const float *w, const float *dout, int B, int C, int H, int W,
                           int OC) {
    memset(out, 0, (size_t)B * OC * H * W * sizeof(double));
    memset(din, 0, (size_t)B * C * H * W * sizeof(double));
    memset(dw, 0, (size_t)OC * C * 9 * sizeof(double));
    for (int b = 0; b < B; b++)
        for (int o = 0; o < OC; o++)
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++) {
                    size_t oi = (((size_t)b * OC + o) * H + y) * W + x;
                    for (int c = 0; c < C; c++)
                        for (int i = 0; i < 3; i++)
                            for (int j = 0; j < 3; j++) {
                                int iy = y + i - 1, ix = x + j - 1;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                                size_t ii = (((size_t)b * C + c) * H + iy) * W + ix;
                                size_t wi = ((size_t)o * C + c) * 9 + i * 3 + j;
                                out[oi] += (double)w[wi] * in[ii];
                                din[ii] += (double)w[wi] * dout[oi];
                                dw[wi] += (double)in[ii] * dout[oi];
                            }
                }
}

static float *to_float(const double *x, size_t n) {
    float *f = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) f[i] = (float)x[i];
    return f;
}

static void test_winograd_shape(int B, int C, int H, int W, int OC) {
    size_t nin = (size_t)B * C * H * W, nout = (size_t)B * OC * H * W, nw = (size_t)OC * C * 9;
    float *in = xmalloc(nin * sizeof(float)), *w = xmalloc(nw * sizeof(float));
    float *dout = xmalloc(nout * sizeof(float));
    for (size_t i = 0; i < nin; i++) in[i] = rand_sym();
    for (size_t i = 0; i < nw; i++) w[i] = 0.3f * rand_sym();
    for (size_t i = 0; i < nout; i++) dout[i] = rand_sym();
    double *ro = xmalloc(nout * sizeof(double)), *rdin = xmalloc(nin * sizeof(double));
    double *rdw = xmalloc(nw * sizeof(double));
    conv3x3_direct(ro, rdin, rdw, in, w, dout, B, C, H, W, OC);
    float *fo = to_float(ro, nout), *fdin = to_float(rdin, nin), *fdw = to_float(rdw, nw);
    float *scratch = xmalloc(winograd_scratch_floats(B, C, H, W, OC) * sizeof(float));
    size_t nres = nout + nin + nw;
    float *res[2];
    for (int t = 0; t < 2; t++) {
        set_threads(t + 1);
        res[t] = zero_buf(nres);
        float *out = res[t], *din = out + nout, *dw = din + nin;
        winograd_conv_forward(out, in, w, NULL, NULL, B, C, H, W, OC, scratch);
        winograd_conv_backward(din, dw, dout, in, w, B, C, H, W, OC, scratch, 0);
    }
    char name[128];
    snprintf(name, sizeof name, "winograd %dx%dx%dx%d->%d out vs direct", B, C, H, W, OC);
    check_close(name, res[0], fo, nout, 1e-5);
    snprintf(name, sizeof name, "winograd %dx%dx%dx%d->%d din vs direct", B, C, H, W, OC);
    check_close(name, res[0] + nout, fdin, nin, 1e-5);
    snprintf(name, sizeof name, "winograd %dx%dx%dx%d->%d dw vs direct", B, C, H, W, OC);
    check_close(name, res[0] + nout + nin, fdw, nw, 1e-5);
    snprintf(name, sizeof name, "winograd %dx%dx%dx%d->%d bit-identical at 1 and 2 threads",
             B, C, H, W, OC);
    check_true(name, memcmp(res[0], res[1], nres * sizeof(float)) == 0);
    free(in), free(w), free(dout), free(ro), free(rdin), free(rdw), free(fo), free(fdin);
    free(fdw), free(scratch), free(res[0]), free(res[1]);
}

static void test_winograd(void) {
    test_winograd_shape(40, 5, 7, 9, 6); // 20 tiles an image: chunks of 25 and 15 images
    test_winograd_shape(3, 4, 40, 38, 3); // 380 tiles: one image a chunk
    test_winograd_shape(2, 2, 1, 3, 3);   // one-row planes: every tile is a border tile
    test_winograd_shape(33, 16, 8, 8, 24); // the UNet's 8x8: 16 tiles, chunks of 32 and 1
    set_threads(2);
}

int main(void) {
    int n;
    check_true("golden has conv2d, convt2d, groupnorm and attention cases",
               golden_count(GF, "conv2d") >= 5 && golden_count(GF, "convt2d") >= 2 &&
                   golden_count(GF, "groupnorm") >= 3 && golden_count(GF, "attention") >= 2);
    n = golden_count(GF, "conv2d");
    for (int i = 0; i < n; i++) test_conv2d(i);
    n = golden_count(GF, "convt2d");
    for (int i = 0; i < n; i++) test_convt2d(i);
    test_linear();
    test_silu();
    n = golden_count(GF, "groupnorm");
    for (int i = 0; i < n; i++) test_groupnorm(i);
    for (int i = 0; i < n; i++) test_groupnorm_silu(i);
    test_groupnorm_groups();
    test_upsample();
    test_concat();
    test_chanbias();
    test_losses();
    test_winograd();
    n = golden_count(GF, "attention");
    for (int i = 0; i < n; i++) test_attention(i);
    test_timestep();
    test_threads();
    return test_summary("test_layers");
}
