#include "imageset.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <zlib.h>

#include "common.h"
#include "image.h"

#define IDX_IMAGES_MAGIC 0x00000803u
#define IDX_LABELS_MAGIC 0x00000801u
// Sanity caps checked before anything is allocated: a hostile header can
// declare any dims, and the data is read in growing chunks anyway so a
// truncated file never costs its declared size.
#define IDX_MAX_ITEMS (1u << 28)
#define IDX_MAX_SIDE 65536u
#define IDX_MAX_BYTES ((size_t)1 << 31)
#define IDX_CHUNK ((size_t)1 << 20)
#define FOLDER_MAX_DEPTH 32

// ---------------------------------------------------------------- IDX files

// Reads exactly n bytes; -1 with a message on a read error or short read.
static int gz_read_exact(gzFile f, const char *path, void *buf, size_t n, const char *what) {
    unsigned char *p = buf;
    size_t got = 0;
    while (got < n) {
        size_t want = n - got;
        if (want > IDX_CHUNK) want = IDX_CHUNK;
        int r = gzread(f, p + got, (unsigned)want);
        if (r < 0) {
            int err;
            const char *msg = gzerror(f, &err);
            return errorf("%s: cannot read %s: %s", path, what, msg ? msg : "read error");
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    if (got < n)
        return errorf("%s: truncated: %s has %zu of %zu declared bytes", path, what, got, n);
    return 0;
}

// Reads n declared bytes into a buffer that grows with the data actually
// present, so a header declaring 2 GiB over a 1 KiB file allocates ~1 MiB.
static int gz_read_data(gzFile f, const char *path, size_t n, uint8_t **out) {
    size_t cap = n < IDX_CHUNK ? n : IDX_CHUNK, got = 0;
    uint8_t *buf = xmalloc(cap);
    while (got < n) {
        if (got == cap) {
            cap = cap * 2 < n ? cap * 2 : n;
            uint8_t *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                return errorf("%s: out of memory reading %zu bytes", path, n);
            }
            buf = nb;
        }
        size_t want = cap - got;
        if (want > IDX_CHUNK) want = IDX_CHUNK;
        int r = gzread(f, buf + got, (unsigned)want);
        if (r < 0) {
            int err;
            const char *msg = gzerror(f, &err);
            free(buf);
            return errorf("%s: cannot read data: %s", path, msg ? msg : "read error");
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    if (got < n) {
        free(buf);
        return errorf("%s: truncated: %zu of %zu declared data bytes present", path, got, n);
    }
    *out = buf;
    return 0;
}

static uint32_t be32(const unsigned char *b) {
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

// Opens an IDX file (raw or gzip) and reads its magic. -1 with a message.
static int idx_open(const char *path, gzFile *f, uint32_t *magic) {
    errno = 0;
    *f = gzopen(path, "rb");
    if (!*f) return errorf("%s: cannot open: %s", path, errno ? strerror(errno) : "gzopen failed");
    unsigned char b[4];
    if (gz_read_exact(*f, path, b, 4, "IDX header") != 0) {
        gzclose(*f);
        return -1;
    }
    *magic = be32(b);
    return 0;
}

// Images: (n, rows, cols) uint8.
static int idx_read_images(const char *path, uint8_t **px, int *n, int *rows, int *cols) {
    gzFile f;
    uint32_t magic;
    if (idx_open(path, &f, &magic) != 0) return -1;
    int rc = -1;
    unsigned char b[12];
    if (magic != IDX_IMAGES_MAGIC) {
        errorf("%s: not an IDX image file (magic 0x%08x, expected 0x%08x)", path,
               magic, IDX_IMAGES_MAGIC);
        goto done;
    }
    if (gz_read_exact(f, path, b, 12, "IDX dimensions") != 0) goto done;
    uint32_t dn = be32(b), dr = be32(b + 4), dc = be32(b + 8);
    if (dn == 0 || dr == 0 || dc == 0) {
        errorf("%s: IDX image file declares an empty shape (%u x %u x %u)", path, dn, dr, dc);
        goto done;
    }
    size_t bytes;
    if (dn > IDX_MAX_ITEMS || dr > IDX_MAX_SIDE || dc > IDX_MAX_SIDE ||
        mul_size((size_t)dr * dc, dn, &bytes) != 0 || bytes > IDX_MAX_BYTES) {
        errorf("%s: IDX image file declares an implausible shape (%u x %u x %u)", path,
               dn, dr, dc);
        goto done;
    }
    if (gz_read_data(f, path, bytes, px) != 0) goto done;
    *n = (int)dn, *rows = (int)dr, *cols = (int)dc;
    rc = 0;
done:
    gzclose(f);
    return rc;
}

// Labels: (n) uint8 widened to int32; n must equal the image count.
static int idx_read_labels(const char *path, int n_images, int32_t **labels) {
    gzFile f;
    uint32_t magic;
    if (idx_open(path, &f, &magic) != 0) return -1;
    int rc = -1;
    unsigned char b[4];
    uint8_t *raw = NULL;
    if (magic != IDX_LABELS_MAGIC) {
        errorf("%s: not an IDX label file (magic 0x%08x, expected 0x%08x)", path, magic,
               IDX_LABELS_MAGIC);
        goto done;
    }
    if (gz_read_exact(f, path, b, 4, "IDX dimensions") != 0) goto done;
    uint32_t dn = be32(b);
    if (dn != (uint32_t)n_images) {
        errorf("%s: %u labels but the image file has %d images", path, dn, n_images);
        goto done;
    }
    if (gz_read_data(f, path, dn, &raw) != 0) goto done;
    *labels = xmalloc((size_t)dn * sizeof(int32_t));
    for (uint32_t i = 0; i < dn; i++) (*labels)[i] = raw[i];
    rc = 0;
done:
    free(raw);
    gzclose(f);
    return rc;
}

// Grey (n, rows, cols) -> s->pixels (n, C, S, S): zero-padded centrally
// (odd extra on the bottom/right) when it fits, else resized and cropped.
static void idx_to_set(ImageSet *s, const uint8_t *px, int rows, int cols) {
    const int S = s->S, C = s->C;
    const size_t plane = (size_t)S * S;
    s->pixels = xmalloc((size_t)s->N * C * plane);
    const int pad = rows <= S && cols <= S;
    const int top = (S - rows) / 2, left = (S - cols) / 2;
#pragma omp parallel
    {
        uint8_t *tmp = pad ? NULL : xmalloc(plane); // (S, S)
#pragma omp for schedule(static)
        for (int i = 0; i < s->N; i++) {
            const uint8_t *src = px + (size_t)i * rows * cols; // (rows, cols)
            uint8_t *dst = s->pixels + (size_t)i * C * plane;   // (C, S, S)
            if (pad) {
                memset(dst, 0, plane);
                for (int y = 0; y < rows; y++)
                    memcpy(dst + (size_t)(y + top) * S + left, src + (size_t)y * cols,
                           (size_t)cols);
            } else {
                image_resize_crop(tmp, src, cols, rows, 1, S);
                memcpy(dst, tmp, plane);
            }
            for (int c = 1; c < C; c++) memcpy(dst + c * plane, dst, plane);
        }
        free(tmp);
    }
}

static int load_idx(ImageSet *s, const char *images, const char *labels) {
    uint8_t *px = NULL;
    int rows, cols;
    if (idx_read_images(images, &px, &s->N, &rows, &cols) != 0) return -1;
    if (labels && idx_read_labels(labels, s->N, &s->labels) != 0) {
        free(px);
        return -1;
    }
    idx_to_set(s, px, rows, cols);
    free(px);
    return 0;
}

// The labels file beside an images file: "...-images-idx3-ubyte[.gz]" ->
// "...-labels-idx1-ubyte[.gz]" (either compression). 1 if found.
static int find_labels_for(const char *images, char *out, size_t cap) {
    const char *key = "-images-idx3-ubyte";
    const char *slash = strrchr(images, '/');
    const char *base = slash ? slash + 1 : images;
    const char *at = strstr(base, key);
    if (!at) return 0;
    int pre = (int)(at - images);
    const char *suffixes[] = {at + strlen(key), ".gz", ""};
    for (int i = 0; i < 3; i++) {
        struct stat st;
        snprintf(out, cap, "%.*s-labels-idx1-ubyte%s", pre, images, suffixes[i]);
        if (stat(out, &st) == 0 && S_ISREG(st.st_mode)) return 1;
    }
    return 0;
}

// ---------------------------------------------------------------- folders

typedef struct {
    char **v;
    int n, cap;
} PathList;

static void paths_push(PathList *l, const char *p) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->v = realloc(l->v, (size_t)l->cap * sizeof(char *));
        CHECK(l->v != NULL);
    }
    size_t len = strlen(p) + 1;
    l->v[l->n] = xmalloc(len);
    memcpy(l->v[l->n++], p, len);
}

static void paths_free(PathList *l) {
    for (int i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
}

static int has_image_ext(const char *name) {
    const char *dot = strrchr(name, '.');
    if (!dot) return 0;
    return !strcasecmp(dot, ".png") || !strcasecmp(dot, ".jpg") ||
           !strcasecmp(dot, ".jpeg") || !strcasecmp(dot, ".bmp");
}

// Collects image paths under dir. Unreadable subfolders are warned about and
// skipped; an unreadable top folder is an error. The depth cap stops
// symlink loops.
static int walk(PathList *l, const char *dir, int depth) {
    if (depth > FOLDER_MAX_DEPTH) {
        warnf("%s: deeper than %d folders, not searched", dir, FOLDER_MAX_DEPTH);
        return 0;
    }
    DIR *d = opendir(dir);
    if (!d) {
        if (depth == 0) return errorf("%s: cannot open folder: %s", dir, strerror(errno));
        warnf("%s: cannot open folder, skipped: %s", dir, strerror(errno));
        return 0;
    }
    struct dirent *e;
    char path[PATH_MAX];
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue; // hidden files, "." and ".."
        int len = snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (len < 0 || (size_t)len >= sizeof path) {
            warnf("%s/%s: path too long, skipped", dir, e->d_name);
            continue;
        }
        struct stat st;
        if (stat(path, &st) != 0) continue; // dangling symlink or vanished
        if (S_ISDIR(st.st_mode)) {
            walk(l, path, depth + 1);
        } else if (S_ISREG(st.st_mode) && has_image_ext(e->d_name)) {
            paths_push(l, path);
        }
    }
    closedir(d);
    return 0;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int load_folder(ImageSet *s, const char *dir) {
    PathList l = {0};
    if (walk(&l, dir, 0) != 0) return -1;
    // readdir order is filesystem-dependent; sorting makes item i the same
    // file everywhere.
    if (l.n > 1) qsort(l.v, (size_t)l.n, sizeof(char *), cmp_str);
    const int S = s->S, C = s->C, nf = l.n;
    const size_t item = (size_t)C * S * S;
    uint8_t *px = xmalloc(nf > 0 ? (size_t)nf * item : 1); // (nf, C, S, S)
    const char **why = xcalloc(nf > 0 ? (size_t)nf : 1, sizeof(char *));
#pragma omp parallel
    {
        uint8_t *hwc = xmalloc((size_t)S * S * C); // (S, S, C)
#pragma omp for schedule(dynamic, 4)
        for (int i = 0; i < nf; i++) {
            int w, h;
            const char *reason = NULL;
            uint8_t *img = image_load(l.v[i], C, &w, &h, &reason);
            if (!img) {
                why[i] = reason ? reason : "cannot decode";
                continue;
            }
            image_resize_crop(hwc, img, w, h, C, S);
            image_free(img);
            uint8_t *dst = px + (size_t)i * item; // (C, S, S)
            for (int c = 0; c < C; c++)
                for (size_t p = 0; p < (size_t)S * S; p++)
                    dst[(size_t)c * S * S + p] = hwc[p * C + c];
        }
        free(hwc);
    }
    // Compact in file order after the parallel decode, so the warnings and
    // the item order do not depend on the thread count.
    int n = 0;
    for (int i = 0; i < nf; i++) {
        if (why[i]) {
            warnf("%s: cannot decode, skipped: %s", l.v[i], why[i]);
            s->skipped++;
            continue;
        }
        if (n != i) memcpy(px + (size_t)n * item, px + (size_t)i * item, item);
        n++;
    }
    free(why);
    paths_free(&l);
    if (s->skipped) warnf("%s: %d files skipped", dir, s->skipped);
    if (n == 0) {
        free(px);
        return errorf("%s: no decodable image (.png/.jpg/.jpeg/.bmp) found", dir);
    }
    s->N = n;
    s->pixels = px;
    return 0;
}

// ---------------------------------------------------------------- API

int imageset_load(ImageSet *s, const char *source, int size, int channels) {
    CHECK(channels == 1 || channels == 3);
    CHECK(size > 0);
    memset(s, 0, sizeof *s);
    s->C = channels;
    s->S = size;
    snprintf(s->source, sizeof s->source, "%s", source);
    int rc;
    const char *split = NULL;
    if (!strcmp(source, "fashion-mnist")) split = "train";
    else if (!strcmp(source, "fashion-mnist-test")) split = "t10k";
    if (split) {
        char images[PATH_MAX], labels[PATH_MAX];
        snprintf(images, sizeof images, "%s/%s-images-idx3-ubyte.gz", FASHION_MNIST_DIR, split);
        snprintf(labels, sizeof labels, "%s/%s-labels-idx1-ubyte.gz", FASHION_MNIST_DIR, split);
        rc = load_idx(s, images, labels);
    } else {
        struct stat st;
        if (stat(source, &st) != 0)
            return errorf("%s: %s (expected a folder of images, an IDX file, "
                          "\"fashion-mnist\" or \"fashion-mnist-test\")",
                          source, strerror(errno));
        if (S_ISDIR(st.st_mode)) {
            rc = load_folder(s, source);
        } else if (S_ISREG(st.st_mode)) {
            char labels[PATH_MAX];
            rc = load_idx(s, source, find_labels_for(source, labels, sizeof labels) ? labels : NULL);
        } else {
            return errorf("%s: neither a folder, an IDX file nor a known dataset name", source);
        }
    }
    if (rc != 0) {
        imageset_free(s);
        return -1;
    }
    return 0;
}

void imageset_free(ImageSet *s) {
    free(s->pixels);
    free(s->labels);
    s->pixels = NULL;
    s->labels = NULL;
    s->N = 0;
}

void imageset_batch(float *out, const ImageSet *s, const int *idx, int B,
                    const uint8_t *flip) {
    const int C = s->C, S = s->S;
    const size_t item = (size_t)C * S * S;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        CHECK(idx[b] >= 0 && idx[b] < s->N);
        const uint8_t *src = s->pixels + (size_t)idx[b] * item; // (C, S, S)
        float *dst = out + (size_t)b * item;                     // (C, S, S)
        const int mirror = flip && flip[b];
        for (int r = 0; r < C * S; r++) { // r runs over (channel, row) pairs
            const uint8_t *sr = src + (size_t)r * S;
            float *dr = dst + (size_t)r * S;
            for (int x = 0; x < S; x++)
                dr[x] = (float)sr[mirror ? S - 1 - x : x] / 127.5f - 1.0f;
        }
    }
}
