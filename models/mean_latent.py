"""`MeanLatent`: E[z_0 | s, pose], the latent a style code and a pose give on average; the sampler's start.

    mean = MeanLatent.from_pretrained("weights/mean_latent")
    mu = mean(cond_map, s)                               # (B, 4, 32, 32) scaled latent, blurry by design
    z = (z_T + sqrt(alpha_bar_T) * mu) * init_noise_sigma   # `models.samplers.sample_loop(z_mean=mu)`

Why. Training noises z_0 to z_T = sqrt(alpha_bar_T) z_0 + sqrt(1 - alpha_bar_T) eps, and with Stable Diffusion's
scaled-linear schedule sqrt(alpha_bar_T) = 0.068: enough of z_0's low frequencies survive for the UNet to read a
character's colours off z_T (Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed",
Sec. 3.1). Sampling from pure noise then hands it eps's own low frequencies as if they were the image's, so the
colours came from the seed and the style code s carried little (`python -m training.eval style`). Lin et al.
retrain at zero terminal SNR; without a retrain, the first moment of the training marginal
q(z_T | s, pose) = N(sqrt(alpha_bar_T) E[z_0 | s, pose], (1 - alpha_bar_T) I) is what the sampler should start
from, and this network estimates E[z_0 | s, pose] (trained by least squares on the UNet's own training pairs,
`training.train_mean_latent`). The look then follows s, and every slider and style refinement moves it.

Network: the pose's condition map average-pooled to a grid of `cell`-pixel cells (16 x 16 for 128 px: a mean
latent is smooth, and only its low frequencies outlast the noise at T), a 3x3 convolution, residual blocks of
dilated 3x3 convolutions (dilations 1, 2, 4, 1: the receptive field spans the grid) whose GroupNorm is scaled and
shifted by s (FiLM, Perez et al. 2018), a 1x1 convolution to the latent's channels, and a bilinear upsampling to
the latent grid.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models import ModelMixin
from torch import nn

from models.errors import InputError


class _FiLMBlock(nn.Module):
    """x + conv(SiLU(FiLM_s(GroupNorm(x)))), dilated."""

    def __init__(self, channels: int, style_dim: int, dilation: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, affine=False)
        self.film = nn.Linear(style_dim, 2 * channels)
        self.conv = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        nn.init.zeros_(self.film.weight)  # start as plain GroupNorm: scale 1, shift 0
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """One residual step, modulated by s."""
        scale, shift = self.film(s)[:, :, None, None].chunk(2, dim=1)
        return x + self.conv(nn.functional.silu(self.norm(x) * (1 + scale) + shift))


class MeanLatent(ModelMixin, ConfigMixin):
    """`forward(cond_map (B, C, H, W), style (B, D)) -> (B, latent_channels, H / f, W / f)`, f = `latent_factor`."""

    @register_to_config
    def __init__(
        self,
        cond_channels: int = 33,  # channels of the condition map (models.condition.CONDITION_CHANNELS)
        latent_channels: int = 4,  # channels of the autoencoder latent
        style_dim: int = 64,  # dimension of s, as the UNet's
        latent_factor: int = 4,  # condition-map pixels per latent cell (the autoencoder's downsampling)
        cell: int = 8,  # condition-map pixels per cell of the grid the network works on
        channels: int = 64,  # width of the residual blocks
        dilations: tuple[int, ...] = (1, 2, 4, 1),  # one residual block each
        norm_num_groups: int = 16,
    ):
        super().__init__()
        if cell % latent_factor:
            raise InputError("The mean latent's cell must be a multiple of the latent factor.")
        self.hint = nn.Sequential(nn.Conv2d(cond_channels, channels, 3, padding=1), nn.SiLU())
        self.style_bias = nn.Linear(style_dim, channels)  # the global look (a backdrop's colour) everywhere
        self.blocks = nn.ModuleList([_FiLMBlock(channels, style_dim, d, norm_num_groups) for d in dilations])
        self.out = nn.Sequential(
            nn.GroupNorm(norm_num_groups, channels), nn.SiLU(), nn.Conv2d(channels, latent_channels, 1)
        )

    def pool(self, cond_map: torch.Tensor) -> torch.Tensor:
        """The condition map averaged over the working grid's cells (training caches this: `from_pooled`)."""
        if cond_map.shape[1] != self.config.cond_channels:
            raise InputError(
                f"The mean latent takes a {self.config.cond_channels}-channel condition map; got {cond_map.shape[1]}."
            )
        return nn.functional.avg_pool2d(cond_map.to(self.dtype), self.config.cell)

    def forward(self, cond_map: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """E[z_0 | s, pose] as a scaled latent (the autoencoder's `encode` units)."""
        return self.from_pooled(self.pool(cond_map), style)

    def from_pooled(self, pooled: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """`forward` from the pooled condition map (`pool`)."""
        if style.shape[-1] != self.config.style_dim:
            raise InputError(
                f"The mean latent takes a {self.config.style_dim}-number style code; got {style.shape[-1]}."
            )
        s = style.to(self.dtype).reshape(-1, self.config.style_dim).expand(pooled.shape[0], -1)
        x = self.hint(pooled.to(self.dtype)) + self.style_bias(s)[:, :, None, None]
        for block in self.blocks:
            x = block(x, s)
        up = self.config.cell // self.config.latent_factor
        return nn.functional.interpolate(self.out(x), scale_factor=up, mode="bilinear", align_corners=False)


__all__ = ["MeanLatent"]
