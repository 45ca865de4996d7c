// test_datasets: image I/O, the image set loaders (Fashion-MNIST, IDX files,
// folders) and the HDF5 latent cache, including hostile inputs that must be
// rejected with -1 rather than crash. Fixtures are written to a mkdtemp dir.
#define _GNU_SOURCE
#include <dirent.h>
#include <hdf5.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "common.h"
#include "image.h"
#include "imageset.h"
#include "latent_cache.h"
#include "testutil.h"

static char tmpdir[256];

static const char *tpath(const char *name) {
    static char buf[8][512];
    static int k = 0;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static void write_gz(const char *path, const void *data, size_t n) {
    gzFile f = gzopen(path, "wb");
    CHECK(f != NULL);
    CHECK(gzwrite(f, data, (unsigned)n) == (int)n);
    gzclose(f);
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

// Any "*.tmp.*" left in dir means an atomic write leaked its temporary.
static int has_tmp_files(const char *dir) {
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    struct dirent *e;
    int found = 0;
    while ((e = readdir(d)) != NULL)
        if (strstr(e->d_name, ".tmp.")) found = 1;
    closedir(d);
    return found;
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

// An IDX image file: header for (n, rows, cols) and `have` data bytes
// (pixel k = k * 7 + 1 mod 256, never 0 so padding is distinguishable).
static size_t make_idx_images(uint8_t *buf, uint32_t magic, uint32_t n, uint32_t rows,
                              uint32_t cols, size_t have) {
    put_be32(buf, magic);
    put_be32(buf + 4, n);
    put_be32(buf + 8, rows);
    put_be32(buf + 12, cols);
    for (size_t k = 0; k < have; k++) buf[16 + k] = (uint8_t)((k * 7 + 1) % 255 + 1);
    return 16 + have;
}

static size_t make_idx_labels(uint8_t *buf, uint32_t magic, uint32_t n, size_t have) {
    put_be32(buf, magic);
    put_be32(buf + 4, n);
    for (size_t k = 0; k < have; k++) buf[8 + k] = (uint8_t)(k % 10);
    return 8 + have;
}

static int load_fails(const char *what, const char *source, int size, int channels) {
    ImageSet s;
    int rc = imageset_load(&s, source, size, channels);
    if (rc == 0) imageset_free(&s);
    return check_true(what, rc == -1);
}

// ---------------------------------------------------------------- Fashion-MNIST

// Reads a whole gz file independently of the loader.
static uint8_t *slurp_gz(const char *path, size_t *n) {
    gzFile f = gzopen(path, "rb");
    CHECK(f != NULL);
    size_t cap = 1 << 20, len = 0;
    uint8_t *buf = xmalloc(cap);
    int r;
    while ((r = gzread(f, buf + len, (unsigned)(cap - len))) > 0) {
        len += (size_t)r;
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            CHECK(buf != NULL);
        }
    }
    gzclose(f);
    *n = len;
    return buf;
}

static void test_fashion_split(const char *name, const char *split, int N) {
    char ipath[512], lpath[512], what[256];
    snprintf(ipath, sizeof ipath, "%s/%s-images-idx3-ubyte.gz", FASHION_MNIST_DIR, split);
    snprintf(lpath, sizeof lpath, "%s/%s-labels-idx1-ubyte.gz", FASHION_MNIST_DIR, split);
    ImageSet s;
    snprintf(what, sizeof what, "%s loads", name);
    if (!check_true(what, imageset_load(&s, name, 32, 1) == 0)) return;
    snprintf(what, sizeof what, "%s N=%d C=1 S=32 (got N=%d C=%d S=%d)", name, N, s.N, s.C, s.S);
    check_true(what, s.N == N && s.C == 1 && s.S == 32 && s.labels != NULL);
    if (s.N != N || !s.labels) {
        imageset_free(&s);
        return;
    }
    // Independent read of the gz files: every pixel at +2 offset, every label.
    size_t ni, nl;
    uint8_t *raw = slurp_gz(ipath, &ni), *lab = slurp_gz(lpath, &nl);
    CHECK(ni == 16 + (size_t)N * 784 && nl == 8 + (size_t)N);
    long bad_px = 0, bad_border = 0, bad_lab = 0;
    int counts[10] = {0};
    for (int i = 0; i < N; i++) {
        const uint8_t *img = s.pixels + (size_t)i * 1024;
        for (int y = 0; y < 32; y++)
            for (int x = 0; x < 32; x++) {
                int inside = y >= 2 && y < 30 && x >= 2 && x < 30;
                uint8_t v = img[y * 32 + x];
                if (inside) bad_px += v != raw[16 + (size_t)i * 784 + (y - 2) * 28 + (x - 2)];
                else bad_border += v != 0;
            }
        if (s.labels[i] < 0 || s.labels[i] > 9 || s.labels[i] != lab[8 + i]) bad_lab++;
        else counts[s.labels[i]]++;
    }
    snprintf(what, sizeof what, "%s pixels match the gz file (%ld mismatches)", name, bad_px);
    check_true(what, bad_px == 0);
    snprintf(what, sizeof what, "%s padding is 0 (%ld non-zero)", name, bad_border);
    check_true(what, bad_border == 0);
    snprintf(what, sizeof what, "%s labels in 0..9 and match (%ld bad), first label %d", name,
             bad_lab, s.labels[0]);
    check_true(what, bad_lab == 0 && s.labels[0] == 9);
    int balanced = 1;
    for (int k = 0; k < 10; k++) balanced &= counts[k] == N / 10;
    snprintf(what, sizeof what, "%s has %d items per class", name, N / 10);
    check_true(what, balanced);

    // Float batch: border exactly -1, interior = x / 127.5 - 1, range [-1, 1].
    int idx[4] = {0, 1, N - 1, 12345 % N};
    float *out = xmalloc(4 * 1024 * sizeof(float)); // (4, 1, 32, 32)
    imageset_batch(out, &s, idx, 4, NULL);
    int border_ok = 1, vals_ok = 1;
    float mx = -2;
    for (int b = 0; b < 4; b++)
        for (int y = 0; y < 32; y++)
            for (int x = 0; x < 32; x++) {
                float v = out[b * 1024 + y * 32 + x];
                int inside = y >= 2 && y < 30 && x >= 2 && x < 30;
                if (!inside && v != -1.0f) border_ok = 0;
                float want = (float)s.pixels[(size_t)idx[b] * 1024 + y * 32 + x] / 127.5f - 1.0f;
                if (v != want || v < -1.0f || v > 1.0f) vals_ok = 0;
                if (v > mx) mx = v;
            }
    snprintf(what, sizeof what, "%s batch border is exactly -1", name);
    check_true(what, border_ok);
    snprintf(what, sizeof what, "%s batch values x/127.5-1 in [-1,1] (max %.3f)", name, mx);
    check_true(what, vals_ok && mx > 0.5f);
    free(out);
    free(raw);
    free(lab);
    imageset_free(&s);
}

static void test_fashion_variants(void) {
    // 3 channels: grey replicated.
    ImageSet s;
    if (check_true("fashion-mnist-test loads with 3 channels", imageset_load(&s, "fashion-mnist-test", 32, 3) == 0)) {
        int same = s.N == 10000 && s.C == 3;
        for (int i = 0; same && i < s.N; i += 997)
            for (int c = 1; c < 3; c++)
                same &= !memcmp(s.pixels + ((size_t)i * 3 + c) * 1024, s.pixels + (size_t)i * 3 * 1024, 1024);
        check_true("3-channel Fashion-MNIST replicates grey", same);
        imageset_free(&s);
    }
    // Smaller than 28: resized and cropped.
    if (check_true("fashion-mnist-test loads at size 16", imageset_load(&s, "fashion-mnist-test", 16, 1) == 0)) {
        check_true("size 16: N=10000 S=16", s.N == 10000 && s.S == 16 && s.C == 1);
        imageset_free(&s);
    }
}

// ---------------------------------------------------------------- IDX files

static void test_idx_valid(void) {
    uint8_t buf[4096];
    // 3 images of 4 (rows) x 5 (cols), raw, with labels beside it (gz).
    size_t n = make_idx_images(buf, 0x803, 3, 4, 5, 60);
    write_file(tpath("small-images-idx3-ubyte"), buf, n);
    n = make_idx_labels(buf, 0x801, 3, 3);
    write_gz(tpath("small-labels-idx1-ubyte.gz"), buf, n);
    ImageSet s;
    // Size 7: rows pad 1 top / 2 bottom, cols pad 1 left / 1 right.
    if (check_true("small raw IDX + gz labels loads", imageset_load(&s, tpath("small-images-idx3-ubyte"), 7, 1) == 0)) {
        check_true("small IDX N=3 S=7, labels 0,1,2",
                   s.N == 3 && s.S == 7 && s.labels && s.labels[0] == 0 && s.labels[2] == 2);
        int ok = 1;
        for (int i = 0; i < 3; i++)
            for (int y = 0; y < 7; y++)
                for (int x = 0; x < 7; x++) {
                    int sy = y - 1, sx = x - 1;
                    int inside = sy >= 0 && sy < 4 && sx >= 0 && sx < 5;
                    size_t k = (size_t)i * 20 + sy * 5 + sx;
                    uint8_t want = inside ? (uint8_t)((k * 7 + 1) % 255 + 1) : 0;
                    ok &= s.pixels[(size_t)i * 49 + y * 7 + x] == want;
                }
        check_true("odd padding: 1 top/left, extra on bottom/right", ok);
        imageset_free(&s);
    }
    // gz images without labels, resized down.
    n = make_idx_images(buf, 0x803, 2, 8, 8, 128);
    write_gz(tpath("nolab.idx.gz"), buf, n);
    if (check_true("gz IDX without labels loads at size 3", imageset_load(&s, tpath("nolab.idx.gz"), 3, 3) == 0)) {
        check_true("gz IDX: N=2 C=3 S=3, labels NULL", s.N == 2 && s.C == 3 && s.S == 3 && !s.labels);
        imageset_free(&s);
    }
}

static void test_idx_hostile(void) {
    static uint8_t buf[1 << 16];
    size_t n;
    n = make_idx_images(buf, 0x802, 3, 4, 4, 48);
    write_file(tpath("magic.idx"), buf, n);
    load_fails("IDX wrong magic -> -1", tpath("magic.idx"), 8, 1);
    n = make_idx_images(buf, 0x803, 10, 28, 28, 100);
    write_file(tpath("trunc.idx"), buf, n);
    load_fails("IDX truncated data -> -1", tpath("trunc.idx"), 32, 1);
    n = make_idx_images(buf, 0x803, 10, 28, 28, 100);
    write_gz(tpath("trunc.idx.gz"), buf, n);
    load_fails("gz IDX truncated data -> -1", tpath("trunc.idx.gz"), 32, 1);
    n = make_idx_images(buf, 0x803, 0x7fffffff, 0x7fffffff, 0x7fffffff, 100);
    write_file(tpath("huge.idx"), buf, n);
    load_fails("IDX 0x7fffffff^3 dims -> -1", tpath("huge.idx"), 32, 1);
    n = make_idx_images(buf, 0x803, 0xffffffff, 1 << 16, 1 << 16, 100);
    write_file(tpath("overflow.idx"), buf, n);
    load_fails("IDX dims overflowing size_t -> -1", tpath("overflow.idx"), 32, 1);
    // Declares ~1.97 GB (under the sanity cap) but holds 100 bytes: must fail
    // as truncated without allocating the declared size.
    n = make_idx_images(buf, 0x803, 10000, 65536, 3, 100);
    write_file(tpath("big.idx"), buf, n);
    double t0 = now_seconds();
    load_fails("IDX declaring 1.97 GB over 100 bytes -> -1", tpath("big.idx"), 32, 1);
    check_true("  ... and fails fast", now_seconds() - t0 < 1.0);
    n = make_idx_images(buf, 0x803, 0, 28, 28, 0);
    write_file(tpath("zero.idx"), buf, n);
    load_fails("IDX zero items -> -1", tpath("zero.idx"), 32, 1);
    n = make_idx_images(buf, 0x803, 5, 0, 28, 0);
    write_file(tpath("zerorows.idx"), buf, n);
    load_fails("IDX zero rows -> -1", tpath("zerorows.idx"), 32, 1);
    write_file(tpath("empty.idx"), buf, 0);
    load_fails("empty file -> -1", tpath("empty.idx"), 32, 1);
    write_file(tpath("short.idx"), "\0\0\x08\x03\0\0", 6);
    load_fails("IDX header cut short -> -1", tpath("short.idx"), 32, 1);
    for (size_t k = 0; k < 5000; k++) buf[k] = (uint8_t)(k * 2654435761u >> 13);
    write_gz(tpath("garbage.gz"), buf, 5000);
    load_fails("gzip of garbage -> -1", tpath("garbage.gz"), 32, 1);
    // A gzip header followed by a corrupt deflate stream.
    uint8_t bad[64] = {0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3};
    for (int k = 10; k < 64; k++) bad[k] = (uint8_t)(k * 37);
    write_file(tpath("corrupt.gz"), bad, 64);
    load_fails("corrupt gzip stream -> -1", tpath("corrupt.gz"), 32, 1);

    // Label files beside valid images.
    n = make_idx_images(buf, 0x803, 4, 4, 4, 64);
    write_file(tpath("cnt-images-idx3-ubyte"), buf, n);
    n = make_idx_labels(buf, 0x801, 3, 3);
    write_file(tpath("cnt-labels-idx1-ubyte"), buf, n);
    load_fails("label count != image count -> -1", tpath("cnt-images-idx3-ubyte"), 4, 1);
    n = make_idx_images(buf, 0x803, 4, 4, 4, 64);
    write_file(tpath("lmagic-images-idx3-ubyte"), buf, n);
    n = make_idx_labels(buf, 0x803, 4, 4);
    write_file(tpath("lmagic-labels-idx1-ubyte"), buf, n);
    load_fails("labels with wrong magic -> -1", tpath("lmagic-images-idx3-ubyte"), 4, 1);
    n = make_idx_images(buf, 0x803, 4, 4, 4, 64);
    write_file(tpath("ltrunc-images-idx3-ubyte"), buf, n);
    n = make_idx_labels(buf, 0x801, 4, 2);
    write_file(tpath("ltrunc-labels-idx1-ubyte"), buf, n);
    load_fails("truncated labels -> -1", tpath("ltrunc-images-idx3-ubyte"), 4, 1);
}

// ---------------------------------------------------------------- image I/O

static void test_image_io(void) {
    // image_to_u8: clamp, round((x + 1) * 127.5), NaN -> 0.
    float v[6] = {-1.0f, 1.0f, 0.0f, 2.0f, -3.0f, NAN};
    uint8_t u[6];
    image_to_u8(u, v, 1, 1, 6);
    check_true("image_to_u8: -1->0 1->255 0->128 2->255 -3->0 NaN->0",
               u[0] == 0 && u[1] == 255 && u[2] == 128 && u[3] == 255 && u[4] == 0 && u[5] == 0);
    // CHW -> HWC.
    float chw[12]; // (3, 2, 2)
    for (int k = 0; k < 12; k++) chw[k] = k < 4 ? -1.0f : (k < 8 ? 0.0f : 1.0f);
    uint8_t hwc[12];
    image_to_u8(hwc, chw, 3, 2, 2);
    check_true("image_to_u8 interleaves channels", hwc[0] == 0 && hwc[1] == 128 && hwc[2] == 255 &&
                                                       hwc[9] == 0 && hwc[11] == 255);

    // Grid of 3 grey 2x2 images, 2 columns: 6 x 6 with black 2-pixel gaps.
    float imgs[12]; // (3, 1, 2, 2)
    for (int k = 0; k < 12; k++) imgs[k] = k < 4 ? 1.0f : (k < 8 ? 0.0f : 1.0f);
    const char *gp = tpath("grid.png");
    check_true("png_write_grid writes", png_write_grid(gp, imgs, 3, 1, 2, 2, 2) == 0);
    int w = 0, h = 0;
    const char *why = NULL;
    uint8_t *g = image_load(gp, 1, &w, &h, &why);
    if (check_true("grid PNG reads back 6x6", g && w == 6 && h == 6)) {
        check_true("grid pixels: image 0 white, image 1 grey, gap black, image 2 white",
                   g[0] == 255 && g[1 * 6 + 1] == 255 && g[4] == 128 && g[2] == 0 &&
                       g[2 * 6 + 0] == 0 && g[4 * 6 + 0] == 255 && g[5 * 6 + 4] == 0);
        image_free(g);
    }
    check_true("no temporary file left by png_write", !has_tmp_files(tmpdir));
    check_true("png_write into a missing folder -> -1",
               png_write(tpath("nope/x.png"), hwc, 2, 2, 3) == -1);
    // A BMP header claiming 65391 x 9986 pixels (a fuzzer found stb
    // allocating 2 GB for such a 70-byte file): refused before decoding.
    static const uint8_t huge_bmp[] = {
        'B', 'M', 0x46, 0, 0, 0, 0, 0, 0, 0, 0x36, 0, 0, 0, 0x28, 0, 0, 0,
        0x6f, 0xff, 0, 0, 0x02, 0x27, 0, 0, 1, 0, 24, 0, 0, 0, 0, 0, 0x10, 0, 0, 0};
    write_file(tpath("huge.bmp"), huge_bmp, sizeof huge_bmp);
    why = NULL;
    g = image_load(tpath("huge.bmp"), 3, &w, &h, &why);
    check_true("image_load refuses a header claiming 653 Mpx",
               !g && why && strstr(why, "65391 x 9986 pixels"));
    if (g) image_free(g);
    g = image_load(tpath("nope/x.png"), 3, &w, &h, &why);
    check_true("image_load of a missing file -> NULL with a reason", !g && why != NULL);
}

// ---------------------------------------------------------------- folders

static void test_folder(void) {
    const char *dir = tpath("imgs");
    CHECK(mkdir(dir, 0755) == 0);
    CHECK(mkdir(tpath("imgs/sub"), 0755) == 0);
    // a.png: 4x4 RGB, pixel (y, x, c) = 10 * (y * 4 + x) + c: no resize
    // needed at size 4, so values must come through exactly (CHW).
    uint8_t a[4 * 4 * 3];
    for (int p = 0; p < 16; p++)
        for (int c = 0; c < 3; c++) a[p * 3 + c] = (uint8_t)(10 * p + c);
    CHECK(png_write(tpath("imgs/a.png"), a, 4, 4, 3) == 0);
    // sub/b.png: 4 wide x 8 tall grey: shorter side already 4, centre rows 2..5.
    uint8_t b[8 * 4];
    for (int k = 0; k < 32; k++) b[k] = (uint8_t)(7 * k + 3);
    CHECK(png_write(tpath("imgs/sub/b.png"), b, 4, 8, 1) == 0);
    write_file(tpath("imgs/garbage.PNG"), "this is not a png at all", 24);
    write_file(tpath("imgs/notes.txt"), "hello", 5);
    write_file(tpath("imgs/.hidden.png"), "hidden garbage", 14);

    ImageSet s;
    if (!check_true("folder loads", imageset_load(&s, dir, 4, 3) == 0)) return;
    check_true("folder: N=2 (a, sub/b) skipped=1, C=3, S=4, no labels",
               s.N == 2 && s.skipped == 1 && s.C == 3 && s.S == 4 && s.labels == NULL);
    if (s.N == 2) {
        int ok_a = 1, ok_b = 1;
        for (int c = 0; c < 3; c++)
            for (int p = 0; p < 16; p++) {
                ok_a &= s.pixels[c * 16 + p] == a[p * 3 + c];
                ok_b &= s.pixels[48 + c * 16 + p] == b[2 * 4 + p]; // grey replicated
            }
        check_true("folder: RGB item exact in CHW order", ok_a);
        check_true("folder: grey item centre-cropped and replicated", ok_b);
        // hflip on item 0 only; item 1 twice (the same file in a batch).
        int idx[3] = {0, 1, 0};
        uint8_t flip[3] = {1, 0, 0};
        float out[3 * 48]; // (3, 3, 4, 4)
        imageset_batch(out, &s, idx, 3, flip);
        int ok = 1;
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 4; y++)
                for (int x = 0; x < 4; x++) {
                    float fa = a[(y * 4 + (3 - x)) * 3 + c] / 127.5f - 1.0f;
                    float na = a[(y * 4 + x) * 3 + c] / 127.5f - 1.0f;
                    float nb = b[(y + 2) * 4 + x] / 127.5f - 1.0f;
                    ok &= out[c * 16 + y * 4 + x] == fa;
                    ok &= out[48 + c * 16 + y * 4 + x] == nb;
                    ok &= out[96 + c * 16 + y * 4 + x] == na;
                }
        check_true("imageset_batch: hflip mirrors x, others untouched", ok);
    }
    imageset_free(&s);
    if (check_true("folder loads as grey", imageset_load(&s, dir, 4, 1) == 0)) {
        check_true("grey folder: N=2 C=1", s.N == 2 && s.C == 1);
        imageset_free(&s);
    }

    // Resize path: 12 x 8, left half black, right half white -> 4 x 4.
    const char *rdir = tpath("resize");
    CHECK(mkdir(rdir, 0755) == 0);
    uint8_t r[8 * 12];
    for (int y = 0; y < 8; y++)
        for (int x = 0; x < 12; x++) r[y * 12 + x] = x < 6 ? 0 : 255;
    CHECK(png_write(tpath("resize/r.bmp.png"), r, 12, 8, 1) == 0);
    if (check_true("resize folder loads", imageset_load(&s, rdir, 4, 1) == 0)) {
        // 12x8 -> 6x4, crop columns 1..4: left two dark, right two bright.
        int ok = s.N == 1 && s.S == 4;
        for (int y = 0; ok && y < 4; y++)
            ok = s.pixels[y * 4 + 0] < 40 && s.pixels[y * 4 + 3] > 215 &&
                 s.pixels[y * 4 + 1] < s.pixels[y * 4 + 2];
        check_true("resize + centre crop keeps left dark / right bright", ok);
        imageset_free(&s);
    }

    CHECK(mkdir(tpath("empty"), 0755) == 0);
    load_fails("empty folder -> -1", tpath("empty"), 4, 3);
    CHECK(mkdir(tpath("junk"), 0755) == 0);
    write_file(tpath("junk/x.png"), "garbage", 7);
    write_file(tpath("junk/y.jpg"), "\xff\xd8\xff garbage", 12);
    write_file(tpath("junk/z.bmp"), "BM", 2);
    load_fails("folder of undecodable images -> -1", tpath("junk"), 4, 3);
    load_fails("missing path -> -1", tpath("does-not-exist"), 4, 3);
    load_fails("unknown dataset name -> -1", "fashion-mnist-typo", 32, 1);
    load_fails("character device -> -1", "/dev/null", 32, 1);
}

// ---------------------------------------------------------------- latent cache

static void fill(float *x, size_t n, float base) {
    for (size_t k = 0; k < n; k++) x[k] = base + 0.37f * (float)k - 0.001f * (float)(k * k);
}

static void test_cache_roundtrip(void) {
    enum { N = 5, Z = 2, H = 3, W = 3, E = Z * H * W };
    float mean[N * E], logvar[N * E]; // (N, Z, h, w)
    int32_t labels[N] = {3, 1, 4, 1, 5};
    fill(mean, N * E, -2.0f);
    fill(logvar, N * E, 0.5f);
    const char *path = tpath("cache.h5");
    LatentCacheWriter w;
    int rc = latent_cache_create(&w, path, N, Z, H, W, 1);
    check_true("cache create", rc == 0);
    if (rc) return;
    check_true("cache not visible before finish", !file_exists(path));
    rc = latent_cache_append(&w, mean, logvar, labels, 2);
    rc |= latent_cache_append(&w, mean + 2 * E, logvar + 2 * E, labels + 2, 2);
    rc |= latent_cache_append(&w, mean + 4 * E, logvar + 4 * E, labels + 4, 1);
    check_true("cache append in batches 2+2+1", rc == 0);
    rc = latent_cache_finish(&w, 0.18215, 12, 1, "fashion-mnist", "0123456789abcdef");
    check_true("cache finish", rc == 0 && file_exists(path) && !has_tmp_files(tmpdir));

    LatentCache c;
    if (!check_true("cache open", latent_cache_open(&c, path) == 0)) return;
    check_true("cache shape and attributes read back",
               c.N == N && c.Z == Z && c.h == H && c.w == W && c.scale_factor == 0.18215 &&
                   c.image_size == 12 && c.in_channels == 1 && !strcmp(c.source, "fashion-mnist") &&
                   !strcmp(c.vae_hash, "0123456789abcdef") && c.dlabels >= 0);
    float m2[N * E], l2[N * E];
    int32_t lab2[N];
    rc = latent_cache_read(&c, 0, N, m2, l2, lab2);
    check_true("cache read all: exact", rc == 0 && !memcmp(m2, mean, sizeof mean) &&
                                            !memcmp(l2, logvar, sizeof logvar) &&
                                            !memcmp(lab2, labels, sizeof labels));
    rc = latent_cache_read(&c, 1, 3, m2, l2, lab2);
    check_true("cache read items 1..3: exact", rc == 0 && !memcmp(m2, mean + E, 3 * E * sizeof(float)) &&
                                                  !memcmp(l2, logvar + E, 3 * E * sizeof(float)) &&
                                                  lab2[0] == 1 && lab2[2] == 1);
    latent_cache_close(&c);

    // Without labels; labels buffer must be left alone.
    const char *p2 = tpath("cache_nolab.h5");
    CHECK(latent_cache_create(&w, p2, 2, Z, H, W, 0) == 0);
    CHECK(latent_cache_append(&w, mean, logvar, NULL, 2) == 0);
    CHECK(latent_cache_finish(&w, 1.5, 3, 3, "folder", "fedcba9876543210") == 0);
    if (check_true("unlabelled cache opens", latent_cache_open(&c, p2) == 0)) {
        int32_t keep[2] = {-7, -7};
        rc = latent_cache_read(&c, 0, 2, m2, l2, keep);
        check_true("unlabelled cache: no labels, buffer untouched",
                   rc == 0 && c.dlabels < 0 && keep[0] == -7 && keep[1] == -7 && c.in_channels == 3);
        latent_cache_close(&c);
    }

    // Incomplete and aborted writes leave nothing behind.
    const char *p3 = tpath("cache_partial.h5");
    CHECK(latent_cache_create(&w, p3, 4, Z, H, W, 0) == 0);
    CHECK(latent_cache_append(&w, mean, logvar, NULL, 2) == 0);
    check_true("finish with 2 of 4 items -> -1", latent_cache_finish(&w, 1, 3, 1, "x", "0000000000000000") == -1);
    check_true("  ... no file, no temporary", !file_exists(p3) && !has_tmp_files(tmpdir));
    CHECK(latent_cache_create(&w, p3, 4, Z, H, W, 1) == 0);
    latent_cache_abort(&w);
    check_true("abort leaves no file, no temporary", !file_exists(p3) && !has_tmp_files(tmpdir));
    check_true("create in a missing folder -> -1",
               latent_cache_create(&w, tpath("nope/c.h5"), 1, 1, 1, 1, 0) == -1);
}

// A cache written directly with HDF5, each field adjustable to be hostile.
typedef struct {
    int mean_int, mean_rank3, no_logvar, logvar_bad_shape;
    int labels_len; // -1: none
    int labels_float;
    int no_scale, scale_str, no_hash, varlen_strings;
    double scale;
    int image_size, in_channels;
    const char *hash;
} CacheSpec;

static CacheSpec good_spec(void) {
    return (CacheSpec){.labels_len = 3, .scale = 0.5, .image_size = 8, .in_channels = 1,
                       .hash = "00112233aabbccdd"};
}

static void attr_num(hid_t f, const char *name, hid_t type, const void *v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(a >= 0 && H5Awrite(a, type, v) >= 0);
    H5Aclose(a);
    H5Sclose(sp);
}

static void attr_str(hid_t f, const char *name, const char *v, int varlen) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, varlen ? H5T_VARIABLE : strlen(v));
    if (!varlen) H5Tset_strpad(t, H5T_STR_NULLPAD);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(a >= 0 && H5Awrite(a, t, varlen ? (const void *)&v : (const void *)v) >= 0);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
}

static void dataset(hid_t f, const char *name, hid_t type, int rank, const hsize_t *dims) {
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t d = H5Dcreate2(f, name, type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(d >= 0);
    hssize_t np = H5Sget_simple_extent_npoints(sp);
    double *zeros = xcalloc((size_t)np, sizeof(double));
    CHECK(H5Dwrite(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, zeros) >= 0);
    free(zeros);
    H5Dclose(d);
    H5Sclose(sp);
}

static void write_cache(const char *path, CacheSpec s) {
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(f >= 0);
    hsize_t dims[4] = {3, 2, 2, 2}, bad[4] = {3, 2, 2, 3};
    dataset(f, "mean", s.mean_int ? H5T_STD_I32LE : H5T_IEEE_F32LE, s.mean_rank3 ? 3 : 4, dims);
    if (!s.no_logvar) dataset(f, "logvar", H5T_IEEE_F32LE, 4, s.logvar_bad_shape ? bad : dims);
    if (s.labels_len >= 0) {
        hsize_t ln = (hsize_t)s.labels_len;
        dataset(f, "labels", s.labels_float ? H5T_IEEE_F32LE : H5T_STD_I64LE, 1, &ln);
    }
    if (s.scale_str) attr_str(f, "scale_factor", "0.5", 0);
    else if (!s.no_scale) attr_num(f, "scale_factor", H5T_NATIVE_DOUBLE, &s.scale);
    attr_num(f, "image_size", H5T_NATIVE_INT, &s.image_size);
    attr_num(f, "in_channels", H5T_NATIVE_INT, &s.in_channels);
    attr_str(f, "source", "somewhere", s.varlen_strings);
    if (!s.no_hash) attr_str(f, "vae_hash", s.hash, s.varlen_strings);
    H5Fclose(f);
}

static void cache_case(const char *what, CacheSpec s, int expect_ok) {
    const char *path = tpath("hostile.h5");
    write_cache(path, s);
    LatentCache c;
    int rc = latent_cache_open(&c, path);
    if (rc == 0) latent_cache_close(&c);
    check_true(what, expect_ok ? rc == 0 : rc == -1);
    unlink(path);
}

static void test_cache_hostile(void) {
    CacheSpec s = good_spec();
    cache_case("direct HDF5 cache (fixed NULLPAD strings, int64 labels) opens", s, 1);
    s = good_spec(), s.varlen_strings = 1, s.labels_len = -1;
    cache_case("h5py-style variable-length strings, no labels: opens", s, 1);
    write_file(tpath("text.h5"), "definitely not hdf5\n", 20);
    LatentCache c;
    check_true("non-HDF5 file -> -1", latent_cache_open(&c, tpath("text.h5")) == -1);
    check_true("missing cache -> -1", latent_cache_open(&c, tpath("missing.h5")) == -1);
    check_true("folder as cache -> -1", latent_cache_open(&c, tmpdir) == -1);
    s = good_spec(), s.no_logvar = 1;
    cache_case("missing logvar -> -1", s, 0);
    s = good_spec(), s.logvar_bad_shape = 1;
    cache_case("logvar shape differs from mean -> -1", s, 0);
    s = good_spec(), s.mean_int = 1;
    cache_case("mean stored as int -> -1", s, 0);
    s = good_spec(), s.mean_rank3 = 1;
    cache_case("mean of rank 3 -> -1", s, 0);
    s = good_spec(), s.no_scale = 1;
    cache_case("missing scale_factor -> -1", s, 0);
    s = good_spec(), s.scale_str = 1;
    cache_case("scale_factor stored as string -> -1", s, 0);
    s = good_spec(), s.scale = -1;
    cache_case("negative scale_factor -> -1", s, 0);
    s = good_spec(), s.scale = NAN;
    cache_case("NaN scale_factor -> -1", s, 0);
    s = good_spec(), s.labels_len = 4;
    cache_case("labels of wrong length -> -1", s, 0);
    s = good_spec(), s.labels_float = 1;
    cache_case("float labels -> -1", s, 0);
    s = good_spec(), s.image_size = 7;
    cache_case("image_size not a multiple of h -> -1", s, 0);
    s = good_spec(), s.image_size = 0;
    cache_case("image_size 0 -> -1", s, 0);
    s = good_spec(), s.in_channels = 2;
    cache_case("in_channels 2 -> -1", s, 0);
    s = good_spec(), s.no_hash = 1;
    cache_case("missing vae_hash -> -1", s, 0);
    s = good_spec(), s.hash = "not-a-hash-at-al";
    cache_case("vae_hash not hex -> -1", s, 0);
}

// ---------------------------------------------------------------- caches of other tools

// The message of the last failing call (capture_end's).
static const char *captured = "";

// rc must be -1 with a message holding each non-NULL needle.
static void expect_refused(const char *what, int rc, const char *needle1, const char *needle2,
                           const char *needle3) {
    int ok = rc == -1 && strstr(captured, "error: ") && (!needle1 || strstr(captured, needle1)) &&
             (!needle2 || strstr(captured, needle2)) && (!needle3 || strstr(captured, needle3));
    check_true(what, ok);
    printf("     %.300s%s", captured[0] ? captured : "(no message)\n",
           strlen(captured) > 300 ? "...\n" : "");
}

enum { FN = 37, FZ = 2, FH = 2, FW = 2, FE = FZ * FH * FW };
enum { STR_NULLTERM, STR_NULLPAD, STR_SPACEPAD, STR_VLEN_UTF8 };

// A cache as another tool might write it, with values that say where they
// came from: mean[i][j] = i + j / 100, logvar = -mean, labels[i] = i % 7.
typedef struct {
    int layout;          // 0: contiguous, 1: chunked 5 items a chunk, 2: and deflated
    hid_t label_type;    // -1: no labels
    int big_label_at;    // -1, or the item whose label is 3,000,000,000
    int strings;         // STR_*
    const char *source;  // NULL: "elsewhere"
    int extras;          // also an array attribute and a 10,000-character string
    // hostile attribute values, used when `bad` names the attribute
    const char *bad;
    hid_t bad_type;
    double bad_value;
} Foreign;

static Foreign foreign(void) {
    return (Foreign){.label_type = H5T_STD_I64LE, .big_label_at = -1, .strings = STR_VLEN_UTF8};
}

static float fmean(int i, int j) { return (float)i + (float)j / 100.0f; }

// A scalar numeric attribute stored as `type`, from the double v.
static void put_num(hid_t f, const char *name, hid_t type, double v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(a >= 0);
    if (H5Tget_class(type) == H5T_FLOAT) {
        CHECK(H5Awrite(a, H5T_NATIVE_DOUBLE, &v) >= 0);
    } else {
        int64_t i = (int64_t)v;
        CHECK(H5Awrite(a, H5T_NATIVE_INT64, &i) >= 0);
    }
    H5Aclose(a);
    H5Sclose(sp);
}

// A string attribute in one of the STR_* styles.
static void put_string(hid_t f, const char *name, const char *v, int style) {
    hid_t t = H5Tcopy(H5T_C_S1);
    size_t len = strlen(v);
    char *buf = NULL;
    if (style == STR_VLEN_UTF8) {
        H5Tset_size(t, H5T_VARIABLE);
        H5Tset_cset(t, H5T_CSET_UTF8);
    } else {
        // Room for padding after the value, as fixed-width writers leave.
        size_t width = len + 3;
        buf = xcalloc(width, 1);
        memcpy(buf, v, len);
        if (style == STR_SPACEPAD) memset(buf + len, ' ', width - len);
        H5Tset_size(t, width);
        H5Tset_strpad(t, style == STR_NULLTERM ? H5T_STR_NULLTERM
                         : style == STR_NULLPAD ? H5T_STR_NULLPAD : H5T_STR_SPACEPAD);
    }
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(a >= 0);
    CHECK(H5Awrite(a, t, buf ? (const void *)buf : (const void *)&v) >= 0);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    free(buf);
}

static void put_data(hid_t f, const char *name, hid_t ftype, hid_t mtype, int rank,
                     const hsize_t *dims, int layout, const void *buf) {
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (layout) {
        hsize_t chunk[4] = {5, dims[1], dims[2], dims[3]};
        H5Pset_chunk(dcpl, rank, chunk);
        if (layout == 2) H5Pset_deflate(dcpl, 6);
    }
    hid_t d = H5Dcreate2(f, name, ftype, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    CHECK(d >= 0 && H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(sp);
}

static void write_foreign(const char *path, Foreign s) {
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(f >= 0);
    static float mean[FN * FE], logvar[FN * FE];
    for (int i = 0; i < FN; i++)
        for (int j = 0; j < FE; j++) mean[i * FE + j] = fmean(i, j), logvar[i * FE + j] = -fmean(i, j);
    hsize_t dims[4] = {FN, FZ, FH, FW};
    put_data(f, "mean", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 4, dims, s.layout, mean);
    put_data(f, "logvar", H5T_IEEE_F64BE, H5T_NATIVE_FLOAT, 4, dims, s.layout, logvar);
    if (s.label_type >= 0) {
        int64_t lab[FN];
        for (int i = 0; i < FN; i++) lab[i] = i == s.big_label_at ? 3000000000LL : i % 7;
        put_data(f, "labels", s.label_type, H5T_NATIVE_INT64, 1, dims, s.layout, lab);
    }
    // Other widths than ours: float32, uint16, int8.
    const char *nums[3] = {"scale_factor", "image_size", "in_channels"};
    hid_t types[3] = {H5T_IEEE_F32LE, H5T_STD_U16LE, H5T_STD_I8LE};
    double vals[3] = {0.5, 8, 3};
    for (int k = 0; k < 3; k++) {
        if (s.bad && !strcmp(s.bad, nums[k])) put_num(f, nums[k], s.bad_type, s.bad_value);
        else put_num(f, nums[k], types[k], vals[k]);
    }
    put_string(f, "source", s.source ? s.source : "elsewhere", s.strings);
    put_string(f, "vae_hash", "00112233aabbccdd", s.strings);
    if (s.extras) {
        hsize_t two = 2;
        hid_t sp = H5Screate_simple(1, &two, NULL);
        hid_t a = H5Acreate2(f, "history", H5T_NATIVE_INT, sp, H5P_DEFAULT, H5P_DEFAULT);
        CHECK(a >= 0 && H5Awrite(a, H5T_NATIVE_INT, (int[]){1, 2}) >= 0);
        H5Aclose(a);
        H5Sclose(sp);
        char *notes = xmalloc(10001);
        memset(notes, 'n', 10000);
        notes[10000] = '\0';
        put_string(f, "notes", notes, STR_VLEN_UTF8);
        free(notes);
    }
    H5Fclose(f);
}

// Every item of an open foreign cache, read whole and through read_items in a
// shuffled order with duplicates, holds the values write_foreign() gave it.
static int foreign_values_ok(LatentCache *c, int labelled) {
    float m[FN * FE], l[FN * FE];
    int32_t lab[FN];
    if (latent_cache_read(c, 0, FN, m, l, lab) != 0) return 0;
    for (int i = 0; i < FN; i++) {
        for (int j = 0; j < FE; j++)
            if (m[i * FE + j] != fmean(i, j) || l[i * FE + j] != -fmean(i, j)) return 0;
        if (labelled && lab[i] != i % 7) return 0;
    }
    int64_t idx[50];
    for (int k = 0; k < 50; k++) idx[k] = (k * 13 + 5) % FN; // all items, some twice
    idx[49] = idx[0];
    float m2[50 * FE], l2[50 * FE];
    int32_t lab2[50];
    if (latent_cache_read_items(c, idx, 50, m2, l2, lab2) != 0) return 0;
    for (int k = 0; k < 50; k++) {
        float one_m[FE], one_l[FE];
        int32_t one_lab = -1;
        if (latent_cache_read(c, idx[k], 1, one_m, one_l, &one_lab) != 0) return 0;
        if (memcmp(one_m, m2 + k * FE, sizeof one_m) || memcmp(one_l, l2 + k * FE, sizeof one_l))
            return 0;
        if (labelled && one_lab != lab2[k]) return 0;
    }
    return 1;
}

// Opens `s` written to a fresh file and checks every value; 1 if all is well.
static int foreign_loads(Foreign s) {
    const char *path = tpath("foreign.h5");
    write_foreign(path, s);
    LatentCache c;
    if (latent_cache_open(&c, path) != 0) return 0;
    int ok = c.N == FN && c.Z == FZ && c.h == FH && c.w == FW && c.scale_factor == 0.5 &&
             c.image_size == 8 && c.in_channels == 3 && !strcmp(c.vae_hash, "00112233aabbccdd") &&
             !strcmp(c.source, s.source ? s.source : "elsewhere") &&
             foreign_values_ok(&c, s.label_type >= 0);
    latent_cache_close(&c);
    return ok;
}

static void test_cache_foreign(void) {
    const char *layouts[3] = {"contiguous", "chunked", "chunked and deflated"};
    const char *styles[4] = {"fixed NULLTERM", "fixed NULLPAD", "fixed SPACEPAD",
                             "variable-length UTF-8 (h5py)"};
    for (int layout = 0; layout < 3; layout++)
        for (int st = 0; st < 4; st++) {
            Foreign s = foreign();
            s.layout = layout, s.strings = st;
            char what[160];
            snprintf(what, sizeof what, "foreign cache, %s datasets, %s strings: every item "
                     "reads back, read_items == read", layouts[layout], styles[st]);
            check_true(what, foreign_loads(s));
        }
    hid_t ltypes[5] = {H5T_STD_U8LE, H5T_STD_I8LE, H5T_STD_I64BE, H5T_STD_U32LE, H5T_STD_U64LE};
    const char *lnames[5] = {"uint8", "int8", "int64 (big-endian)", "uint32", "uint64"};
    for (int k = 0; k < 5; k++) {
        Foreign s = foreign();
        s.label_type = ltypes[k], s.layout = 1;
        char what[96];
        snprintf(what, sizeof what, "labels stored as %s load as int32", lnames[k]);
        check_true(what, foreign_loads(s));
    }
    Foreign s = foreign();
    s.label_type = -1, s.extras = 1;
    check_true("no labels, and attributes of its own (an array, a 10,000-character string): "
               "loads", foreign_loads(s));
    s = foreign();
    s.source = "data/ünïcödé ☃ folder";
    check_true("a UTF-8 source reads back exactly", foreign_loads(s));

    // A label that does not fit int32: the items around it read, it does not.
    const char *path = tpath("biglabel.h5");
    s = foreign();
    s.label_type = H5T_STD_U32LE, s.big_label_at = 5;
    write_foreign(path, s);
    LatentCache c;
    if (check_true("a cache with a uint32 label of 3,000,000,000 opens",
                   latent_cache_open(&c, path) == 0)) {
        float m[FN * FE], l[FN * FE];
        int32_t lab[FN];
        capture_begin();
        int rc = latent_cache_read(&c, 0, 10, m, l, lab);
        captured = capture_end();
        expect_refused("reading items 0..9 (label of item 5 > INT32_MAX) -> -1, names file "
                       "and item", rc, path, "item 5", "int32");
        check_true("  ... items 6..36 read", latent_cache_read(&c, 6, FN - 6, m, l, lab) == 0 &&
                                             lab[0] == 6 % 7);
        capture_begin();
        rc = latent_cache_read_items(&c, (int64_t[]){9, 5, 2}, 3, m, l, lab);
        captured = capture_end();
        expect_refused("read_items {9, 5, 2} -> -1, names file and item", rc, path, "item 5", NULL);
        check_true("  ... the labels need not be read: labels NULL reads",
                   latent_cache_read(&c, 0, 10, m, l, NULL) == 0);
        latent_cache_close(&c);
    }

    // Strings are never truncated: 4095 bytes fit exactly, 4096 are refused.
    char *longs = xmalloc(ATTR_STR_MAX + 2);
    memset(longs, 's', ATTR_STR_MAX + 1);
    longs[ATTR_STR_MAX - 1] = '\0';
    s = foreign();
    s.source = longs;
    check_true("a source of 4095 characters reads back whole", foreign_loads(s));
    for (int st = STR_NULLTERM; st <= STR_VLEN_UTF8; st += STR_VLEN_UTF8) {
        longs[ATTR_STR_MAX - 1] = 's';
        longs[ATTR_STR_MAX] = '\0';
        s = foreign();
        s.source = longs, s.strings = st;
        write_foreign(path, s);
        capture_begin();
        int rc = latent_cache_open(&c, path);
        captured = capture_end();
        if (rc == 0) latent_cache_close(&c);
        char what[96];
        snprintf(what, sizeof what, "a source of 4096 characters (%s) -> -1, names file and "
                 "attribute", styles[st]);
        expect_refused(what, rc, path, "'source'", "4095");
    }
    LatentCacheWriter w;
    float z[FE] = {0};
    CHECK(latent_cache_create(&w, path, 1, FZ, FH, FW, 0) == 0);
    CHECK(latent_cache_append(&w, z, z, NULL, 1) == 0);
    capture_begin();
    int rc = latent_cache_finish(&w, 1, 8, 1, longs, "0123456789abcdef");
    captured = capture_end();
    expect_refused("writing a source of 4096 characters -> -1, names the attribute", rc,
                   "'source'", "4095", NULL);
    check_true("  ... and leaves no temporary file", !has_tmp_files(tmpdir));
    free(longs);

    // Hostile values of each attribute the cache validates: refused, naming
    // the file and the attribute.
    struct {
        const char *key;
        hid_t type;
        double v;
    } bad[] = {
        {"scale_factor", H5T_NATIVE_DOUBLE, NAN},   {"scale_factor", H5T_NATIVE_DOUBLE, -0.5},
        {"scale_factor", H5T_NATIVE_DOUBLE, 0},     {"scale_factor", H5T_NATIVE_DOUBLE, INFINITY},
        {"scale_factor", H5T_NATIVE_DOUBLE, 1e300}, {"image_size", H5T_NATIVE_DOUBLE, NAN},
        {"image_size", H5T_NATIVE_DOUBLE, 8.0},     {"image_size", H5T_STD_I64LE, -8},
        {"image_size", H5T_STD_I64LE, 0x1p40},      {"image_size", H5T_STD_I64LE, 0x1p31},
        {"in_channels", H5T_NATIVE_DOUBLE, NAN},    {"in_channels", H5T_STD_I64LE, -1},
        {"in_channels", H5T_STD_I64LE, 0x1p40},     {"in_channels", H5T_STD_I8LE, 2},
    };
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        s = foreign();
        s.bad = bad[k].key, s.bad_type = bad[k].type, s.bad_value = bad[k].v;
        write_foreign(path, s);
        capture_begin();
        rc = latent_cache_open(&c, path);
        captured = capture_end();
        if (rc == 0) latent_cache_close(&c);
        char what[128], needle[64];
        snprintf(what, sizeof what, "%s = %g (%s) -> -1, names file and attribute", bad[k].key,
                 bad[k].v, H5Tget_class(bad[k].type) == H5T_FLOAT ? "float" : "integer");
        snprintf(needle, sizeof needle, "'%s'", bad[k].key);
        expect_refused(what, rc, path, needle, NULL);
    }
    unlink(path);
}

// A cache that shrinks or disappears while open.
static void test_cache_changed_while_open(void) {
    enum { N = 4000, Z = 4, H = 4, W = 4, E = Z * H * W };
    const char *path = tpath("shrinks.h5");
    LatentCacheWriter w;
    float *m = xmalloc((size_t)N * E * sizeof(float)), *l = xmalloc((size_t)N * E * sizeof(float));
    fill(m, (size_t)N * E, 1.0f);
    fill(l, (size_t)N * E, -1.0f);
    CHECK(latent_cache_create(&w, path, N, Z, H, W, 0) == 0);
    CHECK(latent_cache_append(&w, m, l, NULL, N) == 0);
    CHECK(latent_cache_finish(&w, 1, 8, 1, "x", "0123456789abcdef") == 0);
    LatentCache c;
    CHECK(latent_cache_open(&c, path) == 0);
    float gm[2 * E], gl[2 * E];
    CHECK(latent_cache_read(&c, N - 2, 2, gm, gl, NULL) == 0);
    struct stat st;
    CHECK(stat(path, &st) == 0 && truncate(path, st.st_size / 3) == 0);
    capture_begin();
    int rc = latent_cache_read(&c, N - 2, 2, gm, gl, NULL);
    captured = capture_end();
    expect_refused("reading items 3998..3999 after the file was truncated -> -1, names file "
                   "and items", rc, path, "3998..3999", "shrank");
    capture_begin();
    rc = latent_cache_read_items(&c, (int64_t[]){3999, 10}, 2, gm, gl, NULL);
    captured = capture_end();
    expect_refused("read_items after truncation -> -1, names file and items", rc, path,
                   "10..3999", NULL);
    latent_cache_close(&c);

    // Deleted (or replaced by a rename) while open: the open file is still
    // the one read, whole.
    CHECK(latent_cache_create(&w, path, N, Z, H, W, 0) == 0);
    CHECK(latent_cache_append(&w, m, l, NULL, N) == 0);
    CHECK(latent_cache_finish(&w, 1, 8, 1, "x", "0123456789abcdef") == 0);
    CHECK(latent_cache_open(&c, path) == 0);
    unlink(path);
    rc = latent_cache_read_items(&c, (int64_t[]){3999, 0}, 2, gm, gl, NULL);
    check_true("a cache deleted while open still reads (the open file)",
               rc == 0 && !memcmp(gm, m + (size_t)3999 * E, E * sizeof(float)) &&
                   !memcmp(gl + E, l, E * sizeof(float)));
    latent_cache_close(&c);
    free(m);
    free(l);
}

// read_items on a background thread while this thread writes and reads
// other caches: HDF5 is thread-safe; the results must be exact.
typedef struct {
    LatentCache *c;
    int ok;
} ReaderJob;

static void *reader_thread(void *arg) {
    ReaderJob *j = arg;
    enum { B = 64 };
    int64_t idx[B];
    float m[B * FE], l[B * FE];
    int32_t lab[B];
    j->ok = 1;
    for (int r = 0; r < 200 && j->ok; r++) {
        for (int k = 0; k < B; k++) idx[k] = (int64_t)((r * 31 + k * 17) % FN);
        if (latent_cache_read_items(j->c, idx, B, m, l, lab) != 0) j->ok = 0;
        for (int k = 0; k < B && j->ok; k++)
            j->ok = m[k * FE + 3] == fmean((int)idx[k], 3) && lab[k] == idx[k] % 7;
    }
    return NULL;
}

static void test_cache_threads(void) {
    const char *path = tpath("threaded.h5");
    Foreign s = foreign();
    s.layout = 2;
    write_foreign(path, s);
    LatentCache c;
    CHECK(latent_cache_open(&c, path) == 0);
    ReaderJob job = {&c, 0};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, reader_thread, &job) == 0);
    int main_ok = 1;
    for (int r = 0; r < 20; r++) {
        const char *p2 = tpath("main_thread.h5");
        LatentCacheWriter w;
        float z[3 * FE];
        fill(z, 3 * FE, (float)r);
        main_ok &= latent_cache_create(&w, p2, 3, FZ, FH, FW, 0) == 0 &&
                   latent_cache_append(&w, z, z, NULL, 3) == 0 &&
                   latent_cache_finish(&w, 1, 8, 1, "x", "0123456789abcdef") == 0;
        LatentCache c2;
        float back[FE], back2[FE];
        main_ok &= latent_cache_open(&c2, p2) == 0 &&
                   latent_cache_read(&c2, 2, 1, back, back2, NULL) == 0 &&
                   !memcmp(back, z + 2 * FE, sizeof back);
        latent_cache_close(&c2);
    }
    pthread_join(th, NULL);
    latent_cache_close(&c);
    check_true("read_items on a background thread while the main thread writes and reads "
               "caches: exact on both", job.ok && main_ok);
}

// ---------------------------------------------------------------- streamed folders

// n PNGs in dir with varied sizes (some resized, some grey) and content;
// image i is "<dir>/img<i / 10><i % 10>.png" so sorted order is i's.
static void write_png_folder(const char *dir, int n) {
    CHECK(mkdir(dir, 0755) == 0);
    char path[512];
    for (int i = 0; i < n; i++) {
        int w = 4 + i % 5, h = 4 + (i * 3) % 7, ch = i % 4 == 3 ? 1 : 3;
        uint8_t px[10 * 10 * 3]; // (h, w, ch)
        for (int k = 0; k < w * h * ch; k++) px[k] = (uint8_t)(i * 37 + k * 11 + (k * k) % 13);
        snprintf(path, sizeof path, "%s/img%02d.png", dir, i);
        CHECK(png_write(path, px, w, h, ch) == 0);
    }
}

// Gathers the same idx and flips from a resident and a streamed set; 1 if
// both succeed with identical floats.
static int same_batch(ImageSet *res, ImageSet *str, const int *idx, int B, const uint8_t *flip) {
    const size_t item = (size_t)res->C * res->S * res->S;
    float *a = xmalloc(B * item * sizeof(float)); // (B, C, S, S)
    float *b = xmalloc(B * item * sizeof(float)); // (B, C, S, S)
    int ok = imageset_batch(a, res, idx, B, flip) == 0 && imageset_batch(b, str, idx, B, flip) == 0 &&
             !memcmp(a, b, B * item * sizeof(float));
    free(a), free(b);
    return ok;
}

static void test_stream_equal(void) {
    enum { N = 23, S = 4, C = 3, B = 5 };
    char dir[512]; // tpath() reuses its buffers
    snprintf(dir, sizeof dir, "%s", tpath("stream"));
    write_png_folder(dir, N);
    write_file(tpath("stream/junk.png"), "not a png", 9);
    const size_t item = (size_t)C * S * S;
    ImageSet res, str;
    if (!check_true("stream folder opens resident", imageset_open(&res, dir, S, C, SIZE_MAX) == 0))
        return;
    int ok = imageset_open(&str, dir, S, C, 1) == 0;
    check_true("  ... and streamed with a 1-byte limit", ok);
    if (!ok) {
        imageset_free(&res);
        return;
    }
    check_true("resident: pixels held, no stream; streamed: no pixels",
               res.stream == NULL && res.pixels != NULL && str.stream != NULL && str.pixels == NULL);
    check_true("both: N=23, the junk file skipped (header) and counted",
               res.N == N && str.N == N && res.skipped == 1 && str.skipped == 1);
    check_true("a resident set needs no buffer", imageset_check_memory(&res, B, 1) == 0);
    capture_begin();
    int rc = imageset_check_memory(&str, B, 2 * B * item - 1);
    captured = capture_end();
    expect_refused("streamed: a limit below 2 batches -> -1 naming the folder and --max-memory",
                   rc, dir, "--max-memory", NULL);
    check_true("streamed: a limit of exactly 2 batches -> 0",
               imageset_check_memory(&str, B, 2 * B * item) == 0);

    // Batches as a training run draws them, through every path of the
    // stream: prefetched then gathered, gathered cold, prefetched but
    // never gathered (dropped), the next prefetched before the current is
    // gathered, duplicates within a batch, and a partial last batch.
    Rng r;
    rng_init(&r, 7);
    int idx[2][B];
    uint8_t flip[B];
    int all_same = 1, cur = 0;
    for (int b = 0; b < B; b++) idx[cur][b] = (int)rng_below(&r, N);
    for (int step = 0; step < 200; step++) {
        int nb = step % 17 == 16 ? 2 : B;
        for (int b = 0; b < B; b++) {
            idx[!cur][b] = (int)rng_below(&r, N);
            flip[b] = (uint8_t)rng_below(&r, 2);
        }
        if (step % 7 == 3) idx[cur][1] = idx[cur][0];
        int mode = step % 4;
        if (mode == 1) imageset_prefetch(&str, idx[!cur], B);       // next before current
        if (mode == 2) imageset_prefetch(&str, idx[cur], nb);       // current, then gathered
        all_same &= same_batch(&res, &str, idx[cur], nb, flip);
        if (mode == 0) imageset_prefetch(&str, idx[!cur], B);       // next, as the tools do
        if (mode == 3 && step % 8 == 7) imageset_prefetch(&str, idx[cur], B); // dropped later
        cur = !cur;
    }
    check_true("200 batches, every prefetch pattern: streamed floats == resident floats", all_same);
    // Prefetching much more than the buffer holds: the rest is decoded by
    // the batch.
    int many[N];
    for (int i = 0; i < N; i++) many[i] = N - 1 - i;
    imageset_prefetch(&str, many, N);
    check_true("prefetch of all 23 items into a 10-image buffer, then batches: same floats",
               same_batch(&res, &str, many, B, NULL) && same_batch(&res, &str, many + 18, B, flip));
    imageset_free(&str);
    // The first item of the resident set is img00.png, 4x4 RGB: exact.
    uint8_t a[4 * 4 * 3];
    for (int k = 0; k < 48; k++) a[k] = (uint8_t)(k * 11 + (k * k) % 13);
    int exact = 1;
    for (int c = 0; c < C; c++)
        for (int p = 0; p < 16; p++) exact &= res.pixels[c * 16 + p] == a[p * 3 + c];
    check_true("resident item 0 is img00.png exactly", exact);
    imageset_free(&res);
}

static void test_stream_failures(void) {
    enum { N = 12, S = 4, C = 3, B = 4 };
    char dir[512]; // tpath() reuses its buffers
    snprintf(dir, sizeof dir, "%s", tpath("stream_fail"));
    write_png_folder(dir, N);
    // A PNG cut after its header: stb reads the header, the decode fails.
    uint8_t px[8 * 8 * 3] = {0};
    for (int k = 0; k < 192; k++) px[k] = (uint8_t)(k * 29);
    CHECK(png_write(tpath("cut.png"), px, 8, 8, 3) == 0);
    FILE *f = fopen(tpath("cut.png"), "rb");
    uint8_t head[60];
    CHECK(f && fread(head, 1, sizeof head, f) == sizeof head);
    fclose(f);
    write_file(tpath("stream_fail/img99.png"), head, sizeof head);
    ImageSet res, str;
    if (check_true("a folder with a cut PNG opens resident", imageset_open(&res, dir, S, C, SIZE_MAX) == 0)) {
        check_true("  ... resident: the cut PNG is skipped at open", res.N == N && res.skipped == 1);
        imageset_free(&res);
    }
    if (!check_true("  ... and streamed", imageset_open(&str, dir, S, C, 1) == 0)) return;
    check_true("  ... streamed: its header passes, so it is item 12", str.N == N + 1 && str.skipped == 0);
    CHECK(imageset_check_memory(&str, B, 2 * B * (size_t)C * S * S) == 0);
    float out[B * C * S * S]; // (B, C, S, S)
    int idx[B] = {0, 1, 2, 3};
    check_true("streamed batch of good items -> 0", imageset_batch(out, &str, idx, B, NULL) == 0);

    int cut[B] = {4, 12, 5, 6};
    capture_begin();
    int rc = imageset_batch(out, &str, cut, B, NULL);
    captured = capture_end();
    expect_refused("a batch with the cut PNG -> -1 naming the file and item 12", rc, "img99.png",
                   "item 12", NULL);

    // Removed after open, asked for cold and after a prefetch.
    char gone[1024];
    snprintf(gone, sizeof gone, "%s/img07.png", dir);
    CHECK(unlink(gone) == 0);
    int with7[B] = {6, 7, 8, 9};
    capture_begin();
    rc = imageset_batch(out, &str, with7, B, NULL);
    captured = capture_end();
    expect_refused("a file removed after open -> -1 naming it and item 7", rc, "img07.png",
                   "item 7", NULL);
    imageset_prefetch(&str, with7, B);
    capture_begin();
    rc = imageset_batch(out, &str, with7, B, NULL);
    captured = capture_end();
    expect_refused("  ... also when it was prefetched (decoded in the background)", rc,
                   "img07.png", "item 7", NULL);
    // Truncated to nothing after open.
    char trunc[1024];
    snprintf(trunc, sizeof trunc, "%s/img10.png", dir);
    CHECK(truncate(trunc, 0) == 0);
    int with10[2] = {10, 11};
    imageset_prefetch(&str, with10, 2);
    capture_begin();
    rc = imageset_batch(out, &str, with10, 2, NULL);
    captured = capture_end();
    expect_refused("a file truncated after open -> -1 naming it and item 10", rc, "img10.png",
                   "item 10", NULL);
    check_true("the set goes on serving the intact items", imageset_batch(out, &str, idx, B, NULL) == 0);
    imageset_free(&str);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "%s/ldm_test_datasets_XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    CHECK(mkdtemp(tmpdir) != NULL);
    // The loaders print warnings/errors for the hostile cases; that is expected.
    test_image_io();
    test_idx_valid();
    test_idx_hostile();
    test_folder();
    test_stream_equal();
    test_stream_failures();
    test_cache_roundtrip();
    test_cache_hostile();
    test_cache_foreign();
    test_cache_changed_while_open();
    test_cache_threads();
    test_fashion_split("fashion-mnist", "train", 60000);
    test_fashion_split("fashion-mnist-test", "t10k", 10000);
    test_fashion_variants();
    remove_tree(tmpdir);
    return test_summary("test_datasets");
}
