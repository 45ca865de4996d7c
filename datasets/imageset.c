#include "imageset.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <omp.h>
#include <pthread.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "args.h"
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
// The data set's class names (its README), labels 0..9.
#define FASHION_MNIST_CLASSES \
    "T-shirt/top\nTrouser\nPullover\nDress\nCoat\nSandal\nShirt\nSneaker\nBag\nAnkle boot"

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
    s->pixels = xmalloc_aligned((size_t)s->N * C * plane); // huge pages: see load_folder
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
        int len = snprintf(out, cap, "%.*s-labels-idx1-ubyte%s", pre, images, suffixes[i]);
        if (len >= 0 && (size_t)len < cap && stat(out, &st) == 0 && S_ISREG(st.st_mode)) return 1;
    }
    return 0;
}

// ---------------------------------------------------------------- folders

typedef struct {
    char **v;
    int n, cap;
    struct { dev_t dev; ino_t ino; } *seen; // (nseen) folders walked, by identity
    int nseen, seen_cap;
} PathList;

// 1 the first time folder st is met: a symbolic link to a folder already
// walked (a loop, or a link to a parent) is not walked again, so every real
// folder's images count once.
static int first_visit(PathList *l, const struct stat *st) {
    for (int i = 0; i < l->nseen; i++)
        if (l->seen[i].dev == st->st_dev && l->seen[i].ino == st->st_ino) return 0;
    if (l->nseen == l->seen_cap) {
        l->seen_cap = l->seen_cap ? 2 * l->seen_cap : 64;
        l->seen = realloc(l->seen, (size_t)l->seen_cap * sizeof *l->seen);
        CHECK(l->seen != NULL);
    }
    l->seen[l->nseen].dev = st->st_dev;
    l->seen[l->nseen++].ino = st->st_ino;
    return 1;
}

static char *xstrdup(const char *p) {
    size_t len = strlen(p) + 1;
    char *d = xmalloc(len);
    memcpy(d, p, len);
    return d;
}

static void paths_push(PathList *l, const char *p) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->v = realloc(l->v, (size_t)l->cap * sizeof(char *));
        CHECK(l->v != NULL);
    }
    l->v[l->n++] = xstrdup(p);
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
    struct stat self;
    if (stat(dir, &self) == 0 && !first_visit(l, &self)) return 0;
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

// Decodes one file to (S, S, C) HWC, as every folder item is made. -1 with
// the reason copied into why: image_load's may live in a thread-local
// buffer that the thread's next failure overwrites.
static int decode_file(const char *path, int C, int S, uint8_t *hwc, char *why, size_t cap) {
    int w, h;
    const char *reason = NULL;
    uint8_t *img = image_load(path, C, &w, &h, &reason);
    if (!img) {
        snprintf(why, cap, "%s", reason ? reason : "cannot decode");
        return -1;
    }
    image_resize_crop(hwc, img, w, h, C, S);
    image_free(img);
    return 0;
}

// Resident: decodes every file into px (nf, C, S, S); why[i] = the reason
// file i failed, else NULL.
static void decode_all(const ImageSet *s, const PathList *l, uint8_t *px, char **why) {
    const int S = s->S, C = s->C;
    const size_t plane = (size_t)S * S;
#pragma omp parallel
    {
        uint8_t *hwc = xmalloc(plane * C); // (S, S, C)
        char reason[160];
#pragma omp for schedule(dynamic, 4)
        for (int i = 0; i < l->n; i++) {
            if (decode_file(l->v[i], C, S, hwc, reason, sizeof reason) != 0) {
                why[i] = xstrdup(reason);
                continue;
            }
            uint8_t *dst = px + (size_t)i * C * plane; // (C, S, S)
            for (int c = 0; c < C; c++)
                for (size_t p = 0; p < plane; p++) dst[(size_t)c * plane + p] = hwc[p * C + c];
        }
        free(hwc);
    }
}

// Streamed: reads only the headers; why[i] as for decode_all.
static void screen_headers(const PathList *l, char **why) {
#pragma omp parallel for schedule(dynamic, 16)
    for (int i = 0; i < l->n; i++) {
        int w, h;
        const char *reason = NULL;
        if (image_info(l->v[i], &w, &h, &reason) != 0)
            why[i] = xstrdup(reason ? reason : "unreadable header");
    }
}

// Keeps the files without a reason in file order, after the parallel
// decode or screening, so that the warnings and the item order do not
// depend on the thread count: warns about each other file, counts it in
// s->skipped and frees its path and reason; moves the kept paths and, when
// px is not NULL, their pixels (item bytes each) down.
static void keep_passed(ImageSet *s, PathList *l, char **why, uint8_t *px, size_t item) {
    int n = 0;
    for (int i = 0; i < l->n; i++) {
        if (why[i]) {
            warnf("%s: cannot decode, skipped: %s", l->v[i], why[i]);
            free(why[i]);
            why[i] = NULL;
            free(l->v[i]);
            s->skipped++;
            continue;
        }
        if (px && n != i) memcpy(px + (size_t)n * item, px + (size_t)i * item, item);
        l->v[n++] = l->v[i];
    }
    l->n = n;
}

// ---------------------------------------------------------------- classes
//
// A folder whose images all sit in first-level sub-folders (at any depth
// below them) is labelled: the sub-folders' names, sorted in byte order, are
// classes 0..K-1, and an image's label is the index of the sub-folder it is
// under. The classes come from the files found, before any is decoded: a
// class whose images all fail to decode keeps its number. Images directly in
// the folder: no labels; when sub-folders hold images too, s->root_images
// says so, for vae-encode to warn (a partly labelled set would make the root
// images a class of their own or drop them, neither of which the user asked
// for; vae-train has no use for labels and stays quiet).

typedef struct {
    char **names; // (K) sorted
    int K;
} FolderClasses;

// The first path component below `dir` of path p (found by walk(), so it
// starts with dir and '/'), into out (PATH_MAX bytes); 0 when p is directly
// in dir.
static int first_component(char *out, const char *dir, const char *p) {
    const char *rel = p + strlen(dir) + 1, *slash = strchr(rel, '/');
    if (!slash) return 0;
    memcpy(out, rel, (size_t)(slash - rel));
    out[slash - rel] = 0;
    return 1;
}

// The classes of folder dir from its image paths l (sorted); K = 0 when it
// has none. -1 with a message for a class name that a cache cannot record.
static int folder_classes(ImageSet *s, FolderClasses *fc, const char *dir, const PathList *l) {
    memset(fc, 0, sizeof *fc);
    char name[PATH_MAX];
    int nroot = 0;
    char **names = xmalloc((l->n > 0 ? (size_t)l->n : 1) * sizeof *names);
    int n = 0;
    for (int i = 0; i < l->n; i++) {
        if (!first_component(name, dir, l->v[i])) {
            nroot++;
            continue;
        }
        // Paths are sorted, so a sub-folder's images are consecutive.
        if (n == 0 || strcmp(names[n - 1], name) != 0) names[n++] = xstrdup(name);
    }
    int rc = 0;
    if (n > 0) s->root_images = nroot;
    if (nroot == 0 && n > 0) {
        // "a b/" sorts before "a/" as a path but after it as a name.
        qsort(names, (size_t)n, sizeof *names, cmp_str);
        for (int k = 0; k < n && rc == 0; k++)
            if (strchr(names[k], '\n'))
                rc = errorf("%s: the class folder name '%s' holds a line break, which the class "
                            "names of a latent cache cannot; rename the folder", dir, names[k]);
        if (rc == 0) {
            fc->names = names;
            fc->K = n;
            return 0;
        }
    }
    for (int k = 0; k < n; k++) free(names[k]);
    free(names);
    return rc;
}

static void folder_classes_free(FolderClasses *fc) {
    for (int k = 0; k < fc->K; k++) free(fc->names[k]);
    free(fc->names);
    memset(fc, 0, sizeof *fc);
}

// Sets s->labels for the images l (the items, in order), s->class_names and
// s->num_classes from fc.
static void set_folder_labels(ImageSet *s, const FolderClasses *fc, const char *dir,
                              const PathList *l) {
    char name[PATH_MAX];
    const char *key = name;
    size_t len = 0;
    for (int k = 0; k < fc->K; k++) len += strlen(fc->names[k]) + 1;
    s->class_names = xmalloc(len);
    s->class_names[0] = 0;
    for (int k = 0, at = 0; k < fc->K; k++)
        at += sprintf(s->class_names + at, "%s%s", k ? "\n" : "", fc->names[k]);
    s->num_classes = fc->K;
    s->labels = xmalloc((size_t)l->n * sizeof *s->labels);
    for (int i = 0; i < l->n; i++) {
        CHECK(first_component(name, dir, l->v[i]));
        char **hit = bsearch(&key, fc->names, (size_t)fc->K, sizeof *fc->names, cmp_str);
        CHECK(hit != NULL);
        s->labels[i] = (int32_t)(hit - fc->names);
    }
}

static void stream_init(ImageSet *s, PathList *paths);

static int load_folder(ImageSet *s, const char *dir, size_t max_memory) {
    PathList l = {0};
    int rc = walk(&l, dir, 0);
    free(l.seen); // only the walk needs it
    l.seen = NULL;
    if (rc != 0) return -1;
    // readdir order is filesystem-dependent; sorting makes item i the same
    // file everywhere.
    if (l.n > 1) qsort(l.v, (size_t)l.n, sizeof(char *), cmp_str);
    FolderClasses fc;
    if (folder_classes(s, &fc, dir, &l)) {
        paths_free(&l);
        return -1;
    }
    const size_t item = (size_t)s->C * s->S * s->S;
    char **why = xcalloc(l.n > 0 ? (size_t)l.n : 1, sizeof(char *)); // (nf)
    // A folder that may not fit has its headers read first, so that the
    // choice rests on the count of images that will be items.
    size_t bytes;
    if (mul_size((size_t)l.n, item, &bytes) != 0 || bytes > max_memory) {
        screen_headers(&l, why);
        keep_passed(s, &l, why, NULL, item);
    }
    const int resident = mul_size((size_t)l.n, item, &bytes) == 0 && bytes <= max_memory;
    uint8_t *px = NULL; // (n, C, S, S)
    if (resident) {
        // On huge pages: first-touching 1.2 GB (100,000 64x64 RGB images) in
        // 4 KB pages was 40% of decoding them (page faults).
        px = xmalloc_aligned(l.n > 0 ? bytes : 1);
        decode_all(s, &l, px, why);
        keep_passed(s, &l, why, px, item);
    }
    free(why);
    const int n = l.n;
    if (s->skipped) warnf("%s: %d files skipped", dir, s->skipped);
    if (n == 0) {
        free(px);
        paths_free(&l);
        folder_classes_free(&fc);
        return errorf("%s: no decodable image (.png/.jpg/.jpeg/.bmp) found", dir);
    }
    if (fc.K > 0) set_folder_labels(s, &fc, dir, &l);
    folder_classes_free(&fc);
    s->N = n;
    if (resident) {
        s->pixels = px;
        paths_free(&l);
    } else {
        stream_init(s, &l);
    }
    return 0;
}

// One item as floats (C, S, S) in [-1, 1], mirrored in x when `mirror`:
// pixel (c, y, x) of src is src[c * cs + (y * S + x) * ps], so the one loop
// reads the resident CHW layout (cs = S * S, ps = 1) and the stream's HWC
// (cs = 1, ps = C) with the same arithmetic: both give identical floats.
static void item_to_float(float *dst, const uint8_t *src, int C, int S, size_t cs, size_t ps,
                          int mirror) {
    for (int c = 0; c < C; c++)
        for (int y = 0; y < S; y++) {
            const uint8_t *row = src + (size_t)c * cs + (size_t)y * S * ps;
            float *d = dst + ((size_t)c * S + y) * S;
            for (int x = 0; x < S; x++)
                d[x] = (float)row[(size_t)(mirror ? S - 1 - x : x) * ps] / 127.5f - 1.0f;
        }
}

// ---------------------------------------------------------------- streaming
//
// A streamed set decodes into a buffer of slots, one decoded item each,
// twice the largest batch (imageset_check_memory sizes it): the batch being
// gathered and the next one, prefetched. Only the caller's thread (prefetch,
// batch) assigns slots to items; the background threads only decode slots
// the caller queued (QUEUED -> BUSY -> DONE), and imageset_batch decodes
// itself, on all OpenMP threads, the items of its batch not yet started. Which thread
// decodes an item never changes its pixels, and a batch reports the first
// failing item in idx order, so nothing depends on the threads' timing.

// One or two background threads: the compute runs OpenMP on every core, so
// each decoding thread takes its core's share from the GEMMs, and a thread
// preempted inside a parallel region stalls the others at its barrier. One
// thread decodes about 10,000 64x64 PNGs a second, 15 times what vae-encode
// encodes on 2 cores (about 700 a second); a second one starts from 8
// compute threads, for larger source images. When the background falls
// behind, the batch itself decodes what is still queued on all threads, so
// the cap costs overlap, never throughput.
#define STREAM_MAX_THREADS 2
#define STREAM_SECOND_THREAD_FROM 8 // compute threads

typedef enum { SLOT_FREE, SLOT_QUEUED, SLOT_BUSY, SLOT_DONE } SlotState;

typedef struct {
    int item;        // -1 when free
    SlotState state;
    long call;       // the prefetch or batch call that last asked for the item
    long seq;        // decoding order while QUEUED
    int failed;      // DONE: the decode failed, why says why
    char why[160];
    uint8_t *hwc;    // (S, S, C)
} Slot;

struct ImageStream {
    int N, C, S;
    char **paths;      // (N) the files whose header passed
    int *slot_of;      // (N) the slot holding each item, -1 when none
    int max_batch, nslots, nfree;
    Slot *slots;       // (nslots)
    int *free_slots;   // (nslots) stack of the FREE ones
    uint8_t *pool;     // (nslots, S, S, C) the slots' pixels
    int *mine, *at;    // (max_batch) slots a batch decodes itself; the slot of its item b
    long calls, seq;
    pthread_mutex_t mu;
    pthread_cond_t work; // a slot was queued, or stop
    pthread_cond_t done; // a slot became DONE
    int stop, nthreads;
    pthread_t threads[STREAM_MAX_THREADS];
};

// Takes the paths; the buffer and threads come with imageset_check_memory.
static void stream_init(ImageSet *s, PathList *paths) {
    ImageStream *st = xcalloc(1, sizeof *st);
    st->N = s->N, st->C = s->C, st->S = s->S;
    st->paths = paths->v;
    st->slot_of = xmalloc((size_t)s->N * sizeof(int));
    for (int i = 0; i < s->N; i++) st->slot_of[i] = -1;
    CHECK(pthread_mutex_init(&st->mu, NULL) == 0);
    CHECK(pthread_cond_init(&st->work, NULL) == 0);
    CHECK(pthread_cond_init(&st->done, NULL) == 0);
    s->stream = st;
}

static void stream_decode(const ImageStream *st, Slot *sl) {
    sl->failed = decode_file(st->paths[sl->item], st->C, st->S, sl->hwc, sl->why,
                             sizeof sl->why) != 0;
}

// The QUEUED slot queued first, -1 when none. A scan: a buffer of a few
// batches costs far less to scan than one image to decode.
static int stream_next_queued(const ImageStream *st) {
    int best = -1;
    for (int k = 0; k < st->nslots; k++)
        if (st->slots[k].state == SLOT_QUEUED &&
            (best < 0 || st->slots[k].seq < st->slots[best].seq))
            best = k;
    return best;
}

static void *stream_thread(void *arg) {
    ImageStream *st = arg;
    pthread_mutex_lock(&st->mu);
    for (;;) {
        int k;
        while (!st->stop && (k = stream_next_queued(st)) < 0)
            pthread_cond_wait(&st->work, &st->mu);
        if (st->stop) break;
        Slot *sl = &st->slots[k];
        sl->state = SLOT_BUSY; // from here on only this thread touches the slot
        pthread_mutex_unlock(&st->mu);
        stream_decode(st, sl);
        pthread_mutex_lock(&st->mu);
        sl->state = SLOT_DONE;
        pthread_cond_broadcast(&st->done);
    }
    pthread_mutex_unlock(&st->mu);
    return NULL;
}

// A slot for a new item in call `call` (mutex held): a free one, else the
// one asked for longest ago among those no thread is decoding and this call
// does not use (its item is dropped: decoded again when asked for); -1 when
// none.
static int stream_claim(ImageStream *st, int item, SlotState state, long call) {
    int k = -1;
    if (st->nfree > 0) {
        k = st->free_slots[--st->nfree];
    } else {
        for (int j = 0; j < st->nslots; j++) {
            const Slot *sl = &st->slots[j];
            if (sl->state == SLOT_BUSY || sl->call == call) continue;
            if (k < 0 || sl->call < st->slots[k].call) k = j;
        }
        if (k < 0) return -1;
        st->slot_of[st->slots[k].item] = -1;
    }
    Slot *sl = &st->slots[k];
    sl->item = item;
    sl->state = state;
    sl->call = call;
    sl->seq = ++st->seq;
    st->slot_of[item] = k;
    return k;
}

static void stream_release(ImageStream *st, int k) {
    Slot *sl = &st->slots[k];
    if (sl->state == SLOT_FREE) return; // an item twice in one batch
    st->slot_of[sl->item] = -1;
    sl->item = -1;
    sl->state = SLOT_FREE;
    st->free_slots[st->nfree++] = k;
}

static int stream_start(ImageSet *s, int batch, size_t max_memory) {
    ImageStream *st = s->stream;
    CHECK(st->nslots == 0 && batch > 0);
    const size_t item = (size_t)s->C * s->S * s->S;
    int nslots = batch <= s->N / 2 ? 2 * batch : s->N; // an item needs one slot at most
    if ((size_t)nslots * item > max_memory) {
        char all[32], need[32], have[32];
        args_format_size(all, sizeof all, (size_t)s->N * item);
        args_format_size(need, sizeof need, (size_t)nslots * item);
        args_format_size(have, sizeof have, max_memory);
        return errorf("%s: %d images take %s decoded, more than the memory limit of %s, so "
                      "they are decoded as they are read, which needs %s for %d images "
                      "(2 batches of %d): raise --max-memory or lower --batch",
                      s->source, s->N, all, have, need, nslots, batch);
    }
    st->max_batch = batch;
    st->nslots = nslots;
    st->slots = xcalloc((size_t)nslots, sizeof(Slot));
    st->free_slots = xmalloc((size_t)nslots * sizeof(int));
    st->pool = xmalloc((size_t)nslots * item);
    st->mine = xmalloc((size_t)batch * sizeof(int));
    st->at = xmalloc((size_t)batch * sizeof(int));
    for (int k = 0; k < nslots; k++) {
        st->slots[k].item = -1;
        st->slots[k].hwc = st->pool + (size_t)k * item;
        st->free_slots[k] = nslots - 1 - k;
    }
    st->nfree = nslots;
    const int want = omp_get_max_threads() >= STREAM_SECOND_THREAD_FROM ? 2 : 1;
    for (int t = 0; t < want; t++) {
        int e = pthread_create(&st->threads[st->nthreads], NULL, stream_thread, st);
        // Without background threads every batch decodes its items itself:
        // slower, not wrong.
        if (e != 0) {
            warnf("%s: cannot start a decoding thread (%s); decoding in the batches",
                  s->source, strerror(e));
            break;
        }
        st->nthreads++;
    }
    return 0;
}

static void stream_free(ImageStream *st) {
    pthread_mutex_lock(&st->mu);
    st->stop = 1;
    pthread_cond_broadcast(&st->work);
    pthread_mutex_unlock(&st->mu);
    for (int t = 0; t < st->nthreads; t++) pthread_join(st->threads[t], NULL);
    pthread_mutex_destroy(&st->mu);
    pthread_cond_destroy(&st->work);
    pthread_cond_destroy(&st->done);
    for (int i = 0; i < st->N; i++) free(st->paths[i]);
    free(st->paths);
    free(st->slot_of);
    free(st->slots);
    free(st->free_slots);
    free(st->pool);
    free(st->mine);
    free(st->at);
    free(st);
}

static void stream_prefetch(ImageSet *s, const int *idx, int B) {
    ImageStream *st = s->stream;
    CHECK(st->nslots > 0);
    pthread_mutex_lock(&st->mu);
    const long call = ++st->calls;
    // Items already in the buffer first, so that making room for the others
    // never drops one of this call's own.
    for (int b = 0; b < B; b++) {
        CHECK(idx[b] >= 0 && idx[b] < s->N);
        int k = st->slot_of[idx[b]];
        if (k >= 0) st->slots[k].call = call;
    }
    for (int b = 0; b < B; b++)
        if (st->slot_of[idx[b]] < 0 && stream_claim(st, idx[b], SLOT_QUEUED, call) < 0) break;
    pthread_cond_broadcast(&st->work);
    pthread_mutex_unlock(&st->mu);
}

static int stream_batch(float *out, ImageSet *s, const int *idx, int B, const uint8_t *flip) {
    ImageStream *st = s->stream;
    CHECK(st->nslots > 0 && B <= st->max_batch);
    const int C = s->C, S = s->S;
    const size_t item = (size_t)C * S * S;
    pthread_mutex_lock(&st->mu);
    const long call = ++st->calls;
    int nmine = 0;
    for (int b = 0; b < B; b++) {
        CHECK(idx[b] >= 0 && idx[b] < s->N);
        int k = st->slot_of[idx[b]];
        if (k >= 0) st->slots[k].call = call;
    }
    for (int b = 0; b < B; b++) {
        int k = st->slot_of[idx[b]];
        if (k < 0) {
            // Room always comes: this call uses at most B of the >= 2B
            // slots, and the threads' BUSY ones become DONE.
            while ((k = stream_claim(st, idx[b], SLOT_BUSY, call)) < 0)
                pthread_cond_wait(&st->done, &st->mu);
            st->mine[nmine++] = k;
        } else if (st->slots[k].state == SLOT_QUEUED) {
            st->slots[k].state = SLOT_BUSY; // not started: decoded here, in parallel
            st->mine[nmine++] = k;
        }
        st->at[b] = k;
    }
    pthread_mutex_unlock(&st->mu);
#pragma omp parallel for schedule(dynamic, 1)
    for (int j = 0; j < nmine; j++) stream_decode(st, &st->slots[st->mine[j]]);
    pthread_mutex_lock(&st->mu);
    for (int j = 0; j < nmine; j++) st->slots[st->mine[j]].state = SLOT_DONE;
    for (int b = 0; b < B; b++)
        while (st->slots[st->at[b]].state != SLOT_DONE) pthread_cond_wait(&st->done, &st->mu);
    pthread_mutex_unlock(&st->mu);
    int rc = 0;
    for (int b = 0; b < B && rc == 0; b++) {
        const Slot *sl = &st->slots[st->at[b]];
        if (sl->failed)
            rc = errorf("%s: item %d of %s: cannot decode: %s (only its header was read "
                        "when the folder was opened)", st->paths[idx[b]], idx[b], s->source,
                        sl->why);
    }
    if (rc == 0) {
#pragma omp parallel for schedule(static)
        for (int b = 0; b < B; b++)
            item_to_float(out + (size_t)b * item, st->slots[st->at[b]].hwc, C, S, 1, (size_t)C,
                          flip && flip[b]);
    }
    pthread_mutex_lock(&st->mu);
    for (int b = 0; b < B; b++) stream_release(st, st->at[b]);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

// ---------------------------------------------------------------- API

size_t imageset_default_max_memory(void) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    if (pages <= 0 || page <= 0) return (size_t)1 << 30; // unknown: 1 GiB
    return (size_t)pages / 4 * (size_t)page;
}

int imageset_open(ImageSet *s, const char *source, int size, int channels, size_t max_memory) {
    CHECK(channels == 1 || channels == 3);
    CHECK(size > 0);
    memset(s, 0, sizeof *s);
    s->C = channels;
    s->S = size;
    if (strlen(source) >= sizeof s->source)
        return errorf("%.200s...: a path of %zu characters, more than the %zu a path may have",
                      source, strlen(source), sizeof s->source - 1);
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
        if (rc == 0) {
            s->num_classes = 10;
            s->class_names = xstrdup(FASHION_MNIST_CLASSES);
        }
    } else {
        struct stat st;
        if (stat(source, &st) != 0)
            return errorf("%s: %s (expected a folder of images, an IDX file, "
                          "\"fashion-mnist\" or \"fashion-mnist-test\")",
                          source, strerror(errno));
        if (S_ISDIR(st.st_mode)) {
            rc = load_folder(s, source, max_memory);
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

int imageset_load(ImageSet *s, const char *source, int size, int channels) {
    return imageset_open(s, source, size, channels, SIZE_MAX);
}

int imageset_check_memory(ImageSet *s, int batch, size_t max_memory) {
    return s->stream ? stream_start(s, batch, max_memory) : 0;
}

void imageset_free(ImageSet *s) {
    if (s->stream) stream_free(s->stream);
    free(s->pixels);
    free(s->labels);
    free(s->class_names);
    s->stream = NULL;
    s->pixels = NULL;
    s->labels = NULL;
    s->class_names = NULL;
    s->num_classes = 0;
    s->N = 0;
}

void imageset_prefetch(ImageSet *s, const int *idx, int B) {
    if (s->stream) stream_prefetch(s, idx, B);
}

int imageset_batch(float *out, ImageSet *s, const int *idx, int B, const uint8_t *flip) {
    if (s->stream) return stream_batch(out, s, idx, B, flip);
    const int C = s->C, S = s->S;
    const size_t item = (size_t)C * S * S;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        CHECK(idx[b] >= 0 && idx[b] < s->N);
        item_to_float(out + (size_t)b * item, s->pixels + (size_t)idx[b] * item, C, S,
                      (size_t)S * S, 1, flip && flip[b]);
    }
    return 0;
}

int imageset_item_size(const ImageSet *s, int i, int *w, int *h) {
    CHECK(s->stream && i >= 0 && i < s->N);
    const char *why = NULL;
    if (image_info(s->stream->paths[i], w, h, &why))
        return errorf("%s: %s", s->stream->paths[i], why ? why : "cannot read the header");
    return 0;
}
