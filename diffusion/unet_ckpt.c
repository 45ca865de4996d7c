#include "unet_ckpt.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"

int int_list_parse(int *out, int cap, const char *s, const char *what) {
    int n = 0;
    const char *p = s;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > 1 << 16 || n == cap)
            return errorf("%s: '%s' is not a list of up to %d positive integers like 1,2",
                          what, s, cap);
        out[n++] = (int)v;
        p = end;
        if (*p == ',') p++;
        else if (*p) return errorf("%s: '%s' is not a comma-separated list", what, s);
    }
    if (n == 0) return errorf("%s: empty list", what);
    return n;
}

void int_list_format(char *out, size_t cap, const int *v, int n) {
    size_t len = 0;
    out[0] = 0;
    for (int i = 0; i < n && len < cap; i++)
        len += snprintf(out + len, cap - len, i ? ",%d" : "%d", v[i]);
}

void unet_config_to_attrs(const UNetConfig *c, Attrs *a) {
    char buf[128];
    attrs_set_str(a, "model", "unet");
    attrs_set_int(a, "latent_channels", c->latent_channels);
    attrs_set_int(a, "latent_size", c->latent_size);
    attrs_set_int(a, "base_channels", c->base_channels);
    int_list_format(buf, sizeof buf, c->channel_mult, c->num_levels);
    attrs_set_str(a, "channel_mult", buf);
    attrs_set_int(a, "num_res_blocks", c->num_res_blocks);
    int_list_format(buf, sizeof buf, c->attn_resolutions, c->num_attn);
    attrs_set_str(a, "attn_resolutions", c->num_attn ? buf : "");
    attrs_set_int(a, "num_heads", c->num_heads);
    attrs_set_int(a, "temb_dim", c->temb_dim);
    attrs_set_int(a, "time_dim", c->time_dim);
}

int unet_config_from_attrs(UNetConfig *c, const Attrs *a, const char *path) {
    int64_t z, ls, bc, nrb, nh, td, tm;
    char mult[ATTR_STR_MAX], attn[ATTR_STR_MAX];
    if (attrs_get_int(a, path, "latent_channels", &z) ||
        attrs_get_int(a, path, "latent_size", &ls) ||
        attrs_get_int(a, path, "base_channels", &bc) ||
        attrs_get_int(a, path, "num_res_blocks", &nrb) ||
        attrs_get_int(a, path, "num_heads", &nh) ||
        attrs_get_int(a, path, "temb_dim", &td) ||
        attrs_get_int(a, path, "time_dim", &tm) ||
        attrs_get_str(a, path, "channel_mult", mult, sizeof mult) ||
        attrs_get_str(a, path, "attn_resolutions", attn, sizeof attn))
        return -1;
    const int64_t lim = 1 << 16;
    if (z < 1 || z > lim || ls < 1 || ls > lim || bc < 1 || bc > lim || nrb < 1 ||
        nrb > 64 || nh < 1 || nh > lim || td < 1 || td > lim || tm < 2 || tm > lim)
        return errorf("%s: UNet configuration out of range", path);
    memset(c, 0, sizeof *c);
    c->latent_channels = (int)z;
    c->latent_size = (int)ls;
    c->base_channels = (int)bc;
    c->num_res_blocks = (int)nrb;
    c->num_heads = (int)nh;
    c->temb_dim = (int)td;
    c->time_dim = (int)tm;
    char what[600];
    snprintf(what, sizeof what, "%s: channel_mult", path);
    if ((c->num_levels = int_list_parse(c->channel_mult, UNET_MAX_LEVELS, mult, what)) < 0)
        return -1;
    snprintf(what, sizeof what, "%s: attn_resolutions", path);
    c->num_attn = 0;
    if (attn[0] && (c->num_attn = int_list_parse(c->attn_resolutions, UNET_MAX_LEVELS, attn, what)) < 0)
        return -1;
    return unet_config_check(c, path);
}

int unet_load(UNet *u, const char *path, const char *group, int max_batch, Attrs *attrs) {
    Attrs local;
    Attrs *a = attrs ? attrs : &local;
    UNetConfig c;
    if (ckpt_read_attrs(path, "unet", a) || unet_config_from_attrs(&c, a, path) ||
        ckpt_check_declared_conv(path, "conv_in.weight", c.base_channels, c.latent_channels,
                            max_batch, c.latent_size))
        return -1;
    unet_init(u, &c, max_batch);
    if (ckpt_read_group(path, &u->table, group, u->params)) {
        unet_free(u);
        return -1;
    }
    return 0;
}
