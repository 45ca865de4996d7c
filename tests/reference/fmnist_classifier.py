"""A small CNN classifier for `fmnist32` images, the feature extractor of the
quality check (tests/reference/frechet.py, tools/quality.sh).

Images are the spec's fmnist32 convention: 28x28 zero-padded by 2 pixels to
32x32, scaled x/127.5 - 1 (so the padding is -1). The network:
  Conv(3,1,1) 1->32, ReLU, MaxPool 2       (16x16)
  Conv(3,1,1) 32->64, ReLU, MaxPool 2      (8x8)
  Conv(3,1,1) 64->128, ReLU, MaxPool 2     (4x4)
  Linear 2048->128, ReLU                   <- features(x): 128-d
  Dropout 0.3 (training only), Linear 128->10
trained with Adam (lr 1e-3, batch 128) for 3 epochs on the 60,000 training
images, seed-fixed. It reaches about 91% test accuracy, which is enough for
its penultimate layer to separate the classes and their styles.

Run (once; about 2-4 minutes on 2 cores):
  /usr/bin/python3 tests/reference/fmnist_classifier.py --out runs/quality/classifier.pt
The weights are a run artifact: do not commit them.

Imported by frechet.py and torch_pipeline.py (load_fmnist32, load_classifier,
features); keep it free of side effects.
"""
import argparse
import gzip
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DATA = "/usr/share/datasets/fashion-mnist"
CLASSES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Boot"]
FEATURE_DIM = 128


def _read_idx(path, magic_want, ndim):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    hdr = np.frombuffer(raw[:4 + 4 * ndim], dtype=">i4")
    dims = [int(d) for d in hdr[1:]]
    if int(hdr[0]) != magic_want or len(raw) != 4 + 4 * ndim + int(np.prod(dims)):
        raise ValueError(f"{path}: not an IDX file with magic {magic_want}")
    return np.frombuffer(raw[4 + 4 * ndim:], dtype=np.uint8).reshape(dims)


def load_fmnist32_u8(split, data=DATA):
    """split 'train' or 'test' -> (uint8 images (N, 32, 32) zero-padded, int64 labels (N))."""
    stem = {"train": "train", "test": "t10k"}[split]
    img = _read_idx(os.path.join(data, f"{stem}-images-idx3-ubyte.gz"), 2051, 3)
    lab = _read_idx(os.path.join(data, f"{stem}-labels-idx1-ubyte.gz"), 2049, 1)
    if img.shape[0] != lab.shape[0] or img.shape[1:] != (28, 28):
        raise ValueError(f"{data}: {split} images {img.shape} and labels {lab.shape} disagree")
    return np.pad(img, ((0, 0), (2, 2), (2, 2))), lab.astype(np.int64)


def u8_to_float(u8):
    """uint8 (N, 32, 32) -> float32 tensor (N, 1, 32, 32) in [-1, 1]: x/127.5 - 1."""
    return torch.from_numpy(u8.astype(np.float32) / 127.5 - 1.0)[:, None]


def float_to_u8(x):
    """float images in [-1, 1] (any shape) -> uint8 with the C tools' rule:
    clamp to [-1, 1], round((x + 1) * 127.5) half away from zero (lroundf)."""
    x = np.asarray(x, dtype=np.float32)
    x = np.where(np.isnan(x), -1.0, np.clip(x, -1.0, 1.0))
    return np.floor((x + 1.0) * np.float32(127.5) + 0.5).astype(np.uint8)


def load_fmnist32(split, data=DATA):
    """split 'train' or 'test' -> (float32 (N, 1, 32, 32) in [-1, 1], labels (N))."""
    u8, lab = load_fmnist32_u8(split, data)
    return u8_to_float(u8), torch.from_numpy(lab)


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1, 1)
        self.conv3 = nn.Conv2d(64, 128, 3, 1, 1)
        self.fc1 = nn.Linear(128 * 4 * 4, FEATURE_DIM)
        self.drop = nn.Dropout(0.3)
        self.fc2 = nn.Linear(FEATURE_DIM, 10)

    def features(self, x):
        """x (B, 1, 32, 32) in [-1, 1] -> penultimate activations (B, 128)."""
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        h = F.max_pool2d(F.relu(self.conv3(h)), 2)
        return F.relu(self.fc1(h.flatten(1)))

    def forward(self, x):
        return self.fc2(self.drop(self.features(x)))


def load_classifier(path):
    """The trained classifier from `path` (written by this script), in eval mode."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no classifier; train it with "
                                f"tests/reference/fmnist_classifier.py --out {path}")
    ck = torch.load(path, map_location="cpu")
    model = Classifier()
    model.load_state_dict(ck["state_dict"])
    model.eval()
    return model


@torch.no_grad()
def features(model, x, batch=1000):
    """x (N, 1, 32, 32) in [-1, 1] -> (features (N, 128) float64 numpy, logits (N, 10))."""
    model.eval()
    fs, ls = [], []
    for i in range(0, x.shape[0], batch):
        f = model.features(x[i:i + batch])
        fs.append(f)
        ls.append(model.fc2(f))
    return torch.cat(fs).double().numpy(), torch.cat(ls)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/quality/classifier.pt")
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    xtr, ytr = load_fmnist32("train", args.data)
    xte, yte = load_fmnist32("test", args.data)
    model = Classifier()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    g = torch.Generator().manual_seed(args.seed)
    N, B = xtr.shape[0], args.batch
    t0 = time.time()
    for ep in range(args.epochs):
        model.train()
        perm = torch.randperm(N, generator=g)
        tot, n = 0.0, 0
        for i in range(0, N, B):
            idx = perm[i:i + B]
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += loss.item() * idx.numel()
            n += idx.numel()
        _, logits = features(model, xte)
        acc = (logits.argmax(1) == yte).double().mean().item()
        print(f"epoch {ep + 1}: train loss {tot / n:.4f}, test accuracy {acc:.4f} "
              f"({time.time() - t0:.0f} s)", flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp.pt"
    torch.save({"state_dict": model.state_dict(), "test_accuracy": acc,
                "epochs": args.epochs, "seed": args.seed}, tmp)
    os.replace(tmp, args.out)
    print(f"test accuracy {acc:.4f}; saved {args.out}")


if __name__ == "__main__":
    main()
