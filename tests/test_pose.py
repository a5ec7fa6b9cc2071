"""Property tests of the pose conversions (models/pose.py) and the fork's files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from models import pose as P
from models.errors import InputError

FAST = settings(max_examples=50, deadline=None)
coord = st.floats(-0.25, 1.25, allow_nan=False, width=32)
side = st.integers(16, 4096)
UNIT = st.floats(0.0, 1.0, width=32)


@st.composite
def poses(draw, vis=UNIT, width=side, height=side):
    """A random Pose; `vis` draws each visibility."""
    xy = draw(arrays(np.float32, (P.NUM_KEYPOINTS, 2), elements=coord))
    v = draw(arrays(np.float32, (P.NUM_KEYPOINTS, 1), elements=vis))
    return P.Pose(np.concatenate([xy, v], axis=1), draw(width), draw(height))


@FAST
@given(poses())
def test_own_json_round_trip(pose):
    assert P.loads(pose.to_json()) == pose
    assert P.from_dict(json.loads(json.dumps(pose.to_dict()))) == pose


@FAST
@given(poses(vis=st.sampled_from([0.0, 0.25, 1.0])))
def test_coco_flat_round_trip(pose):
    flat = P.to_coco_flat(pose)
    assert len(flat) == 51 and set(flat[2::3]) <= {0, 1, 2}
    assert P.from_coco_flat(flat, pose.width, pose.height).isclose(pose)
    obj = {"keypoints": flat, "width": pose.width, "height": pose.height}
    assert P.from_dict(obj).isclose(pose)


@FAST
@given(poses())
def test_openpose18_round_trip(pose):
    back = P.from_openpose18(P.to_openpose18(pose), pose.width, pose.height)
    present = pose.visibility > 0
    assert np.allclose(back.keypoints[present], pose.keypoints[present], atol=1e-5)
    assert (back.visibility[~present] == 0).all()  # OpenPose writes absent points as zeros


@FAST
@given(poses(vis=st.just(1.0), width=st.just(512), height=st.just(512)))
def test_fork_round_trip(pose):
    assert P.from_fork(P.to_fork(pose)).isclose(pose)
    assert P.from_dict(json.loads(json.dumps(P.to_fork(pose)))).isclose(pose)


@FAST
@given(poses(vis=st.sampled_from([0.0, 0.25, 1.0])), st.sampled_from(P.FILE_FORMATS))
def test_every_file_format_reads_back(pose, fmt):
    back = P.from_dict(json.loads(P.file_text(pose, fmt)))
    if fmt == "fork":  # a 512 x 512 frame without visibility: the points, scaled to it, all shown
        assert (back.width, back.height) == (512, 512) and back.visible.all()
        assert np.allclose(back.xy, pose.xy, atol=1e-4)
        return
    present = pose.visibility > 0  # OpenPose writes an absent point as zeros, so only present ones keep their place
    assert (back.width, back.height) == (pose.width, pose.height)
    assert np.allclose(back.xy[present], pose.xy[present], atol=1e-4)  # ours: 4 decimals
    assert (back.visible == pose.visible).all() and ((back.visibility > 0) == present).all()


def test_an_unknown_file_format_is_one_sentence():
    with pytest.raises(InputError, match="Unknown pose file format 'bvh'; choose one of ours, openpose"):
        P.to_file(P.Pose(np.zeros((17, 3))), "bvh")


@FAST
@given(poses())
def test_mediapipe_round_trip(pose):
    arr = P.to_mediapipe(pose)
    assert arr.shape == (33, 3)
    assert P.from_mediapipe(arr, pose.width, pose.height).isclose(pose)


@FAST
@given(poses())
def test_mirror_twice_is_identity(pose):
    once = P.mirror(pose)
    assert np.array_equal(once.visibility, pose.visibility[list(P.FLIP_INDEX)])
    assert P.mirror(once).isclose(pose, atol=1e-6)


@FAST
@given(poses(), st.integers(64, 1024), st.floats(0.0, 0.4))
def test_fit_to_square_keeps_visibility_and_centres_the_box(pose, size, margin):
    fitted = P.fit_to_square(pose, size, margin)
    assert (fitted.width, fitted.height) == (size, size)
    assert np.array_equal(fitted.visible, pose.visible)
    assert np.array_equal(fitted.visibility[pose.visible], pose.visibility[pose.visible])
    x0, y0, x1, y1 = fitted.bbox()
    assert (x0 + x1) / 2 / size == pytest.approx(0.5, abs=1e-3)
    assert (y0 + y1) / 2 / size == pytest.approx(0.5, abs=1e-3)


def test_fork_files_load_upright(fork_files):
    """The fork writes [y, x]: read as such, the head is above the hips and the feet."""
    for path in fork_files:
        pose = P.load(path)
        y = dict(zip(P.COCO_NAMES, pose.xy[:, 1]))
        assert (pose.width, pose.height) == (512, 512) and pose.visible.all()
        shoulders = (y["left_shoulder"] + y["right_shoulder"]) / 2
        hips = (y["left_hip"] + y["right_hip"]) / 2
        ankles = (y["left_ankle"] + y["right_ankle"]) / 2
        assert y["nose"] < shoulders < hips, path.name
        assert y["nose"] < ankles, path.name


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('{"keypoints": [[NaN, 0.5, 1]' + ", [0.5, 0.5, 1]" * 16 + "]}", "NaN"),
        ('{"keypoints": [[0.5, 0.5, 1]', "not valid JSON"),
        ("", "empty"),
        ('{"keypoints": [' + ", ".join(["[0.5, 0.5, 1]"] * 16) + "]}", "17 keypoints"),
        (json.dumps({n: [1, 2] for n in P.FORK_NAMES[:16]}), "lacks 1 of the 17 names"),
        ('{"people": []}', "no people"),
        ('{"hello": 1}', "not a pose format"),
        (json.dumps({"keypoints": [1, 2, 2] * 17}), "frame size"),
        (json.dumps({"keypoints": [[5.0, 0.5, 1]] * 17}), "outside"),
    ],
)
def test_bad_keypoint_json_raises_one_sentence(text, words):
    with pytest.raises(InputError, match=words) as err:
        P.loads(text)
    assert "\n" not in str(err.value)
