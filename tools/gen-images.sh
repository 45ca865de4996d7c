#!/bin/sh
# gen-images.sh: writes N generated RGB PNGs (SxS) into a folder, for
# measuring the image readers on a large folder without shipping data.
# Each image mixes a two-colour gradient, a few filled circles and
# rectangles, and per-pixel noise, from a generator seeded by the image's
# number, so the folder is the same on every run and the PNGs compress like
# photographs (noise), not like flat drawings.
# usage: tools/gen-images.sh OUT_DIR [N=100000] [S=64]
# Needs cc and stb (Debian libstb-dev); files go into 1000-image subfolders.
set -eu
[ $# -ge 1 ] || { echo "usage: $0 OUT_DIR [N] [S]" >&2; exit 2; }
out=$1 n=${2:-100000} s=${3:-64}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/gen.c" <<'EOF'
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

static uint64_t next(uint64_t *x) { // xorshift64*
    *x ^= *x >> 12, *x ^= *x << 25, *x ^= *x >> 27;
    return *x * 0x2545f4914f6cdd1dULL;
}
static int below(uint64_t *x, int n) { return (int)(next(x) % (uint64_t)n); }
static uint8_t clamp(int v) { return v < 0 ? 0 : v > 255 ? 255 : (uint8_t)v; }

int main(int argc, char **argv) {
    const char *out = argv[1];
    int n = atoi(argv[2]), S = atoi(argv[3]);
    int *img = malloc(sizeof(int) * S * S * 3); // (S, S, 3)
    uint8_t *px = malloc((size_t)S * S * 3);   // (S, S, 3)
    char path[4096];
    for (int i = 0; i < n; i++) {
        uint64_t r = 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1);
        int a[3], b[3];
        for (int c = 0; c < 3; c++) a[c] = below(&r, 256), b[c] = below(&r, 256);
        int diag = below(&r, 3); // horizontal, vertical or diagonal gradient
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++) {
                int t = diag == 0 ? x : diag == 1 ? y : (x + y) / 2;
                for (int c = 0; c < 3; c++)
                    img[(y * S + x) * 3 + c] = a[c] + (b[c] - a[c]) * t / (S - 1);
            }
        for (int k = below(&r, 6) + 1; k > 0; k--) {
            int col[3] = {below(&r, 256), below(&r, 256), below(&r, 256)};
            int cx = below(&r, S), cy = below(&r, S), rad = below(&r, S / 3) + 2;
            int circle = below(&r, 2);
            for (int y = 0; y < S; y++)
                for (int x = 0; x < S; x++) {
                    int dx = x - cx, dy = y - cy;
                    int in = circle ? dx * dx + dy * dy <= rad * rad
                                    : abs(dx) <= rad && abs(dy) <= rad / 2 + 1;
                    if (in)
                        for (int c = 0; c < 3; c++) img[(y * S + x) * 3 + c] = col[c];
                }
        }
        int amp = below(&r, 24) + 4;
        for (int p = 0; p < S * S * 3; p++) px[p] = clamp(img[p] + below(&r, 2 * amp + 1) - amp);
        snprintf(path, sizeof path, "%s/%03d", out, i / 1000);
        if (i % 1000 == 0) mkdir(path, 0755);
        snprintf(path, sizeof path, "%s/%03d/%06d.png", out, i / 1000, i);
        if (!stbi_write_png(path, S, S, 3, px, S * 3)) {
            fprintf(stderr, "%s: cannot write\n", path);
            return 1;
        }
    }
    free(img), free(px);
    return 0;
}
EOF
cc -O2 -I/usr/include/stb -o "$work/gen" "$work/gen.c" -lm
mkdir -p "$out"
"$work/gen" "$out" "$n" "$s"
echo "gen-images: $n images of ${s}x$s in $out"
