"""Recolouring a named part: the part's region in the picture, and a colour search that starts latent
refinement (`models.refine`, latent mode) near the colour CLIP asks for.

    keyed = region_pixel_masks(state, terms, image, parser)      # {"hair": (H, W) mask, ...} the prompt names
    gamut = decoder_gamut(vae)                                   # colours the decoder can draw
    z = colour_search(vae, clip, z_0, image, mask, classes, gamut, top=4)

*Regions.* A prompt that names a part ("pink hair", "red dress", "teal background") moves only that part: the part
parser (`models.edit_regions`) or the pose and the image's colours (`models.edit_regions`) give its pixels.

*Colour search.*
Gradient steps on a region's colour get stuck: from blue hair, CLIP's zero-shot loss for "pink hair" has its
nearest minimum at purple, and the decoder cannot draw every colour an image edit could ask for. So before the
gradient steps, a cheap zeroth-order search (as CLIP reranking picks among candidates):

1. *Candidates in pixels.* The region of the decoded image is shifted to each candidate colour, keeping its shading:
   the colours the training images show in that part where the pipeline has them (`models.edit_regions`), else
   the decoder's gamut (`decoder_gamut`: flat latents decoded once per autoencoder, one latent per colour bin):
   `x + mask * (c - mean_mask(x))`. CLIP scores every candidate as a zero-shot classifier of the prompt against its
   other colours; no decoder runs for this, so ~100 colours cost one batch of CLIP's image tower.
2. *Projection* (`project`). The `top` best are encoded (the encoder's mean) and put back into z_0 inside the
   region's latent cells (every cell the region touches, and one more round it); a few Adam steps on the decoder's
   pixel error then pull those cells to the candidate's pixels, since the encoder alone blurs a small region's
   colour into its surroundings (brown hair came back black; a teal backdrop came back dark). The projected
   latents are decoded and scored again with z_0's own image, over a few augmented views each (one pair more of
   the 24 eval pairs than one whole-image view), and the best is the start of the gradient steps.

The autoencoder trained on renders does not round-trip every colour (a flat pure green comes back navy), which is why
the candidates come from the decoder's own gamut and why the projected candidates are scored again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from models.autoencoder import decode as ae_decode
from models.autoencoder import encode as ae_encode
from models.backend import GenerationState
from models.clip_guidance import class_prob, view_embeddings
from models.edit_regions import REGIONS, colour_keyed_masks, part_masks_from_probs, prompt_regions
from models.pipeline import frame_pose  # the one framing of a pose in the output square
from models.refine_settings import Term

GAMUT_LEVELS = 6  # latent values per channel of the gamut's grid: 6^4 = 1,296 flat patches
GAMUT_RANGE = (-4.0, 4.0)  # in scaled latent units (about unit variance), per channel
GAMUT_BINS = 8  # colours closer than one bin of 256/8 in R, G and B count as one
PATCH = 4  # side of a flat latent patch; its centre pixels are free of the decoder's border padding
PROJECT_STEPS = 4  # Adam steps of the decoder's pixel error in `project`
PROJECT_LR = 0.1  # their step size, in scaled latent units (about unit variance)
# A parsed part covering less of the image than this (a hidden hair line) is keyed from the pose instead.
MIN_PARSED = 0.002
# (text, weight, (K, D) unit embeddings: a positive colour term's text, then the same words in its other colours)
Contrast = tuple[str, float, torch.Tensor]


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
    """`class_prob` of images `(N, 3, H, W)` in [-1, 1]: `(N,)`."""
    return class_prob(clip, clip.encode_image(images), classes)


def shift_colour(image: torch.Tensor, mask: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """`(G, 3, H, W)`: the image `(1, 3, H, W)` with the masked part's mean colour moved to each of `colours` `(G, 3)`,
    its shading kept; clamped to [-1, 1]."""
    mean = (image * mask).sum(dim=(2, 3)) / mask.sum().clamp_min(1e-6)
    return (image + mask * (colours[:, :, None, None] - mean[:, :, None, None])).clamp(-1, 1)


def view_prob(clip: Any, images: torch.Tensor, classes: torch.Tensor, views: int = 4) -> torch.Tensor:
    """`(N,)`: `class_prob` of images `(N, 3, H, W)` averaged over their `view_embeddings`."""
    return class_prob(clip, view_embeddings(clip, images, views), classes).mean(dim=1)


def region_cells(mask: torch.Tensor, side: int) -> torch.Tensor:
    """`(1, 1, side, side)` binary: the latent cells a pixel mask `(1, 1, H, W)` touches, grown by one cell (the
    decoder draws a cell's colour over its neighbours' pixels too)."""
    touched = (F.interpolate(mask.float(), size=(side, side), mode="area") > 0.02).float()
    return F.max_pool2d(touched, 3, stride=1, padding=1)


def project(
    vae: Any, z: torch.Tensor, targets: torch.Tensor, cells: torch.Tensor, steps: int = PROJECT_STEPS
) -> torch.Tensor:
    """`(N, C, h, w)`: z `(1, C, h, w)` with the `cells` `(1, 1, h, w)` set to latents that decode to `targets`
    `(N, 3, H, W)` (images that equal z's own outside the region): the encoder's mean, then `steps` Adam steps of the
    mean squared pixel error through the decoder; the cells outside stay z's."""
    encoded = ae_encode(vae, targets.to(vae.dtype)).float()
    inside = (z + cells * (encoded - z)).clone().requires_grad_(True)
    optimiser = torch.optim.Adam([inside], lr=PROJECT_LR)
    with torch.enable_grad():
        for _ in range(steps):
            decoded = ae_decode(vae, (z + cells * (inside - z)).to(vae.dtype)).float()
            loss = (decoded - targets).pow(2).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return (z + cells * (inside - z)).detach()


@torch.no_grad()
def colour_search(
    vae: Any,
    clip: Any,
    z: torch.Tensor,
    image: torch.Tensor,
    mask: torch.Tensor,
    classes: torch.Tensor,
    colours: torch.Tensor,
    top: int = 4,
    views: int = 4,
    project_steps: int = PROJECT_STEPS,
) -> torch.Tensor:
    """The latent `z` `(1, C, h, w)` with its masked region recoloured to the candidate colour (`colours` `(G, 3)` in
    [-1, 1]: `decoder_gamut`'s, or a `models.edit_regions` palette's) that CLIP, over `classes`
    (a colour prompt, then its other colours), scores best once decoded (module docstring); `image` is z decoded in
    [-1, 1] and `mask` `(1, 1, H, W)` the region in its pixels. The decoded candidates are scored over `views`
    augmented views each (`make_cutouts`, seeded), as the gradient steps see them; `project_steps` are
    the decoder steps of the projection (`project`)."""
    candidates = shift_colour(image, mask, colours.to(image.device, image.dtype))
    best = zero_shot_prob(clip, candidates, classes).topk(min(top, len(colours))).indices
    projected = project(vae, z, candidates[best], region_cells(mask, int(z.shape[-1])), project_steps)
    decoded = ae_decode(vae, projected.to(vae.dtype)).float().clamp(-1, 1)
    # the start competes too: when no projected colour scores better, the gradient steps start from z itself
    best_index = int(view_prob(clip, torch.cat([image, decoded]), classes, views).argmax())
    return z if best_index == 0 else projected[best_index - 1][None]


# -- the regions a prompt names --------------------------------------------------------------------
def region_pixel_masks(
    state: GenerationState, terms: Sequence[Term], image: Image.Image, parser: Any = None
) -> dict[str, np.ndarray] | None:
    """`{region: (H, W) mask}` in the state's `image` pixels for each region the positive terms name: the `parser`'s
    part probabilities (`models.edit_regions`) for the hair, body and background when one is given and finds the
    part, else the pose's regions without the backdrop's colours (`models.edit_regions.colour_keyed_masks`); None
    when a term names no region, or names one the pose cannot place (a face seen from behind): the change may then
    go anywhere."""
    regions: set[str] = set()
    for text, weight in terms:
        if weight > 0:
            named = prompt_regions(text)
            if named is None:
                return None
            regions |= named
    if not regions:
        return None
    pixels = np.asarray(image.convert("RGB"))
    size = pixels.shape[0]
    keyed: dict[str, np.ndarray] = {}
    if parser is not None:
        probs = parser.parse([image])[0]
        for region, mask in part_masks_from_probs(probs, regions).items():
            if mask.shape[0] != size:
                mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_LINEAR)
            if mask.mean() >= MIN_PARSED:  # a part the parser does not see falls back to the colour key
                keyed[region] = mask
    if regions - set(keyed):
        pose = frame_pose(state.pose, size)
        keyed |= colour_keyed_masks(pixels, pose, regions - set(keyed), soften=size / 64)
    if any(m.min() >= 1.0 for m in keyed.values()):
        return None
    return keyed


def latent_masks(keyed: dict[str, np.ndarray], latent_size: int) -> torch.Tensor:
    """`(R, 1, h, w)`: pixel masks (`region_pixel_masks`) averaged onto the latent grid, in `REGIONS` order."""
    stacked = torch.from_numpy(np.stack([keyed[r] for r in REGIONS if r in keyed]))[:, None]
    return F.interpolate(stacked, size=(latent_size, latent_size), mode="area")


# -- the search over a prompt's colour terms ----------------------------------------------------------
def searched_start(
    pipeline: Any,
    clip: Any,
    contrasts: Sequence[Contrast],
    z: torch.Tensor,
    image: torch.Tensor,
    keyed: dict[str, np.ndarray],
    top: int,
) -> torch.Tensor:
    """z_0 with each colour term's regions recoloured by `colour_search`, one term after another; the candidates are
    the pipeline's palette for the term's part (`models.edit_regions`), else the decoder's gamut."""
    palette = getattr(pipeline, "palette", {})
    shown = z  # the latent `image` shows
    for text, _weight, classes in contrasts:
        regions = prompt_regions(text) or set()
        if not regions <= set(keyed):
            continue
        mask = torch.from_numpy(np.max([keyed[r] for r in regions], axis=0))[None, None].to(image.device)
        if z is not shown:
            with torch.no_grad():
                image = ae_decode(pipeline.vae, z.to(pipeline.dtype)).float().clamp(-1, 1)
            shown = z
        if len(regions) == 1 and next(iter(regions)) in palette:  # the training data's colours of that part
            colours = torch.as_tensor(palette[next(iter(regions))], dtype=torch.float32)
        else:  # built once per autoencoder, and only when a part has no palette
            colours = decoder_gamut(pipeline.vae)[1]
        z = colour_search(pipeline.vae, clip, z, image, mask, classes, colours, top)
    return z


def search_score(clip: Any, contrasts: Sequence[Contrast]) -> Callable[[torch.Tensor], float]:
    """Minus the mean over the colour terms of CLIP's zero-shot probability (`view_prob`): how the colour search
    ranks its candidates, and so how the gradient steps' iterates and their start are ranked."""

    def score(image: torch.Tensor) -> float:
        embeds = view_embeddings(clip, image)[0]  # one image-tower pass for every colour term
        return -float(np.mean([float(class_prob(clip, embeds, classes).mean()) for _, _, classes in contrasts]))

    return score


__all__ = [
    "colour_search",
    "decoder_gamut",
    "latent_masks",
    "project",
    "region_cells",
    "region_pixel_masks",
    "search_score",
    "searched_start",
    "shift_colour",
    "view_prob",
    "zero_shot_prob",
]
