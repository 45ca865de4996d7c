// vae_ckpt.h: a VAE's configuration in checkpoint attributes, and loading a
// VAE from a checkpoint (kind "vae").
#pragma once
#include "checkpoint.h"
#include "vae.h"

void vae_config_to_attrs(const VaeConfig *c, Attrs *a);
// Reads and validates the configuration; -1 with a message naming path.
int vae_config_from_attrs(VaeConfig *c, const Attrs *a, const char *path);
// Reads attributes (into *attrs if not NULL), checks kind "vae", builds the
// model for max_batch items and loads /model. -1 with a message naming path.
int vae_load(Vae *v, const char *path, int max_batch, Attrs *attrs);
