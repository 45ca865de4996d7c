"""The class-conditional training of C against PyTorch at equal steps (issue 14).

Given one C run's latent cache (with labels) and its VAE, trains the PyTorch
mirror's conditional unet-s (torch_pipeline.train_unet with num_classes K and
p_uncond: the same held-out slice, batch, optimizer, clipping, EMA and step
count as ldm-train; its own random draws) for each --seeds entry, then scores
every model the same way, the C checkpoints given with --c-unet included:
--n samples of all classes in equal shares (image i asks for class i mod K),
DDIM 50 (eta 0) from the EMA weights, classifier-free guidance w for each
--guidance entry (sampler_mirror.guided), x_T drawn from torch's generator
seeded by --sample-seed (the same x_T for every model and w), decoded by the C
VAE, quantised to 8 bits as the PNGs of ldm-sample; then

  accuracy  the fraction the Fashion-MNIST classifier (--classifier, the
            network metrics/fmnist-cnn.h5 was exported from) assigns to the
            asked class;
  fd        the Frechet distance of all of them against the 10,000 test
            images in that classifier's features (frechet.py's measure).

The C models are sampled in PyTorch here too, so both sides go through one
measure (ldm-eval's accuracy on the C models is a cross-check; its x_T are C's).

Run: /usr/bin/python3 tests/reference/cond_side.py --latents latents.h5 \
        --vae vae.h5 --steps 3249 --seeds "0 1" --c-unet c-s0/unet.h5 \
        --classifier runs/stats/classifier.pt --json cond.jsonl
"""
import argparse
import json
import os
import sys
import time

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fmnist_classifier as fc  # noqa: E402
import frechet  # noqa: E402
import torch_pipeline as tp  # noqa: E402
from sampler_mirror import guided, sample  # noqa: E402
from unet_mirror import Schedule, UNet  # noqa: E402
from vae_mirror import VAE  # noqa: E402


def load_cache(path):
    with h5py.File(path, "r") as f:
        if "labels" not in f:
            sys.exit(f"{path}: no labels: encode a labelled source")
        mean = torch.from_numpy(f["mean"][...])
        logvar = torch.from_numpy(f["logvar"][...])
        labels = torch.from_numpy(f["labels"][...].astype(np.int64))
        scale = float(f.attrs["scale_factor"])
    return mean, logvar, labels, scale


def load_c_model(path, make):
    """A C checkpoint's /model (or /ema) tensors, named by the mirror's keys."""
    with h5py.File(path, "r") as f:
        model = make(dict(f.attrs))
        group = "ema" if "ema" in f else "model"
        sd = {k: torch.from_numpy(f[group][k][...]) for k in model.state_dict()}
    model.load_state_dict(sd, strict=True)
    return model.eval()


def make_vae(a):
    return VAE(in_channels=int(a["in_channels"]), image_size=int(a["image_size"]),
               base_channels=int(a["base_channels"]), latent_channels=int(a["latent_channels"]))


def make_unet(a):
    return UNet(num_classes=int(a.get("num_classes", 0)))


@torch.no_grad()
def score(unet, vae, scale, K, w, args, classifier, test_stats):
    sched = Schedule("linear", tp.T_STEPS)
    g = torch.Generator().manual_seed(args.sample_seed)
    side = vae.image_size // 4
    z = torch.randn(args.n, vae.latent_channels, side, side, generator=g)
    y = torch.arange(args.n) % K
    imgs = []
    for i in range(0, args.n, args.batch):
        fn = guided(unet, y[i:i + args.batch], K, w)
        zb, _ = sample(fn, sched, z[i:i + args.batch], "ddim", 50)
        imgs.append(vae.decode(zb / scale).clamp(-1, 1))
    u8 = fc.float_to_u8(torch.cat(imgs)[:, 0].numpy())
    f, logits = fc.features(classifier, fc.u8_to_float(u8))
    acc = float((logits.argmax(1) == y).double().mean())
    mu, sig = frechet.stats(f)
    fd = frechet.frechet_distance(mu, sig, *test_stats)
    return acc, fd


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--latents", required=True, help="the C run's latent cache (with labels)")
    ap.add_argument("--vae", required=True, help="the C VAE that made it (decodes the samples)")
    ap.add_argument("--steps", type=int, default=3249, help="PyTorch training steps")
    ap.add_argument("--seeds", default="0", help="seeds of the PyTorch trainings ('' none)")
    ap.add_argument("--c-unet", action="append", default=[], help="a C checkpoint to score too")
    ap.add_argument("--num-classes", type=int, default=10)
    ap.add_argument("--p-uncond", type=float, default=0.1)
    ap.add_argument("--guidance", default="1 2 4")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--sample-seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--classifier", default="runs/stats/classifier.pt")
    ap.add_argument("--json", default=None, help="append one JSON line per model and w")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    K = args.num_classes
    mean, logvar, labels, scale = load_cache(args.latents)
    vae = load_c_model(args.vae, make_vae)
    classifier = fc.load_classifier(args.classifier)
    test_stats = frechet.test_stats(classifier, args.classifier)
    models = [(f"C {p}", load_c_model(p, make_unet), None) for p in args.c_unet]
    for seed in args.seeds.split():
        g = torch.Generator().manual_seed(int(seed))
        targs = argparse.Namespace(batch=args.batch, seed=int(seed), unet_steps=args.steps,
                                   unet_minutes=None)
        t0 = time.time()
        _, ema, _, info = tp.train_unet(mean, logvar, scale, targs, g, labels=labels,
                                        num_classes=K, p_uncond=args.p_uncond)
        info["wall_s"] = round(time.time() - t0, 1)
        models.append((f"torch seed {seed}", ema.eval(), info))
    for name, unet, info in models:
        for w in [float(v) for v in args.guidance.split()]:
            acc, fd = score(unet, vae, scale, K, w, args, classifier, test_stats)
            print(f"{name:24s} guidance {w:g}: accuracy {acc:.4f}  FD {fd:.3f}", flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps({"model": name, "guidance": w, "accuracy": acc, "fd": fd,
                                        "n": args.n, "train": info}) + "\n")


if __name__ == "__main__":
    main()
