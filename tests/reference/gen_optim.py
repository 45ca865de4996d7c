"""Writes tests/golden/optim.h5: torch 1.13 Adam / AdamW / clip_grad_norm_ /
EMA reference trajectories for tests/test_optim.c.

Inputs (params, grads) are float32; the reference runs in float64 from those
float32 values and the results are stored as float32. Every tensor is stored
flat, the parameter tensors concatenated in order (the C optimizer works on
one flat buffer that shares offsets with the parameter table).

Layout (k = 1, 2, 3 is the step):
  shapes                          int, the tensor sizes (for information)
  adam/param0, adam/grad{k}       Adam(lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
  adam/param{k}, adam/m{k}, adam/v{k}
  adam_l2/...                     the same with weight_decay=0.01 (L2 in grad)
  adamw_wd{0,0.01}/param0, grad{k}   raw gradients
  adamw_wd*/norm{k}               clip_grad_norm_(max_norm=1) return value
  adamw_wd*/clipped{k}            gradients after clipping
  adamw_wd*/param{k}, m{k}, v{k}  AdamW(lr=2e-4, wd) state after step k
  adamw_wd*/ema{k}                EMA (starts at param0) after the update with
                                  decay min(0.999, (1 + k) / (10 + k))
Steps 1 and 2 have a gradient norm > 1 (clipped), step 3 < 1 (untouched).
"""
import os

import h5py
import numpy as np
import torch

SHAPES = [(6, 3, 3, 3), (6,), (8, 5), (8,)]
OUT = os.path.join(os.path.dirname(__file__), "..", "golden", "optim.h5")


def flat(ts):
    return np.concatenate([t.detach().reshape(-1).numpy() for t in ts]).astype(np.float32)


def randn32(gen, shape, scale=1.0):
    return (torch.randn(shape, generator=gen, dtype=torch.float32) * scale)


def make_params(gen):
    return [torch.nn.Parameter(randn32(gen, s, 0.5).double()) for s in SHAPES]


def state_flat(opt, params, key):
    return flat([opt.state[p][key] for p in params])


def run_adam(f, name, gen, weight_decay):
    params = make_params(gen)
    g = f.create_group(name)
    g["param0"] = flat(params)
    opt = torch.optim.Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                           weight_decay=weight_decay)
    for k in (1, 2, 3):
        grads = [randn32(gen, s) for s in SHAPES]
        for p, gr in zip(params, grads):
            p.grad = gr.double()
        g[f"grad{k}"] = flat(grads)
        opt.step()
        g[f"param{k}"] = flat(params)
        g[f"m{k}"] = state_flat(opt, params, "exp_avg")
        g[f"v{k}"] = state_flat(opt, params, "exp_avg_sq")


def run_adamw(f, name, gen, weight_decay):
    params = make_params(gen)
    g = f.create_group(name)
    g["param0"] = flat(params)
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=2e-4, betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=weight_decay)
    n_total = sum(int(np.prod(s)) for s in SHAPES)
    for k, target in ((1, 5.0), (2, 2.5), (3, 0.5)):
        # scale so the global norm is about `target` (> 1 clips, < 1 not)
        grads = [randn32(gen, s, target / np.sqrt(n_total)) for s in SHAPES]
        for p, gr in zip(params, grads):
            p.grad = gr.double()
        g[f"grad{k}"] = flat(grads)
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm=1.0)
        g[f"norm{k}"] = np.array([float(norm)], dtype=np.float32)
        g[f"clipped{k}"] = flat([p.grad for p in params])
        opt.step()
        g[f"param{k}"] = flat(params)
        g[f"m{k}"] = state_flat(opt, params, "exp_avg")
        g[f"v{k}"] = state_flat(opt, params, "exp_avg_sq")
        # latent-diffusion's LitEma: shadow -= (1 - decay) * (shadow - param)
        decay = min(0.999, (1 + k) / (10 + k))
        with torch.no_grad():
            for e, p in zip(ema, params):
                e.sub_((1.0 - decay) * (e - p))
        g[f"ema{k}"] = flat(ema)
        print(f"{name} step {k}: grad norm {float(norm):.4f}")


def main():
    gen = torch.Generator().manual_seed(1234)
    with h5py.File(OUT, "w") as f:
        f["shapes"] = np.array([int(np.prod(s)) for s in SHAPES], dtype=np.int32)
        run_adam(f, "adam", gen, 0.0)
        run_adam(f, "adam_l2", gen, 0.01)
        run_adamw(f, "adamw_wd0", gen, 0.0)
        run_adamw(f, "adamw_wd0.01", gen, 0.01)
    print("wrote", os.path.normpath(OUT), os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
