"""The style encoder q(s | x) (training only): a small CNN from the image to the mean and log-variance of s.

Trained jointly with the UNet with a KL term to N(0, I) (a VAE on the global code, as the semantic
encoder of Diffusion Autoencoders but stochastic), so that at inference `s ~ N(0, I)` gives samples.
The pose is given to the UNet separately, so s is pushed to carry what the pose does not: appearance.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models import ModelMixin
from torch import nn


class StyleEncoder(ModelMixin, ConfigMixin):
    """`forward(image in [-1, 1]) -> (mu, logvar)`, each `(B, style_dim)`."""

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        widths: tuple[int, ...] = (32, 64, 128, 128),  # one stride-2 conv + one conv per entry (128 px -> 8 px)
        style_dim: int = 64,  # dimension of s
        norm_num_groups: int = 8,
        # Images are resized (area mean) to this side first: the look is global, so a 256-px model pays for a
        # 128-px encoder, and an encoder trained at 128 px keeps working. None: images as given.
        input_size: int | None = None,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for w in widths:
            layers += [
                nn.Conv2d(prev, w, 3, stride=2, padding=1),
                nn.GroupNorm(min(norm_num_groups, w), w),
                nn.SiLU(),
                nn.Conv2d(w, w, 3, padding=1),
                nn.GroupNorm(min(norm_num_groups, w), w),
                nn.SiLU(),
            ]
            prev = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(prev, 2 * style_dim)
        # Start near the prior (mu 0, logvar 0) so early training is not dominated by the KL term.
        nn.init.zeros_(self.head.bias)
        self.head.weight.data.mul_(0.1)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior mean and log-variance of s."""
        side = self.config.input_size
        if side and image.shape[-2:] != (side, side):
            image = nn.functional.interpolate(image, size=(side, side), mode="area")
        h = self.features(image.to(self.dtype)).mean(dim=(2, 3))  # global average pool: s is global
        mu, logvar = self.head(h).chunk(2, dim=1)
        return mu, logvar.clamp(-10.0, 5.0)

    @staticmethod
    def sample(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterised draw s = mu + exp(logvar / 2) * n, n ~ N(0, I) (Kingma & Welling 2014, Eq. 10)."""
        noise = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * logvar) * noise

    @staticmethod
    def kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(N(mu, sigma^2) || N(0, I)), mean over dimensions and batch (Kingma & Welling 2014, App. B)."""
        return StyleEncoder.kl_per_dim(mu, logvar).mean()

    @staticmethod
    def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """The KL of each dimension of s in nats, `(style_dim,)`, mean over the batch."""
        return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean(dim=0)
