// plot.h: loss curves as a PNG, drawn by hand (own bitmap font, no plotting
// library) and written atomically through png_write (image.h).
#pragma once

// The picture's size in pixels.
#define PLOT_WIDTH 960
#define PLOT_HEIGHT 600
// Colours (0xRRGGBB): the smoothed training curve (its raw points are the
// same colour, faint), the held-out series and an extra one (lines and point
// markers).
#define PLOT_TRAIN_RGB 0x1f6fb4
#define PLOT_HELDOUT_RGB 0xe8590c
#define PLOT_EXTRA_RGB 0x2f9e44

// A series of (x, y) points, drawn in the order given. x may be NULL
// (x = 0, 1, ..., n-1); y may be NULL only when n <= 0. Points whose x or y
// is NaN or infinite (or beyond +-1e300) are skipped. label may be NULL.
typedef struct {
    const double *x, *y;
    long n;
    const char *label;
} PlotSeries;

// What one plot shows.
typedef struct {
    const char *title;        // may be NULL
    PlotSeries train;         // left axis: raw points and their smoothed curve
    PlotSeries heldout;       // points joined by lines, with markers
    const char *heldout_axis; // NULL: heldout shares the left axis; else it gets
                              // the right axis, with this label
    PlotSeries extra;         // optional (n = 0: none): a figure in other units
                              // (e.g. the FD of samples), on the right axis, in
                              // PLOT_EXTRA_RGB; only when heldout_axis is NULL
    const char *extra_axis;   // its axis label
} PlotSpec;

// Draws `train` (over 100 points: the raw points as a faint line, and on top
// an exponential moving average over them in order, time constant 1% of the
// points, debiased at the start; up to 100: the points as they are), heldout
// and extra (points joined by lines, with markers) against x, with the title,
// a legend, x axis "step" (k/M suffixes for large steps) and a left y axis
// named after train's label. A y axis is logarithmic when its values are all
// positive and span more than a decade (its label then says "log scale");
// ticks are at 1, 2, 5 x 10^k. The right axis, when one series has it, has
// its own ticks and the label in that series' colour.
//
// Empty series, single points, constant values and huge step counts all
// draw. Returns 0, or -1 with a message naming `path` if it cannot write.
int plot_losses_png(const char *path, const PlotSpec *p);
