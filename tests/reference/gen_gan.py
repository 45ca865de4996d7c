"""Writes tests/golden/gan.h5: torch 1.13 references for the kernels of
common/layers_gan.h and the patchgan-d3 discriminator (vae/patchgan.c), read by
tests/test_gan.c.

Random inputs are float32 values; the references run in float64 from them
(autograd) and are stored as float32, flat in C layout. Each case is a group
with an int dataset `cfg` of its dimensions.

Groups (inputs / outputs):
  batchnorm_{i}  cfg = B C HW; in w b dout rmean0 rvar0 / out mean rstd din dw db
                 rmean rvar (running statistics after one update, momentum 0.1)
  lrelu_{i}      cfg = n; slope; in dout / out din
  l1             cfg = n; scale; a b / loss da (= d(scale * loss)/da)
  hinge_{i}      cfg = n_real n_fake; real fake / loss dreal dfake
  gloss          cfg = n; fake / loss dfake
  adaptive_{i}   cfg = n; disc_weight; grad_nll grad_g / w   (gradients of an
                 L1 nll and a generator term at a conv weight, by autograd)
  disc           cfg = B C S width; dlogits / logits dx, grad/<key> for every
                 parameter, running/<key> for every BatchNorm buffer after the
                 forward; n_params (parameter tensors), count_w32 (parameter
                 count at width 32), out64 (logit side at 64 x 64)

The discriminator's weights and input are not stored (they would be most of
the file): both sides regenerate them with det_fill below (input: seed 999), a 64-bit LCG whose values are
exact float32 numbers, scaled by powers of two.
"""
import os

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from gan_mirror import (NLayerDiscriminator, adaptive_weight, generator_loss,
                        hinge_d_loss, l1_rec)

OUT = os.path.join(os.path.dirname(__file__), "..", "golden", "gan.h5")
gen = torch.Generator().manual_seed(4321)
M64 = (1 << 64) - 1


def rnd(*shape, scale=1.0, offset=0.0):
    """float32 random normal values, returned as a float64 leaf tensor."""
    x = torch.randn(shape, generator=gen, dtype=torch.float32) * scale + offset
    return x.double().requires_grad_(True)


def put(g, name, t):
    if torch.is_tensor(t):
        t = t.detach().reshape(-1).numpy()
    g[name] = np.asarray(t, dtype=np.float32).reshape(-1)


def cfg(g, *vals):
    g["cfg"] = np.array(vals, dtype=np.int32)


def backward(out, dout):
    (out * dout).sum().backward()


def det_fill(n, seed):
    """n values in [-1, 1), each k / 2^23 for an integer k: state =
    6364136223846793005 state + 1442695040888963407 (mod 2^64), starting from
    seed * 0x9E3779B97F4A7C15 + 1; value = (state >> 40) / 2^23 - 1.
    tests/test_gan.c has the same function."""
    s = (seed * 0x9E3779B97F4A7C15 + 1) & M64
    out = np.empty(n, dtype=np.float32)
    for i in range(n):
        s = (s * 6364136223846793005 + 1442695040888963407) & M64
        out[i] = np.float32((s >> 40) / float(1 << 23) - 1.0)
    return out


def det_param(name, shape, seed):
    """A parameter's regenerated value: conv weights u * 2^-(e // 2) with e
    the bit length of fan_in minus 1 (about 1/sqrt(fan_in)), BatchNorm
    weights 1 + u/4, biases u/4, all in float32."""
    u = det_fill(int(np.prod(shape)), seed)
    if len(shape) == 4:
        fan_in = shape[1] * shape[2] * shape[3]
        v = u * np.float32(2.0 ** -((fan_in.bit_length() - 1) // 2))
    elif name.endswith(".weight"):
        v = np.float32(1.0) + u * np.float32(0.25)
    else:
        v = u * np.float32(0.25)
    return v.astype(np.float32).reshape(shape)


def batchnorm_case(f, i, B, C, HW, scale=1.0, offset=0.0):
    g = f.create_group(f"batchnorm_{i}")
    cfg(g, B, C, HW)
    x = rnd(B, C, HW, scale=scale, offset=offset)
    w = rnd(C, scale=0.5, offset=1.0)
    b = rnd(C, scale=0.5)
    rm0 = torch.randn(C, generator=gen).double()
    rv0 = torch.rand(C, generator=gen).double() + 0.5
    rm, rv = rm0.clone(), rv0.clone()
    out = F.batch_norm(x.view(B, C, HW, 1), rm, rv, w, b, training=True, momentum=0.1,
                       eps=1e-5).view(B, C, HW)
    dout = rnd(B, C, HW).detach()
    backward(out, dout)
    xd = x.detach()
    mean = xd.mean(dim=(0, 2))
    rstd = 1.0 / torch.sqrt(xd.var(dim=(0, 2), unbiased=False) + 1e-5)
    for k, t in [("in", x), ("w", w), ("b", b), ("dout", dout), ("rmean0", rm0),
                 ("rvar0", rv0), ("out", out), ("mean", mean), ("rstd", rstd),
                 ("din", x.grad), ("dw", w.grad), ("db", b.grad), ("rmean", rm),
                 ("rvar", rv)]:
        put(g, k, t)


def lrelu_case(f, i, n, slope):
    g = f.create_group(f"lrelu_{i}")
    cfg(g, n)
    g["slope"] = np.array([slope], dtype=np.float32)
    x = torch.randn(n, generator=gen, dtype=torch.float32)
    x[::7] = 0.0  # exact zeros: the gradient there is slope * dout
    x = x.double().requires_grad_(True)
    out = F.leaky_relu(x, float(np.float32(slope)))
    dout = rnd(n).detach()
    backward(out, dout)
    put(g, "in", x), put(g, "dout", dout), put(g, "out", out), put(g, "din", x.grad)


def l1_case(f):
    g = f.create_group("l1")
    n, scale = 600, 0.25
    cfg(g, n)
    g["scale"] = np.array([scale], dtype=np.float32)
    a32 = torch.randn(n, generator=gen, dtype=torch.float32)
    b32 = torch.randn(n, generator=gen, dtype=torch.float32)
    b32[::9] = a32[::9]  # ties: PyTorch's subgradient of |.| at 0 is 0
    a = a32.double().requires_grad_(True)
    b = b32.double()
    loss = torch.abs(a - b).sum()
    (scale * loss).backward()
    put(g, "a", a), put(g, "b", b), put(g, "loss", loss.reshape(1)), put(g, "da", a.grad)


def hinge_case(f, i, n_real, n_fake, spread):
    g = f.create_group(f"hinge_{i}")
    cfg(g, n_real, n_fake)
    r = torch.randn(n_real, generator=gen, dtype=torch.float32) * spread
    fk = torch.randn(n_fake, generator=gen, dtype=torch.float32) * spread
    r[::5] = 1.0   # on the kinks: relu's gradient at 0 is 0
    fk[::6] = -1.0
    r = r.double().requires_grad_(True)
    fk = fk.double().requires_grad_(True)
    loss = hinge_d_loss(r, fk)
    loss.backward()
    put(g, "real", r), put(g, "fake", fk), put(g, "loss", loss.reshape(1))
    put(g, "dreal", r.grad), put(g, "dfake", fk.grad)


def gloss_case(f):
    g = f.create_group("gloss")
    n = 72
    cfg(g, n)
    fk = rnd(n, scale=2.0)
    loss = generator_loss(fk)
    loss.backward()
    put(g, "fake", fk), put(g, "loss", loss.reshape(1)), put(g, "dfake", fk.grad)


def adaptive_case(f, i, disc_weight, d_scale):
    """The decoder's last conv W (3, 8, 3, 3) maps h to x_hat; nll is the L1
    reconstruction term, g the generator term of a small conv 'discriminator'
    whose weights are scaled by d_scale (tiny: the weight clamps at 1e4)."""
    g = f.create_group(f"adaptive_{i}")
    h = rnd(2, 8, 8, 8).detach()
    W = rnd(3, 8, 3, 3, scale=0.2)
    x = rnd(2, 3, 8, 8).detach()
    Wd = (rnd(1, 3, 4, 4) * d_scale).detach()
    x_hat = F.conv2d(h, W, padding=1)
    nll = l1_rec(x, x_hat)
    logits = F.conv2d(F.leaky_relu(x_hat, 0.2), Wd, stride=2, padding=1)
    gl = generator_loss(logits)
    w, gn, gg = adaptive_weight(nll, gl, W, disc_weight)
    cfg(g, W.numel())
    g["disc_weight"] = np.array([disc_weight], dtype=np.float32)
    put(g, "grad_nll", gn), put(g, "grad_g", gg), put(g, "w", w.reshape(1))
    print(f"adaptive_{i}: w = {w.item():.6g}")


def disc_case(f):
    B, C, S, width = 2, 3, 32, 8
    g = f.create_group("disc")
    cfg(g, B, C, S, width)
    d = NLayerDiscriminator(C, width).double().train()
    params = dict(d.named_parameters())
    g["n_params"] = np.array([len(params)], dtype=np.int32)
    with torch.no_grad():
        for seed, (k, p) in enumerate(params.items()):
            p.copy_(torch.from_numpy(det_param(k, tuple(p.shape), 1000 + seed)).double())
    x = torch.from_numpy(det_fill(B * C * S * S, 999).reshape(B, C, S, S))
    x = x.double().requires_grad_(True)
    logits = d(x)
    dlogits = rnd(*logits.shape).detach()
    backward(logits, dlogits)
    put(g, "dlogits", dlogits), put(g, "logits", logits), put(g, "dx", x.grad)
    for k, p in params.items():
        put(g, f"grad/{k}", p.grad)
    for k, t in d.state_dict().items():
        if "running" in k:
            put(g, f"running/{k}", t)
    d32 = NLayerDiscriminator(3, 32)
    g["count_w32"] = np.array([sum(p.numel() for p in d32.parameters())], dtype=np.int32)
    g["out64"] = np.array([d32(torch.zeros(1, 3, 64, 64)).shape[-1]], dtype=np.int32)
    print(f"disc: logits {tuple(logits.shape)}, count at width 32 {g['count_w32'][0]}, "
          f"out at 64: {g['out64'][0]}")


def main():
    with h5py.File(OUT, "w", libver="latest") as f:
        batchnorm_case(f, 0, 3, 5, 25)
        batchnorm_case(f, 1, 2, 12, 36)
        batchnorm_case(f, 2, 4, 3, 1)
        batchnorm_case(f, 3, 2, 4, 25, scale=0.1, offset=10.0)  # large mean, small spread
        batchnorm_case(f, 4, 1, 6, 9)
        lrelu_case(f, 0, 200, 0.2)
        lrelu_case(f, 1, 77, 0.01)
        l1_case(f)
        hinge_case(f, 0, 50, 72, 1.5)
        hinge_case(f, 1, 8, 8, 0.3)  # every logit inside the margins
        gloss_case(f)
        adaptive_case(f, 0, 0.5, 1.0)
        adaptive_case(f, 1, 0.5, 1e-9)  # clamps at 1e4
        adaptive_case(f, 2, 1.0, 30.0)
        disc_case(f)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
