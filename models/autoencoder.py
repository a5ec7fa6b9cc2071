"""The image autoencoders: `ShuffleAutoencoder` (f8, 256 px <-> 32 x 32 x 16) and diffusers' `AutoencoderKL`.

`ShuffleAutoencoder` moves between pixels and features with pixel (un)shuffles (Shi et al. 2016, ESPCN) rather
than full-resolution convolutions: the renderer's flat fills and 1-px outlines need few channels at full size
and many at the latent's, and on 2 CPU cores it trains 2.5x faster per step and decodes 3x faster than an
`AutoencoderKL` of the same latent (docs/EXPERIMENTS.md). Its blocks have no normalisation (as TAESD's), so
training on crops and decoding whole images see the same statistics. It speaks `AutoencoderKL`'s interface
(`encode(x).latent_dist`, `decode(z).sample`, `config.scaling_factor`), so the functions below serve both, and
`load_autoencoder` picks the class from the saved config.

The latent the UNet sees is `(mean(x) - shift_factor) * scaling_factor` (per channel when both are lists), both
measured on the data after training (`measure_latent_stats`) and stored in the diffusers config, so a saved folder is
self-describing: `load_autoencoder(folder)` then `encode`/`decode` below.

Training loss (`reconstruction_loss`), LPIPS-free because no pretrained network may be downloaded:
    L = |x - x'|_1 + w_ms * sum_k |P_k x - P_k x'|_1 + w_grad * |grad x - grad x'|_1 + w_kl * KL(q(z|x) || N(0, I))
with `P_k` 2x/4x average pooling and `grad` the horizontal/vertical finite differences.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from PIL import Image
from torch import nn


class _Residual(nn.Module):
    """x + conv(silu(conv(silu(x)))): a normalisation-free residual block; the last conv starts at zero."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output."""
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class ShuffleAutoencoder(ModelMixin, ConfigMixin):
    """f8 KL autoencoder: a pixel unshuffle by 4, then a stride-2 conv; decoded through pixel shuffles of 2, with
    `head_width` channels at half the image side."""

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 16,  # channels of the latent the UNet denoises (SD3 and FLUX: 16)
        widths: tuple[int, int] = (96, 192),  # channels at 1/4 and 1/8 of the image side
        blocks: tuple[int, int] = (2, 3),  # residual blocks at 1/4 and 1/8
        head_width: int = 32,  # channels at 1/2 of the side, just before the last shuffle to pixels
        sample_size: int = 256,  # the image side it was trained for (any multiple of 8 works)
        scaling_factor: float = 1.0,  # 1 / std of the latents, measured after training
        shift_factor: float = 0.0,  # mean of the latents, measured after training
    ):
        super().__init__()
        w0, w1 = widths
        self.encoder = nn.Sequential(
            nn.PixelUnshuffle(4),
            nn.Conv2d(48, w0, 3, padding=1),
            *[_Residual(w0) for _ in range(blocks[0])],
            nn.Conv2d(w0, w1, 3, stride=2, padding=1),
            *[_Residual(w1) for _ in range(blocks[1])],
            nn.SiLU(),
            nn.Conv2d(w1, 2 * latent_channels, 3, padding=1),  # mean and log-variance
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_channels, w1, 3, padding=1),
            *[_Residual(w1) for _ in range(blocks[1])],
            nn.SiLU(),
            nn.Conv2d(w1, 4 * w0, 3, padding=1),
            nn.PixelShuffle(2),
            *[_Residual(w0) for _ in range(blocks[0])],
            nn.SiLU(),
            nn.Conv2d(w0, 4 * head_width, 3, padding=1),
            nn.PixelShuffle(2),
            _Residual(head_width),
            nn.SiLU(),
            nn.Conv2d(head_width, 12, 3, padding=1),
            nn.PixelShuffle(2),
        )

    def encode(self, x: torch.Tensor) -> AutoencoderKLOutput:
        """Images in [-1, 1] -> the posterior q(z | x) (unscaled)."""
        return AutoencoderKLOutput(latent_dist=DiagonalGaussianDistribution(self.encoder(x)))

    def decode(self, z: torch.Tensor) -> DecoderOutput:
        """Unscaled latents -> images in [-1, 1] (not clamped)."""
        return DecoderOutput(sample=self.decoder(z))

    def forward(self, x: torch.Tensor) -> DecoderOutput:
        """Round trip through the posterior mean."""
        return self.decode(self.encode(x).latent_dist.mode())


Autoencoder = ShuffleAutoencoder | AutoencoderKL
_CLASSES = {"ShuffleAutoencoder": ShuffleAutoencoder, "AutoencoderKL": AutoencoderKL}


def autoencoder_index_entry(vae: Autoencoder) -> list[str]:
    """The `model_index.json` entry (library, class) of an autoencoder."""
    return (
        ["diffusers", "AutoencoderKL"] if isinstance(vae, AutoencoderKL) else ["models.autoencoder", type(vae).__name__]
    )


def load_autoencoder(folder: str | os.PathLike) -> Autoencoder:
    """The autoencoder saved in `folder`, of the class its `config.json` names."""
    name = json.loads((Path(folder) / "config.json").read_text()).get("_class_name", "AutoencoderKL")
    if name not in _CLASSES:
        raise ValueError(f"{folder} holds a {name}, which is not an autoencoder this project reads.")
    return _CLASSES[name].from_pretrained(folder)


def build_autoencoder(
    block_out_channels: tuple[int, ...] = (32, 64, 128, 128),
    layers_per_block: int = 1,
    latent_channels: int = 8,
    norm_num_groups: int = 32,
    mid_attention: bool = False,
    sample_size: int = 128,
) -> AutoencoderKL:
    """A fresh `AutoencoderKL` with `len(block_out_channels) - 1` downsamples (4 levels = f8)."""
    n = len(block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(block_out_channels),
        layers_per_block=layers_per_block,
        latent_channels=latent_channels,
        norm_num_groups=norm_num_groups,
        sample_size=sample_size,
        mid_block_add_attention=mid_attention,
        scaling_factor=1.0,
        shift_factor=0.0,
    )


def downsample_factor(vae: Autoencoder) -> int:
    """Pixels per latent pixel (8 for four levels)."""
    if isinstance(vae, ShuffleAutoencoder):
        return 8
    return 2 ** (len(vae.config.block_out_channels) - 1)


def latent_factors(vae: Autoencoder, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`shift_factor` and `scaling_factor` as tensors that broadcast over latents `(B, C, h, w)` like `like`: one
    number for every channel, or a list with one per channel (as Wan's VAE keeps `latents_mean` / `latents_std`)."""

    def tensor(value: Any, default: float) -> torch.Tensor:
        t = torch.as_tensor(default if value is None else value, dtype=like.dtype, device=like.device)
        return t.view(-1, 1, 1) if t.ndim else t

    return tensor(vae.config.shift_factor, 0.0), tensor(vae.config.scaling_factor, 1.0)


def encode(
    vae: Autoencoder, images: torch.Tensor, generator: torch.Generator | None = None, sample: bool = False
) -> torch.Tensor:
    """Images in [-1, 1] `(B, 3, H, W)` -> scaled latents `(B, C, H/f, W/f)` (the posterior mean unless `sample`)."""
    dist = vae.encode(images.to(vae.dtype)).latent_dist
    z = dist.sample(generator) if sample else dist.mean
    shift, scale = latent_factors(vae, z)
    return (z - shift) * scale


def decode(vae: Autoencoder, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents -> images in [-1, 1] (not clamped)."""
    z = latents.to(vae.dtype)
    shift, scale = latent_factors(vae, z)
    return vae.decode(z / scale + shift).sample


@torch.no_grad()
def round_trip(vae: Autoencoder, images: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """Images in [-1, 1] `(B, 3, H, W)` encoded (posterior mean) and decoded by `vae` on its device, `batch` at a
    time -> the decodings in [-1, 1], float on the CPU."""
    parts = [decode(vae, encode(vae, images[i : i + batch].to(vae.device))) for i in range(0, len(images), batch)]
    return torch.cat([p.float().clamp(-1, 1).cpu() for p in parts])


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """Images in [-1, 1] `(B, 3, H, W)` -> PIL RGB images."""
    arr = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


def from_pil(images: Sequence[Image.Image]) -> torch.Tensor:
    """PIL images of one size -> `(B, 3, H, W)` float in [-1, 1] (`to_pil`'s inverse)."""
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1.0


def _grad_l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]
    return (dx(x) - dx(y)).abs().mean() + (dy(x) - dy(y)).abs().mean()


def reconstruction_loss(
    vae: Autoencoder,
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    kl_weight: float = 1e-6,
    grad_weight: float = 0.5,
    multiscale_weight: float = 0.5,
    return_recon: bool = False,
    latents: torch.Tensor | None = None,
):
    """The training loss (module docstring) of one batch and its parts for the log (and the reconstructions);
    given scaled `latents`, the decoder's loss on them against `images` (no encoder, no KL)."""
    if latents is None:
        dist = vae.encode(images).latent_dist
        # Decode the posterior mean: with a tiny KL weight the sampled noise only drowns the colour
        # signal early on (measured: grey reconstructions after 800 steps); the LDM encodes means too.
        z = dist.mode()
        recon = vae.decode(z).sample
        kl = dist.kl().mean() / z[0].numel()  # per latent element
    else:
        recon, kl = decode(vae, latents), torch.zeros((), device=images.device)
    l1 = (recon - images).abs().mean()
    ms = sum((F.avg_pool2d(recon, k) - F.avg_pool2d(images, k)).abs().mean() for k in (2, 4))
    grad = _grad_l1(recon, images)
    loss = l1 + multiscale_weight * ms + grad_weight * grad + kl_weight * kl
    parts = {k: float(v.detach()) for k, v in {"loss": loss, "l1": l1, "ms": ms, "grad": grad, "kl": kl}.items()}
    return (loss, parts, recon) if return_recon else (loss, parts)


@torch.no_grad()
def measure_latent_stats(
    vae: Autoencoder, batches, max_batches: int = 50, per_channel: bool = False
) -> tuple[Any, Any]:
    """Mean and std of the unscaled posterior means over some batches: `shift_factor`, `1 / scaling_factor`; with
    `per_channel`, lists of one per channel (so every channel reaches the UNet at unit variance)."""
    total, total_sq, count = 0.0, 0.0, 0
    for i, images in enumerate(batches):
        if i >= max_batches:
            break
        z = vae.encode(images.to(vae.device, vae.dtype)).latent_dist.mean.double()
        dims = (0, 2, 3) if per_channel else (0, 1, 2, 3)
        total, total_sq = total + z.sum(dims), total_sq + (z * z).sum(dims)
        count += z.numel() // (z.shape[1] if per_channel else 1)
    mean = total / count
    std = (total_sq / count - mean * mean).clamp(min=1e-12).sqrt().clamp(min=1e-6)
    return (mean.tolist(), std.tolist()) if per_channel else (float(mean), float(std))


def psnr(a: torch.Tensor, b: torch.Tensor, masks: torch.Tensor | None = None) -> float:
    """PSNR in dB of two image batches in [-1, 1] (the range is 2), over the pixels of `masks` `(B, 1, H, W)` if given
    (a figure's pixels: the backdrop's flat patterns inflate the whole-image figure)."""
    err = ((a.clamp(-1, 1) - b.clamp(-1, 1)).double() ** 2).mean(dim=1, keepdim=True)
    mse = float(err.mean()) if masks is None else float((err * masks).sum() / masks.sum().clamp(min=1))
    return 10 * float(np.log10(4.0 / max(mse, 1e-12)))
