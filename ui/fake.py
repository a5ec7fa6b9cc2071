"""A stand-in model for UI tests, load benchmarks and demos without weights: its "generation" is the
OpenPose drawing of the pose on a background whose colour is the first three numbers of the style
code s; `callback` is called every step. Style directions recolour that background and "refinement"
moves it towards a colour picked by the prompt, so the Refine and Explore tabs work end to end.

    python app.py --model fake
    POSE_STUDIO_FAKE_STEP_SECONDS=0.05 python app.py --model fake     # slower, for load tests
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from models.backend import (
    DEFAULT_SAMPLER,
    Capabilities,
    GenerationState,
    check_pose,
    check_sampler,
    check_style_code,
    generate,
    state_settings,
)
from models.errors import NO_FIGURE, InputError
from models.pose import Pose
from models.refine_settings import DEFAULTS as REFINE_DEFAULTS
from models.refine_settings import REFINE_MODES, prompt_terms

STYLE_DIM = 8
# as PosePipeline's with a few-step student: a style code, both direction methods, both refinement modes, `fast`
CAPABILITIES = Capabilities(
    max_steps=200, max_guidance=20.0, style_code=True, directions=("sefa", "ganspace"), refine=("style", "latent"),
    fast=True,
)  # fmt: skip
CHANNELS = ("red", "green", "blue")


class FakePipeline:
    """Same call, `prepare` and `render` as `models.pipeline.PosePipeline`; draws instead of denoising."""

    CAPABILITIES = CAPABILITIES
    style_dim = STYLE_DIM
    native_size = 128

    @property
    def own_ops(self) -> tuple[Callable, Callable, Callable]:
        """This module's refine, edit and directions (`ui.common.model_ops`), which draw as this stand-in does."""
        return refine, edit, directions_for

    def __init__(self, size: int = 128, step_seconds: float | None = None) -> None:
        self.size = size
        self.native_size = size
        if step_seconds is None:
            step_seconds = float(os.getenv("POSE_STUDIO_FAKE_STEP_SECONDS", "0") or 0)
        self.step_seconds = step_seconds  # simulated work per step (benchmarks)

    def check_inputs(
        self,
        pose: Pose,
        seed: int,
        steps: int,
        guidance: float,
        sampler: str,
        style: Any = None,
        eta: float = 0.0,
        num_images: int = 1,
        size: int | None = None,
        *,
        fast: bool = False,
    ) -> None:
        """Raise InputError for what PosePipeline also refuses (PosePipeline's signature)."""
        if fast and steps > 4:
            raise InputError(f"The fast generator takes 1 to 4 steps; got {steps}.")
        check_pose(pose)
        check_sampler(sampler)
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= 200:
            raise InputError("The number of steps must be a whole number from 1 to 200.")
        check_style_code(style, STYLE_DIM)

    def prepare(
        self,
        pose: Pose,
        seed: int,
        steps: int = 10,
        guidance: float = 2.0,
        sampler: str = DEFAULT_SAMPLER,
        style: Any = None,
        eta: float = 0.0,
        size: int | None = None,
        *,
        fast: bool = False,
    ) -> Any:
        """The state of one image before "sampling": s from the seed unless given (`fast` is recorded)."""
        import torch

        s = np.random.default_rng(int(seed)).standard_normal(STYLE_DIM).astype(np.float32)
        if style is not None:
            s = np.asarray(style, dtype=np.float32).copy()
        z_T = torch.randn((1, 1, 4, 4), generator=torch.Generator("cpu").manual_seed(int(seed)))
        settings = state_settings(steps, guidance, sampler, eta, size or self.size, **({"fast": True} if fast else {}))
        return GenerationState(pose=pose, seed=int(seed), style=s, z_T=z_T, settings=settings)

    def draw(self, pose: Pose, style: np.ndarray) -> Image.Image:
        """The pose drawing on a background coloured by s[:3]."""
        from models.condition import openpose_drawing

        base = np.asarray(openpose_drawing(pose, self.size, self.size), dtype=np.float32)
        tint = np.clip(110 + 45 * np.asarray(style[:3], dtype=np.float32), 0, 255)
        return Image.fromarray(np.clip(base + tint * (base.sum(axis=2, keepdims=True) == 0), 0, 255).astype(np.uint8))

    def style_from_image(self, image: Image.Image) -> np.ndarray:
        """`draw`'s inverse: s[:3] from the picture's corner colour (a one-colour picture has no figure), the rest 0."""
        arr = np.asarray(image.convert("RGB"), dtype=np.float32)
        if float(arr.std()) < 1.0:
            raise InputError(NO_FIGURE)
        s = np.zeros(STYLE_DIM, dtype=np.float32)
        s[:3] = (arr[0, 0] - 110) / 45
        return s

    def render(self, state: Any, callback: Callable | None = None, style_at: Any = None) -> tuple[list, Any]:
        """(images, state) for a state; `callback(step, total, preview)` every step."""
        steps = int(state.settings["steps"])
        final = self.draw(state.pose, state.style)
        noise = np.random.default_rng(state.seed).uniform(0, 255, (self.size, self.size, 3)).astype(np.float32)
        for step in range(1, steps + 1):
            if self.step_seconds:
                time.sleep(self.step_seconds)
            if callback is not None:
                t = step / steps
                callback(step, steps, Image.fromarray(((1 - t) * noise + t * np.asarray(final)).astype(np.uint8)))
        return [final], state

    def __call__(
        self,
        pose: Pose,
        seed: int,
        steps: int = 20,
        guidance: float = 2.0,
        sampler: str = DEFAULT_SAMPLER,
        style: Any = None,
        eta: float = 0.0,
        num_images: int = 1,
        callback: Any = None,
        size: int | None = None,
        fast: bool = False,
    ):
        """(images, states) for `num_images` seeds starting at `seed`."""
        return generate(
            self, pose=pose, seed=seed, num_images=num_images, callback=callback, steps=steps, guidance=guidance,
            sampler=sampler, style=style, eta=eta, size=size, fast=fast,
        )  # fmt: skip


# -- Explore: directions and edits ------------------------------------------------------------------
def directions_for(pipeline: Any, method: str, k: int = 10) -> Any:
    """Unit directions of s: GANSpace moves one background channel each, SeFa two at once."""
    from models.directions import Directions

    if method not in ("sefa", "ganspace"):
        raise InputError(f"Unknown direction method {method!r}; choose one of sefa, ganspace.")
    k = min(int(k), STYLE_DIM)
    eye = np.eye(STYLE_DIM, dtype=np.float32)
    if method == "ganspace":
        vectors = eye[:k]
        labels = [f"background {CHANNELS[i]}" if i < 3 else f"nothing {i}" for i in range(k)]
    else:
        vectors = np.stack([(eye[i] + eye[(i + 1) % 3 if i < 3 else i]) for i in range(k)])
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        labels = [f"background {CHANNELS[i]} + {CHANNELS[(i + 1) % 3]}" if i < 3 else f"nothing {i}" for i in range(k)]
    explained = np.linspace(0.3, 0.01, k).astype(np.float32)
    return Directions(method, vectors, np.ones(k, np.float32), explained, tuple(labels), options="fake")


def edit(
    pipeline: Any,
    state: Any,
    amounts: Mapping[tuple[str, int], float],
    directions: Mapping[str, Any] | None = None,
    step_range: tuple[int, int] | None = None,
    callback: Any = None,
    messages: list[str] | None = None,
    render: Callable | None = None,
) -> tuple[list[Image.Image], Any]:
    """`models.directions.edit` for the stand-in: s + sum amount * v, re-rendered by `render` (None: the stand-in's own;
    the step range is recorded)."""
    from models.directions import apply_amounts, check_amount, check_step_range, edit_record

    dirs = {m: (directions or {}).get(m) or directions_for(pipeline, m) for m, _ in amounts}
    notes = messages if messages is not None else []
    clean = {(m, int(i)): check_amount(m, i, a, len(dirs[m]), notes) for (m, i), a in amounts.items()}
    step_range = check_step_range(step_range, int(state.settings["steps"]))
    base = np.asarray(state.style, dtype=np.float32)
    new_state = state.with_style(apply_amounts(base, clean, dirs))
    if clean or step_range is not None:
        new_state.settings["edit"] = edit_record(clean, dirs, step_range, base, notes)
    return (render or pipeline.render)(new_state, callback)


# -- Refine ----------------------------------------------------------------------------------------
@dataclass
class FakeRefineResult:
    """What `models.refine.refine` returns."""

    state: Any
    images: list[Image.Image] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    seconds: float = 0.0
    record: dict[str, Any] = field(default_factory=dict)


def prompt_colour(terms: list[tuple[str, float]]) -> np.ndarray:
    """A target s[:3] picked by the weighted prompt (a hash of each text; negative weights push away)."""
    target = np.zeros(3, np.float32)
    for text, weight in terms:
        digest = hashlib.sha256(text.encode("utf-8")).digest()
        target += weight * (np.frombuffer(digest[:3], np.uint8).astype(np.float32) / 255 * 4 - 2)
    return np.clip(target, -2.4, 2.4)


def refine(
    pipeline: Any,
    state: Any,
    prompt: str | None,
    negative_prompt: str | None = None,
    mode: str = "latent",
    steps: int | None = None,
    lr: float | None = None,
    pose_weight: float | None = None,
    clip: Any = None,
    callback: Callable | None = None,
    **_: Any,
) -> FakeRefineResult:
    """`models.refine.refine` for the stand-in: s[:3] moves towards the prompt's colour, one image a step."""
    started = time.perf_counter()
    if mode not in REFINE_MODES:
        raise InputError(f"Unknown refine mode {mode!r}; choose one of {', '.join(REFINE_MODES)}.")
    messages: list[str] = []
    terms = prompt_terms(prompt, negative_prompt, messages)
    steps = int(steps or 4)
    lr = float(lr if lr is not None else REFINE_DEFAULTS.get(mode, REFINE_DEFAULTS["style"]).lr)
    record = {"prompt": prompt or "", "negative_prompt": negative_prompt or "", "mode": mode, "steps": steps}
    if not terms:
        messages = messages or ["The prompt is empty: nothing to refine."]
        return FakeRefineResult(state, [], messages, time.perf_counter() - started, {**record, "messages": messages})
    target = prompt_colour(terms)
    s = np.asarray(state.style, dtype=np.float32).copy()
    images = []
    for step in range(1, steps + 1):
        if getattr(pipeline, "step_seconds", 0):
            time.sleep(pipeline.step_seconds)
        s[:3] += min(1.0, 3 * lr) * (target - s[:3])
        images.append(pipeline.draw(state.pose, s))
        if callback is not None:
            callback(step, steps, images[-1])
    new_state = state.with_style(s)
    images.append(pipeline.draw(state.pose, s))
    record["messages"] = messages
    return FakeRefineResult(new_state, images, messages, time.perf_counter() - started, record)
