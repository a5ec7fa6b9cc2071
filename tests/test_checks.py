"""The shared input checks (models.backend): what each accepts and the one sentence each raises."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models import backend
from models.errors import InputError
from models.pose import Pose

VISIBLE = np.tile([0.5, 0.5, 1.0], (17, 1)).astype(np.float32)
COMMON = {"max_steps": 200, "max_guidance": 20.0}


def test_whole_numbers():
    assert backend.is_whole(3) and backend.is_whole(np.int64(3))
    assert not any(backend.is_whole(v) for v in (True, 3.0, "3", None))


def test_pose():
    backend.check_pose(Pose(VISIBLE))
    with pytest.raises(InputError, match=r"must be a models\.pose\.Pose"):
        backend.check_pose(VISIBLE)
    hidden = VISIBLE.copy()
    hidden[:, 2] = 0
    with pytest.raises(InputError, match="no visible keypoint"):
        backend.check_pose(Pose(hidden))


@pytest.mark.parametrize("seed", [-1, backend.MAX_SEED + 1, True, 1.0])
def test_seed_rejects(seed):
    with pytest.raises(InputError, match=f"whole number from 0 to {backend.MAX_SEED}"):
        backend.check_seed(seed)


def test_steps_count_size_bounds():
    backend.check_steps(1000, 1000)
    with pytest.raises(InputError, match="from 1 to 200"):
        backend.check_steps(201, 200)
    backend.check_count(backend.MAX_IMAGES)
    with pytest.raises(InputError, match=f"images must be from 1 to {backend.MAX_IMAGES}"):
        backend.check_count(0)
    backend.check_size(64, 8, 32)
    for size in (4, 12, 136, 64.0):
        with pytest.raises(InputError, match=r"multiple of 8 up to 128 pixels \(the model draws 32\)"):
            backend.check_size(size, 8, 32)


def test_guidance_bounded_and_fork():
    backend.check_guidance(20, 20.0)
    for g in (None, -0.1, 20.5, math.nan, "2"):
        with pytest.raises(InputError, match="number from 0 to 20."):
            backend.check_guidance(g, 20.0)
    for g in (None, -5.0, 1e6):  # the fork ignores guidance: None or any finite number passes
        backend.check_guidance(g, None)
    with pytest.raises(InputError, match=r"^The guidance scale must be a number\.$"):
        backend.check_guidance(math.inf, None)


def test_sampler_and_eta():
    backend.check_sampler("ddim")
    with pytest.raises(InputError, match="Unknown sampler 'plms'; choose one of"):
        backend.check_sampler("plms")
    backend.check_eta(1)
    for eta in (-0.1, 1.5, math.nan, None):
        with pytest.raises(InputError, match="eta must be a number from 0 to 1"):
            backend.check_eta(eta)


def test_common_reports_in_order():
    pose = Pose(VISIBLE)
    backend.check_common(pose, 0, 10, 2.0, "ddim", 0.0, 1, **COMMON)
    with pytest.raises(InputError, match="seed"):  # the seed is checked before the steps and the sampler
        backend.check_common(pose, -1, 0, 2.0, "plms", 0.0, 1, **COMMON)
    with pytest.raises(InputError, match="guidance"):  # guidance before sampler, eta and count
        backend.check_common(pose, 0, 10, 99.0, "plms", 2.0, 0, **COMMON)
