// checkpoint.h: HDF5 checkpoints.
// Layout: /model/<key> float32 datasets in PyTorch shapes (key = state_dict
// key of tests/reference/mirror.py); /optim/m/<key>, /optim/v/<key> the Adam
// moments; /ema/<key> (stage 2); root attributes hold `kind` ("vae"/"unet"),
// `step`, the RNG state and the model configuration (Attrs, h5attr.h).
// Written to a temporary file beside the target and renamed.
#pragma once
#include <stdint.h>

#include "h5attr.h" // Attrs
#include "params.h"

// A further group of a checkpoint: a second model (the autoencoder's
// discriminator: "disc/model", "disc/running", "disc/optim/m", ...) under its
// own table. Parent groups are created as needed.
typedef struct {
    const char *name;
    const ParamTable *t;
    const float *data;
} CkptGroup;

// Buffers to write; any of m, v, ema may be NULL (group omitted); `extra`
// (n_extra entries, may be NULL) are written after them.
typedef struct {
    const float *model, *m, *v, *ema;
    const CkptGroup *extra;
    int n_extra;
} CkptBuffers;

// Writes the checkpoint atomically (tmp + fsync + rename). -1 on failure
// with a message; the previous file at `path` is untouched then.
int ckpt_write(const char *path, const ParamTable *t, CkptBuffers bufs,
               const Attrs *attrs);
// Reads root attributes; checks the file is a regular file (a FIFO would
// block the open), HDF5 and has `kind` == expected_kind (NULL: any).
// Messages name `path`.
int ckpt_read_attrs(const char *path, const char *expected_kind, Attrs *attrs);
// Reads group `group` ("model", "optim/m", "optim/v", "ema") into `out`,
// checking every key of `t` is present with the table's shape and a float
// type, and its values: NaN or infinity anywhere, or a negative value in a
// group named "optim/v" or ending in "/optim/v", is refused. Missing group or key, wrong shape or dtype, a bad
// value, or tensors the table does not have: -1 with a message naming the
// tensor.
int ckpt_read_group(const char *path, const ParamTable *t, const char *group,
                    float *out);
// 1 if the group exists in the file, 0 if not, -1 if the file is unreadable.
int ckpt_has_group(const char *path, const char *group);

// A model configuration read from a file declares the model's size. Before
// allocating it, check it against something real: the 3x3 conv tensor
// /model/<key> must have the declared widths (cout, cin) (read on its own),
// and the first activation, (max_batch, cout, side, side) floats, must fit in
// physical memory. -1 with a message naming path otherwise.
int ckpt_check_declared_conv(const char *path, const char *key, int cout, int cin,
                             int max_batch, int side);

// Hash of parameter values (FNV-1a over the float bytes in table order),
// as 16 hex digits; ties a latent cache and a UNet to the VAE that made it.
void params_hash(char out[17], const ParamTable *t, const float *p);
