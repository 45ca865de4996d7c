// plot.c: loss curves drawn into an RGB buffer with a built-in 5 x 9 bitmap
// font, then written by png_write (temporary file beside the target, renamed).
//
// Lines are antialiased through a coverage layer: a series is first drawn
// into `cov` (per pixel, the largest coverage any segment gives it), then
// composited once with its colour and opacity, so overlapping segments of a
// faint series do not pile up into a dark smear.
#include "plot.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common.h"
#include "image.h"

// ---- font -----------------------------------------------------------------
// 5 columns x 9 rows; capitals and digits use rows 0-6 (baseline under row
// 6), lower case has its x-height at rows 2-6 and descenders in rows 7-8.
// Rows left out are blank. Glyphs are trimmed to their inked columns and
// spaced by one blank column, so the text is proportional.
#define FONT_W 5
#define FONT_H 9
typedef struct {
    char c;
    const char *rows[FONT_H];
} Glyph;

static const Glyph FONT[] = {
    {'0', {".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."}},
    {'1', {"..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."}},
    {'2', {".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"}},
    {'3', {"#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."}},
    {'4', {"...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."}},
    {'5', {"#####", "#....", "####.", "....#", "....#", "#...#", ".###."}},
    {'6', {"..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."}},
    {'7', {"#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."}},
    {'8', {".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."}},
    {'9', {".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."}},
    {'A', {".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"}},
    {'B', {"####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."}},
    {'C', {".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."}},
    {'D', {"###..", "#..#.", "#...#", "#...#", "#...#", "#..#.", "###.."}},
    {'E', {"#####", "#....", "#....", "####.", "#....", "#....", "#####"}},
    {'F', {"#####", "#....", "#....", "####.", "#....", "#....", "#...."}},
    {'G', {".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"}},
    {'H', {"#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"}},
    {'I', {".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."}},
    {'J', {"..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."}},
    {'K', {"#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"}},
    {'L', {"#....", "#....", "#....", "#....", "#....", "#....", "#####"}},
    {'M', {"#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"}},
    {'N', {"#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"}},
    {'O', {".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."}},
    {'P', {"####.", "#...#", "#...#", "####.", "#....", "#....", "#...."}},
    {'Q', {".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"}},
    {'R', {"####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"}},
    {'S', {".####", "#....", "#....", ".###.", "....#", "....#", "####."}},
    {'T', {"#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."}},
    {'U', {"#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."}},
    {'V', {"#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."}},
    {'W', {"#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."}},
    {'X', {"#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"}},
    {'Y', {"#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."}},
    {'Z', {"#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"}},
    {'a', {"", "", ".###.", "....#", ".####", "#...#", ".####"}},
    {'b', {"#....", "#....", "####.", "#...#", "#...#", "#...#", "####."}},
    {'c', {"", "", ".####", "#....", "#....", "#....", ".####"}},
    {'d', {"....#", "....#", ".####", "#...#", "#...#", "#...#", ".####"}},
    {'e', {"", "", ".###.", "#...#", "#####", "#....", ".###."}},
    {'f', {"..##.", ".#...", "####.", ".#...", ".#...", ".#...", ".#..."}},
    {'g', {"", "", ".####", "#...#", "#...#", "#...#", ".####", "....#", ".###."}},
    {'h', {"#....", "#....", "####.", "#...#", "#...#", "#...#", "#...#"}},
    {'i', {"..#..", "", ".##..", "..#..", "..#..", "..#..", ".###."}},
    {'j', {"...#.", "", "..##.", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."}},
    {'k', {"#....", "#....", "#..#.", "#.#..", "##...", "#.#..", "#..#."}},
    {'l', {".##..", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."}},
    {'m', {"", "", "##.#.", "#.#.#", "#.#.#", "#.#.#", "#.#.#"}},
    {'n', {"", "", "####.", "#...#", "#...#", "#...#", "#...#"}},
    {'o', {"", "", ".###.", "#...#", "#...#", "#...#", ".###."}},
    {'p', {"", "", "####.", "#...#", "#...#", "#...#", "####.", "#....", "#...."}},
    {'q', {"", "", ".####", "#...#", "#...#", "#...#", ".####", "....#", "....#"}},
    {'r', {"", "", "#.##.", "##..#", "#....", "#....", "#...."}},
    {'s', {"", "", ".####", "#....", ".###.", "....#", "####."}},
    {'t', {".#...", ".#...", "####.", ".#...", ".#...", ".#..#", "..##."}},
    {'u', {"", "", "#...#", "#...#", "#...#", "#..##", ".##.#"}},
    {'v', {"", "", "#...#", "#...#", "#...#", ".#.#.", "..#.."}},
    {'w', {"", "", "#...#", "#...#", "#.#.#", "#.#.#", ".#.#."}},
    {'x', {"", "", "#...#", ".#.#.", "..#..", ".#.#.", "#...#"}},
    {'y', {"", "", "#...#", "#...#", "#...#", "#...#", ".####", "....#", ".###."}},
    {'z', {"", "", "#####", "...#.", "..#..", ".#...", "#####"}},
    {'.', {"", "", "", "", "", "##", "##"}},
    {',', {"", "", "", "", "", ".##", ".##", "..#", ".#."}},
    {':', {"", "", "##", "##", "", "##", "##"}},
    {';', {"", "", ".##", ".##", "", ".##", ".##", "..#", ".#."}},
    {'-', {"", "", "", "####", "", "", ""}},
    {'+', {"", "..#..", "..#..", "#####", "..#..", "..#..", ""}},
    {'=', {"", "", "#####", "", "#####", "", ""}},
    {'(', {"..#", ".#.", "#..", "#..", "#..", ".#.", "..#"}},
    {')', {"#..", ".#.", "..#", "..#", "..#", ".#.", "#.."}},
    {'[', {"###", "#..", "#..", "#..", "#..", "#..", "###"}},
    {']', {"###", "..#", "..#", "..#", "..#", "..#", "###"}},
    {'/', {"....#", "....#", "...#.", "..#..", ".#...", "#....", "#...."}},
    {'%', {"##..#", "##..#", "...#.", "..#..", ".#...", "#..##", "#..##"}},
    {'_', {"", "", "", "", "", "", "", "#####"}},
    {'\'', {"#", "#", ""}},
    {'"', {"#.#", "#.#", ""}},
    {'*', {"", "#.#.#", ".###.", "#####", ".###.", "#.#.#", ""}},
    {'<', {"...#", "..#.", ".#..", "#...", ".#..", "..#.", "...#"}},
    {'>', {"#...", ".#..", "..#.", "...#", "..#.", ".#..", "#..."}},
    {'!', {"#", "#", "#", "#", "#", "", "#"}},
    {'?', {".###.", "#...#", "....#", "...#.", "..#..", "", "..#.."}},
    {'#', {".#.#.", ".#.#.", "#####", ".#.#.", "#####", ".#.#.", ".#.#."}},
    {'|', {"#", "#", "#", "#", "#", "#", "#", "#", "#"}},
    {'~', {"", "", "", ".#..#", "#.##.", "", ""}},
};

static const Glyph *glyph_for(char c) {
    const Glyph *q = NULL;
    for (size_t i = 0; i < sizeof FONT / sizeof FONT[0]; i++) {
        if (FONT[i].c == c) return &FONT[i];
        if (FONT[i].c == '?') q = &FONT[i];
    }
    return q;
}

// Inked columns [*c0, *c1] of a glyph (every row is at most FONT_W wide);
// digits keep all five, so that numbers in a column line up.
static void glyph_cols(const Glyph *g, int *c0, int *c1) {
    if (g->c >= '0' && g->c <= '9') {
        *c0 = 0, *c1 = FONT_W - 1;
        return;
    }
    *c0 = FONT_W, *c1 = -1;
    for (int r = 0; r < FONT_H; r++) {
        const char *s = g->rows[r];
        for (int c = 0; s && s[c] && c < FONT_W; c++)
            if (s[c] == '#') {
                if (c < *c0) *c0 = c;
                if (c > *c1) *c1 = c;
            }
    }
}

#define SPACE_W 3 // columns a space advances
#define SC 2      // the scale text is drawn at: glyph cells of 10 x 18 pixels

// ---- canvas ---------------------------------------------------------------
typedef struct {
    uint8_t *px; // (h, w, 3)
    float *cov;  // (h, w) coverage layer, 0 between series
    int w, h;
    int cx0, cy0, cx1, cy1; // where coverage may be drawn: [cx0, cx1) x [cy0, cy1)
} Canvas;

static void blend(Canvas *cv, int x, int y, uint32_t rgb, float a) {
    if (x < 0 || y < 0 || x >= cv->w || y >= cv->h || !(a > 0)) return;
    if (a > 1) a = 1;
    uint8_t *p = cv->px + ((size_t)y * cv->w + x) * 3;
    int col[3] = {(int)(rgb >> 16) & 255, (int)(rgb >> 8) & 255, (int)rgb & 255};
    for (int k = 0; k < 3; k++) p[k] = (uint8_t)lrintf(p[k] + (col[k] - p[k]) * a);
}

static void fill(Canvas *cv, int x0, int y0, int x1, int y1, uint32_t rgb) {
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++) blend(cv, x, y, rgb, 1);
}

static int text_width(const char *s, int sc) {
    int w = 0;
    for (; *s; s++) {
        if (*s == ' ' || *s == '\t') {
            w += (SPACE_W + 1) * sc;
            continue;
        }
        int c0, c1;
        glyph_cols(glyph_for(*s), &c0, &c1);
        if (c1 >= c0) w += (c1 - c0 + 2) * sc;
    }
    return w > 0 ? w - sc : 0; // no gap after the last glyph
}

// Copies s to out, cut short and ended with ".." if it is wider than maxw.
static void fit_text(char *out, size_t cap, const char *s, int maxw, int sc) {
    snprintf(out, cap, "%s", s);
    size_t n = strlen(out);
    if (text_width(out, sc) <= maxw) return;
    while (n > 0 && cap >= 3) {
        n--;
        if (n + 3 > cap) continue;
        memcpy(out + n, "..", 3);
        if (text_width(out, sc) <= maxw) return;
    }
    out[0] = 0;
}

// label + suffix, the label cut short so that the whole fits in maxw.
static void label_with(char *out, size_t cap, const char *label, const char *suffix, int maxw) {
    fit_text(out, cap, label, maxw - text_width(suffix, SC), SC);
    size_t n = strlen(out);
    snprintf(out + n, cap - n, "%s", suffix);
}

// Horizontal text with its top-left corner at (x, y), or, if `up`, text
// turned a quarter left (reading bottom to top) starting at (x, y), with the
// glyphs' tops towards smaller x.
static void draw_text(Canvas *cv, int x, int y, const char *s, int sc, uint32_t rgb, int up) {
    int pen = 0;
    for (; *s; s++) {
        if (*s == ' ' || *s == '\t') {
            pen += (SPACE_W + 1) * sc;
            continue;
        }
        const Glyph *g = glyph_for(*s);
        int c0, c1;
        glyph_cols(g, &c0, &c1);
        if (c1 < c0) continue;
        for (int r = 0; r < FONT_H; r++) {
            const char *row = g->rows[r];
            for (int c = c0; row && c <= c1 && c < (int)strlen(row); c++) {
                if (row[c] != '#') continue;
                int u = pen + (c - c0) * sc; // along the text
                int gx = up ? x + r * sc : x + u, gy = up ? y - u - sc : y + r * sc;
                fill(cv, gx, gy, gx + sc, gy + sc, rgb);
            }
        }
        pen += (c1 - c0 + 2) * sc;
    }
}

// Antialiased segment of width w into the coverage layer.
static void cov_seg(Canvas *cv, double ax, double ay, double bx, double by, double w) {
    if (!isfinite(ax) || !isfinite(ay) || !isfinite(bx) || !isfinite(by)) return;
    double r = w / 2 + 1;
    int x0 = (int)floor(fmin(ax, bx) - r), x1 = (int)ceil(fmax(ax, bx) + r);
    int y0 = (int)floor(fmin(ay, by) - r), y1 = (int)ceil(fmax(ay, by) + r);
    if (x0 < cv->cx0) x0 = cv->cx0;
    if (y0 < cv->cy0) y0 = cv->cy0;
    if (x1 > cv->cx1) x1 = cv->cx1;
    if (y1 > cv->cy1) y1 = cv->cy1;
    double dx = bx - ax, dy = by - ay, l2 = dx * dx + dy * dy;
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++) {
            double px = x + 0.5 - ax, py = y + 0.5 - ay;
            double t = l2 > 0 ? (px * dx + py * dy) / l2 : 0;
            t = t < 0 ? 0 : t > 1 ? 1 : t;
            double d = hypot(px - t * dx, py - t * dy);
            float c = (float)(w / 2 + 0.5 - d);
            if (c <= 0) continue;
            if (c > 1) c = 1;
            float *q = cv->cov + (size_t)y * cv->w + x;
            if (c > *q) *q = c;
        }
}

static void cov_disc(Canvas *cv, double x, double y, double radius) {
    cov_seg(cv, x, y, x, y, 2 * radius);
}

// Paints the coverage layer in `rgb` at `opacity` and clears it.
static void composite(Canvas *cv, uint32_t rgb, float opacity) {
    for (int y = cv->cy0; y < cv->cy1; y++)
        for (int x = cv->cx0; x < cv->cx1; x++) {
            float *q = cv->cov + (size_t)y * cv->w + x;
            if (*q > 0) blend(cv, x, y, rgb, *q * opacity);
            *q = 0;
        }
}

// A polyline in pixel coordinates. Consecutive points that fall in the same
// pixel column are merged into one vertical stroke over their extent, so a
// million points cost a million additions but only ~width strokes.
typedef struct {
    Canvas *cv;
    double w;
    int have, have_prev;
    long col, count;
    double fx, fy, lx, ly, mn, mx, px, py;
} Poly;

static void poly_flush(Poly *p) {
    if (!p->have) return;
    if (p->have_prev) cov_seg(p->cv, p->px, p->py, p->fx, p->fy, p->w);
    else if (p->count == 1) cov_disc(p->cv, p->fx, p->fy, p->w / 2);
    if (p->count > 1) cov_seg(p->cv, p->col + 0.5, p->mn, p->col + 0.5, p->mx, p->w);
    p->px = p->lx, p->py = p->ly, p->have_prev = 1, p->have = 0;
}

static void poly_add(Poly *p, double x, double y) {
    long c = (long)floor(x);
    if (p->have && c == p->col) {
        p->lx = x, p->ly = y, p->count++;
        if (y < p->mn) p->mn = y;
        if (y > p->mx) p->mx = y;
        return;
    }
    poly_flush(p);
    p->have = 1, p->col = c, p->count = 1;
    p->fx = p->lx = x, p->fy = p->ly = p->mn = p->mx = y;
}

// ---- axes -----------------------------------------------------------------
#define MAX_TICKS 64
typedef struct {
    int log;        // ticks and range in log10 units
    double lo, hi;  // the axis range (log10 of it when log)
    int nt, nminor;
    double t[MAX_TICKS], minor[MAX_TICKS * 4]; // tick values (not log10)
    char lab[MAX_TICKS][32];
} Axis;

static int usable(double v) { return isfinite(v) && fabs(v) <= 1e300; }

static double pt_x(PlotSeries s, long i) { return s.x ? s.x[i] : (double)i; }
static int pt_ok(PlotSeries s, long i) { return usable(pt_x(s, i)) && usable(s.y[i]); }

// 0 at the axis' low end, 1 at its high end.
static double axis_frac(const Axis *a, double v) {
    double u = a->log ? log10(v) : v;
    return (u - a->lo) / (a->hi - a->lo);
}

// 1, 2 or 5 x 10^k, the smallest at least r.
static double nice_step(double r) {
    double e = pow(10, floor(log10(r)));
    double f = r / e;
    return (f <= 1 + 1e-9 ? 1 : f <= 2 + 1e-9 ? 2 : f <= 5 + 1e-9 ? 5 : 10) * e;
}

// A tick number, with as many decimals as `step` needs; exponent form
// ("2e-5", "1.5e7") outside [1e-3, 1e6).
static void fmt_num(char *buf, size_t cap, double v, double step) {
    double a = fabs(v);
    if (a < fabs(step) * 1e-6) v = a = 0; // k * step rounding, and no "-0"
    if (a != 0 && (a >= 1e6 || a < 1e-3)) {
        int e = (int)floor(log10(a) + 1e-9);
        double m = v / pow(10, e);
        char mant[32];
        snprintf(mant, sizeof mant, "%.2f", m);
        char *end = mant + strlen(mant); // "2.50" -> "2.5", "2.00" -> "2"
        while (end[-1] == '0') *--end = 0;
        if (end[-1] == '.') *--end = 0;
        snprintf(buf, cap, "%se%d", mant, e);
    } else {
        int d = (int)-floor(log10(fabs(step)) + 1e-9);
        d = d < 0 ? 0 : d > 9 ? 9 : d;
        snprintf(buf, cap, "%.*f", d, v);
    }
}

// Linear ticks at multiples of `step` inside [lo, hi]; labels with a k/M/G
// suffix when `suffix` and the numbers are large (x axis: steps).
static void linear_ticks(Axis *a, double step, int suffix) {
    a->nt = 0;
    double k0 = ceil(a->lo / step - 1e-9), k1 = floor(a->hi / step + 1e-9);
    if (!(k1 - k0 < MAX_TICKS)) k1 = k0 + MAX_TICKS - 1; // not reached: steps are >= range / 8
    for (double k = k0; k <= k1; k++) a->t[a->nt++] = k * step;
    double big = fmax(fabs(a->lo), fabs(a->hi)), div = 1;
    const char *sfx = "";
    if (suffix && big >= 1e9) div = 1e9, sfx = "G";
    else if (suffix && big >= 1e6) div = 1e6, sfx = "M";
    else if (suffix && big >= 1e4) div = 1e3, sfx = "k";
    for (int i = 0; i < a->nt; i++) {
        fmt_num(a->lab[i], sizeof a->lab[i] - 2, a->t[i] / div, step / div);
        if (strcmp(a->lab[i], "0") != 0) strcat(a->lab[i], sfx);
    }
}

// Sets the range and ticks for data in [lo, hi] (have: any data at all).
// allow_log: logarithmic if positive and spanning more than a decade.
// x: the step axis (integer ticks, small padding, k/M suffixes).
static void axis_setup(Axis *a, double lo, double hi, int have, int allow_log, int x) {
    memset(a, 0, sizeof *a);
    if (!have) lo = 0, hi = 1;
    if (allow_log && lo > 0 && hi / lo > 10) {
        a->log = 1;
        double l0 = log10(lo), l1 = log10(hi), pad = 0.04 * (l1 - l0);
        a->lo = l0 - pad, a->hi = l1 + pad;
        double span = a->hi - a->lo;
        // Labelled: 1, 2, 5 x 10^k over up to 3 decades; 10^k (every
        // `every`-th decade) beyond. Unlabelled minor ticks at 2..9 x 10^k.
        int every = span <= 8 ? 1 : (int)nice_step(span / 8);
        for (int d = (int)floor(a->lo); d <= (int)ceil(a->hi); d++)
            for (int m = 1; m <= 9; m++) {
                double v = m * pow(10, d), lv = log10(v);
                if (lv < a->lo - 1e-9 || lv > a->hi + 1e-9) continue;
                int major = span <= 3 ? (m == 1 || m == 2 || m == 5) : (m == 1 && d % every == 0);
                if (major && a->nt < MAX_TICKS) {
                    a->t[a->nt] = v;
                    fmt_num(a->lab[a->nt], sizeof a->lab[0], v, v);
                    a->nt++;
                } else if (span <= 8 && a->nminor < MAX_TICKS * 4) {
                    a->minor[a->nminor++] = v;
                }
            }
        return;
    }
    if (hi - lo <= 1e-9 * fmax(fabs(lo), fabs(hi))) { // constant: centre it
        double c = (lo + hi) / 2, d = fabs(c) * 0.1;
        if (x && d < 1) d = 1;
        if (d == 0) d = 1;
        lo = c - d, hi = c + d;
    }
    double pad = (x ? 0.02 : 0.05) * (hi - lo);
    a->lo = lo - pad, a->hi = hi + pad;
    double step = nice_step((a->hi - a->lo) / 7);
    if (x && step < 1) step = 1;
    linear_ticks(a, step, x);
}

// Widest tick label, in pixels at scale sc.
static int axis_label_w(const Axis *a, int sc) {
    int w = 0;
    for (int i = 0; i < a->nt; i++) {
        int tw = text_width(a->lab[i], sc);
        if (tw > w) w = tw;
    }
    return w;
}

// ---- the plot ---------------------------------------------------------------
#define LINE_H (FONT_H * SC)    // one line of text
#define CAP_H (7 * SC)          // capitals and digits
#define COL_AXIS 0x303030
#define COL_TEXT 0x202020
#define COL_GRID 0xdcdcdc
#define COL_MINOR 0xefefef

typedef struct {
    double xlo, xhi, ylo, yhi;
    long nok;
} Extent;

static void extent_add(Extent *e, PlotSeries s) {
    for (long i = 0; i < s.n; i++) {
        if (!pt_ok(s, i)) continue;
        double x = pt_x(s, i), y = s.y[i];
        if (e->nok == 0) e->xlo = e->xhi = x, e->ylo = e->yhi = y;
        e->xlo = fmin(e->xlo, x), e->xhi = fmax(e->xhi, x);
        e->ylo = fmin(e->ylo, y), e->yhi = fmax(e->yhi, y);
        e->nok++;
    }
}

typedef struct {
    int x0, y0, x1, y1; // plot area: [x0, x1) x [y0, y1)
} Rect;

static double map_x(const Rect *r, const Axis *a, double v) {
    return r->x0 + axis_frac(a, v) * (r->x1 - r->x0);
}
static double map_y(const Rect *r, const Axis *a, double v) {
    return r->y1 - axis_frac(a, v) * (r->y1 - r->y0);
}

// EMA over the usable points in order, debiased; NaN where a point is not
// usable. Time constant: 1% of the points, at least one point (no smoothing).
#define SMOOTH_FRACTION 0.01
// Whether `nok` points get smoothed at all (a time constant over one point).
static int smoothed(long nok) { return SMOOTH_FRACTION * (double)nok > 1; }

static double *smooth(PlotSeries s, long nok) {
    double *out = xmalloc((size_t)(s.n > 0 ? s.n : 1) * sizeof *out);
    double tau = fmax(1.0, SMOOTH_FRACTION * (double)nok), beta = 1 - 1 / tau;
    double m = 0, bpow = 1;
    for (long i = 0; i < s.n; i++) {
        if (!pt_ok(s, i)) {
            out[i] = NAN;
            continue;
        }
        m = beta * m + (1 - beta) * s.y[i];
        bpow *= beta;
        out[i] = m / (1 - bpow);
    }
    return out;
}

static void draw_series(Canvas *cv, const Rect *r, const Axis *ax, const Axis *ay,
                        PlotSeries s, const double *yv, double width) {
    Poly p = {.cv = cv, .w = width};
    for (long i = 0; i < s.n; i++)
        if (pt_ok(s, i) && usable(yv[i]))
            poly_add(&p, map_x(r, ax, pt_x(s, i)), map_y(r, ay, yv[i]));
    poly_flush(&p);
}

typedef struct {
    char text[160];
    int kind; // 0 raw (faint thin line), 1 smoothed (thick), 2 held-out, 3 extra (line + marker)
} LegendItem;

#define SWATCH_W 34

static void draw_swatch(Canvas *cv, int x, int ymid, int kind) {
    int s0x = cv->cx0, s0y = cv->cy0, s1x = cv->cx1, s1y = cv->cy1;
    cv->cx0 = 0, cv->cy0 = 0, cv->cx1 = cv->w, cv->cy1 = cv->h;
    if (kind == 0) {
        // a short zigzag, as raw noisy points look
        for (int i = 0; i < 6; i++)
            cov_seg(cv, x + i * SWATCH_W / 6.0, ymid + (i % 2 ? -4 : 4),
                    x + (i + 1) * SWATCH_W / 6.0, ymid + (i % 2 ? 4 : -4), 1.2);
        composite(cv, PLOT_TRAIN_RGB, 0.35f);
    } else if (kind == 1) {
        cov_seg(cv, x, ymid, x + SWATCH_W, ymid, 2.6);
        composite(cv, PLOT_TRAIN_RGB, 1);
    } else {
        cov_seg(cv, x, ymid, x + SWATCH_W, ymid, 1.8);
        cov_disc(cv, x + SWATCH_W / 2.0, ymid, 4);
        composite(cv, kind == 2 ? PLOT_HELDOUT_RGB : PLOT_EXTRA_RGB, 1);
    }
    cv->cx0 = s0x, cv->cy0 = s0y, cv->cx1 = s1x, cv->cy1 = s1y;
}

// Lays the legend out in centred rows from y; returns the y below it.
static int draw_legend(Canvas *cv, const LegendItem *it, int n, int y) {
    const int gap = 8, sep = 30, row_h = LINE_H + 6, maxw = cv->w - 40;
    int i = 0;
    while (i < n) {
        int j = i, w = 0;
        while (j < n) {
            int iw = SWATCH_W + gap + text_width(it[j].text, SC);
            if (j > i && w + sep + iw > maxw) break;
            w += (j > i ? sep : 0) + iw;
            j++;
        }
        int x = (cv->w - w) / 2;
        if (x < 4) x = 4;
        for (int k = i; k < j; k++) {
            draw_swatch(cv, x, y + CAP_H / 2, it[k].kind);
            draw_text(cv, x + SWATCH_W + gap, y, it[k].text, SC, COL_TEXT, 0);
            x += SWATCH_W + gap + text_width(it[k].text, SC) + sep;
        }
        y += row_h;
        i = j;
    }
    return y;
}

// A series with markers (held-out, extra): line, then markers when they fit.
static void draw_marked(Canvas *cv, const Rect *r, const Axis *ax, const Axis *ay, PlotSeries s,
                        long nok, uint32_t rgb) {
    draw_series(cv, r, ax, ay, s, s.y, 1.8);
    if (nok <= (r->x1 - r->x0) / 10)
        for (long i = 0; i < s.n; i++)
            if (pt_ok(s, i)) cov_disc(cv, map_x(r, ax, pt_x(s, i)), map_y(r, ay, s.y[i]), 4);
    composite(cv, rgb, 1);
}

int plot_losses_png(const char *path, const PlotSpec *p) {
    PlotSeries train = p->train, heldout = p->heldout, extra = p->extra;
    const char *title = p->title;
    if (train.n < 0) train.n = 0;
    if (heldout.n < 0) heldout.n = 0;
    if (extra.n < 0) extra.n = 0;
    CHECK(train.n == 0 || train.y);
    CHECK(heldout.n == 0 || heldout.y);
    CHECK(extra.n == 0 || extra.y);
    CHECK(extra.n == 0 || !p->heldout_axis); // one right axis
    const char *tl = train.label ? train.label : "train loss";
    const char *hl = heldout.label ? heldout.label : "held-out";
    const char *xl_ = extra.label ? extra.label : "extra";
    const int W = PLOT_WIDTH, H = PLOT_HEIGHT, held_right = p->heldout_axis != NULL;
    const int dual = held_right || extra.n > 0;
    const char *right_label = held_right ? p->heldout_axis : p->extra_axis ? p->extra_axis : xl_;
    const uint32_t right_rgb = held_right ? PLOT_HELDOUT_RGB : PLOT_EXTRA_RGB;

    // et, eh, ee: each series; ex: every x; el, er: the left and right axes' y.
    Extent et = {0}, eh = {0}, ee = {0}, ex = {0}, el = {0}, er = {0};
    extent_add(&et, train);
    extent_add(&eh, heldout);
    extent_add(&ee, extra);
    extent_add(&ex, train);
    extent_add(&ex, heldout);
    extent_add(&ex, extra);
    extent_add(&el, train);
    extent_add(held_right ? &er : &el, heldout);
    extent_add(&er, extra);

    Axis ax, ay, ar;
    axis_setup(&ax, ex.xlo, ex.xhi, ex.nok > 0, 0, 1);
    axis_setup(&ay, el.ylo, el.yhi, el.nok > 0, 1, 0);
    axis_setup(&ar, er.ylo, er.yhi, er.nok > 0, 1, 0);

    Canvas cv = {.w = W, .h = H};
    cv.px = xmalloc((size_t)W * H * 3);
    memset(cv.px, 255, (size_t)W * H * 3);
    cv.cov = xcalloc((size_t)W * H, sizeof *cv.cov);

    // Legend (and title) decide the top margin.
    // Few points are drawn as they are; more get a faint raw line and the
    // EMA on top.
    int smooth_on = smoothed(et.nok);
    LegendItem items[4];
    int ni = 0, item_w = W - 40 - SWATCH_W - 8;
    label_with(items[ni].text, sizeof items[0].text, tl,
               et.nok == 0 ? " (no data)" : smooth_on ? ", smoothed" : "", item_w);
    items[ni++].kind = 1;
    if (smooth_on) snprintf(items[ni].text, sizeof items[0].text, "raw"), items[ni++].kind = 0;
    label_with(items[ni].text, sizeof items[0].text, hl,
               eh.nok == 0 ? (held_right ? " (right axis, no data)" : " (no data)")
                           : (held_right ? " (right axis)" : ""),
               item_w);
    items[ni++].kind = 2;
    if (extra.n > 0) {
        label_with(items[ni].text, sizeof items[0].text, xl_,
                   ee.nok == 0 ? " (right axis, no data)" : " (right axis)", item_w);
        items[ni++].kind = 3;
    }

    int y = 14;
    if (title && *title) {
        char t[256];
        fit_text(t, sizeof t, title, W - 20, SC);
        int tx = (W - text_width(t, SC) - 1) / 2;
        draw_text(&cv, tx, y, t, SC, COL_TEXT, 0); // bold: twice, a pixel apart
        draw_text(&cv, tx + 1, y, t, SC, COL_TEXT, 0);
        y += LINE_H + 10;
    }
    y = draw_legend(&cv, items, ni, y);

    Rect r;
    r.y0 = y + 10;
    r.y1 = H - (10 + LINE_H + 8 + LINE_H + 8);
    r.x0 = 10 + LINE_H + 10 + axis_label_w(&ay, SC) + 10;
    r.x1 = dual ? W - (10 + LINE_H + 10 + axis_label_w(&ar, SC) + 10) : W - 30;
    if (r.y1 - r.y0 < 100) r.y0 = r.y1 - 100; // a legend gone wild overlaps, never inverts
    if (r.x1 - r.x0 < 200) r.x0 = r.x1 - 200;

    // Thin out the x ticks until their labels leave room between them.
    {
        double step = ax.nt > 1 ? ax.t[1] - ax.t[0] : 1;
        for (int guard = 0; guard < 20; guard++) {
            int lw = axis_label_w(&ax, SC) + 24;
            double px_per_tick = ax.nt > 1 ? (r.x1 - r.x0) * (step / (ax.hi - ax.lo)) : 1e9;
            if (px_per_tick >= lw) break;
            step = nice_step(step * 1.5);
            linear_ticks(&ax, step, 1);
        }
    }

    // Grid: minor (log) lines, then major lines, then the frame.
    for (int i = 0; i < ay.nminor; i++) {
        int py = (int)lrint(map_y(&r, &ay, ay.minor[i]));
        fill(&cv, r.x0, py, r.x1, py + 1, COL_MINOR);
    }
    for (int i = 0; i < ay.nt; i++) {
        int py = (int)lrint(map_y(&r, &ay, ay.t[i]));
        fill(&cv, r.x0, py, r.x1, py + 1, COL_GRID);
    }
    for (int i = 0; i < ax.nt; i++) {
        int px = (int)lrint(map_x(&r, &ax, ax.t[i]));
        fill(&cv, px, r.y0, px + 1, r.y1, COL_GRID);
    }

    // Series, clipped to the plot area.
    cv.cx0 = r.x0, cv.cy0 = r.y0, cv.cx1 = r.x1, cv.cy1 = r.y1;
    const Axis *hy = held_right ? &ar : &ay;
    if (smooth_on) {
        draw_series(&cv, &r, &ax, &ay, train, train.y, 1.0);
        composite(&cv, PLOT_TRAIN_RGB, 0.35f);
    }
    if (et.nok > 0) {
        double *ema = smooth(train, et.nok);
        draw_series(&cv, &r, &ax, &ay, train, ema, et.nok > 1 ? 2.6 : 8);
        composite(&cv, PLOT_TRAIN_RGB, 1);
        free(ema);
    }
    if (eh.nok > 0) draw_marked(&cv, &r, &ax, hy, heldout, eh.nok, PLOT_HELDOUT_RGB);
    if (ee.nok > 0) draw_marked(&cv, &r, &ax, &ar, extra, ee.nok, PLOT_EXTRA_RGB);
    cv.cx0 = 0, cv.cy0 = 0, cv.cx1 = W, cv.cy1 = H;
    if (et.nok + eh.nok + ee.nok == 0) {
        const char *msg = "no data";
        draw_text(&cv, (r.x0 + r.x1 - text_width(msg, SC)) / 2, (r.y0 + r.y1 - CAP_H) / 2, msg,
                  SC, 0x808080, 0);
    }

    // Frame, ticks and their numbers.
    fill(&cv, r.x0 - 1, r.y0 - 1, r.x1 + 1, r.y0, COL_AXIS);
    fill(&cv, r.x0 - 1, r.y1, r.x1 + 1, r.y1 + 1, COL_AXIS);
    fill(&cv, r.x0 - 1, r.y0 - 1, r.x0, r.y1 + 1, COL_AXIS);
    fill(&cv, r.x1, r.y0 - 1, r.x1 + 1, r.y1 + 1, COL_AXIS);
    uint32_t lcol = dual ? PLOT_TRAIN_RGB : COL_TEXT;
    for (int i = 0; i < ay.nminor; i++) {
        int py = (int)lrint(map_y(&r, &ay, ay.minor[i]));
        fill(&cv, r.x0 - 3, py, r.x0, py + 1, COL_AXIS);
    }
    for (int i = 0; i < ay.nt; i++) {
        int py = (int)lrint(map_y(&r, &ay, ay.t[i]));
        fill(&cv, r.x0 - 6, py, r.x0, py + 1, COL_AXIS);
        draw_text(&cv, r.x0 - 10 - text_width(ay.lab[i], SC), py - CAP_H / 2, ay.lab[i], SC,
                  COL_TEXT, 0);
    }
    for (int i = 0; i < ax.nt; i++) {
        int px = (int)lrint(map_x(&r, &ax, ax.t[i]));
        fill(&cv, px, r.y1, px + 1, r.y1 + 6, COL_AXIS);
        int tw = text_width(ax.lab[i], SC), tx = px - tw / 2;
        if (tx + tw > W - 2) tx = W - 2 - tw;
        draw_text(&cv, tx, r.y1 + 10, ax.lab[i], SC, COL_TEXT, 0);
    }
    const char *xl = "step";
    draw_text(&cv, (r.x0 + r.x1 - text_width(xl, SC)) / 2, r.y1 + 10 + LINE_H + 8, xl, SC,
              COL_TEXT, 0);
    char ylab[200], rlab[200];
    label_with(ylab, sizeof ylab, tl, ay.log ? " (log scale)" : "", r.y1 - r.y0);
    label_with(rlab, sizeof rlab, dual ? right_label : "", dual && ar.log ? " (log scale)" : "",
               r.y1 - r.y0);
    int yw = text_width(ylab, SC), ymid = (r.y0 + r.y1) / 2;
    draw_text(&cv, 10, ymid + yw / 2, ylab, SC, lcol, 1);
    if (dual) {
        for (int i = 0; i < ar.nminor; i++) {
            int py = (int)lrint(map_y(&r, &ar, ar.minor[i]));
            fill(&cv, r.x1 + 1, py, r.x1 + 4, py + 1, COL_AXIS);
        }
        for (int i = 0; i < ar.nt; i++) {
            int py = (int)lrint(map_y(&r, &ar, ar.t[i]));
            fill(&cv, r.x1 + 1, py, r.x1 + 7, py + 1, COL_AXIS);
            draw_text(&cv, r.x1 + 11, py - CAP_H / 2, ar.lab[i], SC, COL_TEXT, 0);
        }
        int rw = text_width(rlab, SC);
        draw_text(&cv, W - 10 - LINE_H, ymid + rw / 2, rlab, SC, right_rgb, 1);
    }

    int rc = png_write(path, cv.px, W, H, 3);
    free(cv.px);
    free(cv.cov);
    return rc;
}
