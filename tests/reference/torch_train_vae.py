"""Reference VAE training in PyTorch: the number the C trainer must match.

Trains vae_mirror.VAE (vae-f4c4) on Fashion-MNIST as the spec says: 60,000
training images zero-padded 28 -> 32 and scaled x/127.5 - 1, batch 128,
Adam lr 1e-3 (betas 0.9/0.999, eps 1e-8), PyTorch default init. Each epoch
is a fresh shuffle in ceil(60000/128) = 469 steps, the last one a partial
batch of 96 (no drop_last), like the C trainer. eps ~ N(0, 1) fresh per step.

Reports the test-set PSNR = 10 log10(4 / MSE), MSE over every pixel of all
10,000 test images of clamp(decode(mean), -1, 1) against the input, and the
training wall time. --save writes the weights as /model/<key> (checkpoint
layout, with the kind/config root attributes of a C VAE checkpoint).

Run: /usr/bin/python3 tests/reference/torch_train_vae.py --threads 2
"""
import argparse
import gzip
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vae_mirror import VAE  # noqa: E402

DATA = "/usr/share/datasets/fashion-mnist"


def read_idx_images(path):
    """IDX3 uint8 images (N, 28, 28) -> float32 (N, 1, 32, 32) in [-1, 1]."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, n, rows, cols = np.frombuffer(raw[:16], dtype=">i4")
    if magic != 2051 or len(raw) != 16 + n * rows * cols:
        raise ValueError(f"{path}: not an IDX3 image file")
    img = np.frombuffer(raw[16:], dtype=np.uint8).reshape(n, 1, rows, cols)
    x = img.astype(np.float32) / 127.5 - 1.0
    # zero-pad in pixel space: 0 -> -1 after scaling
    return np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)), constant_values=-1.0)


@torch.no_grad()
def test_psnr(model, x, batch=500):
    model.eval()
    se = 0.0
    for i in range(0, x.shape[0], batch):
        xb = x[i:i + batch]
        mean, _ = model.encode(xb)
        xh = model.decode(mean).clamp(-1.0, 1.0)
        se += ((xh - xb).double() ** 2).sum().item()
    model.train()
    mse = se / x.numel()
    return 10.0 * math.log10(4.0 / mse), mse


def save_h5(model, path, steps):
    import h5py
    with h5py.File(path, "w") as f:
        for k, v in model.state_dict().items():
            f.create_dataset("model/" + k, data=v.detach().cpu().numpy().astype(np.float32))
        f.attrs.create("kind", np.bytes_("vae"))
        f.attrs.create("model", np.bytes_("vae-f4c4"))
        f.attrs.create("step", np.int64(steps))
        f.attrs.create("in_channels", np.int64(model.in_channels))
        f.attrs.create("image_size", np.int64(model.image_size))
        f.attrs.create("base_channels", np.int64(model.encoder[0].out_channels))
        f.attrs.create("latent_channels", np.int64(model.latent_channels))
        f.attrs.create("kl_weight", np.float64(model.kl_weight))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--save", default=None, help="HDF5 file for the weights")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    xtr = torch.from_numpy(read_idx_images(os.path.join(args.data, "train-images-idx3-ubyte.gz")))
    xte = torch.from_numpy(read_idx_images(os.path.join(args.data, "t10k-images-idx3-ubyte.gz")))
    model = VAE()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8)
    N, B = xtr.shape[0], args.batch
    steps_per_epoch = (N + B - 1) // B
    h = model.image_size // 4

    t0 = time.time()
    step = 0
    for ep in range(args.epochs):
        perm = torch.randperm(N)
        for s in range(steps_per_epoch):
            xb = xtr[perm[s * B:(s + 1) * B]]
            eps = torch.randn(xb.shape[0], model.latent_channels, h, h)
            loss, rec, kl = model.loss(xb, eps)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step % 50 == 0 or s == steps_per_epoch - 1:
                print(f"epoch {ep} step {step} loss {loss.item():.3f} "
                      f"rec {rec.item():.3f} kl {kl.item():.2f} "
                      f"({time.time() - t0:.1f}s)", flush=True)
    train_s = time.time() - t0
    psnr, mse = test_psnr(model, xte)
    print(f"steps {step} (batch {B}, last batch {N - (steps_per_epoch - 1) * B}) "
          f"threads {args.threads} seed {args.seed}")
    print(f"train time {train_s:.1f} s ({train_s / step * 1000:.1f} ms/step)")
    print(f"test PSNR {psnr:.3f} dB (MSE {mse:.6f})")
    if args.save:
        save_h5(model, args.save, step)
        print("saved", args.save)


if __name__ == "__main__":
    main()
