// fuzz_h5: the shape, dtype and attribute checks of the latent-cache and
// checkpoint readers. The input is NOT handed to HDF5 as file bytes (HDF5
// itself crashes on crafted files); it is a recipe that this harness turns
// into a valid HDF5 file through the HDF5 API. The first byte picks one of:
// - a cache: datasets of fuzzed rank, dimensions (small, zero or huge;
//   chunked, contiguous or deflated, huge ones never written so that their
//   declarations cost nothing), dtype and values, attributes of fuzzed type
//   and value, through latent_cache_open/read/read_items;
// - a checkpoint built from scratch the same way, through ckpt_read_attrs,
//   vae_config_from_attrs, unet_config_from_attrs and ckpt_read_group;
// - a real VAE or UNet checkpoint (a tiny model, written once) with fuzzed
//   mutations - attributes deleted or replaced, tensors replaced by fuzzed
//   datasets or deleted - through ckpt_read_attrs, the configuration
//   readers and vae_load/unet_load.
#include <hdf5.h>
#include <stdint.h>

#include "checkpoint.h"
#include "fuzz_util.h"
#include "latent_cache.h"
#include "rng.h"
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
    unsigned form = u8(in);
    int layout = (form >> 2) % 3; // chunked, contiguous, chunked and deflated
    if (fix && (form & 3)) {
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
    if (rank && !zero && layout != 1) H5Pset_chunk(dcpl, rank, chunk);
    if (rank && !zero && layout == 2) H5Pset_deflate(dcpl, 1);
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
    // Small integer datasets (labels) get raw bytes: any value of the type.
    if (ds >= 0 && rank && !zero && H5Tget_class(type) == H5T_INTEGER) {
        hssize_t np = H5Sget_simple_extent_npoints(sp);
        size_t sz = H5Tget_size(type);
        if (np > 0 && np <= 4096) {
            uint8_t *v = malloc((size_t)np * sz);
            for (size_t k = 0; k < (size_t)np * sz; k++) v[k] = (uint8_t)u8(in);
            H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, v);
            free(v);
        }
    }
    if (ds >= 0) H5Dclose(ds);
    H5Pclose(lcpl);
    H5Pclose(dcpl);
    if (sp >= 0) H5Sclose(sp);
    H5Tclose(type);
}

// Root attribute `name` (replacing one of that name): absent, int64, double
// (any bits: NaN, Inf), uint64, a string (fixed or variable length, up to
// 600 bytes, or 4095 and 4096: the longest held and the shortest refused),
// a 2-array.
static void attribute(hid_t f, const char *name, In *in) {
    if (H5Aexists(f, name) > 0) H5Adelete(f, name);
    unsigned kind = u8(in) % 7;
    if (kind == 0) return;
    hid_t sp = H5Screate(H5S_SCALAR), type;
    uint64_t raw = 0;
    static char str[ATTR_STR_MAX + 1];
    const char *vstr = str;
    const void *buf = &raw;
    if (kind == 1 || kind == 2 || kind == 3) {
        // Small values are the interesting ones for sizes: bias towards them.
        raw = (u8(in) & 1) ? u64(in) : (uint64_t)(int64_t)(int8_t)u8(in);
        type = H5Tcopy(kind == 1 ? H5T_NATIVE_INT64 : kind == 2 ? H5T_NATIVE_DOUBLE : H5T_NATIVE_UINT64);
        if (kind == 2 && (u8(in) & 1)) { double x = (double)(int64_t)raw; memcpy(&raw, &x, 8); }
    } else if (kind == 4 || kind == 5) {
        unsigned len = u8(in);
        if (len >= 250) len = len == 255 ? ATTR_STR_MAX : len == 254 ? ATTR_STR_MAX - 1 : 600;
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
    if (item <= 4096) { // a plausibly small item: read the ends back
        float *m = malloc(3 * item * sizeof(float)), *l = malloc(3 * item * sizeof(float));
        int32_t lab[3];
        latent_cache_read(&c, 0, 1, m, l, lab);
        int n = c.N < 3 ? (int)c.N : 3;
        latent_cache_read(&c, c.N - n, n, m, l, lab);
        int64_t idx[3] = {c.N - 1, 0, c.N - 1};
        latent_cache_read_items(&c, idx, 3, m, l, (u8(in) & 1) ? lab : NULL);
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
    static Attrs a;
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

// ---- mutated real checkpoints

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

static char good_vae[256], good_unet[256];

// The tiny models' checkpoints, with optimizer moments and (UNet) EMA.
static void write_good_checkpoints(void) {
    Rng r;
    rng_init(&r, 1);
    static Attrs a;
    snprintf(good_vae, sizeof good_vae, "%s/vae.h5", fuzz_dir());
    VaeConfig vc = tiny_vae();
    Vae v;
    vae_init(&v, &vc, 1);
    params_init_values(&v.table, v.params, &r);
    memset(&a, 0, sizeof a);
    if (attrs_set_str(&a, "kind", "vae")) abort();
    attrs_set_int(&a, "step", 1);
    vae_config_to_attrs(&vc, &a);
    if (ckpt_write(good_vae, &v.table, (CkptBuffers){v.params, v.params, v.params, NULL}, &a))
        abort();
    vae_free(&v);
    snprintf(good_unet, sizeof good_unet, "%s/unet.h5", fuzz_dir());
    UNetConfig uc = tiny_unet();
    UNet u;
    unet_init(&u, &uc, 1);
    params_init_values(&u.table, u.params, &r);
    memset(&a, 0, sizeof a);
    if (attrs_set_str(&a, "kind", "unet")) abort();
    attrs_set_int(&a, "step", 1);
    unet_config_to_attrs(&uc, &a);
    if (ckpt_write(good_unet, &u.table, (CkptBuffers){u.params, u.params, u.params, u.params}, &a))
        abort();
    unet_free(&u);
}

static void copy_file(const char *from, const char *to) {
    FILE *i = fopen(from, "rb");
    if (!i) abort();
    static unsigned char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, i), total = n;
    FILE *o = fopen(to, "wb");
    if (!o) abort();
    while (n > 0) {
        if (fwrite(buf, 1, n, o) != n) abort();
        n = fread(buf, 1, sizeof buf, i);
        total += n;
    }
    fclose(i);
    if (fclose(o) != 0 || total == 0) abort();
}

// The loaders allocate what a valid configuration declares once its widths
// match the file's tensors (and its first activation fits in physical
// memory); the fuzzer's 2 GiB limit is below that, so only small models are
// loaded. Their attributes and configurations are fuzzed whatever the size.
static int small_vae(const VaeConfig *c) {
    return c->image_size <= 64 && c->base_channels <= 64 && c->latent_channels <= 64;
}

static int small_unet(const UNetConfig *c) {
    int widest = 1;
    for (int l = 0; l < c->num_levels; l++)
        if (c->channel_mult[l] > widest) widest = c->channel_mult[l];
    return c->latent_size <= 32 && c->base_channels * widest <= 256 && c->latent_channels <= 64 &&
           c->temb_dim <= 1024 && c->time_dim <= 1024 && c->num_res_blocks <= 4;
}

static void fuzz_mutated(const char *path, In *in, int is_unet) {
    static const char *vae_keys[] = {"kind", "step", "in_channels", "image_size",
                                     "base_channels", "latent_channels", "kl_weight", "model"};
    static const char *unet_keys[] = {"kind", "step", "latent_channels", "latent_size",
                                      "base_channels", "channel_mult", "num_res_blocks",
                                      "attn_resolutions", "num_heads", "temb_dim", "time_dim"};
    static const char *groups[] = {"model", "optim/m", "optim/v", "ema"};
    const char *const *keys = is_unet ? unet_keys : vae_keys;
    int nkeys = is_unet ? (int)(sizeof unet_keys / sizeof *unet_keys)
                        : (int)(sizeof vae_keys / sizeof *vae_keys);
    ParamTable t;
    VaeConfig vc = tiny_vae();
    UNetConfig uc = tiny_unet();
    Vae v;
    UNet u;
    // The tiny model's table names the tensors to mutate.
    if (is_unet) unet_init(&u, &uc, 1), t = u.table;
    else vae_init(&v, &vc, 1), t = v.table;
    copy_file(is_unet ? good_unet : good_vae, path);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0) abort();
    for (int m = u8(in) % 5; m > 0; m--) {
        unsigned op = u8(in) % 4, which = u8(in);
        const char *key = keys[which % nkeys];
        if (op == 0) {
            if (H5Aexists(f, key) > 0) H5Adelete(f, key);
        } else if (op == 1) {
            attribute(f, key, in);
        } else {
            const ParamInfo *pi = &t.info[which % t.n];
            char name[256];
            snprintf(name, sizeof name, "%s/%s", groups[u8(in) % 4], pi->name);
            if (H5Lexists(f, name, H5P_DEFAULT) > 0) H5Ldelete(f, name, H5P_DEFAULT);
            if (op == 3) {
                hsize_t shape[PARAM_MAX_DIMS];
                for (int k = 0; k < pi->ndim; k++) shape[k] = (hsize_t)pi->shape[k];
                dataset(f, name, in, pi->ndim, shape);
            }
        }
    }
    H5Fclose(f);
    if (is_unet) unet_free(&u);
    else vae_free(&v);

    static Attrs a;
    if (ckpt_read_attrs(path, NULL, &a) != 0) return;
    if (is_unet) {
        if (unet_config_from_attrs(&uc, &a, path) == 0 && small_unet(&uc) &&
            unet_load(&u, path, (u8(in) & 1) ? "ema" : "model", 1, NULL) == 0)
            unet_free(&u);
    } else {
        if (vae_config_from_attrs(&vc, &a, path) == 0 && small_vae(&vc) &&
            vae_load(&v, path, 1, NULL) == 0)
            vae_free(&v);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
    static int init = 0;
    if (!init) {
        // HDF5 keeps library state (open-object lists, free lists) for the
        // whole process; ASan's leak check at exit would report it.
        H5dont_atexit();
        h5_quiet();
        write_good_checkpoints();
        init = 1;
    }
    if (n < 1) return 0;
    In in = {d, n, 1};
    char path[256];
    snprintf(path, sizeof path, "%s/f.h5", fuzz_dir());
    switch (d[0] % 4) {
    case 0: fuzz_ckpt(path, &in); break;
    case 1: fuzz_cache(path, &in); break;
    default: fuzz_mutated(path, &in, d[0] % 4 == 3); break;
    }
    return 0;
}
