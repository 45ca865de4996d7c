#include "unet_flops.h"

// Conv(k) cin -> cout producing an H x H map (stride and padding are in H).
static double conv(int cin, int cout, int k, int H) {
    return 2.0 * cout * H * H * cin * k * k;
}

static double resblock(int cin, int cout, int H, int temb_dim) {
    double f = conv(cin, cout, 3, H) + 2.0 * temb_dim * cout + conv(cout, cout, 3, H);
    if (cin != cout) f += conv(cin, cout, 1, H);
    return f;
}

// q, k, v and the output projection, then QK^T and AV over HW positions
// (the head split does not change the count: heads x d = C).
static double attn(int C, int H) {
    double hw = (double)H * H;
    return 4 * conv(C, C, 1, H) + 2 * (2.0 * hw * hw * C);
}

static int has_attn(const UNetConfig *c, int res) {
    for (int i = 0; i < c->num_attn; i++)
        if (c->attn_resolutions[i] == res) return 1;
    return 0;
}

// Walks the layers in the order unet.c builds them (the mirror's layout).
double unet_forward_flops(const UNetConfig *c) {
    int L = c->num_levels, nrb = c->num_res_blocks, b = c->base_channels, E = c->temb_dim;
    double f = 2.0 * c->time_dim * E + 2.0 * E * E;
    f += conv(c->latent_channels, b, 3, c->latent_size);
    int ch = b, res = c->latent_size;
    int skip_ch[UNET_MAX_LEVELS * (UNET_MAX_RES_BLOCKS + 1) + 1], nskip = 0;
    skip_ch[nskip++] = ch;
    for (int l = 0; l < L; l++) {
        int cout = b * c->channel_mult[l];
        for (int j = 0; j < nrb; j++) {
            f += resblock(ch, cout, res, E);
            ch = cout;
            if (has_attn(c, res)) f += attn(ch, res);
            skip_ch[nskip++] = ch;
        }
        if (l != L - 1) {
            res = (res + 1) / 2;
            f += conv(ch, ch, 3, res); // stride 2: counted at the output size
            skip_ch[nskip++] = ch;
        }
    }
    f += 2 * resblock(ch, ch, res, E) + attn(ch, res);
    for (int l = L - 1; l >= 0; l--) {
        int cout = b * c->channel_mult[l];
        for (int j = 0; j < nrb + 1; j++) {
            f += resblock(ch + skip_ch[--nskip], cout, res, E);
            ch = cout;
            if (has_attn(c, res)) f += attn(ch, res);
        }
        if (l != 0) {
            res *= 2;
            f += conv(ch, ch, 3, res); // after the nearest x2
        }
    }
    f += conv(ch, c->latent_channels, 3, res);
    return f;
}
