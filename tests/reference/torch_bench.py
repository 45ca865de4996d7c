"""The ldm-bench rows in PyTorch, on the identical networks.

vae_mirror.VAE and unet_mirror.UNet (with its schedule and DDIM sampler),
kl_mirror.KLAutoencoder and gan_mirror.NLayerDiscriminator run the same steps
as tools/ldm_bench.c, with random inputs and PyTorch's default init (the
spec's zero-init convolutions included; the discriminator: taming's
weights_init):
  vae-train   VAE.loss, backward, Adam (lr 1e-3)
  vae-encode  VAE.encode under torch.no_grad (batch 256, as vae-encode)
  unet-train  draw x0 = mean + exp(logvar/2) eps from a stand-in cache, the
              diffusion loss, backward, clip_grad_norm_(1.0), AdamW (lr 2e-4,
              no decay), EMA with the latent-diffusion warm-up
  ddim        DDIM-50 from Gaussian latents, then VAE.decode, under no_grad
  kl-train    one kl-gan step as torch_train_kl.py runs it, discriminator on,
              without LPIPS: gen_klgan.klgan_ae_loss, backward, Adam on the
              autoencoder; klgan_d_loss, backward, Adam on the discriminator
              (both lr 1e-4, betas (0.5, 0.9)); batch 32
  kl-encode   KLAutoencoder.encode under torch.no_grad (batch 256)
  sgemm       torch.mm of two 1024 x 1024 float32 matrices: torch's own GEMM
              peak at the same thread count
The f4c4 and UNet rows run on 1x32x32 images, the kl rows on 3x64x64, unless
--image-size and --channels say otherwise. Flags and the JSON lines on stdout
are those of ldm-bench ("impl": "torch").
glibc's heap trimming is off unless --glibc-malloc-defaults (alloc.py: with
it, PyTorch page-faults its activations in every step and runs 1.4-1.6x
slower on this machine); the JSON line says which ("malloc").

FLOPs are counted here independently of the C code, with forward hooks on
Conv2d (2 x output elements x C_in/groups x k x k), ConvTranspose2d
(2 x input elements x C_out/groups x k x k), Linear (2 x output elements x
in_features) and the Attn and AttnBlock modules' two matmuls (QK^T and AV,
2 x HW x HW x C each); a training step counts 3x the forward, for kl-train
the autoencoder's and the discriminator's three passes (D(x_hat) for g, D(x)
and D(x_hat) for the hinge loss). --check-flops BIN compares them with
`BIN --row flops` (ldm-bench) and exits 1 on any difference.

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
from gan_mirror import NLayerDiscriminator, weights_init  # noqa: E402
from gen_klgan import klgan_ae_loss, klgan_d_loss  # noqa: E402
from kl_mirror import AttnBlock, KLAutoencoder  # noqa: E402
from unet_mirror import UNet, Attn, Schedule, diffusion_loss, ddim_sample  # noqa: E402
from vae_mirror import VAE  # noqa: E402

T_STEPS = 1000
DDIM_STEPS = 50
SGEMM_N = 1024
SGEMM_WARMUP = 2
ROWS = ["vae-train", "vae-encode", "unet-train", "ddim", "kl-train", "kl-encode"]
KL_ROWS = ("kl-train", "kl-encode")
DISC_WIDTH = 32  # patchgan-d3's
DISC_MIN_SIZE = 24  # the smallest image with a logit map (1x1)


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
        elif isinstance(mod, (Attn, AttnBlock)):
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


def kl_models(C, S):
    """vae-kl-f4 and patchgan-d3 (None below DISC_MIN_SIZE) on C x S x S."""
    ae = KLAutoencoder(in_channels=C, image_size=S)
    d = None
    if S >= DISC_MIN_SIZE:
        d = NLayerDiscriminator(input_nc=C, ndf=DISC_WIDTH, n_layers=3)
        d.apply(weights_init)
        d.train()
    return ae, d


def kl_flops(ae, d, C, S):
    """Forward FLOPs per image: kl encode, kl decode, one discriminator pass
    (None without a discriminator)."""
    B = 2
    h = S // 2 ** (len(ae.encoder.down) - 1)
    x = torch.zeros(B, C, S, S)
    z = torch.zeros(B, ae.z_channels, h, h)
    enc = count_flops(ae, lambda: ae.encode(x), B)
    dec = count_flops(ae, lambda: ae.decode(z), B)
    disc = None
    if d is not None:
        d.eval()  # leaves the BatchNorm running statistics alone; same convolutions
        disc = count_flops(d, lambda: d(x), B)
        d.train()
    return enc, dec, disc


def check_flops(binary, args, flops):
    """flops: {JSON key: torch's count}; the C line must hold the same, and
    the kl models' shape must be the one counted here."""
    # Sizes only as given, so that both programs apply their own per-family
    # defaults (compared below through kl_image_size, kl_channels).
    cmd = [binary, "--row", "flops", "--channel-mult", args.mult_str]
    if args.image_size:
        cmd += ["--image-size", str(args.image_size)]
    if args.channels:
        cmd += ["--channels", str(args.channels)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    c = json.loads(out.strip().splitlines()[-1])
    ok = True
    for name, mine in flops.items():
        theirs = c.get(name, "(missing)")
        same = theirs == mine
        ok &= same
        print(f"{name:20s} C {str(theirs):>14s}  torch {str(mine):>14s}  "
              f"{'equal' if same else 'MISMATCH'}", file=sys.stderr)
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


def row_kl_train(ae, d, B, C, S):
    h = S // 2 ** (len(ae.encoder.down) - 1)
    opt_ae = torch.optim.Adam(ae.parameters(), lr=1e-4, betas=(0.5, 0.9), eps=1e-8)
    opt_d = torch.optim.Adam(d.parameters(), lr=1e-4, betas=(0.5, 0.9), eps=1e-8)
    x = torch.rand(B, C, S, S) * 2 - 1

    def step():  # torch_train_kl.py's step at step >= --disc-start, lp None
        eps = torch.randn(B, ae.z_channels, h, h)
        loss, _, xhat = klgan_ae_loss(ae, d, None, x, eps, True)
        opt_ae.zero_grad(set_to_none=True)
        loss.backward()
        opt_ae.step()
        d_loss = klgan_d_loss(d, x, xhat)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
    return step


def row_kl_encode(ae, B, C, S):
    x = torch.rand(B, C, S, S) * 2 - 1

    def step():
        with torch.no_grad():
            ae.encode(x)
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
                    help="vae-train, vae-encode, unet-train, ddim, kl-train (the kl-gan step, "
                         "discriminator on, without LPIPS), kl-encode, sgemm, flops or all")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch", type=int, default=0,
                    help="0: the row's default (vae-train and unet-train 128, kl-train 32, "
                         "vae-encode and kl-encode 256, ddim 64)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--image-size", type=int, default=0,
                    help="0: 32, kl rows 64 (kl-train: at least 24)")
    ap.add_argument("--channels", type=int, default=0, help="0: 1, kl rows 3")
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
    if args.channels not in (0, 1, 3) or (args.image_size and (
            args.image_size < 4 or args.image_size % 4 or args.image_size > 4096)):
        ap.error("--channels must be 1 or 3, --image-size a multiple of 4 (4..4096)")
    rows = ROWS if args.row == "all" else [r for r in ROWS if r == args.row]
    if ("kl-train" in rows and args.image_size and args.image_size < DISC_MIN_SIZE
            and not args.check_flops):
        if args.row != "all":
            ap.error(f"kl-train needs --image-size {DISC_MIN_SIZE} or more (the "
                     "discriminator's patches)")
        print(f"warning: kl-train skipped: it needs --image-size {DISC_MIN_SIZE} or more",
              file=sys.stderr)
        rows.remove("kl-train")
    args.malloc = "glibc defaults" if args.glibc_malloc_defaults else (
        "keep freed memory" if alloc.keep_freed_memory() else "mallopt failed")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    base_rss = peak_rss_mb()

    C, S = args.channels or 1, args.image_size or 32
    KC, KS = args.channels or 3, args.image_size or 64  # the kl rows'
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
        kenc, kdec, disc = kl_flops(*kl_models(KC, KS), KC, KS)
        print(f"flops per image (forward): vae encode {enc}, vae decode {dec}, unet {un} "
              f"({C}x{S}x{S} images, {h}x{h} latents, channel mult {args.mult_str}); vae-kl "
              f"encode {kenc}, decode {kdec}, discriminator {disc} ({KC}x{KS}x{KS} images)",
              file=sys.stderr)
        flops = {"image_size": S, "channels": C, "vae_encode_flops": enc,
                 "vae_decode_flops": dec, "unet_forward_flops": un, "kl_image_size": KS,
                 "kl_channels": KC, "kl_encode_flops": kenc, "kl_decode_flops": kdec,
                 "disc_forward_flops": disc}
        if args.check_flops:
            sys.exit(0 if check_flops(args.check_flops, args, flops) else 1)
        print(json.dumps({"impl": "torch", "row": "flops", "image_size": S, "channels": C,
                          "channel_mult": args.mult_str, **{k: v for k, v in flops.items()
                                                            if k not in ("image_size", "channels")}}))
        return

    defaults = {"vae-train": 128, "vae-encode": 256, "unet-train": 128, "ddim": 64,
                "kl-train": 32, "kl-encode": 256}
    results = []
    for row in rows:
        B = args.batch or defaults[row]
        rC, rS = (KC, KS) if row in KL_ROWS else (C, S)
        if row in KL_ROWS:
            ae, d = kl_models(KC, KS)
            kenc, kdec, disc = kl_flops(ae, d, KC, KS)
        if row == "vae-train":
            step, flops = row_vae_train(vae, B, C, S), 3 * (enc + dec)
        elif row == "vae-encode":
            step, flops = row_vae_encode(vae, B, C, S), enc
        elif row == "unet-train":
            step, flops = row_unet_train(unet, B, Z, h), 3 * un
        elif row == "kl-train":
            step, flops = row_kl_train(ae, d, B, KC, KS), 3 * (kenc + kdec + 3 * disc)
        elif row == "kl-encode":
            step, flops = row_kl_encode(ae, B, KC, KS), kenc
        else:
            step, flops = row_ddim(unet, vae, B, Z, h), DDIM_STEPS * un + dec
        med, mn, mx = time_steps(step, B, args.warmup, args.reps)
        results.append((row, B, rC, rS, med, mn, mx, flops, peak_rss_mb()))
        del step
        if row in KL_ROWS:
            del ae, d

    # After the rows, so that its matrices do not count in their RSS.
    pk, pk_min, pk_max = sgemm_peak(args.sgemm_reps)
    for row, B, rC, rS, med, mn, mx, flops, rss in results:
        gflops = flops * med / 1e9
        pct = 100.0 * gflops / pk
        print(f"{row:10s} threads {args.threads}  batch {B}  {rC}x{rS}x{rS}: {med:.2f} img/s "
              f"(min {mn:.2f}, max {mx:.2f}), {flops / 1e9:.4g} GFLOP/img, {gflops:.1f} GFLOP/s "
              f"= {pct:.1f}% of torch.mm peak {pk:.1f}, peak RSS {rss:.1f} MB", file=sys.stderr)
        print(json.dumps({"impl": "torch", "row": row, "threads": args.threads, "batch": B,
                          "image_size": rS, "channels": rC, "channel_mult": args.mult_str,
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
