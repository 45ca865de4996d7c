"""PyTorch mirror of the `unet-s` UNet, its noise schedules and samplers
(shared/spec/default-models.md, section "UNet").

The state_dict keys are the parameter names of diffusion/unet.c, so
checkpoints and goldens line up by name:
  time_embed.0, time_embed.2                 Linear time_dim->temb, temb->temb
  label_emb                                  Embedding (K + 1, temb), class-conditional only
  conv_in
  down.<l>.res.<j>.{norm1,conv1,temb_proj,norm2,conv2[,skip]}
  down.<l>.attn.<j>.{norm,q,k,v,proj}         (levels at an attention resolution)
  down.<l>.downsample                          (every level but the last)
  mid.res1, mid.attn, mid.res2
  up.<u>.res.<j>, up.<u>.attn.<j>, up.<u>.upsample
  out_norm, out_conv
Up levels are numbered in the order they run: up.0 is the lowest resolution.

The samplers take every random number from explicit tensors so that the C
samplers can replay them exactly. Imported by the golden generator and the
reference scripts; keep it free of side effects.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

PRED_EPS, PRED_V = 0, 1


def gn_groups(c):
    """The spec's group count: 32, or the largest divisor of c below it."""
    for g in range(min(32, c), 0, -1):
        if c % g == 0:
            return g
    raise ValueError(c)


def group_norm(c):
    return nn.GroupNorm(gn_groups(c), c, eps=1e-5)


def zero_module(m):
    """The spec's zero-initialised convolutions (weight and bias)."""
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


def timestep_embedding(t, dim):
    """t (B) integers -> (B, dim): first half sin, second half cos,
    frequencies exp(-ln(10000) * i / (dim / 2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) *
                      torch.arange(half, dtype=torch.float64) / half)
    args = t.to(torch.float64)[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, temb_dim):
        super().__init__()
        self.norm1 = group_norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.temb_proj = nn.Linear(temb_dim, cout)
        self.norm2 = group_norm(cout)
        self.conv2 = zero_module(nn.Conv2d(cout, cout, 3, 1, 1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, temb_act):
        """temb_act = SiLU(temb), shared by every block."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(temb_act)[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (x if self.skip is None else self.skip(x))


class Attn(nn.Module):
    def __init__(self, c, heads=1):
        super().__init__()
        assert c % heads == 0
        self.heads = heads
        self.norm = group_norm(c)
        self.q = nn.Conv2d(c, c, 1)
        self.k = nn.Conv2d(c, c, 1)
        self.v = nn.Conv2d(c, c, 1)
        self.proj = zero_module(nn.Conv2d(c, c, 1))

    def forward(self, x):
        B, C, H, W = x.shape
        nh, d = self.heads, C // self.heads
        h = self.norm(x)
        q = self.q(h).reshape(B, nh, d, H * W)
        k = self.k(h).reshape(B, nh, d, H * W)
        v = self.v(h).reshape(B, nh, d, H * W)
        w = torch.einsum('bhdt,bhds->bhts', q, k) / math.sqrt(d)
        w = torch.softmax(w, dim=-1)
        a = torch.einsum('bhts,bhds->bhdt', w, v).reshape(B, C, H, W)
        return x + self.proj(a)


def add_class_embedding(module, num_classes, temb_dim):
    """The spec's class table: (K + 1, temb_dim), row K the null class,
    nn.Embedding's N(0, 1) init; registered as `label_emb`."""
    module.num_classes = num_classes
    if num_classes:
        module.label_emb = nn.Embedding(num_classes + 1, temb_dim)


def embed_time_and_class(module, t, y, dtype):
    """SiLU(time_embed(sinusoid(t)) + label_emb(y)): the class row is added
    after the time MLP's last Linear, before the SiLU. y None on a
    conditional model: the null class K for every item."""
    temb = module.time_embed(timestep_embedding(t, module.time_dim).to(dtype))
    if module.num_classes:
        if y is None:
            y = torch.full_like(t, module.num_classes)
        temb = temb + module.label_emb(y)
    else:
        assert y is None
    return F.silu(temb)


class TimeEmbed(nn.Module):
    """Sinusoidal embedding, Linear, SiLU, Linear (plus the class row with
    num_classes K > 0); forward returns SiLU(temb), the form every ResBlock
    consumes."""

    def __init__(self, time_dim, temb_dim, num_classes=0):
        super().__init__()
        self.time_dim = time_dim
        self.time_embed = nn.Sequential(nn.Linear(time_dim, temb_dim), nn.SiLU(),
                                        nn.Linear(temb_dim, temb_dim))
        add_class_embedding(self, num_classes, temb_dim)

    def forward(self, t, y=None):
        return embed_time_and_class(self, t, y, self.time_embed[0].weight.dtype)


class UNet(nn.Module):
    def __init__(self, latent_channels=4, latent_size=8, base_channels=64,
                 channel_mult=(1, 2), num_res_blocks=2, attn_resolutions=(4,),
                 num_heads=1, temb_dim=256, time_dim=64, num_classes=0):
        super().__init__()
        Z, b, L = latent_channels, base_channels, len(channel_mult)
        assert latent_size % (1 << (L - 1)) == 0
        self.time_dim = time_dim
        self.time_embed = nn.Sequential(nn.Linear(time_dim, temb_dim), nn.SiLU(),
                                        nn.Linear(temb_dim, temb_dim))
        add_class_embedding(self, num_classes, temb_dim)
        self.conv_in = nn.Conv2d(Z, b, 3, 1, 1)

        ch, res = b, latent_size
        skip_ch = [ch]
        self.down = nn.ModuleList()
        for l, m in enumerate(channel_mult):
            level = nn.Module()
            level.res = nn.ModuleList()
            level.attn = nn.ModuleList()
            for _ in range(num_res_blocks):
                level.res.append(ResBlock(ch, b * m, temb_dim))
                ch = b * m
                if res in attn_resolutions:
                    level.attn.append(Attn(ch, num_heads))
                skip_ch.append(ch)
            if l != L - 1:
                level.downsample = nn.Conv2d(ch, ch, 3, 2, 1)
                res //= 2
                skip_ch.append(ch)
            self.down.append(level)

        self.mid = nn.Module()
        self.mid.res1 = ResBlock(ch, ch, temb_dim)
        self.mid.attn = Attn(ch, num_heads)
        self.mid.res2 = ResBlock(ch, ch, temb_dim)

        self.up = nn.ModuleList()
        for l in reversed(range(L)):
            level = nn.Module()
            level.res = nn.ModuleList()
            level.attn = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                level.res.append(ResBlock(ch + skip_ch.pop(), b * channel_mult[l], temb_dim))
                ch = b * channel_mult[l]
                if res in attn_resolutions:
                    level.attn.append(Attn(ch, num_heads))
            if l != 0:
                level.upsample = nn.Conv2d(ch, ch, 3, 1, 1)
                res *= 2
            self.up.append(level)
        assert not skip_ch

        self.out_norm = group_norm(ch)
        self.out_conv = zero_module(nn.Conv2d(ch, Z, 3, 1, 1))

    def forward(self, x, t, y=None):
        """x (B, Z, h, w), t (B) integer steps, y (B) class labels in 0..K
        (K: the null class; None: unconditional, or on a conditional model
        the null class) -> prediction (B, Z, h, w)."""
        temb_act = embed_time_and_class(self, t, y, x.dtype)
        h = self.conv_in(x)
        skips = [h]
        for level in self.down:
            for j, rb in enumerate(level.res):
                h = rb(h, temb_act)
                if len(level.attn):
                    h = level.attn[j](h)
                skips.append(h)
            if hasattr(level, 'downsample'):
                h = level.downsample(h)
                skips.append(h)
        h = self.mid.res1(h, temb_act)
        h = self.mid.attn(h)
        h = self.mid.res2(h, temb_act)
        for level in self.up:
            for j, rb in enumerate(level.res):
                h = rb(torch.cat([h, skips.pop()], dim=1), temb_act)
                if len(level.attn):
                    h = level.attn[j](h)
            if hasattr(level, 'upsample'):
                h = level.upsample(F.interpolate(h, scale_factor=2, mode='nearest'))
        return self.out_conv(F.silu(self.out_norm(h)))


# ---- noise schedules, computed in float64

def make_betas(kind, T):
    if kind == 'linear':
        return torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    if kind == 'cosine':
        s = 0.008
        steps = torch.arange(T + 1, dtype=torch.float64) / T
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        return torch.clamp(1 - f[1:] / f[:-1], max=0.999)
    raise ValueError(kind)


class Schedule:
    def __init__(self, kind='linear', T=1000):
        self.T = T
        self.betas = make_betas(kind, T)
        self.alphas_cumprod = torch.cumprod(1 - self.betas, dim=0)
        prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.posterior_variance = self.betas * (1 - prev) / (1 - self.alphas_cumprod)

    def _ab(self, t, like):
        return self.alphas_cumprod[t].to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))

    def q_sample(self, x0, t, noise):
        ab = self._ab(t, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def target(self, x0, t, noise, prediction):
        """What the network learns to output: eps, or v = sqrt(ab) eps - sqrt(1-ab) x0."""
        if prediction == PRED_EPS:
            return noise
        ab = self._ab(t, x0)
        return ab.sqrt() * noise - (1 - ab).sqrt() * x0


def diffusion_loss(model, sched, x0, t, noise, prediction=PRED_EPS, y=None):
    """Mean squared error over all elements; returns (loss, prediction).
    y: class labels of a conditional model (after label dropout)."""
    pred = model(sched.q_sample(x0, t, noise), t, y)
    return ((pred - sched.target(x0, t, noise, prediction)) ** 2).mean(), pred


def x0_eps(x, out, ab, prediction):
    """The network output at x_t -> (predicted x0, predicted eps); not clipped."""
    if prediction == PRED_EPS:
        return (x - math.sqrt(1 - ab) * out) / math.sqrt(ab), out
    return (math.sqrt(ab) * x - math.sqrt(1 - ab) * out,
            math.sqrt(1 - ab) * x + math.sqrt(ab) * out)


@torch.no_grad()
def ddim_sample(model, sched, x, steps, eta=0.0, prediction=PRED_EPS, noise=None):
    """DDIM from x = x_T. Timesteps t_i = i * (T // steps), visited from
    i = steps-1 down to 0; the last step uses alpha_bar_prev = 1. noise
    (steps, B, ...) is the per-step noise, entry k for the k-th step taken
    (needed only where sigma > 0). Returns x_0 and the list of x after each step."""
    skip = sched.T // steps
    acp = sched.alphas_cumprod.tolist()
    traj = []
    for k, i in enumerate(reversed(range(steps))):
        t = i * skip
        ab = acp[t]
        ab_prev = acp[(i - 1) * skip] if i > 0 else 1.0
        out = model(x, torch.full((x.shape[0],), t, dtype=torch.long))
        x0, eps = x0_eps(x, out, ab, prediction)
        sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab)) * math.sqrt(1 - ab / ab_prev)
        x = math.sqrt(ab_prev) * x0 + math.sqrt(max(0.0, 1 - ab_prev - sigma ** 2)) * eps
        if sigma > 0:
            x = x + sigma * noise[k]
        traj.append(x)
    return x, traj


@torch.no_grad()
def ddpm_sample(model, sched, x, prediction=PRED_EPS, noise=None):
    """Ancestral DDPM over all T steps with the posterior variance beta_tilde;
    noise (T, B, ...), entry k for the k-th step taken (the last is unused)."""
    acp = sched.alphas_cumprod.tolist()
    betas = sched.betas.tolist()
    traj = []
    for k, t in enumerate(reversed(range(sched.T))):
        ab, beta = acp[t], betas[t]
        ab_prev = acp[t - 1] if t > 0 else 1.0
        out = model(x, torch.full((x.shape[0],), t, dtype=torch.long))
        x0, _ = x0_eps(x, out, ab, prediction)
        mean = (beta * math.sqrt(ab_prev) / (1 - ab)) * x0 + \
               ((1 - ab_prev) * math.sqrt(1 - beta) / (1 - ab)) * x
        var = beta * (1 - ab_prev) / (1 - ab)
        x = mean + math.sqrt(var) * noise[k] if t > 0 else mean
        traj.append(x)
    return x, traj
