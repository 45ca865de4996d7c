"""Writes tests/golden/kl.h5: the vae-kl family (kl_mirror.py) on a reduced
configuration, for tests/test_kl.c.

Run with Debian's torch: /usr/bin/python3 tests/reference/gen_kl.py
Config: ch 4, ch_mult (1, 2), 2 ResnetBlocks a level (so a level's blocks and
attentions interleave in run order but not in the state_dict), attention at
8x8, z_channels 3, GroupNorm 2 groups, 3 x 16 x 16 images, B 2. Weights
random (uniform +-1/sqrt(fan_in), GroupNorm affines around 1 and 0) as
float32; quant_conv's log-variance biases are set to 20 and -30 on two channels,
so that about half of those values lie beyond the clamp (zero gradient). The
reference is computed in float64 from the float32 values.

Datasets: config (in_channels, image_size, ch, num_levels, ch_mult...,
num_res_blocks, num_attn, attn_resolutions..., z_channels, groups), x, z,
w1, w2, w3, w4, mean, logvar, xhat, dx, dz, params, grads (of
L = sum(w1 xhat(z)) + sum(w2 mean(x)) + sum(w3 logvar(x))), dlast
(d sum(w4 xhat) / d decoder.conv_out.weight), param_names, param_sizes.
The full-size vae-kl-f4 case: meanfull, logvarfull and xhatfull (the decode
of meanfull) of the image kl_mirror.formula_input((1, 3, 64, 64)) with
kl_mirror.formula_fill weights (neither stored: both sides compute them).
"""
import os
import sys

import h5py
import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kl_mirror as K  # noqa: E402

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'golden')
SMALL = dict(ch=4, ch_mult=(1, 2), num_res_blocks=2, attn_resolutions=(8,), z_channels=3,
             in_channels=3, image_size=16, groups=2)
B = 2


def f32(x):
    return x.float().double()


def put(f, name, x, dtype=np.float32):
    a = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
    a = np.ascontiguousarray(a.astype(dtype))
    if a.size >= 4096:
        f.create_dataset(name, data=a, compression='gzip', compression_opts=9, shuffle=True)
    else:
        f.create_dataset(name, data=a)


def randomize(model, gen):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                bound = 1.0 / m.weight[0].numel() ** 0.5
                for p in (m.weight, m.bias):
                    p.copy_((torch.rand(p.shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound)
            elif isinstance(m, nn.GroupNorm):
                m.weight.copy_(1 + (torch.rand(m.weight.shape, generator=gen, dtype=torch.float64) - 0.5))
                m.bias.copy_(torch.rand(m.bias.shape, generator=gen, dtype=torch.float64) - 0.5)
        Z = SMALL['z_channels']
        model.quant_conv.bias[Z] = 20.0
        model.quant_conv.bias[Z + 1] = -30.0
        for p in model.parameters():
            p.copy_(f32(p))
    return model


def randn(gen, *shape):
    return f32(torch.randn(*shape, generator=gen, dtype=torch.float64))


def config_ints(c):
    return [c['in_channels'], c['image_size'], c['ch'], len(c['ch_mult']), *c['ch_mult'],
            c['num_res_blocks'], len(c['attn_resolutions']), *c['attn_resolutions'],
            c['z_channels'], c['groups']]


def main():
    gen = torch.Generator().manual_seed(2024)
    m = randomize(K.KLAutoencoder(**SMALL), gen).double()
    S, Z = SMALL['image_size'], SMALL['z_channels']
    h = S // 2 ** (len(SMALL['ch_mult']) - 1)
    x = randn(gen, B, 3, S, S).requires_grad_()
    z = randn(gen, B, Z, h, h).requires_grad_()
    w1, w4 = randn(gen, B, 3, S, S), randn(gen, B, 3, S, S)
    w2, w3 = randn(gen, B, Z, h, h), randn(gen, B, Z, h, h)
    mean, logvar = m.encode(x)
    xhat = m.decode(z)
    dlast, = torch.autograd.grad((w4 * xhat).sum(), m.last_layer(), retain_graph=True)
    ((w1 * xhat).sum() + (w2 * mean).sum() + (w3 * logvar).sum()).backward()
    named = list(m.named_parameters())
    assert [k for k, _ in named] == list(m.state_dict().keys())
    path = os.path.join(GOLDEN, 'kl.h5')
    with h5py.File(path, 'w') as f:
        put(f, 'config', config_ints(SMALL), np.int32)
        for k, v in dict(x=x, z=z, w1=w1, w2=w2, w3=w3, w4=w4, mean=mean, logvar=logvar,
                         xhat=xhat, dx=x.grad, dz=z.grad, dlast=dlast).items():
            put(f, k, v)
        put(f, 'params', torch.cat([p.detach().reshape(-1) for _, p in named]))
        put(f, 'grads', torch.cat([p.grad.reshape(-1) for _, p in named]))
        put(f, 'param_sizes', [p.numel() for _, p in named], np.int32)
        put(f, 'param_names', np.frombuffer('\n'.join(k for k, _ in named).encode(), np.uint8),
            np.uint8)
        # the full vae-kl-f4, weights from the formula both sides compute
        full = K.formula_fill(K.KLAutoencoder()).double()
        with torch.no_grad():
            mf, lf = full.encode(K.formula_input((1, 3, 64, 64)).double())
            put(f, 'meanfull', mf)
            put(f, 'logvarfull', lf)
            put(f, 'xhatfull', full.decode(mf))
    print(path, os.path.getsize(path), 'bytes; clamped logvars:',
          int(((logvar.detach() == 20) | (logvar.detach() == -30)).sum()), 'of', logvar.numel(),
          '; full-size mean/logvar/xhat ranges:', [(float(t.min()), float(t.max())) for t in (mf, lf, full.decode(mf).detach())])


if __name__ == '__main__':
    main()
