"""The whole latent-diffusion pipeline in PyTorch with the C tools' settings:
the reference that tools/quality.sh compares the C pipeline against.

Stages, mirroring tools/vae_train.c, vae_encode.c, ldm_train.c, ldm_sample.c
with the default models (vae_mirror.VAE, unet_mirror.UNet; PyTorch default
init, the spec's zero-initialised convolutions):
1. VAE: the 60,000 Fashion-MNIST training images (fmnist32) minus the last
   min(512, N/10) = 512, held out as in vae-train (their PSNR is reported);
   a fresh shuffle every epoch, ceil(59488/128) = 465 steps an epoch with a
   partial last batch; Adam lr 1e-3, betas (0.9, 0.999), eps 1e-8, batch 128,
   KL weight 1e-3, eps ~ N(0, I) fresh every step.
2. Encode: all 60,000 training images to (mean, logvar); scale_factor =
   1 / std (centred, over all elements, in double) of latents
   mean + exp(logvar/2) * eps drawn once, as vae-encode.
3. UNet: the last 512 latents held out as in ldm-train (their loss with fixed
   noise and t is reported); fresh shuffle every epoch; each step draws
   x0 = scale * (mean + exp(logvar/2) * eps) with fresh eps, noise, and t
   uniform in 0..999; eps-prediction MSE, linear schedule T = 1000; AdamW
   lr 2e-4, betas (0.9, 0.999), eps 1e-8, weight decay 0; gradients clipped
   to global norm 1.0; batch 128; EMA after update n with decay
   min(0.999, (1 + n) / (10 + n)).
4. Sample: --n images, DDIM with 50 steps (eta 0) from the EMA weights,
   x_T ~ N(0, I), divided by the scale factor, decoded, clamped to [-1, 1],
   written as 8-bit grey PNGs 000000.png ... (pixel = round((x + 1) * 127.5),
   as ldm-sample --out-dir) and/or an .npz of the float images.

PyTorch runs with glibc's heap trimming off (alloc.py): with it, the VAE
step page-faults its activations in every step and runs about 1.6x slower
on this machine. --glibc-malloc-defaults leaves it on.

Budgets as in the C tools: --vae-steps / --unet-steps count optimizer steps,
--vae-minutes / --unet-minutes stop after the first step that ends past the
budget; the clock starts when training starts (data loading, init and the
final held-out evaluation are outside it, as in C). The random streams are
torch generators seeded from --seed (they are not the C streams: C and torch
runs with one seed are two independent draws).

Run: /usr/bin/python3 tests/reference/torch_pipeline.py --vae-steps 285 \
        --unet-steps 850 --n 2000 --seed 0 --threads 2 --out-dir runs/q/torch-s0/samples
"""
import argparse
import copy
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import alloc  # noqa: E402
import fmnist_classifier as fc  # noqa: E402
from unet_mirror import PRED_EPS, Schedule, UNet, ddim_sample  # noqa: E402
from vae_mirror import VAE  # noqa: E402

T_STEPS = 1000


def held_out(n):
    """The C trainers' held-out slice at the end: min(512, N/10)."""
    return min(512, n // 10)


class Budget:
    """Step and/or wall-clock budget checked after every step, like the C tools."""

    def __init__(self, steps, minutes):
        self.steps, self.seconds = steps, (minutes * 60.0 if minutes else None)
        self.t0 = time.time()

    def elapsed(self):
        return time.time() - self.t0

    def done(self, step):
        return ((self.steps is not None and step >= self.steps) or
                (self.seconds is not None and self.elapsed() >= self.seconds))


def log(msg):
    print(msg, flush=True)


def train_vae(x, args, g):
    N = x.shape[0]
    hold = held_out(N)
    ntrain, B = N - hold, args.batch
    spe = (ntrain + B - 1) // B
    model = VAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    h = model.image_size // 4
    budget = Budget(args.vae_steps, args.vae_minutes)
    step, perm = 0, None
    while not budget.done(step):
        pos = step % spe
        if pos == 0 or perm is None:
            perm = torch.randperm(ntrain, generator=g)
        xb = x[perm[pos * B:(pos + 1) * B]]
        eps = torch.randn(xb.shape[0], model.latent_channels, h, h, generator=g)
        loss, rec, kl = model.loss(xb, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 50 == 0:
            log(f"vae step {step}: loss {loss.item():.3f} rec {rec.item():.3f} "
                f"kl {kl.item():.1f} ({budget.elapsed():.0f} s)")
    train_s = budget.elapsed()
    with torch.no_grad():
        xh = x[ntrain:]
        mean, _ = model.encode(xh)
        mse = ((model.decode(mean).clamp(-1, 1) - xh).double() ** 2).mean().item()
    psnr = 10 * math.log10(4 / mse)
    log(f"vae: {step} steps in {train_s:.1f} s ({train_s / step * 1000:.0f} ms/step), "
        f"final loss {loss.item():.3f}, held-out PSNR {psnr:.2f} dB ({hold} images)")
    return model, {"vae_steps": step, "vae_train_s": round(train_s, 2),
                   "vae_loss": round(loss.item(), 4), "vae_heldout_psnr": round(psnr, 4)}


@torch.no_grad()
def encode(vae, x, g, batch=500):
    means, logvars = [], []
    s = ss = 0.0
    for i in range(0, x.shape[0], batch):
        m, lv = vae.encode(x[i:i + batch])
        z = m.double() + torch.exp(0.5 * lv.double()) * torch.randn(m.shape, generator=g).double()
        s += z.sum().item()
        ss += (z * z).sum().item()
        means.append(m)
        logvars.append(lv)
    mean, logvar = torch.cat(means), torch.cat(logvars)
    n = mean.numel()
    var = ss / n - (s / n) ** 2
    return mean, logvar, 1.0 / math.sqrt(var)


def draw_x0(mean, logvar, idx, scale, g):
    m, lv = mean[idx], logvar[idx]
    return scale * (m + torch.exp(0.5 * lv) * torch.randn(m.shape, generator=g))


def train_unet(mean, logvar, scale, args, g, labels=None, num_classes=0, p_uncond=0.1):
    """labels (N) with num_classes K > 0: the class-conditional UNet, each
    item's label replaced by the null class K with probability p_uncond (one
    uniform draw per item after t; unconditional runs draw as before)."""
    N = mean.shape[0]
    hold = held_out(N)
    ntrain, B = N - hold, args.batch
    spe = (ntrain + B - 1) // B
    sched = Schedule("linear", T_STEPS)
    model = UNet(num_classes=num_classes)
    ema = copy.deepcopy(model)
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=0.0)
    budget = Budget(args.unet_steps, args.unet_minutes)
    step, perm = 0, None
    while not budget.done(step):
        pos = step % spe
        if pos == 0 or perm is None:
            perm = torch.randperm(ntrain, generator=g)
        idx = perm[pos * B:(pos + 1) * B]
        x0 = draw_x0(mean, logvar, idx, scale, g)
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, T_STEPS, (x0.shape[0],), generator=g)
        y = None
        if num_classes:
            y = labels[idx].clone()
            y[torch.rand(y.shape[0], generator=g) < p_uncond] = num_classes
        pred = model(sched.q_sample(x0, t, noise), t, y)
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        d = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), model.parameters()):
                pe.mul_(d).add_(p, alpha=1 - d)
        if step % 50 == 0:
            log(f"unet step {step}: loss {loss.item():.4f} |g| {gnorm.item():.3f} "
                f"({budget.elapsed():.0f} s)")
    train_s = budget.elapsed()
    # Held-out loss of the raw weights with noise and t fixed by the seed, as ldm-train reports.
    hg = torch.Generator().manual_seed(args.seed * 1000 + 7)
    tot = 0.0
    with torch.no_grad():
        for i in range(ntrain, N, B):
            idx = torch.arange(i, min(i + B, N))
            x0 = draw_x0(mean, logvar, idx, scale, hg)
            noise = torch.randn(x0.shape, generator=hg)
            t = torch.randint(0, T_STEPS, (x0.shape[0],), generator=hg)
            y = labels[idx] if num_classes else None
            tot += F.mse_loss(model(sched.q_sample(x0, t, noise), t, y), noise).item() * idx.numel()
    hl = tot / hold
    log(f"unet: {step} steps in {train_s:.1f} s ({train_s / step * 1000:.0f} ms/step), "
        f"final loss {loss.item():.4f}, held-out loss {hl:.4f} ({hold} latents)")
    return model, ema, sched, {"unet_steps": step, "unet_train_s": round(train_s, 2),
                        "unet_loss": round(loss.item(), 5), "unet_heldout_loss": round(hl, 5)}


@torch.no_grad()
def sample(unet, sched, vae, scale, n, g, batch=250):
    z = torch.randn(n, vae.latent_channels, vae.image_size // 4, vae.image_size // 4, generator=g)
    out = []
    for i in range(0, n, batch):
        zb, _ = ddim_sample(unet, sched, z[i:i + batch], 50, eta=0.0, prediction=PRED_EPS)
        out.append(vae.decode(zb / scale).clamp(-1, 1))
    return torch.cat(out)


def write_pngs(x, folder):
    from PIL import Image
    os.makedirs(folder, exist_ok=True)
    u8 = fc.float_to_u8(x[:, 0].numpy())
    for i in range(u8.shape[0]):
        Image.fromarray(u8[i], mode="L").save(os.path.join(folder, f"{i:06d}.png"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vae-steps", type=int, default=None)
    ap.add_argument("--vae-minutes", type=float, default=None)
    ap.add_argument("--unet-steps", type=int, default=None)
    ap.add_argument("--unet-minutes", type=float, default=None)
    ap.add_argument("--n", type=int, default=2000, help="images to sample")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out-dir", default=None, help="folder for one PNG per sample")
    ap.add_argument("--out-npz", default=None, help=".npz of the samples in [-1, 1]")
    ap.add_argument("--summary", default=None, help="JSON file for steps, timings and losses")
    ap.add_argument("--glibc-malloc-defaults", action="store_true",
                    help="leave glibc's heap trimming on (slower: see alloc.py)")
    args = ap.parse_args()
    malloc = "glibc defaults" if args.glibc_malloc_defaults else (
        "keep freed memory" if alloc.keep_freed_memory() else "mallopt failed")
    if args.vae_steps is None and args.vae_minutes is None:
        ap.error("give --vae-steps and/or --vae-minutes")
    if args.unet_steps is None and args.unet_minutes is None:
        ap.error("give --unet-steps and/or --unet-minutes")
    if not args.out_dir and not args.out_npz:
        ap.error("give --out-dir and/or --out-npz")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # weight init
    gens = [torch.Generator().manual_seed(args.seed * 1000 + k) for k in range(4)]
    x, _ = fc.load_fmnist32("train")
    info = {"impl": "torch", "seed": args.seed, "threads": args.threads,
            "torch": torch.__version__, "malloc": malloc}

    vae, r = train_vae(x, args, gens[0])
    info.update(r)
    t0 = time.time()
    mean, logvar, scale = encode(vae, x, gens[1])
    info["encode_s"] = round(time.time() - t0, 2)
    info["scale_factor"] = scale
    log(f"encode: {x.shape[0]} images in {info['encode_s']:.1f} s, scale_factor {scale:.6f}")

    _, unet, sched, r = train_unet(mean, logvar, scale, args, gens[2])
    info.update(r)
    t0 = time.time()
    xs = sample(unet, sched, vae, scale, args.n, gens[3])
    info["sample_s"] = round(time.time() - t0, 2)
    info["n"] = args.n
    log(f"sample: {args.n} images, DDIM-50 from the EMA weights, in {info['sample_s']:.1f} s")
    if args.out_dir:
        write_pngs(xs, args.out_dir)
        log(f"wrote {args.n} PNGs into {args.out_dir}")
    if args.out_npz:
        np.savez_compressed(args.out_npz, images=xs[:, 0].numpy())
        log(f"wrote {args.out_npz}")
    if args.summary:
        with open(args.summary, "w") as f:
            json.dump(info, f)
            f.write("\n")
    log("summary: " + json.dumps(info))


if __name__ == "__main__":
    main()
