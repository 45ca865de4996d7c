"""Writes tests/golden/layers.h5: torch 1.13 references for every kernel in
common/layers.h, read by tests/test_layers.c.

Inputs, weights, biases and upstream gradients are random float32 (biases and
GroupNorm affine parameters too, so no gradient is trivially zero). The
reference runs in float64 from those float32 values via autograd; results are
stored as float32. Every tensor is stored flat in its C layout (NCHW,
PyTorch weight layouts). Each case is a group with an int dataset `cfg`
giving its dimensions, so the C test needs no table of its own.

Groups (inputs / outputs):
  conv2d_{i}     cfg = B C H W OC k s p has_bias;  in w [b] dout / out din dw [db]
  convt2d_{i}    cfg = B C H W OC k s p;           in w b dout / out din dw db
  linear         cfg = N IN OUT;                   in w b dout / out din dw db
  silu           cfg = n;                          in dout / out din
  groupnorm_{i}  cfg = B C HW G;                   in w b dout / out mean rstd din dw db
  upsample2x     cfg = B C H W;                    in dout / out din
  concat         cfg = B Ca Cb HW;                 a b dout / out da db
  chanbias       cfg = B C HW;                     x v dout / out dv
  sq_err         cfg = n; scale;                   a b / loss da (= d(scale*loss)/da)
  gaussian_kl    cfg = n; scale;                   mean logvar / loss dmean dlogvar
  attention_{i}  cfg = B C T heads;                q k v dout / out att dq dk dv
  timestep       cfg = B dim; t (int) / out
"""
import math
import os

import h5py
import numpy as np
import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(__file__), "..", "golden", "layers.h5")
gen = torch.Generator().manual_seed(1234)


def rnd(*shape, scale=1.0, offset=0.0):
    """float32 random normal values, returned as a float64 leaf tensor."""
    x = torch.randn(shape, generator=gen, dtype=torch.float32) * scale + offset
    return x.double().requires_grad_(True)


def uni(lo, hi, *shape):
    x = torch.rand(shape, generator=gen, dtype=torch.float32) * (hi - lo) + lo
    return x.double().requires_grad_(True)


def put(g, name, t):
    g[name] = t.detach().reshape(-1).numpy().astype(np.float32)


def cfg(g, *vals):
    g["cfg"] = np.array(vals, dtype=np.int32)


def backward(out, dout):
    (out * dout).sum().backward()


def conv2d_case(f, i, B, C, H, W, OC, k, s, p, hb, wscale):
    """Group conv2d_{i}; draws x, w, [b], dout in that order."""
    g = f.create_group(f"conv2d_{i}")
    cfg(g, B, C, H, W, OC, k, s, p, hb)
    x = rnd(B, C, H, W)
    w = rnd(OC, C, k, k, scale=wscale)
    b = rnd(OC) if hb else None
    out = F.conv2d(x, w, b, stride=s, padding=p)
    dout = rnd(*out.shape).detach()
    backward(out, dout)
    put(g, "in", x), put(g, "w", w), put(g, "dout", dout), put(g, "out", out)
    put(g, "din", x.grad), put(g, "dw", w.grad)
    if hb:
        put(g, "b", b), put(g, "db", b.grad)


def convt_case(f, i, B, C, H, W, OC, k, s, p, wscale):
    """Group convt2d_{i}; draws x, w, b, dout in that order."""
    g = f.create_group(f"convt2d_{i}")
    cfg(g, B, C, H, W, OC, k, s, p)
    x = rnd(B, C, H, W)
    w = rnd(C, OC, k, k, scale=wscale)
    b = rnd(OC)
    out = F.conv_transpose2d(x, w, b, stride=s, padding=p)
    assert out.shape[2] == (H - 1) * s - 2 * p + k
    dout = rnd(*out.shape).detach()
    backward(out, dout)
    for n, t in (("in", x), ("w", w), ("b", b), ("dout", dout), ("out", out),
                 ("din", x.grad), ("dw", w.grad), ("db", b.grad)):
        put(g, n, t)


def conv2d_cases(f):
    cases = [  # B C H W OC k s p bias
        (2, 3, 8, 8, 4, 3, 1, 1, 1),
        (2, 4, 8, 8, 6, 4, 2, 1, 1),
        (3, 5, 5, 7, 4, 1, 1, 0, 1),
        (2, 3, 5, 7, 4, 3, 2, 1, 1),
        (3, 4, 5, 7, 3, 3, 1, 1, 0),
        (2, 3, 7, 5, 5, 4, 2, 1, 1),
    ]
    for i, c in enumerate(cases):
        conv2d_case(f, i, *c, wscale=0.3)


def conv2d_wide_case(f, i):
    """A 3x3 stride-1 conv with 16 channels a side, which the C code runs
    through Winograd F(4x4, 3x3) (the other cases are too narrow for it).
    Generated last, so the cases before it keep their values."""
    conv2d_case(f, i, 3, 16, 6, 5, 20, 3, 1, 1, 1, wscale=0.1)


def phase_cases(f, conv_i, convt_i):
    """A 4x4 stride-2 conv and transposed conv wide enough that the C code
    runs them as 3x3 convs on 2x2 phases through Winograd (phase_conv.h):
    4 C and OC >= 16 for the conv, C and 4 OC >= 16 for the transposed one.
    Generated after everything else, so the cases before keep their values."""
    conv2d_case(f, conv_i, 2, 8, 8, 6, 20, 4, 2, 1, 1, wscale=0.1)
    convt_case(f, convt_i, 2, 16, 3, 5, 6, 4, 2, 1, wscale=0.1)


def convt_cases(f):
    cases = [  # B C H W OC k s p
        (2, 4, 4, 4, 3, 4, 2, 1),
        (2, 3, 5, 7, 4, 3, 2, 1),
        (3, 3, 5, 5, 2, 3, 1, 1),
    ]
    for i, c in enumerate(cases):
        convt_case(f, i, *c, wscale=0.3)


def linear_case(f):
    N, IN, OUTF = 5, 7, 6
    g = f.create_group("linear")
    cfg(g, N, IN, OUTF)
    x, w, b = rnd(N, IN), rnd(OUTF, IN, scale=0.4), rnd(OUTF)
    out = F.linear(x, w, b)
    dout = rnd(N, OUTF).detach()
    backward(out, dout)
    for n, t in (("in", x), ("w", w), ("b", b), ("dout", dout), ("out", out),
                 ("din", x.grad), ("dw", w.grad), ("db", b.grad)):
        put(g, n, t)


def silu_case(f):
    n = 200
    g = f.create_group("silu")
    cfg(g, n)
    x = uni(-8.0, 8.0, n)
    out = F.silu(x)
    dout = rnd(n).detach()
    backward(out, dout)
    for nm, t in (("in", x), ("dout", dout), ("out", out), ("din", x.grad)):
        put(g, nm, t)


def groupnorm_cases(f):
    # B C HW G. HW = 1 edge cases: groups of 2 values (C=64, G=32) and of 4.
    # Not C=8, G=4 at HW=1: with every group two well-separated values, xhat
    # is +-(1 - O(eps)) and the true input gradient is O(eps * rstd^2) times
    # the natural scale, pure cancellation that no float32 kernel (torch's
    # included) reproduces to 1e-5 of its own tiny maximum.
    cases = [(2, 8, 16, 4), (2, 64, 9, 32), (3, 64, 1, 32), (2, 16, 1, 4)]
    for i, (B, C, HW, G) in enumerate(cases):
        g = f.create_group(f"groupnorm_{i}")
        cfg(g, B, C, HW, G)
        # an offset and a scale so the mean and variance matter
        x = rnd(B, C, HW, scale=2.0, offset=1.5)
        w, b = rnd(C, offset=1.0, scale=0.5), rnd(C)
        out = F.group_norm(x, G, w, b, eps=1e-5)
        xd = x.detach().reshape(B, G, -1)
        mean = xd.mean(-1)
        rstd = 1.0 / torch.sqrt(xd.var(-1, unbiased=False) + 1e-5)
        dout = rnd(B, C, HW).detach()
        backward(out, dout)
        for n, t in (("in", x), ("w", w), ("b", b), ("dout", dout), ("out", out),
                     ("mean", mean), ("rstd", rstd), ("din", x.grad), ("dw", w.grad),
                     ("db", b.grad)):
            put(g, n, t)


def small_cases(f):
    B, C, H, W = 2, 3, 3, 5
    g = f.create_group("upsample2x")
    cfg(g, B, C, H, W)
    x = rnd(B, C, H, W)
    out = F.interpolate(x, scale_factor=2, mode="nearest")
    dout = rnd(*out.shape).detach()
    backward(out, dout)
    for n, t in (("in", x), ("dout", dout), ("out", out), ("din", x.grad)):
        put(g, n, t)

    B, Ca, Cb, HW = 2, 3, 2, 6
    g = f.create_group("concat")
    cfg(g, B, Ca, Cb, HW)
    a, b = rnd(B, Ca, HW), rnd(B, Cb, HW)
    out = torch.cat([a, b], 1)
    dout = rnd(*out.shape).detach()
    backward(out, dout)
    for n, t in (("a", a), ("b", b), ("dout", dout), ("out", out), ("da", a.grad),
                 ("db", b.grad)):
        put(g, n, t)

    B, C, HW = 2, 3, 5
    g = f.create_group("chanbias")
    cfg(g, B, C, HW)
    x, v = rnd(B, C, HW), rnd(B, C)
    out = x + v[:, :, None]
    dout = rnd(B, C, HW).detach()
    backward(out, dout)
    for n, t in (("x", x), ("v", v), ("dout", dout), ("out", out), ("dv", v.grad)):
        put(g, n, t)

    n, scale = 300, 1.0 / 300
    g = f.create_group("sq_err")
    cfg(g, n)
    g["scale"] = np.array([scale], dtype=np.float32)
    a, b = rnd(n), rnd(n)
    loss = ((a - b) ** 2).sum()
    (loss * float(np.float32(scale))).backward()
    for nm, t in (("a", a), ("b", b), ("loss", loss), ("da", a.grad)):
        put(g, nm, t)

    n, scale = 300, 0.37
    g = f.create_group("gaussian_kl")
    cfg(g, n)
    g["scale"] = np.array([scale], dtype=np.float32)
    m, lv = rnd(n), uni(-4.0, 3.0, n)
    loss = (0.5 * (m ** 2 + torch.exp(lv) - 1 - lv)).sum()
    (loss * float(np.float32(scale))).backward()
    for nm, t in (("mean", m), ("logvar", lv), ("loss", loss), ("dmean", m.grad),
                  ("dlogvar", lv.grad)):
        put(g, nm, t)


def attention_cases(f):
    cases = [(2, 8, 16, 1), (2, 16, 16, 2), (1, 12, 9, 3)]  # B C T heads
    for i, (B, C, T, heads) in enumerate(cases):
        g = f.create_group(f"attention_{i}")
        cfg(g, B, C, T, heads)
        D = C // heads
        q, k, v = rnd(B, C, T), rnd(B, C, T), rnd(B, C, T)
        qh, kh, vh = (t.reshape(B, heads, D, T) for t in (q, k, v))
        s = torch.einsum("bhdi,bhdj->bhij", qh, kh) / math.sqrt(D)
        att = torch.softmax(s, dim=-1)
        out = torch.einsum("bhij,bhdj->bhdi", att, vh).reshape(B, C, T)
        dout = rnd(B, C, T).detach()
        backward(out, dout)
        for n, t in (("q", q), ("k", k), ("v", v), ("dout", dout), ("out", out),
                     ("att", att), ("dq", q.grad), ("dk", k.grad), ("dv", v.grad)):
            put(g, n, t)


def timestep_case(f):
    t = torch.tensor([0, 1, 7, 123, 500, 999], dtype=torch.float64)
    dim = 64
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / half)
    a = t[:, None] * freqs[None]
    out = torch.cat([torch.sin(a), torch.cos(a)], dim=1)
    g = f.create_group("timestep")
    cfg(g, len(t), dim)
    g["t"] = t.numpy().astype(np.int32)
    put(g, "out", out)


def main():
    # the latest format has much smaller per-dataset headers
    with h5py.File(OUT, "w", libver="latest") as f:
        conv2d_cases(f)
        convt_cases(f)
        linear_case(f)
        silu_case(f)
        groupnorm_cases(f)
        small_cases(f)
        attention_cases(f)
        timestep_case(f)
        conv2d_wide_case(f, 6)
        phase_cases(f, 7, 3)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
