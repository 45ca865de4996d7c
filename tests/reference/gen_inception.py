"""Writes tests/golden/inception.h5: the FID Inception-v3 of
inception_mirror.py at reduced width (WIDTHS below, 32 logits) with random
weights AND random BatchNorm running statistics, for tests/test_inception.c.

  /model, root attribute kind   the network, written by
                                convert_fid_inception.py from a .pth of the
                                random state_dict (so the converter's output
                                is what the C test loads)
  /input                        attrs seed, batch: the input (batch, 3, 299,
                                299) is common/rng.h's rng_uniform_fill(seed)
                                in [-1, 1) (ported below), not stored; head =
                                its first 64 values, to check the port
  /out/<block>/mean             (batch, C) the block output's channel means
  /out/<block>/sample           values at flat indices (j * 2654435761) mod n,
                                j < 256, of the output (batch, C, H, W)
  /out/pool3, /out/logits       (batch, D), (batch, n_logits) in full
  /pool/{max,avg,resize}_<i>    cfg (int) B C H W k s p (resize: B C H W OH
                                OW), in, out: the pool.h kernels against
                                F.max_pool2d, F.avg_pool2d(count_include_pad
                                =False), F.interpolate(bilinear)

Weights are quantised to a few significant bits so that the gzipped file
stays small; BatchNorm folding still yields arbitrary float32 weights. The
reference runs in float64 from the stored float32 values.

Run with Debian's torch: /usr/bin/python3 tests/reference/gen_inception.py
With --full DIR it writes DIR/inception_full.h5 instead: the full-width
network (1008 logits, about 100 MB), for a run of test_inception outside CI:
  build/tests/test_inception DIR/inception_full.h5
"""
import argparse
import os
import sys
import tempfile

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convert_fid_inception as C  # noqa: E402
import inception_mirror as M  # noqa: E402

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "golden",
                      "inception.h5")
N_SAMPLE = 256
SAMPLE_STRIDE = 2654435761
INPUT_SEED = 15
# The golden network: channels / 32 (some branches 1 wide), except that the
# 96-wide 3x3 convs of Mixed_5b..5d and 6a get 16 channels a side: the least
# that the C code runs through Winograd (5b's branch3x3dbl_3, into its slice
# of the block's output).
WIDTHS = {96: 16}


# ---- common/rng.h's counter-based generator
M64 = (1 << 64) - 1


def _mix64(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xbf58476d1ce4e5b9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94d049bb133111eb)
    return z ^ (z >> np.uint64(31))


def rng_uniform_fill(seed, n, lo, hi):
    """rng_init(seed) then rng_uniform_fill(n, lo, hi), in float32."""
    with np.errstate(over="ignore"):
        s = _mix64(np.array([seed], dtype=np.uint64))[0]
        i = np.arange(1, n + 1, dtype=np.uint64)
        v = _mix64(s + i * np.uint64(0x9e3779b97f4a7c15))
    u = (v >> np.uint64(40)).astype(np.float32) * np.float32(1.0 / 16777216.0)
    return np.float32(lo) + np.float32(hi - lo) * u


def quantise(t, bits):
    """Rounds to multiples of a power of two about 2^-bits of the largest
    value, so every value has at most ~bits significant bits."""
    m = t.abs().max().item()
    if m == 0:
        return t
    step = 2.0 ** (np.floor(np.log2(m)) - bits)
    return torch.round(t / step) * step


def randomize(net, gen, bits):
    """He-normal convs, random BatchNorm affines and running statistics,
    PyTorch-default fc; quantised (bits > 0) and rounded to float32."""
    def rn(shape, std):
        return torch.randn(shape, generator=gen, dtype=torch.float64) * std

    def ru(shape, lo, hi):
        return torch.rand(shape, generator=gen, dtype=torch.float64) * (hi - lo) + lo

    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                vals = [(m.weight, rn(m.weight.shape, (2.0 / fan_in) ** 0.5))]
            elif isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                vals = [(m.weight, ru(c, 0.5, 1.5)), (m.bias, rn(c, 0.2)),
                        (m.running_mean, rn(c, 0.2)), (m.running_var, ru(c, 0.5, 2.0))]
            elif isinstance(m, nn.Linear):
                b = m.in_features ** -0.5
                vals = [(m.weight, ru(m.weight.shape, -b, b)), (m.bias, ru(m.bias.shape, -b, b))]
            else:
                continue
            for p, v in vals:
                p.copy_((quantise(v, bits) if bits else v).float())


def sample_index(n):
    return (np.arange(N_SAMPLE, dtype=np.uint64) * np.uint64(SAMPLE_STRIDE)) % np.uint64(n)


def put(g, name, x):
    g[name] = np.asarray(x, dtype=np.float32)


def write_network_case(path, div, widths, n_logits, batch, bits, gzip, seed=2015):
    gen = torch.Generator().manual_seed(seed)
    net = M.fid_inception(div, n_logits, widths)
    randomize(net, gen, bits)
    with tempfile.TemporaryDirectory() as tmp:
        pth = os.path.join(tmp, "pt_inception-random.pth")
        torch.save(net.state_dict(), pth)
        back = C.convert(pth, path, gzip=gzip)
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in net.state_dict().items())
    with h5py.File(path, "r") as f:  # the converter's file holds the state_dict
        assert f.attrs["kind"] == "inception-fid"
        assert sorted(f["model"]) == sorted(M.state_keys(net))
        for k in M.state_keys(net):
            assert np.array_equal(f["model"][k][()], net.state_dict()[k].numpy()), k
    x = rng_uniform_fill(INPUT_SEED, batch * 3 * M.SIZE * M.SIZE, -1.0, 1.0)
    with torch.no_grad():
        out = M.forward_blocks(net.double(), torch.from_numpy(x).double().reshape(
            batch, 3, M.SIZE, M.SIZE))
    with h5py.File(path, "a") as f:
        g = f.create_group("input")
        g.attrs["seed"] = INPUT_SEED
        g.attrs["batch"] = batch
        put(g, "head", x[:64])
        o = f.create_group("out")
        for name in M.BLOCKS:
            t = out[name]
            b = o.create_group(name)
            put(b, "mean", t.mean(dim=(2, 3)))
            put(b, "sample", t.reshape(-1).numpy()[sample_index(t.numel())])
            print(f"{name:14s} {tuple(t.shape)}  mean {t.mean():.3g}  std {t.std():.3g}  "
                  f"zero {(t == 0).double().mean():.2f}")
        put(o, "pool3", out["pool3"])
        put(o, "logits", out["logits"])


# ---- pool.h kernels
def pool_cases(path, gen):
    def rnd(*shape):
        return torch.randn(shape, generator=gen, dtype=torch.float32)

    with h5py.File(path, "a") as f:
        g = f.create_group("pool")
        # B C H W k s p: odd sizes, padding at the borders, a global pool
        for i, (B, Ch, H, W, k, s, p) in enumerate([
                (2, 3, 7, 9, 3, 2, 0), (1, 2, 6, 5, 3, 1, 1), (2, 2, 9, 7, 3, 2, 1),
                (1, 3, 8, 8, 2, 2, 0)]):
            x = rnd(B, Ch, H, W)
            c = g.create_group(f"max_{i}")
            c["cfg"] = np.array([B, Ch, H, W, k, s, p], dtype=np.int32)
            put(c, "in", x)
            put(c, "out", F.max_pool2d(x, k, s, p))
        for i, (B, Ch, H, W, k, s, p) in enumerate([
                (2, 3, 7, 9, 3, 1, 1), (1, 2, 6, 5, 3, 2, 1), (1, 2, 9, 7, 5, 1, 2),
                (2, 3, 8, 8, 8, 1, 0), (1, 2, 7, 7, 3, 2, 0)]):
            x = rnd(B, Ch, H, W).double()
            c = g.create_group(f"avg_{i}")
            c["cfg"] = np.array([B, Ch, H, W, k, s, p], dtype=np.int32)
            put(c, "in", x)
            put(c, "out", F.avg_pool2d(x, k, s, p, count_include_pad=False))
        # up, down, mixed, same size, odd factors, about 28 -> 299's factor
        for i, (B, Ch, H, W, OH, OW) in enumerate([
                (1, 2, 5, 7, 11, 13), (1, 2, 13, 11, 5, 4), (2, 1, 7, 5, 3, 9),
                (1, 1, 4, 4, 4, 4), (1, 1, 5, 4, 53, 43), (1, 1, 37, 29, 10, 7)]):
            x = rnd(B, Ch, H, W)
            c = g.create_group(f"resize_{i}")
            c["cfg"] = np.array([B, Ch, H, W, OH, OW], dtype=np.int32)
            put(c, "in", x)
            put(c, "out", F.interpolate(x, size=(OH, OW), mode="bilinear",
                                        align_corners=False))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", metavar="DIR",
                    help="write DIR/inception_full.h5, the full-width case, instead")
    a = ap.parse_args()
    torch.set_num_threads(2)
    if a.full:
        path = os.path.join(a.full, "inception_full.h5")
        write_network_case(path, 1, None, M.N_LOGITS, batch=2, bits=0, gzip=False)
    else:
        path = GOLDEN
        write_network_case(path, 32, WIDTHS, 32, batch=2, bits=4, gzip=True)
        pool_cases(path, torch.Generator().manual_seed(1299))
    print(f"{path}: {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
