"""The evaluation's measures: PCK and Frechet distance on known values, the held-out split, the output frame, and
the command line's dispatch (`training.eval_quality` end to end: tests/test_eval_quality.py)."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from PIL import Image

from models.errors import InputError
from models.pose import Pose
from training import eval_common as ec


def grid_pose(frame: int = 200, visible: int = 17) -> Pose:
    """17 points inside a 100 x 100 pixel box (so the PCK@0.1 threshold is 10 pixels)."""
    kp = np.zeros((17, 3), dtype=np.float32)
    kp[:, 0] = (50 + np.linspace(0, 100, 17)) / frame
    kp[:, 1] = (50 + (np.arange(17) % 5) * 25) / frame
    kp[:visible, 2] = 1.0
    kp[visible:, 2] = 0.25
    return Pose(kp, frame, frame)


def shifted(pose: Pose, dx_pixels: np.ndarray) -> Pose:
    """The pose with each point moved right by `dx_pixels[i]` pixels."""
    kp = pose.keypoints.copy()
    kp[:, 0] += dx_pixels / pose.width
    return Pose(kp, pose.width, pose.height)


# -- PCK ------------------------------------------------------------------------------------------
def test_pck_perfect_is_one():
    t = grid_pose()
    assert ec.pck(t, t) == 1.0
    assert ec.pck([t, t], [t, t]) == 1.0


def test_pck_shifted_known_fraction():
    t = grid_pose()
    x0, y0, x1, y1 = t.bbox()
    assert max(x1 - x0, y1 - y0) == pytest.approx(100, abs=1e-3)
    dx = np.where(np.arange(17) < 5, 9.0, 11.0)  # 5 points inside the 10 px radius, 12 outside
    assert ec.pck(shifted(t, dx), t) == pytest.approx(5 / 17)
    assert ec.pck(shifted(t, dx), t, thr=0.2) == 1.0
    assert ec.pck_counts(shifted(t, dx), t) == (5, 17)


def test_pck_ignores_invisible_target_points():
    t = grid_pose(visible=10)
    dx = np.where(np.arange(17) < 10, 0.0, 150.0)  # only the hidden points are far off
    assert ec.pck(shifted(t, dx), t) == 1.0
    assert ec.pck_counts(shifted(t, dx), t) == (10, 10)


def test_pck_pools_points_and_handles_frames():
    t = grid_pose()
    miss = shifted(t, np.full(17, 50.0))
    assert ec.pck([t, miss], [t, t]) == pytest.approx(0.5)
    # The same normalised pose in a resized frame is a perfect prediction.
    assert ec.pck(Pose(t.keypoints, 64, 64), t) == 1.0
    none_visible = grid_pose(visible=0)
    assert np.isnan(ec.pck(none_visible, none_visible))
    with pytest.raises(InputError):
        ec.pck([t], [t, t])


# -- Frechet distance -----------------------------------------------------------------------------
def test_frechet_identical_sets_is_zero():
    a = np.random.default_rng(0).normal(size=(200, 8))
    assert ec.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_frechet_shifted_gaussians_is_squared_shift():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6))
    shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0, 1.0])
    assert ec.frechet_distance(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-6)


def test_frechet_scaled_set_known_value():
    # b = 2a: |mu_a - mu_b|^2 + Tr(S + 4S - 2 (4 S^2)^(1/2)) = |mu_a|^2 + Tr(S).
    a = np.random.default_rng(2).normal(loc=0.3, size=(300, 5))
    expected = float(a.mean(0) @ a.mean(0) + np.trace(np.cov(a, rowvar=False)))
    assert ec.frechet_distance(a, 2 * a) == pytest.approx(expected, rel=1e-6)


def test_frechet_matches_scipy_sqrtm():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(3)
    a = rng.normal(size=(40, 16))  # fewer samples than twice the dims: singular-ish covariances
    b = rng.normal(size=(40, 16)) * 1.5 + 0.2
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(ca @ cb).real
    d = a.mean(0) - b.mean(0)
    expected = d @ d + np.trace(ca + cb - 2 * covmean)
    assert ec.frechet_distance(a, b) == pytest.approx(expected, rel=1e-4)


def test_frechet_rejects_bad_shapes():
    with pytest.raises(InputError):
        ec.frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(InputError):
        ec.frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))


# -- the split -----------------------------------------------------------------------------------------
def test_heldout_seeds_are_reserved():
    assert ec.EVAL_SEED >= 10_000_000
    assert ec.DETECTOR_VAL_SEED >= ec.EVAL_SEED and ec.DETECTOR_VAL_SEED != ec.EVAL_SEED
    with pytest.raises(InputError):
        ec.heldout_render(0, seed=1)  # a training seed


def test_heldout_render_is_deterministic():
    pytest.importorskip("training.synth")
    a, b = ec.heldout_render(3, size=64), ec.heldout_render(3, size=64)
    assert a.pose == b.pose
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert a.image.size == (64, 64)


class FakeState:
    """Like `models.backend.GenerationState`: the pose as given and the settings."""

    def __init__(self, pose: Pose):
        self.pose = pose
        self.settings = {"sampler": "fake", "guidance": 1.0}


def test_output_frame_pose_fits_the_given_pose_to_the_square_frame(monkeypatch):
    import models.pipeline

    # Patch the real module: once imported, `import models.pipeline as m` reads the package attribute.
    monkeypatch.setattr(models.pipeline, "FRAME_MARGIN", 0.1)
    given = grid_pose(frame=400)  # a 100 px box in a 400 frame
    got = ec.output_frame_pose(object(), FakeState(given), Image.new("RGB", (128, 128)))
    assert (got.width, got.height) == (128, 128)
    x0, y0, x1, y1 = got.bbox()
    assert max(x1 - x0, y1 - y0) == pytest.approx(0.8 * 128, rel=1e-4)  # 1 - 2 margin of the frame

    class WithFramePose:
        def frame_pose(self, pose, size):
            return Pose(pose.keypoints, size, size)

    same = ec.output_frame_pose(WithFramePose(), FakeState(given), Image.new("RGB", (64, 64)))
    assert np.allclose(same.keypoints, given.keypoints)


def test_eval_without_a_subcommand_runs_the_quality_evaluation(monkeypatch):
    from training import eval as ev

    calls = []
    monkeypatch.setitem(sys.modules, "training.eval_quality", types.SimpleNamespace(main=calls.append))
    assert ev.main(["--json", "--n", "8"]) == 0 and ev.main(["quality", "--n", "8"]) == 0
    assert calls == [["--json", "--n", "8"], ["--n", "8"]]


def test_frechet_bootstrap_se_shrinks_with_the_sample():
    rng = np.random.default_rng(4)
    small = [rng.normal(size=(100, 4)), rng.normal(loc=0.5, size=(100, 4))]
    large = [rng.normal(size=(1600, 4)), rng.normal(loc=0.5, size=(1600, 4))]
    se_small, se_large = ec.frechet_bootstrap_se(*small, rounds=60), ec.frechet_bootstrap_se(*large, rounds=60)
    assert 0 < se_large < se_small / 2  # 1/sqrt(n): 16 x the sample, about a quarter of the spread
