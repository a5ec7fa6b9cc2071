"""Style edits: move s along SeFa / GANSpace directions and re-render from the same noise and pose.

    images, edited = edit(pipe, state, {("sefa", 0): 2.0, ("ganspace", 3): -1.5})
    images, edited = edit(pipe, state, {("sefa", 0): 2.0}, step_range=(0, 5))   # only the first 5 steps

s' = s + sum_i amount_i * scale_i * v_i (amounts in standard deviations of s, `models.directions`).
`step_range=(start, end)` uses s' only at sampler steps start <= i < end and the original s
elsewhere: the analogue of GANSpace's layer range (early steps set the coarse layout and colours,
late steps the details). Amounts are absolute: pass the unedited state each time a slider moves.
The same state, amounts and range always give the same pixels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from PIL import Image

from models.backend import GenerationState
from models.directions import DEFAULT_K, Directions, EditKey, apply_amounts, check_amount, directions_for
from models.errors import InputError


def resolve_directions(
    pipeline: Any, amounts: Mapping[EditKey, float], directions: Mapping[str, Directions] | None = None
) -> dict[str, Directions]:
    """The directions each edited method needs: those given, else the model's (`directions_for`)."""
    out = dict(directions or {})
    for method, _ in amounts:
        if method not in out:
            out[method] = directions_for(pipeline, method, DEFAULT_K)
    return out


def check_step_range(step_range: tuple[int, int] | None, steps: int) -> tuple[int, int] | None:
    """`(start, end)` with 0 <= start < end <= steps, or None (every step)."""
    if step_range is None:
        return None
    try:
        start, end = (int(v) for v in step_range)
    except (TypeError, ValueError):
        raise InputError("The step range must be two whole numbers (start, end).") from None
    if not 0 <= start < end <= steps:
        raise InputError(f"The step range must satisfy 0 <= start < end <= {steps} (the sampler's steps).")
    return start, end


def style_schedule(
    base: np.ndarray, edited: np.ndarray, step_range: tuple[int, int] | None
) -> Callable[[int], np.ndarray] | None:
    """`style_at(step)` for `PosePipeline.render`: the edited s inside the range, the base s outside (None: all)."""
    if step_range is None:
        return None
    start, end = step_range
    return lambda step: edited if start <= step < end else base


def edit_record(
    amounts: Mapping[EditKey, float],
    directions: Mapping[str, Directions],
    step_range: tuple[int, int] | None,
    base_style: np.ndarray,
    messages: list[str] | None = None,
) -> dict[str, Any]:
    """Plain-JSON description of an edit (kept in the state's settings, the PNG metadata and the CLI line)."""
    record: dict[str, Any] = {
        "edits": [
            {"method": m, "index": int(i), "amount": float(a), "label": directions[m].label(int(i))}
            for (m, i), a in amounts.items()
        ],
        "step_range": list(step_range) if step_range is not None else None,
    }
    if step_range is not None:  # outside the range the original s is used: keep it to re-render
        record["base_style"] = [float(v) for v in np.asarray(base_style, dtype=np.float32)]
    if messages:
        record["messages"] = list(messages)
    return record


def edit(
    pipeline: Any,
    state: GenerationState,
    amounts: Mapping[EditKey, float],
    directions: Mapping[str, Directions] | None = None,
    step_range: tuple[int, int] | None = None,
    callback: Any = None,
    messages: list[str] | None = None,
    render: Callable[..., tuple[list[Image.Image], GenerationState]] | None = None,
) -> tuple[list[Image.Image], GenerationState]:
    """Re-render `state` with s moved along directions (`{(method, index): amount}`); returns images and new state.

    The new state carries s' and `settings["edit"]` (the edits, the step range, the original s), so
    `rerender(pipeline, new_state)` reproduces it; with no step range `pipeline.render(new_state)` does too.
    `render` renders the new state instead of `pipeline.render` (a `models.batching.Batcher`'s, so that edits share
    the UNet's batches with generate requests).
    """
    # 1. Check inputs: methods, indices, finite amounts (clamped to +-MAX_SIGMA, noted in `messages`).
    dirs = resolve_directions(pipeline, amounts, directions)
    notes = messages if messages is not None else []
    clean = {(m, int(i)): check_amount(m, i, a, len(dirs[m]), notes) for (m, i), a in amounts.items()}
    steps = int(state.settings["steps"])
    step_range = check_step_range(step_range, steps)
    # 2. s' = s + sum amount * scale * v.
    base = np.asarray(state.style, dtype=np.float32)
    edited = apply_amounts(base, clean, dirs)
    new_state = state.with_style(edited)
    if clean or step_range is not None:
        new_state.settings["edit"] = edit_record(clean, dirs, step_range, base, notes)
    # 3. Re-render from the same z_T and pose; outside the step range the original s is used.
    schedule = style_schedule(base, edited, step_range)
    render = render or pipeline.render
    if schedule is None:  # every step uses s': the plain render (back ends without `style_at` work too)
        return render(new_state, callback)
    return render(new_state, callback, style_at=schedule)


def rerender(pipeline: Any, state: GenerationState, callback: Any = None) -> tuple[list[Image.Image], GenerationState]:
    """Render a state made by `edit`, honouring its step range (any other state renders as usual)."""
    record = state.settings.get("edit") or {}
    step_range = record.get("step_range")
    if not step_range:
        return pipeline.render(state, callback)
    base = np.asarray(record["base_style"], dtype=np.float32)
    edited = np.asarray(state.style, dtype=np.float32)
    return pipeline.render(state, callback, style_at=style_schedule(base, edited, tuple(step_range)))


def generate_edited(
    pipeline: Any,
    pose: Any,
    seed: int,
    amounts: Mapping[EditKey, float],
    steps: int = 20,
    guidance: float = 2.0,
    sampler: str = "dpmpp_2m",
    eta: float = 0.0,
    num_images: int = 1,
    size: int | None = None,
    step_range: tuple[int, int] | None = None,
    messages: list[str] | None = None,
    style: Any = None,
) -> tuple[list[Image.Image], list[GenerationState]]:
    """`pipeline(...)` with edits applied to each image's own s (image i: seed + i; `style`: this s for every
    image), rendering each image once."""
    # 1. Check inputs (the pipeline's own checks, then the edits').
    size = pipeline.native_size if size is None else size
    pipeline.check_inputs(
        pose=pose, seed=seed, steps=steps, guidance=guidance, sampler=sampler, style=style, eta=eta,
        num_images=num_images, size=size,
    )  # fmt: skip
    dirs = resolve_directions(pipeline, amounts)
    notes = messages if messages is not None else []
    clean = {(m, int(i)): check_amount(m, i, a, len(dirs[m]), notes) for (m, i), a in amounts.items()}
    images: list[Image.Image] = []
    states: list[GenerationState] = []
    for i in range(num_images):
        # 2. z_T and s from the image's seed, 3. edit s and render (every image's record keeps the notes).
        state = pipeline.prepare(
            pose=pose, seed=int(seed) + i, steps=steps, guidance=float(guidance), sampler=sampler, style=style,
            eta=float(eta), size=size,
        )  # fmt: skip
        image, done = edit(pipeline, state, clean, dirs, step_range, messages=list(notes))
        images += image
        states.append(done)
    return images, states
