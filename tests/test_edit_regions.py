"""Edit regions from the pose (head, body, background) and the colour words a prompt competes with."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from models.clip_guidance import contrast_loss
from models.edit_regions import colour_keyed_mask, part_masks, prompt_regions, region_mask
from models.pose import Pose
from models.refine_settings import COLOUR_WORDS, colour_alternatives
from tests.test_pipeline import STANDING

POSE = Pose(STANDING, 1, 1)


@pytest.mark.parametrize(
    ("text", "regions"),
    [
        ("pink hair", {"hair"}),
        ("Blue EYES", {"face"}),
        ("red dress", {"body"}),
        ("sailor uniform, white boots", {"body"}),
        ("teal background", {"background"}),
        ("pink hair and a red dress", {"hair", "body"}),
        ("short hair", {"hair"}),
        ("black shorts", {"body"}),
        ("round glasses", {"face"}),
        ("cute", None),
        ("", None),
    ],
)
def test_prompt_words_name_regions(text, regions):
    assert prompt_regions(text) == regions


def test_part_masks_put_the_head_above_the_body_and_the_background_around():
    masks = part_masks(POSE, 64)
    ys, _ = np.nonzero(masks["hair"])
    by, _ = np.nonzero(masks["body"])
    assert ys.min() < by.min()  # the hair starts above the body
    nose = (STANDING[0, :2] * 64).astype(int)
    assert masks["face"][nose[1], nose[0]] == 1 and masks["hair"][nose[1], nose[0]] == 0
    hip = (STANDING[11, :2] * 64).astype(int)
    assert masks["body"][hip[1], hip[0]] == 1
    assert masks["background"][2, 2] == 1 and masks["background"][hip[1], hip[0]] == 0
    figure = np.maximum(np.maximum(masks["hair"], masks["face"]), masks["body"])
    assert not (figure * masks["background"]).any()  # the background never overlaps the figure


def test_region_mask_unions_softens_and_falls_back_to_everywhere():
    head = region_mask(POSE, 64, {"hair"}, soften=0)
    both = region_mask(POSE, 64, {"hair", "body"}, soften=0)
    assert (both >= head).all() and both.sum() > head.sum()
    soft = region_mask(POSE, 64, {"hair"}, soften=2)
    assert soft.max() <= 1 and soft.min() >= 0
    assert ((soft > 0) & (soft < 1)).any()  # blurred edges
    assert (region_mask(POSE, 64, None) == 1).all()
    hidden = Pose(np.concatenate([STANDING[:, :2], np.zeros((17, 1), np.float32)], 1), 1, 1)
    assert (region_mask(hidden, 64, {"hair"}) == 1).all()  # no visible point: anywhere
    with pytest.raises(ValueError, match="Unknown region"):
        region_mask(POSE, 64, {"hat"})
    with pytest.raises(ValueError, match="Unknown region"):
        colour_keyed_mask(np.zeros((64, 64, 3), np.uint8), POSE, {"hat"})


def test_colour_alternatives_swap_the_colour_word():
    alts = colour_alternatives("pink hair")
    assert len(alts) == len(COLOUR_WORDS) - 1
    assert "red hair" in alts and "pink hair" not in alts
    assert "light blue dress" not in colour_alternatives("a light blue dress")
    assert "a blue dress" in colour_alternatives("a light blue dress")
    assert "grey background" not in colour_alternatives("gray background")
    assert colour_alternatives("sailor uniform") == []


def test_contrast_loss_is_the_zero_shot_cross_entropy():
    classes = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    near = torch.nn.functional.normalize(classes[:1] + 0.01 * torch.randn(3, 8), dim=-1)
    far = torch.nn.functional.normalize(classes[1:2].expand(3, 8), dim=-1)
    assert contrast_loss(near, classes, 50.0) < 0.1 < contrast_loss(far, classes, 50.0)
    expected = -torch.log_softmax(10.0 * near @ classes.T, dim=-1)[:, 0].mean()
    assert torch.allclose(contrast_loss(near, classes, 10.0), expected)


BACKDROP, HAIR, CLOTHES, SKIN = (250, 220, 230), (90, 120, 230), (220, 60, 70), (250, 225, 200)


def draw_character(size: int) -> np.ndarray:
    """A flat-coloured character on POSE: hair with a fringe over the forehead, clothes, skin below the eyes."""
    masks = part_masks(POSE, size)
    image = np.zeros((size, size, 3), np.uint8)
    image[:] = BACKDROP
    eye_row = POSE.xy[[1, 2], 1].mean() * size
    forehead = (masks["face"] > 0) & (np.arange(size)[:, None] < eye_row)
    figure = np.zeros((size, size), bool)
    for name, colour in (("hair", HAIR), ("body", CLOTHES), ("face", SKIN)):
        # the figure is drawn thinner than the pose masks, so each mask also covers some backdrop
        inner = cv2.erode(masks[name], np.ones((5, 5), np.uint8)) > 0
        if name == "hair":
            inner |= forehead
        image[inner & ~figure] = colour
        figure |= inner
    return image


def test_colour_keyed_mask_keeps_the_hair_in_the_crowns_colours_without_the_backdrop():
    size = 64
    image = draw_character(size)
    keyed = colour_keyed_mask(image, POSE, {"hair"}, soften=0)
    coarse = region_mask(POSE, size, {"hair"}, soften=0)
    backdrop = (image == BACKDROP).all(-1)
    hair = (image == HAIR).all(-1)
    assert (coarse * backdrop).sum() > 0 and (keyed * backdrop).sum() == 0
    assert keyed[hair].min() == 1  # the fringe over the face too, which the pose mask leaves out
    assert (coarse[hair] == 0).any()
    assert keyed[(image == SKIN).all(-1) | (image == CLOTHES).all(-1)].max() == 0
    assert np.array_equal(colour_keyed_mask(image, POSE, {"hair"}), colour_keyed_mask(image, POSE, {"hair"}))
    assert (colour_keyed_mask(image, POSE, None) == 1).all()
    assert np.array_equal(
        colour_keyed_mask(image, POSE, {"background"}, soften=0), part_masks(POSE, size)["background"]
    )


@pytest.mark.parametrize("speck", [True, False])
def test_a_small_head_keys_its_own_pixels_not_the_backdrop_round_it(speck):
    # with no figure pixel in the crown at all (a head drawn below the pose's), the backdrop is not taken for hair
    size = 64
    masks = part_masks(POSE, size)
    image = np.zeros((size, size, 3), np.uint8)
    image[:] = BACKDROP
    head = cv2.erode(masks["face"], np.ones((3, 3), np.uint8)) > 0  # the whole head inside the face disc
    face = head & (np.arange(size)[:, None] >= POSE.xy[[1, 2], 1].mean() * size)
    image[face] = SKIN  # above the eyes: hair the backdrop's colour, but for a speck
    top = np.argwhere(head)[0]
    if speck:
        image[top[0] : top[0] + 2, top[1] - 1 : top[1] + 3] = HAIR  # the crown's only figure colour, but 8 pixels
    image[cv2.erode(masks["body"], np.ones((5, 5), np.uint8)) > 0] = CLOTHES
    keyed = colour_keyed_mask(image, POSE, {"hair"}, soften=0)
    assert keyed[(image == BACKDROP).all(-1)].max() == 0  # not the pose's hair ring round the head: all backdrop
    assert keyed[face].sum() > 0.5 * face.sum()  # the head's own figure pixels instead
