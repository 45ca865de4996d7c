"""Golden file for the kl-gan loss (tests/test_klgan.c, vae/klgan.c):
one autoencoder step's loss terms, adaptive weight and every autoencoder
gradient, then the discriminator's hinge loss, every discriminator gradient
and its BatchNorm running statistics after the step's three passes, computed
in float64 with the PyTorch mirrors (kl_mirror, gan_mirror, lpips_mirror) as
latent-diffusion's LPIPSWithDiscriminator does (shared/spec/default-models.md,
"Autoencoder loss: kl-gan").

Cases (small networks, so the file stays small), on one set of weights and
inputs stored in /on:
  on   discriminator on, with LPIPS (reduced widths);
  off  discriminator off (before disc_start), no LPIPS: g = w = 0 (its
       outputs and autoencoder gradients only).

Run: /usr/bin/python3 tests/reference/gen_klgan.py   (writes tests/golden/klgan.h5)
"""
import copy
import os
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gan_mirror import NLayerDiscriminator, adaptive_weight, generator_loss, hinge_d_loss  # noqa: E402
from kl_mirror import KLAutoencoder  # noqa: E402
from lpips_mirror import LPIPS  # noqa: E402

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "golden")
# The networks: vae-kl at ch 4 (groups 2), ch_mult (1, 2), 32x32 RGB; the
# discriminator at width 4; LPIPS at stage widths 4 4 8 8 8.
AE = dict(ch=4, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), z_channels=4,
          in_channels=3, image_size=32, groups=2)
D_WIDTH = 4
LP_WIDTHS = (4, 4, 8, 8, 8)
B = 2
OUT_KEYS = ("loss", "nll", "l1", "lpips", "kl", "g", "w")  # the order of /<case>/out
KL_WEIGHT, DISC_WEIGHT, PERCEPTUAL_WEIGHT = 1e-6, 0.5, 1.0


def klgan_ae_loss(ae, d, lp, x, eps, disc, kl_weight=KL_WEIGHT, disc_weight=DISC_WEIGHT,
                  perceptual_weight=PERCEPTUAL_WEIGHT):
    """The autoencoder's loss of one step -> (loss, figures, x_hat). d runs
    (in training mode) only when disc; lp may be None."""
    xhat, mean, logvar = ae(x, eps)
    rec = torch.abs(x - xhat)
    lp_mean = torch.zeros(())
    if lp is not None:
        dist, _ = lp(x, xhat)
        rec = rec + perceptual_weight * dist[:, None, None, None]
        lp_mean = dist.mean()
    nll = rec.sum() / x.shape[0]
    kl = 0.5 * (mean ** 2 + torch.exp(logvar) - 1.0 - logvar).sum() / x.shape[0]
    g = w = torch.zeros(())
    if disc:
        g = generator_loss(d(xhat))
        w, _, _ = adaptive_weight(nll, g, ae.last_layer(), disc_weight)
    loss = nll + w * g + kl_weight * kl
    l1 = torch.abs(x - xhat).sum() / x.shape[0]
    return loss, dict(loss=loss, nll=nll, l1=l1, lpips=lp_mean, kl=kl, g=g, w=w), xhat


def klgan_d_loss(d, x, xhat):
    return hinge_d_loss(d(x), d(xhat.detach()))


def put(g, name, t):
    g.create_dataset(name, data=t.detach().double().numpy().astype(np.float32))


def put_flat(g, name, tensors):
    """Tensors concatenated in order (the C tables' order): one dataset, as
    hundreds of small ones would make the file mostly HDF5 headers."""
    put(g, name, torch.cat([t.detach().reshape(-1) for t in tensors]))


def networks(seed):
    torch.manual_seed(seed)
    ae = KLAutoencoder(**AE).double()
    d = NLayerDiscriminator(input_nc=3, ndf=D_WIDTH, n_layers=3).double()
    with torch.no_grad():  # weights of typical size, BatchNorm affine off 1/0
        for p in d.parameters():
            p.add_(0.1 * torch.randn_like(p))
    lp = LPIPS(LP_WIDTHS).double()
    with torch.no_grad():
        for n, p in lp.named_parameters():
            if n.startswith("lin"):
                p.copy_(torch.rand_like(p))
    S = AE["image_size"]
    h = S // 2 ** (len(AE["ch_mult"]) - 1)
    x = (torch.rand(B, 3, S, S, dtype=torch.float64) * 2 - 1)
    eps = torch.randn(B, AE["z_channels"], h, h, dtype=torch.float64)
    # Round the inputs and every weight to float32 first: C starts from those.
    x, eps = x.float().double(), eps.float().double()
    with torch.no_grad():
        for m in (ae, d, lp):
            for p in m.state_dict().values():
                p.copy_(p.float().double())
    return ae, d, lp, x, eps


def case(f, name, nets, disc, with_lpips):
    ae, d, lp, x, eps = (copy.deepcopy(v) for v in nets)
    lp = lp if with_lpips else None
    g = f.create_group(name)
    if name == "on":
        put(g, "x", x)
        put(g, "eps", eps)
        put_flat(g, "ae", ae.state_dict().values())
        put_flat(g, "d", d.parameters())
        put_flat(g, "lpips", lp.state_dict().values())
    d.train()
    loss, figs, xhat = klgan_ae_loss(ae, d, lp, x, eps, disc)
    ae.zero_grad()
    loss.backward()
    put_flat(g, "out", [figs[k] for k in OUT_KEYS])
    put_flat(g, "ae_grad", [p.grad for p in ae.parameters()])
    if disc:
        d.zero_grad()
        dl = klgan_d_loss(d, x, xhat)
        dl.backward()
        put(g, "d_loss", dl.reshape(1))
        put_flat(g, "d_grad", [p.grad for p in d.parameters()])
        put_flat(g, "d_running", [v for k, v in d.state_dict().items() if "running" in k])
    print(f"{name}: loss {loss.item():.6f} " + " ".join(f"{k} {v.item():.6g}"
                                                        for k, v in figs.items()))


def main():
    os.makedirs(GOLDEN, exist_ok=True)
    path = os.path.join(GOLDEN, "klgan.h5")
    with h5py.File(path, "w") as f:
        nets = networks(1)
        case(f, "on", nets, disc=True, with_lpips=True)
        case(f, "off", nets, disc=False, with_lpips=False)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
