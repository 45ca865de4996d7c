#include "vae_flops.h"

// Conv(k, s, p) cin -> cout producing an OH x OH map.
static double conv(int cin, int cout, int k, int OH) {
    return 2.0 * cout * OH * OH * cin * k * k;
}

// ConvT(k) cin -> cout reading an H x H map: every input element scatters
// into cout x k x k outputs.
static double convT(int cin, int cout, int k, int H) {
    return 2.0 * cin * H * H * cout * k * k;
}

// ---- the kl family: convolutions as above; the attention's two matrix
// products (q.k and att.v, 2 x T x T x C each at T = H*W positions) count too.

static double resblock(int cin, int cout, int S) {
    return conv(cin, cout, 3, S) + conv(cout, cout, 3, S) + (cin != cout ? conv(cin, cout, 1, S) : 0);
}

static double attn(int C, int S) {
    double T = (double)S * S;
    return 4 * conv(C, C, 1, S) + 2 * (2.0 * T * T * C);
}

static double mid(int C, int S) { return 2 * resblock(C, C, S) + attn(C, S); }

static int kl_attn_at(const KlConfig *k, int S) {
    for (int i = 0; i < k->num_attn; i++)
        if (k->attn_resolutions[i] == S) return 1;
    return 0;
}

static double kl_encode_flops(const KlConfig *k) {
    int S = k->image_size, ch = k->ch, Z = k->z_channels;
    double f = conv(k->in_channels, ch, 3, S);
    for (int l = 0; l < k->num_levels; l++) {
        int cout = k->ch * k->ch_mult[l];
        for (int j = 0; j < k->num_res_blocks; j++, ch = cout)
            f += resblock(ch, cout, S) + (kl_attn_at(k, S) ? attn(cout, S) : 0);
        if (l != k->num_levels - 1) f += conv(ch, ch, 3, S /= 2);
    }
    return f + mid(ch, S) + conv(ch, 2 * Z, 3, S) + conv(2 * Z, 2 * Z, 1, S);
}

static double kl_decode_flops(const KlConfig *k) {
    int S = kl_latent_size(k), Z = k->z_channels, ch = k->ch * k->ch_mult[k->num_levels - 1];
    double f = conv(Z, Z, 1, S) + conv(Z, ch, 3, S) + mid(ch, S);
    for (int l = k->num_levels - 1; l >= 0; l--) {
        int cout = k->ch * k->ch_mult[l];
        for (int j = 0; j < k->num_res_blocks + 1; j++, ch = cout)
            f += resblock(ch, cout, S) + (kl_attn_at(k, S) ? attn(cout, S) : 0);
        if (l != 0) f += conv(ch, ch, 3, S *= 2);
    }
    return f + conv(ch, k->in_channels, 3, S);
}

double vae_encode_flops(const VaeConfig *c) {
    if (c->arch == VAE_ARCH_KL) return kl_encode_flops(&c->kl);
    int C = c->in_channels, b = c->base_channels, Z = c->latent_channels;
    int S = c->image_size, S2 = S / 2, S4 = S / 4;
    return conv(C, b, 3, S) + conv(b, 2 * b, 4, S2) + conv(2 * b, 2 * b, 3, S2) +
           conv(2 * b, 4 * b, 4, S4) + conv(4 * b, 2 * Z, 3, S4);
}

double vae_decode_flops(const VaeConfig *c) {
    if (c->arch == VAE_ARCH_KL) return kl_decode_flops(&c->kl);
    int C = c->in_channels, b = c->base_channels, Z = c->latent_channels;
    int S = c->image_size, S2 = S / 2, S4 = S / 4;
    return conv(Z, 4 * b, 3, S4) + convT(4 * b, 2 * b, 4, S4) + conv(2 * b, 2 * b, 3, S2) +
           convT(2 * b, b, 4, S2) + conv(b, C, 3, S);
}

double patchgan_forward_flops(const PatchganConfig *c) {
    int w = c->width, H = c->image_size;
    const int cin[5] = {c->in_channels, w, 2 * w, 4 * w, 8 * w};
    const int cout[5] = {w, 2 * w, 4 * w, 8 * w, 1};
    double f = 0;
    for (int i = 0; i < 5; i++) {
        H = (H + 2 - 4) / (i < 3 ? 2 : 1) + 1; // k 4, pad 1, stride 2 then 1
        f += conv(cin[i], cout[i], 4, H);
    }
    return f;
}
