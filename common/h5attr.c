// h5attr.c: the attribute list, its HDF5 reading and writing, and the
// validation table (see h5attr.h).
#include "h5attr.h"

#include <float.h>
#include <hdf5.h>
#include <math.h>
#include <string.h>

#include "common.h"

// A fixed-length string attribute larger than this is refused before its
// bytes are read: its declared size is a file's claim, not a value.
#define FIXED_STR_READ_MAX ((size_t)1 << 24)

void h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

// ---------------------------------------------------------------- the list

// The slot for `key` (existing or new), reset to `type`.
static Attr *attrs_slot(Attrs *a, const char *key, AttrType type) {
    CHECK(strlen(key) < ATTR_KEY_MAX);
    Attr *x = (Attr *)attrs_find(a, key);
    if (!x) {
        CHECK(a->n < ATTRS_MAX);
        x = &a->a[a->n++];
        strcpy(x->key, key);
    }
    x->type = type;
    x->i = 0;
    x->d = 0.0;
    x->s[0] = '\0';
    return x;
}

void attrs_set_int(Attrs *a, const char *key, int64_t v) {
    attrs_slot(a, key, ATTR_INT)->i = v;
}

void attrs_set_double(Attrs *a, const char *key, double v) {
    attrs_slot(a, key, ATTR_DOUBLE)->d = v;
}

int attrs_set_str(Attrs *a, const char *key, const char *v) {
    size_t len = strlen(v);
    if (len >= ATTR_STR_MAX)
        return errorf("attribute '%s': value of %zu characters is longer than the %d "
                      "an attribute holds", key, len, ATTR_STR_MAX - 1);
    memcpy(attrs_slot(a, key, ATTR_STR)->s, v, len + 1);
    return 0;
}

const Attr *attrs_find(const Attrs *a, const char *key) {
    for (int i = 0; i < a->n; i++)
        if (strcmp(a->a[i].key, key) == 0) return &a->a[i];
    return NULL;
}

static const Attr *attrs_need(const Attrs *a, const char *path, const char *key) {
    const Attr *x = attrs_find(a, key);
    if (!x) errorf("%s: missing attribute '%s'", path, key);
    return x;
}

int attrs_get_int(const Attrs *a, const char *path, const char *key, int64_t *v) {
    const Attr *x = attrs_need(a, path, key);
    if (!x) return -1;
    if (x->type != ATTR_INT)
        return errorf("%s: attribute '%s' is not an integer", path, key);
    *v = x->i;
    return 0;
}

int attrs_get_double(const Attrs *a, const char *path, const char *key, double *v) {
    const Attr *x = attrs_need(a, path, key);
    if (!x) return -1;
    // An integer is a fine double (a file written by Python may say lr=1).
    if (x->type == ATTR_INT) {
        *v = (double)x->i;
        return 0;
    }
    if (x->type != ATTR_DOUBLE)
        return errorf("%s: attribute '%s' is not a number", path, key);
    *v = x->d;
    return 0;
}

int attrs_get_str(const Attrs *a, const char *path, const char *key, char *v, int cap) {
    const Attr *x = attrs_need(a, path, key);
    if (!x) return -1;
    if (x->type != ATTR_STR)
        return errorf("%s: attribute '%s' is not a string", path, key);
    size_t len = strlen(x->s);
    if (len >= (size_t)cap)
        return errorf("%s: attribute '%s' is too long (%zu characters, at most %d)",
                      path, key, len, cap - 1);
    memcpy(v, x->s, len + 1);
    return 0;
}

// ---------------------------------------------------------------- reading

// Reads a string attribute of type `type` (fixed or variable length) into
// out[ATTR_STR_MAX]. -1 with a message if it does not fit or cannot be read.
static int read_string(hid_t a, hid_t type, const char *path, const char *name, char *out) {
    size_t len = 0;
    int rc = -1, too_long = 0;
    if (H5Tis_variable_str(type) > 0) {
        // The memory type keeps the file's character set: HDF5 does not
        // convert between ASCII and UTF-8.
        hid_t mt = H5Tcopy(H5T_C_S1);
        char *s = NULL;
        if (mt >= 0 && H5Tset_size(mt, H5T_VARIABLE) >= 0 &&
            H5Tset_cset(mt, H5Tget_cset(type)) >= 0 && H5Aread(a, mt, &s) >= 0) {
            len = s ? strlen(s) : 0;
            too_long = len >= ATTR_STR_MAX;
            if (!too_long) memcpy(out, s ? s : "", len + 1);
            rc = 0;
        }
        if (s) H5free_memory(s);
        if (mt >= 0) H5Tclose(mt);
    } else {
        size_t sz = H5Tget_size(type);
        if (sz > FIXED_STR_READ_MAX) {
            len = sz;
            too_long = 1;
            rc = 0;
        } else if (sz > 0) {
            // Read with the file's own type (no conversion), then strip the
            // padding: NULLTERM and NULLPAD end at the first NUL, SPACEPAD
            // with trailing spaces.
            char *buf = xmalloc(sz + 1);
            if (H5Aread(a, type, buf) >= 0) {
                buf[sz] = '\0';
                len = strlen(buf);
                if (H5Tget_strpad(type) == H5T_STR_SPACEPAD)
                    while (len > 0 && buf[len - 1] == ' ') len--;
                too_long = len >= ATTR_STR_MAX;
                if (!too_long) {
                    memcpy(out, buf, len);
                    out[len] = '\0';
                }
                rc = 0;
            }
            free(buf);
        }
    }
    if (rc < 0) return errorf("%s: cannot read attribute '%s'", path, name);
    if (too_long)
        return errorf("%s: attribute '%s' is longer than %d characters (%zu)", path, name,
                      ATTR_STR_MAX - 1, len);
    return 0;
}

// Reads attribute `a` named `name` of type `type` and `space` into x.
static int read_value(hid_t a, hid_t type, hid_t space, const char *path,
                      const char *name, Attr *x) {
    H5S_class_t sc = H5Sget_simple_extent_type(space);
    hssize_t npts = H5Sget_simple_extent_npoints(space);
    if (!((sc == H5S_SCALAR || sc == H5S_SIMPLE) && npts == 1)) return 0;
    herr_t rc = 0;
    switch (H5Tget_class(type)) {
    case H5T_INTEGER:
        // Wider than 64 bits would be clipped by the conversion: not ours.
        if (H5Tget_size(type) > 8) return 0;
        // Unsigned 64-bit values (an RNG state written by another tool) keep
        // their bits rather than being clipped to INT64_MAX.
        if (H5Tget_sign(type) == H5T_SGN_NONE && H5Tget_size(type) == 8) {
            uint64_t u = 0;
            rc = H5Aread(a, H5T_NATIVE_UINT64, &u);
            x->i = (int64_t)u;
        } else {
            rc = H5Aread(a, H5T_NATIVE_INT64, &x->i);
        }
        x->type = ATTR_INT;
        break;
    case H5T_FLOAT:
        rc = H5Aread(a, H5T_NATIVE_DOUBLE, &x->d);
        x->type = ATTR_DOUBLE;
        break;
    case H5T_STRING:
        x->type = ATTR_STR;
        return read_string(a, type, path, name, x->s);
    default:
        return 0;
    }
    if (rc < 0) return errorf("%s: cannot read attribute '%s'", path, name);
    return 0;
}

typedef struct {
    Attrs *attrs;
    const char *path;
    int reported; // a message has been printed
} ReadCtx;

static int read_one(hid_t loc, const char *name, ReadCtx *ctx) {
    if (strlen(name) >= ATTR_KEY_MAX) return 0; // not one of ours
    if (ctx->attrs->n == ATTRS_MAX && !attrs_find(ctx->attrs, name)) {
        ctx->reported = 1;
        return errorf("%s: more than %d root attributes", ctx->path, ATTRS_MAX);
    }
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    hid_t space = a >= 0 ? H5Aget_space(a) : -1, type = a >= 0 ? H5Aget_type(a) : -1;
    int rc;
    if (space < 0 || type < 0)
        rc = errorf("%s: cannot read attribute '%s'", ctx->path, name);
    else
        rc = read_value(a, type, space, ctx->path, name, attrs_slot(ctx->attrs, name, ATTR_OTHER));
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
    if (a >= 0) H5Aclose(a);
    if (rc < 0) ctx->reported = 1;
    return rc;
}

static herr_t read_cb(hid_t loc, const char *name, const H5A_info_t *info, void *data) {
    (void)info;
    return read_one(loc, name, data) < 0 ? -1 : 0;
}

int attrs_read_h5(int64_t loc, const char *path, const char *const *keys, int nkeys,
                  Attrs *out) {
    memset(out, 0, sizeof *out);
    ReadCtx ctx = {out, path, 0};
    if (keys) {
        for (int k = 0; k < nkeys; k++) {
            htri_t has = H5Aexists(loc, keys[k]);
            if (has < 0) return errorf("%s: cannot read attribute '%s'", path, keys[k]);
            if (has > 0 && read_one(loc, keys[k], &ctx) < 0) return -1;
        }
        return 0;
    }
    hsize_t idx = 0;
    herr_t it = H5Aiterate2(loc, H5_INDEX_NAME, H5_ITER_INC, &idx, read_cb, &ctx);
    // A failing callback has printed its message; a failing iteration
    // itself (a corrupt attribute table) has not.
    if (it < 0 && !ctx.reported) return errorf("%s: cannot read the attributes", path);
    return it < 0 ? -1 : 0;
}

// ---------------------------------------------------------------- writing

// One scalar attribute: int64, float64, or a variable-length UTF-8 string.
static int write_attr(hid_t loc, const Attr *a) {
    hid_t ftype, mtype;
    const void *buf;
    const char *s = a->s;
    switch (a->type) {
    case ATTR_INT:
        ftype = H5Tcopy(H5T_STD_I64LE);
        mtype = H5Tcopy(H5T_NATIVE_INT64);
        buf = &a->i;
        break;
    case ATTR_DOUBLE:
        ftype = H5Tcopy(H5T_IEEE_F64LE);
        mtype = H5Tcopy(H5T_NATIVE_DOUBLE);
        buf = &a->d;
        break;
    case ATTR_STR:
        ftype = H5Tcopy(H5T_C_S1);
        if (ftype >= 0 && (H5Tset_size(ftype, H5T_VARIABLE) < 0 ||
                           H5Tset_cset(ftype, H5T_CSET_UTF8) < 0)) {
            H5Tclose(ftype);
            return -1;
        }
        mtype = ftype >= 0 ? H5Tcopy(ftype) : -1;
        buf = &s;
        break;
    default:
        return 0; // read from a file but holding no value: nothing to write
    }
    hid_t space = H5Screate(H5S_SCALAR);
    int rc = -1;
    if (ftype >= 0 && mtype >= 0 && space >= 0) {
        hid_t attr = H5Acreate2(loc, a->key, ftype, space, H5P_DEFAULT, H5P_DEFAULT);
        if (attr >= 0) {
            if (H5Awrite(attr, mtype, buf) >= 0) rc = 0;
            if (H5Aclose(attr) < 0) rc = -1;
        }
    }
    if (ftype >= 0) H5Tclose(ftype);
    if (mtype >= 0) H5Tclose(mtype);
    if (space >= 0) H5Sclose(space);
    return rc;
}

int attrs_write_h5(int64_t loc, const Attrs *a) {
    for (int i = 0; i < a->n; i++)
        if (write_attr(loc, &a->a[i]) < 0) return -1;
    return 0;
}

// ---------------------------------------------------------------- validation

static const char *kind_name(AttrType t) {
    switch (t) {
    case ATTR_INT: return "an integer";
    case ATTR_DOUBLE: return "a floating-point number";
    case ATTR_STR: return "a string";
    default: return "not a single integer, number or string";
    }
}

static int64_t to_int64(double x) {
    if (x <= -0x1p63) return INT64_MIN;
    if (x >= 0x1p63) return INT64_MAX;
    return (int64_t)x;
}

// The inclusive integer range of an integer spec, within its C type.
static void int_range(const AttrSpec *s, int64_t *lo, int64_t *hi) {
    *lo = to_int64((s->flags & SPEC_GT_LO) ? floor(s->lo) + 1 : ceil(s->lo));
    *hi = to_int64((s->flags & SPEC_LT_HI) ? ceil(s->hi) - 1 : floor(s->hi));
    if (s->type == SPEC_INT) {
        if (*lo < INT_MIN) *lo = INT_MIN;
        if (*hi > INT_MAX) *hi = INT_MAX;
    }
}

// The range of a floating-point spec, within its C type (always finite).
static void real_range(const AttrSpec *s, double *lo, double *hi) {
    double max = s->type == SPEC_FLOAT ? FLT_MAX : DBL_MAX;
    *lo = s->lo < -max ? -max : s->lo;
    *hi = s->hi > max ? max : s->hi;
}

// What the spec allows, in words: "an integer in [1, 4096]", "a finite
// number > 0", "a string of 16 characters".
static void describe(const AttrSpec *s, char *out, size_t cap) {
    switch (s->type) {
    case SPEC_INT:
    case SPEC_INT64: {
        int64_t lo, hi;
        int_range(s, &lo, &hi);
        if (hi == INT64_MAX && lo == INT64_MIN)
            snprintf(out, cap, "an integer");
        else if (hi == INT64_MAX)
            snprintf(out, cap, "an integer >= %lld", (long long)lo);
        else
            snprintf(out, cap, "an integer in [%lld, %lld]", (long long)lo, (long long)hi);
        break;
    }
    case SPEC_FLOAT:
    case SPEC_DOUBLE: {
        // An unbounded float spec is still bounded by float's range.
        const char *num = s->type == SPEC_FLOAT ? "a finite single-precision number"
                                                : "a finite number";
        const char *gt = (s->flags & SPEC_GT_LO) ? ">" : ">=";
        const char *lt = (s->flags & SPEC_LT_HI) ? "<" : "<=";
        if (!isfinite(s->hi) && !isfinite(s->lo))
            snprintf(out, cap, "%s", num);
        else if (!isfinite(s->hi))
            snprintf(out, cap, "%s %s %g", num, gt, s->lo);
        else if (!isfinite(s->lo))
            snprintf(out, cap, "%s %s %g", num, lt, s->hi);
        else
            snprintf(out, cap, "a number in %c%g, %g%c", (s->flags & SPEC_GT_LO) ? '(' : '[',
                     s->lo, s->hi, (s->flags & SPEC_LT_HI) ? ')' : ']');
        break;
    }
    case SPEC_STR:
        if (s->lo == s->hi)
            snprintf(out, cap, "a string of %.0f characters", s->hi);
        else if (s->lo <= 0)
            snprintf(out, cap, "a string of at most %.0f characters", s->hi);
        else
            snprintf(out, cap, "a string of %.0f to %.0f characters", s->lo, s->hi);
        break;
    }
}

static int read_spec(const Attrs *a, const char *path, const AttrSpec *s) {
    char want[96];
    describe(s, want, sizeof want);
    const Attr *x = attrs_find(a, s->key);
    if (!x) {
        if (s->flags & SPEC_OPTIONAL) return 0;
        return errorf("%s: missing attribute '%s' (expected %s)", path, s->key, want);
    }
    switch (s->type) {
    case SPEC_INT:
    case SPEC_INT64: {
        if (x->type != ATTR_INT)
            return errorf("%s: attribute '%s' is %s, expected %s", path, s->key,
                          kind_name(x->type), want);
        int64_t lo, hi;
        int_range(s, &lo, &hi);
        if (x->i < lo || x->i > hi)
            return errorf("%s: attribute '%s' is %lld, expected %s", path, s->key,
                          (long long)x->i, want);
        if (s->type == SPEC_INT) *(int *)s->out = (int)x->i;
        else *(int64_t *)s->out = x->i;
        return 0;
    }
    case SPEC_FLOAT:
    case SPEC_DOUBLE: {
        if (x->type != ATTR_INT && x->type != ATTR_DOUBLE)
            return errorf("%s: attribute '%s' is %s, expected %s", path, s->key,
                          kind_name(x->type), want);
        double v = x->type == ATTR_INT ? (double)x->i : x->d, lo, hi;
        real_range(s, &lo, &hi);
        int below = (s->flags & SPEC_GT_LO) ? !(v > lo) : !(v >= lo);
        int above = (s->flags & SPEC_LT_HI) ? !(v < hi) : !(v <= hi);
        if (!isfinite(v) || below || above)
            return errorf("%s: attribute '%s' is %.10g, expected %s", path, s->key, v, want);
        if (s->type == SPEC_FLOAT) *(float *)s->out = (float)v;
        else *(double *)s->out = v;
        return 0;
    }
    case SPEC_STR: {
        if (x->type != ATTR_STR)
            return errorf("%s: attribute '%s' is %s, expected %s", path, s->key,
                          kind_name(x->type), want);
        size_t len = strlen(x->s);
        if ((double)len < s->lo || (double)len > s->hi)
            return errorf("%s: attribute '%s' is a string of %zu characters, expected %s",
                          path, s->key, len, want);
        memcpy(s->out, x->s, len + 1);
        return 0;
    }
    }
    CHECK(0 && "unknown SpecType");
    return -1;
}

int attrs_read_specs(const Attrs *a, const char *path, const AttrSpec *s, int n) {
    for (int k = 0; k < n; k++) {
        CHECK(s[k].key && s[k].out && s[k].lo <= s[k].hi);
        if (read_spec(a, path, &s[k]) < 0) return -1;
    }
    return 0;
}
