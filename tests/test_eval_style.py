"""The style-reading evaluation: does the UNet take a render's look from s or from the noise (issue 6)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import pytest
import torch
from PIL import Image

from models.errors import InputError
from models.pipeline import PosePipeline
from models.pose import Pose
from models.unet import StyleEncoder
from tests.test_pipeline import SIZE, STANDING, tiny_pipeline
from training.eval_style import main, picture_reading, style_from_labels, style_of, style_reading


class MeanBrightness:
    """Judges one attribute, light or dark, from a PIL image's mean."""

    classes: ClassVar[dict[str, list[str]]] = {"background_color": ["dark", "light"]}

    def predict(self, images):
        means = torch.tensor([float(np.asarray(im, dtype=np.float32).mean()) for im in images])
        light = (means > float(np.median(means.numpy()))).float()
        return {"background_color": torch.stack([1 - light, light], dim=1)}


@pytest.fixture(scope="module")
def pipe() -> PosePipeline:
    p = tiny_pipeline()
    torch.manual_seed(0)
    p.style_encoder = StyleEncoder(widths=(4,), style_dim=p.style_dim, norm_num_groups=2).eval()
    return p


def test_style_reading_judges_both_arms_from_the_same_noise(pipe):
    images = [Image.new("RGB", (SIZE, SIZE), (v, v, v)) for v in (20, 230, 40, 210)]
    poses = [Pose(STANDING, SIZE, SIZE)] * 4
    labels = [{"background_color": c} for c in ("dark", "light", "dark", "light")]
    rows = style_reading(pipe, MeanBrightness(), MeanBrightness.classes, images, poses, labels, steps=2)
    row = rows["background_color"]
    assert row["n"] == 4 and 0 <= row["from_s"] <= 1 and 0 <= row["random_s"] <= 1
    assert row["gain"] == pytest.approx(row["from_s"] - row["random_s"])
    assert style_reading(pipe, MeanBrightness(), MeanBrightness.classes, images, poses, labels, steps=2) == rows
    assert style_of(pipe, images[:2]).shape == (2, pipe.style_dim)
    # an unlabelled attribute is left out, a missing label skips that image
    labels[0] = {"background_color": None}
    assert (
        style_reading(pipe, MeanBrightness(), MeanBrightness.classes, images, poses, labels, 2)["background_color"]["n"]
        == 3
    )


class Finder:
    """A detector stand-in: a figure wherever the picture is not pure black."""

    def figure_confidence(self, images):
        return [0.0 if np.asarray(im).max() == 0 else 1.0 for im in images]


def test_picture_reading_draws_each_look_in_the_next_pose_and_counts_refusals(pipe):
    images = [Image.new("RGB", (SIZE, SIZE), (v, v, v)) for v in (0, 230, 40, 210)]
    poses = [Pose(STANDING, SIZE, SIZE)] * 4
    labels = [{"background_color": c} for c in ("dark", "light", "dark", "light")]
    renders = [SimpleNamespace(image=im, pose=p) for im, p in zip(images, poses)]
    judge = (MeanBrightness(), MeanBrightness.classes)
    rows = picture_reading(pipe, judge, renders, labels, 2, detector=Finder())
    assert rows["refused"] == 1 and rows["background_color"]["n"] == 3
    assert 0 <= rows["background_color"]["from_picture"] <= 1
    with pytest.raises(InputError, match="two images"):
        picture_reading(pipe, judge, renders[:1], labels[:1])


def test_bad_inputs_are_clear_messages(pipe, capsys):
    with pytest.raises(InputError, match="as many poses"):
        style_reading(pipe, MeanBrightness(), MeanBrightness.classes, [], [], [])
    bare = tiny_pipeline()
    with pytest.raises(InputError, match="no style_encoder"):
        style_of(bare, [Image.new("RGB", (SIZE, SIZE))])
    assert main(["--json", "--n", "0"]) == 1
    assert "at least 1" in json.loads(capsys.readouterr().out)["error"]


def test_a_labels_mode_model_gets_s_from_the_labels(pipe):
    from training.style_guide import make_layout

    classes = {"background_color": ("dark", "light")}
    layout = make_layout(np.array([[0], [1]]), classes, ["background_color"], pipe.style_dim)
    labels = [{"background_color": c} for c in ("dark", "light", None)]
    free = np.full((3, pipe.style_dim), 7.0)
    s = style_from_labels(labels, layout, free)
    # the guided axis lies in the class's bin (dark below the median, light above, unseen anywhere); the rest is `free`
    assert s.shape == (3, pipe.style_dim) and s[0, 0] < 0 < s[1, 0] and np.all(s[:, 1:] == 7.0)
    assert np.array_equal(style_from_labels(labels, layout, free), s)
    # no style encoder needed when the free axes come from the prior
    bare = tiny_pipeline()
    images = [Image.new("RGB", (SIZE, SIZE), (v, v, v)) for v in (20, 230)]
    rows = style_reading(
        bare,
        MeanBrightness(),
        MeanBrightness.classes,
        images,
        [Pose(STANDING, SIZE, SIZE)] * 2,
        labels[:2],
        2,
        layout=layout,
        free_prior=True,
    )
    assert rows["background_color"]["n"] == 2


def test_look_agreement_counts_how_often_one_s_gives_one_look():
    import numpy as np
    import torch

    from training.eval_style import LOOK_ATTRIBUTES, look_agreement

    class Pipe:
        unet = type("U", (), {"config": type("C", (), {"style_dim": 3})()})()

        def prepare(self, pose, seed, steps, style, **sampling):
            assert sampling == asked
            return seed

        def render(self, state):
            return [state], None

    class Judge:  # hair colour follows the noise's parity; every other attribute is fixed
        def predict(self, seeds):
            out = {a: torch.eye(4)[[0] * len(seeds)] for a in LOOK_ATTRIBUTES}
            out["hair_color"] = torch.eye(4)[[s % 2 for s in seeds]]
            return out

    asked = {}
    look = look_agreement(Pipe(), Judge(), poses=[None, None], noises=8)
    assert look["hair_color"] == 0.5 and look["outfit"] == 1.0
    asked = {"guidance": 4.0}  # the evaluation's sampling settings reach every image
    assert look_agreement(Pipe(), Judge(), poses=[None], noises=2, sampling=asked)["outfit"] == 1.0
    assert np.isclose(look["look_follows_s"], (0.5 + 4 * 1.0) / 5)
