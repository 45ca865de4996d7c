// checkpoint.c: HDF5 checkpoints (layout in checkpoint.h).
//
// Every failure a user's file can cause (missing, not HDF5, truncated, wrong
// kind, wrong tensor shape or type) is reported with a message naming the
// file and returns -1; HDF5's own error stack printing is switched off.
// Files are opened with H5F_CLOSE_STRONG so that closing the file also closes
// every object still open in it, which keeps the error paths short.
//
// Fault injection (for robustness tests): if the environment variable
// LDM_FAULT_CKPT_ABORT is set to a non-empty value, ckpt_write calls _exit(3)
// once half of the datasets of the temporary file are written, without
// closing anything - as if the process had been killed (kill -9) mid-write.
// The previous checkpoint at the target path must then be intact. Set to
// "sigint", it raises SIGINT twice there instead: an impatient second Ctrl-C
// mid-write, which must also leave no temporary file behind.
#include "checkpoint.h"

#include <hdf5.h>
#include <limits.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "paths.h"

// ------------------------------------------------------------------- writing

static hid_t fapl_strong(void) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    CHECK(fapl >= 0);
    CHECK(H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) >= 0);
    return fapl;
}

typedef struct {
    int written, total; // datasets, for the fault-injection hook
    int fault;          // 0 none, 1 _exit, 2 two SIGINTs
} WriteProgress;

static int write_dataset(hid_t group, const ParamInfo *pi, const float *data) {
    hsize_t dims[PARAM_MAX_DIMS];
    for (int d = 0; d < pi->ndim; d++) dims[d] = (hsize_t)pi->shape[d];
    hid_t space = H5Screate_simple(pi->ndim, dims, NULL);
    if (space < 0) return -1;
    int rc = -1;
    hid_t dset = H5Dcreate2(group, pi->name, H5T_IEEE_F32LE, space, H5P_DEFAULT,
                            H5P_DEFAULT, H5P_DEFAULT);
    if (dset >= 0) {
        if (H5Dwrite(dset, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0)
            rc = 0;
        if (H5Dclose(dset) < 0) rc = -1;
    }
    H5Sclose(space);
    return rc;
}

// Creates group `name` (and its missing parents) holding one dataset per
// table entry, sliced from `buf`.
static int write_group(hid_t file, const char *name, const ParamTable *t,
                       const float *buf, WriteProgress *wp) {
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    CHECK(lcpl >= 0 && H5Pset_create_intermediate_group(lcpl, 1) >= 0);
    hid_t g = H5Gcreate2(file, name, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    H5Pclose(lcpl);
    if (g < 0) return -1;
    for (int i = 0; i < t->n; i++) {
        if (write_dataset(g, &t->info[i], buf + t->info[i].offset) < 0) {
            H5Gclose(g);
            return -1;
        }
        wp->written++;
        if (wp->fault && wp->written == (wp->total + 1) / 2) {
            if (wp->fault == 2) raise(SIGINT), raise(SIGINT);
            _exit(3);
        }
    }
    return H5Gclose(g) < 0 ? -1 : 0;
}

int ckpt_write(const char *path, const ParamTable *t, CkptBuffers bufs,
               const Attrs *attrs) {
    h5_quiet();
    CHECK(bufs.model != NULL);
    char tmp[PATH_MAX];
    if (tmp_begin(tmp, sizeof tmp, path)) return -1;
    const char *fault = getenv("LDM_FAULT_CKPT_ABORT");
    WriteProgress wp = {0, 0, !fault || !fault[0] ? 0 : strcmp(fault, "sigint") ? 1 : 2};
    wp.total = t->n * (1 + (bufs.m != NULL) + (bufs.v != NULL) + (bufs.ema != NULL));
    for (int i = 0; i < bufs.n_extra; i++) wp.total += bufs.extra[i].t->n;

    hid_t fapl = fapl_strong();
    hid_t file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (file < 0) {
        discard_tmp_file(tmp);
        return errorf("%s: cannot create checkpoint (temporary file %s)", path, tmp);
    }

    const char *failed = NULL;
    if (attrs_write_h5(file, attrs) < 0) failed = "root attributes";
    if (!failed && write_group(file, "model", t, bufs.model, &wp) < 0)
        failed = "/model";
    if (!failed && bufs.m && write_group(file, "optim/m", t, bufs.m, &wp) < 0)
        failed = "/optim/m";
    if (!failed && bufs.v && write_group(file, "optim/v", t, bufs.v, &wp) < 0)
        failed = "/optim/v";
    if (!failed && bufs.ema && write_group(file, "ema", t, bufs.ema, &wp) < 0)
        failed = "/ema";
    char what[160];
    for (int i = 0; i < bufs.n_extra && !failed; i++)
        if (write_group(file, bufs.extra[i].name, bufs.extra[i].t, bufs.extra[i].data, &wp) < 0)
            snprintf(what, sizeof what, "/%s", bufs.extra[i].name), failed = what;
    // Closing flushes everything; a full disk shows up here.
    if (H5Fclose(file) < 0 && !failed) failed = "closing the file";
    if (failed) {
        discard_tmp_file(tmp);
        return errorf("%s: writing the checkpoint failed at %s (disk full or "
                      "not writable?); the previous file is unchanged", path, failed);
    }
    return commit_tmp_file(tmp, path);
}

// ------------------------------------------------------------------- reading

static hid_t open_ckpt(const char *path) {
    const char *why;
    if (regular_file(path, &why)) {
        errorf("%s: cannot open checkpoint: %s", path, why);
        return -1;
    }
    hid_t fapl = fapl_strong();
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (f < 0)
        errorf("%s: not a readable HDF5 checkpoint (not HDF5, truncated or corrupt)",
               path);
    return f;
}

// 1 if every component of the slash-separated `group` exists and the last
// one is a group, else 0.
static int group_exists(hid_t file, const char *group) {
    char prefix[256];
    if (strlen(group) >= sizeof prefix) return 0;
    size_t len = 0;
    for (const char *p = group;; p++) {
        if (*p == '/' || *p == '\0') {
            memcpy(prefix, group, len);
            prefix[len] = '\0';
            if (len > 0 && H5Lexists(file, prefix, H5P_DEFAULT) <= 0) return 0;
            if (*p == '\0') break;
        }
        len++;
    }
    hid_t g = H5Gopen2(file, group, H5P_DEFAULT);
    if (g < 0) return 0;
    H5Gclose(g);
    return 1;
}

int ckpt_read_attrs(const char *path, const char *expected_kind, Attrs *attrs) {
    h5_quiet();
    memset(attrs, 0, sizeof *attrs);
    hid_t f = open_ckpt(path);
    if (f < 0) return -1;
    int rc = attrs_read_h5(f, path, NULL, 0, attrs);
    H5Fclose(f);
    if (rc < 0) return -1;
    const Attr *kind = attrs_find(attrs, "kind");
    if (!kind || kind->type != ATTR_STR)
        return errorf("%s: not an ldm.c checkpoint (no 'kind' attribute)", path);
    if (expected_kind && strcmp(kind->s, expected_kind) != 0)
        return errorf("%s: is a %s checkpoint, expected a %s checkpoint", path,
                      kind->s, expected_kind);
    return 0;
}

static void format_shape(char *out, size_t cap, int ndim, const hsize_t *dims) {
    size_t len = (size_t)snprintf(out, cap, "(");
    for (int d = 0; d < ndim && len < cap; d++)
        len += (size_t)snprintf(out + len, cap - len, "%s%llu", d ? ", " : "",
                                (unsigned long long)dims[d]);
    if (len < cap) snprintf(out + len, cap - len, ")");
}

// Values a model or its optimizer never holds: NaN or infinity (which would
// sample black images or train NaN from the first step), or a negative Adam
// second moment (a mean of squares, whose square root the update takes).
static int check_values(const char *path, const char *group, const ParamInfo *pi,
                        const float *x) {
    size_t i = first_nonfinite(x, pi->size);
    if (i < pi->size)
        return errorf("%s: /%s/%s holds %g at element %zu (a diverged run or a damaged file)",
                      path, group, pi->name, x[i], i);
    size_t len = strlen(group);
    if (strcmp(group, "optim/v") == 0 || (len > 8 && !strcmp(group + len - 8, "/optim/v")))
        for (i = 0; i < pi->size; i++)
            if (x[i] < 0)
                return errorf("%s: /%s/%s holds %g at element %zu, but Adam's second moment "
                              "is never negative", path, group, pi->name, x[i], i);
    return 0;
}

// Reads one tensor, checking it is a float dataset of the table's shape and
// its values (check_values).
static int read_tensor(hid_t g, const char *path, const char *group,
                       const ParamInfo *pi, float *out) {
    if (H5Lexists(g, pi->name, H5P_DEFAULT) <= 0)
        return errorf("%s: tensor %s is missing from /%s", path, pi->name, group);
    hid_t d = H5Dopen2(g, pi->name, H5P_DEFAULT);
    if (d < 0)
        return errorf("%s: /%s/%s is not a readable dataset", path, group, pi->name);
    int rc = -1;
    hid_t type = H5Dget_type(d), space = H5Dget_space(d);
    hsize_t dims[H5S_MAX_RANK], want[PARAM_MAX_DIMS];
    for (int k = 0; k < pi->ndim; k++) want[k] = (hsize_t)pi->shape[k];
    int ndim = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    char got_s[128], want_s[128];
    format_shape(want_s, sizeof want_s, pi->ndim, want);
    if (type < 0 || space < 0 || ndim < 0 ||
        H5Sget_simple_extent_dims(space, dims, NULL) < 0) {
        errorf("%s: /%s/%s is not a readable dataset", path, group, pi->name);
    } else if (H5Tget_class(type) != H5T_FLOAT) {
        errorf("%s: /%s/%s is not a float tensor (expected float32 %s)", path,
               group, pi->name, want_s);
    } else {
        int same = ndim == pi->ndim;
        for (int k = 0; same && k < ndim; k++) same = dims[k] == want[k];
        format_shape(got_s, sizeof got_s, ndim, dims);
        if (!same)
            errorf("%s: /%s/%s has shape %s, expected %s (a different model "
                   "configuration?)", path, group, pi->name, got_s, want_s);
        else if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
            errorf("%s: cannot read /%s/%s (truncated or corrupt file?)", path,
                   group, pi->name);
        else
            rc = check_values(path, group, pi, out);
    }
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
    H5Dclose(d);
    return rc;
}

// Reads the tensors of `t` from /group; with `exact`, the group must hold no
// others.
static int read_group(const char *path, const ParamTable *t, const char *group, float *out,
                      int exact) {
    h5_quiet();
    hid_t f = open_ckpt(path);
    if (f < 0) return -1;
    if (!group_exists(f, group)) {
        H5Fclose(f);
        return errorf("%s: has no group /%s", path, group);
    }
    hid_t g = H5Gopen2(f, group, H5P_DEFAULT);
    int rc = g < 0 ? errorf("%s: cannot open group /%s", path, group) : 0;
    for (int i = 0; i < t->n && rc == 0; i++)
        rc = read_tensor(g, path, group, &t->info[i], out + t->info[i].offset);
    // Every expected tensor was found by name, so an equal count means the
    // file holds exactly the model's tensors: extra ones belong to another
    // configuration and must not load silently.
    H5G_info_t gi;
    if (rc == 0 && exact && H5Gget_info(g, &gi) < 0)
        rc = errorf("%s: cannot list group /%s", path, group);
    if (rc == 0 && exact && gi.nlinks != (hsize_t)t->n)
        rc = errorf("%s: /%s holds %llu tensors, this model has %d (a checkpoint of another "
                    "configuration?)", path, group, (unsigned long long)gi.nlinks, t->n);
    H5Fclose(f); // strong close: also closes g
    return rc;
}

int ckpt_read_group(const char *path, const ParamTable *t, const char *group,
                    float *out) {
    return read_group(path, t, group, out, 1);
}

int ckpt_has_group(const char *path, const char *group) {
    h5_quiet();
    hid_t f = open_ckpt(path);
    if (f < 0) return -1;
    int r = group_exists(f, group);
    H5Fclose(f);
    return r;
}

void params_hash(char out[17], const ParamTable *t, const float *p) {
    uint64_t h = FNV_OFFSET;
    for (int i = 0; i < t->n; i++)
        h = fnv1a64(h, p + t->info[i].offset, t->info[i].size * sizeof(float));
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}

int ckpt_check_declared_conv(const char *path, const char *key, int cout, int cin,
                             int max_batch, int side) {
    if ((size_t)cout * cin > ((size_t)1 << 24))
        return errorf("%s: %s of %d x %d x 3 x 3 is implausibly large", path, key, cout, cin);
    ParamTable t;
    params_init(&t);
    params_add(&t, key, 4, (int[]){cout, cin, 3, 3}, 0);
    float *w = xmalloc(t.total * sizeof(float));
    int rc = read_group(path, &t, "model", w, 0); // one tensor of many
    free(w);
    params_free(&t);
    if (rc) return -1;
    double need = 4.0 * max_batch * cout * (double)side * side;
    double mem = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
    if (mem > 0 && need > mem)
        return errorf("%s: a batch of %d at %dx%d with %d channels needs more than this "
                      "machine's %.1f GiB", path, max_batch, side, side, cout, mem / (1 << 30));
    return 0;
}
