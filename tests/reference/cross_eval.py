"""Is the C UNet trained as well as PyTorch's, given the same latents?

The equal-steps quality runs (tools/quality.sh) compare whole pipelines, so a
difference in the UNet's held-out loss mixes two VAEs, two latent sets and two
draws of t and noise. This script removes all of that: it takes one C run's
latent cache and its C-trained UNet checkpoint, trains the PyTorch mirror on the
same cache with the same settings (torch_pipeline.train_unet: same held-out
slice, batch, optimizer, EMA and step count; its own random draws), then scores
both UNets, raw and EMA weights, on the held-out latents with the same x0, t and
noise draws for every model (--draws passes over the slice), overall and per
quarter of the t range.

Run: /usr/bin/python3 tests/reference/cross_eval.py \
        --latents runs/quality-steps/steps/c-s2/latents.h5 \
        --unet runs/quality-steps/steps/c-s2/unet.h5 --seeds "0 1" --threads 2
Prints a table and, with --json, appends one JSON line per model.
"""
import argparse
import json
import os
import sys
import time

import h5py
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_pipeline as tp  # noqa: E402
from unet_mirror import UNet  # noqa: E402


def load_cache(path):
    with h5py.File(path, "r") as f:
        mean = torch.from_numpy(f["mean"][...])
        logvar = torch.from_numpy(f["logvar"][...])
        scale = float(f.attrs["scale_factor"])
    return mean, logvar, scale


def load_c_unet(path, group):
    """The C checkpoint's tensors are named by the mirror's state_dict keys."""
    model = UNet()
    with h5py.File(path, "r") as f:
        steps = int(f.attrs["step"])
        sd = {k: torch.from_numpy(f[group][k][...]) for k in model.state_dict()}
    model.load_state_dict(sd, strict=True)
    return model, steps


@torch.no_grad()
def score(model, sched, mean, logvar, scale, ntrain, draws, seed, batch=512):
    """Mean squared eps error over `draws` passes of the held-out latents, in
    total and per t quarter; the generator restarts from `seed` for every
    model, so every model sees the same x0, t and noise."""
    g = torch.Generator().manual_seed(seed)
    N = mean.shape[0]
    tot, cnt = torch.zeros(5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    for _ in range(draws):
        for i in range(ntrain, N, batch):
            idx = torch.arange(i, min(i + batch, N))
            x0 = tp.draw_x0(mean, logvar, idx, scale, g)
            noise = torch.randn(x0.shape, generator=g)
            t = torch.randint(0, tp.T_STEPS, (x0.shape[0],), generator=g)
            err = ((model(sched.q_sample(x0, t, noise), t) - noise) ** 2).mean(dim=(1, 2, 3))
            q = t * 4 // tp.T_STEPS
            tot[4] += err.sum().double()
            cnt[4] += err.numel()
            for k in range(4):
                tot[k] += err[q == k].sum().double()
                cnt[k] += (q == k).sum()
    return (tot / cnt).tolist()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--latents", required=True, help="the C run's latent cache")
    ap.add_argument("--unet", required=True, help="the C UNet checkpoint trained on it")
    ap.add_argument("--seeds", default="0", help="seeds of the PyTorch trainings")
    ap.add_argument("--draws", type=int, default=8, help="passes over the held-out slice")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None, help="append results to this JSON-lines file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    mean, logvar, scale = load_cache(args.latents)
    N = mean.shape[0]
    ntrain = N - tp.held_out(N)
    sched = tp.Schedule("linear", tp.T_STEPS)
    c_raw, steps = load_c_unet(args.unet, "model")
    c_ema, _ = load_c_unet(args.unet, "ema")
    models = [("c", None, "raw", c_raw), ("c", None, "ema", c_ema)]
    for s in [int(v) for v in args.seeds.split()]:
        torch.manual_seed(s)  # weight init, as torch_pipeline
        targs = argparse.Namespace(unet_steps=steps, unet_minutes=None, batch=args.batch,
                                   seed=s)
        t0 = time.time()
        raw, ema, _, info = tp.train_unet(mean, logvar, scale, targs, torch.Generator().manual_seed(s * 1000 + 2))
        print(f"torch seed {s}: {info['unet_steps']} steps in {time.time() - t0:.0f} s", flush=True)
        models += [("torch", s, "raw", raw), ("torch", s, "ema", ema)]

    print(f"cache {args.latents}: {N - ntrain} held-out latents x {args.draws} draws, "
          f"C UNet {args.unet} at step {steps}")
    print(f"{'impl':6} {'seed':>4} {'weights':7} {'all t':>8} {'t<250':>8} {'<500':>8} "
          f"{'<750':>8} {'<1000':>8}")
    for impl, s, w, m in models:
        r = score(m, sched, mean, logvar, scale, ntrain, args.draws, seed=12345)
        print(f"{impl:6} {'-' if s is None else s:>4} {w:7} {r[4]:8.5f} "
              + " ".join(f"{v:8.5f}" for v in r[:4]), flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps({"latents": args.latents, "unet": args.unet, "steps": steps,
                                    "impl": impl, "seed": s, "weights": w,
                                    "draws": args.draws, "loss": r[4],
                                    "loss_by_t_quarter": r[:4]}) + "\n")


if __name__ == "__main__":
    main()
