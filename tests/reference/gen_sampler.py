"""Writes the sampler goldens: tests/golden/sampler.h5, and ldm-edit's:
tests/golden/edit.h5 (see write_edit below).

Run with Debian's torch, after gen_unet.py (the unconditional cases run the
narrow UNet whose weights gen_unet.py writes into unet.h5; sampler.h5 records a
checksum of them, so a stale file fails the test instead of drifting):
    /usr/bin/python3 tests/reference/gen_sampler.py [out.h5 [edit.h5] (default: the goldens)]

Every case is a group: spec (float32: kind (sampler_mirror.KINDS index),
prediction, cosine schedule, T, steps, start, model (0: the narrow UNet of
unet.h5), eta, guidance), traj (runs, B, Z, h, w): x after every step run; x_start (img2img
cases: x at step `start` on entry, else xT is the input); y (guided cases).
The stochastic cases replay `noise` (8, B, Z, h, w) from its first entry.
"""
import os
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sampler_mirror as S  # noqa: E402
import unet_mirror as M  # noqa: E402
from gen_unet import GOLDEN, TINY, f32, put, randn  # noqa: E402

B, NOISE_STEPS = 2, 8
# The class-conditional UNet of the guided cases. With <= 32 channels every
# GroupNorm has one channel a group and removes the time and class path from
# the output (unet_cond.h5's narrow UNet), so guidance would mix two equal
# outputs: 34 channels make groups of two. Its 141,576 weights are not stored
# but made by formula_params(), which test_sampler.c repeats.
GUIDE = dict(latent_channels=4, latent_size=8, base_channels=34, channel_mult=(1,),
             num_res_blocks=1, attn_resolutions=(), num_heads=1, temb_dim=16,
             time_dim=16, num_classes=3)


def load_tiny():
    """The narrow UNet with the weights of unet.h5, in float64."""
    u = M.UNet(**TINY).double()
    with h5py.File(os.path.join(GOLDEN, 'unet.h5'), 'r') as f:
        flat = torch.from_numpy(f['params'][()]).double()
        sizes = f['param_sizes'][()]
        names = bytes(f['param_names'][()]).decode().split('\n')
    named = list(u.named_parameters())
    assert [k for k, _ in named] == names and sum(sizes) == flat.numel()
    with torch.no_grad():
        off = 0
        for (_, p), n in zip(named, sizes):
            p.copy_(flat[off:off + n].reshape(p.shape))
            off += n
    return u, flat


def formula_params(u):
    """Weights as a function of their index i in the flat state_dict order:
    u_i = ((i * 2654435761) mod 2^32) / 2^32 - 0.5, then GroupNorm weights
    1 + u_i, GroupNorm biases u_i, the class table 4 u_i, other biases
    0.2 u_i, other weights 2 u_i / sqrt(fan_in); rounded to float32. Every
    step is exact or correctly rounded in double, so C gets the same values."""
    off = 0
    with torch.no_grad():
        for name, p in u.named_parameters():
            i = np.arange(off, off + p.numel(), dtype=np.uint64)
            v = ((i * np.uint64(2654435761)) % np.uint64(1 << 32)).astype(np.float64) / 2.0 ** 32 - 0.5
            if 'norm' in name:
                v = 1 + v if name.endswith('.weight') else v
            elif name.startswith('label_emb'):
                v = 4 * v
            elif p.dim() == 1:
                v = 0.2 * v
            else:
                v = (2 * v) * (1 / np.sqrt(float(p.numel() // p.shape[0])))
            p.copy_(torch.from_numpy(v.astype(np.float32).astype(np.float64)).reshape(p.shape))
            off += p.numel()
    return u


def checksum(flat):
    """sum_i p_i (1 + i mod 97) in float64: changes with any regenerated weight."""
    w = 1 + torch.arange(flat.numel(), dtype=torch.float64) % 97
    return float((flat * w).sum())


def main():
    gen = torch.Generator().manual_seed(4321)
    u, flat = load_tiny()
    guide = formula_params(M.UNet(**GUIDE).double())
    K = GUIDE['num_classes']
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(GOLDEN, 'sampler.h5')
    lin = M.Schedule('linear', 1000)
    cos = M.Schedule('cosine', 1000)
    xT = randn(gen, B, 4, 8, 8)
    noise = randn(gen, NOISE_STEPS, B, 4, 8, 8)
    clean = randn(gen, B, 4, 8, 8)  # the img2img input latent
    start_noise = randn(gen, B, 4, 8, 8)

    # The guided cases test something only if the class moves the output.
    t = torch.tensor([500, 500])
    on, oc = guide(xT, t, torch.tensor([K, K])), guide(xT, t, torch.tensor([0, 2]))
    assert (oc - on).abs().max() > 0.05 * on.abs().max(), 'the class barely moves the output'

    # name: kind, prediction, schedule, T, steps, eta, start, model (0: the
    # narrow UNet, 1: the conditional one), labels, guidance
    lab = torch.tensor
    cases = [
        ('ddim_eta0', 'ddim', M.PRED_EPS, 'linear', 1000, 5, 0.0, 0, 0, None, 1.0),
        ('ddim_v', 'ddim', M.PRED_V, 'linear', 1000, 5, 0.0, 0, 0, None, 1.0),
        ('ddim_eta05', 'ddim', M.PRED_EPS, 'linear', 1000, 5, 0.5, 0, 0, None, 1.0),
        ('ddpm', 'ddpm', M.PRED_EPS, 'linear', 6, 0, 0.0, 0, 0, None, 1.0),
        ('dpmpp2m', 'dpmpp2m', M.PRED_EPS, 'linear', 1000, 5, 0.0, 0, 0, None, 1.0),
        ('dpmpp2m_v', 'dpmpp2m', M.PRED_V, 'linear', 1000, 5, 0.0, 0, 0, None, 1.0),
        ('dpmpp2m_cos_v', 'dpmpp2m', M.PRED_V, 'cosine', 1000, 8, 0.0, 0, 0, None, 1.0),
        ('euler_a', 'euler_a', M.PRED_EPS, 'linear', 1000, 5, 0.0, 0, 0, None, 1.0),
        ('euler_a_v', 'euler_a', M.PRED_V, 'linear', 1000, 5, 0.0, 0, 0, None, 1.0),
        ('img2img_ddim', 'ddim', M.PRED_EPS, 'linear', 1000, 5, 0.0, 2, 0, None, 1.0),
        ('img2img_dpmpp2m', 'dpmpp2m', M.PRED_EPS, 'linear', 1000, 5, 0.0, 2, 0, None, 1.0),
        ('img2img_euler_a', 'euler_a', M.PRED_V, 'linear', 1000, 5, 0.0, 1, 0, None, 1.0),
        ('guided_ddim', 'ddim', M.PRED_EPS, 'linear', 1000, 5, 0.0, 0, 1, lab([1, 2]), 3.0),
        ('guided_dpmpp2m_v', 'dpmpp2m', M.PRED_V, 'linear', 1000, 5, 0.0, 0, 1, lab([0, K]), 2.5),
        ('guided_euler_a', 'euler_a', M.PRED_EPS, 'linear', 1000, 5, 0.0, 0, 1, lab([2, 0]), 1.5),
        ('guided_img2img_ddpm', 'ddpm', M.PRED_V, 'linear', 8, 0, 0.0, 3, 1, lab([1, 0]), 4.0),
        ('cond_w1', 'ddim', M.PRED_EPS, 'linear', 1000, 5, 0.0, 0, 1, lab([1, 2]), 1.0),
        ('cond_null', 'dpmpp2m', M.PRED_EPS, 'linear', 1000, 5, 0.0, 0, 1, None, 4.0),
    ]
    with h5py.File(path, 'w', libver='latest') as f:
        put(f, 'linear_alphas_cumprod', lin.alphas_cumprod)
        put(f, 'linear_posterior_variance', lin.posterior_variance)
        put(f, 'cosine_alphas_cumprod', cos.alphas_cumprod)
        put(f, 'unet_checksum', [checksum(flat)], np.float64)
        c = GUIDE
        put(f, 'guide_config', [c['latent_channels'], c['latent_size'], c['base_channels'],
                                c['num_res_blocks'], c['num_heads'], c['temb_dim'],
                                c['time_dim'], K], np.int32)
        put(f, 'xT', xT)
        put(f, 'noise', noise)
        put(f, 'cases', np.frombuffer('\n'.join(c[0] for c in cases).encode(), np.uint8),
            np.uint8)
        for name, kind, pred, sched_kind, T, steps, eta, start, model, y, w in cases:
            sched = M.Schedule(sched_kind, T)
            x = xT
            if start:
                t = S.timesteps(kind, sched, steps)[start]
                x = f32(sched.q_sample(clean, torch.full((B,), t), start_noise))
            fn = S.guided(guide, y, K, w) if model else u
            _, traj = S.sample(fn, sched, x, kind, steps, eta, pred, noise, start)
            g = f.create_group(name)
            put(g, 'spec', [S.KINDS.index(kind), pred, sched_kind == 'cosine', T, steps, start,
                            model, eta, w])
            put(g, 'traj', torch.stack(traj))
            if start:
                put(g, 'x_start', x)
            if y is not None:
                put(g, 'y', y, np.int32)
            # The DDIM and DDPM of unet_mirror.py (the benchmarks') agree.
            if start == 0 and model == 0 and kind in ('ddim', 'ddpm'):
                _, ref = (M.ddim_sample(u, sched, x, steps, eta, pred, noise) if kind == 'ddim'
                          else M.ddpm_sample(u, sched, x, pred, noise))
                assert torch.allclose(torch.stack(traj), torch.stack(ref), rtol=0, atol=1e-12), name
    print(f'{os.path.relpath(path)}: {os.path.getsize(path)} bytes')
    write_edit(sys.argv[2] if len(sys.argv) > 2 else os.path.join(GOLDEN, 'edit.h5'), u, flat)


# ---- ldm-edit (tools/edit.c): the img2img start, the latent mask and the
# inpainting hook over whole runs of the narrow UNet, with its own generator
# so that sampler.h5 stays what it was.
#
# edit.h5 (strengths s as integers s * 10^6): starts (n, 3) int32 rows
# (s, steps, start); x0, noise (EDIT_DRAWS, B, Z, h, w) (the sampler's step
# noise), hook_noise (the same shape: the hook's draws), start_noise, px (B, S,
# S) pixel masks, lat (B, h, h) their latent masks; img2img_start: spec (s,
# steps, start) and x_start (DDIM on the linear schedule); 'cases' as
# sampler.h5's, each a group: spec (kind, prediction, T, steps, eta, resample),
# ints (s, start, hook noise entries used), traj (runs, B, Z, h, w) x after
# every step run (before the hook), x_final (x_0 after the last hook call).
EDIT_DRAWS, EDIT_S = 14, 32


def write_edit(path, u, flat):
    gen = torch.Generator().manual_seed(2024)
    x0 = randn(gen, B, 4, 8, 8)
    noise = randn(gen, EDIT_DRAWS, B, 4, 8, 8)
    hook_noise = randn(gen, EDIT_DRAWS, B, 4, 8, 8)
    start_noise = randn(gen, B, 4, 8, 8)
    # Pixel masks: a rectangle each, with edges inside latent cells (so the
    # any-pixel rule matters) and a stray pixel.
    px = torch.zeros(B, EDIT_S, EDIT_S, dtype=torch.float64)
    px[0, 5:14, 9:23] = 1
    px[0, 30, 1] = 1
    px[1, 17:32, 0:11] = 1
    px[1, 2, 29] = 1
    lat = S.edit_latent_mask(px, 8)
    assert 0 < lat.sum() < lat.numel()

    # Strengths in millionths, so that C divides the same integers.
    starts = []
    for n in (1, 5, 7, 10, 20, 50, 1000):
        for ppm in (1, 100000, 250000, 300000, 500000, 750000, 900000, 990000, 1000000):
            starts.append((ppm, n, S.edit_start_step(ppm / 1e6, n)))

    lin = M.Schedule('linear', 1000)
    # name: kind, prediction, T, steps, eta, strength (millionths), resample
    cases = [
        ('inpaint_ddim', 'ddim', M.PRED_EPS, 1000, 5, 0.0, 1000000, 1),
        ('inpaint_ddim_r3', 'ddim', M.PRED_EPS, 1000, 4, 0.0, 750000, 3),
        ('inpaint_ddim_eta_v', 'ddim', M.PRED_V, 1000, 5, 0.8, 600000, 2),
        ('inpaint_euler_a_r2', 'euler_a', M.PRED_V, 1000, 4, 0.0, 1000000, 2),
        ('inpaint_dpmpp2m_r2', 'dpmpp2m', M.PRED_EPS, 1000, 4, 0.0, 1000000, 2),
        ('inpaint_ddpm_r2', 'ddpm', M.PRED_EPS, 8, 0, 0.0, 500000, 2),
    ]
    with h5py.File(path, 'w', libver='latest') as f:
        put(f, 'unet_checksum', [checksum(flat)], np.float64)
        put(f, 'starts', starts, np.int32)
        for name, v in (('x0', x0), ('noise', noise), ('hook_noise', hook_noise),
                        ('start_noise', start_noise), ('px', px), ('lat', lat)):
            put(f, name, v)
        # img2img: the start latent of strength 0.3 on DDIM-10.
        ts = S.timesteps('ddim', lin, 10)
        start = S.edit_start_step(0.3, 10)
        g = f.create_group('img2img_start')
        put(g, 'spec', [300000, 10, start], np.int32)
        put(g, 'x_start', S.edit_start_latent(lin, ts, start, x0, start_noise))
        put(f, 'cases', np.frombuffer('\n'.join(c[0] for c in cases).encode(), np.uint8),
            np.uint8)
        for name, kind, pred, T, steps, eta, ppm, R in cases:
            sched = lin if T == 1000 else M.Schedule('linear', T)
            ts = S.timesteps(kind, sched, steps)
            start = S.edit_start_step(ppm / 1e6, len(ts))
            x = S.edit_start_latent(sched, ts, start, x0, start_noise)
            hook, state = S.edit_inpaint_hook(sched, ts, x0, lat, R, hook_noise)
            xf, traj = S.sample(u, sched, x, kind, steps, eta, pred, noise, start, hook)
            assert len(traj) == (len(ts) - start) * R <= EDIT_DRAWS and state['draws'] <= EDIT_DRAWS
            keep = (1 - lat).unsqueeze(1).bool().expand_as(xf)
            assert torch.equal(xf[keep], x0[keep]), name
            g = f.create_group(name)
            put(g, 'spec', [S.KINDS.index(kind), pred, T, steps, eta, R])
            put(g, 'ints', [ppm, start, state['draws']], np.int32)
            put(g, 'traj', torch.stack(traj))
            put(g, 'x_final', xf)
    print(f'{os.path.relpath(path)}: {os.path.getsize(path)} bytes')


if __name__ == '__main__':
    main()
