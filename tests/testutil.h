// testutil.h: golden-file access, comparisons and the helpers the C tests
// share (stderr capture, file copies, deterministic fills, LPIPS files).
// Every check counts failures; main() returns non-zero if any check failed.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "h5attr.h"
#include "lpips.h"
#include "params.h"

extern int test_failures;

// ---- golden files (paths under tests/golden/, resolved against GOLDEN_DIR)

// Reads float dataset `name` from golden file `file`. Aborts (test bug) if
// missing. *n receives the element count. Free with free().
float *golden_read(const char *file, const char *name, size_t *n);
int *golden_read_int(const char *file, const char *name, size_t *n);
double *golden_read_double(const char *file, const char *name, size_t *n);
// golden_read that aborts unless the dataset holds exactly `want` floats.
float *golden_read_n(const char *file, const char *name, size_t want);
// The integer dataset `group`/cfg, which must hold `want` values.
int *golden_read_cfg(const char *file, const char *group, size_t want);
// "group/name" ("name" for an empty group), in one of 4 static buffers used
// in turn, so a call may take a few.
const char *golden_name(const char *group, const char *name);
// 1 if the dataset exists.
int golden_has(const char *file, const char *name);
// Number of groups prefix_0, prefix_1, ... in the golden file.
int golden_count(const char *file, const char *prefix);

// ---- checks

// max |got - ref| / max |ref| <= tol; prints a PASS/FAIL line, returns 1 on pass.
int check_close(const char *what, const float *got, const float *ref, size_t n, double tol);
// check_close of got against mul * ref (mul = 2 after a second backward into
// the same buffers: they accumulate), named "grp what".
void check_scaled(const char *grp, const char *what, const float *got, const float *ref,
                  size_t n, float mul, double tol);
// Generic boolean check with a message.
int check_true(const char *what, int cond);
// The table t lists the golden's state_dict (datasets group/param_names,
// newline-separated names as ints, and group/param_sizes), in order, with its
// sizes.
int check_golden_table(const char *what, const ParamTable *t, const char *file,
                       const char *group);
// Per-tensor max|got - ref| / max|ref| over the table; one line naming the
// worst tensor. A tensor whose reference is zero to rounding is compared
// against the largest reference gradient instead (see testutil.c).
void check_param_grads(const char *what, const ParamTable *t, const float *got,
                       const float *ref, double tol);
// rc must be -1 and the last captured message hold "error: ", each non-NULL
// needle and no HDF5 error stack; prints the message.
void check_error(const char *what, int rc, const char *needle1, const char *needle2);

// Prints the summary; returns the process exit code.
int test_summary(const char *suite);

// ---- buffers

// n floats, all NaN (a forward that forgets an element fails its check).
float *nan_buf(size_t n);
// n zero floats (n may be 0).
float *zero_buf(size_t n);
// sum a[i] b[i] in double.
double dot_d(const float *a, const float *b, size_t n);
// 1 if the n floats are bit-identical.
int same_bits(const float *a, const float *b, size_t n);

// ---- deterministic fills, twins of the Python generators' (the goldens
// depend on their exact values): k / 2^23 - 1 for 24-bit k, exact in float32.

// gen_gan.py's det_fill: k from a 64-bit LCG started at seed.
void det_fill_lcg(float *x, size_t n, uint64_t seed);
// gen_lpips.py's det_fill: k from splitmix64's finaliser of (seed << 32) + i.
void det_fill_splitmix(float *x, size_t n, uint64_t seed);

// ---- stderr capture, to check the messages of failing calls

// From capture_begin to capture_end, stderr (fd 2) goes to a temporary file;
// capture_end returns what was written (truncated to 16 KB), valid until
// the next capture_end.
void capture_begin(void);
const char *capture_end(void);

// ---- files

// Copies src to dst (aborts on failure).
void copy_file(const char *dst, const char *src);
// Copies the first frac of src's bytes to dst.
void copy_file_prefix(const char *dst, const char *src, double frac);
// Writes n bytes to path.
void write_file(const char *path, const void *data, size_t n);
// Removes path and, for a folder, everything in it (links not followed);
// 0, or -1 when something could not be removed.
int remove_tree(const char *path);

// Writes an LPIPS file of stage widths w at path as a user's would have it:
// kind "lpips", width1..width5, the tensors of lpips_table(w) with values
// from fill(t, p); edit (may be NULL) then changes the table, values or
// attributes (it may replace the table and *p).
typedef void (*LpipsFill)(const ParamTable *t, float *p);
typedef void (*LpipsEdit)(ParamTable *t, float **p, Attrs *a);
void lpips_write_test_file(const char *path, const int w[LPIPS_LAYERS], LpipsFill fill,
                           LpipsEdit edit);
