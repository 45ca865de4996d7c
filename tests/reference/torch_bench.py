"""The ldm-bench rows in PyTorch, on the identical networks.

vae_mirror.VAE and unet_mirror.UNet (with its schedule and DDIM sampler) run
the same steps as tools/ldm_bench.c, with random inputs and PyTorch's default
init (the spec's zero-init convolutions included):
  vae-train   VAE.loss, backward, Adam (lr 1e-3)
  vae-encode  VAE.encode under torch.no_grad (batch 256, as vae-encode)
  unet-train  draw x0 = mean + exp(logvar/2) eps from a stand-in cache, the
              diffusion loss, backward, clip_grad_norm_(1.0), AdamW (lr 2e-4,
              no decay), EMA with the latent-diffusion warm-up
  ddim        DDIM-50 from Gaussian latents, then VAE.decode, under no_grad
  sgemm       torch.mm of two 1024 x 1024 float32 matrices: torch's own GEMM
              peak at the same thread count
Flags and the JSON lines on stdout are those of ldm-bench ("impl": "torch").
glibc's heap trimming is off unless --glibc-malloc-defaults (alloc.py: with
it, PyTorch page-faults its activations in every step and runs 1.4-1.6x
slower on this machine); the JSON line says which ("malloc").

FLOPs are counted here independently of the C code, with forward hooks on
Conv2d (2 x output elements x C_in/groups x k x k), ConvTranspose2d
(2 x input elements x C_out/groups x k x k), Linear (2 x output elements x
in_features) and the Attn modules' two matmuls (QK^T and AV, 2 x HW x HW x C
each). --check-flops BIN compares them with `BIN --row flops` (ldm-bench)
and exits 1 on any difference.

Run: /usr/bin/python3 tests/reference/torch_bench.py --row unet-train --threads 2
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import alloc  # noqa: E402
from unet_mirror import UNet, Attn, Schedule, diffusion_loss, ddim_sample  # noqa: E402
from vae_mirror import VAE  # noqa: E402

T_STEPS = 1000
DDIM_STEPS = 50
SGEMM_N = 1024
SGEMM_WARMUP = 2
ROWS = ["vae-train", "vae-encode", "unet-train", "ddim"]


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def auto_mult(latent):
    """ldm-bench's default: 1, then 2 per halving down to 4x4."""
    mult, res = [1], latent
    while res > 4 and res % 2 == 0 and len(mult) < 8:
        res //= 2
        mult.append(2)
    return mult


# ---- FLOPs from forward hooks

def count_flops(model, run, batch):
    """Runs run() under no_grad with hooks on model; FLOPs per item."""
    total = [0]

    def conv(m, inp, out):
        kh, kw = m.kernel_size
        total[0] += 2 * out.numel() * (m.in_channels // m.groups) * kh * kw

    def convT(m, inp, out):
        kh, kw = m.kernel_size
        total[0] += 2 * inp[0].numel() * (m.out_channels // m.groups) * kh * kw

    def linear(m, inp, out):
        total[0] += 2 * out.numel() * m.in_features

    def attn(m, inp, out):
        B, C, H, W = inp[0].shape
        total[0] += 2 * (2 * B * (H * W) ** 2 * C)  # QK^T and AV

    hooks = []
    for mod in model.modules():
        if isinstance(mod, nn.ConvTranspose2d):
            hooks.append(mod.register_forward_hook(convT))
        elif isinstance(mod, nn.Conv2d):
            hooks.append(mod.register_forward_hook(conv))
        elif isinstance(mod, nn.Linear):
            hooks.append(mod.register_forward_hook(linear))
        elif isinstance(mod, Attn):
            hooks.append(mod.register_forward_hook(attn))
    with torch.no_grad():
        run()
    for h in hooks:
        h.remove()
    assert total[0] % batch == 0
    return total[0] // batch


def model_flops(vae, unet, C, S):
    """Forward FLOPs per image: VAE encode, VAE decode, UNet."""
    B = 2
    Z, h = vae.latent_channels, S // 4
    x = torch.zeros(B, C, S, S)
    z = torch.zeros(B, Z, h, h)
    t = torch.zeros(B, dtype=torch.long)
    enc = count_flops(vae, lambda: vae.encode(x), B)
    dec = count_flops(vae, lambda: vae.decode(z), B)
    un = count_flops(unet, lambda: unet(z, t), B)
    return enc, dec, un


def check_flops(binary, args, flops):
    cmd = [binary, "--row", "flops", "--image-size", str(args.image_size),
           "--channels", str(args.channels), "--channel-mult", args.mult_str]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    c = json.loads(out.strip().splitlines()[-1])
    ok = True
    for name, mine in zip(["vae_encode_flops", "vae_decode_flops", "unet_forward_flops"], flops):
        theirs = int(c[name])
        same = theirs == mine
        ok &= same
        print(f"{name:20s} C {theirs:>14d}  torch {mine:>14d}  {'equal' if same else 'MISMATCH'}",
              file=sys.stderr)
    return ok


# ---- rows

def time_steps(step, items, warmup, reps):
    for _ in range(warmup):
        step()
    rates = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        rates.append(items / (time.perf_counter() - t0))
    rates.sort()
    n = len(rates)
    med = rates[n // 2] if n % 2 else 0.5 * (rates[n // 2 - 1] + rates[n // 2])
    return med, rates[0], rates[-1]


def row_vae_train(vae, B, C, S):
    Z, h = vae.latent_channels, S // 4
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    x = torch.rand(B, C, S, S) * 2 - 1

    def step():
        eps = torch.randn(B, Z, h, h)
        loss, _, _ = vae.loss(x, eps)
        vae.last = None  # loss() keeps its outputs; the C step keeps nothing extra
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def row_vae_encode(vae, B, C, S):
    x = torch.rand(B, C, S, S) * 2 - 1

    def step():
        with torch.no_grad():
            vae.encode(x)
    return step


def row_unet_train(unet, B, Z, h):
    sched = Schedule("linear", T_STEPS)
    params = list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=2e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    ema = [p.detach().clone() for p in params]
    mean = torch.randn(B, Z, h, h)           # a stand-in latent cache of B items
    logvar = torch.rand(B, Z, h, h) * 3 - 4  # in [-4, -1]
    scale = 1.0
    n = [0]

    def step():
        x0 = scale * (mean + torch.exp(0.5 * logvar) * torch.randn(B, Z, h, h))
        noise = torch.randn(B, Z, h, h)
        t = torch.randint(0, T_STEPS, (B,))
        loss, _ = diffusion_loss(unet, sched, x0, t, noise)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        n[0] += 1
        d = min(0.999, (1 + n[0]) / (10 + n[0]))
        with torch.no_grad():
            for e, p in zip(ema, params):
                e.mul_(d).add_(p, alpha=1 - d)
    return step


def row_ddim(unet, vae, B, Z, h):
    sched = Schedule("linear", T_STEPS)
    scale = 1.0

    def step():
        with torch.no_grad():
            z = torch.randn(B, Z, h, h)
            z, _ = ddim_sample(unet, sched, z, DDIM_STEPS)
            vae.decode(z / scale)
    return step


def sgemm_peak(reps):
    a = torch.rand(SGEMM_N, SGEMM_N) * 2 - 1
    b = torch.rand(SGEMM_N, SGEMM_N) * 2 - 1
    flops = 2.0 * SGEMM_N ** 3
    g = []
    for i in range(SGEMM_WARMUP + reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        if i >= SGEMM_WARMUP:
            g.append(flops / (time.perf_counter() - t0) / 1e9)
    g.sort()
    n = len(g)
    med = g[n // 2] if n % 2 else 0.5 * (g[n // 2 - 1] + g[n // 2])
    return med, g[0], g[-1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--row", default="all",
                    help="vae-train, vae-encode, unet-train, ddim, sgemm, flops or all")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch", type=int, default=0,
                    help="0: the row's default (train 128, vae-encode 256, ddim 64)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--channel-mult", default=None,
                    help="UNet multipliers (default: 1 then 2 per halving down to 4x4)")
    ap.add_argument("--sgemm-reps", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--glibc-malloc-defaults", action="store_true",
                    help="leave glibc's heap trimming on: PyTorch then page-faults its "
                         "activations in every step (see alloc.py)")
    ap.add_argument("--check-flops", metavar="LDM_BENCH",
                    help="compare the FLOP counts with this ldm-bench binary's and exit")
    args = ap.parse_args()
    if args.row not in ROWS + ["sgemm", "flops", "all"]:
        ap.error(f"unknown --row {args.row}")
    if args.threads < 1 or args.batch < 0 or args.reps < 1 or args.warmup < 0:
        ap.error("--threads and --reps must be positive, --batch and --warmup non-negative")
    if args.channels not in (1, 3) or args.image_size < 4 or args.image_size % 4:
        ap.error("--channels must be 1 or 3, --image-size a multiple of 4")
    args.malloc = "glibc defaults" if args.glibc_malloc_defaults else (
        "keep freed memory" if alloc.keep_freed_memory() else "mallopt failed")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    base_rss = peak_rss_mb()

    C, S = args.channels, args.image_size
    h = S // 4
    mult = ([int(v) for v in args.channel_mult.split(",")] if args.channel_mult
            else auto_mult(h))
    args.mult_str = ",".join(str(m) for m in mult)
    vae = VAE(in_channels=C, image_size=S)
    unet = UNet(latent_channels=vae.latent_channels, latent_size=h, channel_mult=tuple(mult),
                attn_resolutions=(4,))
    Z = vae.latent_channels
    enc, dec, un = model_flops(vae, unet, C, S)

    if args.check_flops or args.row == "flops":
        print(f"flops per image (forward): vae encode {enc}, vae decode {dec}, unet {un} "
              f"({h}x{h} latents, channel mult {args.mult_str})", file=sys.stderr)
        if args.check_flops:
            sys.exit(0 if check_flops(args.check_flops, args, (enc, dec, un)) else 1)
        print(json.dumps({"impl": "torch", "row": "flops", "image_size": S, "channels": C,
                          "channel_mult": args.mult_str, "vae_encode_flops": enc,
                          "vae_decode_flops": dec, "unet_forward_flops": un}))
        return

    rows = ROWS if args.row == "all" else [r for r in ROWS if r == args.row]
    defaults = {"vae-train": 128, "vae-encode": 256, "unet-train": 128, "ddim": 64}
    results = []
    for row in rows:
        B = args.batch or defaults[row]
        if row == "vae-train":
            step, flops = row_vae_train(vae, B, C, S), 3 * (enc + dec)
        elif row == "vae-encode":
            step, flops = row_vae_encode(vae, B, C, S), enc
        elif row == "unet-train":
            step, flops = row_unet_train(unet, B, Z, h), 3 * un
        else:
            step, flops = row_ddim(unet, vae, B, Z, h), DDIM_STEPS * un + dec
        med, mn, mx = time_steps(step, B, args.warmup, args.reps)
        results.append((row, B, med, mn, mx, flops, peak_rss_mb()))
        del step

    # After the rows, so that its matrices do not count in their RSS.
    pk, pk_min, pk_max = sgemm_peak(args.sgemm_reps)
    for row, B, med, mn, mx, flops, rss in results:
        gflops = flops * med / 1e9
        pct = 100.0 * gflops / pk
        print(f"{row:10s} threads {args.threads}  batch {B}  {C}x{S}x{S}: {med:.2f} img/s "
              f"(min {mn:.2f}, max {mx:.2f}), {flops / 1e9:.4g} GFLOP/img, {gflops:.1f} GFLOP/s "
              f"= {pct:.1f}% of torch.mm peak {pk:.1f}, peak RSS {rss:.1f} MB", file=sys.stderr)
        print(json.dumps({"impl": "torch", "row": row, "threads": args.threads, "batch": B,
                          "image_size": S, "channels": C, "channel_mult": args.mult_str,
                          "img_per_s": round(med, 4), "img_per_s_min": round(mn, 4),
                          "img_per_s_max": round(mx, 4), "flops_per_img": flops,
                          "gflops": round(gflops, 3), "sgemm_peak_gflops": round(pk, 3),
                          "pct_peak": round(pct, 2), "reps": args.reps, "warmup": args.warmup,
                          "peak_rss_mb": round(rss, 1), "base_rss_mb": round(base_rss, 1),
                          "malloc": args.malloc}))
    if args.row == "sgemm":
        rss = peak_rss_mb()
        print(f"sgemm      threads {args.threads}  n {SGEMM_N}: {pk:.1f} GFLOP/s (torch.mm; min "
              f"{pk_min:.1f}, max {pk_max:.1f}), peak RSS {rss:.1f} MB", file=sys.stderr)
        print(json.dumps({"impl": "torch", "row": "sgemm", "threads": args.threads,
                          "batch": SGEMM_N, "img_per_s": None, "img_per_s_min": None,
                          "img_per_s_max": None, "flops_per_img": None, "gflops": round(pk, 3),
                          "gflops_min": round(pk_min, 3), "gflops_max": round(pk_max, 3),
                          "sgemm_peak_gflops": round(pk, 3), "pct_peak": 100.0,
                          "reps": args.sgemm_reps, "peak_rss_mb": round(rss, 1),
                          "base_rss_mb": round(base_rss, 1)}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
