"""The Refine tab: CLIP moves the current result (picked in the Generate tab) towards a prompt while
keeping its pose; the image of every optimisation step streams, before and after side by side.

    python -m ui.app_refine --model fake      # this tab alone, starting from a first generated image
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr

from models import paths
from ui import handlers, settings
from ui.outputs import served

MODE_CHOICES = [
    ("The look: the character's style code (hair, outfit, colours; the whole picture may change)", "style"),
    ("The pixels: repaint only the part the prompt names, the rest stays", "latent"),
    ("Both: the look first, then the pixels", "both"),
]
# The refinement's own defaults per mode (models.refine.DEFAULTS; "both" = 3 style + 6 latent steps).
DEFAULT_STEPS = {"style": 4, "latent": 8, "both": 9}
DEFAULT_POSE_WEIGHT = {"style": 0.0, "latent": 1.0, "both": 1.0}  # as models.refine.DEFAULTS: pixels move in latent


@dataclass
class RefineTab:
    """The components the app wires to the other tabs."""

    before: gr.Image
    after: gr.Image
    refined: gr.State


def build(pipeline_loader: Callable[[], Any], current: gr.State, clip: Any = None, status: str = "") -> RefineTab:
    """Lay out the Refine tab in the current Blocks; it follows `current` (the current result's `handlers.Result`)."""
    if status:
        gr.Markdown(status, elem_id="clip-status")
    refined = gr.State(None)  # the refined result (handlers.Result), until it is made the current one
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=280):
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
            run = gr.Button("Refine", variant="primary", elem_id="refine-btn")
        with gr.Column(scale=2, min_width=360):
            steps_row = gr.Gallery(
                label="Optimisation steps",
                columns=handlers.MAX_PREVIEWS,
                rows=1,
                height=150,
                allow_preview=False,
                format="png",
                object_fit="contain",
                elem_id="refine-steps",
            )
            with gr.Row():
                before = gr.Image(
                    label="Before (the current result)", format="png", interactive=False, height=320, elem_id="before"
                )
                after = gr.Image(label="After", format="png", interactive=False, height=320, elem_id="after")
            notes = gr.Markdown(elem_id="refine-notes")
            files = gr.File(
                label="Download: the PNG with its settings, and refine.json",
                file_count="multiple",
                elem_id="refine-downloads",
            )
            use = gr.Button("Make the refined image the current result", size="md")

    mode.change(
        lambda m: (gr.update(value=DEFAULT_STEPS.get(m, 4)), gr.update(value=DEFAULT_POSE_WEIGHT.get(m, 0.0))),
        mode,
        [steps, pose_weight],
        api_visibility="private",
        queue=False,
    )
    run.click(
        served(handlers.refine_handler(pipeline_loader, clip)),
        [current, prompt, negative, mode, steps, strength, pose_weight],
        [steps_row, after, files, refined, notes],
        api_visibility="private",
        concurrency_id="generate",
        concurrency_limit=settings.CONCURRENCY,
    )
    use.click(handlers.use_result, refined, current, api_visibility="private", queue=False)
    current.change(
        served(handlers.refine_show),
        current,
        [before, after, steps_row, files, refined, notes],
        api_visibility="private",
        queue=False,
    )

    # The `refine` endpoint for API clients: a state's JSON instead of the current result, and inputs of its
    # own without bounds or choices, so a value out of range gets the handler's sentence naming the field.
    with gr.Group(visible=False):
        state_text = gr.Textbox(label="state JSON (GenerationState.to_dict())")
        api_prompt = gr.Textbox(label="prompt")
        api_negative = gr.Textbox(label="negative prompt")
        api_mode = gr.Dropdown(list(settings.REFINE_MODES), value="latent", label="mode", allow_custom_value=True)
        api_steps = gr.Number(label="steps", value=DEFAULT_STEPS["latent"])
        api_strength = gr.Number(label="strength", value=1.0)
        api_pose_weight = gr.Number(label="pose weight", value=DEFAULT_POSE_WEIGHT["latent"])
        image = gr.Image(label="refined image (the latest step while it runs)", format="png")
        state_out = gr.JSON(label="refined state")
        api_notes = gr.Textbox(label="notes")
        api_button = gr.Button("refine")
    api_button.click(
        served(handlers.refine_api_handler(pipeline_loader, clip)),
        [state_text, api_prompt, api_negative, api_mode, api_steps, api_strength, api_pose_weight],
        [image, files, state_out, api_notes],
        api_name="refine",
        concurrency_id="generate",
    )
    return RefineTab(before=before, after=after, refined=refined)


def create_demo(pipeline_loader: Callable[[], Any], clip: Any = None, status: str = "") -> gr.Blocks:
    """This tab as an app of its own, starting from a first generated image."""
    with gr.Blocks(title="Pose Studio: refine") as demo:
        current = gr.State(None)
        build(pipeline_loader, current, clip, status)
        demo.load(handlers.first_result_handler(pipeline_loader), None, current, api_visibility="private")
    return demo


if __name__ == "__main__":
    import argparse

    from ui.loader import LazyPipeline

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(paths.WEIGHTS))
    parser.add_argument("--device", default=None)
    parser.add_argument("--clip", default=None)
    args = parser.parse_args()
    loader = LazyPipeline(args.model, args.device)
    demo = create_demo(loader, args.clip, handlers.clip_status(args.model, args.clip))
    demo.queue(default_concurrency_limit=settings.CONCURRENCY, max_size=settings.QUEUE_SIZE).launch()
