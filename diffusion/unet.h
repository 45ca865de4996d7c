// unet.h: the `unet-s` UNet of ../shared/spec/default-models.md, configurable
// in the usual ldm/ADM way (levels, blocks per level, attention resolutions).
// Parameter keys follow tests/reference/unet_mirror.py's state_dict():
//   time_embed.0, time_embed.2, label_emb (class-conditional only), conv_in,
//   down.<l>.res.<j>.{norm1,conv1,temb_proj,norm2,conv2[,skip]},
//   down.<l>.attn.<j>.{norm,q,k,v,proj}, down.<l>.downsample,
//   mid.res1, mid.attn, mid.res2,
//   up.<u>.res.<j>, up.<u>.attn.<j>, up.<u>.upsample (up.0 runs first: the
//   lowest resolution), out_norm, out_conv.
// The table lists them in state_dict order.
#pragma once
#include <stddef.h>

#include "blocks.h"
#include "params.h"

#define UNET_MAX_LEVELS 8
#define UNET_MAX_RES_BLOCKS 16
// Classes of a conditional UNet: its class table is (K + 1) x temb_dim.
#define UNET_MAX_CLASSES 65536

typedef struct {
    int latent_channels;  // Z: 4
    int latent_size;      // h = w: 8
    int base_channels;    // 64
    int num_levels;       // length of channel_mult: 2
    int channel_mult[UNET_MAX_LEVELS]; // (1, 2)
    int num_res_blocks;   // 2 a level on the way down, one more on the way up
    int num_attn;         // entries in attn_resolutions
    int attn_resolutions[UNET_MAX_LEVELS]; // spatial sides with attention: (4)
    int num_heads;        // 1
    int temb_dim;         // 256
    int time_dim;         // 64: sinusoidal embedding width
    int num_classes;      // K: 0 = unconditional; else a (K + 1) x temb_dim class
                          // table, row K the null class (spec, class-conditional)
} UNetConfig;

void unet_config_default(UNetConfig *c); // the spec's unet-s
// The default levels for latents of side h (ldm-train without --channel-mult
// and --attn-res): multipliers 1, then 2 for each halving while the side is
// above 4 and even, attention at the lowest side: unet-s's (1, 2) with
// attention at 4 on 8x8 latents, (1, 2, 2) with attention at 4 on 16x16.
void unet_config_levels(UNetConfig *c, int h);
// Checks a configuration that came from a user or a file; -1 with a message
// naming `what` (e.g. the checkpoint path) when it cannot be built.
int unet_config_check(const UNetConfig *c, const char *what);

// ---- the UNet's blocks (common/blocks.h) in its style: GroupNorm groups
// groupnorm_groups(C), eps 1e-5; ResBlock conv2 and Attn proj start at zero;
// keys "skip" and "proj". Exposed for tests/test_unet.c.
void resblock_params(ResBlock *r, ParamTable *t, const char *prefix, int cin,
                     int cout, int H, int W, int temb_dim);
void attnblock_params(AttnBlock *a, ParamTable *t, const char *prefix, int C,
                      int H, int W, int heads);

// Time embedding: sinusoid (time_dim), Linear, SiLU, Linear -> temb; on a
// class-conditional UNet the class table's row of each item's label is added
// to temb (spec: after the MLP's last Linear, before any ResBlock uses it).
// The output is SiLU(temb) (B, temb_dim), the form every ResBlock consumes.
typedef struct {
    int time_dim, temb_dim;
    int num_classes;     // K; 0: no class table
    size_t lin1, lin2;
    size_t classes;      // the class table (K + 1, temb_dim), row K the null class
    float *emb;          // (B, time_dim)
    float *h, *hact;     // (B, temb_dim): Linear 1, SiLU of it
    float *temb;         // (B, temb_dim)
    float *dh;           // (B, temb_dim): backward scratch (2 such buffers)
} TimeEmbed;

void time_embed_params(TimeEmbed *te, ParamTable *t, const char *prefix,
                       int time_dim, int temb_dim);
size_t time_embed_acts_floats(const TimeEmbed *te, int B);
// Adds the class table of K classes under `key` (the state_dict's
// "label_emb.weight"). Its init, PyTorch's nn.Embedding N(0, 1), is not a
// kind params_init_values() knows: it leaves the table zero, and
// unet_init_values() fills it.
void time_embed_add_classes(TimeEmbed *te, ParamTable *t, const char *key, int num_classes);
void time_embed_carve(TimeEmbed *te, float *acts, int B);
// y (B) labels in 0..K with a class table, else NULL.
void time_embed_forward(TimeEmbed *te, float *temb_act, const int *t, const int *y,
                        const float *params, int B);
// dtemb_act (B, temb_dim) is d loss / d SiLU(temb); y as for the forward;
// accumulates into grads (a class row once per item that used it, in item
// order).
void time_embed_backward(const TimeEmbed *te, float *grads, const float *dtemb_act,
                         const int *y, const float *params, int B);

// ---- the UNet
typedef struct UNetOp UNetOp; // one step of the layer list (unet.c)

typedef struct {
    UNetConfig cfg;
    int max_batch;
    ParamTable table;
    // (table.total) each. Every call reads u->params afresh, so it may point at
    // an EMA copy for sampling (point it back before unet_free).
    float *params, *grads;
    // Activations for max_batch items: one allocation carved by unet.c into
    // the blocks' saved tensors, the stream tensors between blocks and their
    // gradients, and the buffers below.
    float *acts;
    size_t acts_floats;
    float *work; // scratch shared by every layer
    size_t work_floats;

    // internals (unet.c)
    TimeEmbed te;
    float *temb_act, *dtemb_act;      // (B, temb_dim)
    float *x_in;                      // (B, Z, h, w): the last forward's input
    int *labels;                      // (max_batch) its class labels (num_classes > 0)
    size_t conv_in, out_norm, out_conv;
    float *head_act;                  // (B, base, h, w): SiLU(GN(hlast))
    float *head_mean, *head_rstd;     // (B, G)
    float *h0, *dh0;                  // (B, base, h, w): conv_in output (s0)
    float *hlast, *dhlast;            // the stream tensor entering the head
    int n_ops;
    UNetOp *ops;
    size_t max_chw;        // largest C*H*W a UNet-level gradient buffer holds
    size_t dstream_floats; // stream gradients: the first floats of acts
    int B; // batch of the last forward
    float *prep;           // prepared conv weights (unet_fix_weights), or NULL
    size_t prep_floats;
} UNet;

// Builds the table and allocates everything for up to max_batch items.
// Parameter values are NOT initialised: call unet_init_values() or load a
// checkpoint. cfg must pass unet_config_check().
void unet_init(UNet *u, const UNetConfig *cfg, int max_batch);
// The spec's init: params_init_values() (PyTorch's default uniform bounds,
// the zero-init convolutions marked in the table), then the class table
// N(0, 1), both from rng in that order. Unconditional: exactly
// params_init_values().
void unet_init_values(UNet *u, struct Rng *rng);
void unet_free(UNet *u);
// x (B, Z, h, w), t (B) integer steps, y (B) class labels in 0..K (K: the
// null class; NULL: unconditional, or on a conditional UNet the null class
// for every item) -> out (B, Z, h, w), a caller's buffer (the diffusion
// loss's, loss.h, or a sampler's). Labels on an unconditional UNet, or
// outside 0..K, are a programmer error. Saves what the backward needs.
void unet_forward(UNet *u, float *out, const float *x, const int *t, const int *y, int B);
// Sampling runs the same weights at every step: unet_fix_weights(u, 1)
// transforms the 3x3 convolutions' weights of the current u->params once
// (conv2d_prep; allocated on first use, kept until unet_free) and makes
// unet_forward use them until unet_fix_weights(u, 0). u->params must not
// change in between; the samplers bracket their loops with the pair.
void unet_fix_weights(UNet *u, int fixed);
// dout (B, Z, h, w) for the last forward; accumulates d/d params into u->grads
// (the caller zeroes them once per step).
void unet_backward(UNet *u, const float *dout);
