"""The pose LDM's networks: the pose-conditioned denoiser `PoseUNet`, its style encoder q(s | x) (`StyleEncoder`),
and the sampler's start E[z_0 | s, pose] (`MeanLatent`).

    hint  = HintEncoder(cond_map)                      # (B, 33, H, W) -> (B, hint_channels, H/f, W/f)
    x_in  = concat(z_t, hint)                           # the noisy latent and the pose, channel-wise
    emb   = TimestepEmbedding(t) + A(s)                  # A = `style_affine`, one nn.Linear(style_dim, time_embed_dim)
    out   = UNet(x_in, emb)                              # v (or eps) prediction, (B, latent_channels, H/f, W/f)

The style code enters only through `A` (passed as `class_labels` to an identity class embedding, so it
is added to the time embedding, which every resnet reads as a GroupNorm scale and shift: AdaGN as in
Diffusion Autoencoders, Preechakul et al. 2022). GANSpace and SeFa read `style_affine.weight`.

The style encoder (training, and a look taken from a picture) is a small CNN from the image to the mean and
log-variance of s, trained jointly with the UNet with a KL term to N(0, I) (a VAE on the global code, as the semantic
encoder of Diffusion Autoencoders but stochastic), so that at inference `s ~ N(0, I)` gives samples. The pose is
given to the UNet separately, so s is pushed to carry what the pose does not: appearance.

`MeanLatent` (`training.train_mean_latent`):

    mu = MeanLatent.from_pretrained("weights/mean_latent")(cond_map, s)   # (B, C, h, w) scaled latent, blurry
    z = (z_T + sqrt(alpha_bar_T) * mu) * init_noise_sigma   # `models.samplers.sample_loop(z_mean=mu)`

Why: with Stable Diffusion's scaled-linear schedule sqrt(alpha_bar_T) = 0.068, so enough of z_0's low frequencies
survive in z_T for the UNet to read a character's colours off it (Lin et al. 2024, Sec. 3.1). Sampling from pure noise
then hands it eps's own low frequencies as if they were the image's, and the colours came from the seed rather than
s. Without a retrain at zero terminal SNR, the first moment of q(z_T | s, pose) = N(sqrt(alpha_bar_T) E[z_0 | s,
pose], (1 - alpha_bar_T) I) is where the sampler should start; this network estimates E[z_0 | s, pose] by least
squares on the UNet's own training pairs. Network: the condition map average-pooled to `cell`-pixel cells, a 3x3
convolution, residual blocks of dilated 3x3 convolutions (dilations 1, 2, 4, 1) whose GroupNorm s scales and shifts
(FiLM, Perez et al. 2018), a 1x1 convolution to the latent's channels, and a bilinear upsampling to the latent grid.
(A zero-terminal-SNR UNet needs none: its start is pure noise.)
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
        attention_head_dim: int = 32,  # channels per attention head
        norm_num_groups: int = 32,
        prediction_type: str = "v_prediction",  # what the network predicts ("v_prediction" or "epsilon")
        # the timesteps [lo, hi) it was trained on: all (None), or a low-noise expert's (`training.train_ldm --timesteps`)
        timesteps: tuple[int, int] | None = None,
        attention_levels: int = 1,  # levels with self-attention, counted from the lowest resolution up
    ):
        super().__init__()
        n = len(block_out_channels)
        if not 1 <= attention_levels <= n:
            raise InputError(f"attention_levels must be between 1 and {n} (the UNet's levels), not {attention_levels}.")
        k = attention_levels
        self.hint_encoder = HintEncoder(cond_channels, tuple(hint_widths), hint_channels)
        self.unet = UNet2DModel(
            sample_size=sample_size,
            in_channels=latent_channels + hint_channels,
            out_channels=latent_channels,
            down_block_types=("DownBlock2D",) * (n - k) + ("AttnDownBlock2D",) * k,
            up_block_types=("AttnUpBlock2D",) * k + ("UpBlock2D",) * (n - k),
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            attention_head_dim=attention_head_dim,
            norm_num_groups=norm_num_groups,
            resnet_time_scale_shift="scale_shift",  # AdaGN: the embedding (time + style) scales and shifts
            class_embed_type="identity",
        )
        time_embed_dim = block_out_channels[0] * 4
        self.style_affine = nn.Linear(style_dim, time_embed_dim)  # the affine A of the style code

    def covers(self, timestep: torch.Tensor | float) -> bool:
        """Whether every t in `timestep` lies in the range this UNet was trained on."""
        if self.config.timesteps is None:
            return True
        lo, hi = self.config.timesteps
        t = torch.as_tensor(timestep)
        return bool(lo <= int(t.min()) and int(t.max()) < hi)

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


# -- the style encoder q(s | x) -------------------------------------------------------------------
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


# -- the sampler's start E[z_0 | s, pose] ---------------------------------------------------------
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
