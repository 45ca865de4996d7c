"""Writes the LPIPS goldens read by tests/test_lpips.c:

tests/golden/lpips_net.h5: a narrow LPIPS network (VGG stage widths
  8 16 16 24 24) as convert_lpips.py writes it, end to end: random weights
  are saved with torch.save in the published layouts (torchvision's vgg16
  state_dict with a classifier, LPIPS's vgg.pth heads), then converted.

tests/golden/lpips.h5 (references in float64 from float32 values, stored as
float32, flat in C layout):
  small/   the narrow network on B = 2 pairs of 32 x 32 images, the
           reference run from the saved state_dicts (not the converted
           file): cfg = B S seed; dout (B); value (B), layers (B, 5) (each
           tap's term), dxhat = d sum_b dout[b] value[b] / d xhat
  full/    VGG16's widths at 64 x 64, B = 1, dout = 1, with weights from
           det_param below (not stored: both sides regenerate them):
           cfg = B S seed; value, layers, dxhat
  pool_{i} max pool cases with ties: cfg = B C H W k s p; in, dout / out, din
           (torch routes a tie's gradient to the window's first maximum)

Images: x = det_fill(B * 3 * S * S, seed), xhat = x + 0.25 det_fill(..,
seed + 1) in float32, seed = cfg's last entry: the first of 1, 3, 5, ... for
which xhat's path keeps away from VGG's kinks (see far_from_kinks).

Run with Debian's torch: /usr/bin/python3 tests/reference/gen_lpips.py
"""
import math
import os
import sys
import tempfile

import h5py
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convert_lpips  # noqa: E402
import lpips_mirror as M  # noqa: E402

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "golden")
SMALL_WIDTHS = (8, 16, 16, 24, 24)
U64 = np.uint64


def det_fill(n, seed):
    """n values in [-1, 1), each k / 2^23 - 1 for an integer k < 2^24 (exact
    float32): k = the top 24 bits of splitmix64's finaliser of
    (seed << 32) + i + 0x9E3779B97F4A7C15. Counter-based, so numpy fills the
    15 million weights of VGG16 at once. tests/test_lpips.c has the same."""
    z = (U64(seed) << U64(32)) + np.arange(n, dtype=np.uint64) + U64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> U64(30))) * U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> U64(27))) * U64(0x94D049BB133111EB)
    z = z ^ (z >> U64(31))
    return ((z >> U64(40)).astype(np.float64) / float(1 << 23) - 1.0).astype(np.float32)


def det_param(i, name, shape):
    """Tensor i (in the file's order, vae/lpips.c's lpips_table) regenerated:
    conv weights u * sqrt(6 / fan_in) (He's variance), biases u / 10, head
    weights (u + 1) / 2 (non-negative, as LPIPS's trained heads), all float32."""
    u = det_fill(int(np.prod(shape)), 1000 + i)
    if name.startswith("lin"):
        v = (u + np.float32(1.0)) * np.float32(0.5)
    elif len(shape) == 4:
        fan_in = shape[1] * shape[2] * shape[3]
        v = u * np.float32(math.sqrt(6.0 / fan_in))
    else:
        v = u * np.float32(0.1)
    return torch.from_numpy(v.astype(np.float32).reshape(shape))


def images(B, S, seed):
    n = B * 3 * S * S
    x = det_fill(n, seed)
    xhat = x + np.float32(0.25) * det_fill(n, seed + 1)
    return [torch.from_numpy(v.reshape(B, 3, S, S)).double() for v in (x, xhat)]


KINK_MARGIN = 1e-6


def far_from_kinks(net, xhat):
    """1 if every pre-activation of xhat's path is at least KINK_MARGIN (of
    its layer's largest) away from the ReLU's kink, and every max-pool window
    with a positive maximum has it that far ahead of the runner-up. The
    gradient jumps at a kink: float32 convolutions (C's Winograd rounds
    differently from torch's) deciding a value of -1.5e-7 of the layer's
    largest the other way than float64 moved the full-width gradient by 0.2%
    over a 24 x 22 patch. Ties at 0 (all-zero windows) are exact on both
    sides and harmless."""
    with torch.no_grad():
        h = (xhat - net.shift) / net.scale
        for m in net.features:
            if isinstance(m, torch.nn.ReLU):
                if (h.abs() < KINK_MARGIN * h.abs().max()).any():
                    return 0
            elif isinstance(m, torch.nn.MaxPool2d):
                B, C, H, W = h.shape
                w = h[:, :, :H // 2 * 2, :W // 2 * 2].reshape(B, C, H // 2, 2, W // 2, 2)
                w = w.permute(0, 1, 2, 4, 3, 5).reshape(B, C, H // 2, W // 2, 4)
                top = w.topk(2, dim=-1).values
                pos = top[..., 0] > 0
                if (top[..., 0] - top[..., 1] < KINK_MARGIN * top[..., 0])[pos].any():
                    return 0
            h = m(h)
    return 1


def pick_images(net, B, S):
    """The first seed 1, 3, 5, ... whose images keep away from the kinks."""
    net = net.double()
    for seed in range(1, 200, 2):
        x, xhat = images(B, S, seed)
        if far_from_kinks(net, xhat):
            return seed, x, xhat
    raise SystemExit("no seed keeps away from the kinks")


def put(g, name, t):
    if torch.is_tensor(t):
        t = t.detach().reshape(-1).numpy()
    g[name] = np.asarray(t, dtype=np.float32).reshape(-1)


def reference(net, g, x, xhat, dout):
    """value, layers, dxhat of the float64 mirror into group g."""
    net = net.double()
    xhat = xhat.clone().requires_grad_(True)
    value, layers = net(x, xhat)
    (value * dout).sum().backward()
    assert torch.isfinite(xhat.grad).all(), "the reference gradient is not finite"
    put(g, "value", value)
    put(g, "layers", layers)
    put(g, "dxhat", xhat.grad)
    print(f"{g.name}: seed {g['cfg'][2]}, value {value.detach().numpy()}, |dxhat| max "
          f"{xhat.grad.abs().max().item():.3e}")


def small_case(f, tmp):
    """The narrow network: random state_dicts in the published layouts,
    converted into lpips_net.h5; the reference from the state_dicts."""
    gen = torch.Generator().manual_seed(1234)
    net = M.LPIPS(SMALL_WIDTHS)
    vgg, lin = {}, {}
    for k, v in net.state_dict().items():
        if k.startswith("lin"):
            lin[k] = torch.rand(v.shape, generator=gen) * 0.5
        elif v.dim() == 4:
            fan_in = v.shape[1] * 9
            vgg[k] = torch.randn(v.shape, generator=gen) * math.sqrt(2.0 / fan_in)
        else:
            vgg[k] = torch.randn(v.shape, generator=gen) * 0.05
    # torchvision's classifier, narrow; the converter drops it
    w5 = SMALL_WIDTHS[4] * 49
    for k, shape in (("classifier.0", (32, w5)), ("classifier.3", (32, 32)),
                     ("classifier.6", (10, 32))):
        vgg[k + ".weight"] = torch.randn(shape, generator=gen)
        vgg[k + ".bias"] = torch.randn(shape[0], generator=gen)
    vgg_path, lin_path = os.path.join(tmp, "vgg16-small.pth"), os.path.join(tmp, "vgg-small.pth")
    torch.save(vgg, vgg_path)
    torch.save(lin, lin_path)
    convert_lpips.convert(vgg_path, lin_path, os.path.join(GOLDEN, "lpips_net.h5"))

    net.load_state_dict({**vgg, **lin}, strict=False)
    missing = set(net.state_dict()) - set(vgg) - set(lin)
    assert not missing, missing
    B, S = 2, 32
    seed, x, xhat = pick_images(net, B, S)
    g = f.create_group("small")
    g["cfg"] = np.array([B, S, seed], dtype=np.int32)
    dout = torch.tensor([0.75, -1.25], dtype=torch.float64)
    put(g, "dout", dout)
    reference(net, g, x, xhat, dout)


def full_case(f):
    net = M.LPIPS(M.VGG16_WIDTHS)
    keys = list(net.state_dict().items())
    # the file's order: the convs (weight, bias), then the heads
    order = [kv for kv in keys if kv[0].startswith("features")] + \
            [kv for kv in keys if kv[0].startswith("lin")]
    sd = {k: det_param(i, k, tuple(v.shape)) for i, (k, v) in enumerate(order)}
    net.load_state_dict(sd, strict=True)
    seed, x, xhat = pick_images(net, 1, 64)
    g = f.create_group("full")
    g["cfg"] = np.array([1, 64, seed], dtype=np.int32)
    reference(net, g, x, xhat, torch.ones(1, dtype=torch.float64))


def pool_case(f, i, B, C, H, W, k, s, p, levels):
    """Values from `levels` integers (many ties) or continuous (levels 0)."""
    gen = torch.Generator().manual_seed(77 + i)
    if levels:
        x = torch.randint(0, levels, (B, C, H, W), generator=gen).float()
    else:
        x = torch.randn(B, C, H, W, generator=gen)
    x.requires_grad_(True)
    out = F.max_pool2d(x, k, s, p)
    dout = torch.randn(out.shape, generator=gen)
    (out * dout).sum().backward()
    g = f.create_group(f"pool_{i}")
    g["cfg"] = np.array([B, C, H, W, k, s, p], dtype=np.int32)
    put(g, "in", x)
    put(g, "dout", dout)
    put(g, "out", out)
    put(g, "din", x.grad)


def main():
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp, \
            h5py.File(os.path.join(GOLDEN, "lpips.h5"), "w", libver="latest") as f:
        small_case(f, tmp)
        full_case(f)
        pool_case(f, 0, 2, 3, 8, 8, 2, 2, 0, 3)   # VGG's pool, ties
        pool_case(f, 1, 1, 2, 9, 7, 3, 2, 1, 2)   # overlapping, padded, odd sides, ties
        pool_case(f, 2, 2, 2, 7, 7, 2, 2, 0, 0)   # floor: the last row and column unused


if __name__ == "__main__":
    main()
