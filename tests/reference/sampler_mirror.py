"""PyTorch mirror of diffusion/sampler.c: DDPM, DDIM, DPM-Solver++(2M) and
Euler-ancestral with classifier-free guidance and an img2img start step.

Computed in float64. Every random number comes from an explicit tensor so that
the C samplers can replay it. Conventions (the same as sampler.h):
  - timesteps: DDPM visits T-1..0; the others t_i = i * (T // steps),
    i = steps-1 down to 0 (DDIM's spacing, shared so that the samplers compare
    step for step); every sampler's last step lands on alpha_bar = 1 (x_0);
  - noise (runs, B, ...): entry j for the j-th step run (j = 0 at `start`);
  - the trajectory holds the variance-preserving x_t after every step (also
    for Euler-ancestral, which keeps its own state in the variance-exploding
    scale as k-diffusion does and converts for the trajectory);
  - guidance: o = o(x, t, K) + w (o(x, t, y) - o(x, t, K)) on the network
    output (eps or v).
DDIM and DDPM are also in unet_mirror.py (ddim_sample, ddpm_sample, used by
the benchmarks); gen_sampler.py checks that both agree.
"""
import math

import torch

from unet_mirror import PRED_EPS, x0_eps  # noqa: F401 (PRED_EPS re-exported)

KINDS = ('ddpm', 'ddim', 'dpmpp2m', 'euler_a')


def timesteps(kind, sched, steps):
    if kind == 'ddpm':
        return list(reversed(range(sched.T)))
    assert 1 <= steps <= sched.T
    skip = sched.T // steps
    return [i * skip for i in reversed(range(steps))]


def guided(model, y=None, num_classes=0, w=1.0):
    """The network output a sampler uses: model(x, t) on an unconditional
    model (y None, w 1); on a conditional one (model(x, t, labels)) the null
    class K when y is None, else the guided mix of the conditional and the
    null pass (computed as two passes here; C batches them)."""
    if num_classes == 0:
        assert y is None and w == 1.0
        return model

    def fn(x, t):
        null = torch.full((x.shape[0],), num_classes, dtype=torch.long)
        if y is None or w == 0.0:
            return model(x, t, null)
        if w == 1.0:
            return model(x, t, y)
        on = model(x, t, null)
        return on + w * (model(x, t, y) - on)
    return fn


def _half_log_snr(ab):
    """lambda = log(alpha / sigma), alpha = sqrt(ab), sigma = sqrt(1 - ab)."""
    return math.log(math.sqrt(ab) / math.sqrt(1 - ab))


@torch.no_grad()
def sample(fn, sched, x, kind, steps=0, eta=0.0, prediction=PRED_EPS, noise=None, start=0):
    """Runs sampler `kind` from x = x at step `start` (x_T for start 0) with
    fn(x, t) the network output. Returns x_0 and the list of x after each step."""
    ts = timesteps(kind, sched, steps)
    acp = sched.alphas_cumprod.tolist()
    betas = sched.betas.tolist()
    B = x.shape[0]
    traj = []
    hist = []        # DPM-Solver++: (lambda, x0) of the steps run
    x_ve = None      # Euler-ancestral's state
    for j, k in enumerate(range(start, len(ts))):
        t = ts[k]
        last = k + 1 == len(ts)
        ab = acp[t]
        ab_next = 1.0 if last else acp[ts[k + 1]]
        out = fn(x, torch.full((B,), t, dtype=torch.long))
        x0, eps = x0_eps(x, out, ab, prediction)
        if kind == 'ddpm':
            beta = betas[t]
            mean = (beta * math.sqrt(ab_next) / (1 - ab)) * x0 + \
                   ((1 - ab_next) * math.sqrt(1 - beta) / (1 - ab)) * x
            x = mean + math.sqrt(beta * (1 - ab_next) / (1 - ab)) * noise[j] if t > 0 else mean
        elif kind == 'ddim':
            sigma = eta * math.sqrt((1 - ab_next) / (1 - ab)) * math.sqrt(1 - ab / ab_next)
            x = math.sqrt(ab_next) * x0 + math.sqrt(max(0.0, 1 - ab_next - sigma ** 2)) * eps
            if sigma > 0:
                x = x + sigma * noise[j]
        elif kind == 'dpmpp2m':
            # Lu et al. (2022), DPM-Solver++(2M), data prediction, midpoint
            # form as diffusers' DPMSolverMultistepScheduler: first order at
            # the first step and at the last (which reaches sigma = 0).
            lam_s = _half_log_snr(ab)
            hist.append((lam_s, x0))
            if last:
                x = x0
            else:
                alpha_t, sigma_t = math.sqrt(ab_next), math.sqrt(1 - ab_next)
                sigma_s = math.sqrt(1 - ab)
                h = _half_log_snr(ab_next) - lam_s
                if len(hist) == 1:
                    x = (sigma_t / sigma_s) * x - (alpha_t * (math.exp(-h) - 1.0)) * x0
                else:
                    lam_s1, m1 = hist[-2]
                    r0 = (lam_s - lam_s1) / h
                    d0, d1 = x0, (1.0 / r0) * (x0 - m1)
                    x = (sigma_t / sigma_s) * x - (alpha_t * (math.exp(-h) - 1.0)) * d0 \
                        - 0.5 * (alpha_t * (math.exp(-h) - 1.0)) * d1
        elif kind == 'euler_a':
            # k-diffusion's sample_euler_ancestral, eta 1, on x_ve = x / sqrt(ab)
            sigma = math.sqrt((1 - ab) / ab)
            sigma_next = 0.0 if last else math.sqrt((1 - ab_next) / ab_next)
            if x_ve is None:
                x_ve = x / math.sqrt(ab)
            sigma_up = min(sigma_next, math.sqrt(sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2)
                                                 / sigma ** 2))
            sigma_down = math.sqrt(sigma_next ** 2 - sigma_up ** 2)
            d = (x_ve - x0) / sigma
            x_ve = x_ve + d * (sigma_down - sigma)
            if sigma_next > 0:
                x_ve = x_ve + noise[j] * sigma_up
            x = x_ve / math.sqrt(1 + sigma_next ** 2)
        else:
            raise ValueError(kind)
        traj.append(x)
    return x, traj
