// test_checkpoint.c: checkpoint round trip (bitwise), attributes, and every
// bad-file case returning -1 with a message naming the file (and the tensor
// where there is one), never an HDF5 error stack; plus the crash-safety of
// the atomic write (fault injection: the writer dies mid-write).
#include <hdf5.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint.h"
#include "common.h"
#include "params.h"
#include "rng.h"
#include "testutil.h"
#include "unet_ckpt.h"
#include "vae_ckpt.h"

static char dir[64];

static void path_in_dir(char *out, const char *name) {
    snprintf(out, PATH_MAX, "%s/%s", dir, name);
}

// ---- the test model
static void build_table(ParamTable *t, int head_out, int extra) {
    params_init(t);
    params_add_conv(t, "encoder.0", 3, 8, 3, 0);
    params_add_norm(t, "encoder.1", 8);
    params_add_convT(t, "decoder.0", 8, 3, 4);
    params_add_linear(t, "head", 32, head_out);
    if (extra) {
        int shape[1] = {5};
        params_add(t, "extra.weight", 1, shape, 0.1f);
    }
}

static float *random_buffer(size_t n, uint64_t seed) {
    float *x = xmalloc(n * sizeof(float));
    Rng r;
    rng_init(&r, seed);
    rng_normal_fill(&r, x, n);
    return x;
}

static void make_attrs(Attrs *a) {
    memset(a, 0, sizeof *a);
    attrs_set_str(a, "kind", "vae");
    attrs_set_int(a, "step", 1234);
    attrs_set_int(a, "rng_counter", (int64_t)0xfedcba9876543210ULL); // negative as int64
    attrs_set_double(a, "lr", 2e-4);
    attrs_set_str(a, "data", "data/mnist with spaces, ünïcode");
    attrs_set_int(a, "step", 1235); // overwrite keeps one entry
}

static int same_attrs(const Attrs *a, const Attrs *b) {
    if (a->n != b->n) return 0;
    for (int i = 0; i < a->n; i++) {
        const Attr *x = &a->a[i], *y = attrs_find(b, x->key);
        if (!y || x->type != y->type) return 0;
        if (x->type == ATTR_INT && x->i != y->i) return 0;
        if (x->type == ATTR_DOUBLE && memcmp(&x->d, &y->d, sizeof x->d) != 0) return 0;
        if (x->type == ATTR_STR && strcmp(x->s, y->s) != 0) return 0;
    }
    return 1;
}

static int read_equals(const char *path, const ParamTable *t, const char *group,
                       const float *want) {
    float *got = xmalloc(t->total * sizeof(float));
    memset(got, 0xff, t->total * sizeof(float));
    int ok = ckpt_read_group(path, t, group, got) == 0 &&
             memcmp(got, want, t->total * sizeof(float)) == 0;
    free(got);
    return ok;
}

// Replaces /model/<key> by an int32 dataset of the same shape.
static void make_int_dataset(const char *path, const ParamTable *t, const char *key) {
    const ParamInfo *pi = &t->info[params_find(t, key)];
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    CHECK(f >= 0);
    char name[128];
    snprintf(name, sizeof name, "model/%s", key);
    CHECK(H5Ldelete(f, name, H5P_DEFAULT) >= 0);
    hsize_t dims[PARAM_MAX_DIMS];
    for (int d = 0; d < pi->ndim; d++) dims[d] = (hsize_t)pi->shape[d];
    hid_t sp = H5Screate_simple(pi->ndim, dims, NULL);
    hid_t ds = H5Dcreate2(f, name, H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(ds >= 0);
    int *zeros = xcalloc(pi->size, sizeof(int));
    CHECK(H5Dwrite(ds, H5T_NATIVE_INT, H5S_ALL, H5S_ALL, H5P_DEFAULT, zeros) >= 0);
    free(zeros);
    H5Dclose(ds);
    H5Sclose(sp);
    CHECK(H5Fclose(f) >= 0);
}

// ---- attributes as other tools write them (h5attr.c)

static void put_attr(hid_t f, const char *name, hid_t type, hid_t space, const void *buf) {
    hid_t a = H5Acreate2(f, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(a >= 0 && H5Awrite(a, type, buf) >= 0);
    H5Aclose(a);
    H5Sclose(space);
}

static void put_scalar(hid_t f, const char *name, hid_t type, const void *buf) {
    put_attr(f, name, type, H5Screate(H5S_SCALAR), buf);
}

// A fixed-length string of `width` bytes holding v, padded by `pad`.
static void put_fixed(hid_t f, const char *name, const char *v, size_t width, H5T_str_t pad,
                      H5T_cset_t cset) {
    char *buf = xcalloc(width + 1, 1);
    memcpy(buf, v, strlen(v));
    if (pad == H5T_STR_SPACEPAD) memset(buf + strlen(v), ' ', width - strlen(v));
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, width);
    H5Tset_strpad(t, pad);
    H5Tset_cset(t, cset);
    put_scalar(f, name, t, buf);
    H5Tclose(t);
    free(buf);
}

static void put_vlen(hid_t f, const char *name, const char *v, H5T_cset_t cset) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, cset);
    put_scalar(f, name, t, &v);
    H5Tclose(t);
}

static int int_is(const Attrs *a, const char *key, int64_t v) {
    const Attr *x = attrs_find(a, key);
    return x && x->type == ATTR_INT && x->i == v;
}

static int str_is(const Attrs *a, const char *key, const char *v) {
    const Attr *x = attrs_find(a, key);
    return x && x->type == ATTR_STR && strcmp(x->s, v) == 0;
}

static void test_attr_types(Attrs *back) {
    char path[PATH_MAX];
    path_in_dir(path, "types.h5");
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(f >= 0);
    put_vlen(f, "kind", "vae", H5T_CSET_ASCII);
    int8_t i8 = -5;
    uint8_t u8 = 250;
    int16_t i16 = -300;
    uint16_t u16 = 65535;
    int32_t i32 = -2000000000;
    uint32_t u32 = 4000000000u;
    int64_t i64 = -((int64_t)1 << 62);
    uint64_t u64 = UINT64_MAX;
    float f32 = 1.5f;
    double f64 = -2.25;
    put_scalar(f, "i8", H5T_NATIVE_INT8, &i8);
    put_scalar(f, "u8", H5T_NATIVE_UINT8, &u8);
    // Stored big-endian: HDF5 converts, we must not care.
    hid_t be16 = H5Tcopy(H5T_STD_I16BE);
    hid_t a16 = H5Acreate2(f, "i16be", be16, H5Screate(H5S_SCALAR), H5P_DEFAULT, H5P_DEFAULT);
    CHECK(a16 >= 0 && H5Awrite(a16, H5T_NATIVE_INT16, &i16) >= 0);
    H5Aclose(a16);
    H5Tclose(be16);
    put_scalar(f, "u16", H5T_NATIVE_UINT16, &u16);
    put_scalar(f, "i32", H5T_NATIVE_INT32, &i32);
    put_scalar(f, "u32", H5T_NATIVE_UINT32, &u32);
    put_scalar(f, "i64", H5T_NATIVE_INT64, &i64);
    put_scalar(f, "u64", H5T_NATIVE_UINT64, &u64);
    put_scalar(f, "f32", H5T_NATIVE_FLOAT, &f32);
    put_scalar(f, "f64", H5T_NATIVE_DOUBLE, &f64);
    hsize_t one = 1, two = 2;
    put_attr(f, "one_elem", H5T_NATIVE_DOUBLE, H5Screate_simple(1, &one, NULL), &f64);
    put_attr(f, "pair", H5T_NATIVE_INT64, H5Screate_simple(1, &two, NULL), (int64_t[]){1, 2});
    put_fixed(f, "nullterm", "abc", 8, H5T_STR_NULLTERM, H5T_CSET_ASCII);
    put_fixed(f, "nullpad", "abc", 8, H5T_STR_NULLPAD, H5T_CSET_ASCII);
    put_fixed(f, "spacepad", "abc", 8, H5T_STR_SPACEPAD, H5T_CSET_ASCII);
    put_fixed(f, "exact", "abcd", 4, H5T_STR_NULLPAD, H5T_CSET_ASCII);
    put_fixed(f, "utf8_fixed", "ünï", 12, H5T_STR_NULLPAD, H5T_CSET_UTF8);
    put_vlen(f, "vlen_ascii", "plain", H5T_CSET_ASCII);
    put_vlen(f, "vlen_utf8", "données/ü ☃", H5T_CSET_UTF8);
    put_vlen(f, "vlen_empty", "", H5T_CSET_UTF8);
    char longname[ATTR_KEY_MAX + 8];
    memset(longname, 'k', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    put_scalar(f, longname, H5T_NATIVE_INT8, &i8);
    CHECK(H5Fclose(f) >= 0);

    check_true("attributes written by another tool read", ckpt_read_attrs(path, "vae", back) == 0);
    check_true("integers of every width and sign (int8..uint32, big-endian int16)",
               int_is(back, "i8", -5) && int_is(back, "u8", 250) && int_is(back, "i16be", -300) &&
                   int_is(back, "u16", 65535) && int_is(back, "i32", -2000000000) &&
                   int_is(back, "u32", 4000000000LL) && int_is(back, "i64", i64));
    check_true("uint64 keeps its bits", int_is(back, "u64", -1));
    const Attr *x = attrs_find(back, "f32"), *y = attrs_find(back, "f64"),
               *z = attrs_find(back, "one_elem");
    check_true("float32, float64 and a 1-element array read as doubles",
               x && x->type == ATTR_DOUBLE && x->d == 1.5 && y && y->type == ATTR_DOUBLE &&
                   y->d == -2.25 && z && z->type == ATTR_DOUBLE && z->d == -2.25);
    check_true("fixed strings: NULLTERM, NULLPAD, SPACEPAD, no padding, UTF-8",
               str_is(back, "nullterm", "abc") && str_is(back, "nullpad", "abc") &&
                   str_is(back, "spacepad", "abc") && str_is(back, "exact", "abcd") &&
                   str_is(back, "utf8_fixed", "ünï"));
    check_true("variable-length strings: ASCII, UTF-8 (h5py's str), empty",
               str_is(back, "vlen_ascii", "plain") && str_is(back, "vlen_utf8", "données/ü ☃") &&
                   str_is(back, "vlen_empty", ""));
    const Attr *p = attrs_find(back, "pair");
    check_true("an array attribute is recorded as ATTR_OTHER; a name too long is skipped",
               p && p->type == ATTR_OTHER && !attrs_find(back, longname));
    int64_t iv;
    capture_begin();
    int rc = attrs_get_int(back, path, "pair", &iv);
    capture_end();
    check_error("attrs_get_int on an array attribute", rc, path, "'pair' is not an integer");
    unlink(path);
}

// Strings are never truncated: ATTR_STR_MAX - 1 (4095) bytes round-trip,
// one more is refused on set and on read.
static void test_attr_long_strings(const ParamTable *t, const float *model, Attrs *back) {
    char path[PATH_MAX];
    path_in_dir(path, "long.h5");
    char *s = xmalloc(ATTR_STR_MAX + 2);
    memset(s, 'p', ATTR_STR_MAX + 1);
    s[ATTR_STR_MAX - 1] = '\0';
    Attrs *a = xcalloc(1, sizeof *a);
    CHECK(attrs_set_str(a, "kind", "vae") == 0);
    check_true("attrs_set_str of 4095 characters", attrs_set_str(a, "data", s) == 0);
    CkptBuffers only = {model, NULL, NULL, NULL};
    CHECK(ckpt_write(path, t, only, a) == 0);
    check_true("a 4095-character attribute round-trips whole",
               ckpt_read_attrs(path, "vae", back) == 0 && str_is(back, "data", s));
    s[ATTR_STR_MAX - 1] = 'p';
    s[ATTR_STR_MAX] = '\0';
    capture_begin();
    int rc = attrs_set_str(a, "data", s);
    capture_end();
    check_error("attrs_set_str of 4096 characters", rc, "'data'", "4095");
    s[ATTR_STR_MAX - 1] = '\0';
    check_true("  ... leaves the previous value", str_is(a, "data", s) && a->n == 2);
    s[ATTR_STR_MAX - 1] = 'p';

    for (int vlen = 0; vlen < 2; vlen++) {
        hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
        CHECK(f >= 0);
        put_vlen(f, "kind", "vae", H5T_CSET_UTF8);
        if (vlen) put_vlen(f, "data", s, H5T_CSET_UTF8);
        else put_fixed(f, "data", s, ATTR_STR_MAX + 100, H5T_STR_NULLPAD, H5T_CSET_ASCII);
        CHECK(H5Fclose(f) >= 0);
        capture_begin();
        rc = ckpt_read_attrs(path, "vae", back);
        capture_end();
        check_error(vlen ? "reading a variable-length string of 4096 characters"
                          : "reading a fixed string of 4096 characters (4196 wide)",
                     rc, path, "'data'");
    }
    free(a);
    free(s);
    unlink(path);
}

// ---- the validation table

static void test_specs(void) {
    const char *p = "cfg.h5";
    Attrs *a = xcalloc(1, sizeof *a);
    attrs_set_int(a, "batch", 16);
    attrs_set_int(a, "step", (int64_t)1 << 40);
    attrs_set_double(a, "lr", 2e-4);
    attrs_set_int(a, "lr_int", 1);
    attrs_set_double(a, "ema", 0.999);
    attrs_set_double(a, "one", 1.0);
    attrs_set_double(a, "nan", NAN);
    attrs_set_double(a, "inf", INFINITY);
    attrs_set_double(a, "neg", -1e-9);
    attrs_set_double(a, "huge", 1e300);
    attrs_set_int(a, "seed", (int64_t)1 << 31);
    CHECK(attrs_set_str(a, "hash", "0123456789abcdef") == 0);
    int batch = 0, opt = 7, ival = 0;
    int64_t step = 0;
    double lr = 0, lr_int = 0, ema = 0, dval = 0;
    float kw = 0;
    char hash[17] = "", sval[32];
    const AttrSpec good[] = {
        {"batch", SPEC_INT, 1, 65536, &batch, 0},
        {"step", SPEC_INT64, 0, INFINITY, &step, 0},
        {"lr", SPEC_DOUBLE, 0, INFINITY, &lr, SPEC_GT_LO},
        {"lr_int", SPEC_DOUBLE, 0, INFINITY, &lr_int, SPEC_GT_LO},
        {"ema", SPEC_DOUBLE, 0, 1, &ema, SPEC_LT_HI},
        {"one", SPEC_FLOAT, 0, INFINITY, &kw, 0},
        {"hash", SPEC_STR, 16, 16, hash, 0},
        {"absent", SPEC_INT, 1, 10, &opt, SPEC_OPTIONAL},
    };
    check_true("attrs_read_specs: a valid table reads every value",
               attrs_read_specs(a, p, good, 8) == 0 && batch == 16 && step == (int64_t)1 << 40 &&
                   lr == 2e-4 && lr_int == 1.0 && ema == 0.999 && kw == 1.0f &&
                   !strcmp(hash, "0123456789abcdef") && opt == 7);
    struct {
        const char *what;
        AttrSpec spec;
        const char *needle; // besides the file and the attribute
    } bad[] = {
        {"missing", {"nope", SPEC_INT, 1, 10, &ival, 0}, "missing attribute 'nope' (expected an integer in [1, 10])"},
        {"out of range", {"batch", SPEC_INT, 1, 8, &ival, 0}, "is 16, expected an integer in [1, 8]"},
        {"int64 into int", {"step", SPEC_INT, -INFINITY, INFINITY, &ival, 0}, "[-2147483648, 2147483647]"},
        {"2^31 into int", {"seed", SPEC_INT, 0, INFINITY, &ival, 0}, "is 2147483648, expected an integer in [0, 2147483647]"},
        {"a double for an integer", {"lr", SPEC_INT64, 1, 10, &step, 0}, "is a floating-point number, expected an integer"},
        {"a string for a number", {"hash", SPEC_DOUBLE, 0, 1, &dval, 0}, "is a string, expected a number in [0, 1]"},
        {"a number for a string", {"lr", SPEC_STR, 0, 31, sval, 0}, "expected a string of at most 31 characters"},
        {"NaN", {"nan", SPEC_DOUBLE, -INFINITY, INFINITY, &dval, 0}, "is nan, expected a finite number"},
        {"Inf", {"inf", SPEC_DOUBLE, 0, INFINITY, &dval, 0}, "is inf, expected a finite number >= 0"},
        {"negative for > 0", {"neg", SPEC_DOUBLE, 0, INFINITY, &dval, SPEC_GT_LO}, "expected a finite number > 0"},
        {"1 for > 1", {"one", SPEC_DOUBLE, 1, INFINITY, &dval, SPEC_GT_LO}, "is 1, expected a finite number > 1"},
        {"1 for [0, 1)", {"one", SPEC_DOUBLE, 0, 1, &dval, SPEC_LT_HI}, "expected a number in [0, 1)"},
        {"beyond float", {"huge", SPEC_FLOAT, 0, INFINITY, &kw, 0}, "is 1e+300, expected a finite single-precision number >= 0"},
        {"string length", {"hash", SPEC_STR, 8, 8, sval, 0}, "is a string of 16 characters, expected a string of 8 characters"},
        {"optional but mistyped", {"hash", SPEC_INT, 1, 10, &ival, SPEC_OPTIONAL}, "is a string"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        capture_begin();
        int rc = attrs_read_specs(a, p, &bad[k].spec, 1);
        capture_end();
        char what[96], key[64];
        snprintf(what, sizeof what, "attrs_read_specs: %s", bad[k].what);
        snprintf(key, sizeof key, "%s: ", p);
        check_error(what, rc, key, bad[k].needle);
    }
    free(a);
}

// NaN, negative and huge values of each attribute a model configuration
// reads: refused, naming the file and the attribute.
static void test_config_values(void) {
    const char *p = "model.h5";
    Attrs *good = xcalloc(1, sizeof *good), *a = xmalloc(sizeof *a);
    VaeConfig vc;
    vae_config_default(&vc);
    vae_config_to_attrs(&vc, good);
    check_true("vae_config_from_attrs: the default configuration reads back",
               vae_config_from_attrs(&vc, good, p) == 0);
    UNetConfig uc;
    unet_config_default(&uc);
    Attrs *ugood = xcalloc(1, sizeof *ugood);
    unet_config_to_attrs(&uc, ugood);
    check_true("unet_config_from_attrs: the default configuration reads back",
               unet_config_from_attrs(&uc, ugood, p) == 0);
    const char *keys[] = {"in_channels", "image_size", "base_channels", "latent_channels",
                          "kl_weight", "latent_size", "num_res_blocks", "num_heads", "temb_dim",
                          "time_dim"};
    int fails = 0, n = 0;
    for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
        // A key both models have (latent_channels, base_channels) is tried on both.
        for (int model = 0; model < 2; model++) {
            const Attrs *base = model == 0 ? good : ugood;
            if (!attrs_find(base, keys[k])) continue;
            for (int v = 0; v < 4; v++) {
                *a = *base;
                if (v == 0) attrs_set_double(a, keys[k], NAN);
                else if (v == 1) attrs_set_int(a, keys[k], -1);
                else if (v == 2) attrs_set_int(a, keys[k], (int64_t)1 << 40);
                else attrs_set_double(a, keys[k], 1e300);
                capture_begin();
                int rc = model == 0 ? vae_config_from_attrs(&vc, a, p)
                                    : unet_config_from_attrs(&uc, a, p);
                const char *captured = capture_end();
                char needle[64];
                snprintf(needle, sizeof needle, "'%s'", keys[k]);
                n++;
                if (!(rc == -1 && strstr(captured, p) && strstr(captured, needle))) {
                    fails++;
                    printf("     %s %s value %d: rc %d, message %s", model ? "unet" : "vae",
                           keys[k], v, rc, captured);
                }
            }
        }
    }
    char what[128];
    snprintf(what, sizeof what, "NaN, -1, 2^40 and 1e300 for each configuration attribute: "
             "%d of %d refused naming file and attribute", n - fails, n);
    check_true(what, fails == 0);
    free(good), free(ugood), free(a);
}

int main(void) {
    h5_quiet();
    snprintf(dir, sizeof dir, "/tmp/ldm_test_ckpt_XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    char good[PATH_MAX], other[PATH_MAX], bad[PATH_MAX];
    path_in_dir(good, "good.h5");

    ParamTable t;
    build_table(&t, 10, 0);
    float *model = random_buffer(t.total, 1), *m = random_buffer(t.total, 2);
    float *v = random_buffer(t.total, 3), *ema = random_buffer(t.total, 4);
    // Adam's second moment is never negative (ckpt_read_group refuses it).
    for (size_t i = 0; i < t.total; i++) v[i] = fabsf(v[i]);
    Attrs attrs, back;
    make_attrs(&attrs);
    check_true("attrs: setting an existing key overwrites it",
               attrs.n == 5 && attrs_find(&attrs, "step")->i == 1235);

    // ---- round trip
    CkptBuffers all = {model, m, v, ema};
    check_true("ckpt_write (model, optim/m, optim/v, ema)",
               ckpt_write(good, &t, all, &attrs) == 0);
    char tmp[PATH_MAX];
    tmp_path_for(tmp, sizeof tmp, good);
    check_true("no temporary file left behind", access(tmp, F_OK) != 0);
    check_true("ckpt_read_attrs (expecting vae)", ckpt_read_attrs(good, "vae", &back) == 0);
    check_true("attributes read back identical (int64, double, utf-8 string)",
               same_attrs(&attrs, &back));
    check_true("ckpt_read_attrs (any kind)", ckpt_read_attrs(good, NULL, &back) == 0);
    check_true("/model bitwise identical", read_equals(good, &t, "model", model));
    check_true("/optim/m bitwise identical", read_equals(good, &t, "optim/m", m));
    check_true("/optim/v bitwise identical", read_equals(good, &t, "optim/v", v));
    check_true("/ema bitwise identical", read_equals(good, &t, "ema", ema));
    check_true("ckpt_has_group: model, optim, optim/m, optim/v, ema",
               ckpt_has_group(good, "model") == 1 && ckpt_has_group(good, "optim") == 1 &&
                   ckpt_has_group(good, "optim/m") == 1 &&
                   ckpt_has_group(good, "optim/v") == 1 && ckpt_has_group(good, "ema") == 1);
    check_true("ckpt_has_group: absent group, dataset path -> 0",
               ckpt_has_group(good, "nothere") == 0 &&
                   ckpt_has_group(good, "nothere/m") == 0 &&
                   ckpt_has_group(good, "model/head.weight") == 0);

    // ---- attribute getters
    int64_t iv;
    double dv;
    char sv[64];
    check_true("attrs_get_int step",
               attrs_get_int(&back, good, "step", &iv) == 0 && iv == 1235);
    check_true("attrs_get_int keeps uint64 bits",
               attrs_get_int(&back, good, "rng_counter", &iv) == 0 &&
                   (uint64_t)iv == 0xfedcba9876543210ULL);
    check_true("attrs_get_double lr",
               attrs_get_double(&back, good, "lr", &dv) == 0 && dv == 2e-4);
    check_true("attrs_get_double accepts an integer",
               attrs_get_double(&back, good, "step", &dv) == 0 && dv == 1235.0);
    check_true("attrs_get_str kind",
               attrs_get_str(&back, good, "kind", sv, sizeof sv) == 0 &&
                   strcmp(sv, "vae") == 0);
    capture_begin();
    int rc = attrs_get_int(&back, good, "nope", &iv);
    capture_end();
    check_error("attrs_get_int missing key", rc, good, "nope");
    capture_begin();
    rc = attrs_get_int(&back, good, "kind", &iv);
    capture_end();
    check_error("attrs_get_int on a string", rc, "kind", NULL);
    capture_begin();
    rc = attrs_get_str(&back, good, "data", sv, 8);
    capture_end();
    check_error("attrs_get_str too small a buffer", rc, "data", NULL);

    test_attr_types(&back);
    test_attr_long_strings(&t, model, &back);
    test_specs();
    test_config_values();

    // ---- optional groups omitted
    char small[PATH_MAX];
    path_in_dir(small, "model_only.h5");
    CkptBuffers only = {model, NULL, NULL, NULL};
    check_true("ckpt_write model only", ckpt_write(small, &t, only, &attrs) == 0);
    check_true("model-only file has no optim or ema group",
               ckpt_has_group(small, "optim") == 0 &&
                   ckpt_has_group(small, "optim/m") == 0 &&
                   ckpt_has_group(small, "ema") == 0 &&
                   read_equals(small, &t, "model", model));
    float *scratch = xmalloc(t.total * sizeof(float));
    capture_begin();
    rc = ckpt_read_group(small, &t, "ema", scratch);
    capture_end();
    check_error("reading an absent group", rc, small, "/ema");

    // ---- hash
    char h1[17], h2[17], h3[17];
    params_hash(h1, &t, model);
    params_hash(h2, &t, model);
    model[7] = nextafterf(model[7], 1e30f);
    params_hash(h3, &t, model);
    model[7] = nextafterf(model[7], -1e30f);
    printf("     params_hash %s\n", h1);
    check_true("params_hash: 16 hex digits, stable, changes with one ulp",
               strlen(h1) == 16 && strspn(h1, "0123456789abcdef") == 16 &&
                   strcmp(h1, h2) == 0 && strcmp(h1, h3) != 0);

    // ---- bad files
    capture_begin();
    rc = ckpt_read_attrs(good, "unet", &back);
    capture_end();
    check_error("kind mismatch", rc, "is a vae checkpoint, expected a unet checkpoint", good);

    path_in_dir(other, "does_not_exist.h5");
    capture_begin();
    rc = ckpt_read_attrs(other, "vae", &back);
    capture_end();
    check_error("missing file (read_attrs)", rc, other, NULL);
    capture_begin();
    rc = ckpt_read_group(other, &t, "model", scratch);
    capture_end();
    check_error("missing file (read_group)", rc, other, NULL);
    capture_begin();
    rc = ckpt_has_group(other, "model");
    capture_end();
    check_error("missing file (has_group)", rc, other, NULL);

    path_in_dir(bad, "truncated.h5");
    const double fracs[] = {0.5, 0.01, 0.9, 0.999};
    for (int i = 0; i < 4; i++) {
        char what[96];
        copy_file_prefix(bad, good, fracs[i]);
        capture_begin();
        rc = ckpt_read_attrs(bad, "vae", &back);
        capture_end();
        snprintf(what, sizeof what, "file truncated to %.1f%% (read_attrs)", 100 * fracs[i]);
        check_error(what, rc, bad, "not a readable HDF5");
        capture_begin();
        rc = ckpt_read_group(bad, &t, "model", scratch);
        capture_end();
        snprintf(what, sizeof what, "file truncated to %.1f%% (read_group)", 100 * fracs[i]);
        check_error(what, rc, bad, NULL);
    }

    path_in_dir(bad, "not_hdf5.h5");
    const char *text = "this is not an HDF5 file\n";
    write_file(bad, text, strlen(text));
    capture_begin();
    rc = ckpt_read_attrs(bad, NULL, &back);
    capture_end();
    check_error("non-HDF5 file", rc, bad, "not a readable HDF5");

    path_in_dir(bad, "empty.h5");
    write_file(bad, "", 0);
    capture_begin();
    rc = ckpt_read_group(bad, &t, "model", scratch);
    capture_end();
    check_error("empty file", rc, bad, NULL);

    // An HDF5 file without our attributes.
    path_in_dir(bad, "foreign.h5");
    hid_t hf = H5Fcreate(bad, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    CHECK(hf >= 0 && H5Fclose(hf) >= 0);
    capture_begin();
    rc = ckpt_read_attrs(bad, NULL, &back);
    capture_end();
    check_error("HDF5 file without 'kind'", rc, bad, "kind");

    // A different model configuration: one shape changed, one tensor added.
    ParamTable t2;
    build_table(&t2, 11, 0);
    float *scratch2 = xmalloc(t2.total * sizeof(float));
    capture_begin();
    rc = ckpt_read_group(good, &t2, "model", scratch2);
    capture_end();
    check_error("changed shape", rc, "head.weight", "(10, 32), expected (11, 32)");
    free(scratch2);
    params_free(&t2);
    build_table(&t2, 10, 1);
    scratch2 = xmalloc(t2.total * sizeof(float));
    capture_begin();
    rc = ckpt_read_group(good, &t2, "model", scratch2);
    capture_end();
    check_error("tensor missing from the file", rc, "extra.weight", good);
    // The other way round: the file holds a tensor this model does not have.
    float *big = random_buffer(t2.total, 99);
    path_in_dir(bad, "extra_tensor.h5");
    CHECK(ckpt_write(bad, &t2, (CkptBuffers){big, NULL, NULL, NULL}, &attrs) == 0);
    capture_begin();
    rc = ckpt_read_group(bad, &t, "model", scratch);
    capture_end();
    check_error("extra tensor in the file", rc, bad, "holds 9 tensors, this model has 8");
    free(big);
    free(scratch2);
    params_free(&t2);

    path_in_dir(bad, "int_dataset.h5");
    CHECK(ckpt_write(bad, &t, all, &attrs) == 0);
    make_int_dataset(bad, &t, "encoder.0.bias");
    capture_begin();
    rc = ckpt_read_group(bad, &t, "model", scratch);
    capture_end();
    check_error("int dataset", rc, "encoder.0.bias", "not a float");
    check_true("the int dataset only spoils /model",
               read_equals(bad, &t, "optim/m", m));

    // ---- write failure: directory does not exist
    path_in_dir(bad, "no/such/dir/ckpt.h5");
    capture_begin();
    rc = ckpt_write(bad, &t, all, &attrs);
    capture_end();
    check_error("write into a missing directory", rc, bad, NULL);

    // ---- the writer is killed mid-write: the old checkpoint survives
    float *model2 = random_buffer(t.total, 99);
    Attrs attrs2 = attrs;
    attrs_set_int(&attrs2, "step", 99999);
    fflush(stdout);
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        setenv("LDM_FAULT_CKPT_ABORT", "1", 1);
        CkptBuffers b2 = {model2, m, v, ema};
        ckpt_write(good, &t, b2, &attrs2);
        _exit(0); // only reached if the hook did not fire
    }
    int status = 0;
    CHECK(waitpid(child, &status, 0) == child);
    check_true("fault-injected writer died with status 3 mid-write",
               WIFEXITED(status) && WEXITSTATUS(status) == 3);
    char child_tmp[PATH_MAX + 32];
    snprintf(child_tmp, sizeof child_tmp, "%s.tmp.%d", good, (int)child);
    struct stat st;
    check_true("it left a partial temporary file", stat(child_tmp, &st) == 0);
    capture_begin();
    rc = ckpt_read_group(child_tmp, &t, "model", scratch);
    capture_end();
    check_error("reading the dead writer's partial file", rc, child_tmp, NULL);
    unlink(child_tmp);
    check_true("after the crash: attributes unchanged",
               ckpt_read_attrs(good, "vae", &back) == 0 && same_attrs(&attrs, &back));
    check_true("after the crash: all groups bitwise identical",
               read_equals(good, &t, "model", model) && read_equals(good, &t, "optim/m", m) &&
                   read_equals(good, &t, "optim/v", v) && read_equals(good, &t, "ema", ema));
    // And the same write without the fault replaces it.
    CkptBuffers b2 = {model2, m, v, ema};
    check_true("a normal overwrite replaces the checkpoint",
               ckpt_write(good, &t, b2, &attrs2) == 0 &&
                   read_equals(good, &t, "model", model2) &&
                   ckpt_read_attrs(good, "vae", &back) == 0 &&
                   attrs_find(&back, "step")->i == 99999);

    // Keep the directory for manual inspection only on request.
    if (!getenv("LDM_KEEP_TEST_FILES")) {
        CHECK(remove_tree(dir) == 0);
    } else {
        printf("     test files kept in %s\n", dir);
    }
    free(model), free(m), free(v), free(ema), free(model2), free(scratch);
    params_free(&t);
    return test_summary("test_checkpoint");
}
