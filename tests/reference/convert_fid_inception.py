"""Converts pytorch-fid's published FID Inception weights
(pt_inception-2015-12-05-6726825d.pth: a state_dict of its FIDInceptionV3,
TensorFlow's 2015-12-05 Inception graph ported to PyTorch) to the HDF5 file
that `ldm-eval --net` and metrics/inception.c load:

  root attribute kind = "inception-fid" (and source = the .pth's file name)
  /model/<state_dict key>  float32, PyTorch shapes

BatchNorm's running_mean/running_var are kept (the C code folds them into
the convolutions); num_batches_tracked counters are dropped. The keys and
shapes are checked first by loading the state_dict strictly into
inception_mirror.py's network of the widths the file has (the small test
networks go through the same converter).

Run with Debian's torch:
  /usr/bin/python3 tests/reference/convert_fid_inception.py \
      pt_inception-2015-12-05-6726825d.pth inception-fid.h5
"""
import argparse
import os
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import inception_mirror as M  # noqa: E402

KIND = "inception-fid"


def load_state_dict(path):
    sd = torch.load(path, map_location="cpu")
    if not isinstance(sd, dict):
        raise SystemExit(f"{path}: not a state_dict (a {type(sd).__name__})")
    return {k: v for k, v in sd.items() if torch.is_tensor(v)}


def check(sd, path):
    """Loads sd into the mirror of its widths (strict: no key missing or
    extra, every shape right); returns the mirror."""
    try:
        net = M.fid_inception_like(sd)
        # The published file predates num_batches_tracked; the mirror has them.
        full = dict(sd)
        for k, v in net.state_dict().items():
            if k.endswith("num_batches_tracked") and k not in full:
                full[k] = v
        net.load_state_dict(full, strict=True)
    except (ValueError, RuntimeError) as e:
        raise SystemExit(f"{path}: not the FID Inception-v3: {e}")
    return net


def write_h5(sd, out, source, gzip=False):
    """Writes the model file at `out` (through a temporary beside it).
    gzip: shuffle + deflate the datasets (the small golden networks)."""
    tmp = out + ".tmp"
    opts = dict(compression="gzip", compression_opts=9, shuffle=True) if gzip else {}
    # the 1.10 format: a single-chunk dataset needs no chunk B-tree
    with h5py.File(tmp, "w", libver=("v110", "v110")) as f:
        f.attrs["kind"] = KIND
        f.attrs["source"] = source
        g = f.create_group("model")
        for k, v in sd.items():
            if k.endswith("num_batches_tracked"):
                continue
            g.create_dataset(k, data=v.detach().cpu().numpy().astype(np.float32), **opts)
    os.replace(tmp, out)


def convert(pth, out, gzip=False):
    """Returns the mirror holding the converted weights."""
    sd = load_state_dict(pth)
    net = check(sd, pth)
    write_h5(sd, out, os.path.basename(pth), gzip)
    return net


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pth", help="pt_inception-2015-12-05-6726825d.pth")
    ap.add_argument("out", help="the HDF5 file to write")
    ap.add_argument("--gzip", action="store_true", help="compress the datasets")
    a = ap.parse_args()
    net = convert(a.pth, a.out, a.gzip)
    print(f"{a.out}: inception-fid, {net.fc.in_features} features, "
          f"{net.fc.out_features} logits")


if __name__ == "__main__":
    main()
