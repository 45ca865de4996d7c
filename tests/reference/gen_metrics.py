"""Writes tests/golden/metrics.h5 and tests/golden/fmnist_small.h5: numpy and
torch references for metrics/stats.c and metrics/featnet.c, read by
tests/test_metrics.c.

metrics.h5 (float64 unless noted):
  /feat/a (300, 16), /feat/b (250, 16) float32   two Gaussians, different
        means and covariances; /feat/s (10, 16) float32, n < D (singular)
  /feat/mu_a, sigma_a, mu_b, sigma_b             np.mean, np.cov (unbiased)
  /feat/fid_ab, fid_sa                           frechet.py's frechet_distance
        (symmetric eigendecompositions, no scipy)
  /feat/kid_ab     unbiased MMD^2 (Binkowski et al.), cubic kernel
        (x.y / D + 1)^3, of a[:250] against b: whole sets of equal size, so a
        C subset of 250 of 250 items is the whole set in another order and
        the value does not depend on the draw
  /is/logits (103, 10) float32, /is/mean_10, /is/std_10
        Inception Score over 10 consecutive splits [i n / 10, (i+1) n / 10),
        std with ddof 0
  /small/...       fmnist_classifier.py's Classifier at reduced widths
        (conv 16, 16, 32; 24 features; 10 logits), random weights, whose
        tensors are fmnist_small.h5 (root attribute kind = "fmnist-cnn",
        /model/<state_dict key>), run on:
          x32 (5, 1, 32, 32)          -> feat32 (5, 24), logits32 (5, 10)
          x28 (2, 1, 28, 28)          -> F.interpolate to 32 (bilinear,
                                          align_corners=False) -> feat28, logits28
          rgb32 (2, 3, 32, 32)        -> channel mean -> featrgb32, logitsrgb32
          rgb (2, 3, 24, 40)          -> interpolate, then channel mean
                                          -> featrgb, logitsrgb
        all float32
  /real/...        the committed metrics/fmnist-cnn.h5 (if present) on the
        first 16 test images: feat (16, 128), logits (16, 10) float32,
        labels (16) int32; fid_halves: FD of the test set's first 5000
        against its last 5000 in float64 (features in float32 as torch
        computes them, statistics in float64)

Run: /usr/bin/python3 tests/reference/gen_metrics.py
"""
import os
import sys

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fmnist_classifier as fc  # noqa: E402
from frechet import frechet_distance  # noqa: E402

GOLDEN = os.path.join(HERE, "..", "golden")
NET = os.path.join(HERE, "..", "..", "metrics", "fmnist-cnn.h5")
rng = np.random.default_rng(2024)
torch.manual_seed(2024)


def gaussian(n, D, shift, spread):
    L = rng.normal(size=(D, D)) * spread / np.sqrt(D)
    return (rng.normal(size=(n, D)) @ L + shift).astype(np.float32)


def stats(x):
    x = x.astype(np.float64)
    return x.mean(0), np.cov(x, rowvar=False)


def mmd2_unbiased(x, y):
    x, y = x.astype(np.float64), y.astype(np.float64)
    m, D = x.shape
    k = lambda a, b: (a @ b.T / D + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) \
        - 2 * kxy.sum() / (m * m)


def inception_score(logits, splits):
    z = logits.astype(np.float64)
    lp = z - z.max(1, keepdims=True)
    lp = lp - np.log(np.exp(lp).sum(1, keepdims=True))
    p = np.exp(lp)
    n, scores = z.shape[0], []
    for i in range(splits):
        a, b = i * n // splits, (i + 1) * n // splits
        py = p[a:b].mean(0)
        kl = (p[a:b] * (lp[a:b] - np.log(py))).sum(1).mean()
        scores.append(np.exp(kl))
    return np.mean(scores), np.std(scores)


def small_classifier():
    """fmnist_classifier.Classifier with its layers swapped for narrower ones:
    its own features()/forward() run them."""
    m = fc.Classifier()
    m.conv1 = nn.Conv2d(1, 16, 3, 1, 1)
    m.conv2 = nn.Conv2d(16, 16, 3, 1, 1)
    m.conv3 = nn.Conv2d(16, 32, 3, 1, 1)
    m.fc1 = nn.Linear(32 * 4 * 4, 24)
    m.fc2 = nn.Linear(24, 10)
    with torch.no_grad():  # biases well away from 0 so that a dropped bias shows
        for k, v in m.state_dict().items():
            if k.endswith("bias"):
                v.uniform_(-0.3, 0.3)
    return m.eval()


def write_net(path, model):
    with h5py.File(path, "w") as f:
        f.attrs["kind"] = "fmnist-cnn"
        g = f.create_group("model")
        for k, v in model.state_dict().items():
            g[k] = v.detach().numpy().astype(np.float32)


@torch.no_grad()
def run(model, x):
    f = model.features(x)
    return f.numpy(), model.fc2(f).numpy()


def load_net(path):
    model = fc.Classifier()
    with h5py.File(path, "r") as f:
        model.load_state_dict({k: torch.from_numpy(f["model"][k][()])
                               for k in f["model"]})
    return model.eval()


def main():
    out = h5py.File(os.path.join(GOLDEN, "metrics.h5"), "w")
    D = 16
    a, b = gaussian(300, D, 0.0, 1.0), gaussian(250, D, 0.5, 1.5)
    s = gaussian(10, D, 0.2, 1.0)
    mu_a, sig_a = stats(a)
    mu_b, sig_b = stats(b)
    mu_s, sig_s = stats(s)
    g = out.create_group("feat")
    for k, v in dict(a=a, b=b, s=s, mu_a=mu_a, sigma_a=sig_a, mu_b=mu_b, sigma_b=sig_b).items():
        g[k] = v
    g["fid_ab"] = frechet_distance(mu_a, sig_a, mu_b, sig_b)
    g["fid_sa"] = frechet_distance(mu_s, sig_s, mu_a, sig_a)
    g["kid_ab"] = mmd2_unbiased(a[:250], b)
    print(f"fid_ab {g['fid_ab'][()]:.6f} fid_sa {g['fid_sa'][()]:.6f} "
          f"kid_ab {g['kid_ab'][()]:.6f}")

    g = out.create_group("is")
    logits = (rng.normal(size=(103, 10)) * 3).astype(np.float32)
    g["logits"] = logits
    g["mean_10"], g["std_10"] = inception_score(logits, 10)

    g = out.create_group("small")
    model = small_classifier()
    write_net(os.path.join(GOLDEN, "fmnist_small.h5"), model)
    x32 = torch.rand(5, 1, 32, 32) * 2 - 1
    x28 = torch.rand(2, 1, 28, 28) * 2 - 1
    rgb32 = torch.rand(2, 3, 32, 32) * 2 - 1
    rgb = torch.rand(2, 3, 24, 40) * 2 - 1
    up = lambda x: F.interpolate(x, size=(32, 32), mode="bilinear",  # noqa: E731
                                 align_corners=False)
    cases = {"32": (x32, x32), "28": (x28, up(x28)),
             "rgb32": (rgb32, rgb32.mean(1, keepdim=True)),
             "rgb": (rgb, up(rgb).mean(1, keepdim=True))}
    for name, (x, xin) in cases.items():
        f, l = run(model, xin)
        g["x" + name] = x.numpy()
        g["feat" + name], g["logits" + name] = f, l

    if os.path.exists(NET):
        g = out.create_group("real")
        model = load_net(NET)
        torch.set_num_threads(2)
        u8, lab = fc.load_fmnist32_u8("test")
        x = fc.u8_to_float(u8)
        f, l = run(model, x[:16])
        g["feat"], g["logits"], g["labels"] = f, l, lab[:16].astype(np.int32)
        feats, _ = fc.features(model, x)  # float32 features, as float64
        fd = frechet_distance(*stats(feats[:5000]), *stats(feats[5000:]))
        g["fid_halves"] = fd
        print(f"real: test[:5000] vs test[5000:] FD {fd:.6f}")
    else:
        print(f"{NET} missing: no /real references (run export_fmnist_net.py first)")
    out.close()


if __name__ == "__main__":
    main()
