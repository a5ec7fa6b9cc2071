"""The pose-conditioned denoiser: diffusers' `UNet2DModel` + a pose hint encoder + the style affine `A`.

    hint  = HintEncoder(cond_map)                      # (B, 33, H, W) -> (B, hint_channels, H/f, W/f)
    x_in  = concat(z_t, hint)                           # the noisy latent and the pose, channel-wise
    emb   = TimestepEmbedding(t) + A(s)                  # A = `style_affine`, one nn.Linear(style_dim, time_embed_dim)
    out   = UNet(x_in, emb)                              # v (or eps) prediction, (B, latent_channels, H/f, W/f)

The style code enters only through `A` (passed as `class_labels` to an identity class embedding, so it
is added to the time embedding, which every resnet reads as a GroupNorm scale and shift: AdaGN as in
Diffusion Autoencoders, Preechakul et al. 2022). GANSpace and SeFa read `style_affine.weight`.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models import ModelMixin, UNet2DModel
from torch import nn

from models.errors import InputError


class HintEncoder(nn.Module):
    """Stride-2 convolutions with SiLU from the condition map to the latent grid (33 -> 32 -> 64 -> 32 for f8)."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], out_channels: int):
        super().__init__()
        chans = (in_channels, *widths, out_channels)
        layers: list[nn.Module] = []
        for i in range(len(chans) - 1):
            layers.append(nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1))
            if i < len(chans) - 2:
                layers.append(nn.SiLU())
        self.net = nn.Sequential(*layers)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        """`(B, C, H, W)` -> `(B, out_channels, H / 2^n, W / 2^n)`."""
        return self.net(cond)


class PoseUNet(ModelMixin, ConfigMixin):
    """`forward(noisy_latent, t, cond_map, style) -> prediction`; see the module docstring for the data path."""

    @register_to_config
    def __init__(
        self,
        sample_size: int = 16,  # latent side (128 px image / f8)
        latent_channels: int = 8,  # channels of the autoencoder latent
        cond_channels: int = 33,  # channels of the condition map (models.condition.CONDITION_CHANNELS)
        hint_widths: tuple[int, ...] = (32, 64),  # hidden widths of the hint encoder; len + 1 = log2(f) downsamples
        hint_channels: int = 32,  # channels of the encoded pose concatenated with the latent
        style_dim: int = 64,  # dimension of the style code s, prior N(0, I)
        block_out_channels: tuple[int, ...] = (96, 192, 256),  # UNet widths, one level per entry
        layers_per_block: int = 1,
        attention_head_dim: int = 32,  # attention only at the lowest resolution
        norm_num_groups: int = 32,
        prediction_type: str = "v_prediction",  # what the network predicts ("v_prediction" or "epsilon")
    ):
        super().__init__()
        n = len(block_out_channels)
        self.hint_encoder = HintEncoder(cond_channels, tuple(hint_widths), hint_channels)
        self.unet = UNet2DModel(
            sample_size=sample_size,
            in_channels=latent_channels + hint_channels,
            out_channels=latent_channels,
            down_block_types=("DownBlock2D",) * (n - 1) + ("AttnDownBlock2D",),
            up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (n - 1),
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            attention_head_dim=attention_head_dim,
            norm_num_groups=norm_num_groups,
            resnet_time_scale_shift="scale_shift",  # AdaGN: the embedding (time + style) scales and shifts
            class_embed_type="identity",
        )
        time_embed_dim = block_out_channels[0] * 4
        self.style_affine = nn.Linear(style_dim, time_embed_dim)  # the affine A of the style code

    @property
    def downsample_factor(self) -> int:
        """Condition-map pixels per latent pixel."""
        return 2 ** (len(self.config.hint_widths) + 1)

    def forward(
        self, noisy_latent: torch.Tensor, timestep: torch.Tensor | float, cond_map: torch.Tensor, style: torch.Tensor
    ) -> torch.Tensor:
        """The denoiser's prediction (`prediction_type`) for `z_t` at `timestep`, given the pose map and style."""
        f = self.downsample_factor
        if cond_map.shape[-2:] != (noisy_latent.shape[-2] * f, noisy_latent.shape[-1] * f):
            raise InputError(
                f"The condition map must be {f} times the latent side; got {tuple(cond_map.shape[-2:])} "
                f"for a latent of {tuple(noisy_latent.shape[-2:])}."
            )
        hint = self.hint_encoder(cond_map.to(self.dtype))
        x = torch.cat([noisy_latent.to(self.dtype), hint], dim=1)
        emb = self.style_affine(style.to(self.dtype))
        if not torch.is_tensor(timestep):
            timestep = torch.tensor([timestep], device=x.device)
        timestep = timestep.to(x.device).reshape(-1).expand(x.shape[0])
        return self.unet(x, timestep, class_labels=emb).sample
