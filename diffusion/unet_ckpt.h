// unet_ckpt.h: a UNet's configuration in checkpoint attributes, and loading
// a UNet from a checkpoint (kind "unet").
#pragma once
#include "checkpoint.h"
#include "unet.h"

// num_classes is written only when > 0; absent, it reads as 0 (unconditional).
void unet_config_to_attrs(const UNetConfig *c, Attrs *a);
// Reads and validates; -1 with a message naming path.
int unet_config_from_attrs(UNetConfig *c, const Attrs *a, const char *path);
// Reads attributes (into *attrs if not NULL), checks kind "unet", builds the
// UNet for max_batch items and loads group `group` ("model" or "ema").
int unet_load(UNet *u, const char *path, const char *group, int max_batch, Attrs *attrs);
