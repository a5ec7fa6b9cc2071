"""The renderer's labels are exact: visible points lie on the character, hidden ones are marked."""

import numpy as np
import pytest

from models.pose import VISIBLE, Pose
from training.character import (
    EYE_COLORS,
    HAIR_COLORS,
    HAIR_STYLES,
    OUTFITS,
    SKIN_TONES,
    Character,
    sample_character,  # fmt: skip
    sentence,
    tags,
)
from training.render import render
from training.skeleton import ACTIONS, HIDDEN, sample_pose, sample_rig


def _near_mask(mask: np.ndarray, x: float, y: float, tol: int = 1) -> bool:
    h, w = mask.shape
    xi, yi = int(np.floor(x)), int(np.floor(y))
    y0, y1, x0, x1 = max(0, yi - tol), min(h, yi + tol + 1), max(0, xi - tol), min(w, xi + tol + 1)
    return y0 < y1 and x0 < x1 and bool(mask[y0:y1, x0:x1].any())


def test_visible_points_lie_on_the_character():
    for i in range(60):
        rng = np.random.default_rng([7, i])
        rig = sample_rig(rng)
        r = render(rig.pose, sample_character(rng), 128, rig=rig)
        assert r.image.size == (128, 128) and r.image.mode == "RGB"
        assert r.mask.shape == (128, 128) and r.mask.dtype == bool
        assert 0.03 < r.mask.mean() < 0.7
        px = r.pose.pixels()
        for k in np.flatnonzero(r.pose.visible):
            assert _near_mask(r.mask, *px[k]), (i, k, rig.action, rig.yaw)


def test_every_action_and_view_renders():
    rng = np.random.default_rng(0)
    for action in ACTIONS:
        for yaw in ("front", "three-quarter", "side", "back"):
            rig = sample_rig(rng, action=action, yaw=yaw)
            r = render(rig.pose, sample_character(rng), 64, rig=rig)
            assert r.image.size == (64, 64)


def test_back_view_hides_the_face_and_side_view_hides_the_far_shoulder():
    rng = np.random.default_rng(1)
    for _ in range(5):
        rig = sample_rig(rng, action="stand", yaw="back")
        r = render(rig.pose, sample_character(rng), 128, rig=rig)
        assert (r.pose.visibility[:3] == HIDDEN).all()
        assert r.pose.visible[[5, 6]].any()
    hidden_shoulders = noses = 0
    for _ in range(5):
        rig = sample_rig(rng, action="stand", yaw="side")
        r = render(rig.pose, sample_character(rng), 128, rig=rig)
        hidden_shoulders += int((~r.pose.visible[[5, 6]]).sum() >= 1)
        noses += int(r.pose.visible[0])
    assert hidden_shoulders == 5
    assert noses >= 3  # the nose shows in profile unless the head turns away


def test_points_covered_by_the_body_are_hidden():
    # A wrist inside the torso's silhouette but on the far side of it cannot be visible.
    rng = np.random.default_rng(3)
    found = 0
    for _ in range(40):
        rig = sample_rig(rng, yaw="side")
        r = render(rig.pose, Character(), 128, rig=rig)
        found += int((r.pose.visibility < VISIBLE).sum() > 0)
    assert found == 40


def test_renders_a_plain_2d_pose_in_any_frame():
    pose = sample_pose(np.random.default_rng(5))
    wide = Pose(pose.keypoints * np.array([1.0, 0.5, 1.0], np.float32) + np.array([0, 0.2, 0], np.float32), 640, 320)
    for p in (pose, wide):
        r = render(p, Character(hair_style="twintails"), 96)
        assert r.image.size == (96, 96) and r.pose.width == 96
        px = r.pose.pixels()
        for k in np.flatnonzero(r.pose.visible):
            assert _near_mask(r.mask, *px[k])
    # A back view as 2D only (face points hidden): no face is drawn, still renders.
    kp = pose.keypoints.copy()
    kp[:3, 2] = HIDDEN
    kp[[5, 6]] = kp[[6, 5]]
    r = render(Pose(kp, 128, 128), Character(), 128)
    assert not r.pose.visible[:3].any()


def test_hidden_input_points_stay_hidden_and_background_can_be_off():
    pose = sample_pose(np.random.default_rng(9))
    kp = pose.keypoints.copy()
    kp[9, 2] = HIDDEN
    r = render(Pose(kp, 128, 128), Character(), 128, background=False)
    assert not r.pose.visible[9]
    corner = np.asarray(r.image)[0, 0]
    assert (corner == 255).all()


def test_deterministic():
    rig = sample_rig(np.random.default_rng(11))
    c = sample_character(np.random.default_rng(12))
    a, b = render(rig.pose, c, 128, rig=rig), render(rig.pose, c, 128, rig=rig)
    assert a.image.tobytes() == b.image.tobytes() and np.array_equal(a.mask, b.mask)


@pytest.mark.parametrize("i", range(20))
def test_captions_mention_the_attributes(i):
    c = sample_character(np.random.default_rng([2, i]))
    t, s = tags(c, "wave", "front"), sentence(c, "wave", "front")
    for text in (t, s):
        assert f"{c.hair_color} hair" in text
        assert f"{c.eye_color} eyes" in text
        assert "wav" in text and c.background_color in text
    assert t.startswith(f"1{c.gender}, {c.hair_style}, {c.hair_color} hair, {c.eye_color} eyes")
    assert c.outfit in t and c.skin in t
    for a in c.accessories:
        assert a in t and a in s


def test_attribute_lists_are_large_enough():
    assert len(HAIR_STYLES) >= 5 and len(HAIR_COLORS) >= 10 and len(EYE_COLORS) >= 6
    assert len(SKIN_TONES) >= 4 and len(OUTFITS) >= 5
