"""Converts the published LPIPS v0.1 VGG weights to the HDF5 file that
vae/lpips.c loads (layout in vae/lpips.h):

  - torchvision's VGG16 state_dict (vgg16-397923af.pth): features.<i>.weight
    and .bias of the 13 convs up to relu5_3 are kept; the classifier and
    anything past features.28 are dropped;
  - LPIPS's linear heads (lpips/weights/v0.1/vgg.pth): lin<l>.model.1.weight
    (1, C_l, 1, 1). A whole LPIPS state_dict works too: its net.* and
    scaling_layer.* entries are ignored (the VGG weights come from the first
    file, the scaling constants are built in).

  root attributes kind = "lpips", width1 .. width5 (the stages' channels),
                  source = the two file names
  /model/<key>    float32, PyTorch shapes

The keys and shapes are checked by loading both into lpips_mirror.py's
network of the widths the files declare (strict: none missing, none extra).

Run with Debian's torch:
  /usr/bin/python3 tests/reference/convert_lpips.py \
      vgg16-397923af.pth vgg.pth lpips-vgg.h5
"""
import argparse
import os
import re
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lpips_mirror as M  # noqa: E402

KIND = "lpips"


def load_state_dict(path):
    sd = torch.load(path, map_location="cpu")
    if not isinstance(sd, dict):
        raise SystemExit(f"{path}: not a state_dict (a {type(sd).__name__})")
    return {k: v for k, v in sd.items() if torch.is_tensor(v)}


def merge(vgg, lin, vgg_path, lin_path):
    """The converted tensors: VGG's features up to relu5_3 and the heads."""
    keep = {f"features.{i}.{p}" for i in M.CONV_INDEX for p in ("weight", "bias")}
    sd = {}
    for k, v in vgg.items():
        m = re.fullmatch(r"features\.(\d+)\.(weight|bias)", k)
        if k in keep:
            sd[k] = v
        elif not (k.startswith("classifier.") or (m and int(m.group(1)) > 29)):
            raise SystemExit(f"{vgg_path}: {k} is not a tensor of torchvision's vgg16")
    for k, v in lin.items():
        if re.fullmatch(r"lin[0-4]\.model\.1\.weight", k):
            sd[k] = v
        elif not (k.startswith("net.") or k.startswith("scaling_layer.")):
            raise SystemExit(f"{lin_path}: {k} is not a tensor of LPIPS's v0.1 heads")
    for i in M.CONV_INDEX:
        if f"features.{i}.weight" not in sd:
            raise SystemExit(f"{vgg_path}: features.{i}.weight is missing")
    return sd


def check(sd, vgg_path, lin_path):
    """Loads sd strictly into the mirror of its widths; returns the mirror."""
    try:
        net = M.LPIPS(M.widths_of(sd))
        net.load_state_dict(sd, strict=True)
    except (ValueError, RuntimeError, KeyError) as e:
        raise SystemExit(f"{vgg_path} + {lin_path}: not LPIPS v0.1 on VGG16: {e}")
    for k, v in sd.items():
        if not torch.isfinite(v).all():
            raise SystemExit(f"{k}: NaN or infinite values")
    return net


def write_h5(net, out, source):
    """Writes the file at `out` through a temporary beside it."""
    tmp = out + ".tmp"
    with h5py.File(tmp, "w") as f:
        f.attrs["kind"] = KIND
        for s, w in enumerate(net.widths):
            f.attrs[f"width{s + 1}"] = np.int64(w)
        f.attrs["source"] = source
        g = f.create_group("model")
        for k, v in net.state_dict().items():
            g.create_dataset(k, data=v.detach().float().numpy())
    os.replace(tmp, out)


def convert(vgg_path, lin_path, out):
    vgg, lin = load_state_dict(vgg_path), load_state_dict(lin_path)
    net = check(merge(vgg, lin, vgg_path, lin_path), vgg_path, lin_path)
    write_h5(net, out, f"{os.path.basename(vgg_path)} + {os.path.basename(lin_path)}")
    return net


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("vgg16", help="torchvision's vgg16 state_dict (vgg16-397923af.pth)")
    ap.add_argument("lin", help="LPIPS's v0.1 heads (vgg.pth)")
    ap.add_argument("out", help="the HDF5 file to write")
    a = ap.parse_args()
    net = convert(a.vgg16, a.lin, a.out)
    print(f"{a.out}: LPIPS v0.1, VGG16 stage widths {' '.join(map(str, net.widths))}")


if __name__ == "__main__":
    main()
