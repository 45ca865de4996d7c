"""Writes the UNet goldens: tests/golden/blocks.h5, unet.h5, unet_cond.h5
(sampler.h5, from unet.h5's weights: gen_sampler.py).

Run with Debian's torch: /usr/bin/python3 tests/reference/gen_unet.py
Weights are random everywhere (also the convolutions the spec initialises to
zero, and the GroupNorm affine parameters), stored as float32; the reference
is computed in float64 from those float32 values and stored as float32.
"""
import os
import sys

import h5py
import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import unet_mirror as M  # noqa: E402

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'golden')

# The narrow UNet of unet.h5 and sampler.h5 (same architecture as unet-s).
TINY = dict(latent_channels=4, latent_size=8, base_channels=6, channel_mult=(1, 2),
            num_res_blocks=2, attn_resolutions=(4,), num_heads=1, temb_dim=16,
            time_dim=16)
# The class-conditional UNet of unet_cond.h5: narrower still (the file holds
# every gradient), 3 classes. Its channels are <= 32 like TINY's, so
# GroupNorm (one channel a group) removes the time and class path from the
# output: this case checks the table, the labels' plumbing and everything
# else; the class path itself is checked by blocks.h5's 'time_label' case
# against PyTorch and by test_unet.c's finite differences on unet-s.
TINY_COND = dict(TINY, base_channels=4, temb_dim=8, time_dim=8, num_classes=3)
# Cases added after the first goldens draw from generators of their own, so
# that the earlier files' values stay what they were.
SEED_COND = 4321


def f32(x):
    """Rounds to float32 values (what the golden stores), keeps float64."""
    return x.float().double()


def randomize(module, gen):
    """PyTorch-default-style uniform weights for every conv and linear (the
    zero-initialised ones too) and random GroupNorm affines, rounded to float32."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                bound = 1.0 / fan_in ** 0.5
                for p in (m.weight, m.bias):
                    p.copy_((torch.rand(p.shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound)
            elif isinstance(m, nn.Embedding):  # the class table: N(0, 1) as PyTorch
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen, dtype=torch.float64))
            elif isinstance(m, nn.GroupNorm):
                m.weight.copy_(1 + (torch.rand(m.weight.shape, generator=gen, dtype=torch.float64) - 0.5))
                m.bias.copy_(torch.rand(m.bias.shape, generator=gen, dtype=torch.float64) - 0.5)
        for p in module.parameters():
            p.copy_(f32(p))
    return module


def put(f, name, x, dtype=np.float32):
    a = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
    a = np.ascontiguousarray(a.astype(dtype))
    if a.size >= 4096:
        f.create_dataset(name, data=a, compression='gzip', compression_opts=9, shuffle=True)
    else:
        f.create_dataset(name, data=a)


def put_params(f, module, grads=True):
    """Parameters (and gradients) flattened in state_dict order into one
    dataset each (many small HDF5 datasets cost more than their data), with
    the names (newline-separated bytes) and sizes to line them up by name."""
    named = list(module.named_parameters())
    put(f, 'params', torch.cat([p.detach().reshape(-1) for _, p in named]))
    if grads:
        put(f, 'grads', torch.cat([p.grad.reshape(-1) for _, p in named]))
    put(f, 'param_sizes', [p.numel() for _, p in named], np.int32)
    put(f, 'param_names', np.frombuffer('\n'.join(k for k, _ in named).encode(), np.uint8),
        np.uint8)


def randn(gen, *shape):
    return f32(torch.randn(*shape, generator=gen, dtype=torch.float64))


def gen_blocks(gen):
    path = os.path.join(GOLDEN, 'blocks.h5')
    B, H, W = 2, 4, 4
    with h5py.File(path, 'w') as f:
        # ResBlock 4 -> 34: a 1x1 skip conv, and GroupNorm(17, 34) with two
        # channels a group. (With one channel a group, as for every C <= 32,
        # GroupNorm removes the per-channel time projection entirely.)
        cin, cout, temb = 4, 34, 16
        g = f.create_group('res')
        mod = nn.Module()
        mod.res = M.ResBlock(cin, cout, temb)
        randomize(mod, gen)
        mod.double()
        x = randn(gen, B, cin, H, W).requires_grad_()
        ta = randn(gen, B, temb).requires_grad_()
        out = mod.res(x, ta)
        dout = randn(gen, *out.shape)
        out.backward(dout)
        put(g, 'dims', [B, cin, cout, H, W, temb], np.int32)
        for k, v in dict(x=x, temb_act=ta, out=out, dout=dout, dx=x.grad,
                         dtemb_act=ta.grad).items():
            put(g, k, v)
        put_params(g, mod)

        # Attention blocks: single head (the spec) and two heads.
        for name, C, heads in (('attn', 8, 1), ('attn2', 8, 2)):
            g = f.create_group(name)
            mod = nn.Module()
            mod.attn = M.Attn(C, heads)
            randomize(mod, gen)
            mod.double()
            x = randn(gen, B, C, H, W).requires_grad_()
            out = mod.attn(x)
            dout = randn(gen, *out.shape)
            out.backward(dout)
            put(g, 'dims', [B, C, H, W, heads], np.int32)
            for k, v in dict(x=x, out=out, dout=dout, dx=x.grad).items():
                put(g, k, v)
            put_params(g, mod)

        # Time embedding MLP, returning SiLU(temb).
        g = f.create_group('time')
        time_dim, temb = 16, 32
        mod = M.TimeEmbed(time_dim, temb)
        randomize(mod, gen)
        mod.double()
        t = torch.tensor([0, 7, 500, 999])
        out = mod(t)
        dout = randn(gen, *out.shape)
        out.backward(dout)
        put(g, 'dims', [len(t), time_dim, temb], np.int32)
        put(g, 't', t, np.int32)
        for k, v in dict(out=out, dout=dout).items():
            put(g, k, v)
        put_params(g, mod)

        # The same with a class table of K = 3 (row 3 the null class): six
        # items with real and null labels, class 1 twice (its row's gradient
        # sums two items), class 2 unused (its row's gradient is zero).
        cg = torch.Generator().manual_seed(SEED_COND)
        g = f.create_group('time_label')
        K = 3
        mod = M.TimeEmbed(time_dim, temb, K)
        randomize(mod, cg)
        mod.double()
        t = torch.tensor([0, 7, 500, 999, 250, 31])
        y = torch.tensor([1, K, 0, 1, K, 0])
        out = mod(t, y)
        dout = randn(cg, *out.shape)
        out.backward(dout)
        put(g, 'dims', [len(t), time_dim, temb, K], np.int32)
        put(g, 't', t, np.int32)
        put(g, 'y', y, np.int32)
        for k, v in dict(out=out, dout=dout).items():
            put(g, k, v)
        put_params(g, mod)
    return path


def tiny_unet(gen):
    u = M.UNet(**TINY)
    randomize(u, gen)
    return u.double()


def gen_unet(gen, u):
    path = os.path.join(GOLDEN, 'unet.h5')
    B = 2
    sched = M.Schedule('linear', 1000)
    x0 = randn(gen, B, 4, 8, 8)
    noise = randn(gen, B, 4, 8, 8)
    t = torch.tensor([17, 923])
    loss, pred = M.diffusion_loss(u, sched, x0, t, noise, M.PRED_EPS)
    loss.backward()
    with h5py.File(path, 'w') as f:
        c = TINY
        put(f, 'config', [c['latent_channels'], c['latent_size'], c['base_channels'],
                          *c['channel_mult'], c['num_res_blocks'], *c['attn_resolutions'],
                          c['num_heads'], c['temb_dim'], c['time_dim']], np.int32)
        put(f, 'x0', x0)
        put(f, 'noise', noise)
        put(f, 't', t, np.int32)
        put(f, 'xt', sched.q_sample(x0, t, noise))
        put(f, 'v_target', sched.target(x0, t, noise, M.PRED_V))
        put(f, 'pred', pred)
        put(f, 'loss', loss.reshape(1))
        put_params(f, u)
    u.zero_grad()
    return path


def gen_unet_cond():
    """The conditional tiny UNet: loss, output and every gradient on a batch
    of real and null labels (as after label dropout)."""
    path = os.path.join(GOLDEN, 'unet_cond.h5')
    gen = torch.Generator().manual_seed(SEED_COND + 1)
    c = TINY_COND
    u = randomize(M.UNet(**c), gen).double()
    B, K = 4, c['num_classes']
    sched = M.Schedule('linear', 1000)
    x0 = randn(gen, B, 4, 8, 8)
    noise = randn(gen, B, 4, 8, 8)
    t = torch.tensor([17, 923, 400, 5])
    y = torch.tensor([2, K, 0, K])
    loss, pred = M.diffusion_loss(u, sched, x0, t, noise, M.PRED_EPS, y)
    loss.backward()
    with h5py.File(path, 'w') as f:
        put(f, 'config', [c['latent_channels'], c['latent_size'], c['base_channels'],
                          *c['channel_mult'], c['num_res_blocks'], *c['attn_resolutions'],
                          c['num_heads'], c['temb_dim'], c['time_dim'], K], np.int32)
        put(f, 'x0', x0)
        put(f, 'noise', noise)
        put(f, 't', t, np.int32)
        put(f, 'y', y, np.int32)
        put(f, 'pred', pred)
        put(f, 'loss', loss.reshape(1))
        put_params(f, u)
    return path


def main():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1234)
    paths = [gen_blocks(gen)]
    u = tiny_unet(gen)
    paths.append(gen_unet(gen, u))
    paths.append(gen_unet_cond())
    for p in paths:
        print(f'{os.path.relpath(p)}: {os.path.getsize(p)} bytes')


if __name__ == '__main__':
    main()
