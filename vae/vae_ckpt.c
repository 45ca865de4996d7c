#include "vae_ckpt.h"

#include "common.h"

void vae_config_to_attrs(const VaeConfig *c, Attrs *a) {
    CHECK(attrs_set_str(a, "model", "vae-f4c4") == 0);
    attrs_set_int(a, "in_channels", c->in_channels);
    attrs_set_int(a, "image_size", c->image_size);
    attrs_set_int(a, "base_channels", c->base_channels);
    attrs_set_int(a, "latent_channels", c->latent_channels);
    attrs_set_double(a, "kl_weight", c->kl_weight);
}

int vae_config_from_attrs(VaeConfig *c, const Attrs *a, const char *path) {
    VaeConfig r;
    vae_config_default(&r); // fields the attributes do not name keep defaults
    const AttrSpec spec[] = {
        {"in_channels", SPEC_INT, 1, 3, &r.in_channels, 0},
        {"image_size", SPEC_INT, 4, 4096, &r.image_size, 0},
        {"base_channels", SPEC_INT, 1, 4096, &r.base_channels, 0},
        {"latent_channels", SPEC_INT, 1, 1024, &r.latent_channels, 0},
        // A beta-VAE's weight is O(1..1000); beyond 1e6 the file is wrong.
        {"kl_weight", SPEC_FLOAT, 0, 1e6, &r.kl_weight, 0},
    };
    if (attrs_read_specs(a, path, spec, (int)(sizeof spec / sizeof *spec))) return -1;
    if (r.in_channels == 2)
        return errorf("%s: attribute 'in_channels' is 2, expected 1 or 3", path);
    // The encoder halves the image twice.
    if (r.image_size % 4)
        return errorf("%s: attribute 'image_size' is %d, expected a multiple of 4 in "
                      "[4, 4096]", path, r.image_size);
    *c = r;
    return 0;
}

int vae_load(Vae *v, const char *path, int max_batch, Attrs *attrs) {
    Attrs *a = attrs ? attrs : xmalloc(sizeof *a); // large: not on the stack
    VaeConfig c;
    int rc = ckpt_read_attrs(path, "vae", a) || vae_config_from_attrs(&c, a, path) ||
             ckpt_check_declared_conv(path, "encoder.0.weight", c.base_channels,
                                      c.in_channels, max_batch, c.image_size);
    if (a != attrs) free(a);
    if (rc) return -1;
    vae_init(v, &c, max_batch);
    if (ckpt_read_group(path, &v->table, "model", v->params)) {
        vae_free(v);
        return -1;
    }
    return 0;
}
