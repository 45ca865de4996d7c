// test_plot.c: plot_losses_png draws where the numbers say (the curves'
// colours found in the quadrants of the plot frame a decreasing/increasing
// series would reach, log scale, the held-out series on its own right axis
// or the shared left one), survives degenerate input, and fails cleanly.
// `test_plot --demo FILE` also writes a realistic VAE-style plot to FILE.
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stb_image.h>

#include "common.h"
#include "plot.h"
#include "rng.h"
#include "testutil.h"

static char dir[64];

typedef struct {
    unsigned char *px;
    int w, h;
    int x0, y0, x1, y1; // the plot frame's lines
} Img;

// The longest run of dark pixels from p, `n` pixels `stride` bytes apart.
static int dark_run(const unsigned char *p, int n, size_t stride) {
    int best = 0, run = 0;
    for (int i = 0; i < n; i++, p += stride) {
        run = p[0] < 80 && p[1] < 80 && p[2] < 80 ? run + 1 : 0;
        if (run > best) best = run;
    }
    return best;
}

// Decodes `path` and finds the plot frame: the rows and columns with an
// unbroken dark line across most of the picture (text has gaps).
static int load(const char *path, Img *im) {
    int ch;
    memset(im, 0, sizeof *im);
    im->px = stbi_load(path, &im->w, &im->h, &ch, 3);
    if (!im->px) return 0;
    im->x0 = im->y0 = -1;
    for (int y = 0; y < im->h; y++) {
        if (dark_run(im->px + (size_t)y * im->w * 3, im->w, 3) > im->w / 2) {
            if (im->y0 < 0) im->y0 = y;
            im->y1 = y;
        }
    }
    for (int x = 0; x < im->w && im->y0 >= 0; x++) {
        const unsigned char *col = im->px + ((size_t)im->y0 * im->w + x) * 3;
        if (dark_run(col, im->y1 - im->y0 + 1, (size_t)im->w * 3) > (im->y1 - im->y0) * 3 / 4) {
            if (im->x0 < 0) im->x0 = x;
            im->x1 = x;
        }
    }
    return 1;
}

static int near(const unsigned char *p, unsigned rgb) {
    int c[3] = {(int)(rgb >> 16) & 255, (int)(rgb >> 8) & 255, (int)rgb & 255};
    for (int k = 0; k < 3; k++)
        if (abs(p[k] - c[k]) > 12) return 0;
    return 1;
}

// Pixels of colour rgb inside the plot frame between fractions fx0..fx1 of
// its width (from the left) and fy0..fy1 of its height (from the top).
// *mean_fy: their mean height fraction.
static long count(const Img *im, unsigned rgb, double fx0, double fx1, double fy0,
                  double fy1, double *mean_fy) {
    long n = 0;
    double sum = 0;
    int fw = im->x1 - im->x0, fh = im->y1 - im->y0;
    for (int y = im->y0 + 1; y < im->y1; y++)
        for (int x = im->x0 + 1; x < im->x1; x++) {
            double fx = (double)(x - im->x0) / fw, fy = (double)(y - im->y0) / fh;
            if (fx < fx0 || fx >= fx1 || fy < fy0 || fy >= fy1) continue;
            if (near(im->px + ((size_t)y * im->w + x) * 3, rgb)) n++, sum += fy;
        }
    if (mean_fy) *mean_fy = n ? sum / n : NAN;
    return n;
}

// The frame must have been found, inside a picture of at least 640 x 400.
static int sane(const char *what, const Img *im) {
    char m[200];
    snprintf(m, sizeof m, "%s: decodes, %d x %d (PLOT_WIDTH x PLOT_HEIGHT, >= 640 x 400), "
             "frame %d..%d x %d..%d", what, im->w, im->h, im->x0, im->x1, im->y0, im->y1);
    return check_true(m, im->px && im->w >= 640 && im->h >= 400 && im->w == PLOT_WIDTH &&
                             im->h == PLOT_HEIGHT && im->x0 > 0 &&
                             im->x1 - im->x0 > im->w / 2 && im->y0 > 0 &&
                             im->y1 - im->y0 > im->h / 2);
}

static void path_in(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/%s", dir, name);
}

// A VAE-like run: training loss decaying 1.0 -> 0.05 with noise at every
// step; held-out PSNR rising linearly 15 -> 24 dB every 200 steps.
enum { STEPS = 2000, EVERY = 200 };
static double tx[STEPS], ty[STEPS], hx[STEPS / EVERY + 1], hy[STEPS / EVERY + 1];
static void vae_like(int linear_psnr) {
    Rng r;
    rng_init(&r, 7);
    static float noise[STEPS];
    rng_normal_fill(&r, noise, STEPS);
    for (int i = 0; i < STEPS; i++) {
        double clean = 0.05 + 0.95 * exp(-i / 300.0);
        tx[i] = i;
        ty[i] = clean * exp(0.25 * noise[i]);
    }
    for (int k = 0; k <= STEPS / EVERY; k++) {
        hx[k] = k * EVERY;
        double f = (double)k / (STEPS / EVERY);
        hy[k] = linear_psnr ? 15 + 9 * f : 15 + 9 * (1 - exp(-4 * f)) + 0.3 * sin(7.0 * k);
    }
}

static void test_quadrants(void) {
    char p[128];
    path_in(p, sizeof p, "vae.png");
    vae_like(1);
    PlotSeries tr = {tx, ty, STEPS, "train loss (MSE + KL)"};
    PlotSeries ho = {hx, hy, STEPS / EVERY + 1, "held-out PSNR"};
    check_true("vae-like plot returns 0", plot_losses_png(p, &(PlotSpec){"VAE", tr, ho, "PSNR (dB)"}) == 0);
    Img im;
    if (!check_true("vae-like plot decodes", load(p, &im))) return;
    sane("vae-like plot", &im);
    // Decreasing training loss: upper left and lower right, never upper right.
    long ul = count(&im, PLOT_TRAIN_RGB, 0, 0.45, 0, 0.45, NULL);
    long lr = count(&im, PLOT_TRAIN_RGB, 0.55, 1, 0.55, 1, NULL);
    long ur = count(&im, PLOT_TRAIN_RGB, 0.55, 1, 0, 0.45, NULL);
    printf("     train colour: upper-left %ld, lower-right %ld, upper-right %ld pixels\n", ul, lr,
           ur);
    check_true("train curve in the upper-left and lower-right", ul > 50 && lr > 50);
    check_true("train curve not in the upper-right", ur == 0);
    // Rising PSNR on its own axis: lower left to upper right, a straight line.
    long hll = count(&im, PLOT_HELDOUT_RGB, 0, 0.4, 0.6, 1, NULL);
    long hur = count(&im, PLOT_HELDOUT_RGB, 0.6, 1, 0, 0.4, NULL);
    long hul = count(&im, PLOT_HELDOUT_RGB, 0, 0.4, 0, 0.4, NULL);
    long hlr = count(&im, PLOT_HELDOUT_RGB, 0.6, 1, 0.6, 1, NULL);
    printf("     held-out colour: lower-left %ld, upper-right %ld, upper-left %ld, lower-right "
           "%ld\n", hll, hur, hul, hlr);
    check_true("held-out curve in the lower-left and upper-right", hll > 50 && hur > 50);
    check_true("held-out curve not in the upper-left or lower-right", hul == 0 && hlr == 0);
    stbi_image_free(im.px);
}

// 1 -> 0.01 as 10^(-2t/T): a straight diagonal on a log axis, so the curve's
// pixels average out at mid-height; on a linear axis they would hug the
// bottom (mean ~0.8 of the height).
static void test_log_scale(void) {
    enum { N = 1000 };
    static double y[N];
    for (int i = 0; i < N; i++) y[i] = pow(10, -2.0 * i / (N - 1));
    char p[128];
    path_in(p, sizeof p, "log.png");
    PlotSeries tr = {NULL, y, N, "loss"}, none = {0};
    check_true("log plot returns 0", plot_losses_png(p, &(PlotSpec){"log", tr, none, NULL}) == 0);
    Img im;
    if (!check_true("log plot decodes", load(p, &im))) return;
    sane("log plot", &im);
    double m1, m2, m3;
    long n1 = count(&im, PLOT_TRAIN_RGB, 0.2, 0.3, 0, 1, &m1);
    long n2 = count(&im, PLOT_TRAIN_RGB, 0.45, 0.55, 0, 1, &m2);
    long n3 = count(&im, PLOT_TRAIN_RGB, 0.7, 0.8, 0, 1, &m3);
    printf("     mean height of the curve at 25/50/75%% of x: %.3f %.3f %.3f (n %ld %ld %ld)\n",
           m1, m2, m3, n1, n2, n3);
    check_true("log scale: 10^(-2t/T) is a straight line (0.25, 0.5, 0.75 +- 0.04)",
               fabs(m1 - 0.25) < 0.04 && fabs(m2 - 0.5) < 0.04 && fabs(m3 - 0.75) < 0.04);
    stbi_image_free(im.px);
}

// The same constant held-out series at 0.07 beside a 1 -> 0.05 training loss:
// on the shared (log) axis it lies near the bottom; on its own right axis a
// constant is centred.
static void test_shared_vs_right_axis(void) {
    enum { N = 500 };
    static double y[N], hxs[6], hys[6];
    for (int i = 0; i < N; i++) y[i] = 0.05 + 0.95 * exp(-i / 60.0);
    for (int k = 0; k < 6; k++) hxs[k] = k * 99.0, hys[k] = 0.07;
    PlotSeries tr = {NULL, y, N, "train MSE"}, ho = {hxs, hys, 6, "held-out MSE"};
    char p[128];
    double m;
    Img im;
    path_in(p, sizeof p, "shared.png");
    check_true("shared-axis plot returns 0", plot_losses_png(p, &(PlotSpec){"UNet", tr, ho, NULL}) == 0);
    if (check_true("shared-axis plot decodes", load(p, &im))) {
        sane("shared-axis plot", &im);
        long n = count(&im, PLOT_HELDOUT_RGB, 0, 1, 0, 1, &m);
        printf("     shared axis: held-out at mean height %.3f (n %ld)\n", m, n);
        // log10(0.07 / 0.05) / log10(20) = 0.112 of the data range, 4% padding each side
        check_true("shared axis: held-out 0.07 drawn at the train axis' 0.07 (0.83-0.89)",
                   n > 100 && m > 0.83 && m < 0.89);
        stbi_image_free(im.px);
    }
    path_in(p, sizeof p, "right.png");
    check_true("right-axis plot returns 0", plot_losses_png(p, &(PlotSpec){"UNet", tr, ho, "MSE"}) == 0);
    if (check_true("right-axis plot decodes", load(p, &im))) {
        sane("right-axis plot", &im);
        long n = count(&im, PLOT_HELDOUT_RGB, 0, 1, 0, 1, &m);
        printf("     right axis: held-out at mean height %.3f (n %ld)\n", m, n);
        check_true("right axis: a constant held-out series is centred (0.47-0.53)",
                   n > 100 && m > 0.47 && m < 0.53);
        stbi_image_free(im.px);
    }
}

// An extra series (the FD of samples during training) on the right axis
// beside held-out losses on the shared left one: a falling extra series
// goes from the top to the bottom of its own axis, the held-out stays where
// the shared axis puts it.
static void test_extra_series(void) {
    enum { N = 500 };
    static double y[N], hxs[6], hys[6], exs[6], eys[6];
    for (int i = 0; i < N; i++) y[i] = 0.05 + 0.95 * exp(-i / 60.0);
    for (int k = 0; k < 6; k++)
        hxs[k] = exs[k] = k * 99.0, hys[k] = 0.07, eys[k] = 300.0 - 50.0 * k;
    PlotSeries tr = {NULL, y, N, "train MSE"}, ho = {hxs, hys, 6, "held-out MSE"};
    PlotSeries ex = {exs, eys, 6, "FD of 1000 samples"};
    char p[128];
    double m, mlo, mhi;
    Img im;
    path_in(p, sizeof p, "extra.png");
    check_true("extra-series plot returns 0",
               plot_losses_png(p, &(PlotSpec){"UNet", tr, ho, NULL, ex, "FD"}) == 0);
    if (!check_true("extra-series plot decodes", load(p, &im))) return;
    sane("extra-series plot", &im);
    long nh = count(&im, PLOT_HELDOUT_RGB, 0, 1, 0, 1, &m);
    check_true("extra series: held-out stays on the shared axis (0.83-0.89)",
               nh > 100 && m > 0.83 && m < 0.89);
    long n1 = count(&im, PLOT_EXTRA_RGB, 0, 0.1, 0, 1, &mhi);
    long n2 = count(&im, PLOT_EXTRA_RGB, 0.9, 1, 0, 1, &mlo);
    // (fy: 0 at the top of the plot area, 1 at the bottom)
    printf("     extra series: at fy %.3f at the start, %.3f at the end (n %ld %ld)\n", mhi, mlo,
           n1, n2);
    check_true("extra series: drawn from the top (fy < 0.15) to the bottom (> 0.85) of the right axis",
               n1 > 20 && n2 > 20 && mhi < 0.15 && mlo > 0.85);
    stbi_image_free(im.px);
}

// Degenerate input draws a picture (returns 0, the file decodes at full
// size); `want_train` says whether the training colour must show.
static void edge(const char *name, PlotSeries tr, PlotSeries ho, const char *axis,
                 int want_train) {
    char p[128], m[200];
    path_in(p, sizeof p, name);
    int rc = plot_losses_png(p, &(PlotSpec){name, tr, ho, axis});
    snprintf(m, sizeof m, "edge case %s returns 0", name);
    check_true(m, rc == 0);
    Img im;
    snprintf(m, sizeof m, "edge case %s writes a PNG", name);
    if (!check_true(m, load(p, &im))) return;
    sane(name, &im);
    if (want_train) {
        snprintf(m, sizeof m, "edge case %s shows the training points", name);
        check_true(m, count(&im, PLOT_TRAIN_RGB, 0, 1, 0, 1, NULL) > 20);
    }
    stbi_image_free(im.px);
}

static void test_edges(void) {
    PlotSeries none = {0};
    edge("empty", none, none, NULL, 0);
    edge("empty-right-axis", none, none, "PSNR (dB)", 0);

    // (the held-out point one step on: a constant is centred on its axis,
    // and the held-out marker, drawn last, would hide the training point)
    static const double one_x[1] = {5000}, one_y[1] = {0.3}, one_hx[1] = {5100}, one_h[1] = {21};
    PlotSeries t1 = {one_x, one_y, 1, "loss"}, h1 = {one_hx, one_h, 1, "PSNR"};
    edge("one-point", t1, h1, "dB", 1);
    edge("one-point-shared", t1, (PlotSeries){one_hx, one_y, 1, "held-out"}, NULL, 1);
    static const double zero_x[1] = {0};
    PlotSeries t0 = {zero_x, one_y, 1, "loss"};
    edge("one-point-at-step-0", t0, none, NULL, 1);

    static double cx[100], cy[100], ch[100];
    for (int i = 0; i < 100; i++) cx[i] = i * 10, cy[i] = 0.25, ch[i] = 20;
    edge("constant", (PlotSeries){cx, cy, 100, "loss"}, (PlotSeries){cx, ch, 10, "PSNR"},
         "dB", 1);
    static double zy[100];
    edge("all-zero", (PlotSeries){cx, zy, 100, "loss"}, none, NULL, 1);

    static double ny[300], nx[300], nh[30];
    for (int i = 0; i < 300; i++) {
        nx[i] = i;
        ny[i] = i % 7 == 3 ? NAN : i == 50 ? INFINITY : i == 51 ? -INFINITY : 1.0 / (1 + i);
    }
    nx[100] = NAN;
    for (int k = 0; k < 30; k++) nh[k] = k % 4 ? 15 + k * 0.3 : NAN;
    nh[0] = -INFINITY;
    edge("nan-inf", (PlotSeries){nx, ny, 300, "loss"}, (PlotSeries){nx, nh, 30, "PSNR"},
         "dB", 1);
    static double all_nan[10] = {NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN};
    edge("all-nan", (PlotSeries){NULL, all_nan, 10, "loss"},
         (PlotSeries){NULL, all_nan, 10, "PSNR"}, "dB", 0);

    enum { NB = 200000 };
    double *bx = xmalloc(NB * sizeof *bx), *by = xmalloc(NB * sizeof *by);
    double bhx[11], bhy[11];
    for (int i = 0; i < NB; i++) bx[i] = i * 50.0, by[i] = 2.0 / (1 + i * 1e-3) + 0.01 * (i % 13);
    for (int k = 0; k <= 10; k++) bhx[k] = k * 1e6, bhy[k] = 1.0 / (1 + k);
    edge("huge-steps", (PlotSeries){bx, by, NB, "loss"}, (PlotSeries){bhx, bhy, 11, "held-out"},
         NULL, 1);
    free(bx), free(by);

    static double sx[60], sy[60];
    for (int i = 0; i < 60; i++) sx[i] = i, sy[i] = i % 2 ? 1e-300 : 1e300;
    edge("extreme-values", (PlotSeries){sx, sy, 60, NULL}, none, NULL, 1);
    static double neg[100];
    for (int i = 0; i < 100; i++) neg[i] = sin(i * 0.1) - 0.5;
    edge("negative", (PlotSeries){NULL, neg, 100, "log-likelihood"}, none, NULL, 1);
    edge("no-heldout-right-axis", (PlotSeries){NULL, neg, 100, "loss"},
         (PlotSeries){NULL, NULL, 0, "PSNR"}, "PSNR (dB)", 1);
    edge("negative-count", (PlotSeries){NULL, NULL, -5, "loss"}, none, NULL, 0);
    char longt[400];
    memset(longt, 'W', sizeof longt - 1);
    longt[sizeof longt - 1] = 0;
    static double pos[100];
    for (int i = 0; i < 100; i++) pos[i] = 20 + cos(i * 0.1);
    edge(longt + 330, (PlotSeries){NULL, neg, 100, longt}, (PlotSeries){NULL, pos, 100, longt},
         longt, 1);
}

static int tmp_left(const char *path) {
    char tmp[4096];
    tmp_path_for(tmp, sizeof tmp, path);
    return access(tmp, F_OK) == 0;
}

static void test_errors(void) {
    vae_like(1);
    PlotSeries tr = {tx, ty, STEPS, "loss"}, ho = {hx, hy, STEPS / EVERY + 1, "PSNR"};
    char p[128];
    path_in(p, sizeof p, "missing/folder/plot.png");
    fprintf(stderr, "(an error message is expected next)\n");
    check_true("missing folder: returns -1", plot_losses_png(p, &(PlotSpec){"x", tr, ho, "dB"}) == -1);
    check_true("missing folder: no file", access(p, F_OK) != 0 && !tmp_left(p));
    // The target is a directory: the temporary file is written, the rename
    // fails, and the temporary file must be gone.
    path_in(p, sizeof p, "a-directory.png");
    CHECK(mkdir(p, 0700) == 0);
    fprintf(stderr, "(an error message is expected next)\n");
    check_true("target is a directory: returns -1", plot_losses_png(p, &(PlotSpec){"x", tr, ho, "dB"}) == -1);
    check_true("target is a directory: no temporary file left", !tmp_left(p));
    rmdir(p);
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--demo") == 0) {
        vae_like(0);
        PlotSeries tr = {tx, ty, STEPS, "train loss (MSE + KL)"};
        PlotSeries ho = {hx, hy, STEPS / EVERY + 1, "held-out PSNR"};
        return plot_losses_png(argv[2], &(PlotSpec){"VAE training, 2000 steps", tr, ho, "PSNR (dB)"}) ? 1 : 0;
    }
    snprintf(dir, sizeof dir, "/tmp/test_plot.XXXXXX");
    CHECK(mkdtemp(dir));
    test_quadrants();
    test_log_scale();
    test_shared_vs_right_axis();
    test_extra_series();
    test_edges();
    test_errors();
    if (getenv("TEST_PLOT_KEEP")) {
        printf("pictures kept in %s\n", dir);
    } else if (remove_tree(dir) != 0) {
        fprintf(stderr, "could not remove %s\n", dir);
    }
    return test_summary("test_plot");
}
