"""PyTorch mirror of the `vae-f4c4` VAE (shared/spec/default-models.md).

The state_dict keys (encoder.0.weight ... decoder.8.bias) are the parameter
names of vae/vae.c, so checkpoints and goldens line up by name. Imported by
the golden generator, the PyTorch reference trainer and the benchmark and
quality scripts; keep it free of side effects.
"""
import torch
import torch.nn as nn

LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


class VAE(nn.Module):
    def __init__(self, in_channels=1, image_size=32, base_channels=32,
                 latent_channels=4, kl_weight=1e-3):
        super().__init__()
        assert image_size % 4 == 0
        C, b, Z = in_channels, base_channels, latent_channels
        self.in_channels = C
        self.image_size = image_size
        self.latent_channels = Z
        self.kl_weight = kl_weight
        self.encoder = nn.Sequential(
            nn.Conv2d(C, b, 3, 1, 1), nn.SiLU(),
            nn.Conv2d(b, 2 * b, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(2 * b, 2 * b, 3, 1, 1), nn.SiLU(),
            nn.Conv2d(2 * b, 4 * b, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(4 * b, 2 * Z, 3, 1, 1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(Z, 4 * b, 3, 1, 1), nn.SiLU(),
            nn.ConvTranspose2d(4 * b, 2 * b, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(2 * b, 2 * b, 3, 1, 1), nn.SiLU(),
            nn.ConvTranspose2d(2 * b, b, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(b, C, 3, 1, 1),
        )

    def encode(self, x):
        """x (B, C, S, S) -> mean, logvar (B, Z, S/4, S/4), logvar clamped."""
        h = self.encoder(x)
        Z = self.latent_channels
        mean, logvar = h[:, :Z], h[:, Z:]
        return mean, torch.clamp(logvar, LOGVAR_MIN, LOGVAR_MAX)

    def decode(self, z):
        """z (B, Z, h, w) -> x_hat (B, C, S, S), not clamped."""
        return self.decoder(z)

    def forward(self, x, eps):
        mean, logvar = self.encode(x)
        z = mean + torch.exp(0.5 * logvar) * eps
        return self.decode(z), mean, logvar

    def loss(self, x, eps):
        """Negative ELBO with KL weight, averaged over the batch.
        Returns (loss, rec, kl); also keeps the last x_hat, mean, logvar."""
        x_hat, mean, logvar = self.forward(x, eps)
        B = x.shape[0]
        rec = ((x - x_hat) ** 2).sum() / B
        kl = 0.5 * (mean ** 2 + torch.exp(logvar) - 1.0 - logvar).sum() / B
        self.last = (x_hat, mean, logvar)
        return rec + self.kl_weight * kl, rec, kl
