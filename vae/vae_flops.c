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

double vae_encode_flops(const VaeConfig *c) {
    int C = c->in_channels, b = c->base_channels, Z = c->latent_channels;
    int S = c->image_size, S2 = S / 2, S4 = S / 4;
    return conv(C, b, 3, S) + conv(b, 2 * b, 4, S2) + conv(2 * b, 2 * b, 3, S2) +
           conv(2 * b, 4 * b, 4, S4) + conv(4 * b, 2 * Z, 3, S4);
}

double vae_decode_flops(const VaeConfig *c) {
    int C = c->in_channels, b = c->base_channels, Z = c->latent_channels;
    int S = c->image_size, S2 = S / 2, S4 = S / 4;
    return conv(Z, 4 * b, 3, S4) + convT(4 * b, 2 * b, 4, S4) + conv(2 * b, 2 * b, 3, S2) +
           convT(2 * b, b, 4, S2) + conv(b, C, 3, S);
}
