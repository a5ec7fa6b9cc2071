"""The Explore tab: the current result's style code s moves along the model's top SeFa or GANSpace
directions, one slider each (amounts in standard deviations, +-3), with their automatic labels.
Releasing a slider re-renders only the current image, from its own noise and pose; a step range
limits the edit to some sampler steps (early steps set the layout and colours, late ones details).

    python -m ui.app_explore --model fake      # this tab alone, starting from a first generated image
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from models import paths
from ui import handlers, settings
from ui.outputs import served


@dataclass
class ExploreTab:
    """The components the app wires to the other tabs."""

    method: gr.Radio
    sliders: list[gr.Slider]
    edited: gr.State


def build(pipeline_loader: Callable[[], Any], current: gr.State) -> ExploreTab:
    """Lay out the Explore tab in the current Blocks; it follows `current` (the current result's `handlers.Result`)."""
    edited = gr.State(None)  # the edited result (handlers.Result), until it is made the current one
    status = gr.Markdown(
        "Generate an image first (Generate tab): its style code then moves along the directions below.",
        elem_id="explore-status",
    )
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=300):
            method = gr.Radio(
                [(handlers.METHOD_NAMES[m], m) for m in settings.DIRECTION_METHODS],
                value="sefa",
                label="Directions",
                info="SeFa: the ways the style layer stretches the look most. GANSpace: the ways the pictures vary most.",
                elem_id="explore-method",
            )
            sliders = [
                gr.Slider(
                    -settings.MAX_SIGMA,
                    settings.MAX_SIGMA,
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
            with gr.Row():
                original = gr.Image(label="Current result", format="png", interactive=False, height=320)
                image = gr.Image(label="Edited", format="png", interactive=False, height=320, elem_id="edited")
            notes = gr.Markdown(elem_id="explore-notes")
            files = gr.File(
                label="Download: the PNG with its settings, and edit.json",
                file_count="multiple",
                elem_id="explore-downloads",
            )
            use = gr.Button("Make the edited image the current result", size="md")

    setup = served(handlers.explore_setup_handler(pipeline_loader))
    setup_outputs = [status, method, *sliders, start, end, original, image, files, edited]
    for trigger in (current.change, method.input, reset.click):
        trigger(setup, [current, method], setup_outputs, api_visibility="private", concurrency_id="explore-setup")
    # `.release`: one re-render per drag, not one per value the slider passes through.
    render = served(handlers.explore_render_handler(pipeline_loader))
    for control in (*sliders, start, end):
        control.release(
            render,
            [current, method, start, end, *sliders],
            [image, files, edited, notes],
            api_visibility="private",
            concurrency_id="generate",
            concurrency_limit=settings.CONCURRENCY,
            trigger_mode="always_last",
        )
    use.click(handlers.use_result, edited, current, api_visibility="private", queue=False)

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
        served(handlers.edit_api_handler(pipeline_loader)),
        [state_text, edits, first, last],
        [api_image, files, state_out, api_notes],
        api_name="edit",
        concurrency_id="generate",
    )
    return ExploreTab(method=method, sliders=sliders, edited=edited)


def create_demo(pipeline_loader: Callable[[], Any]) -> gr.Blocks:
    """This tab as an app of its own, starting from a first generated image."""
    with gr.Blocks(title="Pose Studio: explore") as demo:
        current = gr.State(None)
        build(pipeline_loader, current)
        demo.load(handlers.first_result_handler(pipeline_loader), None, current, api_visibility="private")
    return demo


if __name__ == "__main__":
    import argparse

    from ui.loader import LazyPipeline

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(paths.WEIGHTS))
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    demo = create_demo(LazyPipeline(args.model, args.device))
    demo.queue(default_concurrency_limit=settings.CONCURRENCY, max_size=settings.QUEUE_SIZE).launch()
