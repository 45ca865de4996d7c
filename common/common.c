#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "paths.h"

void *xmalloc_(size_t n, const char *file, int line) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "%s:%d: out of memory (%zu bytes)\n", file, line, n);
        abort();
    }
    return p;
}

void *xcalloc_(size_t n, size_t size, const char *file, int line) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) {
        fprintf(stderr, "%s:%d: out of memory (%zu x %zu bytes)\n", file, line,
                n, size);
        abort();
    }
    return p;
}

void *xmalloc_aligned_(size_t n, const char *file, int line) {
    void *p = NULL;
    // Activations, gradients and scratch of 2 MB and more go on transparent
    // huge pages, which this kind of kernel (THP "madvise") grants only on
    // request: fewer TLB misses, +1-2% a step (docs/BENCHMARKS.md). The
    // request is advice; without it the buffer works the same.
    size_t huge = (size_t)2 << 20, align = n >= huge ? huge : 64;
    size_t size = n ? (n + align - 1) / align * align : 64;
    if (posix_memalign(&p, align, size) != 0) {
        fprintf(stderr, "%s:%d: out of memory (%zu bytes)\n", file, line, n);
        abort();
    }
    if (align == huge) madvise(p, size, MADV_HUGEPAGE);
    return p;
}

int errorf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return -1;
}

void warnf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("warning: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return -1;
    *out = a * b;
    return 0;
}

int tmp_path_for(char *out, size_t cap, const char *path) {
    return path_printf(out, cap, "%s.tmp.%d", path, (int)getpid());
}

// The temporary file of the atomic write in progress, for the signal handler
// (on_signal) to remove: the name is complete before the flag says so.
static char g_tmp[PATH_MAX];
static volatile sig_atomic_t g_tmp_live = 0;

int tmp_begin(char *out, size_t cap, const char *path) {
    if (tmp_path_for(out, cap, path)) return -1;
    CHECK(!g_tmp_live); // one atomic write at a time
    CHECK(strlen(out) < sizeof g_tmp);
    strcpy(g_tmp, out);
    g_tmp_live = 1;
    return 0;
}

void discard_tmp_file(const char *tmp) {
    unlink(tmp);
    g_tmp_live = 0;
}

int commit_tmp_file(const char *tmp, const char *path) {
    int fd = open(tmp, O_RDONLY);
    if (fd < 0) {
        int e = errno;
        discard_tmp_file(tmp);
        return errorf("%s: cannot reopen to sync: %s", tmp, strerror(e));
    }
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc != 0) {
        discard_tmp_file(tmp);
        return errorf("%s: fsync failed: %s", path, strerror(e));
    }
    if (rename(tmp, path) != 0) {
        e = errno;
        discard_tmp_file(tmp);
        return errorf("%s: cannot rename temporary file into place: %s", path,
                      strerror(e));
    }
    g_tmp_live = 0;
    return 0;
}

size_t first_nonfinite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return i;
    return n;
}

uint64_t fnv1a64(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

void openblas_set_num_threads(int); // from OpenBLAS (not in cblas.h everywhere)

void set_threads(int n) {
    if (n < 1) n = 1;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

static volatile sig_atomic_t g_interrupted = 0;

static void on_signal(int sig) {
    if (g_interrupted) {
        // unlink() and _exit() are async-signal-safe.
        if (g_tmp_live) unlink(g_tmp);
        _exit(128 + sig);
    }
    g_interrupted = sig;
}

void interrupt_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int interrupted(void) { return g_interrupted != 0; }
