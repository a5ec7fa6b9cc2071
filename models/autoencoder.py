"""The image autoencoder: diffusers' `AutoencoderKL` (f8: 128 px <-> 16 x 16 x 8 latent), no GAN.

The latent the UNet sees is `(mean(x) - shift_factor) * scaling_factor`, both measured on the data
after training (`measure_latent_stats`) and stored in the diffusers config, so a saved folder is
self-describing: `AutoencoderKL.from_pretrained(folder)` then `encode`/`decode` below.

Training loss (`reconstruction_loss`), LPIPS-free because no pretrained network may be downloaded:
    L = |x - x'|_1 + w_ms * sum_k |P_k x - P_k x'|_1 + w_grad * |grad x - grad x'|_1 + w_kl * KL(q(z|x) || N(0, I))
with `P_k` 2x/4x average pooling and `grad` the horizontal/vertical finite differences.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL


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


def downsample_factor(vae: AutoencoderKL) -> int:
    """Pixels per latent pixel (8 for four levels)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def _shift(vae: AutoencoderKL) -> float:
    return float(vae.config.shift_factor or 0.0)


def encode(
    vae: AutoencoderKL, images: torch.Tensor, generator: torch.Generator | None = None, sample: bool = False
) -> torch.Tensor:
    """Images in [-1, 1] `(B, 3, H, W)` -> scaled latents `(B, C, H/f, W/f)` (the posterior mean unless `sample`)."""
    dist = vae.encode(images.to(vae.dtype)).latent_dist
    z = dist.sample(generator) if sample else dist.mean
    return (z - _shift(vae)) * vae.config.scaling_factor


def decode(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents -> images in [-1, 1] (not clamped)."""
    z = latents.to(vae.dtype) / vae.config.scaling_factor + _shift(vae)
    return vae.decode(z).sample


def _grad_l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]
    return (dx(x) - dx(y)).abs().mean() + (dy(x) - dy(y)).abs().mean()


def reconstruction_loss(
    vae: AutoencoderKL,
    images: torch.Tensor,
    generator: torch.Generator | None = None,
    kl_weight: float = 1e-6,
    grad_weight: float = 0.5,
    multiscale_weight: float = 0.5,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The training loss (module docstring) of one batch and its parts for the log."""
    dist = vae.encode(images).latent_dist
    # Decode the posterior mean: with a tiny KL weight the sampled noise only drowns the colour
    # signal early on (measured: grey reconstructions after 800 steps); the LDM encodes means too.
    z = dist.mode()
    recon = vae.decode(z).sample
    l1 = (recon - images).abs().mean()
    ms = sum((F.avg_pool2d(recon, k) - F.avg_pool2d(images, k)).abs().mean() for k in (2, 4))
    grad = _grad_l1(recon, images)
    kl = dist.kl().mean() / z[0].numel()  # per latent element
    loss = l1 + multiscale_weight * ms + grad_weight * grad + kl_weight * kl
    parts = {"loss": loss, "l1": l1, "ms": ms, "grad": grad, "kl": kl}
    return loss, {k: float(v.detach()) for k, v in parts.items()}


@torch.no_grad()
def measure_latent_stats(vae: AutoencoderKL, batches, max_batches: int = 50) -> tuple[float, float]:
    """Mean and std of the unscaled posterior means over some batches: `shift_factor`, `1 / scaling_factor`."""
    total, total_sq, count = 0.0, 0.0, 0
    for i, images in enumerate(batches):
        if i >= max_batches:
            break
        z = vae.encode(images.to(vae.device, vae.dtype)).latent_dist.mean.double()
        total += z.sum().item()
        total_sq += (z * z).sum().item()
        count += z.numel()
    mean = total / count
    std = max((total_sq / count - mean * mean) ** 0.5, 1e-6)
    return mean, std


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two image batches in [-1, 1] (the range is 2)."""
    mse = ((a.clamp(-1, 1) - b.clamp(-1, 1)) ** 2).mean().item()
    return 10 * torch.log10(torch.tensor(4.0 / max(mse, 1e-12))).item()
