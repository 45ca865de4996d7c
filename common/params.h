// params.h: a model's parameters as one table of named, shaped slices of one
// float allocation. Names are the keys of the PyTorch mirror's state_dict()
// (tests/reference/mirror.py), so checkpoints and goldens line up by name.
// Parameters, gradients and each optimizer moment are separate allocations of
// `total` floats that share the same offsets.
#pragma once
#include <stddef.h>

#define PARAM_NAME_MAX 96
#define PARAM_MAX_DIMS 4

typedef struct {
    char name[PARAM_NAME_MAX];
    int ndim;
    int shape[PARAM_MAX_DIMS];
    size_t offset; // in floats, into every buffer of the table
    size_t size;   // product of shape
    // PyTorch's default init for this tensor: uniform in +-bound
    // (bound = 0 means "initialise to zero", as the spec asks for some convs).
    float init_bound;
} ParamInfo;

typedef struct {
    int n, cap;
    ParamInfo *info;
    size_t total; // floats
} ParamTable;

void params_init(ParamTable *t);
void params_free(ParamTable *t);
// Adds a tensor; returns its offset. shape has ndim entries.
size_t params_add(ParamTable *t, const char *name, int ndim, const int *shape,
                  float init_bound);
// Index of `name`, or -1.
int params_find(const ParamTable *t, const char *name);

// Convenience for the usual layers; `prefix` is the module's state_dict key
// (e.g. "encoder.0"). Each returns the offset of the weight; the bias follows
// the weight directly. PyTorch default bounds: 1/sqrt(fan_in) (both the
// kaiming-uniform(a=sqrt(5)) weight bound and the bias bound).
size_t params_add_conv(ParamTable *t, const char *prefix, int cin, int cout,
                       int k, int zero_init);
// ConvTranspose2d weight (cin, cout, k, k); PyTorch's fan_in is cout*k*k.
size_t params_add_convT(ParamTable *t, const char *prefix, int cin, int cout,
                        int k);
size_t params_add_linear(ParamTable *t, const char *prefix, int in, int out);
// GroupNorm: weight ones, bias zeros (init_bound encodes: see params.c).
size_t params_add_norm(ParamTable *t, const char *prefix, int c);

struct Rng;
// Fills `p` with PyTorch-default-style init, tensor by tensor in table order.
void params_init_values(const ParamTable *t, float *p, struct Rng *rng);
