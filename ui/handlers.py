"""Pure functions behind the UI events: pose in, pose / pictures / files out. No model math.

Every handler checks the limits in `ui.settings` and turns a user's mistake (`InputError`) into a
`gr.Error` carrying its one sentence (logged as one line); anything unexpected becomes a one-line
`gr.Error` too, naming no exception class or path, and its traceback goes to the server log only.
Handlers return PIL images; the app's wiring (`ui.outputs.served`) turns them into files of their own.
"""

from __future__ import annotations

import base64
import functools
import inspect
import io
import json
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from models.errors import InputError
from models.pose import Pose, fit_to_square, from_dict, loads, mirror
from ui import outputs, settings

log = logging.getLogger("pose_studio.ui")

PNG_KEY = outputs.PNG_KEY  # the PNG text chunk holding the settings (as `python app.py generate` writes)
UNEXPECTED = "Something went wrong on the server; the server log has the details."
PREVIEW_SIDE = 384  # the OpenPose drawing shown next to the editor
BACKGROUND_SIDE = 384  # the photo behind the editor travels with each edit: keep it small
MAX_PREVIEWS = 8  # denoising previews kept in the row

# A plain standing pose, used when no preset module is there and by Reset.
DEFAULT_KEYPOINTS = [
    [0.50, 0.14, 1], [0.52, 0.12, 1], [0.48, 0.12, 1], [0.55, 0.13, 1], [0.45, 0.13, 1],
    [0.60, 0.25, 1], [0.40, 0.25, 1], [0.63, 0.40, 1], [0.37, 0.40, 1], [0.64, 0.54, 1],
    [0.36, 0.54, 1], [0.57, 0.54, 1], [0.43, 0.54, 1], [0.58, 0.71, 1], [0.42, 0.71, 1],
    [0.58, 0.88, 1], [0.42, 0.88, 1],
]  # fmt: skip


# -- error handling --------------------------------------------------------------------------------
class OutputError(InputError):
    """The model's output is unusable (not finite): shown as one sentence like a refusal, logged as a warning."""


def user_errors(fn: Callable) -> Callable:
    """Run `fn`, showing InputError (and any failure) as a one-sentence gr.Error; works for generators."""

    def _convert(err: Exception) -> gr.Error:
        if isinstance(err, gr.Error):
            return err
        if isinstance(err, OutputError):
            log.warning("%s: %s", fn.__name__, err)
            return gr.Error(str(err), print_exception=False)
        if isinstance(err, InputError):
            log.info("refused by %s: %s", fn.__name__, err)  # expected: one line, no traceback
            return gr.Error(str(err), print_exception=False)
        if isinstance(err, RecursionError):  # a structure nested past Python's limit that no check caught
            log.warning("refused by %s: input nested too deeply", fn.__name__)
            return gr.Error("The input is nested too deeply to read.", print_exception=False)
        log.exception("handler %s failed", fn.__name__)
        return gr.Error(UNEXPECTED, print_exception=False)

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from fn(*args, **kwargs)
            except Exception as err:  # noqa: BLE001 - shown as one sentence, logged in full
                raise _convert(err) from None

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001
            raise _convert(err) from None

    return wrapper


# -- pose values (the editor's JSON dict) ---------------------------------------------------------
def default_pose() -> Pose:
    """The pose Reset returns to: the preset 'standing' when it exists, else a built-in one."""
    try:
        from models.presets import list_presets, load_preset

        if "standing" in list_presets():
            return load_preset("standing")
    except (ImportError, InputError):
        pass
    return Pose(DEFAULT_KEYPOINTS, 512, 512)


def default_value() -> dict[str, Any]:
    """The editor's starting value."""
    return default_pose().to_dict()


def editor_value(pose: Pose, background: str | None = None) -> dict[str, Any]:
    """The editor's value for `pose`, with the photo (a data URL) behind it when given."""
    value = pose.to_dict()
    if background:
        value["background"] = background
    return value


def load_json_text(text: str, name: str) -> Any:
    """Keypoint JSON text within the length and nesting limits, parsed as a Pose."""
    settings.check_text(text, name, settings.MAX_JSON_CHARS)
    settings.check_json_depth(text, name)
    return loads(text)


def pose_from_text(text: Any) -> Pose:
    """A keypoint JSON text (any format `models.pose.loads` reads) or a preset name -> Pose."""
    text = (text or "").strip() if isinstance(text, str) else text
    if not isinstance(text, str):
        raise InputError("The pose must be keypoint JSON text or a preset name.")
    if not text:
        raise InputError("Give a pose: keypoint JSON text or a preset name.")
    if text.startswith(("{", "[")):
        return load_json_text(text, "The pose JSON")
    settings.check_text(text, "The preset name")
    return _load_preset(text)


def pose_from_value(value: Any) -> Pose:
    """The Pose held by an editor value (a dict), by pose JSON text or by a preset name."""
    if value is None or value == "":
        raise InputError("There is no pose yet: choose a preset, upload a photo or load a keypoint file.")
    if isinstance(value, str):
        return pose_from_text(value)
    if isinstance(value, dict):
        return from_dict({k: v for k, v in value.items() if k != "background"})
    raise InputError("The pose must be a JSON object.")


def pose_json(pose: Pose) -> str:
    """The pose as JSON text, one keypoint a line, 4 decimals (what the JSON panel shows and Save writes)."""
    d = pose.to_dict()
    points = ",\n".join(f"  [{x:.4f}, {y:.4f}, {v:.4g}]" for x, y, v in d["keypoints"])
    return f'{{"format": "coco17",\n "width": {d["width"]}, "height": {d["height"]},\n "keypoints": [\n{points}\n]}}'


def drawing(pose: Pose, side: int = PREVIEW_SIDE) -> Image.Image:
    """The OpenPose colour drawing of `pose` in its own aspect ratio, longer side `side`."""
    from models.condition import openpose_drawing

    scale = side / max(pose.width, pose.height)
    w, h = max(1, round(pose.width * scale)), max(1, round(pose.height * scale))
    return openpose_drawing(pose, h, w)


@user_errors
def show_pose(value: Any) -> tuple[Image.Image, str]:
    """Editor value -> (OpenPose drawing, pose JSON text)."""
    pose = pose_from_value(value)
    return drawing(pose), pose_json(pose)


def keep_background(old: Any, pose: Pose) -> dict[str, Any]:
    """A new editor value for `pose` that keeps the old value's photo when the frame is the same."""
    bg = old.get("background") if isinstance(old, dict) else None
    same_frame = isinstance(old, dict) and (old.get("width"), old.get("height")) == (pose.width, pose.height)
    return editor_value(pose, bg if same_frame else None)


@user_errors
def mirror_pose(value: Any) -> dict[str, Any]:
    """Mirror the editor's pose left to right (the photo stays as it is)."""
    return keep_background(value, mirror(pose_from_value(value)))


@user_errors
def reset_pose(value: Any) -> dict[str, Any]:
    """Back to the default pose, fitted to the current frame when a photo is behind it."""
    pose = default_pose()
    if isinstance(value, dict) and value.get("background"):
        pose = Pose(pose.keypoints, int(value["width"]), int(value["height"]))
    return keep_background(value, pose)


def preset_names() -> list[str]:
    """The preset names (empty when the preset module is missing)."""
    try:
        from models.presets import list_presets
    except ImportError:
        return []
    return list(list_presets())


@user_errors
def choose_preset(name: str | None, value: Any) -> dict[str, Any]:
    """The preset `name` in the editor (no change when the dropdown is cleared)."""
    if not name:
        return gr.skip()
    settings.check_text(name, "The preset name")
    return keep_background(value, _load_preset(name))


def _load_preset(name: str) -> Pose:
    try:
        from models.presets import load_preset
    except ImportError:
        raise InputError("Presets are not available in this build.") from None
    return load_preset(name)


# -- files in and out -----------------------------------------------------------------------------
def _file_path(file: Any) -> Path:
    path = Path(file if isinstance(file, (str, Path)) else getattr(file, "name", ""))
    if not path.is_file():
        raise InputError("The uploaded file could not be found; please upload it again.")
    settings.check_upload_bytes(path.stat().st_size)
    return path


@user_errors
def load_pose_file(file: Any, value: Any) -> dict[str, Any]:
    """A keypoint JSON file (any format `models.pose.loads` reads) -> the editor's value."""
    if file is None:
        return gr.skip()
    path = _file_path(file)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError("The keypoint file is not UTF-8 text.") from None
    return keep_background(value, load_json_text(text, "The keypoint file"))


@user_errors
def save_pose_file(value: Any, keep: bool = False) -> str:
    """The editor's pose written to a new JSON file for download (`keep`: the page's first value, never swept)."""
    return outputs.save_text(pose_json(pose_from_value(value)), "pose", keep=keep)


def load_photo(file: Any) -> Image.Image:
    """A user's photo (a path, as the upload arrives) as upright RGB, read as the command line reads it:
    the byte limit, then the pixel limit on the header before decoding, then 16-bit and other modes to RGB."""
    from models.image_io import load_image

    if isinstance(file, Image.Image):
        return load_image(file)
    return load_image(_file_path(file))


def background_url(image: Image.Image, side: int = BACKGROUND_SIDE) -> str:
    """A small JPEG data URL of the photo, to lie behind the editor."""
    small = image.copy()
    small.thumbnail((side, side))
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=75)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


@user_errors
def extract_from_photo(file: Any, value: Any, progress: gr.Progress = gr.Progress()) -> tuple:  # noqa: B008
    """Photo -> (skeleton over the photo, editor value with the photo behind it, pose JSON).

    When nobody is found the photo still goes behind the editor (with the current pose stretched to
    its frame) so the person can place the points by hand; a warning says so.
    """
    from models.condition import skeleton_overlay
    from models.extract import NoPersonError, extract_pose

    if file is None:
        return gr.skip(), gr.skip(), gr.skip()
    progress(0.1, desc="reading the photo")
    image = load_photo(file)
    progress(0.4, desc="finding the person")
    try:
        pose = extract_pose(image)
    except NoPersonError as err:
        gr.Warning(f"{err} Place the points on the photo by hand.")
        current = pose_from_value(value) if value else default_pose()
        pose = Pose(current.keypoints, image.width, image.height)
        return image, editor_value(pose, background_url(image)), pose_json(pose)
    pose = Pose(pose.keypoints, image.width, image.height)
    return skeleton_overlay(image, pose), editor_value(pose, background_url(image)), pose_json(pose)


@user_errors
def clear_background(value: Any) -> dict[str, Any]:
    """The same pose without the photo behind it."""
    return editor_value(pose_from_value(value))


# -- the `pose` API endpoint -----------------------------------------------------------------------
@user_errors
def pose_api(image: Any, text: str | None) -> tuple[dict[str, Any], Image.Image]:
    """A photo, or a keypoint JSON text, or a preset name -> (our pose JSON, OpenPose drawing)."""
    if image is not None:
        from models.extract import extract_pose  # mediapipe: seconds to import, so only when needed

        photo = load_photo(image)
        pose = extract_pose(photo)
        pose = Pose(pose.keypoints, photo.width, photo.height)
    elif isinstance(text, str) and text.strip():
        pose = pose_from_text(text)
    else:
        raise InputError("Give a photo, a keypoint JSON or a preset name.")
    return pose.to_dict(), drawing(pose)


# -- generation ------------------------------------------------------------------------------------
def model_pose(pose: Pose) -> Pose:
    """The pose as the model gets it: a non-square frame is fitted into a square one first."""
    if pose.width == pose.height:
        return pose
    return fit_to_square(pose, size=max(pose.width, pose.height))


@user_errors
def model_drawing(value: Any) -> Image.Image:
    """The OpenPose drawing of the pose as the model will get it (square frame)."""
    return drawing(model_pose(pose_from_value(value)))


def stream_calls(work: Callable[[Callable], Any]) -> Iterator[tuple]:
    """Run `work(callback)` in a thread, yielding ("step", i, n, image) per callback, then ("done", its result)."""
    events: queue.Queue = queue.Queue()

    def callback(step: int, total: int, preview: Image.Image | None) -> None:
        events.put(("step", step, total, preview))

    def run() -> None:
        try:
            events.put(("done", work(callback)))
        except BaseException as err:  # noqa: BLE001 - handed to the generator, which raises it
            events.put(("error", err))

    threading.Thread(target=run, name="pose-studio-model", daemon=True).start()
    while True:
        item = events.get()
        if item[0] == "error":
            raise item[1]
        yield item
        if item[0] == "done":
            return


def run_streaming(pipe: Callable, pose: Pose, kwargs: dict[str, Any]) -> Iterator[tuple]:
    """Run `pipe` in a thread, yielding ("step", i, n, preview) per callback, then ("done", images, states)."""
    for item in stream_calls(lambda callback: pipe(pose, callback=callback, **kwargs)):
        yield item if item[0] == "step" else ("done", *item[1])


def state_record(state: Any, fallback: dict[str, Any]) -> dict[str, Any]:
    """The JSON record of one image: the state's own `to_record()` or `to_dict()`, then `fallback`'s other keys."""
    to_record = getattr(state, "to_record", None) or getattr(state, "to_dict", None)
    record = dict(to_record()) if callable(to_record) else {}
    for key, val in fallback.items():
        record.setdefault(key, val)
    return record


def write_outputs(
    images: list[Image.Image],
    records: list[dict[str, Any]],
    request: dict[str, Any],
    json_name: str = "generation.json",
) -> list[str]:
    """New PNG files carrying their record in a text chunk, and one new JSON that reproduces the whole call."""
    paths = [
        outputs.save_png(image, f"pose_studio_{record.get('seed', i)}_{i + 1}", record)
        for i, (image, record) in enumerate(zip(images, records))
    ]
    stem, suffix = Path(json_name).stem, Path(json_name).suffix or ".json"
    return [*paths, outputs.save_text(json.dumps({**request, "images": records}, indent=1), stem, suffix)]


def check_finite(states: list[Any]) -> None:
    """Refuse a result whose final latent is not finite: it would decode to a black image shown as a success."""
    import torch

    for state in states:
        z = getattr(state, "z_0", None)
        if isinstance(z, torch.Tensor) and not bool(torch.isfinite(z).all()):
            raise OutputError(
                "The model's output was not finite numbers, so there is no picture; "
                "try another seed, fewer steps or a smaller guidance."
            )


def generation_batcher(pipe: Any) -> Any:
    """The one micro-batcher (`models.batching`) of a loaded pipeline, with the limits in `ui.settings`."""
    from models.batching import batcher_for

    return batcher_for(
        pipe,
        max_images=settings.BATCH_IMAGES,
        window=settings.BATCH_WINDOW_S,
        max_waiting=settings.MAX_WAITING_IMAGE_STEPS,
    )


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
) -> Iterator[tuple]:
    """Yield (previews, gallery, files, seed, results) while the pipeline runs; the last yield has the
    results (`Result`s: image, state, record, aligned with the gallery), earlier ones gr.skip(). `style_image`
    (an uploaded picture's path): every image takes the look of the character in it (`look_from_picture`)."""
    # 1. Check inputs (before loading anything).
    if randomize:
        seed = random.randint(0, settings.MAX_SEED)
    args = settings.check_generation(seed, steps, guidance, sampler, num_images)
    pose = model_pose(pose_value if isinstance(pose_value, Pose) else pose_from_value(pose_value))
    # 2. The one pipeline of this process.
    if progress is not None:
        progress(0, desc="loading the model")
    pipe = pipeline_loader()
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


def look_from_picture(pipe: Any, file: Any) -> list[float]:
    """The style code of the character in an uploaded picture (`PosePipeline.style_from_image`), as `style=`."""
    if not callable(getattr(pipe, "style_from_image", None)):
        raise InputError("This model has no style code, so it cannot take a look from a picture.")
    return [float(v) for v in pipe.style_from_image(load_photo(file))]


def generate_handler(pipeline_loader: Callable[[], Any], api: bool = False) -> Callable:
    """The generate event's function, bound to the process's pipeline loader.

    UI: (pose, seed, randomize, steps, sampler, guidance, num_images, style image) -> yields (previews, gallery,
    files, seed, results, current result). `api`: the stateless endpoint, (pose, seed, steps, sampler, guidance,
    num_images, style_image) with the pose as keypoint JSON text or a preset name and the seed used as given -> yields
    (latest preview, gallery, files, seed, the states as JSON), one preview image instead of the row (API
    clients download every streamed file, so a growing row costs them a second a step).
    """
    if api:

        @user_errors
        def run_api(pose, seed, steps, sampler, guidance, num_images, style_image=None, progress=gr.Progress()):  # noqa: B008
            if not isinstance(pose, str):
                raise InputError("The pose must be keypoint JSON text or a preset name.")
            for previews, gallery, files, seed_out, results in generate(
                pipeline_loader, pose_from_text(pose), seed, False, steps, sampler, guidance, num_images, progress,
                style_image,
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


# -- results: what Refine and Explore start from -------------------------------------------------
NO_RESULT = "There is no current result yet: generate an image first (Generate tab), then pick it in the gallery."


@dataclass(eq=False)  # compared by identity: a new Result is a change of the current result
class Result:
    """One image the person can pick: its picture, the GenerationState that re-renders it, its JSON record."""

    image: Image.Image | None
    state: Any
    record: dict[str, Any] = field(default_factory=dict)


def state_dict(state: Any) -> dict[str, Any]:
    """The state's JSON (pose, seed, style, settings): what the `refine` and `edit` endpoints take back."""
    return json.loads(json.dumps(state.to_dict()))  # plain values only (no numpy scalars)


def select_result(results: list[Result] | None, evt: gr.SelectData) -> Result:
    """The gallery's clicked result becomes the current one."""
    index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
    if not results or not isinstance(index, int) or not 0 <= index < len(results):
        return gr.skip()
    return results[index]


@user_errors
def use_result(result: Result | None) -> Result:
    """A refined or edited result becomes the current one."""
    if result is None:
        raise InputError("There is no new result to use yet.")
    return result


def first_result_handler(pipeline_loader: Callable[[], Any]) -> Callable:
    """For a tab run on its own: a first current result (the default pose, seed 0) made on page load."""

    @user_errors
    def first() -> Result:
        pipe = pipeline_loader()
        pose = model_pose(default_pose())
        images, states = pipe(pose, seed=0, steps=settings.DEFAULT_STEPS, sampler=settings.SAMPLERS[0])
        return Result(images[0], states[0], state_record(states[0], {}))

    return first


@dataclass(frozen=True)
class ModelOps:
    """The refine / edit / directions functions and capabilities that go with a loaded pipeline."""

    refine: Callable
    edit: Callable
    directions_for: Callable
    capabilities: frozenset[str]
    default_lr: dict[str, float]


def model_ops(pipe: Any) -> ModelOps:
    """`models.refine` / `models.editing` / `models.directions`, or the demo stand-in's own (`ui.fake`)."""
    from models.backends import capabilities

    if getattr(pipe, "is_fake", False):
        from ui import fake

        return ModelOps(fake.refine, fake.edit, fake.directions_for, capabilities(pipe), dict(fake.DEFAULT_LR))
    from models.directions import directions_for
    from models.editing import edit
    from models.refine import DEFAULTS, refine

    lrs = {mode: float(cfg.lr) for mode, cfg in DEFAULTS.items()}
    return ModelOps(refine, edit, directions_for, frozenset(capabilities(pipe)), lrs)


def _state_number(check: Callable, value: Any, default: Any, *args: Any) -> Any:
    return check(default if value is None else value, *args)


def state_from_json(pipe: Any, text: Any) -> Any:
    """A GenerationState from its JSON (`to_dict()`: pose, seed, style, settings), ready to re-render.

    z_T comes from the seed, so the same JSON always gives the same pixels; a missing style is the seed's."""
    # 1. Parse.
    if isinstance(text, dict):
        data = text
    else:
        text = (text or "").strip()
        if not text:
            raise InputError(
                "Give the state JSON of a generated image (from the generate endpoint or a result's JSON)."
            )
        settings.check_text(text, "The state JSON", settings.MAX_JSON_CHARS)
        settings.check_json_depth(text, "The state JSON")
        try:
            data = json.loads(text)
        except ValueError:
            raise InputError("The state is not valid JSON.") from None
    if not isinstance(data, dict) or "pose" not in data or "seed" not in data:
        raise InputError("The state must be a JSON object with pose, seed, style and settings.")
    cfg = data.get("settings", {})
    if not isinstance(cfg, dict):
        raise InputError("The state's settings must be a JSON object (steps, guidance, sampler, eta, size).")
    cfg = {**{k: data[k] for k in ("steps", "guidance", "sampler", "eta", "size") if k in data}, **cfg}
    # 2. Check every number against the app's limits.
    pose = pose_from_value(data["pose"])
    seed = settings.check_int(data["seed"], "The state's seed", 0, settings.MAX_SEED + settings.MAX_NUM_IMAGES)
    steps = _state_number(
        settings.check_int, cfg.get("steps"), settings.DEFAULT_STEPS, "The state's steps", 1, settings.MAX_STEPS
    )
    guidance = _state_number(
        settings.check_float, cfg.get("guidance"), settings.DEFAULT_GUIDANCE, "The state's guidance",
        settings.MIN_GUIDANCE, settings.MAX_GUIDANCE,
    )  # fmt: skip
    sampler = cfg.get("sampler", settings.SAMPLERS[0])
    if sampler not in settings.SAMPLERS:
        raise InputError(f"The state's sampler must be one of {', '.join(settings.SAMPLERS)}; got {sampler!r}.")
    eta = _state_number(settings.check_float, cfg.get("eta"), 0.0, "The state's eta", 0.0, 1.0)
    native = int(getattr(pipe, "native_size", 128))
    size = _state_number(settings.check_int, cfg.get("size"), native, "The state's image size", 8, 4 * native)
    style = data.get("style")
    if style is not None:
        dim = int(getattr(pipe, "style_dim", 0) or 0)
        try:
            style = np.asarray(style, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError("The state's style must be a list of numbers.") from None
        if style.ndim != 1 or (dim and style.shape[0] != dim) or not np.isfinite(style).all():
            raise InputError(f"The state's style must be {dim or 'the model’s'} finite numbers.")
        if style.size and float(np.abs(style).max()) > settings.MAX_STYLE_ABS:
            raise InputError(
                f"The state's style numbers must lie between -{settings.MAX_STYLE_ABS:g} and "
                f"{settings.MAX_STYLE_ABS:g} (a style code is drawn from a standard normal)."
            )
    # 3. The pipeline's own checks, then its state (noise from the seed). Keyword arguments: the back
    # ends order and name these differently (the fork's prepare has no guidance or style; ControlNet
    # calls the count `n` and wants its prompt settings).
    values = {
        "pose": pose, "seed": seed, "steps": steps, "guidance": guidance, "sampler": sampler, "style": style,
        "eta": eta, "size": size, "num_images": 1, "n": 1,
        **{k: cfg[k] for k in ("prompt", "negative_prompt", "controlnet_scale") if k in cfg},
    }  # fmt: skip
    check = getattr(pipe, "check_inputs", None)
    if callable(check):
        check(**accepted_kwargs(check, values, defaults=pipe.prepare))
    return pipe.prepare(**accepted_kwargs(pipe.prepare, values))


def accepted_kwargs(fn: Callable, values: dict[str, Any], defaults: Callable | None = None) -> dict[str, Any]:
    """The entries of `values` that `fn` takes by name; a required one missing from `values` comes from
    `defaults`' own default for that name (ControlNet's check wants the prompt its prepare defaults)."""
    params = inspect.signature(fn).parameters
    fallback = inspect.signature(defaults).parameters if defaults is not None else {}
    kwargs = {}
    for name, param in params.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name in values:
            kwargs[name] = values[name]
        elif param.default is param.empty and name in fallback and fallback[name].default is not param.empty:
            kwargs[name] = fallback[name].default
    return kwargs


def notes_markdown(lines: list[str]) -> str:
    """Messages for a person, one bullet each, duplicates dropped."""
    seen = list(dict.fromkeys(m for m in lines if m))
    return "\n".join(f"* {m}" for m in seen)


# -- Refine: CLIP moves the current result towards a prompt ----------------------------------------
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


def refine_plan(mode: str, steps: int, strength: float, default_lr: dict[str, float]) -> list[tuple[str, int, float]]:
    """The stages (mode, steps, lr): "both" is style for a third of the steps, then latent for the rest.

    `strength` multiplies each stage's default step size (the two stages' defaults differ six-fold)."""
    if mode != "both":
        return [(mode, steps, strength * default_lr[mode])]
    first = max(1, round(steps / 3))
    return [
        ("style", first, strength * default_lr["style"]),
        ("latent", max(1, steps - first), strength * default_lr["latent"]),
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
    from models.prompts import prompt_terms

    # 1. Check inputs (before loading anything).
    if source is None and state_text is None:
        raise InputError(NO_RESULT)
    prompt = settings.check_text(prompt, "The prompt")
    negative_prompt = settings.check_text(negative_prompt, "The negative prompt")
    args = settings.check_refine(mode, steps, strength, pose_weight)
    notes: list[str] = []
    if not prompt_terms(prompt, negative_prompt, notes):  # also words a bad weight ("a:xx")
        raise InputError(
            notes[-1] if notes else "Write a prompt to refine towards, e.g. 'pink hair | sailor uniform:0.5'."
        )
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
    stages = refine_plan(args["mode"], args["steps"], args["strength"], ops.default_lr)
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
        progress(0, desc="loading CLIP" if not getattr(pipe, "is_fake", False) else "refining")
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
    final = runs[-1]
    check_finite([final.state])
    after = final.images[-1] if final.images else source.image
    if after is None:
        after = pipe.render(final.state)[0][0]
    settings_used = {
        "prompt": prompt, "negative_prompt": negative_prompt, **args,
        "stages": [{"mode": m, "steps": n, "lr": round(lr, 6)} for m, n, lr in stages],
    }  # fmt: skip
    messages = [m for run in runs for m in run.messages]
    record = {
        **state_record(final.state, {}),
        "refine": {**settings_used, "messages": messages, "source": source.record},
    }
    files = write_outputs([after], [record], {"refine": settings_used, "source": source.record}, "refine.json")
    log.info("refined (%s, %d steps) in %.2f s", args["mode"], total, seconds)
    note = notes_markdown([f"Refined in {seconds:.1f} s ({total} steps, {args['mode']} mode).", *messages])
    yield shown, after, files, Result(after, final.state, record), note


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


# -- Explore: style directions as sliders --------------------------------------------------------
METHOD_NAMES = {"ganspace": "GANSpace", "sefa": "SeFa"}


def offered_methods(pipe: Any) -> list[str]:
    """The direction methods the loaded back end offers, in the UI's order."""
    caps = model_ops(pipe).capabilities
    return [m for m in settings.DIRECTION_METHODS if m in caps]


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
        status = (
            f"This model offers {' and '.join(METHOD_NAMES[m] for m in methods)}. "
            f"Moving a slider re-renders the current result (seed {current.state.seed}) from its own noise."
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
        value = settings.check_float(amount, f"Slider {i}", -settings.MAX_SIGMA, settings.MAX_SIGMA)
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
    images, state = ops.edit(pipe, source.state, amounts, dirs, step_range, messages=notes)
    check_finite([state])
    record = state_record(state, {})
    request = {"edit": (state.settings or {}).get("edit"), "source": source.record}
    files = write_outputs(images[:1], [record], request, "edit.json")
    return images[0], files, Result(images[0], state, record), notes


def check_step_range(start: Any, end: Any, steps: int) -> tuple[int, int] | None:
    """(start, end) of the edited sampler steps, None for every step; `end` 0 means the last step."""
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
        if method not in settings.DIRECTION_METHODS:
            raise InputError(f"The method must be one of {', '.join(settings.DIRECTION_METHODS)}; got {method!r}.")
        clean = check_amounts(method, amounts)
        step_range = check_step_range(start, end, int(current.state.settings["steps"]))
        if not clean and step_range is None:
            return current.image, None, None, ""
        progress(0, desc="re-rendering")
        started = time.perf_counter()
        image, files, result, notes = edit_result(pipeline_loader(), current, clean, step_range)
        return image, files, result, notes_markdown([f"Re-rendered in {time.perf_counter() - started:.2f} s.", *notes])

    return render


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
        step_range = check_step_range(start, end, int(state.settings["steps"]))
        progress(0, desc="re-rendering")
        source = Result(None, state, state_record(state, {}))
        image, files, result, more = edit_result(pipe, source, amounts, step_range)
        return image, files, state_dict(result.state), notes_markdown([*notes, *more])

    return run
