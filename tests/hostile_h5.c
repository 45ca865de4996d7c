// hostile_h5.c: valid HDF5 files with hostile contents - shapes, dtypes and
// attributes that lie (huge declared dimensions, rank 0 and 5, integers,
// doubles and strings where floats are expected, missing, NaN or huge
// attributes, strings too long to hold, negative sizes, the kind of the other
// stage, shapes that disagree with the attributes, labels beyond int32) - fed
// to latent_cache_open/read/read_items, ckpt_read_attrs, ckpt_read_group,
// vae_load and unet_load. Layouts other tools write (contiguous, deflated,
// labels of other integer types, more than 2^31 items) must load. Each must return -1 with a message, never crash
// and never allocate a size a file declares before checking it.
//
// Every case runs in a child process (a crash fails one case, not the run)
// under an address-space limit of 2 GiB (not under ASan, whose shadow memory
// needs more): allocating what a hostile file declares aborts the child.
// The files are built by copying a valid file and editing it with the HDF5
// API; raw-byte corruption is test_checkpoint's business, and HDF5 itself is
// known to crash on crafted bytes, so it is not fuzzed here.
#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint.h"
#include "common.h"
#include "latent_cache.h"
#include "rng.h"
#include "testutil.h"
#include "unet.h"
#include "unet_ckpt.h"
#include "vae.h"
#include "vae_ckpt.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

static char dir[64];
static char good_vae[PATH_MAX], good_unet[PATH_MAX], good_cache[PATH_MAX];
static char cur[PATH_MAX]; // the file of the current case

static VaeConfig tiny_vae(void) {
    VaeConfig c;
    vae_config_default(&c);
    c.image_size = 8, c.base_channels = 4, c.latent_channels = 2;
    return c;
}

static UNetConfig tiny_unet(void) {
    UNetConfig c;
    unet_config_default(&c);
    c.latent_channels = 2, c.latent_size = 4, c.base_channels = 8;
    c.attn_resolutions[0] = 2;
    c.num_res_blocks = 1, c.temb_dim = 16, c.time_dim = 8;
    return c;
}

// ------------------------------------------------------------ valid files

static void write_good_files(void) {
    Rng r;
    rng_init(&r, 1);
    snprintf(good_vae, sizeof good_vae, "%s/vae.h5", dir);
    VaeConfig vc = tiny_vae();
    Vae v;
    vae_init(&v, &vc, 1);
    params_init_values(&v.table, v.params, &r);
    Attrs a = {0};
    attrs_set_str(&a, "kind", "vae");
    attrs_set_int(&a, "step", 1);
    vae_config_to_attrs(&vc, &a);
    CkptBuffers b = {v.params, v.params, v.params, NULL};
    CHECK(ckpt_write(good_vae, &v.table, b, &a) == 0);
    vae_free(&v);

    snprintf(good_unet, sizeof good_unet, "%s/unet.h5", dir);
    UNetConfig uc = tiny_unet();
    UNet u;
    unet_init(&u, &uc, 1);
    params_init_values(&u.table, u.params, &r);
    Attrs ua = {0};
    attrs_set_str(&ua, "kind", "unet");
    attrs_set_int(&ua, "step", 1);
    unet_config_to_attrs(&uc, &ua);
    CkptBuffers ub = {u.params, u.params, u.params, u.params};
    CHECK(ckpt_write(good_unet, &u.table, ub, &ua) == 0);
    unet_free(&u);

    snprintf(good_cache, sizeof good_cache, "%s/cache.h5", dir);
    LatentCacheWriter w;
    float mean[4 * 2 * 2 * 2], logvar[4 * 2 * 2 * 2];
    int32_t labels[4] = {0, 1, 2, 3};
    rng_normal_fill(&r, mean, 32);
    rng_normal_fill(&r, logvar, 32);
    CHECK(latent_cache_create(&w, good_cache, 4, 2, 2, 2, 1) == 0);
    CHECK(latent_cache_append(&w, mean, logvar, labels, 4) == 0);
    CHECK(latent_cache_finish(&w, 1.25, 8, 1, "src", "0123456789abcdef") == 0);
}

// ------------------------------------------------------------ editing

static int case_no = 0;
// Starts a case: a fresh copy of `base` (NULL: an empty HDF5 file) opened
// read-write; returns the file id.
static hid_t begin(const char *base) {
    snprintf(cur, sizeof cur, "%s/case%03d.h5", dir, case_no++);
    if (!base) {
        hid_t f = H5Fcreate(cur, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
        CHECK(f >= 0);
        return f;
    }
    copy_file(cur, base);
    hid_t f = H5Fopen(cur, H5F_ACC_RDWR, H5P_DEFAULT);
    CHECK(f >= 0);
    return f;
}

// Deletes root attribute `name` / the object at link `name`.
static void del(hid_t f, const char *name) { CHECK(H5Adelete(f, name) >= 0); }
static void unlink_obj(hid_t f, const char *name) { CHECK(H5Ldelete(f, name, H5P_DEFAULT) >= 0); }

static void put_attr(hid_t f, const char *name, hid_t type, hid_t space, const void *buf) {
    if (H5Aexists(f, name) > 0) CHECK(H5Adelete(f, name) >= 0);
    hid_t a = H5Acreate2(f, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(a >= 0);
    CHECK(H5Awrite(a, type, buf) >= 0);
    H5Aclose(a);
    H5Sclose(space);
}
static void put_int(hid_t f, const char *name, int64_t v) {
    put_attr(f, name, H5T_NATIVE_INT64, H5Screate(H5S_SCALAR), &v);
}
static void put_double(hid_t f, const char *name, double v) {
    put_attr(f, name, H5T_NATIVE_DOUBLE, H5Screate(H5S_SCALAR), &v);
}
static void put_str(hid_t f, const char *name, const char *v) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(v) + 1);
    put_attr(f, name, t, H5Screate(H5S_SCALAR), v);
    H5Tclose(t);
}
static void put_double_array(hid_t f, const char *name) {
    hsize_t n = 2;
    double v[2] = {1, 2};
    put_attr(f, name, H5T_NATIVE_DOUBLE, H5Screate_simple(1, &n, NULL), v);
}

// Replaces dataset `name` by one of `type` and shape dims[rank] (rank 0: a
// scalar). Chunked and never written, so huge declared shapes cost nothing:
// the file is valid and small, only its declarations lie.
static void put_dset(hid_t f, const char *name, hid_t type, int rank, const hsize_t *dims) {
    if (H5Lexists(f, name, H5P_DEFAULT) > 0) CHECK(H5Ldelete(f, name, H5P_DEFAULT) >= 0);
    hid_t sp = rank ? H5Screate_simple(rank, dims, NULL) : H5Screate(H5S_SCALAR);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hsize_t chunk[8];
    int zero = 0;
    for (int i = 0; i < rank; i++) {
        chunk[i] = dims[i] < 4 ? dims[i] : 4;
        zero |= dims[i] == 0;
    }
    if (rank && !zero) CHECK(H5Pset_chunk(dcpl, rank, chunk) >= 0);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t d = H5Dcreate2(f, name, type, sp, lcpl, dcpl, H5P_DEFAULT);
    CHECK(d >= 0);
    H5Dclose(d);
    H5Pclose(lcpl);
    H5Pclose(dcpl);
    H5Sclose(sp);
}
static void put_group(hid_t f, const char *name) {
    if (H5Lexists(f, name, H5P_DEFAULT) > 0) CHECK(H5Ldelete(f, name, H5P_DEFAULT) >= 0);
    hid_t g = H5Gcreate2(f, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(g >= 0);
    H5Gclose(g);
}
// Replaces dataset `name` by one of shape dims[rank] whose first `written`
// items hold data (item i: all i for floats, labels[i] for integers):
// `chunk_items` items a chunk (0: contiguous), deflated if `deflate`.
static void put_items(hid_t f, const char *name, hid_t type, int rank, const hsize_t *dims,
                      hsize_t chunk_items, int deflate, hsize_t written, const int64_t *labels) {
    if (H5Lexists(f, name, H5P_DEFAULT) > 0) CHECK(H5Ldelete(f, name, H5P_DEFAULT) >= 0);
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hsize_t chunk[4] = {chunk_items, 0, 0, 0}, cnt[4] = {written, 0, 0, 0}, off[4] = {0};
    size_t item = 1;
    for (int i = 1; i < rank; i++) chunk[i] = cnt[i] = dims[i], item *= dims[i];
    if (chunk_items) CHECK(H5Pset_chunk(dcpl, rank, chunk) >= 0);
    if (deflate) CHECK(H5Pset_deflate(dcpl, 6) >= 0);
    hid_t d = H5Dcreate2(f, name, type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    CHECK(d >= 0);
    int64_t *v = xmalloc((size_t)written * item * sizeof *v);
    for (size_t i = 0; i < (size_t)written * item; i++) v[i] = labels ? labels[i] : (int64_t)(i / item);
    hid_t ms = H5Screate_simple(rank, cnt, NULL);
    CHECK(H5Sselect_hyperslab(sp, H5S_SELECT_SET, off, NULL, cnt, NULL) >= 0);
    CHECK(H5Dwrite(d, H5T_NATIVE_INT64, ms, sp, H5P_DEFAULT, v) >= 0);
    free(v);
    H5Sclose(ms);
    H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(sp);
}
static hid_t str_type(void) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, 8);
    return t;
}

// ------------------------------------------------------------ running

typedef enum {
    L_CACHE,      // latent_cache_open
    L_CACHE_READ, // latent_cache_open, then the first and last items read
    L_ATTRS_VAE,  // ckpt_read_attrs(kind "vae")
    L_VAE,        // vae_load
    L_VAE_OPTIM,  // ckpt_read_group("optim/m") with the tiny VAE's table
    L_UNET,       // unet_load("model")
    L_UNET_EMA,   // unet_load("ema")
} Loader;
static const char *loader_name[] = {"latent_cache_open", "latent_cache_read(_items)",
                                    "ckpt_read_attrs(vae)", "vae_load",
                                    "ckpt_read_group(optim/m)", "unet_load(model)",
                                    "unet_load(ema)"};

static int load(Loader l, const char *path) {
    switch (l) {
    case L_CACHE: {
        LatentCache c;
        int rc = latent_cache_open(&c, path);
        if (rc == 0) latent_cache_close(&c);
        return rc;
    }
    case L_CACHE_READ: {
        LatentCache c;
        if (latent_cache_open(&c, path)) return -1;
        // The ends of the cache, both ways; nothing proportional to N.
        size_t item = (size_t)c.Z * c.h * c.w;
        float *m = xmalloc(4 * item * sizeof(float)), *l = xmalloc(4 * item * sizeof(float));
        int32_t lab[4];
        int64_t idx[4] = {c.N - 1, 0, c.N / 2, c.N - 1};
        int rc = latent_cache_read(&c, 0, 1, m, l, lab) || latent_cache_read(&c, c.N - 1, 1, m, l, lab) ||
                 latent_cache_read_items(&c, idx, 4, m, l, lab);
        // Item i holds i where written (put_items), the fill value 0 elsewhere.
        if (rc == 0 && c.N > 4 && (m[0] != 0 || m[item] != 0)) rc = 1;
        free(m), free(l);
        latent_cache_close(&c);
        return rc ? -1 : 0;
    }
    case L_ATTRS_VAE: {
        Attrs *a = xmalloc(sizeof *a);
        int rc = ckpt_read_attrs(path, "vae", a);
        free(a);
        return rc;
    }
    case L_VAE: {
        Vae v;
        int rc = vae_load(&v, path, 4, NULL);
        if (rc == 0) vae_free(&v);
        return rc;
    }
    case L_VAE_OPTIM: {
        VaeConfig c = tiny_vae();
        Vae v;
        vae_init(&v, &c, 1);
        int rc = ckpt_read_group(path, &v.table, "optim/m", v.params);
        vae_free(&v);
        return rc;
    }
    case L_UNET:
    case L_UNET_EMA: {
        UNet u;
        int rc = unet_load(&u, path, l == L_UNET ? "model" : "ema", 4, NULL);
        if (rc == 0) unet_free(&u);
        return rc;
    }
    }
    return 0;
}

// Closes the case's file and runs `l` on it in a child; `want` is the
// expected return (-1 for hostile files, 0 for the valid controls).
static void expect(hid_t f, const char *what, Loader l, int want) {
    if (f >= 0) CHECK(H5Fclose(f) >= 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        if (!UNDER_ASAN) {
            struct rlimit lim = {(rlim_t)2 << 30, (rlim_t)2 << 30};
            setrlimit(RLIMIT_AS, &lim);
        }
        int rc = load(l, cur);
        fflush(stderr);
        _exit(rc == 0 ? 0 : rc == -1 ? 1 : 2);
    }
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    char got[64];
    int ok;
    if (WIFSIGNALED(st)) {
        snprintf(got, sizeof got, "crashed (signal %d)", WTERMSIG(st));
        ok = 0;
    } else {
        int code = WEXITSTATUS(st);
        snprintf(got, sizeof got, "%s", code == 0 ? "accepted (0)" : code == 1 ? "rejected (-1)"
                                                                    : "returned neither 0 nor -1");
        ok = code == (want == 0 ? 0 : 1);
    }
    char msg[512];
    snprintf(msg, sizeof msg, "%s: %s -> %s", loader_name[l], what, got);
    check_true(msg, ok);
}

// ------------------------------------------------------------ cases

static void cache_cases(void) {
    hsize_t d4[4] = {4, 2, 2, 2}, d5[5] = {1, 1, 1, 1, 1};
    hid_t f;
    expect(begin(good_cache), "the valid cache (control)", L_CACHE, 0);
    f = begin(good_cache), put_dset(f, "mean", H5T_NATIVE_FLOAT, 0, NULL);
    expect(f, "mean of rank 0", L_CACHE, -1);
    f = begin(good_cache), put_dset(f, "mean", H5T_NATIVE_FLOAT, 5, d5), put_dset(f, "logvar", H5T_NATIVE_FLOAT, 5, d5);
    expect(f, "mean and logvar of rank 5", L_CACHE, -1);
    f = begin(good_cache), put_dset(f, "mean", H5T_NATIVE_INT32, 4, d4);
    expect(f, "mean of int32", L_CACHE, -1);
    hid_t st = str_type();
    f = begin(good_cache), put_dset(f, "logvar", st, 4, d4);
    expect(f, "logvar of strings", L_CACHE, -1);
    hsize_t other[4] = {4, 2, 2, 3};
    f = begin(good_cache), put_dset(f, "logvar", H5T_NATIVE_FLOAT, 4, other);
    expect(f, "logvar (4,2,2,3) vs mean (4,2,2,2)", L_CACHE, -1);
    hsize_t hugeN[4] = {(hsize_t)1 << 31, 2, 2, 2};
    f = begin(good_cache), put_dset(f, "mean", H5T_NATIVE_FLOAT, 4, hugeN), put_dset(f, "logvar", H5T_NATIVE_FLOAT, 4, hugeN);
    expect(f, "2^31 items declared", L_CACHE, -1);
    hsize_t huge40[4] = {(hsize_t)1 << 40, 2, 2, 2};
    f = begin(good_cache), put_dset(f, "mean", H5T_NATIVE_FLOAT, 4, huge40), put_dset(f, "logvar", H5T_NATIVE_FLOAT, 4, huge40);
    expect(f, "2^40 items declared", L_CACHE, -1);
    hsize_t hugeItem[4] = {4, 1 << 20, 1 << 10, 1 << 10};
    f = begin(good_cache), put_dset(f, "mean", H5T_NATIVE_FLOAT, 4, hugeItem), put_dset(f, "logvar", H5T_NATIVE_FLOAT, 4, hugeItem);
    expect(f, "items of 2^20 x 2^10 x 2^10 declared", L_CACHE, -1);
    hsize_t empty[4] = {0, 2, 2, 2};
    f = begin(good_cache), put_dset(f, "mean", H5T_NATIVE_FLOAT, 4, empty), put_dset(f, "logvar", H5T_NATIVE_FLOAT, 4, empty);
    expect(f, "0 items", L_CACHE, -1);
    hsize_t five = 5;
    f = begin(good_cache), put_dset(f, "labels", H5T_NATIVE_INT32, 1, &five);
    expect(f, "5 labels for 4 items", L_CACHE, -1);
    hsize_t four = 4;
    f = begin(good_cache), put_dset(f, "labels", H5T_NATIVE_FLOAT, 1, &four);
    expect(f, "float labels", L_CACHE, -1);
    f = begin(good_cache), put_group(f, "mean");
    expect(f, "'mean' is a group", L_CACHE, -1);
    const char *attrs[] = {"scale_factor", "image_size", "in_channels", "source", "vae_hash"};
    for (int i = 0; i < 5; i++) {
        char what[64];
        snprintf(what, sizeof what, "attribute %s missing", attrs[i]);
        f = begin(good_cache), del(f, attrs[i]);
        expect(f, what, L_CACHE, -1);
    }
    f = begin(good_cache), put_double(f, "scale_factor", NAN);
    expect(f, "scale_factor NaN", L_CACHE, -1);
    f = begin(good_cache), put_double(f, "scale_factor", INFINITY);
    expect(f, "scale_factor +Inf", L_CACHE, -1);
    f = begin(good_cache), put_double(f, "scale_factor", -1.0);
    expect(f, "scale_factor -1", L_CACHE, -1);
    f = begin(good_cache), put_double(f, "scale_factor", 0.0);
    expect(f, "scale_factor 0", L_CACHE, -1);
    f = begin(good_cache), put_str(f, "scale_factor", "1.0");
    expect(f, "scale_factor a string", L_CACHE, -1);
    f = begin(good_cache), put_double_array(f, "scale_factor");
    expect(f, "scale_factor an array of 2", L_CACHE, -1);
    f = begin(good_cache), put_double(f, "image_size", 8.0);
    expect(f, "image_size a double", L_CACHE, -1);
    f = begin(good_cache), put_int(f, "image_size", -8);
    expect(f, "image_size -8", L_CACHE, -1);
    f = begin(good_cache), put_int(f, "image_size", 0);
    expect(f, "image_size 0", L_CACHE, -1);
    f = begin(good_cache), put_int(f, "image_size", 7);
    expect(f, "image_size 7 for 2x2 latents", L_CACHE, -1);
    f = begin(good_cache), put_int(f, "image_size", (int64_t)1 << 40);
    expect(f, "image_size 2^40", L_CACHE, -1);
    f = begin(good_cache), put_int(f, "in_channels", 2);
    expect(f, "in_channels 2", L_CACHE, -1);
    f = begin(good_cache), put_int(f, "in_channels", -1);
    expect(f, "in_channels -1", L_CACHE, -1);
    f = begin(good_cache), put_str(f, "vae_hash", "xyz");
    expect(f, "vae_hash 'xyz'", L_CACHE, -1);
    f = begin(good_cache), put_int(f, "vae_hash", 12345);
    expect(f, "vae_hash an integer", L_CACHE, -1);
    f = begin(good_cache), put_str(f, "vae_hash", "0123456789abcdef0123");
    expect(f, "vae_hash of 20 hex digits", L_CACHE, -1);
    f = begin(good_cache), put_str(f, "source", "");
    expect(f, "empty source (control: allowed)", L_CACHE, 0);
    expect(begin(good_vae), "a VAE checkpoint (other stage)", L_CACHE, -1);
    expect(begin(good_unet), "a UNet checkpoint (other stage)", L_CACHE, -1);
    expect(begin(NULL), "an empty HDF5 file", L_CACHE, -1);
    H5Tclose(st);

    // Layouts and label types of other tools.
    expect(begin(good_cache), "the valid cache, read (control)", L_CACHE_READ, 0);
    f = begin(good_cache), put_items(f, "mean", H5T_IEEE_F32LE, 4, d4, 0, 0, 4, NULL),
    put_items(f, "logvar", H5T_IEEE_F64LE, 4, d4, 0, 0, 4, NULL);
    expect(f, "contiguous mean and (float64) logvar", L_CACHE_READ, 0);
    f = begin(good_cache), put_items(f, "mean", H5T_IEEE_F32LE, 4, d4, 3, 1, 4, NULL),
    put_items(f, "logvar", H5T_IEEE_F32LE, 4, d4, 3, 1, 4, NULL);
    expect(f, "deflated chunks of 3 items", L_CACHE_READ, 0);
    int64_t small[4] = {0, 1, 2, 255}, big[4] = {0, 1, 3000000000LL, 3};
    f = begin(good_cache), put_items(f, "labels", H5T_STD_U8LE, 1, &four, 0, 0, 4, small);
    expect(f, "uint8 labels", L_CACHE_READ, 0);
    f = begin(good_cache), put_items(f, "labels", H5T_STD_I64LE, 1, &four, 2, 0, 4, small);
    expect(f, "int64 labels", L_CACHE_READ, 0);
    f = begin(good_cache), put_items(f, "labels", H5T_STD_U32LE, 1, &four, 0, 0, 4, big);
    expect(f, "uint32 labels with 3,000,000,000 (item 2)", L_CACHE, 0);
    f = begin(good_cache), put_items(f, "labels", H5T_STD_U32LE, 1, &four, 0, 0, 4, big);
    expect(f, "uint32 labels with 3,000,000,000 (item 2), read", L_CACHE_READ, -1);
    // More items than int holds, declared in the dataspace, the first chunk
    // written: handled (nothing proportional to N is allocated).
    hsize_t n31[4] = {((hsize_t)1 << 31) + 1, 2, 2, 2}, n31lab = n31[0];
    f = begin(good_cache), put_items(f, "mean", H5T_IEEE_F32LE, 4, n31, 4, 0, 4, NULL),
    put_items(f, "logvar", H5T_IEEE_F32LE, 4, n31, 4, 0, 4, NULL),
    put_items(f, "labels", H5T_STD_I32LE, 1, &n31lab, 4, 0, 4, small);
    expect(f, "2^31 + 1 items, the first 4 written", L_CACHE_READ, 0);
    f = begin(good_cache), put_items(f, "mean", H5T_IEEE_F32LE, 4, n31, 4, 0, 4, NULL),
    put_items(f, "logvar", H5T_IEEE_F32LE, 4, n31, 4, 0, 4, NULL);
    expect(f, "2^31 + 1 items but 4 labels", L_CACHE, -1);
    hsize_t n40[4] = {(hsize_t)1 << 40, 2, 2, 2};
    f = begin(good_cache), put_items(f, "mean", H5T_IEEE_F32LE, 4, n40, 4, 0, 4, NULL),
    put_items(f, "logvar", H5T_IEEE_F32LE, 4, n40, 4, 0, 4, NULL), unlink_obj(f, "labels");
    expect(f, "2^40 items, the first 4 written", L_CACHE, -1);
    f = begin(good_cache), put_dset(f, "labels", H5T_NATIVE_INT32, 1, &four);
    expect(f, "labels declared, never written", L_CACHE, -1);
    char *longs = xmalloc(ATTR_STR_MAX + 1);
    memset(longs, 'x', ATTR_STR_MAX);
    longs[ATTR_STR_MAX] = '\0';
    f = begin(good_cache), put_str(f, "source", longs);
    expect(f, "source of 4096 characters", L_CACHE, -1);
    longs[ATTR_STR_MAX - 1] = '\0';
    f = begin(good_cache), put_str(f, "source", longs);
    expect(f, "source of 4095 characters (control)", L_CACHE, 0);
    free(longs);
}

// NaN, negative and huge values of each attribute in keys[] (NULL-ended).
static void bad_values(const char *base, Loader l, const char *const *keys) {
    for (int k = 0; keys[k]; k++) {
        char what[96];
        hid_t f;
        snprintf(what, sizeof what, "%s NaN", keys[k]);
        f = begin(base), put_double(f, keys[k], NAN);
        expect(f, what, l, -1);
        snprintf(what, sizeof what, "%s -1", keys[k]);
        f = begin(base), put_int(f, keys[k], -1);
        expect(f, what, l, -1);
        snprintf(what, sizeof what, "%s 2^40", keys[k]);
        f = begin(base), put_int(f, keys[k], (int64_t)1 << 40);
        expect(f, what, l, -1);
        snprintf(what, sizeof what, "%s 1e300", keys[k]);
        f = begin(base), put_double(f, keys[k], 1e300);
        expect(f, what, l, -1);
    }
}

static void vae_cases(void) {
    hid_t f;
    expect(begin(good_vae), "the valid VAE checkpoint (control)", L_VAE, 0);
    expect(begin(good_vae), "the valid VAE checkpoint (control)", L_VAE_OPTIM, 0);
    f = begin(good_vae), del(f, "kind");
    expect(f, "no kind", L_ATTRS_VAE, -1);
    f = begin(good_vae), put_int(f, "kind", 1);
    expect(f, "kind an integer", L_ATTRS_VAE, -1);
    char long_kind[700];
    memset(long_kind, 'v', sizeof long_kind - 1);
    long_kind[sizeof long_kind - 1] = 0;
    f = begin(good_vae), put_str(f, "kind", long_kind);
    expect(f, "kind of 699 characters", L_ATTRS_VAE, -1);
    expect(begin(good_unet), "a UNet checkpoint (other stage)", L_VAE, -1);
    expect(begin(good_cache), "a latent cache (other stage)", L_VAE, -1);
    f = begin(good_vae), del(f, "base_channels");
    expect(f, "base_channels missing", L_VAE, -1);
    f = begin(good_vae), put_double(f, "base_channels", 4.0);
    expect(f, "base_channels a double", L_VAE, -1);
    f = begin(good_vae), put_str(f, "base_channels", "4");
    expect(f, "base_channels a string", L_VAE, -1);
    f = begin(good_vae), put_int(f, "base_channels", 0);
    expect(f, "base_channels 0", L_VAE, -1);
    f = begin(good_vae), put_int(f, "base_channels", -4);
    expect(f, "base_channels -4", L_VAE, -1);
    f = begin(good_vae), put_int(f, "base_channels", (int64_t)1 << 40);
    expect(f, "base_channels 2^40", L_VAE, -1);
    f = begin(good_vae), put_int(f, "base_channels", 8);
    expect(f, "base_channels 8 but tensors of 4", L_VAE, -1);
    f = begin(good_vae), put_int(f, "image_size", 6);
    expect(f, "image_size 6", L_VAE, -1);
    f = begin(good_vae), put_int(f, "image_size", 1 << 20);
    expect(f, "image_size 2^20", L_VAE, -1);
    f = begin(good_vae), put_int(f, "in_channels", 2);
    expect(f, "in_channels 2", L_VAE, -1);
    f = begin(good_vae), put_int(f, "latent_channels", 1 << 20);
    expect(f, "latent_channels 2^20", L_VAE, -1);
    f = begin(good_vae), put_double(f, "kl_weight", NAN);
    expect(f, "kl_weight NaN", L_VAE, -1);
    f = begin(good_vae), put_double(f, "kl_weight", -1);
    expect(f, "kl_weight -1", L_VAE, -1);
    // In range for the configuration check, but the model it declares
    // (widths 4096..16384 at 4096x4096) is hundreds of GiB: the tensors of
    // the file must be checked before that is allocated.
    f = begin(good_vae), put_int(f, "base_channels", 4096), put_int(f, "image_size", 4096);
    expect(f, "base_channels 4096 at image_size 4096, tensors of the tiny VAE", L_VAE, -1);
    f = begin(good_vae), unlink_obj(f, "model");
    expect(f, "/model missing", L_VAE, -1);
    f = begin(good_vae), unlink_obj(f, "model"), put_dset(f, "model", H5T_NATIVE_FLOAT, 1, (hsize_t[]){3});
    expect(f, "/model a dataset", L_VAE, -1);
    f = begin(good_vae), unlink_obj(f, "model/encoder.0.weight");
    expect(f, "/model/encoder.0.weight missing", L_VAE, -1);
    f = begin(good_vae), put_group(f, "model/encoder.0.weight");
    expect(f, "/model/encoder.0.weight a group", L_VAE, -1);
    f = begin(good_vae), put_dset(f, "model/encoder.0.weight", H5T_NATIVE_FLOAT, 4, (hsize_t[]){4, 1, 3, 4});
    expect(f, "/model/encoder.0.weight (4,1,3,4) instead of (4,1,3,3)", L_VAE, -1);
    f = begin(good_vae), put_dset(f, "model/encoder.0.weight", H5T_NATIVE_FLOAT, 0, NULL);
    expect(f, "/model/encoder.0.weight rank 0", L_VAE, -1);
    f = begin(good_vae), put_dset(f, "model/encoder.0.weight", H5T_NATIVE_FLOAT, 5, (hsize_t[]){4, 1, 3, 3, 1});
    expect(f, "/model/encoder.0.weight rank 5 (4,1,3,3,1)", L_VAE, -1);
    f = begin(good_vae), put_dset(f, "model/encoder.0.weight", H5T_NATIVE_INT32, 4, (hsize_t[]){4, 1, 3, 3});
    expect(f, "/model/encoder.0.weight int32", L_VAE, -1);
    hid_t st = str_type();
    f = begin(good_vae), put_dset(f, "model/encoder.0.weight", st, 4, (hsize_t[]){4, 1, 3, 3});
    expect(f, "/model/encoder.0.weight strings", L_VAE, -1);
    H5Tclose(st);
    f = begin(good_vae), put_dset(f, "model/encoder.0.weight", H5T_NATIVE_FLOAT, 4,
                                  (hsize_t[]){(hsize_t)1 << 40, (hsize_t)1 << 40, 3, 3});
    expect(f, "/model/encoder.0.weight (2^40, 2^40, 3, 3)", L_VAE, -1);
    f = begin(good_vae), put_dset(f, "model/encoder.99.weight", H5T_NATIVE_FLOAT, 1, (hsize_t[]){4});
    expect(f, "an extra tensor /model/encoder.99.weight", L_VAE, -1);
    f = begin(good_vae), put_dset(f, "optim/m/decoder.8.bias", H5T_NATIVE_FLOAT, 1, (hsize_t[]){2});
    expect(f, "/optim/m/decoder.8.bias (2) instead of (1)", L_VAE_OPTIM, -1);
    f = begin(good_vae), unlink_obj(f, "optim");
    expect(f, "/optim missing", L_VAE_OPTIM, -1);
    char *longs = xmalloc(5001);
    memset(longs, 'v', 5000);
    longs[5000] = '\0';
    f = begin(good_vae), put_str(f, "source", longs);
    expect(f, "an attribute of 5000 characters", L_ATTRS_VAE, -1);
    free(longs);
    bad_values(good_vae, L_VAE, (const char *[]){"in_channels", "image_size", "base_channels",
                                                 "latent_channels", "kl_weight", NULL});
}

static void unet_cases(void) {
    hid_t f;
    expect(begin(good_unet), "the valid UNet checkpoint (control)", L_UNET, 0);
    expect(begin(good_unet), "the valid UNet checkpoint (control)", L_UNET_EMA, 0);
    expect(begin(good_vae), "a VAE checkpoint (other stage)", L_UNET, -1);
    expect(begin(good_cache), "a latent cache (other stage)", L_UNET, -1);
    f = begin(good_unet), put_str(f, "kind", "vae");
    expect(f, "kind 'vae' on UNet tensors", L_UNET, -1);
    f = begin(good_unet), unlink_obj(f, "ema");
    expect(f, "/ema missing", L_UNET_EMA, -1);
    f = begin(good_unet), put_int(f, "latent_size", -4);
    expect(f, "latent_size -4", L_UNET, -1);
    f = begin(good_unet), put_int(f, "num_res_blocks", 1000);
    expect(f, "num_res_blocks 1000", L_UNET, -1);
    f = begin(good_unet), put_int(f, "num_heads", 0);
    expect(f, "num_heads 0", L_UNET, -1);
    f = begin(good_unet), put_int(f, "num_heads", 3);
    expect(f, "num_heads 3 for 8 channels", L_UNET, -1);
    f = begin(good_unet), put_int(f, "time_dim", 7);
    expect(f, "time_dim 7 (odd)", L_UNET, -1);
    f = begin(good_unet), put_str(f, "channel_mult", "0,2");
    expect(f, "channel_mult '0,2'", L_UNET, -1);
    f = begin(good_unet), put_str(f, "channel_mult", "1,2,x");
    expect(f, "channel_mult '1,2,x'", L_UNET, -1);
    f = begin(good_unet), put_str(f, "channel_mult", "1,1,1,1,1,1,1,1,1");
    expect(f, "channel_mult of 9 levels", L_UNET, -1);
    f = begin(good_unet), put_str(f, "attn_resolutions", "99999999999999999999");
    expect(f, "attn_resolutions '99999999999999999999'", L_UNET, -1);
    f = begin(good_unet), put_str(f, "attn_resolutions", "3");
    expect(f, "attn_resolutions '3', a side the UNet never reaches", L_UNET, -1);
    f = begin(good_unet), put_str(f, "attn_resolutions", "");
    expect(f, "attn_resolutions '' on tensors with attention", L_UNET, -1);
    f = begin(good_unet), put_dset(f, "ema/mid.attn2.q.weight", H5T_NATIVE_FLOAT, 1, (hsize_t[]){8});
    expect(f, "an extra tensor /ema/mid.attn2.q.weight", L_UNET_EMA, -1);
    f = begin(good_unet), put_int(f, "channel_mult", 12);
    expect(f, "channel_mult an integer", L_UNET, -1);
    f = begin(good_unet), put_double(f, "num_res_blocks", 1.5);
    expect(f, "num_res_blocks 1.5", L_UNET, -1);
    f = begin(good_unet), put_int(f, "base_channels", 16);
    expect(f, "base_channels 16 but tensors of 8", L_UNET, -1);
    // In range for the configuration check; the UNet it declares (65536
    // channels at 65536x65536) does not fit any memory.
    f = begin(good_unet), put_int(f, "base_channels", 65536), put_int(f, "latent_size", 65536),
    put_str(f, "channel_mult", "1"), put_str(f, "attn_resolutions", "");
    expect(f, "base_channels 65536 at latent_size 65536, tensors of the tiny UNet", L_UNET, -1);
    f = begin(good_unet), put_int(f, "latent_size", 1 << 15);
    expect(f, "latent_size 2^15, tensors of the tiny UNet", L_UNET, -1);
    f = begin(good_unet), put_int(f, "base_channels", 65536), put_int(f, "latent_channels", 65536),
    put_str(f, "channel_mult", "1"), put_str(f, "attn_resolutions", "");
    expect(f, "conv_in declared 65536 x 65536", L_UNET, -1);
    f = begin(good_unet), put_dset(f, "ema/conv_in.weight", H5T_NATIVE_DOUBLE, 1, (hsize_t[]){5});
    expect(f, "/ema/conv_in.weight float64 of shape (5)", L_UNET_EMA, -1);
    f = begin(good_unet), put_dset(f, "model/out_conv.bias", H5T_NATIVE_FLOAT, 1, (hsize_t[]){(hsize_t)1 << 50});
    expect(f, "/model/out_conv.bias of 2^50 floats", L_UNET, -1);
    bad_values(good_unet, L_UNET, (const char *[]){"latent_channels", "latent_size", "base_channels",
                                                   "num_res_blocks", "num_heads", "temb_dim",
                                                   "time_dim", NULL});
}

int main(int argc, char **argv) {
    (void)argc, (void)argv;
    h5_quiet();
    snprintf(dir, sizeof dir, "/tmp/hostile_h5.XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    write_good_files();
    cache_cases();
    vae_cases();
    unet_cases();
    if (remove_tree(dir) != 0) warnf("could not remove %s", dir);
    return test_summary("hostile_h5");
}
