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
the benchmarks); gen_sampler.py checks that both agree. At the end: ldm-edit's
rules (tools/edit.c): the img2img start, the latent mask, the inpainting hook.
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
def sample(fn, sched, x, kind, steps=0, eta=0.0, prediction=PRED_EPS, noise=None, start=0,
           hook=None):
    """Runs sampler `kind` from x = x at step `start` (x_T for start 0) with
    fn(x, t) the network output. Returns x_0 and the list of x after each step
    run (before the hook). hook(x, k, t_next) -> (x, next step), as
    sampler.h's SampleHook: called after step k with x at t_next (-1 after the
    last step); a jump back (next <= k) restarts DPM-Solver++'s history."""
    ts = timesteps(kind, sched, steps)
    acp = sched.alphas_cumprod.tolist()
    betas = sched.betas.tolist()
    B = x.shape[0]
    traj = []
    hist = []        # DPM-Solver++: (lambda, x0) of the steps run
    x_ve = None      # Euler-ancestral's state
    k, j = start, 0  # the step to run, the runs so far
    while k < len(ts):
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
        nxt = k + 1
        if hook is not None:
            x, nxt = hook(x, k, ts[k + 1] if k + 1 < len(ts) else -1)
            assert start <= nxt <= k + 1
            x_ve = None  # Euler-ancestral goes on from the x the hook left
            if nxt <= k:
                hist = []
        k, j = nxt, j + 1
    return x, traj


# ---- editing (tools/edit.h): img2img start, latent mask, inpainting hook


def edit_start_step(strength, nsteps):
    """start = n - max(1, round(s n)), rounding half away from zero (lround)."""
    return nsteps - max(1, math.floor(strength * nsteps + 0.5))


def edit_start_latent(sched, ts, start, x0, noise):
    """x at step `start`: the noise itself at start 0, else q(x_t | x0)."""
    if start == 0:
        return noise
    return sched.q_sample(x0, torch.full((x0.shape[0],), ts[start], dtype=torch.long), noise)


def edit_latent_mask(px, h):
    """px (B, S, S) in {0, 1} -> (B, h, h): 1 where any pixel of the cell's
    f x f block is (f = S / h)."""
    B, S, _ = px.shape
    f = S // h
    return px.reshape(B, h, f, h, f).amax(dim=(2, 4))


def edit_inpaint_hook(sched, ts, x0, fill, resample, noise):
    """The inpainting hook of edit.c: after step k the kept cells (fill 0) take
    x0 noised to t_next (x0 itself at t_next = -1); then, R - 1 times a step,
    x goes back to the step's timestep, x = sqrt(ab_t / ab_next) x +
    sqrt(1 - ab_t / ab_next) z, and the step runs again. noise (draws, B, Z,
    h, w) is used entry after entry, in that order."""
    acp = sched.alphas_cumprod.tolist()
    keep = (1 - fill).unsqueeze(1).to(x0.dtype)  # (B, 1, h, w)
    state = {'jumps': 0, 'draws': 0}

    def draw():
        z = noise[state['draws']]
        state['draws'] += 1
        return z

    def hook(x, k, t_next):
        if t_next >= 0:
            ab = acp[t_next]
            known = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * draw()
        else:
            ab, known = 1.0, x0
        x = keep * known + (1 - keep) * x
        if state['jumps'] + 1 >= resample:
            state['jumps'] = 0
            return x, k + 1
        state['jumps'] += 1
        r = acp[ts[k]] / ab
        return math.sqrt(r) * x + math.sqrt(1 - r) * draw(), k
    return hook, state
