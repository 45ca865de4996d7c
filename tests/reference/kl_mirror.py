"""PyTorch mirror of the `vae-kl-f4` autoencoder family
(shared/spec/default-models.md, "Autoencoder: vae-kl-f4"): the Encoder and
Decoder of CompVis/latent-diffusion (ldm/modules/diffusionmodules/model.py)
with AutoencoderKL's quant_conv / post_quant_conv, written from the spec (no
import of latent-diffusion).

The state_dict keys are latent-diffusion's AutoencoderKL keys, in its order
(encoder.*, decoder.*, quant_conv.*, post_quant_conv.*), and the parameter
names of vae/kl.c, so published weights, checkpoints and goldens line up by
name. Imported by the golden generator (gen_kl.py) and the PyTorch trainer;
keep it free of side effects.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0
GN_EPS = 1e-6


def normalize(c, groups):
    return nn.GroupNorm(groups, c, eps=GN_EPS, affine=True)


class ResnetBlock(nn.Module):
    """h = conv1(SiLU(GN(x))); h = conv2(SiLU(GN(h))); x (or nin_shortcut(x)) + h.
    No time input (latent-diffusion's temb_channels = 0), dropout 0."""

    def __init__(self, cin, cout, groups):
        super().__init__()
        self.norm1 = normalize(cin, groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2 = normalize(cout, groups)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1, 1, 0)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, 'nin_shortcut') else x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions of GN(x)."""

    def __init__(self, c, groups):
        super().__init__()
        self.norm = normalize(c, groups)
        self.q = nn.Conv2d(c, c, 1)
        self.k = nn.Conv2d(c, c, 1)
        self.v = nn.Conv2d(c, c, 1)
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x):
        h = self.norm(x)
        B, C, H, W = h.shape
        q = self.q(h).reshape(B, C, H * W).permute(0, 2, 1)  # (B, T, C)
        k = self.k(h).reshape(B, C, H * W)                   # (B, C, T)
        v = self.v(h).reshape(B, C, H * W)                   # (B, C, T)
        w = torch.softmax(torch.bmm(q, k) * C ** -0.5, dim=2)  # (B, Tq, Tk)
        a = torch.bmm(v, w.permute(0, 2, 1)).reshape(B, C, H, W)
        return x + self.proj_out(a)


class Downsample(nn.Module):
    """Pad right and bottom by one zero, then Conv(3, 2, 0)."""

    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 2, 0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest x2, then Conv(3, 1, 1)."""

    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode='nearest'))


class Encoder(nn.Module):
    def __init__(self, ch, ch_mult, num_res_blocks, attn_resolutions, z_channels,
                 in_channels, image_size, groups):
        super().__init__()
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        self.conv_in = nn.Conv2d(in_channels, ch, 3, 1, 1)
        res = image_size
        in_mult = (1,) + tuple(ch_mult)
        self.down = nn.ModuleList()
        for lv in range(self.num_resolutions):
            block, attn = nn.ModuleList(), nn.ModuleList()
            bin_, bout = ch * in_mult[lv], ch * ch_mult[lv]
            for _ in range(num_res_blocks):
                block.append(ResnetBlock(bin_, bout, groups))
                bin_ = bout
                if res in attn_resolutions:
                    attn.append(AttnBlock(bin_, groups))
            down = nn.Module()
            down.block, down.attn = block, attn
            if lv != self.num_resolutions - 1:
                down.downsample = Downsample(bin_)
                res //= 2
            self.down.append(down)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(bin_, bin_, groups)
        self.mid.attn_1 = AttnBlock(bin_, groups)
        self.mid.block_2 = ResnetBlock(bin_, bin_, groups)
        self.norm_out = normalize(bin_, groups)
        self.conv_out = nn.Conv2d(bin_, 2 * z_channels, 3, 1, 1)

    def forward(self, x):
        h = self.conv_in(x)
        for lv, down in enumerate(self.down):
            for j in range(self.num_res_blocks):
                h = down.block[j](h)
                if len(down.attn) > 0:
                    h = down.attn[j](h)
            if lv != self.num_resolutions - 1:
                h = down.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, ch, ch_mult, num_res_blocks, attn_resolutions, z_channels,
                 out_channels, image_size, groups):
        super().__init__()
        self.num_resolutions = len(ch_mult)
        self.num_res_blocks = num_res_blocks
        bin_ = ch * ch_mult[-1]
        res = image_size // 2 ** (self.num_resolutions - 1)
        self.conv_in = nn.Conv2d(z_channels, bin_, 3, 1, 1)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock(bin_, bin_, groups)
        self.mid.attn_1 = AttnBlock(bin_, groups)
        self.mid.block_2 = ResnetBlock(bin_, bin_, groups)
        self.up = nn.ModuleList()
        for lv in reversed(range(self.num_resolutions)):
            block, attn = nn.ModuleList(), nn.ModuleList()
            bout = ch * ch_mult[lv]
            for _ in range(num_res_blocks + 1):
                block.append(ResnetBlock(bin_, bout, groups))
                bin_ = bout
                if res in attn_resolutions:
                    attn.append(AttnBlock(bin_, groups))
            up = nn.Module()
            up.block, up.attn = block, attn
            if lv != 0:
                up.upsample = Upsample(bin_)
                res *= 2
            self.up.insert(0, up)  # up.<level>: state_dict order by level
        self.norm_out = normalize(bin_, groups)
        self.conv_out = nn.Conv2d(bin_, out_channels, 3, 1, 1)

    def forward(self, z):
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for lv in reversed(range(self.num_resolutions)):
            up = self.up[lv]
            for j in range(self.num_res_blocks + 1):
                h = up.block[j](h)
                if len(up.attn) > 0:
                    h = up.attn[j](h)
            if lv != 0:
                h = up.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class KLAutoencoder(nn.Module):
    """AutoencoderKL without its loss: x (B, in_channels, S, S) <-> latents
    (B, z_channels, S / 2^(L-1), S / 2^(L-1)), L = len(ch_mult); embed_dim =
    z_channels. Default: the spec's vae-kl-f4 on rgb64."""

    def __init__(self, ch=32, ch_mult=(1, 2, 4), num_res_blocks=1, attn_resolutions=(),
                 z_channels=4, in_channels=3, image_size=64, groups=32):
        super().__init__()
        assert image_size % 2 ** (len(ch_mult) - 1) == 0
        self.z_channels = z_channels
        self.encoder = Encoder(ch, ch_mult, num_res_blocks, attn_resolutions, z_channels,
                               in_channels, image_size, groups)
        self.decoder = Decoder(ch, ch_mult, num_res_blocks, attn_resolutions, z_channels,
                               in_channels, image_size, groups)
        self.quant_conv = nn.Conv2d(2 * z_channels, 2 * z_channels, 1)
        self.post_quant_conv = nn.Conv2d(z_channels, z_channels, 1)

    def encode(self, x):
        """-> mean, logvar (B, Z, h, w), logvar clamped to [-30, 20]."""
        m = self.quant_conv(self.encoder(x))
        Z = self.z_channels
        return m[:, :Z], torch.clamp(m[:, Z:], LOGVAR_MIN, LOGVAR_MAX)

    def decode(self, z):
        """z (B, Z, h, w) -> x_hat (B, C, S, S), not clamped."""
        return self.decoder(self.post_quant_conv(z))

    def forward(self, x, eps):
        mean, logvar = self.encode(x)
        z = mean + torch.exp(0.5 * logvar) * eps
        return self.decode(z), mean, logvar

    def last_layer(self):
        """The weight the adaptive GAN weight differentiates against."""
        return self.decoder.conv_out.weight

    def encoder_param_count(self):
        return (sum(p.numel() for p in self.encoder.parameters())
                + sum(p.numel() for p in self.quant_conv.parameters()))

    def decoder_param_count(self):
        return (sum(p.numel() for p in self.decoder.parameters())
                + sum(p.numel() for p in self.post_quant_conv.parameters()))


def formula_fill(model):
    """Deterministic weights both sides can regenerate without a file (the
    full-size test of tests/test_kl.c): tensor number ti in state_dict order,
    element i (flat), s = sin(0.7 i + 1.3 ti) in double, stored as float32:
    GroupNorm weights 1 + 0.1 s, other 1-D tensors 0.1 s, the rest
    s / sqrt(fan_in) (fan_in: the product of the dimensions after the first)."""
    with torch.no_grad():
        for ti, (name, p) in enumerate(model.state_dict().items()):
            n = p.numel()
            s = torch.sin(torch.arange(n, dtype=torch.float64) * 0.7 + 1.3 * ti)
            if p.dim() == 1:
                v = 1 + 0.1 * s if ('norm' in name and name.endswith('.weight')) else 0.1 * s
            else:
                v = s / math.sqrt(n // p.shape[0])
            p.copy_(v.reshape(p.shape).float())
    return model


def formula_input(shape):
    """An image both sides regenerate: element i (flat) is sin(0.37 i + 0.5),
    stored as float32."""
    n = 1
    for d in shape:
        n *= d
    x = torch.sin(torch.arange(n, dtype=torch.float64) * 0.37 + 0.5)
    return x.reshape(shape).float()
