// gen-crops: a training and a held-out set of RGB crops of photographs
// (tools/photo-set.sh feeds it the photographs Debian packages ship).
// Each crop is a random square of side between 1/8 and 1/2 of the photo's
// shorter side (never below --size: crops are only ever shrunk), at a random
// position, area-averaged down to --size x --size and written as a PNG.
// The held-out crops come from photographs the training crops never see, so
// a held-out figure measures generalisation to new pictures, not to new
// crops of the same ones. Everything is a function of --seed.
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

#include "args.h"
#include "common.h"
#include "image.h"
#include "paths.h"
#include "progress.h"
#include "rng.h"

// RNG streams (rng_derive keys): the held-out choice, and one per photo's
// crops offset by this, so adding a photo changes no other photo's crops.
enum { STREAM_SPLIT = 1, STREAM_PHOTO = 1000 };

typedef struct {
    char **paths;
    int n;
} PhotoList;

static void photos_free(PhotoList *l) {
    for (int i = 0; i < l->n; i++) free(l->paths[i]);
    free(l->paths);
}

// One path per line; blank lines and lines starting with '#' are skipped.
static int photos_read(PhotoList *l, const char *path) {
    const char *why = NULL;
    FILE *f = fopen_regular(path, &why);
    if (!f) return errorf("%s: cannot read the photo list: %s", path, why);
    l->paths = NULL;
    l->n = 0;
    int cap = 0;
    char line[PATH_MAX + 2];
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            rc = errorf("%s:%d: line longer than a path may be", path, lineno);
            break;
        }
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (!len || line[0] == '#') continue;
        if (l->n == cap) {
            cap = cap ? 2 * cap : 64;
            char **grown = xmalloc(cap * sizeof *grown);
            if (l->n) memcpy(grown, l->paths, l->n * sizeof *grown);
            free(l->paths);
            l->paths = grown;
        }
        l->paths[l->n] = xmalloc(len + 1);
        memcpy(l->paths[l->n++], line, len + 1);
    }
    if (rc == 0 && ferror(f)) rc = errorf("%s: read error", path);
    fclose(f);
    if (rc == 0 && l->n < 2)
        rc = errorf("%s: %d photograph(s) listed; the held-out split needs at least 2",
                    path, l->n);
    if (rc) photos_free(l);
    return rc;
}

// Box (area) filter weights of a side-`src` square shrunk to side `dst`
// (src >= dst): output pixel o covers source span [o s, (o + 1) s) with
// s = src / dst, and each source pixel weighs its overlap with the span,
// divided by s. A span covers at most ceil(s) + 1 source pixels, so the taps
// of output o are first[o] .. first[o] + taps - 1 with weights w[o * taps + k].
typedef struct {
    int dst, taps, max_taps;
    int *first; // (dst)
    float *w;   // (dst, max_taps)
} BoxKernel;

// Room for every source side up to max_src.
static void box_kernel_init(BoxKernel *k, int max_src, int dst) {
    CHECK(max_src >= dst && dst > 0);
    k->dst = dst;
    k->max_taps = (max_src + dst - 1) / dst + 1;
    k->first = xmalloc(dst * sizeof(int));
    k->w = xmalloc((size_t)dst * k->max_taps * sizeof(float));
}

static void box_kernel_set(BoxKernel *k, int src) {
    int dst = k->dst;
    CHECK(src >= dst);
    double s = (double)src / dst;
    k->taps = (src + dst - 1) / dst + 1;
    CHECK(k->taps <= k->max_taps);
    for (int o = 0; o < dst; o++) {
        double a = o * s, b = (o + 1) * s;
        int i0 = (int)floor(a);
        k->first[o] = i0;
        for (int t = 0; t < k->taps; t++) {
            int i = i0 + t;
            double lo = fmax(a, i), hi = fmin(b, i + 1.0);
            k->w[o * k->taps + t] = i < src && hi > lo ? (float)((hi - lo) / s) : 0.0f;
        }
    }
}

static void box_kernel_free(BoxKernel *k) {
    free(k->first);
    free(k->w);
}

// The square at (x0, y0) of side `side` of photo `img` (w wide, HWC RGB),
// area-averaged to out (size, size, 3) HWC. tmp: (side, size, 3) floats,
// the horizontal pass.
static void crop_shrink(uint8_t *out, float *tmp, const uint8_t *img, int w, int x0, int y0,
                        int side, const BoxKernel *k) {
    int size = k->dst;
    for (int y = 0; y < side; y++) {
        const uint8_t *row = img + ((size_t)(y0 + y) * w + x0) * 3;
        for (int o = 0; o < size; o++) {
            float acc[3] = {0, 0, 0};
            for (int t = 0; t < k->taps; t++) {
                float wt = k->w[o * k->taps + t];
                if (wt == 0.0f) continue;
                const uint8_t *p = row + (size_t)(k->first[o] + t) * 3;
                for (int c = 0; c < 3; c++) acc[c] += wt * p[c];
            }
            for (int c = 0; c < 3; c++) tmp[((size_t)y * size + o) * 3 + c] = acc[c];
        }
    }
    for (int o = 0; o < size; o++)
        for (int x = 0; x < size; x++) {
            float acc[3] = {0, 0, 0};
            for (int t = 0; t < k->taps; t++) {
                float wt = k->w[o * k->taps + t];
                if (wt == 0.0f) continue;
                const float *p = tmp + ((size_t)(k->first[o] + t) * size + x) * 3;
                for (int c = 0; c < 3; c++) acc[c] += wt * p[c];
            }
            for (int c = 0; c < 3; c++) {
                long v = lroundf(acc[c]);
                out[((size_t)o * size + x) * 3 + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        }
}

// A folder to fill: created if missing (its parent must exist), refused if
// it holds anything (stale crops of an earlier, larger run would silently
// join the set).
static int prepare_dir(const char *dir) {
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return errorf("%s: cannot create folder: %s", dir, strerror(errno));
    DIR *d = opendir(dir);
    if (!d) return errorf("%s: cannot open folder: %s", dir, strerror(errno));
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            rc = errorf("%s: folder is not empty (remove it first)", dir);
    closedir(d);
    return rc;
}

// Crops never enlarge: a photo must hold a whole crop.
static int check_photo_size(const char *path, int w, int h, int size) {
    if (w >= size && h >= size) return 0;
    return errorf("%s: %d x %d pixels, smaller than a %d-pixel crop", path, w, h, size);
}

typedef struct {
    const char *out;
    int size;
    uint64_t seed;
} CropSettings;

// Writes crops i = j, j + P, j + 2P, ... < n of split `split` ("train" or
// "test") from photo `path` (the split's photo j of P; global index `id`
// keys its random stream), as <out>/<split>/<i>.png.
static int photo_crops(const CropSettings *cs, const char *split, const char *path, int id, int j,
                       int P, long n) {
    const char *why = NULL;
    int w, h;
    uint8_t *img = image_load(path, 3, &w, &h, &why);
    if (!img) return errorf("%s: cannot read the photograph: %s", path, why);
    int shorter = w < h ? w : h, size = cs->size;
    if (check_photo_size(path, w, h, size)) {
        image_free(img);
        return -1;
    }
    int lo = shorter / 8 > size ? shorter / 8 : size;
    int hi = shorter / 2 > lo ? shorter / 2 : lo;
    float *tmp = xmalloc((size_t)hi * size * 3 * sizeof(float)); // (side, size, 3)
    uint8_t *crop = xmalloc((size_t)size * size * 3);           // (size, size, 3)
    BoxKernel k;
    box_kernel_init(&k, hi, size);
    Rng base;
    rng_init(&base, cs->seed);
    Rng r = rng_derive(&base, STREAM_PHOTO + (uint64_t)id);
    int rc = 0;
    for (long i = j; i < n && rc == 0 && !interrupted(); i += P) {
        int side = lo + (int)rng_below(&r, (uint32_t)(hi - lo + 1));
        int x0 = (int)rng_below(&r, (uint32_t)(w - side + 1));
        int y0 = (int)rng_below(&r, (uint32_t)(h - side + 1));
        box_kernel_set(&k, side);
        crop_shrink(crop, tmp, img, w, x0, y0, side, &k);
        char name[PATH_MAX];
        rc = path_printf(name, sizeof name, "%s/%s/%06ld.png", cs->out, split, i);
        if (rc == 0) rc = png_write(name, crop, size, size, 3);
    }
    box_kernel_free(&k);
    free(tmp);
    free(crop);
    image_free(img);
    return interrupted() ? errorf("gen-crops: interrupted") : rc;
}

int main(int argc, char **argv) {
    const char *out = NULL, *list = NULL;
    long n = 5000, n_test = 500;
    int size = 64, seed = 0, test_photos = 0;
    Opt opts[] = {
        {"--list", OPT_STR, &list, "photographs, one path per line ('#' starts a comment)"},
        {"--out", OPT_STR, &out, "folder to write train/ and test/ into"},
        {"--n", OPT_LONG, &n, "training crops", .lo = 1, .hi = 1e8},
        {"--test", OPT_LONG, &n_test, "held-out crops", .lo = 1, .hi = 1e8},
        {"--size", OPT_INT, &size, "side of a crop in pixels", .lo = 8, .hi = 4096},
        {"--seed", OPT_INT, &seed, "random seed", .hi = 1 << 30},
        {"--test-photos", OPT_INT, &test_photos,
         "photographs held out for the test crops (default 0: the share --test has of all "
         "crops, at least 1)", .hi = 1 << 20},
    };
    int rc = args_parse(argc, argv, opts, sizeof opts / sizeof *opts,
                        "--list photos.txt --out DIR [options]");
    if (rc) return rc > 0 ? 0 : 2;
    if (!out || !list) return errorf("gen-crops: --list and --out are required"), 2;
    interrupt_install();
    PhotoList photos;
    if (photos_read(&photos, list)) return 1;
    int P = photos.n;
    // Every header before any crop: a bad file named at once, not after an
    // hour of crops from the photos listed before it.
    for (int i = 0; i < P; i++) {
        const char *why = NULL;
        int w, h;
        int bad = image_info(photos.paths[i], &w, &h, &why)
                      ? errorf("%s: cannot read the photograph: %s", photos.paths[i], why)
                      : check_photo_size(photos.paths[i], w, h, size);
        if (bad) {
            photos_free(&photos);
            return 1;
        }
    }
    int T = test_photos;
    if (T == 0) T = (int)ceil((double)P * n_test / (double)(n + n_test));
    if (T < 1) T = 1;
    if (T > P - 1) {
        photos_free(&photos);
        return errorf("gen-crops: %d held-out photographs leave none of the %d for training "
                      "(see --test-photos)", T, P), 2;
    }
    // A random choice of held-out photos: the listed order groups photos by
    // package, and the held-out ones should be a sample of them all.
    int *order = xmalloc(P * sizeof(int));
    for (int i = 0; i < P; i++) order[i] = i;
    Rng base;
    rng_init(&base, (uint64_t)seed);
    Rng split = rng_derive(&base, STREAM_SPLIT);
    rng_shuffle(&split, order, P);
    char dir[PATH_MAX], manifest[PATH_MAX];
    rc = (mkdir(out, 0777) != 0 && errno != EEXIST)
             ? errorf("%s: cannot create folder: %s", out, strerror(errno))
             : 0;
    rc = rc || path_printf(dir, sizeof dir, "%s/train", out) || prepare_dir(dir) ||
         path_printf(dir, sizeof dir, "%s/test", out) || prepare_dir(dir) ||
         path_printf(manifest, sizeof manifest, "%s/sources.txt", out);
    FILE *mf = rc ? NULL : fopen(manifest, "w");
    if (!rc && !mf) rc = errorf("%s: cannot write: %s", manifest, strerror(errno));
    CropSettings cs = {out, size, (uint64_t)seed};
    Progress prog;
    progress_init(&prog, 0);
    // Held-out photos are order[0 .. T), training ones order[T .. P).
    for (int q = 0; q < P && rc == 0; q++) {
        int test = q < T, j = test ? q : q - T, Ps = test ? T : P - T;
        const char *name = test ? "test" : "train";
        long ns = test ? n_test : n;
        const char *path = photos.paths[order[q]];
        fprintf(mf, "%s %s\n", name, path);
        rc = photo_crops(&cs, name, path, order[q], j, Ps, ns);
        progress_print(&prog, q + 1, P, q + 1, "photos", -1, q + 1 == P);
    }
    progress_end(&prog);
    if (mf && fclose(mf) != 0 && rc == 0) rc = errorf("%s: write error", manifest);
    if (rc == 0)
        fprintf(stderr, "gen-crops: %ld training crops from %d photographs, %ld held-out crops "
                "from %d others, in %s (list: %s)\n", n, P - T, n_test, T, out, manifest);
    free(order);
    photos_free(&photos);
    return rc ? 1 : 0;
}
