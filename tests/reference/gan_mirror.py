"""PyTorch mirror of the `patchgan-d3` discriminator and the discriminator
terms of the `kl-gan` loss (shared/spec/default-models.md).

The discriminator is pix2pix's NLayerDiscriminator as taming-transformers and
latent-diffusion use it (n_layers 3, BatchNorm, no ActNorm); its state_dict
keys (main.0.weight ... main.11.bias, main.{3,6,9}.running_mean/var) are the
names of vae/patchgan.c. The loss helpers follow latent-diffusion's
LPIPSWithDiscriminator: hinge discriminator loss, generator term
-mean(D(x_hat)), and the adaptive weight from the two gradients at the
decoder's last layer. Imported by the golden generator; keep it free of side
effects.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

LRELU_SLOPE = 0.2


class NLayerDiscriminator(nn.Module):
    """Conv(4,2,1) C -> w, LReLU; then n_layers - 1 Conv(4,2,1) and one
    Conv(4,1,1), each without bias + BatchNorm + LReLU, the channel factor
    doubling up to 8; last Conv(4,1,1) -> 1 logit per patch."""

    def __init__(self, input_nc=3, ndf=32, n_layers=3):
        super().__init__()
        seq = [nn.Conv2d(input_nc, ndf, 4, 2, 1), nn.LeakyReLU(LRELU_SLOPE, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            seq += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride, 1, bias=False),
                    nn.BatchNorm2d(ndf * mult), nn.LeakyReLU(LRELU_SLOPE, True)]
        seq += [nn.Conv2d(ndf * mult, 1, 4, 1, 1)]
        self.main = nn.Sequential(*seq)

    def forward(self, x):
        return self.main(x)


def weights_init(m):
    """taming-transformers' init: conv weights N(0, 0.02), BatchNorm weight
    N(1, 0.02) and bias 0; conv biases keep PyTorch's default."""
    if isinstance(m, nn.Conv2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.constant_(m.bias, 0.0)


def hinge_d_loss(logits_real, logits_fake):
    return 0.5 * (torch.mean(F.relu(1.0 - logits_real)) + torch.mean(F.relu(1.0 + logits_fake)))


def generator_loss(logits_fake):
    return -torch.mean(logits_fake)


def l1_rec(x, x_hat):
    """sum |x - x_hat| over the batch, divided by B (the kl-gan nll without
    perceptual term)."""
    return torch.abs(x - x_hat).sum() / x.shape[0]


def adaptive_weight(nll_loss, g_loss, last_layer, disc_weight=0.5):
    """latent-diffusion's calculate_adaptive_weight."""
    nll_grads = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
    g_grads = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    w = torch.norm(nll_grads) / (torch.norm(g_grads) + 1e-4)
    w = torch.clamp(w, 0.0, 1e4).detach()
    return w * disc_weight, nll_grads, g_grads
