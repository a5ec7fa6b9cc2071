"""The Generate tab: the current pose (from the Pose tab) + seed and sampler settings (+ a picture whose
character's look to take) -> characters.
The denoising row streams while the sampler runs; results come as PNGs whose text chunk holds the
settings, plus a JSON that reproduces the run.

    python -m ui.app_generate --model fake     # this tab alone (fake: no weights needed)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from models import paths
from ui import handlers, settings
from ui.app_pose import photo_input
from ui.outputs import served


def build(
    pipeline_loader: Callable[[], Any], pose_state: gr.State, model_status: str = "", result: gr.State | None = None
) -> gr.Image:
    """Lay out the Generate tab in the current Blocks; the pose comes from `pose_state`; returns its pose image.

    Each result keeps its state (`handlers.Result`); the first of a run, or the one clicked in the gallery,
    becomes `result`, the current result that Refine and Explore start from."""
    result = result if result is not None else gr.State(None)
    results = gr.State([])  # handlers.Result per gallery image, in the gallery's order
    if model_status:
        gr.Markdown(model_status, elem_id="model-status")
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=260):
            current = gr.Image(
                label="Pose (from the Pose tab)", format="png", interactive=False, height=240, elem_id="current-pose"
            )
            look = photo_input(
                label="Look from a picture (optional): the character in it, drawn in this pose",
                sources=["upload", "clipboard"],
                height=160,
                elem_id="style-image",
            )
            with gr.Row():
                # No minimum / maximum here: the handler checks the range and names the field.
                seed = gr.Number(label="Seed", value=0, min_width=100)
                randomize = gr.Checkbox(label="Random seed", value=True, min_width=100)
            steps = gr.Slider(1, settings.MAX_STEPS, value=settings.DEFAULT_STEPS, step=1, label="Steps")
            sampler = gr.Dropdown(list(settings.SAMPLERS), value=settings.SAMPLERS[0], label="Sampler")
            guidance = gr.Slider(
                settings.MIN_GUIDANCE,
                settings.MAX_GUIDANCE,
                value=settings.DEFAULT_GUIDANCE,
                step=0.1,
                label="Pose guidance",
            )
            num_images = gr.Slider(
                1,
                settings.MAX_NUM_IMAGES,
                value=1,
                step=1,
                label="Images",
                info=f"steps × images at most {settings.MAX_IMAGE_STEPS}",
            )
            run = gr.Button("Generate", variant="primary", elem_id="generate-btn")
        with gr.Column(scale=2, min_width=360):
            previews = gr.Gallery(
                label="Denoising",
                columns=handlers.MAX_PREVIEWS,
                rows=1,
                height=150,
                allow_preview=False,
                format="png",
                object_fit="contain",
                elem_id="denoising",
            )
            gallery = gr.Gallery(
                label="Results (click one to refine or explore it)",
                columns=4,
                height="auto",
                preview=False,
                format="png",
                object_fit="contain",
                elem_id="results",
            )
            files = gr.File(
                label="Download: PNGs with their settings, and generation.json",
                file_count="multiple",
                elem_id="downloads",
            )

    fn = served(handlers.generate_handler(pipeline_loader))
    outputs = [previews, gallery, files, seed, results, result]
    run.click(
        fn,
        [pose_state, seed, randomize, steps, sampler, guidance, num_images, look],
        outputs,
        api_visibility="private",
        concurrency_id="generate",
        concurrency_limit=settings.GENERATE_WORKERS,  # the batcher (models.batching) runs one batch at a time
    )
    gallery.select(handlers.select_result, results, result, api_visibility="private", queue=False)

    # The stateless `generate` endpoint for API clients: the pose itself (keypoint JSON text or a preset
    # name), then the settings; the seed given is the seed used. Its inputs have no bounds or choices of
    # their own, so a value out of range gets the handler's sentence naming the field, not Gradio's.
    with gr.Group(visible=False):
        api_pose = gr.Textbox(label="pose: keypoint JSON text (any accepted format) or a preset name")
        api_seed = gr.Number(label="seed", value=0)
        api_steps = gr.Number(label="steps", value=settings.DEFAULT_STEPS)
        api_sampler = gr.Dropdown(
            list(settings.SAMPLERS), value=settings.SAMPLERS[0], label="sampler", allow_custom_value=True
        )
        api_guidance = gr.Number(label="guidance", value=settings.DEFAULT_GUIDANCE)
        api_num_images = gr.Number(label="num_images", value=1)
        api_look = photo_input(label="style_image: a picture whose character's look every image takes (optional)")
        preview = gr.Image(label="latest denoising preview", format="png")
        states = gr.JSON(label="each image's state (the refine and edit endpoints take one back)")
        api_button = gr.Button("generate")
    api_fn = served(handlers.generate_handler(pipeline_loader, api=True))
    api_button.click(
        api_fn,
        [api_pose, api_seed, api_steps, api_sampler, api_guidance, api_num_images, api_look],
        [preview, gallery, files, seed, states],
        api_name="generate",
        concurrency_id="generate",  # one pool with the button's: Gradio keeps the lowest limit of a shared id
        concurrency_limit=settings.GENERATE_WORKERS,
    )
    return current


def create_demo(pipeline_loader: Callable[[], Any], model_status: str = "") -> gr.Blocks:
    """This tab as an app of its own, starting from the default pose."""
    with gr.Blocks(title="Pose Studio: generate") as demo:
        pose_state = gr.State(handlers.default_value())
        current = build(pipeline_loader, pose_state, model_status)
        demo.load(served(handlers.model_drawing), pose_state, current, api_visibility="private", queue=False)
    return demo


if __name__ == "__main__":
    import argparse

    from ui.loader import LazyPipeline

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(paths.WEIGHTS))
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    loader = LazyPipeline(args.model, args.device)
    demo = create_demo(loader, loader.status())
    demo.queue(default_concurrency_limit=settings.CONCURRENCY, max_size=settings.QUEUE_SIZE).launch()
