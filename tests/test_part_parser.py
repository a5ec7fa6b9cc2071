"""The part parser: its labels from the renderer, the model, the training command, and refinement's masks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from models.edit_regions import PARTS, PartParser, part_masks_from_probs
from training.train_parser import part_labels

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def test_labels_are_the_pixels_a_part_colour_change_moves():
    from training.character import HAIR_COLORS, sample_character
    from training.skeleton import sample_rig

    image, labels = part_labels(0, 3)
    assert image.shape == (128, 128, 3) and labels.shape == (128, 128)
    shares = np.bincount(labels.ravel(), minlength=len(PARTS)) / labels.size
    assert all(shares > 0.005) and shares[PARTS.index("background")] > 0.5
    # the hair's pixels are drawn in the character's hair colour or its shades: nearer it than the rest are
    rng = np.random.default_rng([0, 3])
    sample_rig(rng)
    hair = np.array(HAIR_COLORS[sample_character(rng).hair_color], dtype=float)
    dist = np.abs(image.astype(float) - hair).sum(axis=-1)
    on_hair, off_hair = labels == PARTS.index("hair"), labels != PARTS.index("hair")
    assert np.median(dist[on_hair]) < 0.5 * np.median(dist[off_hair])
    again = part_labels(0, 3)  # deterministic, as the data set is
    assert np.array_equal(again[1], labels) and np.array_equal(again[0], image)


def test_parser_gives_part_probabilities_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = PartParser(image_size=32, channels=(4, 4, 8, 8))
    out = model(torch.zeros(2, 3, 32, 32))
    assert out.shape == (2, len(PARTS), 32, 32)
    probs = model.parse([Image.new("RGB", (64, 64), (200, 30, 30))])
    assert probs.shape == (1, len(PARTS), 32, 32) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    model.save_pretrained(tmp_path / "parser")
    loaded = PartParser.from_pretrained(tmp_path / "parser")
    assert np.allclose(loaded.parse(torch.zeros(1, 3, 32, 32)), model.parse(torch.zeros(1, 3, 32, 32)), atol=1e-6)
    masks = part_masks_from_probs(probs[0], {"hair", "body", "face"})
    assert set(masks) == {"hair", "body"}  # the face keeps the pose's mask
    assert np.array_equal(masks["body"], probs[0, PARTS.index("clothes")])
    with pytest.raises(ValueError):
        PartParser(channels=(4, 8))


def test_training_command_learns_and_saves(tmp_path):
    from training.train_parser import main

    out = tmp_path / "run"
    args = ["--synth", "0:12", "--val", "4", "--ae", "", "--out", str(out), "--steps", "4", "--batch-size", "4",
            "--channels", "4,4,8,8", "--checkpoint-every", "2", "--workers", "1"]  # fmt: skip
    assert main(args) == 0
    info = json.loads((out / "training_info.json").read_text())
    assert info["steps"] == 4 and set(info["val"]["iou"]) == set(PARTS)
    assert PartParser.from_pretrained(out / "final").config.channels == [4, 4, 8, 8]
    assert main(args[:-2] + ["--workers", "1", "--resume", "--steps", "6"]) == 0  # from the checkpoint and cache
    assert json.loads((out / "training_info.json").read_text())["steps"] == 6
    with pytest.raises(SystemExit):
        main(["--synth", "5:2", "--out", str(tmp_path / "bad")])


class _FixedParser:
    """A parser that sees the hair in a fixed square, or nowhere."""

    def __init__(self, hair: bool):
        self.hair = hair

    def parse(self, images):
        probs = np.zeros((1, len(PARTS), 16, 16), np.float32)
        probs[0, PARTS.index("background")] = 1
        if self.hair:
            probs[0, :, 2:6, 6:10] = 0
            probs[0, PARTS.index("hair"), 2:6, 6:10] = 1
        return probs


def test_refinement_masks_come_from_the_parser_where_it_sees_the_part():
    from models.backend import GenerationState
    from models.pose import Pose
    from models.recolour import region_pixel_masks
    from tests.test_pipeline import STANDING

    state = GenerationState(Pose(STANDING, 512, 512), 0, torch.zeros(1, 4), torch.zeros(1, 4, 4, 4), {"size": 64})
    image = Image.new("RGB", (64, 64), (240, 240, 240))
    parsed = region_pixel_masks(state, [("pink hair", 1.0)], image, _FixedParser(True))
    assert set(parsed) == {"hair"} and parsed["hair"].shape == (64, 64)
    assert parsed["hair"][12:20, 28:36].min() > 0.9 and parsed["hair"][40:].max() == 0  # resized to the image
    # no hair seen: the colour-keyed pose region, as without a parser
    keyed = region_pixel_masks(state, [("pink hair", 1.0)], image, _FixedParser(False))
    assert np.array_equal(keyed["hair"], region_pixel_masks(state, [("pink hair", 1.0)], image)["hair"])
