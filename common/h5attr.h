// h5attr.h: typed root attributes of HDF5 files (checkpoints and latent
// caches), read and written by one module, and the one table that validates
// them (presence, type, range, fit in the C type they are read into).
//
// Reading accepts what other tools write: integers of any width and sign,
// floats of any width, strings fixed or variable length (h5py writes str as
// variable-length UTF-8), ASCII or UTF-8, padded with NULs or spaces. Writing
// produces int64, float64 and variable-length UTF-8 strings (h5py reads them
// as int, float and str). A string is never truncated: one longer than
// ATTR_STR_MAX - 1 bytes is refused with a message.
#pragma once
#include <limits.h>
#include <stdint.h>

// The kind of value an Attr holds. ATTR_OTHER records an attribute that is
// present but not one scalar integer, float or string (an array, an enum, a
// compound), so that a getter can say what is wrong with it rather than
// calling it missing.
typedef enum { ATTR_INT, ATTR_DOUBLE, ATTR_STR, ATTR_OTHER } AttrType;
#define ATTR_KEY_MAX 48
// Any path the OS accepts fits (a data path is the longest value we store).
#define ATTR_STR_MAX PATH_MAX
#define ATTRS_MAX 64
typedef struct {
    char key[ATTR_KEY_MAX];
    AttrType type;
    int64_t i; // unsigned 64-bit values keep their bits (an RNG state)
    double d;
    char s[ATTR_STR_MAX];
} Attr;
// A plain value (no pointers): `Attrs a = {0};` is an empty list and copies
// are independent. It is large (64 x 4 KiB strings): library code keeps it
// on the heap.
typedef struct {
    int n;
    Attr a[ATTRS_MAX];
} Attrs;

void attrs_set_int(Attrs *a, const char *key, int64_t v);
void attrs_set_double(Attrs *a, const char *key, double v);
// Values can come from the user (a data path): one of ATTR_STR_MAX bytes or
// more is not stored (the list is unchanged) and -1 is returned with a
// message naming the attribute.
int attrs_set_str(Attrs *a, const char *key, const char *v);
const Attr *attrs_find(const Attrs *a, const char *key);
// Getters report a missing or mistyped key with a message naming `path`.
// attrs_get_int keeps the bits of an unsigned 64-bit value; attrs_get_double
// accepts an integer.
int attrs_get_int(const Attrs *a, const char *path, const char *key, int64_t *v);
int attrs_get_double(const Attrs *a, const char *path, const char *key, double *v);
int attrs_get_str(const Attrs *a, const char *path, const char *key, char *v, int cap);

// ---- HDF5 (ids are hid_t, spelled int64_t so that this header needs no hdf5.h)

// Reads the attributes of object `loc` (a file id: its root group) into
// `out` (replaced). keys[0..nkeys): only these, so that a file written by
// another tool may carry attributes of its own; keys NULL: all of them.
// Attributes with names of ATTR_KEY_MAX bytes or more are not ours and are
// skipped. A string too long, more than ATTRS_MAX attributes, or an
// unreadable one: -1 with a message naming `path` and the attribute.
int attrs_read_h5(int64_t loc, const char *path, const char *const *keys, int nkeys,
                  Attrs *out);
// Writes every attribute of `a` on `loc` (which must not have them yet).
// -1 on an HDF5 failure (no message: the caller knows what was being written).
int attrs_write_h5(int64_t loc, const Attrs *a);

// Silences HDF5's own error stack printing (we print our own messages). In a
// thread-safe HDF5 the setting is per thread: call it in each thread that
// calls HDF5.
void h5_quiet(void);

// ---- validation table
//
// One entry per attribute to read: its key, the C type of `out`, and the
// allowed range [lo, hi] (exclusive ends by flag). Numbers must be finite;
// an integer attribute is an acceptable floating-point value but not the
// other way round; an integer must also fit the C type of `out`, a float
// value must fit float. For SPEC_STR, lo and hi bound the length in bytes
// and `out` holds hi + 1 bytes. E.g.
//     AttrSpec s[] = {{"batch", SPEC_INT, 1, 65536, &batch, 0},
//                     {"lr", SPEC_DOUBLE, 0, INFINITY, &lr, SPEC_GT_LO},
//                     {"ema_decay", SPEC_DOUBLE, 0, 1, &ema, SPEC_LT_HI},
//                     {"source", SPEC_STR, 0, ATTR_STR_MAX - 1, source, 0}};
typedef enum {
    SPEC_INT,    // int
    SPEC_INT64,  // int64_t
    SPEC_FLOAT,  // float
    SPEC_DOUBLE, // double
    SPEC_STR,    // char[hi + 1]
} SpecType;
enum {
    SPEC_OPTIONAL = 1, // absent: *out keeps its value (a default)
    SPEC_GT_LO = 2,    // value > lo rather than >= lo
    SPEC_LT_HI = 4,    // value < hi rather than <= hi
};
typedef struct {
    const char *key;
    SpecType type;
    double lo, hi;
    void *out;
    int flags;
} AttrSpec;

// Checks and reads s[0..n) from `a` in order; the first failure returns -1
// with a message naming `path`, the attribute and what is allowed (the
// outputs of earlier entries are written by then).
int attrs_read_specs(const Attrs *a, const char *path, const AttrSpec *s, int n);
