#include "vae_ckpt.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "common.h"

static void kl_config_to_attrs(const KlConfig *k, Attrs *a) {
    char buf[128];
    CHECK(attrs_set_str(a, "model", "vae-kl") == 0);
    attrs_set_int(a, "in_channels", k->in_channels);
    attrs_set_int(a, "image_size", k->image_size);
    attrs_set_int(a, "ch", k->ch);
    int_list_format(buf, sizeof buf, k->ch_mult, k->num_levels);
    CHECK(attrs_set_str(a, "ch_mult", buf) == 0);
    attrs_set_int(a, "num_res_blocks", k->num_res_blocks);
    int_list_format(buf, sizeof buf, k->attn_resolutions, k->num_attn);
    CHECK(attrs_set_str(a, "attn_resolutions", k->num_attn ? buf : "") == 0);
    attrs_set_int(a, "z_channels", k->z_channels);
    attrs_set_int(a, "groups", k->groups);
}

static int kl_config_from_attrs(VaeConfig *c, const Attrs *a, const char *path) {
    // The ranges keep int arithmetic safe; kl_config_check decides the rest.
    const double lim = 1 << 16;
    char mult[ATTR_STR_MAX], attn[ATTR_STR_MAX], what[PATH_MAX + 32];
    KlConfig k;
    memset(&k, 0, sizeof k);
    const AttrSpec spec[] = {
        {"in_channels", SPEC_INT, 1, 3, &k.in_channels, 0},
        {"image_size", SPEC_INT, 1, 4096, &k.image_size, 0},
        {"ch", SPEC_INT, 1, lim, &k.ch, 0},
        {"ch_mult", SPEC_STR, 1, ATTR_STR_MAX - 1, mult, 0},
        {"num_res_blocks", SPEC_INT, 1, KL_MAX_RES_BLOCKS, &k.num_res_blocks, 0},
        {"attn_resolutions", SPEC_STR, 0, ATTR_STR_MAX - 1, attn, 0},
        {"z_channels", SPEC_INT, 1, 1024, &k.z_channels, 0},
        {"groups", SPEC_INT, 1, lim, &k.groups, 0},
    };
    if (attrs_read_specs(a, path, spec, (int)(sizeof spec / sizeof *spec))) return -1;
    snprintf(what, sizeof what, "%s: attribute 'ch_mult'", path);
    if ((k.num_levels = int_list_parse(k.ch_mult, KL_MAX_LEVELS, mult, what)) < 0) return -1;
    snprintf(what, sizeof what, "%s: attribute 'attn_resolutions'", path);
    k.num_attn = attn[0] ? int_list_parse(k.attn_resolutions, KL_MAX_LEVELS, attn, what) : 0;
    if (k.num_attn < 0) return -1;
    if (kl_config_check(&k, path)) return -1;
    vae_config_kl(c, &k);
    return 0;
}

void vae_config_to_attrs(const VaeConfig *c, Attrs *a) {
    if (c->arch == VAE_ARCH_KL) {
        kl_config_to_attrs(&c->kl, a);
        return;
    }
    CHECK(attrs_set_str(a, "model", "vae-f4c4") == 0);
    attrs_set_int(a, "in_channels", c->in_channels);
    attrs_set_int(a, "image_size", c->image_size);
    attrs_set_int(a, "base_channels", c->base_channels);
    attrs_set_int(a, "latent_channels", c->latent_channels);
    attrs_set_double(a, "kl_weight", c->kl_weight);
}

int vae_config_from_attrs(VaeConfig *c, const Attrs *a, const char *path) {
    char model[32] = "vae-f4c4"; // older files may lack it: all were f4c4
    const AttrSpec mspec[] = {{"model", SPEC_STR, 1, sizeof model - 1, model, SPEC_OPTIONAL}};
    if (attrs_read_specs(a, path, mspec, 1)) return -1;
    if (strcmp(model, "vae-kl") == 0) return kl_config_from_attrs(c, a, path);
    if (strcmp(model, "vae-f4c4") != 0)
        return errorf("%s: attribute 'model' is '%s', expected vae-f4c4 or vae-kl", path, model);
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
             ckpt_check_declared_conv(path, c.arch == VAE_ARCH_KL ? "encoder.conv_in.weight"
                                                                  : "encoder.0.weight",
                                      c.base_channels, c.in_channels, max_batch, c.image_size);
    if (a != attrs) free(a);
    if (rc) return -1;
    vae_init(v, &c, max_batch);
    if (ckpt_read_group(path, &v->table, "model", v->params)) {
        vae_free(v);
        return -1;
    }
    return 0;
}
