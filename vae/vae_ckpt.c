#include "vae_ckpt.h"

#include <math.h>

#include "common.h"

void vae_config_to_attrs(const VaeConfig *c, Attrs *a) {
    attrs_set_str(a, "model", "vae-f4c4");
    attrs_set_int(a, "in_channels", c->in_channels);
    attrs_set_int(a, "image_size", c->image_size);
    attrs_set_int(a, "base_channels", c->base_channels);
    attrs_set_int(a, "latent_channels", c->latent_channels);
    attrs_set_double(a, "kl_weight", c->kl_weight);
}

int vae_config_from_attrs(VaeConfig *c, const Attrs *a, const char *path) {
    int64_t ic, is, bc, lc;
    double kw;
    if (attrs_get_int(a, path, "in_channels", &ic) ||
        attrs_get_int(a, path, "image_size", &is) ||
        attrs_get_int(a, path, "base_channels", &bc) ||
        attrs_get_int(a, path, "latent_channels", &lc) ||
        attrs_get_double(a, path, "kl_weight", &kw))
        return -1;
    if (ic != 1 && ic != 3)
        return errorf("%s: in_channels %lld is not 1 or 3", path, (long long)ic);
    if (is < 4 || is > 4096 || is % 4)
        return errorf("%s: image_size %lld is not a multiple of 4 in [4, 4096]", path,
                      (long long)is);
    if (bc < 1 || bc > 4096 || lc < 1 || lc > 1024)
        return errorf("%s: base_channels %lld / latent_channels %lld out of range",
                      path, (long long)bc, (long long)lc);
    if (!isfinite(kw) || kw < 0)
        return errorf("%s: kl_weight %g is not a non-negative number", path, kw);
    c->in_channels = (int)ic;
    c->image_size = (int)is;
    c->base_channels = (int)bc;
    c->latent_channels = (int)lc;
    c->kl_weight = (float)kw;
    return 0;
}

int vae_load(Vae *v, const char *path, int max_batch, Attrs *attrs) {
    Attrs local;
    Attrs *a = attrs ? attrs : &local;
    VaeConfig c;
    if (ckpt_read_attrs(path, "vae", a) || vae_config_from_attrs(&c, a, path) ||
        ckpt_check_declared_conv(path, "encoder.0.weight", c.base_channels, c.in_channels,
                            max_batch, c.image_size))
        return -1;
    vae_init(v, &c, max_batch);
    if (ckpt_read_group(path, &v->table, "model", v->params)) {
        vae_free(v);
        return -1;
    }
    return 0;
}
