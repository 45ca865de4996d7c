"""Feature-network speed in PyTorch, the counterpart of `ldm-eval stats`:
the same weights file (the project's HDF5), the same images (the first N
Fashion-MNIST test images, 32x32 grey, x/127.5 - 1) and the same
preprocessing (bilinear resize to the network's side, align_corners false;
grey replicated to RGB for Inception), features and logits in batches under
torch.no_grad. Prints one JSON line: images/s of the forward passes alone
(median over --reps passes over the images, after one warm-up pass).

Run: /usr/bin/python3 tests/reference/torch_featbench.py --net metrics/fmnist-cnn.h5 \
        --n 2000 --threads 2
"""
import argparse
import json
import os
import statistics
import sys
import time

import h5py
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fmnist_classifier as fc  # noqa: E402
import inception_mirror as im  # noqa: E402


def load_net(path):
    """(model, kind, input side, input channels) from a weights file."""
    with h5py.File(path, "r") as f:
        kind = f.attrs["kind"]
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        sd = {k: torch.from_numpy(v[()]) for k, v in f["model"].items()}
    if kind == "fmnist-cnn":
        net = fc.Classifier()
        net.load_state_dict(sd)
        return net.eval(), kind, 32, 1
    if kind == "inception-fid":
        net = im.fid_inception_like(sd)
        net.load_state_dict(sd, strict=False)  # no num_batches_tracked in the file
        return net.eval(), kind, 299, 3
    raise SystemExit(f"{path}: unknown network kind {kind!r}")


@torch.no_grad()
def run(net, kind, side, chans, x, batch):
    for i in range(0, x.shape[0], batch):
        b = x[i:i + batch]
        if b.shape[-1] != side:
            b = F.interpolate(b, size=(side, side), mode="bilinear", align_corners=False)
        if chans == 3 and b.shape[1] == 1:
            b = b.expand(-1, 3, -1, -1)
        if kind == "fmnist-cnn":
            net.fc2(net.features(b))
        else:
            net(b)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--net", required=True, help="weights file (HDF5, the project's layout)")
    ap.add_argument("--n", type=int, default=2000, help="images")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    net, kind, side, chans = load_net(a.net)
    u8, _ = fc.load_fmnist32_u8("test")
    x = fc.u8_to_float(u8[:a.n])
    run(net, kind, side, chans, x[:a.batch], a.batch)  # warm-up
    times = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        run(net, kind, side, chans, x, a.batch)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(json.dumps({"impl": "torch", "net": kind, "n": a.n, "batch": a.batch,
                      "threads": a.threads, "img_per_s": round(a.n / med, 2),
                      "times_s": [round(t, 3) for t in times]}))


if __name__ == "__main__":
    main()
