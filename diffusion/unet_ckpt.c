#include "unet_ckpt.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "common.h"

void unet_config_to_attrs(const UNetConfig *c, Attrs *a) {
    char buf[128];
    CHECK(attrs_set_str(a, "model", "unet") == 0);
    attrs_set_int(a, "latent_channels", c->latent_channels);
    attrs_set_int(a, "latent_size", c->latent_size);
    attrs_set_int(a, "base_channels", c->base_channels);
    int_list_format(buf, sizeof buf, c->channel_mult, c->num_levels);
    CHECK(attrs_set_str(a, "channel_mult", buf) == 0);
    attrs_set_int(a, "num_res_blocks", c->num_res_blocks);
    int_list_format(buf, sizeof buf, c->attn_resolutions, c->num_attn);
    CHECK(attrs_set_str(a, "attn_resolutions", c->num_attn ? buf : "") == 0);
    attrs_set_int(a, "num_heads", c->num_heads);
    attrs_set_int(a, "temb_dim", c->temb_dim);
    attrs_set_int(a, "time_dim", c->time_dim);
    // Only on a conditional UNet: an unconditional checkpoint stays exactly
    // what it was before classes existed (and older ones read as 0).
    if (c->num_classes) attrs_set_int(a, "num_classes", c->num_classes);
}

int unet_config_from_attrs(UNetConfig *c, const Attrs *a, const char *path) {
    // The ranges only keep the values within what int arithmetic on them
    // survives; unet_config_check() decides what can be built.
    const double lim = 1 << 16;
    char mult[ATTR_STR_MAX], attn[ATTR_STR_MAX];
    UNetConfig r;
    memset(&r, 0, sizeof r);
    const AttrSpec spec[] = {
        {"latent_channels", SPEC_INT, 1, lim, &r.latent_channels, 0},
        {"latent_size", SPEC_INT, 1, lim, &r.latent_size, 0},
        {"base_channels", SPEC_INT, 1, lim, &r.base_channels, 0},
        {"num_res_blocks", SPEC_INT, 1, UNET_MAX_RES_BLOCKS, &r.num_res_blocks, 0},
        {"num_heads", SPEC_INT, 1, lim, &r.num_heads, 0},
        {"temb_dim", SPEC_INT, 1, lim, &r.temb_dim, 0},
        {"time_dim", SPEC_INT, 2, lim, &r.time_dim, 0},
        {"channel_mult", SPEC_STR, 1, ATTR_STR_MAX - 1, mult, 0},
        {"attn_resolutions", SPEC_STR, 0, ATTR_STR_MAX - 1, attn, 0},
        {"num_classes", SPEC_INT, 0, UNET_MAX_CLASSES, &r.num_classes, SPEC_OPTIONAL},
    };
    if (attrs_read_specs(a, path, spec, (int)(sizeof spec / sizeof *spec))) return -1;
    char what[PATH_MAX + 32];
    snprintf(what, sizeof what, "%s: channel_mult", path);
    if ((r.num_levels = int_list_parse(r.channel_mult, UNET_MAX_LEVELS, mult, what)) < 0)
        return -1;
    snprintf(what, sizeof what, "%s: attn_resolutions", path);
    if (attn[0] && (r.num_attn = int_list_parse(r.attn_resolutions, UNET_MAX_LEVELS, attn, what)) < 0)
        return -1;
    if (unet_config_check(&r, path)) return -1;
    *c = r;
    return 0;
}

int unet_load(UNet *u, const char *path, const char *group, int max_batch, Attrs *attrs) {
    Attrs *a = attrs ? attrs : xmalloc(sizeof *a); // large: not on the stack
    UNetConfig c;
    int rc = ckpt_read_attrs(path, "unet", a) || unet_config_from_attrs(&c, a, path) ||
             ckpt_check_declared_conv(path, "conv_in.weight", c.base_channels,
                                      c.latent_channels, max_batch, c.latent_size);
    if (a != attrs) free(a);
    if (rc) return -1;
    unet_init(u, &c, max_batch);
    if (ckpt_read_group(path, &u->table, group, u->params)) {
        unet_free(u);
        return -1;
    }
    return 0;
}
