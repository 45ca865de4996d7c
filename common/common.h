// common.h: the two kinds of errors, allocation, timing.
// Programmer bugs and out-of-memory abort with file:line (CHECK, xmalloc).
// Anything a user's file or path can cause is reported with errorf() and
// returned as a status (0 ok, -1 error) up to main, which exits non-zero.
#pragma once
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,   \
                    #cond);                                                    \
            abort();                                                           \
        }                                                                      \
    } while (0)

void *xmalloc_(size_t n, const char *file, int line);
void *xcalloc_(size_t n, size_t size, const char *file, int line);
#define xmalloc(n) xmalloc_((n), __FILE__, __LINE__)
#define xcalloc(n, size) xcalloc_((n), (size), __FILE__, __LINE__)
// 64-byte aligned allocation (for GEMM operands); release with free().
void *xmalloc_aligned_(size_t n, const char *file, int line);
#define xmalloc_aligned(n) xmalloc_aligned_((n), __FILE__, __LINE__)

// Prints "error: <message>" on stderr and returns -1, so that
// `return errorf("%s: not an IDX file", path);` reads naturally.
int errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void warnf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

double now_seconds(void); // monotonic clock

// a * b with overflow detection: returns 0 and sets *out, or -1 on overflow.
int mul_size(size_t a, size_t b, size_t *out);

// Atomic writes: a file is written at a temporary path beside its target
// (same folder, so rename() is atomic) and renamed over the target when
// whole.
//
// Writes the temporary path for `path`, "<path>.tmp.<pid>", into out[cap]
// (PATH_MAX bytes); -1 with a message when it does not fit.
int tmp_path_for(char *out, size_t cap, const char *path);
// tmp_path_for, and starts the write: until commit_tmp_file or
// discard_tmp_file the temporary's name is held where a second SIGINT or
// SIGTERM (interrupt_install), which exits at once, removes it first. One
// write at a time.
int tmp_begin(char *out, size_t cap, const char *path);
// fsync()s `tmp`, then renames it over `path`; -1 with a message on failure
// (the temporary is removed then). Ends the write.
int commit_tmp_file(const char *tmp, const char *path);
// Removes `tmp` (a write that failed or was given up). Ends the write.
void discard_tmp_file(const char *tmp);

// The index of the first NaN or infinity in x[0..n), or n if there is none.
size_t first_nonfinite(const float *x, size_t n);

// 64-bit FNV-1a over bytes, continuing from `h` (start with FNV_OFFSET).
#define FNV_OFFSET 0xcbf29ce484222325ULL
uint64_t fnv1a64(uint64_t h, const void *data, size_t n);

// Sets both OpenMP's and OpenBLAS's thread count (the OpenMP build of
// OpenBLAS shares OpenMP's pool, so one setting covers both).
void set_threads(int n);

// SIGINT/SIGTERM -> a flag the training loops poll between steps, so an
// interrupt ends with a checkpoint instead of a lost run. A second signal
// while the first is being handled exits at once (status 128 + signal),
// removing the temporary file of an atomic write in progress (tmp_begin).
void interrupt_install(void);
int interrupted(void);
