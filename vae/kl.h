// kl.h: the `vae-kl-f4` autoencoder family of ../shared/spec/default-models.md:
// latent-diffusion's AutoencoderKL (Encoder, Decoder, quant_conv,
// post_quant_conv), configurable as there (width, multipliers, blocks per
// level, attention resolutions, latent channels, image size).
// Parameter keys are latent-diffusion's state_dict keys, in its order
// (tests/reference/kl_mirror.py): encoder.conv_in,
// encoder.down.<l>.block.<j>.{norm1,conv1,norm2,conv2[,nin_shortcut]},
// encoder.down.<l>.attn.<j>.{norm,q,k,v,proj_out}, encoder.down.<l>.downsample.conv,
// encoder.mid.{block_1,attn_1,block_2}, encoder.norm_out, encoder.conv_out,
// decoder.conv_in, decoder.mid.*, decoder.up.<l>.block.<j>, decoder.up.<l>.attn.<j>,
// decoder.up.<l>.upsample.conv (up.<l> works at level l's resolution; the
// decoder runs up.<L-1> first), decoder.norm_out, decoder.conv_out,
// quant_conv, post_quant_conv.
//
// Training needs the halves separately (the GAN loss meets the gradients at
// the reconstruction; the adaptive weight needs d/dW of decoder.conv_out
// alone), so encode and decode each save their own activations.
//
// Memory: the training pieces (kl_*_forward/backward) keep every op's
// activations and stream gradients of both halves for max_batch items
// (vae-kl-f4 on 3x64x64: about 31 MB an item with the scratch), allocated
// by the first training forward, so a model that only infers never holds
// them. Inference (kl_encode, kl_decode) runs the same ops with the same
// kernels on the whole batch, bit-identical to the training forward, but
// keeps only what the running op needs: the stream tensors alternate
// between two buffers and every op's saved tensors share one region (8.5 MB
// an item allocated for vae-kl-f4, sized by the decoder; an encode touches
// about 3 MB an item, PyTorch's no_grad encode about 4). Once training has
// started, inference runs in the training activations' memory instead (a
// held-out evaluation adds nothing to training's peak).
#pragma once
#include <stddef.h>

#include "blocks.h"
#include "params.h"

#define KL_MAX_LEVELS 8
#define KL_MAX_RES_BLOCKS 16

typedef struct {
    int in_channels;    // C: 3 (1 allowed)
    int image_size;     // S: 64; a multiple of 2^(num_levels - 1)
    int ch;             // 32
    int num_levels;     // length of ch_mult: 3
    int ch_mult[KL_MAX_LEVELS]; // (1, 2, 4); f8: (1, 2, 4, 4)
    int num_res_blocks; // 1 a level down, one more up
    int num_attn;       // entries in attn_resolutions: 0 (the mid block always has one)
    int attn_resolutions[KL_MAX_LEVELS]; // sides with attention after each block
    int z_channels;     // Z: 4 (embed_dim = Z)
    int groups;         // GroupNorm groups: 32; every width must be a multiple
} KlConfig;

void kl_config_default(KlConfig *c); // the spec's vae-kl-f4 on rgb64
// -1 with a message naming `what` (e.g. the checkpoint path) when c cannot be built.
int kl_config_check(const KlConfig *c, const char *what);
int kl_latent_size(const KlConfig *c); // S / 2^(num_levels - 1)

typedef struct KlOp KlOp; // one step of a half's layer list (kl.c)

// One half (encoder + quant_conv, or post_quant_conv + decoder): its ops in
// run order and the stream tensors between them.
typedef struct {
    int n_ops;
    KlOp *ops;
    float *x_in;  // (B, Cin, H, W): the last forward's input (training; NULL for inference)
    float *dstream; // the stream gradients' buffers, zeroed per backward
    int B;        // batch of the last forward; 0: none since the last backward
} KlHalf;

typedef struct {
    KlConfig cfg;
    int max_batch;
    ParamTable table;
    float *params, *grads; // (table.total) each
    // Training: both halves' activations and stream gradients for max_batch
    // items, NULL until the first kl_encode_forward or kl_decode_forward;
    // acts_floats counts them from kl_init on.
    float *acts;
    size_t acts_floats;
    // Inference: two stream buffers and one op's saved tensors for
    // max_batch items, shared by both halves (allocated by kl_init); from
    // the first training forward on, the start of acts.
    float *infer;
    size_t infer_floats;
    float *work;           // scratch shared by every layer, inference's size until training
    size_t work_floats;    // floats in work now
    size_t train_work_floats; // what training needs
    KlHalf enc, dec;       // training: ops carved into acts
    KlHalf ienc, idec;     // inference: the same ops carved into infer
    size_t last_w, last_w_size; // decoder.conv_out.weight: offset, floats
    size_t enc_params;     // parameters of encoder + quant_conv (the rest: decoder side)
} KlVae;

// Builds the table and allocates parameters, gradients (zeroed) and the
// inference buffers for up to max_batch items; the training activations
// come with the first training forward. Values are NOT initialised
// (kl_init_values or a checkpoint). cfg must pass kl_config_check().
void kl_init(KlVae *k, const KlConfig *cfg, int max_batch);
// PyTorch's defaults: convs uniform +-1/sqrt(fan_in), GroupNorm ones/zeros.
void kl_init_values(KlVae *k, struct Rng *rng);
void kl_free(KlVae *k);

// Inference: x (B, C, S, S) -> mean, logvar (B, Z, h, w), logvar clamped to
// [-30, 20]; z (B, Z, h, w) -> xhat (B, C, S, S), not clamped. Bit for bit
// kl_encode_forward's and kl_decode_forward's outputs, saving nothing for a
// backward. Once training has started they overwrite its activations: not
// between a training forward and its backward. Any B in 1..max_batch.
void kl_encode(KlVae *k, float *mean, float *logvar, const float *x, int B);
void kl_decode(KlVae *k, float *xhat, const float *z, int B);

// Allocates the training activations (once; a no-op after). A trainer calls
// it before its step loop; otherwise the first training forward does.
void kl_train_init(KlVae *k);
// Training: x (B, C, S, S) -> mean, logvar (B, Z, h, w), logvar clamped to [-30, 20].
// Saves what kl_encode_backward needs. Any B in 1..max_batch.
void kl_encode_forward(KlVae *k, float *mean, float *logvar, const float *x, int B);
// z (B, Z, h, w) -> xhat (B, C, S, S), not clamped. Saves for kl_decode_backward.
void kl_decode_forward(KlVae *k, float *xhat, const float *z, int B);
// dxhat (B, C, S, S) for the last decode: accumulates into k->grads and into
// dz (B, Z, h, w) unless NULL.
void kl_decode_backward(KlVae *k, float *dz, const float *dxhat);
// dmean, dlogvar (B, Z, h, w) for the last encode (dlogvar of the clamped
// value: zero gradient where the raw value lies outside [-30, 20], as
// torch.clamp): accumulates into k->grads and into dx (B, C, S, S) unless NULL.
void kl_encode_backward(KlVae *k, float *dx, const float *dmean, const float *dlogvar);
// Writes (=) dw (last_w_size floats) = d (sum dxhat * xhat) / d decoder.conv_out.weight
// for the last decode, leaving k->grads alone. Needs no backward; any number
// of calls between a decode and its backward.
void kl_last_layer_grad(KlVae *k, float *dw, const float *dxhat);
