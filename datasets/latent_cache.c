#include "latent_cache.h"

#include <ctype.h>
#include <errno.h>
#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "common.h"

// Chunks of whole items, at most ~1 MiB (HDF5's default chunk cache) and 256
// items, so batched reads decompress/read each chunk once.
#define CHUNK_BYTES ((size_t)1 << 20)
#define CHUNK_ITEMS 256
// Sanity cap on one item's element count (Z * h * w) read from a file.
#define MAX_ITEM_ELEMS ((int64_t)1 << 28)

static void close_id(int64_t *id, herr_t (*fn)(hid_t)) {
    if (*id >= 0) fn(*id);
    *id = -1;
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

int latent_cache_create(LatentCacheWriter *w, const char *path, int N, int Z,
                        int h, int wd, int has_labels) {
    CHECK(N > 0 && Z > 0 && h > 0 && wd > 0);
    h5_quiet(); // we print our own messages, not HDF5's error stack
    memset(w, 0, sizeof *w);
    w->h5file = w->dmean = w->dlogvar = w->dlabels = -1;
    w->N = N, w->Z = Z, w->h = h, w->w = wd;
    snprintf(w->path, sizeof w->path, "%s", path);
    tmp_path_for(w->tmp, sizeof w->tmp, path);
    w->h5file = H5Fcreate(w->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (w->h5file < 0) return errorf("%s: cannot create (temporary file %s)", path, w->tmp);
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
    hsize_t off[4] = {start, 0, 0, 0}, cnt[4] = {n, 0, 0, 0};
    for (int i = 1; i < rank; i++) cnt[i] = rest[i - 1];
    hid_t fs = H5Dget_space(d);
    hid_t ms = H5Screate_simple(rank, cnt, NULL);
    herr_t rc = H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL);
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
    if (write_items(w->dmean, H5T_NATIVE_FLOAT, 4, rest, (hsize_t)w->written, (hsize_t)n, mean) < 0 ||
        write_items(w->dlogvar, H5T_NATIVE_FLOAT, 4, rest, (hsize_t)w->written, (hsize_t)n, logvar) < 0 ||
        (w->dlabels >= 0 &&
         write_items(w->dlabels, H5T_NATIVE_INT32, 1, rest, (hsize_t)w->written, (hsize_t)n, labels) < 0))
        return errorf("%s: cannot write items %d..%d (disk full?)", w->path, w->written,
                      w->written + n - 1);
    w->written += n;
    return 0;
}

static herr_t write_attr(hid_t loc, const char *name, hid_t ftype, hid_t mtype, const void *v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(loc, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, mtype, v);
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return rc;
}

static herr_t write_str_attr(hid_t loc, const char *name, const char *v) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(v) + 1);
    H5Tset_strpad(t, H5T_STR_NULLTERM);
    herr_t rc = write_attr(loc, name, t, t, v);
    H5Tclose(t);
    return rc;
}

int latent_cache_finish(LatentCacheWriter *w, double scale_factor,
                        int image_size, int in_channels, const char *source,
                        const char *vae_hash) {
    CHECK(w->h5file >= 0);
    if (w->written != w->N) {
        errorf("%s: only %d of %d items written", w->path, w->written, w->N);
        latent_cache_abort(w);
        return -1;
    }
    hid_t f = w->h5file;
    int32_t isz = image_size, ich = in_channels;
    herr_t rc = write_attr(f, "scale_factor", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &scale_factor);
    if (rc >= 0) rc = write_attr(f, "image_size", H5T_STD_I32LE, H5T_NATIVE_INT32, &isz);
    if (rc >= 0) rc = write_attr(f, "in_channels", H5T_STD_I32LE, H5T_NATIVE_INT32, &ich);
    if (rc >= 0) rc = write_str_attr(f, "source", source);
    if (rc >= 0) rc = write_str_attr(f, "vae_hash", vae_hash);
    close_id(&w->dmean, H5Dclose);
    close_id(&w->dlogvar, H5Dclose);
    close_id(&w->dlabels, H5Dclose);
    if (rc >= 0) rc = H5Fclose(f);
    else H5Fclose(f);
    w->h5file = -1;
    if (rc < 0) {
        unlink(w->tmp);
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
        unlink(w->tmp);
    }
}

// ---------------------------------------------------------------- reader

// Opens dataset `name` and checks its type class and rank; dims out.
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
    if (tc != cls) {
        errorf("%s: dataset '%s' must hold %s values", path, name, cls_name);
    } else if (r != rank) {
        errorf("%s: dataset '%s' has rank %d, expected %d", path, name, r, rank);
    } else {
        return d;
    }
    H5Dclose(d);
    return -1;
}

// Opens root attribute `name`, checks its class and that it holds one value.
static hid_t open_attr(LatentCache *c, const char *name, H5T_class_t cls, const char *cls_name) {
    if (H5Aexists(c->h5file, name) <= 0) {
        errorf("%s: attribute '%s' missing", c->path, name);
        return -1;
    }
    hid_t a = H5Aopen(c->h5file, name, H5P_DEFAULT);
    if (a < 0) {
        errorf("%s: cannot open attribute '%s'", c->path, name);
        return -1;
    }
    hid_t t = H5Aget_type(a);
    H5T_class_t tc = H5Tget_class(t);
    H5Tclose(t);
    hid_t sp = H5Aget_space(a);
    hssize_t np = H5Sget_simple_extent_npoints(sp);
    H5Sclose(sp);
    if (tc != cls) errorf("%s: attribute '%s' must be %s", c->path, name, cls_name);
    else if (np != 1) errorf("%s: attribute '%s' must hold one value", c->path, name);
    else return a;
    H5Aclose(a);
    return -1;
}

static int read_num_attr(LatentCache *c, const char *name, int is_float, void *out) {
    hid_t a = is_float ? open_attr(c, name, H5T_FLOAT, "a floating-point number")
                       : open_attr(c, name, H5T_INTEGER, "an integer");
    if (a < 0) return -1;
    int64_t v = 0;
    herr_t rc = is_float ? H5Aread(a, H5T_NATIVE_DOUBLE, out) : H5Aread(a, H5T_NATIVE_INT64, &v);
    H5Aclose(a);
    if (rc < 0) return errorf("%s: cannot read attribute '%s'", c->path, name);
    if (!is_float) {
        if (v < INT_MIN || v > INT_MAX)
            return errorf("%s: attribute '%s' out of range (%lld)", c->path, name, (long long)v);
        *(int *)out = (int)v;
    }
    return 0;
}

// Fixed-length or variable-length (as h5py writes str) string attributes;
// longer values are truncated to cap - 1 bytes.
static int read_str_attr(LatentCache *c, const char *name, char *out, size_t cap) {
    hid_t a = open_attr(c, name, H5T_STRING, "a string");
    if (a < 0) return -1;
    hid_t ft = H5Aget_type(a);
    hid_t mt = H5Tcopy(H5T_C_S1);
    herr_t rc;
    if (H5Tis_variable_str(ft) > 0) {
        H5Tset_size(mt, H5T_VARIABLE);
        char *s = NULL;
        rc = H5Aread(a, mt, &s);
        if (rc >= 0) snprintf(out, cap, "%s", s ? s : "");
        if (s) H5free_memory(s);
    } else {
        size_t n = H5Tget_size(ft);
        char *buf = xcalloc(n + 1, 1);
        H5Tset_size(mt, n);
        H5Tset_strpad(mt, H5Tget_strpad(ft));
        rc = H5Aread(a, mt, buf);
        if (rc >= 0) snprintf(out, cap, "%s", buf);
        free(buf);
    }
    H5Tclose(mt);
    H5Tclose(ft);
    H5Aclose(a);
    if (rc < 0) return errorf("%s: cannot read attribute '%s'", c->path, name);
    return 0;
}

static int validate(LatentCache *c) {
    const char *path = c->path;
    hsize_t dm[4], dl[4], dlab[1];
    char hash[64]; // read wider than 16 so that a longer value is not truncated into a valid one
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
    for (int i = 0; i < 4; i++)
        if (dm[i] == 0 || dm[i] > INT_MAX)
            return errorf("%s: 'mean' has an empty or oversized dimension %d (%llu)", path, i,
                          (unsigned long long)dm[i]);
    if ((int64_t)dm[1] * (int64_t)dm[2] * (int64_t)dm[3] > MAX_ITEM_ELEMS)
        return errorf("%s: latents of %llu x %llu x %llu are implausibly large", path,
                      (unsigned long long)dm[1], (unsigned long long)dm[2],
                      (unsigned long long)dm[3]);
    c->N = (int)dm[0], c->Z = (int)dm[1], c->h = (int)dm[2], c->w = (int)dm[3];
    htri_t has = H5Lexists(c->h5file, "labels", H5P_DEFAULT);
    if (has > 0) {
        c->dlabels = open_checked(c, "labels", H5T_INTEGER, "integer", 1, dlab);
        if (c->dlabels < 0) return -1;
        if (dlab[0] != dm[0])
            return errorf("%s: %llu labels for %d items", path, (unsigned long long)dlab[0], c->N);
    }
    if (read_num_attr(c, "scale_factor", 1, &c->scale_factor) != 0 ||
        read_num_attr(c, "image_size", 0, &c->image_size) != 0 ||
        read_num_attr(c, "in_channels", 0, &c->in_channels) != 0 ||
        read_str_attr(c, "source", c->source, sizeof c->source) != 0 ||
        read_str_attr(c, "vae_hash", hash, sizeof hash) != 0)
        return -1;
    if (!isfinite(c->scale_factor) || c->scale_factor <= 0)
        return errorf("%s: scale_factor %g must be finite and positive", path, c->scale_factor);
    // The VAE's downsampling factor is a model choice; only require the
    // image to be a whole number of latent pixels, the same on both axes.
    if (c->image_size <= 0 || c->image_size % c->h != 0 || c->image_size % c->w != 0 ||
        c->image_size / c->h != c->image_size / c->w)
        return errorf("%s: image_size %d does not match latents of %d x %d", path,
                      c->image_size, c->h, c->w);
    if (c->in_channels != 1 && c->in_channels != 3)
        return errorf("%s: in_channels %d, expected 1 or 3", path, c->in_channels);
    int hex = (int)strlen(hash) == 16;
    for (int i = 0; hex && i < 16; i++) hex = isxdigit((unsigned char)hash[i]) != 0;
    if (!hex) return errorf("%s: vae_hash '%s' is not 16 hex digits", path, hash);
    memcpy(c->vae_hash, hash, sizeof c->vae_hash);
    return 0;
}

int latent_cache_open(LatentCache *c, const char *path) {
    h5_quiet(); // we print our own messages, not HDF5's error stack
    memset(c, 0, sizeof *c);
    c->h5file = c->dmean = c->dlogvar = c->dlabels = -1;
    snprintf(c->path, sizeof c->path, "%s", path);
    struct stat st;
    if (stat(path, &st) != 0) return errorf("%s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return errorf("%s: not a regular file", path);
    if (H5Fis_hdf5(path) <= 0) return errorf("%s: not an HDF5 file", path);
    c->h5file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (c->h5file < 0) return errorf("%s: cannot open HDF5 file", path);
    if (validate(c) != 0) {
        latent_cache_close(c);
        return -1;
    }
    return 0;
}

// Reads items [start, start + n) of d into buf (n, ...rest).
static herr_t read_items(hid_t d, hid_t mtype, int rank, const hsize_t *rest,
                         hsize_t start, hsize_t n, void *buf) {
    hsize_t off[4] = {start, 0, 0, 0}, cnt[4] = {n, 0, 0, 0};
    for (int i = 1; i < rank; i++) cnt[i] = rest[i - 1];
    hid_t fs = H5Dget_space(d);
    hid_t ms = H5Screate_simple(rank, cnt, NULL);
    herr_t rc = H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL);
    if (rc >= 0) rc = H5Dread(d, mtype, ms, fs, H5P_DEFAULT, buf);
    H5Sclose(ms);
    H5Sclose(fs);
    return rc;
}

int latent_cache_read(LatentCache *c, int start, int n, float *mean,
                      float *logvar, int32_t *labels) {
    CHECK(c->h5file >= 0);
    CHECK(start >= 0 && n > 0 && start <= c->N - n);
    hsize_t rest[3] = {(hsize_t)c->Z, (hsize_t)c->h, (hsize_t)c->w};
    // A damaged file can pass open() and still fail here (bad chunk data).
    if (read_items(c->dmean, H5T_NATIVE_FLOAT, 4, rest, (hsize_t)start, (hsize_t)n, mean) < 0 ||
        read_items(c->dlogvar, H5T_NATIVE_FLOAT, 4, rest, (hsize_t)start, (hsize_t)n, logvar) < 0 ||
        (labels && c->dlabels >= 0 &&
         read_items(c->dlabels, H5T_NATIVE_INT32, 1, rest, (hsize_t)start, (hsize_t)n, labels) < 0))
        return errorf("%s: cannot read items %d..%d", c->path, start, start + n - 1);
    return 0;
}

void latent_cache_close(LatentCache *c) {
    close_id(&c->dmean, H5Dclose);
    close_id(&c->dlogvar, H5Dclose);
    close_id(&c->dlabels, H5Dclose);
    close_id(&c->h5file, H5Fclose);
}
