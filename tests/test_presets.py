"""models/presets/ (models.pose_input.load_preset): the named poses are plausible front views of a whole body."""

from __future__ import annotations

import numpy as np
import pytest

from models.errors import InputError
from models.pose import COCO_NAMES, Pose, loads
from models.pose_input import list_presets, load_preset

REQUIRED = (
    "standing", "walking", "running", "jumping", "sitting", "kneeling", "arms_up", "waving", "pointing",
    "hands_on_hips", "t_pose", "dancing", "fighting_stance", "crouching",
)  # fmt: skip


def y_of(pose: Pose) -> dict[str, float]:
    """Each point's y in pixels by name."""
    return dict(zip(COCO_NAMES, pose.pixels()[:, 1].tolist()))


def mean(d: dict[str, float], part: str) -> float:
    """The mean of the left and right `part`."""
    return (d[f"left_{part}"] + d[f"right_{part}"]) / 2


def test_names():
    names = list_presets()
    assert len(names) >= 14 and set(REQUIRED) <= set(names)


@pytest.mark.parametrize("name", list_presets())
def test_each_preset_is_a_plausible_front_view(name):
    pose = load_preset(name)
    assert (pose.width, pose.height) == (512, 512) and pose.visible.all()
    assert (pose.xy > 0).all() and (pose.xy < 1).all()  # the whole body is in the frame
    y = y_of(pose)
    x = dict(zip(COCO_NAMES, pose.pixels()[:, 0].tolist()))
    assert y["nose"] < mean(y, "shoulder") < mean(y, "hip") < mean(y, "ankle")  # head up
    assert mean(y, "knee") < mean(y, "ankle") + 20
    assert x["left_shoulder"] > x["right_shoulder"] and x["left_hip"] > x["right_hip"]  # facing us
    assert loads(pose.to_json()) == pose


def test_low_poses_have_low_hips():
    stand = mean(y_of(load_preset("standing")), "hip")
    for name in ("sitting", "kneeling", "crouching"):
        assert mean(y_of(load_preset(name)), "hip") > stand + 30, name
    sit = y_of(load_preset("sitting"))
    # Seen from the front, the thighs come toward us: much shorter on screen than the shins.
    assert mean(sit, "knee") - mean(sit, "hip") < 0.5 * (mean(sit, "ankle") - mean(sit, "knee"))
    kneel = y_of(load_preset("kneeling"))
    assert mean(kneel, "ankle") - mean(kneel, "knee") < 0.5 * (mean(kneel, "knee") - mean(kneel, "hip"))


def test_name_forms_and_unknown_name():
    assert load_preset("Arms Up") == load_preset("arms-up") == load_preset("arms_up")
    with pytest.raises(InputError, match="standing") as err:
        load_preset("moonwalk")
    assert "moonwalk" in str(err.value)
    assert not np.array_equal(load_preset("standing").keypoints, load_preset("walking").keypoints)
