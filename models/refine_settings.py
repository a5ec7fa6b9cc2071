"""The refinement's knobs, limits and defaults, and their checks: torch-free, so that the UI (which shows the defaults
at start-up, before any model loads) and `models.refine` (which runs them) read the same values."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

import numpy as np

from models.errors import InputError

RefineMode = Literal["style", "latent", "both"]
REFINE_MODES: tuple[str, ...] = get_args(RefineMode)

MAX_REFINE_STEPS = 100
MAX_LR = 1.0
MAX_POSE_WEIGHT = 100.0

# Style mode: the deterministic DDIM steps from z_T that the gradient flows through.
STYLE_DDIM_STEPS = 4


@dataclass(frozen=True)
class RefineSettings:
    """The knobs of one refinement stage; defaults are sized for about 10 s on 2 CPU cores (128 px)."""

    steps: int  # normalised gradient descent steps
    lr: float  # step size: the RMS per coordinate of a step (s and z_0 both have unit prior scale)
    pose_weight: float  # weight of the detector's heatmap loss against the input pose
    cutouts: int  # CLIP views per step: the whole image, then random augmented crops
    tether: float  # weight of mean((x - x_start)^2) on the optimised variable
    # Latent mode, for a prompt that names no region: a k x k offset, upsampled bilinearly onto z_0, which can only
    # make smooth (colour-region) changes, not pixel-wise ones.
    offset_grid: int = 16
    # Weight of the colour-contrast term: a colour prompt ("pink hair") as CLIP's zero-shot classifier against the
    # same prompt in every other colour ("red hair", "blue hair", ...; `models.prompts.colour_alternatives`).
    contrast: float = 0.0
    # Latent mode: before the gradient steps, each colour prompt's region is recoloured to the decoder-gamut colour
    # CLIP scores best (`models.recolour`); this many candidates are projected into z_0 and decoded (0: off).
    colour_search: int = 0
    # Latent mode: weight of mean((1 - m) (x - x_start)^2) over the decoded pixels x outside the named regions m.
    # The decoder's group norms see the whole latent, so a region's change also tints the rest of the picture.
    keep_outside: float = 0.0


# Chosen by `python -m training.eval refine` sweeps; what was tried, the figures and the decisions: docs/EXPERIMENTS.md.
DEFAULTS: dict[str, RefineSettings] = {
    "style": RefineSettings(steps=4, lr=0.3, pose_weight=0.0, cutouts=2, tether=0.0),
    "latent": RefineSettings(
        steps=8,
        lr=0.1,
        pose_weight=1.0,
        cutouts=4,
        tether=0.1,
        offset_grid=16,
        contrast=3.0,
        colour_search=4,
        keep_outside=300.0,
    ),
}
# "both" runs each stage with fewer steps so the pair stays within the same time.
BOTH_STEPS = {"style": 3, "latent": 6}


# -- checks -----------------------------------------------------------------------------------------
def _check_number(name: str, value: Any, lo: float, hi: float, lo_open: bool = False) -> float:
    """`value` as a float within `[lo, hi]` (`(lo, hi]` when `lo_open`), else InputError."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = math.isfinite(value) and (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        bracket = "(" if lo_open else "["
        raise InputError(f"The refinement {name} must be a number in {bracket}{lo:g}, {hi:g}].")
    return value


def check_refine_inputs(mode: Any, steps: Any, lr: Any, pose_weight: Any) -> None:
    """Raise InputError with one sentence for a refinement setting out of range."""
    if mode not in REFINE_MODES:
        raise InputError(f"Unknown refine mode {mode!r}; choose one of {', '.join(REFINE_MODES)}.")
    if steps is not None and (
        isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= MAX_REFINE_STEPS
    ):
        raise InputError(f"The number of refine steps must be a whole number from 1 to {MAX_REFINE_STEPS}.")
    if lr is not None:
        _check_number("learning rate", lr, 0.0, MAX_LR, lo_open=True)
    if pose_weight is not None:
        _check_number("pose weight", pose_weight, 0.0, MAX_POSE_WEIGHT)


def stage_settings(
    mode: str, steps: int | None, lr: float | None, pose_weight: float | None
) -> list[tuple[str, RefineSettings]]:
    """The stages a mode runs ("both": style then latent), the given values overriding the defaults."""
    stages = ["style", "latent"] if mode == "both" else [mode]
    out = []
    for stage in stages:
        base = DEFAULTS[stage]
        n = steps if steps is not None else (BOTH_STEPS[stage] if mode == "both" else base.steps)
        given = {"steps": int(n), "lr": lr, "pose_weight": pose_weight}
        out.append((stage, replace(base, **{k: v for k, v in given.items() if v is not None})))
    return out
