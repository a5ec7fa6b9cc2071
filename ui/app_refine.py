"""The Refine tab: CLIP moves the current result (picked in the Generate tab) towards a prompt while
keeping its pose; the image of every optimisation step streams, before and after side by side.

    python -m ui.app_refine --model fake      # this tab alone, starting from a first generated image
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from models import paths
from models.backend import check_finite
from models.errors import InputError
from models.refine_settings import DEFAULTS as REFINE_DEFAULTS
from models.refine_settings import REFINE_MODES, prompt_terms, stage_settings
from ui import settings
from ui.common import (
    MAX_PREVIEWS,
    NO_RESULT,
    Result,
    downloads,
    first_result_handler,
    log,
    model_ops,
    notes_markdown,
    side_by_side,
    state_dict,
    state_from_json,
    state_record,
    steps_row,
    stream_calls,
    use_result,
    user_errors,
    write_outputs,
)
from ui.settings import served

MODE_CHOICES = [
    ("The look: the character's style code (hair, outfit, colours; the whole picture may change)", "style"),
    ("The pixels: repaint only the part the prompt names, the rest stays", "latent"),
    ("Both: the look first, then the pixels", "both"),
]
# The refinement's own defaults per mode (`models.refine.stage_settings`): its steps in all, and its pose weight.
_STAGES = {m: [s for _, s in stage_settings(m, None, None, None)] for m in REFINE_MODES}
DEFAULT_STEPS = {m: sum(s.steps for s in stages) for m, stages in _STAGES.items()}
DEFAULT_POSE_WEIGHT = {m: max(s.pose_weight for s in stages) for m, stages in _STAGES.items()}


@dataclass
class RefineTab:
    """The components the app wires to the other tabs."""

    before: gr.Image
    after: gr.Image
    refined: gr.State


def build(pipeline_loader: Callable[[], Any], current: gr.State, clip: Any = None, status: str = "") -> RefineTab:
    """Lay out the Refine tab in the current Blocks; it follows `current` (the current result's `ui.common.Result`)."""
    if status:
        gr.Markdown(status, elem_id="clip-status")
    refined = gr.State(None)  # the refined result (a `Result`), until it is made the current one
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=280):
            prompt, negative, mode, steps, strength, pose_weight = _controls()
            run = gr.Button("Refine", variant="primary", elem_id="refine-btn")
        with gr.Column(scale=2, min_width=360):
            optimisation = steps_row("Optimisation steps", "refine-steps")
            before, after = side_by_side("Before (the current result)", "After", "after", before_id="before")
            notes = gr.Markdown(elem_id="refine-notes")
            files = downloads("the PNG with its settings, and refine.json", "refine-downloads")
            use = gr.Button("Make the refined image the current result", size="md")

    mode.change(
        lambda m: (gr.update(value=DEFAULT_STEPS.get(m, 4)), gr.update(value=DEFAULT_POSE_WEIGHT.get(m, 0.0))),
        mode,
        [steps, pose_weight],
        api_visibility="private",
        queue=False,
    )
    run.click(
        served(refine_handler(pipeline_loader, clip)),
        [current, prompt, negative, mode, steps, strength, pose_weight],
        [optimisation, after, files, refined, notes],
        api_visibility="private",
        concurrency_id="generate",
        concurrency_limit=settings.CONCURRENCY,
    )
    use.click(use_result, refined, current, api_visibility="private", queue=False)
    current.change(
        served(refine_show),
        current,
        [before, after, optimisation, files, refined, notes],
        api_visibility="private",
        queue=False,
    )

    _api_endpoint(pipeline_loader, clip, files)
    return RefineTab(before=before, after=after, refined=refined)


def _controls() -> tuple[gr.Textbox, gr.Textbox, gr.Radio, gr.Slider, gr.Slider, gr.Slider]:
    """The refinement's inputs: prompt, negative prompt, what moves, steps, strength, pose weight."""
    prompt = gr.Textbox(
        label="Prompt",
        placeholder="pink hair | sailor uniform:0.5",
        info=f"Parts separated by '|'; a weight after ':' (negative pushes away). Up to {settings.MAX_PROMPT_CHARS} characters.",
        elem_id="refine-prompt",
    )
    negative = gr.Textbox(
        label="Negative prompt",
        placeholder="glasses",
        elem_id="refine-negative",
    )
    mode = gr.Radio(MODE_CHOICES, value="latent", label="What moves")
    steps = gr.Slider(1, settings.MAX_REFINE_STEPS, value=DEFAULT_STEPS["latent"], step=1, label="Steps")
    strength = gr.Slider(
        0.1,
        settings.MAX_REFINE_STRENGTH,
        value=1.0,
        step=0.1,
        label="Strength",
        info="Multiplies the mode's step size.",
    )
    pose_weight = gr.Slider(
        0.0,
        settings.MAX_POSE_WEIGHT,
        value=DEFAULT_POSE_WEIGHT["latent"],
        step=0.5,
        label="Keep the pose",
        info="Weight of the keypoint detector's pose term (0: off, fastest).",
    )
    return prompt, negative, mode, steps, strength, pose_weight


def _api_endpoint(pipeline_loader: Callable[[], Any], clip: Any, files: gr.File) -> None:
    """The `refine` endpoint for API clients: a state's JSON instead of the current result, and inputs of its own
    without bounds or choices, so a value out of range gets the handler's sentence naming the field."""
    with gr.Group(visible=False):
        state_text = gr.Textbox(label="state JSON (GenerationState.to_dict())")
        api_prompt = gr.Textbox(label="prompt")
        api_negative = gr.Textbox(label="negative prompt")
        api_mode = gr.Dropdown(list(REFINE_MODES), value="latent", label="mode", allow_custom_value=True)
        api_steps = gr.Number(label="steps", value=DEFAULT_STEPS["latent"])
        api_strength = gr.Number(label="strength", value=1.0)
        api_pose_weight = gr.Number(label="pose weight", value=DEFAULT_POSE_WEIGHT["latent"])
        image = gr.Image(label="refined image (the latest step while it runs)", format="png")
        state_out = gr.JSON(label="refined state")
        api_notes = gr.Textbox(label="notes")
        api_button = gr.Button("refine")
    api_button.click(
        served(refine_api_handler(pipeline_loader, clip)),
        [state_text, api_prompt, api_negative, api_mode, api_steps, api_strength, api_pose_weight],
        [image, files, state_out, api_notes],
        api_name="refine",
        concurrency_id="generate",
    )


def create_demo(pipeline_loader: Callable[[], Any], clip: Any = None, status: str = "") -> gr.Blocks:
    """This tab as an app of its own, starting from a first generated image."""
    with gr.Blocks(title="Pose Studio: refine") as demo:
        current = gr.State(None)
        build(pipeline_loader, current, clip, status)
        demo.load(first_result_handler(pipeline_loader), None, current, api_visibility="private")
    return demo


# -- handlers ---------------------------------------------------------------------------------------
def clip_status(model: str, clip: str | None) -> str:
    """One line for the Refine tab: empty when a CLIP looks loadable, else what is missing."""
    if model == "fake":
        return "**Demo mode**: the refinement only recolours the background (`--model fake`)."
    spec = (clip or "").strip()
    if not spec:
        from models.clip import DEFAULT_CLIP

        spec = str(DEFAULT_CLIP)
    path = Path(spec)
    looks_like_path = path.is_absolute() or spec.startswith(".") or path.exists() or ":" not in spec
    if looks_like_path and not (path.is_dir() and any(path.iterdir())):
        return (
            f"**No CLIP model**: `{spec}` is missing, so Refine cannot run yet (start the app with "
            "`--clip FOLDER` or `--clip NAME:TAG`). Generate and Explore work."
        )
    return ""


def refine_plan(mode: str, steps: int, strength: float) -> list[tuple[str, int, float]]:
    """The stages (mode, steps, lr): "both" is style for a third of the steps, then latent for the rest.

    `strength` multiplies each stage's default step size (`models.refine.DEFAULTS`; the two differ three-fold)."""
    if mode != "both":
        return [(mode, steps, strength * REFINE_DEFAULTS[mode].lr)]
    first = max(1, round(steps / 3))
    return [
        ("style", first, strength * REFINE_DEFAULTS["style"].lr),
        ("latent", max(1, steps - first), strength * REFINE_DEFAULTS["latent"].lr),
    ]


def refine(
    pipeline_loader: Callable[[], Any],
    clip: Any,
    source: Result | None,
    prompt: Any,
    negative_prompt: Any,
    mode: Any,
    steps: Any,
    strength: Any,
    pose_weight: Any,
    progress: gr.Progress | None = None,
    state_text: Any = None,
) -> Iterator[tuple]:
    """Yield (intermediate images, after, files, refined Result, notes); streaming yields carry gr.skip().

    `source` is the current result; API calls give `state_text` (a state's JSON) instead."""
    # 1. Check inputs (before loading anything).
    if source is None and state_text is None:
        raise InputError(NO_RESULT)
    prompt, negative_prompt, args = check_refine_request(prompt, negative_prompt, mode, steps, strength, pose_weight)
    # 2. The model, its refinement, and the state to start from.
    if progress is not None:
        progress(0, desc="loading the model")
    pipe = pipeline_loader()
    ops = model_ops(pipe)
    needs = {"style": {"refine_style"}, "latent": {"refine_latent"}, "both": {"refine_style", "refine_latent"}}
    if not needs[args["mode"]] <= ops.capabilities:
        raise InputError(f"This model does not offer the '{args['mode']}' refinement.")
    if source is None:
        state = state_from_json(pipe, state_text)
        source = Result(None, state, state_record(state, {}))
    stages = refine_plan(args["mode"], args["steps"], args["strength"])
    total = sum(n for _, n, _ in stages)

    # 3. Refine stage by stage, streaming the image of every optimisation step.
    def work(callback: Callable) -> list:
        state, done, runs = source.state, 0, []
        for stage, n, lr in stages:

            def on_step(i: int, _total: int, image: Any, offset: int = done) -> None:
                callback(offset + i, total, image)

            run = ops.refine(
                pipe, state, prompt, negative_prompt, mode=stage, steps=n, lr=lr,
                pose_weight=args["pose_weight"], clip=clip, callback=on_step,
            )  # fmt: skip
            runs.append(run)
            state, done = run.state, done + n
        return runs

    shown: list[tuple[Image.Image, str]] = []
    started = time.perf_counter()
    if progress is not None:
        progress(0, desc="preparing the refinement (CLIP loads on first use)")
    for item in stream_calls(work):
        if item[0] == "step":
            _, step, n, image = item
            if progress is not None:
                progress((step, n), desc="refining")
            if image is not None:
                shown = [*shown, (image, f"step {step}/{n}")][-MAX_PREVIEWS:]
                yield shown, gr.skip(), gr.skip(), gr.skip(), gr.skip()
        else:
            runs = item[1]
    seconds = time.perf_counter() - started
    # 4. The refined result, its PNG and the JSON that reproduces it.
    settings_used = {
        "prompt": prompt, "negative_prompt": negative_prompt, **args,
        "stages": [{"mode": m, "steps": n, "lr": round(lr, 6)} for m, n, lr in stages],
    }  # fmt: skip
    after, files, result, note = refined_outputs(pipe, source, runs, settings_used, seconds)
    yield shown, after, files, result, note


def check_refine_request(
    prompt: Any, negative_prompt: Any, mode: Any, steps: Any, strength: Any, pose_weight: Any
) -> tuple[str, str, dict[str, Any]]:
    """The checked prompt, negative prompt and settings of a refinement, or InputError with one sentence."""
    prompt = settings.check_text(prompt, "The prompt")
    negative_prompt = settings.check_text(negative_prompt, "The negative prompt")
    args = settings.check_refine(mode, steps, strength, pose_weight)
    notes: list[str] = []
    if not prompt_terms(prompt, negative_prompt, notes):  # also words a bad weight ("a:xx")
        raise InputError(
            notes[-1] if notes else "Write a prompt to refine towards, e.g. 'pink hair | sailor uniform:0.5'."
        )
    return prompt, negative_prompt, args


def refined_outputs(
    pipe: Any, source: Result, runs: list[Any], settings_used: dict[str, Any], seconds: float
) -> tuple[Image.Image, list[str], Result, str]:
    """(after image, files, refined Result, notes) of the stages' `runs`: the PNG with its settings and refine.json."""
    final = runs[-1]
    check_finite([final.state])
    after = final.images[-1] if final.images else source.image
    if after is None:
        after = pipe.render(final.state)[0][0]
    messages = [m for run in runs for m in run.messages]
    record = {
        **state_record(final.state, {}),
        "refine": {**settings_used, "messages": messages, "source": source.record},
    }
    files = write_outputs([after], [record], {"refine": settings_used, "source": source.record}, "refine.json")
    total = sum(stage["steps"] for stage in settings_used["stages"])
    log.info("refined (%s, %d steps) in %.2f s", settings_used["mode"], total, seconds)
    note = notes_markdown([f"Refined in {seconds:.1f} s ({total} steps, {settings_used['mode']} mode).", *messages])
    return after, files, Result(after, final.state, record), note


def refine_handler(pipeline_loader: Callable[[], Any], clip: Any = None) -> Callable:
    """The Refine tab's event: (current result, prompt, negative, mode, steps, strength, pose weight) -> outputs."""

    @user_errors
    def run(current, prompt, negative_prompt, mode, steps, strength, pose_weight, progress=gr.Progress()):  # noqa: B008
        yield from refine(
            pipeline_loader, clip, current, prompt, negative_prompt, mode, steps, strength, pose_weight, progress
        )

    return run


def refine_api_handler(pipeline_loader: Callable[[], Any], clip: Any = None) -> Callable:
    """The `refine` endpoint: a state's JSON instead of the current result; yields (image, files, state, notes)."""

    @user_errors
    def run(state_text, prompt, negative_prompt, mode, steps, strength, pose_weight, progress=gr.Progress()):  # noqa: B008
        if not (state_text or "").strip():
            raise InputError(
                "Give the state JSON of a generated image (from the generate endpoint or a result's JSON)."
            )
        for shown, after, files, result, note in refine(
            pipeline_loader, clip, None, prompt, negative_prompt, mode, steps, strength, pose_weight, progress,
            state_text=state_text,
        ):  # fmt: skip
            if isinstance(result, Result):
                yield after, files, state_dict(result.state), note
            else:
                yield (shown[-1][0] if shown else None), gr.skip(), gr.skip(), gr.skip()

    return run


@user_errors
def refine_show(current: Result | None) -> tuple:
    """A new current result in the Refine tab: (before, after, intermediates, files, refined, notes) reset."""
    before = current.image if current is not None else None
    return before, None, [], None, None, ""


if __name__ == "__main__":
    import argparse

    from ui.settings import LazyPipeline

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(paths.WEIGHTS))
    parser.add_argument("--device", default=None)
    parser.add_argument("--clip", default=None)
    args = parser.parse_args()
    loader = LazyPipeline(args.model, args.device)
    demo = create_demo(loader, args.clip, clip_status(args.model, args.clip))
    demo.queue(default_concurrency_limit=settings.CONCURRENCY, max_size=settings.QUEUE_SIZE).launch()
