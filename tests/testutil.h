// testutil.h: golden-file access and comparisons for the C tests.
// Every check counts failures; main() returns non-zero if any check failed.
#pragma once
#include <stddef.h>

extern int test_failures;

// Reads float dataset `name` from golden file `path` (a path under
// tests/golden/, resolved against GOLDEN_DIR). Aborts (test bug) if missing.
// *n receives the element count. Free with free().
float *golden_read(const char *file, const char *name, size_t *n);
int *golden_read_int(const char *file, const char *name, size_t *n);
// 1 if the dataset exists.
int golden_has(const char *file, const char *name);

// max |got - ref| / max |ref| <= tol; prints a PASS/FAIL line, returns 1 on pass.
int check_close(const char *what, const float *got, const float *ref, size_t n, double tol);
// Generic boolean check with a message.
int check_true(const char *what, int cond);

// Prints the summary; returns the process exit code.
int test_summary(const char *suite);
