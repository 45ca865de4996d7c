"""Reference kl-gan training in PyTorch: the run the C kl-gan trainer is
compared with at equal steps (shared/spec/default-models.md, "Autoencoder:
vae-kl-f4", "Discriminator: patchgan-d3", "Autoencoder loss: kl-gan").

Networks: kl_mirror.KLAutoencoder (PyTorch default init) and
gan_mirror.NLayerDiscriminator (width --disc-width, taming's weights_init).
The loss is gen_klgan.py's (the kl-gan golden's): per batch of B images,
  rec  = |x - x_hat| (+ perceptual_weight * LPIPS(x, x_hat) per image with
         --perceptual FILE, the HDF5 file of convert_lpips.py; frozen);
  nll  = sum(rec) / B;  kl = sum 0.5 (mean^2 + exp(lv) - 1 - lv) / B;
  from the 0-based step --disc-start on: g = -mean(D(x_hat)) and the
  adaptive weight w = 0.5 ||d nll/dW|| / (||d g/dW|| + 1e-4) (clamped to
  [0, 1e4], detached; W = decoder.conv_out.weight), else g = w = 0 and D is
  neither run nor stepped;
  autoencoder loss nll + w g + 1e-6 kl, one Adam step (betas 0.5, 0.9, eps
  1e-8, --lr 1e-4); then (from --disc-start on) the hinge loss
  0.5 (mean(relu(1 - D(x))) + mean(relu(1 + D(x_hat)))) on the same step's
  detached x_hat, one Adam step of D (same settings). D runs in training mode
  on every pass (3 per step: BatchNorm batch statistics, running averages
  updated each pass).
Data: a folder with train/ and test/ of PNG/JPEG images (tools/photo-set.sh
writes one), converted to RGB, resized on the shorter side to --image-size
and centre-cropped (a no-op for photo-set's crops), x / 127.5 - 1. Each epoch
is a fresh shuffle of the training images in batches of --batch (the last
one partial), every image flipped left-right with probability 1/2
(--no-hflip: never); eps ~ N(0, 1) fresh each step. All draws from
torch.manual_seed(--seed).

Held-out evaluation (every --eval-every steps and at the end) on the first
--eval-n test images in sorted name order (0: all), the reconstruction
r = clamp(decode(mean(x)), -1, 1) in float (no 8-bit rounding), N images,
C channels, S x S pixels:
  heldout_psnr = 10 log10(4 / max(MSE, 4e-12)), MSE = sum (r - x)^2 / (N C S S)
                 (tools/vae_reconstruct.c's, through toolkit.c vae_psnr);
  heldout_l1   = sum |r - x| / (N C S S);
  heldout_hf_ratio = sum over images of E(r) / sum over images of E(x), with
      E(y) = sum over channels c and interior pixels 1 <= i, j <= S - 2 of
      (y[c,i,j] - (1/9) sum_{a,b in {-1,0,1}} y[c,i+a,j+b])^2,
      the energy of the image minus its 3x3 box blur (border pixels, whose
      3x3 window leaves the image, are not counted). 1 keeps the original's
      fine detail; an autoencoder that blurs scores below 1.

Log: JSON lines as tools/trainer.c writes them, to --log (default
<--out>.log.jsonl, or none without --out): after step n (1-based)
  {"step": n, "epoch": n / steps_per_epoch, "loss", "nll", "l1", "lpips",
   "kl", "g", "w", "d_loss" (0 before --disc-start), "img_per_s", "elapsed_s"}
and at each evaluation {"step": n, "heldout_psnr", "heldout_l1",
"heldout_hf_ratio"}. --out writes a vae-kl checkpoint the C tools load
(convert_kl_vae.py's layout, step = --steps) with the discriminator's
state_dict under /disc. --eval CKPT computes the held-out figures of any
vae-kl checkpoint (the C run's) with this same code, without training.

  /usr/bin/python3 tests/reference/torch_train_kl.py --data runs/photos --steps 2000 \
      --threads 2 --out runs/torch-kl.h5
  /usr/bin/python3 tests/reference/torch_train_kl.py --data runs/photos --eval runs/c-kl.h5
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convert_kl_vae  # noqa: E402
from gan_mirror import NLayerDiscriminator, weights_init  # noqa: E402
from gen_klgan import klgan_ae_loss, klgan_d_loss  # noqa: E402
from kl_mirror import KLAutoencoder  # noqa: E402
from lpips_mirror import LPIPS, widths_of  # noqa: E402

IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp")


def read_folder(path, size):
    """Every image under `path` (recursively, sorted by path) -> uint8
    tensor (N, 3, size, size)."""
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs
                   if f.lower().endswith(IMAGE_EXT))
    if not files:
        raise SystemExit(f"{path}: no images")
    out = np.empty((len(files), size, size, 3), dtype=np.uint8)
    for i, f in enumerate(files):
        try:
            im = Image.open(f).convert("RGB")
        except OSError as e:
            raise SystemExit(f"{f}: cannot read: {e}")
        w, h = im.size
        if (w, h) != (size, size):
            s = size / min(w, h)
            im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BILINEAR)
            w, h = im.size
            im = im.crop(((w - size) // 2, (h - size) // 2, (w - size) // 2 + size,
                          (h - size) // 2 + size))
        out[i] = np.asarray(im)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def to_float(u8):
    return u8.float() / 127.5 - 1.0


def hf_energy(y):
    """E(y) per image (see the docstring): (N, C, S, S) -> (N,) float64."""
    y = y.double()
    blur = F.avg_pool2d(y, 3, stride=1, padding=0)  # the interior's 3x3 means
    d = y[:, :, 1:-1, 1:-1] - blur
    return (d ** 2).sum(dim=(1, 2, 3))


@torch.no_grad()
def evaluate(ae, x_u8, batch):
    se = ae_sum = e_rec = e_orig = 0.0
    for i in range(0, x_u8.shape[0], batch):
        x = to_float(x_u8[i:i + batch])
        r = ae.decode(ae.encode(x)[0]).clamp(-1.0, 1.0)
        d = (r - x).double()
        se += (d ** 2).sum().item()
        ae_sum += d.abs().sum().item()
        e_rec += hf_energy(r).sum().item()
        e_orig += hf_energy(x).sum().item()
    n = x_u8.numel()
    mse = max(se / n, 4e-12)
    return {"heldout_psnr": 10.0 * math.log10(4.0 / mse), "heldout_l1": ae_sum / n,
            "heldout_hf_ratio": e_rec / e_orig if e_orig > 0 else float("nan")}


def load_lpips(path):
    import h5py
    try:
        with h5py.File(path, "r") as f:
            sd = {k: torch.from_numpy(f["model"][k][()]) for k in f["model"]}
    except (OSError, KeyError) as e:
        raise SystemExit(f"{path}: not an LPIPS file of convert_lpips.py: {e}")
    lp = LPIPS(widths_of(sd))
    try:
        lp.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise SystemExit(f"{path}: not an LPIPS file of convert_lpips.py: {e}")
    lp.requires_grad_(False)
    return lp.eval()


def int_list(s):
    return tuple(int(v) for v in s.split(",")) if s else ()


def load_checkpoint(path):
    """A vae-kl checkpoint (C's, this script's, convert_kl_vae.py's) -> the
    mirror holding its /model."""
    import h5py
    try:
        with h5py.File(path, "r") as f:
            at = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
            if at.get("model") != "vae-kl":
                raise SystemExit(f"{path}: not a vae-kl checkpoint (model {at.get('model')!r})")
            sd = {k: torch.from_numpy(f["model"][k][()]) for k in f["model"]}
        ae = KLAutoencoder(int(at["ch"]), int_list(at["ch_mult"]), int(at["num_res_blocks"]),
                           int_list(at["attn_resolutions"]), int(at["z_channels"]),
                           int(at["in_channels"]), int(at["image_size"]), int(at["groups"]))
        ae.load_state_dict(sd, strict=True)
    except (OSError, KeyError, RuntimeError) as e:
        raise SystemExit(f"{path}: cannot load as a vae-kl checkpoint: {e}")
    return ae, int(at["image_size"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="folder with train/ and test/ images")
    ap.add_argument("--steps", type=int, default=0, help="training steps (required to train)")
    ap.add_argument("--eval", default=None, metavar="CKPT",
                    help="no training: the held-out figures of a vae-kl checkpoint (e.g. the "
                         "C trainer's), one JSON line on stdout")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--disc-start", type=int, default=0,
                    help="0-based step from which the discriminator runs")
    ap.add_argument("--disc-weight", type=float, default=0.5)
    ap.add_argument("--kl-weight", type=float, default=1e-6)
    ap.add_argument("--perceptual", default=None, help="LPIPS HDF5 (convert_lpips.py)")
    ap.add_argument("--perceptual-weight", type=float, default=1.0)
    ap.add_argument("--no-hflip", action="store_true")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--ch", type=int, default=32)
    ap.add_argument("--ch-mult", default="1,2,4")
    ap.add_argument("--num-res-blocks", type=int, default=1)
    ap.add_argument("--attn-resolutions", default="")
    ap.add_argument("--z-channels", type=int, default=4)
    ap.add_argument("--groups", type=int, default=32)
    ap.add_argument("--disc-width", type=int, default=32)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--eval-n", type=int, default=0, help="held-out images (0: all)")
    ap.add_argument("--out", default=None, help="checkpoint to write (HDF5)")
    ap.add_argument("--log", default=None, help="JSON-lines log (default <out>.log.jsonl)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.eval:
        ae, size = load_checkpoint(a.eval)
        xte = read_folder(os.path.join(a.data, "test"), size)
        xte = xte[:a.eval_n] if a.eval_n else xte
        print(json.dumps({"checkpoint": a.eval, "images": xte.shape[0],
                          **evaluate(ae, xte, a.batch)}))
        return
    if a.steps < 1 or a.batch < 1 or a.eval_every < 1:
        ap.error("--steps, --batch and --eval-every must be positive")

    torch.manual_seed(a.seed)
    xtr = read_folder(os.path.join(a.data, "train"), a.image_size)
    xte = read_folder(os.path.join(a.data, "test"), a.image_size)
    if a.eval_n:
        xte = xte[:a.eval_n]
    cfg = dict(ch=a.ch, ch_mult=list(int_list(a.ch_mult)), num_res_blocks=a.num_res_blocks,
               attn_resolutions=list(int_list(a.attn_resolutions)), z_channels=a.z_channels,
               in_channels=3, image_size=a.image_size, groups=a.groups)
    ae = KLAutoencoder(cfg["ch"], tuple(cfg["ch_mult"]), cfg["num_res_blocks"],
                       tuple(cfg["attn_resolutions"]), cfg["z_channels"], 3, a.image_size,
                       a.groups)
    d = NLayerDiscriminator(input_nc=3, ndf=a.disc_width, n_layers=3)
    d.apply(weights_init)
    d.train()
    lp = load_lpips(a.perceptual) if a.perceptual else None
    opt_ae = torch.optim.Adam(ae.parameters(), lr=a.lr, betas=(0.5, 0.9), eps=1e-8)
    opt_d = torch.optim.Adam(d.parameters(), lr=a.lr, betas=(0.5, 0.9), eps=1e-8)
    log_path = a.log or (a.out + ".log.jsonl" if a.out else None)
    log = open(log_path, "w") if log_path else None
    N, B = xtr.shape[0], a.batch
    steps_per_epoch = (N + B - 1) // B
    h = a.image_size // 2 ** (len(cfg["ch_mult"]) - 1)
    print(f"torch_train_kl: {N} training, {xte.shape[0]} held-out images, "
          f"{sum(p.numel() for p in ae.parameters()):,} autoencoder and "
          f"{sum(p.numel() for p in d.parameters()):,} discriminator parameters, "
          f"{a.steps} steps, batch {B}, threads {a.threads}", file=sys.stderr)

    def record(obj):
        if log:
            log.write(json.dumps(obj) + "\n")
            log.flush()

    t0, perm, items = time.time(), None, 0
    for step in range(a.steps):
        s = step % steps_per_epoch
        if s == 0:
            perm = torch.randperm(N)
        x = to_float(xtr[perm[s * B:(s + 1) * B]])
        if not a.no_hflip:
            flip = torch.rand(x.shape[0]) < 0.5
            x[flip] = x[flip].flip(3)
        eps = torch.randn(x.shape[0], a.z_channels, h, h)
        disc = step >= a.disc_start
        loss, figs, xhat = klgan_ae_loss(ae, d, lp, x, eps, disc, a.kl_weight, a.disc_weight,
                                         a.perceptual_weight)
        opt_ae.zero_grad(set_to_none=True)
        loss.backward()
        opt_ae.step()
        d_loss = torch.zeros(())
        if disc:
            d_loss = klgan_d_loss(d, x, xhat)
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        figs = {k: float(v) for k, v in figs.items()}
        figs["d_loss"] = float(d_loss)
        if not all(math.isfinite(v) for v in figs.values()):
            raise SystemExit(f"torch_train_kl: step {step + 1}: a loss is not finite: {figs}")
        el = time.time() - t0
        done, items = step + 1, items + x.shape[0]
        record({"step": done, "epoch": round(done / steps_per_epoch, 4), **figs,
                "img_per_s": round(items / el, 2), "elapsed_s": round(el, 3)})
        if done % 50 == 0 or done == a.steps:
            print(f"step {done}/{a.steps} | " + " ".join(f"{k} {v:.4g}" for k, v in figs.items())
                  + f" | {el:.1f} s", file=sys.stderr, flush=True)
        if done % a.eval_every == 0 or done == a.steps:
            e = evaluate(ae, xte, B)
            record({"step": done, **e})
            print(f"step {done}: held-out PSNR {e['heldout_psnr']:.3f} dB, L1 "
                  f"{e['heldout_l1']:.5f}, HF ratio {e['heldout_hf_ratio']:.4f} "
                  f"({xte.shape[0]} images)", file=sys.stderr, flush=True)
    train_s = time.time() - t0
    if log:
        log.close()
    if a.out:
        convert_kl_vae.write_h5(ae.state_dict(), cfg, a.out, "torch_train_kl.py", a.steps,
                                {"disc": {k: v for k, v in d.state_dict().items()
                                          if not k.endswith("num_batches_tracked")}})
    print(f"steps {a.steps} in {train_s:.1f} s ({train_s / a.steps * 1000:.1f} ms/step); "
          f"held-out PSNR {e['heldout_psnr']:.3f} dB, L1 {e['heldout_l1']:.5f}, "
          f"HF ratio {e['heldout_hf_ratio']:.4f}" + (f"; wrote {a.out}" if a.out else ""))


if __name__ == "__main__":
    main()
