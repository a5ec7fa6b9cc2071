"""The picture's evaluation sees what a person sees: blur, missing eyes, a told-apart set."""

from __future__ import annotations

import numpy as np
import pytest

from models.errors import InputError
from training.eval_common import EVAL_SEED
from training.eval_face import (
    EYES,
    FaceCheckConfig,
    eye_pairs,
    eyes_drawn,
    eyes_found,
    face_figures,
    shows_eyes,
    train_face_check,
)
from training.eval_quality import (
    FD_MIN_N,
    blurred,
    c2st,
    detail,
    detail_figures,
    fd_clip_figure,
    flat_colours,
    psnr_images,
    real_poses,
)
from training.synth import make_sample


@pytest.fixture(scope="module")
def renders():
    """Held-out 256-px renders whose faces show both eyes, with their poses."""
    out = []
    for i in range(40):
        r = make_sample(EVAL_SEED, i, 256)["render"]
        if shows_eyes(r.pose):
            out.append((r.image.convert("RGB"), r.pose))
        if len(out) == 6:
            return out
    raise AssertionError("too few frontal renders")


def test_an_eyeless_render_differs_from_its_render_only_around_the_eyes():
    drawn = 0
    for i in range(12):
        sample, twin = make_sample(EVAL_SEED, i, 128), make_sample(EVAL_SEED, i, 128, eyes=False)
        a, b = np.asarray(sample["render"].image, int), np.asarray(twin["render"].image, int)
        pose = sample["render"].pose
        assert np.array_equal(pose.keypoints, twin["render"].pose.keypoints)
        ys, xs = np.nonzero(np.abs(a - b).max(axis=-1) > 0)
        eyes = pose.xy[list(EYES)] * 128
        if len(xs):  # the face, nothing else (the brows and lashes are the eyes')
            near = np.hypot(xs[:, None] - eyes[:, 0], ys[:, None] - eyes[:, 1]).min(axis=1)
            assert near.max() < 12
        drawn += eyes_drawn(sample["render"].image, twin["render"].image, pose)
    assert drawn >= 4


@pytest.fixture(scope="module")
def face_check():
    """The face check at 128 px on a small training budget (the evaluation's takes about a minute)."""
    return train_face_check(128, FaceCheckConfig(characters=160, views=4, steps=300))


def test_the_face_check_finds_eyes_in_held_out_renders_and_none_in_their_eyeless_twins(face_check):
    pairs = eye_pairs(EVAL_SEED, range(48), 128)
    assert len(pairs) >= 12
    renders, eyeless, poses = (list(x) for x in zip(*pairs))
    assert (eyes_found(face_check, renders, poses) > 0.5).mean() >= 0.9
    assert (eyes_found(face_check, eyeless, poses) > 0.5).mean() <= 0.1
    assert (eyes_found(face_check, blurred(renders, 3.0), poses) > 0.5).mean() <= 0.2  # eyes blurred away
    moved = [type(p)(np.roll(p.keypoints, 5, axis=0), p.width, p.height) for p in poses]  # eyes somewhere else
    assert (eyes_found(face_check, renders, moved) > 0.5).mean() <= 0.2
    figures = face_figures(face_check, renders, eyeless, poses, {"": (eyeless, poses), "ae_": (renders, poses)})
    assert figures["face_n"] == len(pairs) and figures["face_renders"] == figures["face_ae"] >= 0.9
    assert figures["face_eyeless"] == figures["face"] <= 0.1


def test_detail_and_psnr_fall_with_blur(renders):
    images = [r[0] for r in renders]
    soft = blurred(images, 1.0)
    sharp, smooth = detail(images), detail(soft)
    assert smooth["laplacian_var"] < 0.5 * sharp["laplacian_var"] and smooth["hf_power"] < 0.5 * sharp["hf_power"]
    assert psnr_images(images, images) > 100 and psnr_images(soft, images) < 35


def test_flat_colours_count_patchwork_and_not_a_slight_blur():
    from PIL import Image

    made = [make_sample(EVAL_SEED, i, 256)["render"] for i in range(6)]
    images, masks = [r.image.convert("RGB") for r in made], np.stack([r.mask > 0 for r in made])
    rng = np.random.default_rng(0)
    patched = []
    for im, m in zip(images, masks):  # every third 8 x 8 cell of the figure shifted to another colour
        a = np.asarray(im, dtype=np.int16).copy()
        for y, x in zip(*np.nonzero(m[::8, ::8])):
            if rng.random() < 1 / 3:
                a[8 * y : 8 * y + 8, 8 * x : 8 * x + 8] += rng.integers(-80, 80, 3)
        patched.append(Image.fromarray(a.clip(0, 255).astype(np.uint8)))
    base = flat_colours(images, masks).mean()
    assert base >= 2 and flat_colours(patched, masks).mean() > 1.5 * base
    assert flat_colours(blurred(images, 1.0), masks).mean() < 1.25 * base
    assert flat_colours([Image.new("RGB", (8, 8), "red")], np.ones((1, 8, 8), bool)).tolist() == [1]
    figures = detail_figures(images, masks, {"": (patched, None), "ae_": (images, None)})
    assert figures["flat_colours_ratio"] > 1.5 and figures["ae_flat_colours_ratio"] == 1.0


def test_two_sample_test_tells_blur_apart_and_not_renders_from_renders():
    a = [make_sample(EVAL_SEED, i, 64)["render"].image.convert("RGB") for i in range(16)]
    b = [make_sample(EVAL_SEED, 100 + i, 64)["render"].image.convert("RGB") for i in range(16)]
    assert c2st(blurred(a, 1.0), b, steps=100, crop=32) >= 0.7
    assert c2st(a, b, steps=100, crop=32) <= 0.65
    with pytest.raises(InputError, match="at least 4"):
        c2st(a[:3], b, steps=1)


def test_fd_clip_is_reported_only_where_its_sample_is_large_enough():
    assert fd_clip_figure(3.0, 1.5, FD_MIN_N) == {"fd_clip_ratio": 2.0}
    small = fd_clip_figure(3.0, 1.5, 64, "_ae")
    assert small["fd_clip_ratio_ae"] is None and small["fd_clip_ratio_ae_biased"] == 2.0


def test_real_poses_include_the_presets():
    from models.pose_input import list_presets

    names = [n for n, _ in real_poses()]
    assert set(list_presets()) <= set(names)
