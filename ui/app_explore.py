"""The Explore tab: the current result's style code s moves along the model's top SeFa or GANSpace
directions, one slider each (amounts in standard deviations, +-3), with their automatic labels.
While a slider moves, the model's few-step student redraws the edit (the newest value only; stale frames are
dropped); releasing it re-renders the current image with the full model, from its own noise and pose; a step range
limits the edit to some sampler steps (early steps set the layout and colours, late ones details).

    python -m ui.app_explore --model fake      # this tab alone, starting from a first generated image
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr
from PIL import Image

from models import paths
from models.backend import GenerationState, check_finite
from models.directions import MAX_SIGMA, METHODS
from models.errors import InputError
from ui import settings
from ui.common import (
    NO_RESULT,
    Result,
    downloads,
    first_result_handler,
    generation_batcher,
    model_ops,
    notes_markdown,
    side_by_side,
    state_dict,
    state_from_json,
    state_record,
    use_result,
    user_errors,
    write_outputs,
)
from ui.settings import served

METHOD_NAMES = {"ganspace": "GANSpace", "sefa": "SeFa"}
# the capabilities that draw a slider's frame quicker than the full picture (`preview_state`): a student, or a draft
QUICK = frozenset({"fast", "upscale"})


@dataclass
class ExploreTab:
    """The components the app wires to the other tabs."""

    method: gr.Radio
    sliders: list[gr.Slider]
    edited: gr.State


def build(pipeline_loader: Callable[[], Any], current: gr.State) -> ExploreTab:
    """Lay out the Explore tab in the current Blocks; it follows `current` (the current result's `ui.common.Result`)."""
    edited = gr.State(None)  # the edited result (a `Result`), until it is made the current one
    status = gr.Markdown(
        "Generate an image first (Generate tab): its style code then moves along the directions below.",
        elem_id="explore-status",
    )
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=300):
            method = gr.Radio(
                [(METHOD_NAMES[m], m) for m in METHODS],
                value="sefa",
                label="Directions",
                info="SeFa: the ways the style layer stretches the look most. GANSpace: the ways the pictures vary most.",
                elem_id="explore-method",
            )
            sliders = [
                gr.Slider(
                    -MAX_SIGMA,
                    MAX_SIGMA,
                    value=0,
                    step=0.1,
                    label=f"direction {i}",
                    elem_id=f"direction-{i}",
                )
                for i in range(settings.NUM_DIRECTIONS)
            ]
            with gr.Row():
                start = gr.Slider(0, settings.MAX_STEPS - 1, value=0, step=1, label="Edit from step", min_width=120)
                end = gr.Slider(1, settings.MAX_STEPS, value=settings.MAX_STEPS, step=1, label="to step", min_width=120)
            reset = gr.Button("Reset", size="md", elem_id="explore-reset")
        with gr.Column(scale=2, min_width=360):
            original, image = side_by_side("Current result", "Edited", "edited")
            notes = gr.Markdown(elem_id="explore-notes")
            files = downloads("the PNG with its settings, and edit.json", "explore-downloads")
            use = gr.Button("Make the edited image the current result", size="md")

    setup = served(explore_setup_handler(pipeline_loader))
    setup_outputs = [status, method, *sliders, start, end, original, image, files, edited]
    for trigger in (current.change, method.input, reset.click):
        trigger(setup, [current, method], setup_outputs, api_visibility="private", concurrency_id="explore-setup")
    _wire_sliders(pipeline_loader, [current, method, start, end, *sliders], [image, files, edited, notes])
    use.click(use_result, edited, current, api_visibility="private", queue=False)

    # The `edit` endpoint for API clients: a state's JSON and edits written as the CLI's --edit.
    with gr.Group(visible=False):
        state_text = gr.Textbox(label="state JSON (GenerationState.to_dict())")
        edits = gr.Textbox(label="edits, e.g. 'sefa:0=2 ganspace:3=-1.5' (standard deviations, +-3)")
        first = gr.Number(label="first edited step", value=0)
        last = gr.Number(label="end of the edited steps (0: the last step)", value=0)
        api_image = gr.Image(label="edited image", format="png")
        state_out = gr.JSON(label="edited state")
        api_notes = gr.Textbox(label="notes")
        api_button = gr.Button("edit")
    api_button.click(
        served(edit_api_handler(pipeline_loader)),
        [state_text, edits, first, last],
        [api_image, files, state_out, api_notes],
        api_name="edit",
        concurrency_id="generate",
    )
    return ExploreTab(method=method, sliders=sliders, edited=edited)


def _wire_sliders(pipeline_loader: Callable[[], Any], inputs: list, outputs: list) -> None:
    """While a slider moves, the student's frames (the newest only); on `.release` one full re-render, which cancels
    any frame still waiting so that it cannot land on top of the final image. `inputs`: the current result, the
    method, the step range and the sliders; `outputs`: the edited image, files, result and notes."""
    current, method, start, end, *sliders = inputs
    image, _, _, notes = outputs
    preview = served(explore_preview_handler(pipeline_loader))
    previews = [
        control.input(
            preview,
            [current, method, *sliders],
            [image, notes],
            api_visibility="private",
            trigger_mode="always_last",
            show_progress="hidden",
            concurrency_id="preview",
            concurrency_limit=settings.CONCURRENCY,
        )
        for control in sliders
    ]
    render = served(explore_render_handler(pipeline_loader))
    for control in (*sliders, start, end):
        control.release(
            render, inputs, outputs, api_visibility="private", concurrency_id="generate",
            concurrency_limit=settings.CONCURRENCY, trigger_mode="always_last", cancels=previews,
        )  # fmt: skip


def create_demo(pipeline_loader: Callable[[], Any]) -> gr.Blocks:
    """This tab as an app of its own, starting from a first generated image."""
    with gr.Blocks(title="Pose Studio: explore") as demo:
        current = gr.State(None)
        build(pipeline_loader, current)
        demo.load(first_result_handler(pipeline_loader), None, current, api_visibility="private")
    return demo


# -- handlers ---------------------------------------------------------------------------------------
def offered_methods(pipe: Any) -> list[str]:
    """The direction methods the loaded back end offers, in the UI's order."""
    caps = model_ops(pipe).capabilities
    return [m for m in METHODS if m in caps]


def explore_setup_handler(pipeline_loader: Callable[[], Any]) -> Callable:
    """Explore's reset (a new current result, a method change, Reset): status, method, sliders, step range, images."""

    @user_errors
    def setup(current: Result | None, method: Any) -> tuple:
        k = settings.NUM_DIRECTIONS
        if current is None:
            status = "Generate an image first (Generate tab): its style code then moves along the directions below."
            return (
                status,
                gr.skip(),
                *[gr.update(value=0) for _ in range(k)],
                gr.skip(),
                gr.skip(),
                None,
                None,
                None,
                None,
            )
        pipe = pipeline_loader()
        methods = offered_methods(pipe)
        if not methods:
            status = "This model has no style code, so it offers no SeFa or GANSpace directions."
            hidden = [gr.update(visible=False, value=0) for _ in range(k)]
            return (
                status,
                gr.update(choices=[]),
                *hidden,
                gr.skip(),
                gr.skip(),
                current.image,
                current.image,
                None,
                None,
            )
        method = method if method in methods else methods[0]
        dirs = model_ops(pipe).directions_for(pipe, method, k)
        sliders = [
            gr.update(
                visible=True, value=0, label=f"{i}: {dirs.label(i)}",
                info=f"{100 * float(dirs.explained[i]):.1f}% of the {'eigenvalue sum' if method == 'sefa' else 'variance'}",
            )
            if i < len(dirs) else gr.update(visible=False, value=0)
            for i in range(k)
        ]  # fmt: skip
        steps = int(current.state.settings["steps"])
        moving = "; while it moves, a quick preview follows it" if QUICK & set(model_ops(pipe).capabilities) else ""
        status = (
            f"This model offers {' and '.join(METHOD_NAMES[m] for m in methods)}. Letting go of a slider re-renders "
            f"the current result (seed {current.state.seed}) from its own noise{moving}."
        )
        choices = [(METHOD_NAMES[m], m) for m in methods]
        return (
            status,
            gr.update(choices=choices, value=method),
            *sliders,
            gr.update(maximum=max(steps - 1, 1), value=0),
            gr.update(maximum=steps, value=steps),
            current.image,
            current.image,
            None,
            None,
        )

    return setup


def check_amounts(method: str, amounts: Any) -> dict[tuple[str, int], float]:
    """Slider values -> `{(method, index): amount}` for the non-zero ones, each within +-MAX_SIGMA."""
    out = {}
    for i, amount in enumerate(amounts):
        value = settings.check_float(amount, f"Slider {i}", -MAX_SIGMA, MAX_SIGMA)
        if value:
            out[(method, i)] = value
    return out


def edit_result(
    pipe: Any, source: Result, amounts: dict[tuple[str, int], float], step_range: tuple[int, int] | None
) -> tuple[Image.Image, list[str], Result, list[str]]:
    """Re-render the source with s moved: (image, files, edited Result, notes)."""
    ops = model_ops(pipe)
    methods = offered_methods(pipe)
    for method, _ in amounts:
        if method not in methods:
            raise InputError(f"This model does not offer {METHOD_NAMES.get(method, method)} directions.")
    dirs = {m: ops.directions_for(pipe, m, settings.NUM_DIRECTIONS) for m in {m for m, _ in amounts}}
    notes: list[str] = []
    # through the model's batcher: an edit's re-render shares the UNet's batches with generate requests, in their turn
    render = generation_batcher(pipe).render
    images, state = ops.edit(pipe, source.state, amounts, dirs, step_range, messages=notes, render=render)
    check_finite([state])
    record = state_record(state, {})
    request = {"edit": (state.settings or {}).get("edit"), "source": source.record}
    files = write_outputs(images[:1], [record], request, "edit.json")
    return images[0], files, Result(images[0], state, record), notes


def step_range_of_fields(start: Any, end: Any, steps: int) -> tuple[int, int] | None:
    """The Explore fields' (start, end) of the edited sampler steps, None for every step; `end` 0 means the last step."""
    start = settings.check_int(start, "The first edited step", 0, max(steps - 1, 0))
    end = settings.check_int(end, "The end of the edited steps", 0, steps) or steps
    if start >= end:
        raise InputError(f"The edited steps must start before they end; got {start} to {end}.")
    return None if (start, end) == (0, steps) else (start, end)


def explore_render_handler(pipeline_loader: Callable[[], Any]) -> Callable:
    """A slider released: re-render the current result with every slider's amount (edited image, files, result, notes)."""

    @user_errors
    def render(current: Result | None, method: Any, start: Any, end: Any, *amounts: Any, progress=gr.Progress()):  # noqa: B008
        if current is None:
            raise InputError(NO_RESULT)
        if method not in METHODS:
            raise InputError(f"The method must be one of {', '.join(METHODS)}; got {method!r}.")
        clean = check_amounts(method, amounts)
        step_range = step_range_of_fields(start, end, int(current.state.settings["steps"]))
        if not clean and step_range is None:
            return current.image, None, None, ""
        progress(0, desc="re-rendering")
        started = time.perf_counter()
        image, files, result, notes = edit_result(pipeline_loader(), current, clean, step_range)
        return image, files, result, notes_markdown([f"Re-rendered in {time.perf_counter() - started:.2f} s.", *notes])

    return render


def preview_state(state: GenerationState, offered: Any = ("fast",)) -> GenerationState:
    """The same image (pose, noise, s) as a slider's frame while it moves: drawn by the few-step student when the
    model has one (`offered`: its capabilities), else as a draft (the full model without its upscale pass)."""
    from models.samplers import DEFAULT_FAST_STEPS

    quick = {"fast": True, "steps": DEFAULT_FAST_STEPS} if "fast" in offered else {"draft": True}
    return dataclasses.replace(
        state, settings={k: v for k, v in state.settings.items() if k != "edit"} | quick, z_0=None
    )


def explore_preview_handler(pipeline_loader: Callable[[], Any]) -> Callable:
    """A slider moving: the current result with every slider's amount, drawn quickly (`preview_state`: the model's
    few-step student, or a draft without its upscale pass) -> (image, note); nothing changes when there is no result
    or the model has neither. A refused value says why in the note: an error box on every frame would be noise."""

    def preview(current: Result | None, method: Any, *amounts: Any) -> tuple[Any, Any]:
        if current is None or method not in METHODS:
            return gr.skip(), gr.skip()
        try:
            pipe = pipeline_loader()
            ops = model_ops(pipe)
            if not QUICK & set(ops.capabilities):  # no quicker way to draw it than on release
                return gr.skip(), gr.skip()
            clean = check_amounts(method, amounts)
            dirs = {method: ops.directions_for(pipe, method, settings.NUM_DIRECTIONS)}
            started = time.perf_counter()
            images, _ = ops.edit(
                pipe,
                preview_state(current.state, ops.capabilities),
                clean,
                dirs,
                render=generation_batcher(pipe).render,
            )
        except InputError as err:
            return gr.skip(), notes_markdown([str(err)])
        seconds = time.perf_counter() - started
        return images[0], notes_markdown([f"Preview ({seconds:.2f} s); the full picture is drawn when you let go."])

    return preview


def edit_api_handler(pipeline_loader: Callable[[], Any]) -> Callable:
    """The `edit` endpoint: (state JSON, "sefa:0=2 ganspace:3=-1.5", first step, end step) -> (image, files, state, notes)."""
    import re

    @user_errors
    def run(state_text: Any, edits: Any, start: Any, end: Any, progress=gr.Progress()):  # noqa: B008
        from models.directions import parse_edits

        if not (state_text or "").strip():
            raise InputError(
                "Give the state JSON of a generated image (from the generate endpoint or a result's JSON)."
            )
        text = settings.check_text(edits, "The edits")
        amounts, notes = parse_edits([t for t in re.split(r"[,;\s]+", text) if t], settings.NUM_DIRECTIONS)
        pipe = pipeline_loader()
        state = state_from_json(pipe, state_text)
        step_range = step_range_of_fields(start, end, int(state.settings["steps"]))
        progress(0, desc="re-rendering")
        source = Result(None, state, state_record(state, {}))
        image, files, result, more = edit_result(pipe, source, amounts, step_range)
        return image, files, state_dict(result.state), notes_markdown([*notes, *more])

    return run


if __name__ == "__main__":
    import argparse

    from ui.settings import LazyPipeline

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(paths.WEIGHTS))
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    demo = create_demo(LazyPipeline(args.model, args.device))
    demo.queue(default_concurrency_limit=settings.CONCURRENCY, max_size=settings.QUEUE_SIZE).launch()
