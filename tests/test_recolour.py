"""The colour search that starts latent refinement: the decoder's gamut, recoloured candidates, the projection."""

from __future__ import annotations

import pytest
import torch

from models.autoencoder import decode as ae_decode
from models.recolour import (
    GAMUT_BINS,
    colour_search,
    decoder_gamut,
    project,
    region_cells,
    shift_colour,
    view_prob,
    zero_shot_prob,
)
from tests.test_pipeline import tiny_pipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py
RGB = torch.eye(3)  # the classes of the stand-in CLIP: red, green, blue


class MeanColourClip:
    """A stand-in CLIP whose image embedding is the unit mean colour: its zero-shot classes are pure colours."""

    logit_scale = 20.0
    image_size = 16

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Unit mean colour of each image in [-1, 1] (shifted to [0, 1])."""
        return torch.nn.functional.normalize((images + 1).mean(dim=(2, 3)) / 2 + 1e-6, dim=-1)


def latent_and_image(vae, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random 8 x 8 latent and its decoded image in [-1, 1]."""
    torch.manual_seed(seed)
    z = torch.randn(1, vae.config.latent_channels, 8, 8)
    with torch.no_grad():
        return z, ae_decode(vae, z).float().clamp(-1, 1)


@pytest.fixture(scope="module")
def vae():
    return tiny_pipeline().vae


def test_gamut_has_one_latent_per_colour_bin_and_is_cached(vae):
    latents, colours = decoder_gamut(vae)
    assert latents.shape == (len(colours), vae.config.latent_channels) and colours.shape[1] == 3
    assert colours.min() >= -1 and colours.max() <= 1
    bins = ((colours + 1) / 2 * GAMUT_BINS).floor().clamp(0, GAMUT_BINS - 1)
    assert len(torch.unique(bins, dim=0)) == len(colours)  # one per bin
    assert decoder_gamut(vae)[0] is latents  # once per autoencoder


def test_shift_colour_moves_the_masked_mean_and_nothing_else():
    torch.manual_seed(0)
    image = torch.rand(1, 3, 16, 16) * 0.4 - 0.2
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    colours = torch.tensor([[0.5, -0.5, 0.0], [-0.3, 0.3, 0.6]])
    out = shift_colour(image, mask, colours)
    assert out.shape == (2, 3, 16, 16)
    inside = out[..., 4:12, 4:12].mean(dim=(2, 3))
    assert torch.allclose(inside, colours, atol=1e-5)
    keep = mask[0, 0] == 0
    assert torch.equal(out[:, :, keep], image.expand(2, -1, -1, -1)[:, :, keep])
    # the shading is kept: deviations from the mean are the image's
    dev = out[0, :, 4:12, 4:12] - inside[0][:, None, None]
    assert torch.allclose(
        dev, image[0, :, 4:12, 4:12] - image[0, :, 4:12, 4:12].mean(dim=(1, 2), keepdim=True), atol=1e-5
    )


def test_colour_search_recolours_only_the_region_towards_the_asked_class(vae):
    clip = MeanColourClip()
    z, image = latent_and_image(vae, seed=1)
    side = image.shape[-1]
    mask = torch.zeros(1, 1, side, side)
    mask[..., : side // 2, :] = 1  # the top half, 4 latent rows
    gamut = decoder_gamut(vae)[1]  # the candidate colours
    moved = False
    for asked in range(3):
        classes = torch.cat([RGB[asked : asked + 1], RGB[[c for c in range(3) if c != asked]]])
        out = colour_search(vae, clip, z, image, mask, classes, gamut, top=3, views=1)  # one view: the whole image
        assert out.shape == z.shape
        assert torch.equal(out[..., 5:, :], z[..., 5:, :])  # the rows beyond the mask's cells, grown by one, stay
        with torch.no_grad():
            before = zero_shot_prob(clip, image, classes)
            after = zero_shot_prob(clip, ae_decode(vae, out).float().clamp(-1, 1), classes)
        assert after >= before  # the start competes: the search never scores worse than where it began
        moved |= not torch.equal(out, z)
    assert moved  # at least one asked colour is reached by a recoloured candidate
    assert torch.equal(colour_search(vae, clip, z, image, mask, classes, gamut, 3, views=1), out)
    views = colour_search(vae, clip, z, image, mask, classes, gamut, 3, views=4)  # augmented views: seeded
    assert torch.equal(views, colour_search(vae, clip, z, image, mask, classes, gamut, 3, views=4))
    assert torch.equal(views[..., 5:, :], z[..., 5:, :])


def test_region_cells_are_the_touched_cells_grown_by_one():
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 12:16, 12:16] = 1  # latent cell (3, 3) of an 8 x 8 grid
    cells = region_cells(mask, 8)
    assert cells.shape == (1, 1, 8, 8)
    assert torch.equal(
        torch.nonzero(cells[0, 0]).unique(dim=0), torch.cartesian_prod(torch.arange(2, 5), torch.arange(2, 5))
    )


def test_projection_pulls_the_region_towards_the_target_and_keeps_the_rest(vae):
    z, image = latent_and_image(vae, seed=2)
    side = image.shape[-1]
    mask = torch.zeros(1, 1, side, side)
    mask[..., : side // 2, : side // 2] = 1
    target = shift_colour(image, mask, torch.tensor([[0.8, -0.6, 0.2]]))
    cells = region_cells(mask, 8)
    encoded_only = project(vae, z, target, cells, steps=0)
    stepped = project(vae, z, target, cells, steps=4)
    outside = (cells == 0).expand_as(z)
    assert torch.equal(stepped[outside], z[outside]) and torch.equal(encoded_only[outside], z[outside])
    with torch.no_grad():
        error = [float((ae_decode(vae, x).float() - target).pow(2).mean()) for x in (encoded_only, stepped)]
    assert error[1] < error[0]  # the decoder steps bring the pixels closer than the encoder alone


def test_view_prob_is_deterministic_and_ranks_the_asked_colour_first():
    clip = MeanColourClip()
    images = torch.stack([torch.full((3, 16, 16), -1.0) for _ in range(3)])
    for c in range(3):
        images[c, c] = 1.0  # pure red, green, blue
    probs = view_prob(clip, images, RGB, views=3)
    assert probs.shape == (3,) and int(probs.argmax()) == 0
    assert torch.equal(probs, view_prob(clip, images, RGB, views=3))


def test_colour_search_takes_any_candidate_colours(vae):
    clip = MeanColourClip()
    z, image = latent_and_image(vae, seed=1)
    mask = torch.ones(1, 1, *image.shape[-2:])
    palette = torch.tensor([[0.9, -0.9, -0.9], [-0.9, -0.9, 0.9]])  # a palette's colours
    out = colour_search(vae, clip, z, image, mask, RGB, palette, top=2, views=1)
    with torch.no_grad():
        after = zero_shot_prob(clip, ae_decode(vae, out).float().clamp(-1, 1), RGB)
    assert after >= zero_shot_prob(clip, image, RGB)
