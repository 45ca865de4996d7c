"""Exports the Fashion-MNIST classifier (fmnist_classifier.py) as the domain
feature network of `ldm-eval`: metrics/fmnist-cnn.h5, read by
metrics/featnet.c.

Layout: root attribute kind = "fmnist-cnn", tensors /model/<state_dict key>
float32 in PyTorch shapes (conv1..conv3, fc1, fc2; the dropout has none),
and attributes recording how the weights were made (test_accuracy on the
10,000 test images, epochs, seed, torch version, the training command).

With no --pt, trains the classifier first with fmnist_classifier.py itself
(3 epochs, seed 0, about 2-4 minutes on 2 cores) into runs/fmnist-cnn/.
The committed file was made by (the same steps as running this script with
no --pt; test accuracy 0.8970):
  nice -n 10 /usr/bin/python3 tests/reference/fmnist_classifier.py --out runs/stats/classifier.pt
  /usr/bin/python3 tests/reference/export_fmnist_net.py --pt runs/stats/classifier.pt
"""
import argparse
import os
import subprocess
import sys

import h5py
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fmnist_classifier as fc  # noqa: E402

ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))


def test_accuracy(model):
    x, y = fc.load_fmnist32("test")
    _, logits = fc.features(model, x)
    return float((logits.argmax(1) == y).double().mean().item())


def export(model, out, attrs):
    tmp = out + ".tmp.h5"
    with h5py.File(tmp, "w") as f:
        f.attrs["kind"] = "fmnist-cnn"
        for k, v in attrs.items():
            f.attrs[k] = v
        g = f.create_group("model")
        for k, v in model.state_dict().items():
            g[k] = v.detach().numpy().astype(np.float32)
    os.replace(tmp, out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pt", help="a classifier written by fmnist_classifier.py "
                                 "(default: train one)")
    ap.add_argument("--out", default=os.path.join(ROOT, "metrics", "fmnist-cnn.h5"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pt = args.pt
    if pt is None:
        pt = os.path.join(ROOT, "runs", "fmnist-cnn", "classifier.pt")
        subprocess.run([sys.executable, os.path.join(HERE, "fmnist_classifier.py"),
                        "--out", pt, "--threads", str(args.threads)], check=True)
    ck = torch.load(pt, map_location="cpu")
    model = fc.load_classifier(pt)
    acc = test_accuracy(model)
    attrs = {
        "test_accuracy": acc,
        "epochs": int(ck.get("epochs", -1)),
        "seed": int(ck.get("seed", -1)),
        "made_by": "tests/reference/fmnist_classifier.py (Adam lr 1e-3, batch 128, "
                   "seed-fixed) on the 60,000 fmnist32 training images; exported by "
                   "tests/reference/export_fmnist_net.py",
        "torch_version": str(torch.__version__),
        "input": "1 x 32 x 32 in [-1, 1]: 28x28 zero-padded by 2, x / 127.5 - 1",
    }
    export(model, args.out, attrs)
    print(f"test accuracy {acc:.4f}; wrote {args.out}")


if __name__ == "__main__":
    main()
