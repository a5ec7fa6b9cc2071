"""A colour search that starts latent refinement near the colour CLIP asks for.

    gamut = decoder_gamut(vae)                                   # colours the decoder can draw
    z = colour_search(vae, clip, z_0, image, mask, classes, gamut, top=4)

Gradient steps on a region's colour get stuck: from blue hair, CLIP's zero-shot loss for "pink hair" has its
nearest minimum at purple, and the decoder cannot draw every colour an image edit could ask for. So before the
gradient steps, a cheap zeroth-order search (as CLIP reranking picks among candidates):

1. *Candidates in pixels.* The region of the decoded image is shifted to each colour of the decoder's gamut
   (`decoder_gamut`: flat latents decoded once per autoencoder, one latent per colour bin), keeping its shading:
   `x + mask * (c - mean_mask(x))`. CLIP scores every candidate as a zero-shot classifier of the prompt against its
   other colours; no decoder runs for this, so ~100 colours cost one batch of CLIP's image tower.
2. *Projection.* The `top` best are encoded (the encoder's mean) and put back into z_0 inside the region's latent
   mask; these are decoded and scored again with z_0's own image, over a few augmented views each (one pair more
   of the 24 eval pairs than one whole-image view), and the best is the start of the gradient steps.

The autoencoder trained on renders does not round-trip every colour (a flat pure green comes back navy), which is why
the candidates come from the decoder's own gamut and why the projected candidates are scored again.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F

from models.autoencoder import decode as ae_decode
from models.autoencoder import encode as ae_encode

GAMUT_LEVELS = 6  # latent values per channel of the gamut's grid: 6^4 = 1,296 flat patches
GAMUT_RANGE = (-4.0, 4.0)  # in scaled latent units (about unit variance), per channel
GAMUT_BINS = 8  # colours closer than one bin of 256/8 in R, G and B count as one
PATCH = 4  # side of a flat latent patch; its centre pixels are free of the decoder's border padding


@functools.lru_cache(maxsize=2)
def decoder_gamut(vae: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """`(latents (G, C), colours (G, 3) in [-1, 1])`: the colour the decoder draws for a flat latent, over a grid of
    latent values (GAMUT_LEVELS per channel within GAMUT_RANGE), one per colour bin; computed once per autoencoder."""
    channels = int(vae.config.latent_channels)
    levels = torch.linspace(*GAMUT_RANGE, GAMUT_LEVELS)
    grid = torch.cartesian_prod(*[levels] * channels).reshape(-1, channels)
    colours = []
    with torch.no_grad():
        for chunk in grid.split(256):
            flat = chunk[:, :, None, None].expand(-1, -1, PATCH, PATCH).to(vae.device, vae.dtype)
            image = ae_decode(vae, flat).float().clamp(-1, 1)
            side = image.shape[-1]
            centre = image[:, :, side // 2 - 2 : side // 2 + 2, side // 2 - 2 : side // 2 + 2]
            colours.append(centre.mean(dim=(2, 3)).cpu())
    colour = torch.cat(colours)
    bins = ((colour + 1) / 2 * GAMUT_BINS).floor().clamp(0, GAMUT_BINS - 1).long()
    key = (bins[:, 0] * GAMUT_BINS + bins[:, 1]) * GAMUT_BINS + bins[:, 2]
    first = torch.stack([torch.nonzero(key == k)[0, 0] for k in key.unique()])  # one latent per colour bin
    return grid[first], colour[first]


def zero_shot_prob(clip: Any, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Probability of class 0 under CLIP's zero-shot softmax for images `(N, 3, H, W)` in [-1, 1] against unit
    class embeddings `(K, D)`."""
    embeds = clip.encode_image(images).float()
    return (clip.logit_scale * embeds @ classes.T.float()).softmax(dim=-1)[:, 0]


def shift_colour(image: torch.Tensor, mask: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """`(G, 3, H, W)`: the image `(1, 3, H, W)` with the masked part's mean colour moved to each of `colours` `(G, 3)`,
    its shading kept; clamped to [-1, 1]."""
    mean = (image * mask).sum(dim=(2, 3)) / mask.sum().clamp_min(1e-6)
    return (image + mask * (colours[:, :, None, None] - mean[:, :, None, None])).clamp(-1, 1)


@torch.no_grad()
def colour_search(
    vae: Any,
    clip: Any,
    z: torch.Tensor,
    image: torch.Tensor,
    mask: torch.Tensor,
    classes: torch.Tensor,
    gamut: tuple[torch.Tensor, torch.Tensor],
    top: int = 4,
    views: int = 4,
) -> torch.Tensor:
    """The latent `z` `(1, C, h, w)` with its masked region recoloured to the gamut colour that CLIP, over `classes`
    (a colour prompt, then its other colours), scores best once decoded (module docstring); `image` is z decoded in
    [-1, 1] and `mask` `(1, 1, H, W)` the region in its pixels. The decoded candidates are scored over `views`
    augmented views each (`models.refine.make_cutouts`, seeded), as the gradient steps see them."""
    from models.refine import make_cutouts

    _, colours = gamut
    candidates = shift_colour(image, mask, colours.to(image.device, image.dtype))
    best = zero_shot_prob(clip, candidates, classes).topk(min(top, len(colours))).indices
    latent_mask = F.interpolate(mask, size=z.shape[-2:], mode="area").to(z.dtype)
    encoded = ae_encode(vae, candidates[best].to(vae.dtype)).float()
    projected = z + latent_mask * (encoded - z)
    decoded = ae_decode(vae, projected.to(vae.dtype)).float().clamp(-1, 1)
    # the start competes too: when no projected colour scores better, the gradient steps start from z itself
    generator = torch.Generator("cpu").manual_seed(0)
    shown = torch.cat([image, decoded])
    cutouts = torch.cat([make_cutouts(x[None], views, int(clip.image_size), generator) for x in shown])
    scores = zero_shot_prob(clip, cutouts, classes).view(len(shown), views).mean(dim=1)
    best_index = int(scores.argmax())
    return z if best_index == 0 else projected[best_index - 1][None]


__all__ = ["colour_search", "decoder_gamut", "shift_colour", "zero_shot_prob"]
