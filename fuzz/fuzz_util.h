// fuzz_util.h: writing a fuzz input to a file, for readers that take a path.
#pragma once
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// A per-process scratch directory, created on first use.
static const char *fuzz_dir(void) {
    static char dir[64];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/ldm-fuzz.XXXXXX");
        if (!mkdtemp(dir)) abort();
    }
    return dir;
}

static void fuzz_write(const char *path, const unsigned char *d, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (n && fwrite(d, 1, n, f) != n) abort();
    if (fclose(f) != 0) abort();
}
