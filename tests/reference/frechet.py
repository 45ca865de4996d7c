"""Frechet distance between generated images and the Fashion-MNIST test set,
in the feature space of the fmnist32 classifier (fmnist_classifier.py).

FD = |mu_s - mu_t|^2 + tr(S_s) + tr(S_t) - 2 tr sqrt(S_s^1/2 S_t S_s^1/2),
with the means and covariances (unbiased, float64) of the classifier's
128-d penultimate activations of the samples (s) and of the 10,000 test
images (t). The matrix square roots come from symmetric eigendecompositions
(negative round-off eigenvalues clipped to 0), so no scipy is needed.

Samples (--samples):
  DIR            a folder of PNGs, e.g. written by `ldm-sample --out-dir DIR`
                 (8-bit grey 32x32, pixel = round((x + 1) * 127.5))
  FILE.npz       images in [-1, 1] (array 'images', else the first array),
                 shape (N, 32, 32) or (N, 1, 32, 32); quantised to 8 bits with
                 the same rule as the PNGs, so a PNG folder and an npz of the
                 same images give the same FD
  train[:N] / test[:N] / noise[:N]
                 sanity references: the first N training or test images, or
                 N images of uniform noise in [-1, 1] (seed 0)
With N samples the FD has a floor above 0 even for perfect samples (the
estimate of the covariance is noisy): `train:2000` is the floor for 2,000.

Prints the FD, the classifier's predicted-class histogram of the samples
(fraction per class; the test set is uniform, 0.100 each) and, with --json,
one JSON line with all of it.

Run: /usr/bin/python3 tests/reference/frechet.py --samples runs/x/samples \
        --classifier runs/quality/classifier.pt
"""
import argparse
import glob
import json
import os
import struct
import sys
import zlib

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fmnist_classifier as fc  # noqa: E402


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def read_png_grey(path):
    """Minimal reader for 8-bit greyscale, non-interlaced PNGs (what the C
    tools write); used only where PIL is missing. -> uint8 (H, W)."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG file")
    pos, idat, hdr = 8, [], None
    while pos + 8 <= len(raw):
        n, kind = struct.unpack(">I4s", raw[pos:pos + 8])
        body = raw[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + n
    if hdr is None or hdr[2] != 8 or hdr[3] != 0 or hdr[6] != 0:
        raise ValueError(f"{path}: only 8-bit greyscale non-interlaced PNGs are read "
                         f"without PIL (IHDR {hdr})")
    w, h = hdr[0], hdr[1]
    data = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8)
    if data.size != h * (w + 1):
        raise ValueError(f"{path}: image data has {data.size} bytes, want {h * (w + 1)}")
    rows = data.reshape(h, w + 1)
    out = np.zeros((h, w), dtype=np.int32)
    prev = np.zeros(w, dtype=np.int32)
    for y in range(h):
        ft, line = rows[y, 0], rows[y, 1:].astype(np.int32)
        if ft == 0:
            cur = line
        elif ft == 2:
            cur = (line + prev) & 255
        elif ft in (1, 3, 4):  # depend on the pixel to the left: one at a time
            cur = np.zeros(w, dtype=np.int32)
            for x in range(w):
                a = cur[x - 1] if x else 0
                c = prev[x - 1] if x else 0
                pred = a if ft == 1 else (a + prev[x]) // 2 if ft == 3 else \
                    int(_paeth(np.int32(a), np.int32(prev[x]), np.int32(c)))
                cur[x] = (line[x] + pred) & 255
        else:
            raise ValueError(f"{path}: bad PNG filter type {ft}")
        out[y] = cur
        prev = cur
    return out.astype(np.uint8)


def read_png_folder(folder):
    paths = sorted(glob.glob(os.path.join(folder, "*.png")))
    if not paths:
        raise ValueError(f"{folder}: no PNG files")
    try:
        from PIL import Image
        load = lambda p: np.asarray(Image.open(p).convert("L"))  # noqa: E731
    except ImportError:
        load = read_png_grey
    imgs = [load(p) for p in paths]
    shapes = {im.shape for im in imgs}
    if shapes != {(32, 32)}:
        raise ValueError(f"{folder}: images must be 32x32 grey, found shapes {sorted(shapes)}")
    return np.stack(imgs)


def load_samples_u8(spec):
    """--samples -> uint8 (N, 32, 32)."""
    name, _, count = spec.partition(":")
    if name in ("train", "test", "noise") and not os.path.exists(spec):
        n = int(count) if count else None
        if name == "noise":
            rng = np.random.default_rng(0)
            return fc.float_to_u8(rng.uniform(-1, 1, size=(n or 2000, 32, 32)))
        u8, _ = fc.load_fmnist32_u8(name)
        return u8[:n]
    if os.path.isdir(spec):
        return read_png_folder(spec)
    if spec.endswith(".npz"):
        z = np.load(spec)
        x = z["images"] if "images" in z.files else z[z.files[0]]
        if x.ndim == 4 and x.shape[1] == 1:
            x = x[:, 0]
        if x.ndim != 3 or x.shape[1:] != (32, 32):
            raise ValueError(f"{spec}: images must be (N, 32, 32) or (N, 1, 32, 32), got {x.shape}")
        return fc.float_to_u8(x)
    raise ValueError(f"{spec}: not a folder, an .npz, or train/test/noise[:N]")


def stats(f):
    """features (N, D) float64 -> mean (D), unbiased covariance (D, D)."""
    return f.mean(0), np.cov(f, rowvar=False)


def sqrtm_psd(s):
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, s1, mu2, s2):
    r1 = sqrtm_psd(s1)
    m = r1 @ s2 @ r1
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    d = mu1 - mu2
    return float(d @ d + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def test_stats(model, classifier_path):
    """Mean and covariance of the test set's features, cached beside the classifier."""
    cache = classifier_path + ".test-stats.npz"
    if os.path.exists(cache) and os.path.getmtime(cache) >= os.path.getmtime(classifier_path):
        z = np.load(cache)
        return z["mu"], z["sigma"]
    u8, _ = fc.load_fmnist32_u8("test")
    f, _ = fc.features(model, fc.u8_to_float(u8))
    mu, sigma = stats(f)
    tmp = cache + ".tmp.npz"
    np.savez(tmp, mu=mu, sigma=sigma)
    os.replace(tmp, cache)
    return mu, sigma


def evaluate(samples, classifier_path, threads=2):
    torch.set_num_threads(threads)
    model = fc.load_classifier(classifier_path)
    u8 = load_samples_u8(samples)
    if u8.shape[0] < 2:
        raise ValueError(f"{samples}: need at least 2 images, got {u8.shape[0]}")
    f, logits = fc.features(model, fc.u8_to_float(u8))
    mu_s, s_s = stats(f)
    mu_t, s_t = test_stats(model, classifier_path)
    fd = frechet_distance(mu_s, s_s, mu_t, s_t)
    hist = np.bincount(logits.argmax(1).numpy(), minlength=10) / u8.shape[0]
    return {"samples": samples, "n": int(u8.shape[0]), "fd": fd,
            "class_hist": [round(float(h), 4) for h in hist]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", required=True,
                    help="PNG folder, .npz, or train[:N] / test[:N] / noise[:N]")
    ap.add_argument("--classifier", default="runs/quality/classifier.pt")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="also print one JSON line")
    args = ap.parse_args()
    try:
        r = evaluate(args.samples, args.classifier, args.threads)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{r['samples']}: {r['n']} images, FD {r['fd']:.3f}")
    print("predicted classes: " + ", ".join(
        f"{c} {h:.3f}" for c, h in zip(fc.CLASSES, r["class_hist"])))
    if args.json:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
