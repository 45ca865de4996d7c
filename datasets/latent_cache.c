#include "latent_cache.h"

#include <ctype.h>
#include <errno.h>
#include <hdf5.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "paths.h"

// Chunks of whole items, at most ~1 MiB and 256 items, so that batched
// reads read (and a compressing writer would decompress) each chunk once.
#define CHUNK_BYTES ((size_t)1 << 20)
#define CHUNK_ITEMS 256
// Sanity caps on what a file declares: one item's element count (Z * h * w)
// and the item count (2^40 items of even one float are 4 TiB).
#define MAX_ITEM_ELEMS ((int64_t)1 << 28)
#define MAX_ITEMS ((int64_t)1 << 40)

static void close_id(int64_t *id, herr_t (*fn)(hid_t)) {
    if (*id >= 0) fn(*id);
    *id = -1;
}

// Selects items [start, start + n) in `space`, of `rank` (1 or 4) with item
// shape rest[0..rank-1); `cnt` receives the block's shape.
static herr_t select_items(hid_t space, int rank, const hsize_t *rest, hsize_t start,
                           hsize_t n, hsize_t *cnt) {
    hsize_t off[4] = {start, 0, 0, 0};
    cnt[0] = n;
    for (int i = 1; i < rank; i++) cnt[i] = rest[i - 1];
    return H5Sselect_hyperslab(space, H5S_SELECT_SET, off, NULL, cnt, NULL);
}

// ---------------------------------------------------------------- class names

int class_names_count(const char *joined) {
    if (!*joined) return 0;
    int n = 1;
    for (const char *p = joined; *p; p++) n += *p == '\n';
    return n;
}

void class_name_get(char *out, size_t cap, const char *joined, int k) {
    CHECK(cap > 0);
    out[0] = 0;
    if (k < 0 || k >= class_names_count(joined)) return;
    const char *p = joined;
    for (int i = 0; i < k; i++) p = strchr(p, '\n') + 1;
    size_t len = strcspn(p, "\n");
    if (len >= cap) len = cap - 1;
    memcpy(out, p, len);
    out[len] = 0;
}

int class_names_check(const char *joined, const char *what) {
    size_t len = strlen(joined);
    if (len >= ATTR_STR_MAX)
        return errorf("%s: the class names take %zu bytes, more than the %d an attribute holds",
                      what, len, ATTR_STR_MAX - 1);
    const char *p = joined;
    for (int k = 0; *p; k++) {
        size_t n = strcspn(p, "\n");
        if (n == 0) return errorf("%s: class %d has an empty name", what, k);
        p += n;
        if (*p == '\n' && !*++p) return errorf("%s: class %d has an empty name", what, k + 1);
    }
    return 0;
}

// ---------------------------------------------------------------- writer

static hid_t make_dataset(hid_t f, const char *name, hid_t type, int rank,
                          const hsize_t *dims, const hsize_t *chunk) {
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, rank, chunk);
    hid_t d = H5Dcreate2(f, name, type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Sclose(sp);
    return d;
}

int latent_cache_create(LatentCacheWriter *w, const char *path, int64_t N, int Z,
                        int h, int wd, int has_labels) {
    CHECK(N > 0 && N < MAX_ITEMS && Z > 0 && h > 0 && wd > 0);
    h5_quiet(); // we print our own messages, not HDF5's error stack
    memset(w, 0, sizeof *w);
    w->h5file = w->dmean = w->dlogvar = w->dlabels = -1;
    w->N = N, w->Z = Z, w->h = h, w->w = wd;
    if (path_printf(w->path, sizeof w->path, "%s", path) ||
        tmp_begin(w->tmp, sizeof w->tmp, path))
        return -1;
    w->h5file = H5Fcreate(w->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (w->h5file < 0) {
        discard_tmp_file(w->tmp);
        return errorf("%s: cannot create (temporary file %s)", path, w->tmp);
    }
    size_t item_bytes = (size_t)Z * h * wd * sizeof(float);
    hsize_t ci = item_bytes >= CHUNK_BYTES ? 1 : CHUNK_BYTES / item_bytes;
    if (ci > CHUNK_ITEMS) ci = CHUNK_ITEMS;
    if (ci > (hsize_t)N) ci = (hsize_t)N;
    hsize_t dims[4] = {(hsize_t)N, (hsize_t)Z, (hsize_t)h, (hsize_t)wd};
    hsize_t chunk[4] = {ci, (hsize_t)Z, (hsize_t)h, (hsize_t)wd};
    w->dmean = make_dataset(w->h5file, "mean", H5T_IEEE_F32LE, 4, dims, chunk);
    w->dlogvar = make_dataset(w->h5file, "logvar", H5T_IEEE_F32LE, 4, dims, chunk);
    int ok = w->dmean >= 0 && w->dlogvar >= 0;
    if (ok && has_labels) {
        hsize_t lchunk = (hsize_t)N < 65536 ? (hsize_t)N : 65536;
        w->dlabels = make_dataset(w->h5file, "labels", H5T_STD_I32LE, 1, dims, &lchunk);
        ok = w->dlabels >= 0;
    }
    if (!ok) {
        latent_cache_abort(w);
        return errorf("%s: cannot create datasets", path);
    }
    return 0;
}

// Writes buf (n, ...rest) at item offset `start` of dataset d.
static herr_t write_items(hid_t d, hid_t mtype, int rank, const hsize_t *rest,
                          hsize_t start, hsize_t n, const void *buf) {
    hsize_t cnt[4];
    hid_t fs = H5Dget_space(d);
    herr_t rc = select_items(fs, rank, rest, start, n, cnt);
    hid_t ms = H5Screate_simple(rank, cnt, NULL);
    if (rc >= 0) rc = H5Dwrite(d, mtype, ms, fs, H5P_DEFAULT, buf);
    H5Sclose(ms);
    H5Sclose(fs);
    return rc;
}

int latent_cache_append(LatentCacheWriter *w, const float *mean,
                        const float *logvar, const int32_t *labels, int n) {
    CHECK(w->h5file >= 0);
    CHECK(n > 0 && w->written + n <= w->N);
    CHECK(w->dlabels < 0 || labels != NULL);
    hsize_t rest[3] = {(hsize_t)w->Z, (hsize_t)w->h, (hsize_t)w->w};
    hsize_t at = (hsize_t)w->written;
    if (write_items(w->dmean, H5T_NATIVE_FLOAT, 4, rest, at, (hsize_t)n, mean) < 0 ||
        write_items(w->dlogvar, H5T_NATIVE_FLOAT, 4, rest, at, (hsize_t)n, logvar) < 0 ||
        (w->dlabels >= 0 &&
         write_items(w->dlabels, H5T_NATIVE_INT32, 1, rest, at, (hsize_t)n, labels) < 0))
        return errorf("%s: cannot write items %lld..%lld (disk full?)", w->path,
                      (long long)w->written, (long long)(w->written + n - 1));
    w->written += n;
    return 0;
}

void latent_cache_set_class_names(LatentCacheWriter *w, const char *joined) {
    CHECK(w->dlabels >= 0 && class_names_check(joined, "latent_cache_set_class_names") == 0);
    w->class_names = joined;
}

int latent_cache_finish(LatentCacheWriter *w, double scale_factor,
                        int image_size, int in_channels, const char *source,
                        const char *vae_hash) {
    CHECK(w->h5file >= 0);
    if (w->written != w->N) {
        errorf("%s: only %lld of %lld items written", w->path, (long long)w->written,
               (long long)w->N);
        latent_cache_abort(w);
        return -1;
    }
    Attrs *a = xcalloc(1, sizeof *a); // large: not on the stack
    attrs_set_double(a, "scale_factor", scale_factor);
    attrs_set_int(a, "image_size", image_size);
    attrs_set_int(a, "in_channels", in_channels);
    if (attrs_set_str(a, "source", source) || attrs_set_str(a, "vae_hash", vae_hash) ||
        (w->class_names && attrs_set_str(a, CLASS_NAMES_ATTR, w->class_names))) {
        free(a);
        latent_cache_abort(w);
        return errorf("%s: not written", w->path);
    }
    hid_t f = w->h5file;
    herr_t rc = attrs_write_h5(f, a);
    free(a);
    close_id(&w->dmean, H5Dclose);
    close_id(&w->dlogvar, H5Dclose);
    close_id(&w->dlabels, H5Dclose);
    if (rc >= 0) rc = H5Fclose(f);
    else H5Fclose(f);
    w->h5file = -1;
    if (rc < 0) {
        discard_tmp_file(w->tmp);
        return errorf("%s: cannot finish writing (temporary file %s)", w->path, w->tmp);
    }
    return commit_tmp_file(w->tmp, w->path);
}

void latent_cache_abort(LatentCacheWriter *w) {
    close_id(&w->dmean, H5Dclose);
    close_id(&w->dlogvar, H5Dclose);
    close_id(&w->dlabels, H5Dclose);
    if (w->h5file >= 0) {
        H5Fclose(w->h5file);
        w->h5file = -1;
        discard_tmp_file(w->tmp);
    }
}

// ---------------------------------------------------------------- reader

// A dataset access list whose chunk cache suits reading `d` item by item or
// in batches. A compressed chunk must be decompressed whole to read one item
// of it, so the cache holds two chunks (a batch straddling a boundary keeps
// the first): a chunk is then decompressed once, not once per item. An
// uncompressed chunk is not cached at all: HDF5 would read a whole chunk
// into the cache to return one item of it, while uncached it reads just the
// item's bytes, which is what random access (the trainer) wants. Measured on
// 2,000,000 items of 4x8x8 chunked 256 items (256 KiB) a chunk, batches of
// 128 random items: 4 ms uncached, 14 ms with HDF5's default 1 MiB cache;
// one item at a time from a deflated cache with 4 MiB chunks: 50 us an item
// with this cache, 6.9 ms with the default (each item decompressed a chunk).
static hid_t chunk_cache_dapl(hid_t d) {
    hid_t dapl = H5Pcreate(H5P_DATASET_ACCESS);
    CHECK(dapl >= 0);
    hid_t dcpl = H5Dget_create_plist(d), type = H5Dget_type(d);
    hsize_t cd[H5S_MAX_RANK];
    int rank = dcpl >= 0 && H5Pget_layout(dcpl) == H5D_CHUNKED
                   ? H5Pget_chunk(dcpl, H5S_MAX_RANK, cd) : 0;
    if (rank > 0 && type >= 0) {
        double bytes = (double)H5Tget_size(type);
        for (int k = 0; k < rank; k++) bytes *= (double)cd[k];
        size_t nbytes = 0, nslots = 521; // HDF5's default slot count
        if (H5Pget_nfilters(dcpl) > 0) {
            // HDF5 caps a chunk at 4 GiB; the cache is filled only as chunks are read.
            nbytes = (size_t)(2 * bytes) > CHUNK_BYTES ? (size_t)(2 * bytes) : CHUNK_BYTES;
            // Slots enough that consecutive chunks never share one.
            double fit = (double)nbytes / (bytes > 1 ? bytes : 1);
            nslots = fit * 10 + 1 < (1 << 20) ? (size_t)(fit * 10 + 1) : (1 << 20);
        }
        CHECK(H5Pset_chunk_cache(dapl, nslots, nbytes, 1.0) >= 0);
    }
    if (type >= 0) H5Tclose(type);
    if (dcpl >= 0) H5Pclose(dcpl);
    return dapl;
}

// Opens dataset `name`, checks its type class and rank (dims out), and
// reopens it with a chunk cache suited to item reads.
static hid_t open_checked(LatentCache *c, const char *name, H5T_class_t cls,
                          const char *cls_name, int rank, hsize_t *dims) {
    const char *path = c->path;
    if (H5Lexists(c->h5file, name, H5P_DEFAULT) <= 0) {
        errorf("%s: no dataset '%s'", path, name);
        return -1;
    }
    hid_t d = H5Dopen2(c->h5file, name, H5P_DEFAULT);
    if (d < 0) {
        errorf("%s: '%s' is not a dataset", path, name);
        return -1;
    }
    hid_t t = H5Dget_type(d);
    H5T_class_t tc = H5Tget_class(t);
    H5Tclose(t);
    hid_t sp = H5Dget_space(d);
    int r = H5Sget_simple_extent_ndims(sp);
    if (r == rank) H5Sget_simple_extent_dims(sp, dims, NULL);
    H5Sclose(sp);
    int ok = 0;
    if (tc != cls)
        errorf("%s: dataset '%s' must hold %s values", path, name, cls_name);
    else if (r != rank)
        errorf("%s: dataset '%s' has rank %d, expected %d", path, name, r, rank);
    else
        ok = 1;
    if (!ok) {
        H5Dclose(d);
        return -1;
    }
    hid_t dapl = chunk_cache_dapl(d);
    H5Dclose(d);
    d = H5Dopen2(c->h5file, name, dapl);
    H5Pclose(dapl);
    if (d < 0) errorf("%s: cannot open dataset '%s'", path, name);
    return d;
}

static int validate(LatentCache *c) {
    const char *path = c->path;
    hsize_t dm[4], dl[4], dlab[1];
    c->dmean = open_checked(c, "mean", H5T_FLOAT, "floating-point", 4, dm);
    if (c->dmean < 0) return -1;
    c->dlogvar = open_checked(c, "logvar", H5T_FLOAT, "floating-point", 4, dl);
    if (c->dlogvar < 0) return -1;
    for (int i = 0; i < 4; i++)
        if (dm[i] != dl[i])
            return errorf("%s: 'logvar' shape (%llu, %llu, %llu, %llu) differs from 'mean' "
                          "(%llu, %llu, %llu, %llu)", path,
                          (unsigned long long)dl[0], (unsigned long long)dl[1],
                          (unsigned long long)dl[2], (unsigned long long)dl[3],
                          (unsigned long long)dm[0], (unsigned long long)dm[1],
                          (unsigned long long)dm[2], (unsigned long long)dm[3]);
    if (dm[0] == 0 || dm[0] >= (hsize_t)MAX_ITEMS)
        return errorf("%s: 'mean' declares %llu items (at least 1, fewer than 2^40)", path,
                      (unsigned long long)dm[0]);
    for (int i = 1; i < 4; i++)
        if (dm[i] == 0 || dm[i] > INT_MAX)
            return errorf("%s: 'mean' has an empty or oversized dimension %d (%llu)", path, i,
                          (unsigned long long)dm[i]);
    if ((int64_t)dm[1] * (int64_t)dm[2] * (int64_t)dm[3] > MAX_ITEM_ELEMS)
        return errorf("%s: latents of %llu x %llu x %llu are implausibly large", path,
                      (unsigned long long)dm[1], (unsigned long long)dm[2],
                      (unsigned long long)dm[3]);
    c->N = (int64_t)dm[0], c->Z = (int)dm[1], c->h = (int)dm[2], c->w = (int)dm[3];
    htri_t has = H5Lexists(c->h5file, "labels", H5P_DEFAULT);
    if (has > 0) {
        c->dlabels = open_checked(c, "labels", H5T_INTEGER, "integer", 1, dlab);
        if (c->dlabels < 0) return -1;
        if (dlab[0] != dm[0])
            return errorf("%s: %llu labels for %lld items", path, (unsigned long long)dlab[0],
                          (long long)c->N);
    }
    // Declared but never written, a dataset reads as zeros: not a cache.
    const char *names[3] = {"mean", "logvar", "labels"};
    int64_t ids[3] = {c->dmean, c->dlogvar, c->dlabels};
    for (int k = 0; k < 3; k++)
        if (ids[k] >= 0 && H5Dget_storage_size(ids[k]) == 0)
            return errorf("%s: dataset '%s' holds no data", path, names[k]);

    static const char *const keys[] = {"scale_factor", "image_size", "in_channels", "source",
                                       "vae_hash", CLASS_NAMES_ATTR};
    char hash[17];
    const AttrSpec spec[] = {
        {"scale_factor", SPEC_DOUBLE, 0, SCALE_FACTOR_MAX, &c->scale_factor, SPEC_GT_LO},
        {"image_size", SPEC_INT, 1, 65536, &c->image_size, 0},
        {"in_channels", SPEC_INT, 1, 3, &c->in_channels, 0},
        {"source", SPEC_STR, 0, ATTR_STR_MAX - 1, c->source, 0},
        {"vae_hash", SPEC_STR, 16, 16, hash, 0},
        {CLASS_NAMES_ATTR, SPEC_STR, 0, ATTR_STR_MAX - 1, c->class_names, SPEC_OPTIONAL},
    };
    Attrs *a = xmalloc(sizeof *a); // large: not on the stack
    int rc = attrs_read_h5(c->h5file, path, keys, 6, a) ||
             attrs_read_specs(a, path, spec, (int)(sizeof spec / sizeof *spec));
    free(a);
    if (rc) return -1;
    // The VAE's downsampling factor is a model choice; only require the
    // image to be a whole number of latent pixels, the same on both axes.
    if (c->image_size % c->h != 0 || c->image_size % c->w != 0 ||
        c->image_size / c->h != c->image_size / c->w)
        return errorf("%s: image_size %d does not match latents of %d x %d", path,
                      c->image_size, c->h, c->w);
    if (c->in_channels == 2)
        return errorf("%s: attribute 'in_channels' is 2, expected 1 or 3", path);
    for (int i = 0; i < 16; i++)
        if (!isxdigit((unsigned char)hash[i]))
            return errorf("%s: vae_hash '%s' is not 16 hex digits", path, hash);
    memcpy(c->vae_hash, hash, sizeof c->vae_hash);
    if (c->class_names[0]) {
        char what[PATH_MAX + 32];
        snprintf(what, sizeof what, "%s: attribute '%s'", path, CLASS_NAMES_ATTR);
        if (class_names_check(c->class_names, what)) return -1;
        if (c->dlabels < 0)
            return errorf("%s: attribute '%s' names classes, but there are no labels", path,
                          CLASS_NAMES_ATTR);
    }
    return 0;
}

int latent_cache_open(LatentCache *c, const char *path) {
    h5_quiet(); // we print our own messages, not HDF5's error stack
    memset(c, 0, sizeof *c);
    c->h5file = c->dmean = c->dlogvar = c->dlabels = -1;
    c->fd = -1;
    if (strlen(path) >= sizeof c->path) return errorf("%.64s...: path too long", path);
    memcpy(c->path, path, strlen(path) + 1);
    struct stat st;
    if (stat(path, &st) != 0) return errorf("%s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return errorf("%s: not a regular file", path);
    if (H5Fis_hdf5(path) <= 0) return errorf("%s: not an HDF5 file", path);
    // The POSIX driver explicitly, so that the handle below is a descriptor.
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    CHECK(fapl >= 0 && H5Pset_fapl_sec2(fapl) >= 0);
    c->h5file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (c->h5file < 0) return errorf("%s: cannot open HDF5 file", path);
    int *fd = NULL;
    if (H5Fget_vfd_handle(c->h5file, H5P_DEFAULT, (void **)&fd) < 0 || !fd ||
        fstat(*fd, &st) != 0) {
        latent_cache_close(c);
        return errorf("%s: cannot open HDF5 file", path);
    }
    c->fd = *fd, c->size = (int64_t)st.st_size;
    if (validate(c) != 0) {
        latent_cache_close(c);
        return -1;
    }
    return 0;
}

// HDF5 reads the part of a file cut off since it was opened as zeros, without
// an error: a truncated (or rewritten in place) cache must be noticed here.
static int check_size(const LatentCache *c, int64_t first, int64_t last) {
    struct stat st;
    if (fstat(c->fd, &st) != 0)
        return errorf("%s: cannot read items %lld..%lld: %s", c->path, (long long)first,
                      (long long)last, strerror(errno));
    if ((int64_t)st.st_size < c->size)
        return errorf("%s: cannot read items %lld..%lld: the file shrank from %lld to %lld "
                      "bytes since it was opened", c->path, (long long)first, (long long)last,
                      (long long)c->size, (long long)st.st_size);
    return 0;
}

// Converts n labels read as int64 to int32; items[k] (NULL: first + k) names
// the item in the message for a value that does not fit.
static int labels_to_int32(const LatentCache *c, const int64_t *in, int n, int64_t first,
                           const int64_t *items, int32_t *out) {
    for (int k = 0; k < n; k++) {
        if (in[k] < INT32_MIN || in[k] > INT32_MAX)
            return errorf("%s: the label of item %lld (%lld) does not fit int32", c->path,
                          (long long)(items ? items[k] : first + k), (long long)in[k]);
        out[k] = (int32_t)in[k];
    }
    return 0;
}

// The dataspaces of one read: file spaces of mean/logvar (fs4) and labels
// (fs1), memory spaces of a buffer of `n` items (ms4, ms1).
typedef struct {
    hid_t fs4, fs1, ms4, ms1;
} ReadSpaces;

static int spaces_init(ReadSpaces *sp, const LatentCache *c, int64_t n) {
    hsize_t file[4] = {(hsize_t)c->N, (hsize_t)c->Z, (hsize_t)c->h, (hsize_t)c->w};
    hsize_t mem[4] = {(hsize_t)n, (hsize_t)c->Z, (hsize_t)c->h, (hsize_t)c->w};
    sp->fs4 = H5Screate_simple(4, file, NULL);
    sp->fs1 = H5Screate_simple(1, file, NULL);
    sp->ms4 = H5Screate_simple(4, mem, NULL);
    sp->ms1 = H5Screate_simple(1, mem, NULL);
    return sp->fs4 < 0 || sp->fs1 < 0 || sp->ms4 < 0 || sp->ms1 < 0 ? -1 : 0;
}

static void spaces_free(ReadSpaces *sp) {
    hid_t *ids[4] = {&sp->fs4, &sp->fs1, &sp->ms4, &sp->ms1};
    for (int k = 0; k < 4; k++)
        if (*ids[k] >= 0) H5Sclose(*ids[k]);
}

// Reads items [first, first + n) into items [at, at + n) of the buffers
// mean, logvar (Z, h, w each; both NULL: labels only) and lab64 (NULL: no
// labels), one read per dataset. The labels are read as int64 whatever their type, so that values
// outside int32 are seen rather than clipped.
static herr_t read_run(const LatentCache *c, const ReadSpaces *sp, int64_t at, int64_t first,
                       int64_t n, float *mean, float *logvar, int64_t *lab64) {
    hsize_t rest[3] = {(hsize_t)c->Z, (hsize_t)c->h, (hsize_t)c->w}, cnt[4];
    herr_t rc = select_items(sp->fs4, 4, rest, (hsize_t)first, (hsize_t)n, cnt);
    if (rc >= 0) rc = select_items(sp->ms4, 4, rest, (hsize_t)at, (hsize_t)n, cnt);
    if (rc >= 0 && mean)
        rc = H5Dread(c->dmean, H5T_NATIVE_FLOAT, sp->ms4, sp->fs4, H5P_DEFAULT, mean);
    if (rc >= 0 && logvar)
        rc = H5Dread(c->dlogvar, H5T_NATIVE_FLOAT, sp->ms4, sp->fs4, H5P_DEFAULT, logvar);
    if (rc < 0 || !lab64) return rc;
    rc = select_items(sp->fs1, 1, rest, (hsize_t)first, (hsize_t)n, cnt);
    if (rc >= 0) rc = select_items(sp->ms1, 1, rest, (hsize_t)at, (hsize_t)n, cnt);
    if (rc >= 0) rc = H5Dread(c->dlabels, H5T_NATIVE_INT64, sp->ms1, sp->fs1, H5P_DEFAULT, lab64);
    return rc;
}

int latent_cache_read(LatentCache *c, int64_t start, int n, float *mean,
                      float *logvar, int32_t *labels) {
    CHECK(c->h5file >= 0);
    CHECK(start >= 0 && n > 0 && start <= c->N - n);
    CHECK((mean == NULL) == (logvar == NULL) && (mean || labels));
    h5_quiet(); // per thread in a thread-safe HDF5
    int64_t last = start + n - 1;
    if (check_size(c, start, last)) return -1;
    int64_t *lab64 = labels && c->dlabels >= 0 ? xmalloc((size_t)n * sizeof *lab64) : NULL;
    ReadSpaces sp;
    // A damaged file can pass open() and still fail here (bad chunk data).
    herr_t rc = spaces_init(&sp, c, n);
    if (rc >= 0) rc = read_run(c, &sp, 0, start, n, mean, logvar, lab64);
    spaces_free(&sp);
    int ok = rc >= 0 && check_size(c, start, last) == 0;
    if (rc < 0) errorf("%s: cannot read items %lld..%lld", c->path, (long long)start, (long long)last);
    if (ok && lab64) ok = labels_to_int32(c, lab64, n, start, NULL, labels) == 0;
    free(lab64);
    return ok ? 0 : -1;
}

typedef struct {
    int64_t item;
    int pos; // in the batch
} ItemPos;

static int cmp_item(const void *a, const void *b) {
    int64_t x = ((const ItemPos *)a)->item, y = ((const ItemPos *)b)->item;
    return (x > y) - (x < y);
}

int latent_cache_read_items(LatentCache *c, const int64_t *idx, int n, float *mean,
                            float *logvar, int32_t *labels) {
    CHECK(c->h5file >= 0 && n > 0);
    h5_quiet(); // per thread in a thread-safe HDF5
    ItemPos *order = xmalloc((size_t)n * sizeof *order);
    for (int k = 0; k < n; k++) {
        CHECK(idx[k] >= 0 && idx[k] < c->N);
        order[k] = (ItemPos){idx[k], k};
    }
    qsort(order, (size_t)n, sizeof *order, cmp_item);
    int64_t first = order[0].item, last = order[n - 1].item;
    if (check_size(c, first, last)) {
        free(order);
        return -1;
    }
    // The distinct items, ascending, read as runs of consecutive items with
    // one read per run and dataset into uniq's order. (One read of the union
    // of the runs' hyperslabs took twice as long: 2,000,000 items of 4x8x8
    // chunked 256 items a chunk, batches of 128 random items.)
    int64_t *uniq = xmalloc((size_t)n * sizeof *uniq);
    int nu = 0;
    for (int k = 0; k < n; k++)
        if (nu == 0 || order[k].item != uniq[nu - 1]) uniq[nu++] = order[k].item;
    size_t item = (size_t)c->Z * c->h * c->w;
    float *um = xmalloc((size_t)nu * item * sizeof *um);
    float *ul = xmalloc((size_t)nu * item * sizeof *ul);
    int64_t *lab64 = labels && c->dlabels >= 0 ? xmalloc((size_t)nu * sizeof *lab64) : NULL;
    ReadSpaces sp;
    herr_t rc = spaces_init(&sp, c, nu);
    int64_t bad0 = first, bad1 = last; // the run that failed, for the message
    for (int k = 0; k < nu && rc >= 0;) {
        int e = k + 1;
        while (e < nu && uniq[e] == uniq[e - 1] + 1) e++;
        rc = read_run(c, &sp, k, uniq[k], e - k, um, ul, lab64);
        if (rc < 0) bad0 = uniq[k], bad1 = uniq[e - 1];
        k = e;
    }
    spaces_free(&sp);
    if (rc < 0) errorf("%s: cannot read items %lld..%lld", c->path, (long long)bad0, (long long)bad1);
    int ok = rc >= 0 && check_size(c, first, last) == 0;
    int32_t *ulab = lab64 ? xmalloc((size_t)nu * sizeof *ulab) : NULL;
    if (ok && lab64) ok = labels_to_int32(c, lab64, nu, 0, uniq, ulab) == 0;
    // Scatter: order[] is sorted like uniq[], so one pass pairs them.
    for (int k = 0, u = -1; ok && k < n; k++) {
        if (u < 0 || order[k].item != uniq[u]) u++;
        size_t to = (size_t)order[k].pos * item, from = (size_t)u * item;
        memcpy(mean + to, um + from, item * sizeof *mean);
        memcpy(logvar + to, ul + from, item * sizeof *logvar);
        if (ulab) labels[order[k].pos] = ulab[u];
    }
    free(ulab);
    free(lab64);
    free(ul);
    free(um);
    free(uniq);
    free(order);
    return ok ? 0 : -1;
}

void latent_cache_close(LatentCache *c) {
    close_id(&c->dmean, H5Dclose);
    close_id(&c->dlogvar, H5Dclose);
    close_id(&c->dlabels, H5Dclose);
    close_id(&c->h5file, H5Fclose);
    c->fd = -1;
}
