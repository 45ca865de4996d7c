"""Writes tests/golden/vae.h5: forward results and every parameter gradient
of narrow vae-f4c4 configurations, for tests/test_vae.c.

Each case is a group ("/" for the grey case, "/rgb" for the 3-channel one)
holding: config (int: in_channels, image_size, base_channels,
latent_channels, batch), kl_weight, x, eps, loss, rec, kl, mean, logvar,
x_hat, decode_mean (= decode(mean)), model/<key> (float32 weights, the
checkpoint layout) and grad/<key>.

Weights, x and eps are stored as float32; the reference is computed in
float64 from those float32 values. The KL weight is large here so the KL
gradient is visible next to the reconstruction gradient at 1e-4. In the rgb
case one log-variance channel is driven below -30, so the clamp (and its
zero gradient) is exercised.

Run: /usr/bin/python3 tests/reference/gen_vae.py
"""
import os
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vae_mirror import VAE  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "golden", "vae.h5")


def make_case(f, group, seed, C, S, b, Z, B, kl_weight, clamp_channel=None):
    torch.manual_seed(seed)
    m = VAE(in_channels=C, image_size=S, base_channels=b, latent_channels=Z,
            kl_weight=kl_weight)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("bias"):
                p.uniform_(-0.5, 0.5)  # PyTorch's bias bound is tiny here
        if clamp_channel is not None:
            m.encoder[8].bias[Z + clamp_channel] = -40.0
    h = S // 4
    x = torch.rand(B, C, S, S) * 2 - 1
    eps = torch.randn(B, Z, h, h)

    # float32 values, reference in float64
    m = m.double()
    loss, rec, kl = m.loss(x.double(), eps.double())
    x_hat, mean, logvar = m.last
    loss.backward()
    with torch.no_grad():
        dec_mean = m.decode(mean)
    if clamp_channel is not None:
        assert (logvar[:, clamp_channel] == -30.0).all()

    g = f.require_group(group)

    def put(name, t):
        g.create_dataset(name, data=np.asarray(t, dtype=np.float32))

    g.create_dataset("config", data=np.array([C, S, b, Z, B], dtype=np.int32))
    put("kl_weight", [kl_weight])
    put("x", x.numpy())
    put("eps", eps.numpy())
    put("loss", [loss.item()])
    put("rec", [rec.item()])
    put("kl", [kl.item()])
    put("mean", mean.detach().numpy())
    put("logvar", logvar.detach().numpy())
    put("x_hat", x_hat.detach().numpy())
    put("decode_mean", dec_mean.numpy())
    for k, p in m.named_parameters():
        put("model/" + k, p.detach().numpy())
        put("grad/" + k, p.grad.numpy())
    print(f"{group}: loss {loss.item():.6f} rec {rec.item():.6f} kl {kl.item():.6f}")


def main():
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with h5py.File(OUT, "w", libver="latest") as f:
        make_case(f, "/", 1, C=1, S=16, b=6, Z=4, B=3, kl_weight=0.5)
        make_case(f, "/rgb", 2, C=3, S=8, b=4, Z=4, B=3, kl_weight=0.1,
                  clamp_channel=1)
    print(OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
