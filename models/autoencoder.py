"""The image autoencoders: `ShuffleAutoencoder` (f8, 256 px <-> 32 x 32 x 16) and diffusers' `AutoencoderKL`; and
`PoseDecoder`, which decodes another autoencoder's latents at twice its size with the pose's help.

`ShuffleAutoencoder` moves between pixels and features with pixel (un)shuffles (Shi et al. 2016, ESPCN) rather
than full-resolution convolutions: the renderer's flat fills and 1-px outlines need few channels at full size
and many at the latent's, and on 2 CPU cores it trains 2.5x faster per step and decodes 3x faster than an
`AutoencoderKL` of the same latent (docs/EXPERIMENTS.md). Its blocks have no normalisation (as TAESD's), so
training on crops and decoding whole images see the same statistics. It speaks `AutoencoderKL`'s interface
(`encode(x).latent_dist`, `decode(z).sample`, `config.scaling_factor`), so the functions below serve both, and
`load_autoencoder` picks the class from the saved config.

The latent the UNet sees is `(mean(x) - shift_factor) * scaling_factor`, both measured on the data
after training (`measure_latent_stats`) and stored in the diffusers config, so a saved folder is
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


def _upsample(width: int, out: int, blocks: int) -> list[nn.Module]:
    """`blocks` residual blocks at `width` channels, then a pixel shuffle to twice the side with `out` channels."""
    return [
        *[_Residual(width) for _ in range(blocks)],
        nn.SiLU(),
        nn.Conv2d(width, 4 * out, 3, padding=1),
        nn.PixelShuffle(2),
    ]


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
            *_upsample(w1, w0, blocks[1]),
            *_upsample(w0, head_width, blocks[0]),
            *_upsample(head_width, 3, 1),
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


class PoseDecoder(ModelMixin, ConfigMixin):
    """Another autoencoder's scaled latents -> images at `latent_factor` pixels a latent, told where the pose's
    keypoints and limbs are (`models.condition.condition_map` at twice the latent grid, all zeros when unknown).

    The shipped UNet's 4-channel latent (f4 at 128 px) has lost the eyes and the exact colours; what the renderer
    draws there follows from the latent and the pose (eyes sit at the eye keypoints, outlines along the limbs), so a
    decoder that also sees the pose can draw them at 256 px, as a super-resolution stage conditions on its input.
    It draws the residual over the source autoencoder's own decoding, enlarged (`base`, which it also sees in 4 x 4
    pixel cells): its last layer starts at zero, so it starts as that decoding and learns only what it lacks."""

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 4,  # channels of the latent it decodes (the source autoencoder's)
        cond_channels: int = 33,  # channels of the pose map (`models.condition.CONDITION_CHANNELS`)
        widths: tuple[int, int] = (96, 192),  # channels at 1/4 and 1/8 of the output side
        blocks: tuple[int, int] = (2, 3),  # residual blocks at 1/4 and 1/8
        head_width: int = 32,  # channels at 1/2 of the side, just before the last shuffle to pixels
        sample_size: int = 256,  # the output side it was trained for
        latent_factor: int = 8,  # output pixels per latent pixel
    ):
        super().__init__()
        w0, w1 = widths
        self.stem = nn.Conv2d(latent_channels + cond_channels, w1, 3, padding=1)
        self.body = nn.Sequential(*_upsample(w1, w0, blocks[1]))
        # at 1/4 of the side: the pose again, at its own resolution, and the base image's 4 x 4 cells
        self.merge = nn.Conv2d(w0 + cond_channels + 48, w0, 3, padding=1)
        self.head = nn.Sequential(*_upsample(w0, head_width, blocks[0]), *_upsample(head_width, 3, 1))
        nn.init.zeros_(self.head[-2].weight)
        nn.init.zeros_(self.head[-2].bias)

    def forward(self, latents: torch.Tensor, cond: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """Scaled latents `(B, C, h, w)`, pose maps `(B, 33, 2h, 2w)` and the source's decoding enlarged
        `(B, 3, 8h, 8w)` -> images in [-1, 1] (not clamped)."""
        x = self.body(self.stem(torch.cat([latents, F.avg_pool2d(cond, 2)], dim=1)))
        x = self.merge(torch.cat([x, cond, F.pixel_unshuffle(base, 4)], dim=1))
        return base + self.head(x)


def enlarged_decode(vae: Autoencoder, latents: torch.Tensor, factor: int) -> torch.Tensor:
    """The autoencoder's own decoding of scaled latents, enlarged (bicubic) to `factor` pixels a latent, in [-1, 1]:
    the base a `PoseDecoder` draws over."""
    image = decode(vae, latents).to(latents.dtype)
    scale = factor // downsample_factor(vae)
    return F.interpolate(image, scale_factor=scale, mode="bicubic", align_corners=False).clamp(-1, 1)


def pose_decode(decoder: PoseDecoder, vae: Autoencoder, latents: torch.Tensor, poses: Sequence | None) -> torch.Tensor:
    """Scaled latents -> images at the decoder's scale, over `vae`'s own decoding, with the framed poses' maps (None:
    an unknown pose)."""
    from models.condition import condition_map

    b, _, h, w = latents.shape
    param = next(decoder.parameters())
    latents = latents.to(param.device, param.dtype)
    cond = torch.zeros((b, decoder.config.cond_channels, 2 * h, 2 * w), dtype=param.dtype, device=param.device)
    for i, pose in enumerate(poses or []):
        if pose is not None:
            cond[i] = torch.from_numpy(condition_map(pose, 2 * h, 2 * w))
    base = enlarged_decode(vae, latents, decoder.config.latent_factor)
    return decoder(latents, cond, base.to(param.dtype))


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


def _shift(vae: Autoencoder) -> float:
    return float(vae.config.shift_factor or 0.0)


def encode(
    vae: Autoencoder, images: torch.Tensor, generator: torch.Generator | None = None, sample: bool = False
) -> torch.Tensor:
    """Images in [-1, 1] `(B, 3, H, W)` -> scaled latents `(B, C, H/f, W/f)` (the posterior mean unless `sample`)."""
    dist = vae.encode(images.to(vae.dtype)).latent_dist
    z = dist.sample(generator) if sample else dist.mean
    return (z - _shift(vae)) * vae.config.scaling_factor


def decode(vae: Autoencoder, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents -> images in [-1, 1] (not clamped)."""
    z = latents.to(vae.dtype) / vae.config.scaling_factor + _shift(vae)
    return vae.decode(z).sample


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
):
    """The training loss (module docstring) of one batch and its parts for the log (and the reconstructions)."""
    dist = vae.encode(images).latent_dist
    # Decode the posterior mean: with a tiny KL weight the sampled noise only drowns the colour
    # signal early on (measured: grey reconstructions after 800 steps); the LDM encodes means too.
    z = dist.mode()
    recon = vae.decode(z).sample
    loss, parts = image_loss(recon, images, grad_weight, multiscale_weight)
    kl = dist.kl().mean() / z[0].numel()  # per latent element
    loss = loss + kl_weight * kl
    parts.update(loss=float(loss.detach()), kl=float(kl.detach()))
    return (loss, parts, recon) if return_recon else (loss, parts)


def image_loss(
    recon: torch.Tensor,
    images: torch.Tensor,
    grad_weight: float = 0.5,
    multiscale_weight: float = 0.5,
    detail_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """L1 + the multiscale and gradient L1 terms (module docstring) of decoded images, and the parts for the log;
    `detail_weight` > 0 weights the L1 by 1 + that x the target's |Laplacian| over its batch mean, so outlines and eyes
    (a few percent of the pixels, most of what a lossy latent loses) count as much as the flat fills around them."""
    l1_map = (recon - images).abs()
    if detail_weight > 0:
        kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=images.dtype)
        kernel = kernel.to(images.device).expand(images.shape[1], 1, 3, 3)
        lap = F.conv2d(images, kernel, padding=1, groups=images.shape[1]).abs().mean(dim=1, keepdim=True)
        l1_map = l1_map * (1 + detail_weight * lap / lap.mean().clamp(min=1e-6))
    l1 = l1_map.mean()
    ms = sum((F.avg_pool2d(recon, k) - F.avg_pool2d(images, k)).abs().mean() for k in (2, 4))
    grad = _grad_l1(recon, images)
    loss = l1 + multiscale_weight * ms + grad_weight * grad
    return loss, {k: float(v.detach()) for k, v in {"loss": loss, "l1": l1, "ms": ms, "grad": grad}.items()}


@torch.no_grad()
def measure_latent_stats(vae: Autoencoder, batches, max_batches: int = 50) -> tuple[float, float]:
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


def psnr(a: torch.Tensor, b: torch.Tensor, masks: torch.Tensor | None = None) -> float:
    """PSNR in dB of two image batches in [-1, 1] (the range is 2), over the pixels of `masks` `(B, 1, H, W)` if given
    (a figure's pixels: the backdrop's flat patterns inflate the whole-image figure)."""
    err = ((a.clamp(-1, 1) - b.clamp(-1, 1)).double() ** 2).mean(dim=1, keepdim=True)
    mse = float(err.mean()) if masks is None else float((err * masks).sum() / masks.sum().clamp(min=1))
    return 10 * float(np.log10(4.0 / max(mse, 1e-12)))
