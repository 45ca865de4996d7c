// fuzz_h5: the shape, dtype and attribute checks of the latent-cache and
// checkpoint readers. The input is NOT handed to HDF5 as file bytes (HDF5
// itself crashes on crafted files); it is a recipe that this harness turns
// into a valid HDF5 file through the HDF5 API - datasets of fuzzed rank,
// dimensions (small, zero or huge; chunked and never written, so huge
// declarations cost nothing) and dtype, attributes of fuzzed type and value -
// which then goes through latent_cache_open/latent_cache_read,
// ckpt_read_attrs, vae_config_from_attrs, unet_config_from_attrs and
// ckpt_read_group.
#include <hdf5.h>
#include <stdint.h>

#include "checkpoint.h"
#include "fuzz_util.h"
#include "latent_cache.h"
#include "unet_ckpt.h"
#include "vae_ckpt.h"

typedef struct {
    const uint8_t *d;
    size_t n, i;
} In;

static unsigned u8(In *in) { return in->i < in->n ? in->d[in->i++] : 0; }
static uint64_t u64(In *in) {
    uint64_t v = 0;
    for (int k = 0; k < 8; k++) v = v << 8 | u8(in);
    return v;
}

// A dimension: mostly small, sometimes zero or huge.
static hsize_t dim(In *in) {
    static const hsize_t special[] = {0, (hsize_t)1 << 20, (hsize_t)1 << 31,
                                      (hsize_t)1 << 40, (hsize_t)1 << 62, 65536};
    unsigned v = u8(in);
    return v >= 250 ? special[v - 250] : v % 9 + 1;
}

static hid_t dtype(In *in) {
    switch (u8(in) % 6) {
    case 0: return H5Tcopy(H5T_NATIVE_FLOAT);
    case 1: return H5Tcopy(H5T_NATIVE_DOUBLE);
    case 2: return H5Tcopy(H5T_NATIVE_INT32);
    case 3: return H5Tcopy(H5T_NATIVE_UINT8);
    case 4: { hid_t t = H5Tcopy(H5T_C_S1); H5Tset_size(t, 4); return t; }
    default: return H5Tcopy(H5T_STD_U64LE);
    }
}

// A dataset at `name` of fuzzed rank (0..5), dims and type; rank `want`
// with dims `fix` (may be NULL) when the first byte says "well-formed".
static void dataset(hid_t f, const char *name, In *in, int want, const hsize_t *fix) {
    int rank;
    hsize_t dims[6];
    hid_t type;
    if (fix && (u8(in) & 3)) {
        rank = want;
        for (int k = 0; k < rank; k++) dims[k] = fix[k];
        type = H5Tcopy(H5T_NATIVE_FLOAT);
    } else {
        rank = u8(in) % 6;
        for (int k = 0; k < rank; k++) dims[k] = dim(in);
        type = dtype(in);
    }
    int zero = 0;
    hsize_t chunk[6];
    for (int k = 0; k < rank; k++) {
        zero |= dims[k] == 0;
        chunk[k] = dims[k] < 4 ? dims[k] : 4;
    }
    hid_t sp = rank ? H5Screate_simple(rank, dims, NULL) : H5Screate(H5S_SCALAR);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (rank && !zero) H5Pset_chunk(dcpl, rank, chunk);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t ds = sp >= 0 ? H5Dcreate2(f, name, type, sp, lcpl, dcpl, H5P_DEFAULT) : -1;
    // Small float datasets get values (NaN and Inf included) from the input.
    if (ds >= 0 && rank && !zero && H5Tget_class(type) == H5T_FLOAT) {
        hssize_t np = H5Sget_simple_extent_npoints(sp);
        if (np > 0 && np <= 4096) {
            float *v = malloc((size_t)np * sizeof(float));
            for (hssize_t k = 0; k < np; k++) {
                uint32_t b = (uint32_t)u8(in) << 24 | (uint32_t)u8(in) << 16;
                memcpy(&v[k], &b, 4);
            }
            H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
            free(v);
        }
    }
    if (ds >= 0) H5Dclose(ds);
    H5Pclose(lcpl);
    H5Pclose(dcpl);
    if (sp >= 0) H5Sclose(sp);
    H5Tclose(type);
}

// Root attribute `name`: absent, int64, double (any bits: NaN, Inf),
// uint64, a string (fixed or variable length, up to 600 bytes), a 2-array.
static void attribute(hid_t f, const char *name, In *in) {
    unsigned kind = u8(in) % 7;
    if (kind == 0) return;
    hid_t sp = H5Screate(H5S_SCALAR), type;
    uint64_t raw = 0;
    char str[601];
    const char *vstr = str;
    const void *buf = &raw;
    if (kind == 1 || kind == 2 || kind == 3) {
        // Small values are the interesting ones for sizes: bias towards them.
        raw = (u8(in) & 1) ? u64(in) : (uint64_t)(int64_t)(int8_t)u8(in);
        type = H5Tcopy(kind == 1 ? H5T_NATIVE_INT64 : kind == 2 ? H5T_NATIVE_DOUBLE : H5T_NATIVE_UINT64);
        if (kind == 2 && (u8(in) & 1)) { double x = (double)(int64_t)raw; memcpy(&raw, &x, 8); }
    } else if (kind == 4 || kind == 5) {
        unsigned len = u8(in);
        if (len >= 250) len = 600;
        for (unsigned k = 0; k < len; k++) str[k] = (char)(u8(in) % 64 + 44); // ',' .. 'k'
        str[len] = 0;
        type = H5Tcopy(H5T_C_S1);
        if (kind == 4) H5Tset_size(type, len + 1), buf = str;
        else H5Tset_size(type, H5T_VARIABLE), buf = &vstr;
    } else {
        H5Sclose(sp);
        hsize_t two = 2;
        sp = H5Screate_simple(1, &two, NULL);
        static const int64_t pair[2] = {4, 8};
        type = H5Tcopy(H5T_NATIVE_INT64);
        buf = pair;
    }
    hid_t a = H5Acreate2(f, name, type, sp, H5P_DEFAULT, H5P_DEFAULT);
    if (a >= 0) {
        H5Awrite(a, type, buf);
        H5Aclose(a);
    }
    H5Tclose(type);
    H5Sclose(sp);
}

static void fuzz_cache(const char *path, In *in) {
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) abort();
    hsize_t good[4] = {dim(in), dim(in), dim(in), dim(in)};
    dataset(f, "mean", in, 4, good);
    dataset(f, "logvar", in, 4, good);
    if (u8(in) & 1) dataset(f, "labels", in, 1, good);
    static const char *names[] = {"scale_factor", "image_size", "in_channels", "source", "vae_hash"};
    for (int k = 0; k < 5; k++) attribute(f, names[k], in);
    H5Fclose(f);
    LatentCache c;
    if (latent_cache_open(&c, path) != 0) return;
    size_t item = (size_t)c.Z * c.h * c.w;
    if (item <= 4096) { // a plausibly small item: read the first one back
        float *m = malloc(item * sizeof(float)), *l = malloc(item * sizeof(float));
        int32_t lab;
        latent_cache_read(&c, 0, 1, m, l, &lab);
        free(m), free(l);
    }
    latent_cache_close(&c);
}

static void fuzz_ckpt(const char *path, In *in) {
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) abort();
    static const char *names[] = {"kind", "step", "in_channels", "image_size", "base_channels",
                                  "latent_channels", "kl_weight", "latent_size", "num_res_blocks",
                                  "num_heads", "temb_dim", "time_dim", "channel_mult",
                                  "attn_resolutions"};
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) attribute(f, names[k], in);
    // The tensors of a two-entry table: model/a (2, 3), model/b (4).
    hsize_t a_dims[2] = {2, 3}, b_dims[1] = {4};
    if (u8(in) & 3) {
        dataset(f, "model/a", in, 2, a_dims);
        if (u8(in) & 3) dataset(f, "model/b", in, 1, b_dims);
    }
    H5Fclose(f);
    Attrs a;
    if (ckpt_read_attrs(path, NULL, &a) == 0) {
        VaeConfig vc;
        UNetConfig uc;
        vae_config_from_attrs(&vc, &a, path);
        unet_config_from_attrs(&uc, &a, path);
    }
    ParamTable t;
    params_init(&t);
    params_add(&t, "a", 2, (int[]){2, 3}, 0);
    params_add(&t, "b", 1, (int[]){4}, 0);
    float out[10];
    ckpt_read_group(path, &t, "model", out);
    params_free(&t);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    static int init = 0;
    if (!init) {
        // HDF5 keeps library state (open-object lists, free lists) for the
        // whole process; ASan's leak check at exit would report it.
        H5dont_atexit();
        h5_quiet();
        init = 1;
    }
    if (n < 1) return 0;
    In in = {d, n, 1};
    char path[256];
    snprintf(path, sizeof path, "%s/f.h5", fuzz_dir());
    if (d[0] & 1) fuzz_cache(path, &in);
    else fuzz_ckpt(path, &in);
    return 0;
}
