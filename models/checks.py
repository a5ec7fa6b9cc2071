"""Input checks every back end shares (PosePipeline, ForkPipeline, ControlNetBackend): pure functions that
raise `InputError` with one sentence. Each back end's own limits (steps, guidance, size) are arguments."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from models.errors import InputError
from models.pose import Pose
from models.samplers import SAMPLER_NAMES

MAX_IMAGES = 8  # images per call, the same for every back end
MAX_SEED = 2**63 - 1 - MAX_IMAGES  # image i of a call uses seed + i, which must stay a 64-bit seed


def is_whole(value: Any) -> bool:
    """An int (numpy ints too), not a bool."""
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def check_pose(pose: Any) -> None:
    """A `Pose` with at least one visible keypoint."""
    if not isinstance(pose, Pose):
        raise InputError("The pose must be a models.pose.Pose.")
    if not pose.visible.any():
        raise InputError("The pose has no visible keypoint to draw.")


def check_seed(seed: Any) -> None:
    """A whole number from 0 to MAX_SEED."""
    if not is_whole(seed) or not 0 <= int(seed) <= MAX_SEED:
        raise InputError(f"The seed must be a whole number from 0 to {MAX_SEED}.")


def check_steps(steps: Any, max_steps: int) -> None:
    """A whole number of sampler steps from 1 to `max_steps`."""
    if not is_whole(steps) or not 1 <= steps <= max_steps:
        raise InputError(f"The number of steps must be a whole number from 1 to {max_steps}.")


def check_guidance(guidance: Any, max_guidance: float | None) -> None:
    """A finite number from 0 to `max_guidance`; with `max_guidance` None, None or any finite number."""
    if max_guidance is None:  # the fork has no unconditional branch: its guidance is ignored, not bounded
        if guidance is not None and (not isinstance(guidance, (int, float)) or not math.isfinite(guidance)):
            raise InputError("The guidance scale must be a number.")
    elif not isinstance(guidance, (int, float)) or not math.isfinite(guidance) or not 0 <= guidance <= max_guidance:
        raise InputError(f"The guidance scale must be a number from 0 to {max_guidance:g}.")


def check_sampler(sampler: Any) -> None:
    """One of `SAMPLER_NAMES`."""
    if sampler not in SAMPLER_NAMES:
        raise InputError(f"Unknown sampler {sampler!r}; choose one of {', '.join(SAMPLER_NAMES)}.")


def check_eta(eta: Any) -> None:
    """A number from 0 to 1."""
    if not isinstance(eta, (int, float)) or not math.isfinite(eta) or not 0 <= eta <= 1:
        raise InputError("eta must be a number from 0 to 1.")


def check_count(n: Any) -> None:
    """A whole number of images from 1 to MAX_IMAGES."""
    if not is_whole(n) or not 1 <= n <= MAX_IMAGES:
        raise InputError(f"The number of images must be from 1 to {MAX_IMAGES}.")


def check_size(size: Any, size_multiple: int, native_size: int) -> None:
    """A whole multiple of `size_multiple` from `size_multiple` to 4 x `native_size` pixels."""
    if not is_whole(size) or size % size_multiple or not size_multiple <= size <= 4 * native_size:
        raise InputError(
            f"The image size must be a multiple of {size_multiple} "
            f"up to {4 * native_size} pixels (the model draws {native_size})."
        )


def check_common(
    pose: Any,
    seed: Any,
    steps: Any,
    guidance: Any,
    sampler: Any,
    eta: Any,
    n: Any,
    *,
    max_steps: int,
    max_guidance: float | None,
) -> None:
    """The checks every back end runs first, in this order (then `check_size` and its own)."""
    check_pose(pose)
    check_seed(seed)
    check_steps(steps, max_steps)
    check_guidance(guidance, max_guidance)
    check_sampler(sampler)
    check_eta(eta)
    check_count(n)
