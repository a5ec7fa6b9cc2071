"""The Generate tab: the current pose (from the Pose tab) + seed and sampler settings (+ a picture whose
character's look to take) -> characters.
The denoising row streams while the sampler runs; results come as PNGs whose text chunk holds the
settings, plus a JSON that reproduces the run.

    python -m ui.app_generate --model fake     # this tab alone (fake: no weights needed)
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr
from PIL import Image

from models import paths
from models.backend import check_finite
from models.errors import NO_FAST, InputError
from models.pose import Pose
from ui import settings
from ui.common import (
    MAX_PREVIEWS,
    Result,
    default_value,
    downloads,
    generation_batcher,
    load_photo,
    log,
    model_drawing,
    model_pose,
    photo_input,
    pose_from_text,
    pose_from_value,
    state_dict,
    state_record,
    steps_row,
    stream_calls,
    user_errors,
    write_outputs,
)
from ui.settings import served


def build(
    pipeline_loader: Callable[[], Any], pose_state: gr.State, model_status: str = "", result: gr.State | None = None
) -> gr.Image:
    """Lay out the Generate tab in the current Blocks; the pose comes from `pose_state`; returns its pose image.

    Each result keeps its state (`ui.common.Result`); the first of a run, or the one clicked in the gallery,
    becomes `result`, the current result that Refine and Explore start from."""
    result = result if result is not None else gr.State(None)
    results = gr.State([])  # a Result per gallery image, in the gallery's order
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
            seed, randomize, steps, sampler, guidance, num_images = _settings()
            run = gr.Button("Generate", variant="primary", elem_id="generate-btn")
        with gr.Column(scale=2, min_width=360):
            previews = steps_row("Denoising", "denoising")
            gallery = gr.Gallery(
                label="Results (click one to refine or explore it)",
                columns=4,
                height="auto",
                preview=False,
                format="png",
                object_fit="contain",
                elem_id="results",
            )
            files = downloads("PNGs with their settings, and generation.json", "downloads")

    fn = served(generate_handler(pipeline_loader))
    outputs = [previews, gallery, files, seed, results, result]
    run.click(
        fn,
        [pose_state, seed, randomize, steps, sampler, guidance, num_images, look],
        outputs,
        api_visibility="private",
        concurrency_id="generate",
        concurrency_limit=settings.GENERATE_WORKERS,  # the batcher (models.batching) runs one batch at a time
    )
    gallery.select(select_result, results, result, api_visibility="private", queue=False)

    _api_endpoint(pipeline_loader, gallery, files, seed)
    return current


def _settings() -> tuple[gr.Number, gr.Checkbox, gr.Slider, gr.Dropdown, gr.Slider, gr.Slider]:
    """The generation settings: seed, random seed, steps, sampler, pose guidance, images."""
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
    return seed, randomize, steps, sampler, guidance, num_images


def _api_endpoint(pipeline_loader: Callable[[], Any], gallery: gr.Gallery, files: gr.File, seed: gr.Number) -> None:
    """The stateless `generate` endpoint for API clients, on hidden inputs beside the tab's outputs.

    The pose itself (keypoint JSON text or a preset name), then the settings; the seed given is the seed used. Its
    inputs have no bounds or choices of their own, so a value out of range gets the handler's sentence naming the
    field, not Gradio's."""
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
        api_fast = gr.Checkbox(label="fast: draw with the few-step student (1 to 4 steps), when the model has one")
        preview = gr.Image(label="latest denoising preview", format="png")
        states = gr.JSON(label="each image's state (the refine and edit endpoints take one back)")
        api_button = gr.Button("generate")
    api_fn = served(generate_handler(pipeline_loader, api=True))
    api_button.click(
        api_fn,
        [api_pose, api_seed, api_steps, api_sampler, api_guidance, api_num_images, api_look, api_fast],
        [preview, gallery, files, seed, states],
        api_name="generate",
        concurrency_id="generate",  # one pool with the button's: Gradio keeps the lowest limit of a shared id
        concurrency_limit=settings.GENERATE_WORKERS,
    )


def create_demo(pipeline_loader: Callable[[], Any], model_status: str = "") -> gr.Blocks:
    """This tab as an app of its own, starting from the default pose."""
    with gr.Blocks(title="Pose Studio: generate") as demo:
        pose_state = gr.State(default_value())
        current = build(pipeline_loader, pose_state, model_status)
        demo.load(served(model_drawing), pose_state, current, api_visibility="private", queue=False)
    return demo


# -- handlers ---------------------------------------------------------------------------------------
def run_streaming(pipe: Callable, pose: Pose, kwargs: dict[str, Any]) -> Iterator[tuple]:
    """Run `pipe` in a thread, yielding ("step", i, n, preview) per callback, then ("done", images, states)."""
    for item in stream_calls(lambda callback: pipe(pose, callback=callback, **kwargs)):
        yield item if item[0] == "step" else ("done", *item[1])


def generate(
    pipeline_loader: Callable[[], Any],
    pose_value: Any,
    seed: Any,
    randomize: bool,
    steps: Any,
    sampler: Any,
    guidance: Any,
    num_images: Any,
    progress: gr.Progress | None = None,
    style_image: Any = None,
    fast: Any = False,
) -> Iterator[tuple]:
    """Yield (previews, gallery, files, seed, results) while the pipeline runs; the last yield has the
    results (`Result`s: image, state, record, aligned with the gallery), earlier ones gr.skip(). `style_image`
    (an uploaded picture's path): every image takes the look of the character in it (`look_from_picture`);
    `fast`: drawn by the model's few-step student (`check_fast`)."""
    # 1. Check inputs (before loading anything).
    if randomize:
        seed = random.randint(0, settings.MAX_SEED)
    args = settings.check_generation(seed, steps, guidance, sampler, num_images)
    pose = model_pose(pose_value if isinstance(pose_value, Pose) else pose_from_value(pose_value))
    # 2. The one pipeline of this process.
    if progress is not None:
        progress(0, desc="loading the model")
    pipe = pipeline_loader()
    if check_fast(pipe, fast):
        args["fast"] = True
    if style_image is not None:
        if progress is not None:
            progress(0, desc="reading the look from the picture")
        args["style"] = look_from_picture(pipe, style_image)
    # 3. Denoise through the model's batcher (requests with the same settings share a UNet batch), streaming previews.
    previews: list[tuple[Image.Image, str]] = []
    started = time.perf_counter()
    for item in run_streaming(generation_batcher(pipe), pose, args):
        if item[0] == "step":
            _, step, total, preview = item
            if progress is not None:
                progress((step, total), desc="denoising")
            if preview is not None:  # a pipeline may skip previews on some steps
                previews = [*previews, (preview, f"step {step}/{total}")][-MAX_PREVIEWS:]
                yield previews, gr.skip(), gr.skip(), args["seed"], gr.skip()
        else:
            _, images, states = item
    seconds = time.perf_counter() - started
    check_finite(states)
    # 4. Files: PNGs with their settings, and a JSON that reproduces them.
    request = {"pose": pose.to_dict(), **args}  # with the style read off a picture, when one was given
    base = {"pose": pose.to_dict(), "steps": args["steps"], "guidance": args["guidance"], "sampler": args["sampler"]}
    records = [
        state_record(state, {**base, "seed": getattr(state, "seed", args["seed"] + i)})
        for i, state in enumerate(states)
    ]
    files = write_outputs(images, records, request)
    log.info("generated %d image(s) in %.2f s", len(images), seconds)
    captions = [f"seed {r['seed']}" for r in records]
    results = [Result(image, state, record) for image, state, record in zip(images, states, records)]
    yield previews, list(zip(images, captions)), files, args["seed"], results


def check_fast(pipe: Any, fast: Any) -> bool:
    """Whether to draw with the few-step student: `fast` must be a yes or no, and the model must have one (a back
    end without the option would not know the keyword; the student's step limit is the pipeline's to check)."""
    from models.backends import capabilities

    if fast in (None, False, 0, "false", "False", ""):
        return False
    if fast not in (True, 1, "true", "True"):
        raise InputError(f"fast must be true or false; got {fast!r}.")
    if "fast" not in capabilities(pipe):
        raise InputError(NO_FAST)
    return True


def look_from_picture(pipe: Any, file: Any) -> list[float]:
    """The style code of the character in an uploaded picture (`PosePipeline.style_from_image`), as `style=`."""
    if not callable(getattr(pipe, "style_from_image", None)):
        raise InputError("This model has no style code, so it cannot take a look from a picture.")
    return [float(v) for v in pipe.style_from_image(load_photo(file))]


def generate_handler(pipeline_loader: Callable[[], Any], api: bool = False) -> Callable:
    """The generate event's function, bound to the process's pipeline loader.

    UI: (pose, seed, randomize, steps, sampler, guidance, num_images, style image) -> yields (previews, gallery,
    files, seed, results, current result). `api`: the stateless endpoint, (pose, seed, steps, sampler, guidance,
    num_images, style_image, fast) with the pose as keypoint JSON text or a preset name and the seed used as given -> yields
    (latest preview, gallery, files, seed, the states as JSON), one preview image instead of the row (API
    clients download every streamed file, so a growing row costs them a second a step).
    """
    if api:

        @user_errors
        def run_api(
            pose,
            seed,
            steps,
            sampler,
            guidance,
            num_images,
            style_image=None,
            fast=False,
            progress=gr.Progress(),  # noqa: B008
        ):
            if not isinstance(pose, str):
                raise InputError("The pose must be keypoint JSON text or a preset name.")
            for previews, gallery, files, seed_out, results in generate(
                pipeline_loader, pose_from_text(pose), seed, False, steps, sampler, guidance, num_images, progress,
                style_image, fast,
            ):  # fmt: skip
                states = [state_dict(r.state) for r in results] if isinstance(results, list) else gr.skip()
                yield (previews[-1][0] if previews else None), gallery, files, seed_out, states

        return run_api

    @user_errors
    def run(
        pose_value,
        seed,
        randomize,
        steps,
        sampler,
        guidance,
        num_images,
        style_image=None,
        progress=gr.Progress(),  # noqa: B008
    ):
        for previews, gallery, files, seed_out, results in generate(
            pipeline_loader, pose_value, seed, randomize, steps, sampler, guidance, num_images, progress, style_image
        ):
            done = isinstance(results, list)
            yield previews, gallery, files, seed_out, results, (results[0] if done and results else gr.skip())

    return run


def select_result(results: list[Result] | None, evt: gr.SelectData) -> Result:
    """The gallery's clicked result becomes the current one."""
    index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    if not results or not isinstance(index, int) or not 0 <= index < len(results):
        return gr.skip()
    return results[index]


if __name__ == "__main__":
    import argparse

    from ui.settings import LazyPipeline

    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=str(paths.WEIGHTS))
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    loader = LazyPipeline(args.model, args.device)
    demo = create_demo(loader, loader.status())
    demo.queue(default_concurrency_limit=settings.CONCURRENCY, max_size=settings.QUEUE_SIZE).launch()
