"""The picture's evaluation sees what a person sees: blur, missing eyes, a told-apart set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.errors import InputError
from training.eval_common import EVAL_SEED
from training.eval_quality import (
    EYES,
    blurred,
    c2st,
    detail,
    eyes_drawn,
    eyes_located,
    face_share,
    psnr_images,
    real_poses,
)
from training.synth import make_sample


@pytest.fixture(scope="module")
def renders():
    """Held-out 256-px renders whose poses show both eyes, with their poses."""
    out = []
    for i in range(40):
        r = make_sample(EVAL_SEED, i, 256)["render"]
        if all(r.pose.visible[k] for k in EYES):
            out.append((r.image.convert("RGB"), r.pose))
        if len(out) == 6:
            return out
    raise AssertionError("too few frontal renders")


def test_renders_have_eyes_and_blur_or_a_smaller_drawing_erases_them(renders):
    images, poses = [r[0] for r in renders], [r[1] for r in renders]
    assert face_share(images, poses) == (1.0, 6)
    assert face_share(blurred(images, 1.5), poses)[0] <= 1 / 6
    enlarged = [im.resize((128, 128), Image.BILINEAR).resize((256, 256), Image.BILINEAR) for im in images]
    assert face_share(enlarged, poses)[0] <= 1 / 6


JUDGE = Path(__file__).resolve().parents[1] / "weights" / "attributes"


@pytest.mark.skipif(not (JUDGE / "config.json").is_file(), reason="no shipped attribute judge")
def test_the_judge_finds_eyes_where_the_pose_puts_them_and_not_in_speckle(renders):
    from models.attributes import load_attribute_classifier

    judge = load_attribute_classifier(JUDGE)
    images, poses = [r[0] for r in renders], [r[1] for r in renders]
    assert face_share(images, poses, judge) == (1.0, 6)
    rng = np.random.default_rng(0)
    speckled = [Image.fromarray(np.clip(np.asarray(im, np.float32) + rng.normal(0, 90, (256, 256, 3)), 0, 255)
                                .astype(np.uint8)) for im in images]  # fmt: skip
    blank = [Image.new("RGB", (256, 256), "white")] * len(images)
    assert face_share(blank, poses, judge)[0] == 0.0
    assert face_share(speckled, poses, judge)[0] <= face_share(speckled, poses)[0] + 1 / 6
    moved = [type(p)(np.roll(p.keypoints, 5, axis=0), p.width, p.height) for p in poses]  # eyes somewhere else
    assert eyes_located(judge, images, moved).mean() <= 1 / 3


def test_eyes_drawn_needs_a_pose_that_shows_both_eyes(renders):
    image, pose = renders[0]
    xy = pose.xy.copy()
    vis = pose.visible.astype(np.float32)
    vis[EYES[0]] = 0.0
    hidden = type(pose)(np.concatenate([xy, vis[:, None]], axis=1), pose.width, pose.height)
    with pytest.raises(InputError, match="both eyes"):
        eyes_drawn(image, hidden)


def test_detail_and_psnr_fall_with_blur(renders):
    images = [r[0] for r in renders]
    soft = blurred(images, 1.0)
    sharp, smooth = detail(images), detail(soft)
    assert smooth["laplacian_var"] < 0.5 * sharp["laplacian_var"] and smooth["hf_power"] < 0.5 * sharp["hf_power"]
    assert psnr_images(images, images) > 100 and psnr_images(soft, images) < 35


def test_two_sample_test_tells_blur_apart_and_not_renders_from_renders():
    a = [make_sample(EVAL_SEED, i, 64)["render"].image.convert("RGB") for i in range(16)]
    b = [make_sample(EVAL_SEED, 100 + i, 64)["render"].image.convert("RGB") for i in range(16)]
    assert c2st(blurred(a, 1.0), b, steps=100, crop=32) >= 0.7
    assert c2st(a, b, steps=100, crop=32) <= 0.65
    with pytest.raises(InputError, match="at least 4"):
        c2st(a[:3], b, steps=1)


def test_real_poses_include_the_presets():
    from models.pose_input import list_presets

    names = [n for n, _ in real_poses()]
    assert set(list_presets()) <= set(names)
