#include "params.h"

#include <math.h>
#include <string.h>

#include "common.h"
#include "rng.h"

// init_bound sentinels for GroupNorm affine parameters.
#define INIT_ONES (-1.0f)
#define INIT_ZEROS 0.0f

void params_init(ParamTable *t) { memset(t, 0, sizeof *t); }

void params_free(ParamTable *t) {
    free(t->info);
    memset(t, 0, sizeof *t);
}

size_t params_add(ParamTable *t, const char *name, int ndim, const int *shape,
                  float init_bound) {
    CHECK(ndim >= 1 && ndim <= PARAM_MAX_DIMS);
    CHECK(strlen(name) < PARAM_NAME_MAX);
    CHECK(params_find(t, name) < 0);
    if (t->n == t->cap) {
        t->cap = t->cap ? 2 * t->cap : 64;
        ParamInfo *p = realloc(t->info, (size_t)t->cap * sizeof *p);
        CHECK(p != NULL);
        t->info = p;
    }
    ParamInfo *pi = &t->info[t->n++];
    memset(pi, 0, sizeof *pi);
    strcpy(pi->name, name);
    pi->ndim = ndim;
    pi->size = 1;
    for (int i = 0; i < ndim; i++) {
        CHECK(shape[i] > 0);
        pi->shape[i] = shape[i];
        pi->size *= (size_t)shape[i];
    }
    pi->offset = t->total;
    pi->init_bound = init_bound;
    t->total += pi->size;
    return pi->offset;
}

int params_find(const ParamTable *t, const char *name) {
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->info[i].name, name) == 0) return i;
    return -1;
}

static size_t add2(ParamTable *t, const char *prefix, int ndim,
                   const int *wshape, int nbias, float bound) {
    char name[PARAM_NAME_MAX];
    snprintf(name, sizeof name, "%s.weight", prefix);
    size_t off = params_add(t, name, ndim, wshape, bound);
    snprintf(name, sizeof name, "%s.bias", prefix);
    params_add(t, name, 1, &nbias, bound);
    return off;
}

size_t params_add_conv(ParamTable *t, const char *prefix, int cin, int cout,
                       int k, int zero_init) {
    int shape[4] = {cout, cin, k, k};
    float bound = zero_init ? INIT_ZEROS : 1.0f / sqrtf((float)(cin * k * k));
    return add2(t, prefix, 4, shape, cout, bound);
}

size_t params_add_convT(ParamTable *t, const char *prefix, int cin, int cout,
                        int k) {
    int shape[4] = {cin, cout, k, k};
    return add2(t, prefix, 4, shape, cout, 1.0f / sqrtf((float)(cout * k * k)));
}

size_t params_add_linear(ParamTable *t, const char *prefix, int in, int out) {
    int shape[2] = {out, in};
    return add2(t, prefix, 2, shape, out, 1.0f / sqrtf((float)in));
}

size_t params_add_norm(ParamTable *t, const char *prefix, int c) {
    char name[PARAM_NAME_MAX];
    snprintf(name, sizeof name, "%s.weight", prefix);
    size_t off = params_add(t, name, 1, &c, INIT_ONES);
    snprintf(name, sizeof name, "%s.bias", prefix);
    params_add(t, name, 1, &c, INIT_ZEROS);
    return off;
}

void params_init_values(const ParamTable *t, float *p, Rng *rng) {
    for (int i = 0; i < t->n; i++) {
        const ParamInfo *pi = &t->info[i];
        float *x = p + pi->offset;
        if (pi->init_bound == INIT_ONES) {
            for (size_t j = 0; j < pi->size; j++) x[j] = 1.0f;
        } else if (pi->init_bound == INIT_ZEROS) {
            memset(x, 0, pi->size * sizeof *x);
        } else {
            rng_uniform_fill(rng, x, pi->size, -pi->init_bound, pi->init_bound);
        }
    }
}
