// featnet.c: loading the feature networks, their shared preprocessing, and
// the Fashion-MNIST classifier (tests/reference/fmnist_classifier.py's
// Classifier; Inception-v3 is inception.c).
//
// Images go through the network in chunks of a fixed number, so every buffer
// is allocated once at load whatever B, H and W a call brings: the resize
// writes straight into a (chunk, C, S, S) buffer at the network's side S,
// and channels are converted after it (resizing is linear per channel, so
// the mean of resized channels is the resized mean, up to rounding).
#include "featnet.h"

#include <hdf5.h>
#include <string.h>

#include "checkpoint.h"
#include "common.h"
#include "h5attr.h"
#include "inception.h"
#include "layers.h"
#include "params.h"
#include "paths.h"
#include "pool.h"

#define FM_SIDE 32     // the classifier's input side: three 2x2 pools to 4x4
#define FM_CHUNK 64    // images per classifier forward
#define INC_SIDE INCEPTION_SIZE
#define INC_CHUNK 16   // images per Inception forward
#define WIDTH_MAX 4096 // channels or features a layer may declare
#define HASH_GROUP "model"

struct FmnistNet {
    int c1, c2, c3, F, K; // conv widths, features, logits
    ParamTable t;
    float *p;                  // (t.total) conv1..conv3, fc1, fc2 as in the file
    float *prep[3];            // Winograd-transformed conv weights, or NULL
    float *act;                // (FM_CHUNK, max c x side^2) a conv's output
    float *pooled;             // (FM_CHUNK, max c x (side/2)^2) after its pool
    float *scratch;            // conv2d scratch
};

struct FeatBufs {
    int chunk;
    float *rs; // (chunk, 3, S, S) the chunk resized to the network's side
    float *in; // (chunk, in_c, S, S) the network's input
};

// ------------------------------------------------------------ the classifier

// Output channels of the 4-d conv or 2-d linear weight /model/<key>, which
// declares a width of the network; the loader then checks every tensor's
// whole shape against the widths.
static int declared_width(hid_t file, const char *path, const char *key, int ndim, int *out) {
    char name[PARAM_NAME_MAX + 8];
    snprintf(name, sizeof name, HASH_GROUP "/%s", key);
    if (H5Lexists(file, HASH_GROUP, H5P_DEFAULT) <= 0 || H5Lexists(file, name, H5P_DEFAULT) <= 0)
        return errorf("%s: tensor %s is missing from /model", path, key);
    hid_t d = H5Dopen2(file, name, H5P_DEFAULT);
    hid_t space = d >= 0 ? H5Dget_space(d) : -1;
    hsize_t dims[H5S_MAX_RANK];
    int got = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
    int rc = 0;
    if (got < 0 || H5Sget_simple_extent_dims(space, dims, NULL) < 0)
        rc = errorf("%s: /model/%s is not a readable dataset", path, key);
    else if (got != ndim)
        rc = errorf("%s: /model/%s has %d dimensions, expected %d", path, key, got, ndim);
    else if (dims[0] < 1 || dims[0] > WIDTH_MAX)
        rc = errorf("%s: /model/%s declares %llu outputs; at most %d", path, key,
                    (unsigned long long)dims[0], WIDTH_MAX);
    else
        *out = (int)dims[0];
    if (space >= 0) H5Sclose(space);
    if (d >= 0) H5Dclose(d);
    return rc;
}

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

static int fmnist_load(FmnistNet **out, hid_t file, const char *path) {
    FmnistNet *n = xcalloc(1, sizeof *n);
    *out = n;
    if (declared_width(file, path, "conv1.weight", 4, &n->c1) ||
        declared_width(file, path, "conv2.weight", 4, &n->c2) ||
        declared_width(file, path, "conv3.weight", 4, &n->c3) ||
        declared_width(file, path, "fc1.weight", 2, &n->F) ||
        declared_width(file, path, "fc2.weight", 2, &n->K))
        return -1;
    const int c[4] = {1, n->c1, n->c2, n->c3};
    ParamTable *t = &n->t;
    params_init(t);
    params_add_conv(t, "conv1", c[0], c[1], 3, 0);
    params_add_conv(t, "conv2", c[1], c[2], 3, 0);
    params_add_conv(t, "conv3", c[2], c[3], 3, 0);
    params_add_linear(t, "fc1", c[3] * (FM_SIDE / 8) * (FM_SIDE / 8), n->F);
    params_add_linear(t, "fc2", n->F, n->K);
    n->p = xmalloc(t->total * sizeof(float));
    // Shapes, float type, finite values, and no tensor beyond these.
    if (ckpt_read_group(path, t, "model", n->p)) return -1;
    size_t scratch = 0, act = 0, pooled = 0;
    for (int l = 0, side = FM_SIDE; l < 3; l++, side /= 2) {
        const float *w = n->p + t->info[2 * l].offset;
        size_t np = conv2d_prep_floats(c[l], c[l + 1], 3, 1, 1);
        if (np) {
            n->prep[l] = xmalloc(np * sizeof(float));
            conv2d_prep(n->prep[l], w, c[l], c[l + 1], 3, 1, 1);
        }
        scratch = max_sz(scratch, conv2d_scratch_floats(FM_CHUNK, c[l], side, side, c[l + 1],
                                                        3, 1, 1));
        act = max_sz(act, (size_t)c[l + 1] * side * side);
        pooled = max_sz(pooled, (size_t)c[l + 1] * (side / 2) * (side / 2));
    }
    n->act = xmalloc(FM_CHUNK * act * sizeof(float));
    n->pooled = xmalloc(FM_CHUNK * pooled * sizeof(float));
    n->scratch = xmalloc(max_sz(scratch, 1) * sizeof(float));
    return 0;
}

static void fmnist_free(FmnistNet *n) {
    if (!n) return;
    params_free(&n->t);
    free(n->p);
    for (int l = 0; l < 3; l++) free(n->prep[l]);
    free(n->act);
    free(n->pooled);
    free(n->scratch);
    free(n);
}

// x (B, 1, 32, 32), B <= FM_CHUNK -> feat (B, F), logits (B, K) or NULL.
static void fmnist_forward(FmnistNet *n, float *feat, float *logits, const float *x, int B) {
    CHECK(B <= FM_CHUNK);
    const int c[4] = {1, n->c1, n->c2, n->c3};
    const ParamInfo *pi = n->t.info;
    const float *in = x; // (B, c[l], side, side)
    for (int l = 0, side = FM_SIDE; l < 3; l++, side /= 2) {
        const float *w = n->p + pi[2 * l].offset, *b = n->p + pi[2 * l + 1].offset;
        // act (B, c[l+1], side, side)
        conv2d_forward_prep(n->act, in, w, n->prep[l], b, B, c[l], side, side, c[l + 1], 3, 1,
                            1, n->scratch);
        relu_forward(n->act, n->act, (size_t)B * c[l + 1] * side * side);
        // pooled (B, c[l+1], side/2, side/2)
        maxpool2d_forward(n->pooled, n->act, B, c[l + 1], side, side, 2, 2, 0);
        in = n->pooled;
    }
    // PyTorch's flatten(1) of (B, c3, 4, 4) is this memory order already.
    linear_forward(feat, n->pooled, n->p + pi[6].offset, n->p + pi[7].offset, B,
                   c[3] * (FM_SIDE / 8) * (FM_SIDE / 8), n->F);
    relu_forward(feat, feat, (size_t)B * n->F);
    if (logits)
        linear_forward(logits, feat, n->p + pi[8].offset, n->p + pi[9].offset, B, n->F, n->K);
}

// ------------------------------------------------------------ the hash

typedef struct {
    const char *path;
    uint64_t h;
    int failed;
} HashCtx;

// FNV-1a over one dataset: its name, its shape, its values as float32.
static herr_t hash_cb(hid_t g, const char *name, const H5L_info_t *info, void *data) {
    (void)info;
    HashCtx *ctx = data;
    hid_t o = H5Oopen(g, name, H5P_DEFAULT);
    if (o < 0) return 0; // a dangling link holds no weights
    int rc = 0;
    if (H5Iget_type(o) == H5I_DATASET) {
        hid_t space = H5Dget_space(o);
        hsize_t dims[H5S_MAX_RANK];
        int nd = space >= 0 ? H5Sget_simple_extent_ndims(space) : -1;
        size_t count = 1;
        if (nd < 0 || H5Sget_simple_extent_dims(space, dims, NULL) < 0) {
            rc = -1;
        } else {
            for (int k = 0; k < nd; k++) count *= (size_t)dims[k];
            // The loaders have checked every tensor they use; this bounds
            // ones they do not (a network's largest tensor is 2048 x 2048 x 3 x 3).
            if (count > ((size_t)1 << 28)) rc = -1;
        }
        if (!rc) {
            uint64_t d64[H5S_MAX_RANK];
            for (int k = 0; k < nd; k++) d64[k] = dims[k];
            float *v = xmalloc(max_sz(count, 1) * sizeof(float));
            if (H5Dread(o, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0) {
                rc = -1;
            } else {
                ctx->h = fnv1a64(ctx->h, name, strlen(name) + 1);
                ctx->h = fnv1a64(ctx->h, d64, (size_t)nd * sizeof *d64);
                ctx->h = fnv1a64(ctx->h, v, count * sizeof(float));
            }
            free(v);
        }
        if (space >= 0) H5Sclose(space);
        if (rc) {
            errorf("%s: cannot read /%s/%s as float32 weights", ctx->path, HASH_GROUP, name);
            ctx->failed = 1;
        }
    }
    H5Oclose(o);
    return rc ? -1 : 0;
}

// Hash of the network's weights: FNV-1a over every dataset under /model in
// name order (recursively), each as name, shape and float32 values, so any
// change of a value, a shape or a name gives another hash.
static int weights_hash(char out[17], hid_t file, const char *path) {
    HashCtx ctx = {path, FNV_OFFSET, 0};
    hid_t g = H5Gopen2(file, HASH_GROUP, H5P_DEFAULT);
    if (g < 0) return errorf("%s: has no group /%s", path, HASH_GROUP);
    herr_t it = H5Lvisit(g, H5_INDEX_NAME, H5_ITER_INC, hash_cb, &ctx);
    H5Gclose(g);
    if (it < 0) return ctx.failed ? -1 : errorf("%s: cannot list /%s", path, HASH_GROUP);
    snprintf(out, 17, "%016llx", (unsigned long long)ctx.h);
    return 0;
}

// ------------------------------------------------------------ the interface

int featnet_load(FeatNet *f, const char *path) {
    h5_quiet();
    memset(f, 0, sizeof *f);
    const char *why;
    if (regular_file(path, &why)) return errorf("%s: cannot open the network: %s", path, why);
    // Strong close, as checkpoint.c opens files: HDF5 refuses a second open
    // of one file with another close degree (ckpt_read_group opens it again).
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    CHECK(fapl >= 0 && H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) >= 0);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (file < 0)
        return errorf("%s: not a readable HDF5 file (not HDF5, truncated or corrupt)", path);
    static const char *const keys[] = {"kind"};
    Attrs *a = xcalloc(1, sizeof *a); // large: see h5attr.h
    int rc = attrs_read_h5(file, path, keys, 1, a);
    const Attr *kind = rc ? NULL : attrs_find(a, "kind");
    if (!rc && (!kind || kind->type != ATTR_STR))
        rc = errorf("%s: not a feature network (no string attribute 'kind')", path);
    int S = 0;
    if (!rc && strcmp(kind->s, "fmnist-cnn") == 0) {
        rc = fmnist_load(&f->fm, file, path);
        if (!rc) {
            strcpy(f->name, "fmnist-cnn");
            f->dim = f->fm->F;
            f->n_logits = f->fm->K;
            f->in_c = 1;
            S = f->in_size = FM_SIDE;
            snprintf(f->preprocess, sizeof f->preprocess,
                     "[-1,1]; other sides bilinear to %dx%d (align_corners=False, no "
                     "antialias), then RGB to grey as the channel mean", S, S);
        }
    } else if (!rc && strcmp(kind->s, "inception-fid") == 0) {
        rc = inception_load(&f->inc, file, path);
        if (!rc) {
            strcpy(f->name, "inception-fid");
            f->dim = inception_dim(f->inc);
            f->n_logits = inception_logits(f->inc);
            f->in_c = 3;
            S = f->in_size = INC_SIDE;
            snprintf(f->preprocess, sizeof f->preprocess,
                     "[-1,1]; other sides bilinear to %dx%d (align_corners=False, no "
                     "antialias), then grey replicated to RGB", S, S);
        }
    } else if (!rc) {
        rc = errorf("%s: kind '%s' is not a feature network (inception-fid or fmnist-cnn)",
                    path, kind->s);
    }
    if (!rc) rc = weights_hash(f->hash, file, path);
    free(a);
    H5Fclose(file);
    if (rc) {
        featnet_free(f);
        return -1;
    }
    FeatBufs *b = xcalloc(1, sizeof *b);
    b->chunk = f->fm ? FM_CHUNK : INC_CHUNK;
    b->rs = xmalloc((size_t)b->chunk * 3 * S * S * sizeof(float));
    b->in = xmalloc((size_t)b->chunk * f->in_c * S * S * sizeof(float));
    f->bufs = b;
    return 0;
}

void featnet_free(FeatNet *f) {
    fmnist_free(f->fm);
    if (f->inc) inception_free(f->inc);
    if (f->bufs) {
        free(f->bufs->rs);
        free(f->bufs->in);
        free(f->bufs);
    }
    memset(f, 0, sizeof *f);
}

// x (B, C, H, W) -> the network's input (B, in_c, S, S), B <= chunk; returns
// x itself when it is that already.
static const float *preprocess(FeatNet *f, const float *x, int B, int C, int H, int W) {
    const int S = f->in_size, oc = f->in_c;
    const size_t SS = (size_t)S * S;
    if (H != S || W != S) {
        resize_bilinear_forward(f->bufs->rs, x, B, C, H, W, S, S); // (B, C, S, S)
        x = f->bufs->rs;
    }
    if (C == oc) return x;
    float *in = f->bufs->in; // (B, oc, S, S)
    #pragma omp parallel for schedule(static)
    for (int b = 0; b < B; b++) {
        const float *src = x + (size_t)b * C * SS;
        float *dst = in + (size_t)b * oc * SS;
        if (oc == 3) // grey -> RGB
            for (int c = 0; c < 3; c++) memcpy(dst + c * SS, src, SS * sizeof(float));
        else // RGB -> grey, as x.mean(dim=1)
            for (size_t i = 0; i < SS; i++)
                dst[i] = (src[i] + src[SS + i] + src[2 * SS + i]) / 3.0f;
    }
    return in;
}

void featnet_forward(FeatNet *f, float *feat, float *logits, const float *img, int B, int C,
                     int H, int W) {
    CHECK((C == 1 || C == 3) && H >= 1 && W >= 1 && B >= 0);
    const int chunk = f->bufs->chunk;
    const size_t img_sz = (size_t)C * H * W;
    for (int b0 = 0; b0 < B; b0 += chunk) {
        int nb = B - b0 < chunk ? B - b0 : chunk;
        const float *x = preprocess(f, img + b0 * img_sz, nb, C, H, W);
        float *fo = feat + (size_t)b0 * f->dim;
        float *lo = logits ? logits + (size_t)b0 * f->n_logits : NULL;
        if (f->fm)
            fmnist_forward(f->fm, fo, lo, x, nb);
        else
            inception_forward(f->inc, fo, lo, x, nb);
    }
}
