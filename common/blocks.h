// blocks.h: the residual and attention blocks both stages build from: the
// UNet's ResBlock/Attn (diffusion/unet.c) and latent-diffusion's
// ResnetBlock/AttnBlock (vae/kl.c). One code for both; what differs is a
// BlockStyle (GroupNorm groups and eps, which convs start at zero, two key
// names) and whether a ResBlock takes a time input.
//
// A block records its parameters' offsets in a ParamTable (weight offset; the
// bias follows the weight) and points into activation memory carved for
// `B` items by *_carve(). `work` is caller-owned scratch of *_work_floats().
#pragma once
#include <stddef.h>

#include "params.h"

// Lays out one allocation as named buffers: with base NULL it only counts
// (`used`), so a model sizes its allocation with the same code that carves it.
typedef struct {
    float *base;
    size_t used;
} Carver;

float *carve(Carver *c, size_t n);

// "<prefix>.<name>" (just name for an empty prefix) into out[PARAM_NAME_MAX].
void param_key(char *out, const char *prefix, const char *name);

typedef struct {
    int groups;           // GroupNorm groups of every norm; 0: groupnorm_groups(C)
    double eps;           // GroupNorm eps
    int zero_init;        // the last conv of each block (ResBlock conv2, Attn's
                          // output projection) starts at zero
    const char *skip_key; // ResBlock's 1x1 conv on the residual when cin != cout
    const char *proj_key; // Attn's output projection
} BlockStyle;

// ResBlock(cin -> cout) at H x W: h = conv1(SiLU(GN(x))) [+ temb_proj(temb_act)
// broadcast over H, W]; out = conv2(SiLU(GN(h))) + (x or skip(x)).
// temb_dim 0: no time input (no temb_proj key; temb_act and dtemb_act NULL).
// Keys: norm1, conv1, temb_proj, norm2, conv2, <skip_key>.
typedef struct {
    int cin, cout, H, W, temb_dim, g1, g2; // g1, g2: GroupNorm groups
    double eps;
    size_t norm1, conv1, temb_proj, norm2, conv2, skip; // skip: cin != cout
    // saved activations (B items)
    float *act1;               // (B, cin, H, W): SiLU(GN(x)); GN(x) is recomputed
    float *mean1, *rstd1;      // (B, g1)
    float *h1;                 // (B, cout, H, W): conv1 (+ temb projection)
    float *tproj;              // (B, cout); NULL without a time input
    float *act2;               // (B, cout, H, W): SiLU(GN(h1))
    float *mean2, *rstd2;      // (B, g2)
    // conv1's and conv2's prepared weights (conv2d_prep) while the model's
    // weights are fixed, else NULL
    const float *prep1, *prep2;
} ResBlock;

void resblock_params_style(ResBlock *r, ParamTable *t, const char *prefix, int cin,
                           int cout, int H, int W, int temb_dim, const BlockStyle *st);
size_t resblock_acts_floats(const ResBlock *r, int B);
void resblock_carve(ResBlock *r, float *acts, int B);
size_t resblock_work_floats(const ResBlock *r, int B);
// out (B, cout, H, W) must not alias x (B, cin, H, W). B may be below the
// carved batch.
void resblock_forward(ResBlock *r, float *out, const float *x, const float *temb_act,
                      const float *params, int B, float *work);
// Accumulates into dx, dtemb_act and grads.
void resblock_backward(const ResBlock *r, float *dx, float *dtemb_act, float *grads,
                       const float *dout, const float *x, const float *temb_act,
                       const float *params, int B, float *work);

// Attn(C): x + proj(attention(q, k, v of GN(x))), `heads` heads.
// Keys: norm, q, k, v, <proj_key>.
typedef struct {
    int C, H, W, heads, g;
    double eps;
    size_t norm, q, k, v, proj;
    float *gn, *q_, *k_, *v_, *a; // (B, C, H, W); a: attention output
    float *mean, *rstd;           // (B, g)
    float *att;                   // (B, heads, HW, HW) softmax probabilities
} AttnBlock;

void attnblock_params_style(AttnBlock *a, ParamTable *t, const char *prefix, int C,
                            int H, int W, int heads, const BlockStyle *st);
size_t attnblock_acts_floats(const AttnBlock *a, int B);
void attnblock_carve(AttnBlock *a, float *acts, int B);
size_t attnblock_work_floats(const AttnBlock *a, int B);
// out must not alias x; both (B, C, H, W).
void attnblock_forward(AttnBlock *a, float *out, const float *x, const float *params,
                       int B, float *work);
// Accumulates into dx and grads.
void attnblock_backward(const AttnBlock *a, float *dx, float *grads, const float *dout,
                        const float *x, const float *params, int B, float *work);
