"""Inputs for the editing measurements of docs/QUALITY.md (issue 14): the first
N Fashion-MNIST test images as 32x32 grey PNGs (the models never trained on
them) and two sets of inpainting masks of the same names.

  OUT/images/NNNNNN.png        test image i, padded to 32x32 as the C reader does
  OUT/masks-centre/NNNNNN.png  white (to fill) over the centre 16x16 square
  OUT/masks-half/NNNNNN.png    white over a random half: left, right, top or
                               bottom, drawn per image from numpy's PCG64 (seed)

Run: /usr/bin/python3 tests/reference/edit_inputs.py --out runs/edit --n 2000
"""
import argparse
import os

import numpy as np
from PIL import Image

from fmnist_classifier import load_fmnist32_u8


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    img, _ = load_fmnist32_u8("test")
    if not 0 < a.n <= len(img):
        ap.error(f"--n must be in 1..{len(img)}")
    rng = np.random.default_rng(a.seed)
    for sub in ("images", "masks-centre", "masks-half"):
        os.makedirs(os.path.join(a.out, sub), exist_ok=True)
    centre = np.zeros((32, 32), np.uint8)
    centre[8:24, 8:24] = 255
    for i in range(a.n):
        name = f"{i:06d}.png"
        Image.fromarray(img[i]).save(os.path.join(a.out, "images", name))
        Image.fromarray(centre).save(os.path.join(a.out, "masks-centre", name))
        half = np.zeros((32, 32), np.uint8)
        side = rng.integers(4)
        if side == 0: half[:, :16] = 255
        elif side == 1: half[:, 16:] = 255
        elif side == 2: half[:16, :] = 255
        else: half[16:, :] = 255
        Image.fromarray(half).save(os.path.join(a.out, "masks-half", name))
    print(f"{a.n} images and masks in {a.out}")


if __name__ == "__main__":
    main()
