"""Pure functions behind the UI events: pose in, pose / pictures / files out. No model math.

Every handler checks the limits in `ui.settings` and turns a user's mistake (`InputError`) into a
`gr.Error` carrying its one sentence; anything unexpected becomes a one-line `gr.Error` too and
its traceback goes to the server log, never to the page.
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
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image

from models.errors import InputError
from models.pose import Pose, fit_to_square, from_dict, loads, mirror
from ui import settings

log = logging.getLogger("pose_studio.ui")

PNG_KEY = "pose_studio"  # the PNG text chunk holding the settings (as `python app.py generate` writes)
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
def user_errors(fn: Callable) -> Callable:
    """Run `fn`, showing InputError (and any failure) as a one-sentence gr.Error; works for generators."""

    def _convert(err: Exception) -> gr.Error:
        if isinstance(err, gr.Error):
            return err
        if isinstance(err, InputError):
            return gr.Error(str(err), print_exception=False)
        log.exception("handler %s failed", fn.__name__)
        return gr.Error(
            f"Something went wrong ({type(err).__name__}); the server log has the details.", print_exception=False
        )

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


def pose_from_value(value: Any) -> Pose:
    """The Pose held by an editor value (a dict) or by pose JSON text."""
    if value is None or value == "":
        raise InputError("There is no pose yet: choose a preset, upload a photo or load a keypoint file.")
    if isinstance(value, str):
        settings.check_text(value, "The pose JSON", settings.MAX_JSON_CHARS)
        return loads(value)
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
    settings.check_text(text, "The keypoint file", settings.MAX_JSON_CHARS)
    return keep_background(value, loads(text))


@user_errors
def save_pose_file(value: Any) -> str:
    """The editor's pose written to a JSON file for download."""
    pose = pose_from_value(value)
    folder = Path(tempfile.mkdtemp(prefix="pose_studio_"))
    path = folder / "pose.json"
    path.write_text(pose_json(pose), encoding="utf-8")
    return str(path)


def load_photo(file: Any) -> Image.Image:
    """A user's photo, checked against the upload and side limits, as RGB."""
    from models.image_io import load_image

    if isinstance(file, Image.Image):
        image = file
    else:
        path = _file_path(file)
        try:  # the header alone gives the size: refuse a huge photo before decoding it
            with Image.open(path) as im:
                settings.check_image_side(*im.size)
        except (OSError, Image.DecompressionBombError, SyntaxError, ValueError):
            pass  # load_image words the failure for the person
        image = load_image(path)
    settings.check_image_side(*image.size)
    return image


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
    text = (text or "").strip()
    if image is not None:
        from models.extract import extract_pose  # mediapipe: seconds to import, so only when needed

        photo = load_photo(image)
        pose = extract_pose(photo)
        pose = Pose(pose.keypoints, photo.width, photo.height)
    elif text.startswith(("{", "[")):
        settings.check_text(text, "The pose JSON", settings.MAX_JSON_CHARS)
        pose = loads(text)
    elif text:
        settings.check_text(text, "The preset name")
        pose = _load_preset(text)
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


def run_streaming(pipe: Callable, pose: Pose, kwargs: dict[str, Any]) -> Iterator[tuple]:
    """Run `pipe` in a thread, yielding ("step", i, n, preview) per callback, then ("done", images, states)."""
    events: queue.Queue = queue.Queue()

    def callback(step: int, total: int, preview: Image.Image) -> None:
        events.put(("step", step, total, preview))

    def work() -> None:
        try:
            events.put(("done", *pipe(pose, callback=callback, **kwargs)))
        except BaseException as err:  # noqa: BLE001 - handed to the generator, which raises it
            events.put(("error", err))

    threading.Thread(target=work, name="pose-studio-generate", daemon=True).start()
    while True:
        item = events.get()
        if item[0] == "error":
            raise item[1]
        yield item
        if item[0] == "done":
            return


def state_record(state: Any, fallback: dict[str, Any]) -> dict[str, Any]:
    """The JSON record of one image: the state's own `to_record()` when it has one."""
    to_record = getattr(state, "to_record", None)
    record = dict(to_record()) if callable(to_record) else {}
    for key, val in fallback.items():
        record.setdefault(key, val)
    return record


def write_outputs(images: list[Image.Image], records: list[dict[str, Any]], request: dict[str, Any]) -> list[str]:
    """PNG files carrying their record in a text chunk, and one JSON that reproduces the whole call."""
    from PIL import PngImagePlugin

    folder = Path(tempfile.mkdtemp(prefix="pose_studio_"))
    paths = []
    for i, (image, record) in enumerate(zip(images, records)):
        info = PngImagePlugin.PngInfo()
        info.add_text(PNG_KEY, json.dumps(record))
        path = folder / f"pose_studio_{record.get('seed', i)}_{i + 1}.png"
        image.save(path, pnginfo=info)
        paths.append(str(path))
    settings_path = folder / "generation.json"
    settings_path.write_text(json.dumps({**request, "images": records}, indent=1), encoding="utf-8")
    return [*paths, str(settings_path)]


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
) -> Iterator[tuple]:
    """Yield (previews, gallery, files, seed) while the pipeline runs; the last yield has the results."""
    # 1. Check inputs (before loading anything).
    if randomize:
        seed = random.randint(0, settings.MAX_SEED)
    args = settings.check_generation(seed, steps, guidance, sampler, num_images)
    pose = model_pose(pose_from_value(pose_value))
    # 2. The one pipeline of this process.
    if progress is not None:
        progress(0, desc="loading the model")
    pipe = pipeline_loader()
    # 3. Denoise, streaming previews.
    previews: list[tuple[Image.Image, str]] = []
    started = time.perf_counter()
    for item in run_streaming(pipe, pose, args):
        if item[0] == "step":
            _, step, total, preview = item
            if progress is not None:
                progress((step, total), desc="denoising")
            if preview is not None:  # a pipeline may skip previews on some steps
                previews = [*previews, (preview, f"step {step}/{total}")][-MAX_PREVIEWS:]
                yield previews, gr.skip(), gr.skip(), args["seed"]
        else:
            _, images, states = item
    seconds = time.perf_counter() - started
    # 4. Files: PNGs with their settings, and a JSON that reproduces them.
    request = {"pose": pose.to_dict(), **args}
    base = {"pose": pose.to_dict(), "steps": args["steps"], "guidance": args["guidance"], "sampler": args["sampler"]}
    records = [
        state_record(state, {**base, "seed": getattr(state, "seed", args["seed"] + i)})
        for i, state in enumerate(states)
    ]
    files = write_outputs(images, records, request)
    log.info("generated %d image(s) in %.2f s", len(images), seconds)
    captions = [f"seed {r['seed']}" for r in records]
    yield previews, list(zip(images, captions)), files, args["seed"]


def generate_handler(pipeline_loader: Callable[[], Any], latest_preview_only: bool = False) -> Callable:
    """The generate event's function, bound to the process's pipeline loader.

    `latest_preview_only` streams one preview image instead of the row (API clients download every
    streamed file, so a growing row costs them a second a step).
    """

    @user_errors
    def run(pose_value, seed, randomize, steps, sampler, guidance, num_images, progress=gr.Progress()):  # noqa: B008
        for previews, *rest in generate(
            pipeline_loader, pose_value, seed, randomize, steps, sampler, guidance, num_images, progress
        ):
            yield (previews[-1][0] if latest_preview_only and previews else previews), *rest

    return run
