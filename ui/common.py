"""What the tabs share: error handling, the pose values, photos, streaming, result files, the current
result and the model's refine / edit functions. No model math. Each tab's own handlers sit below its
layout (`ui.app_pose`, `ui.app_generate`, `ui.app_refine`, `ui.app_explore`).

Every handler checks the limits in `ui.settings` and turns a user's mistake (`InputError`) into a
`gr.Error` carrying its one sentence (logged as one line); anything unexpected becomes a one-line
`gr.Error` too, naming no exception class or path, and its traceback goes to the server log only.
Handlers return PIL images; the app's wiring (`ui.settings.served`) turns them into files of their own.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from models.errors import InputError, OutputError
from models.pose import Pose, fit_to_square, from_dict, loads
from ui import settings

log = logging.getLogger("pose_studio.ui")

UNEXPECTED = "Something went wrong on the server; the server log has the details."
PREVIEW_SIDE = 384  # the OpenPose drawing shown next to the editor
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


# -- pose values (the editor's JSON dict) ----------------------------------------------------------
def default_pose() -> Pose:
    """The pose Reset returns to: the preset 'standing' when it exists, else a built-in one."""
    try:
        from models.pose_input import list_presets, load_preset

        if "standing" in list_presets():
            return load_preset("standing")
    except (ImportError, InputError):
        pass
    return Pose(DEFAULT_KEYPOINTS, 512, 512)


def default_value() -> dict[str, Any]:
    """The editor's starting value."""
    return default_pose().to_dict()


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
    return preset_pose(text)


def pose_from_value(value: Any) -> Pose:
    """The Pose held by an editor value (a dict), by pose JSON text or by a preset name."""
    if value is None or value == "":
        raise InputError("There is no pose yet: choose a preset, upload a photo or load a keypoint file.")
    if isinstance(value, str):
        return pose_from_text(value)
    if isinstance(value, dict):
        return from_dict({k: v for k, v in value.items() if k != "background"})
    raise InputError("The pose must be a JSON object.")


def drawing(pose: Pose, side: int = PREVIEW_SIDE) -> Image.Image:
    """The OpenPose colour drawing of `pose` in its own aspect ratio, longer side `side`."""
    from models.condition import openpose_drawing

    scale = side / max(pose.width, pose.height)
    w, h = max(1, round(pose.width * scale)), max(1, round(pose.height * scale))
    return openpose_drawing(pose, h, w)


def preset_pose(name: str) -> Pose:
    """The preset pose `name` (one sentence when there is none, or no presets in this build)."""
    try:
        from models.pose_input import load_preset
    except ImportError:
        raise InputError("Presets are not available in this build.") from None
    return load_preset(name)


def model_pose(pose: Pose) -> Pose:
    """The pose as the model gets it: a non-square frame is fitted into a square one first."""
    if pose.width == pose.height:
        return pose
    return fit_to_square(pose, size=max(pose.width, pose.height))


@user_errors
def model_drawing(value: Any) -> Image.Image:
    """The OpenPose drawing of the pose as the model will get it (square frame)."""
    return drawing(model_pose(pose_from_value(value)))


# -- layout pieces the tabs share ------------------------------------------------------------------
def steps_row(label: str, elem_id: str) -> gr.Gallery:
    """A one-row gallery of the latest `MAX_PREVIEWS` intermediate images (denoising or optimisation steps)."""
    return gr.Gallery(
        label=label, columns=MAX_PREVIEWS, rows=1, height=150, allow_preview=False, format="png",
        object_fit="contain", elem_id=elem_id,
    )  # fmt: skip


def side_by_side(before_label: str, after_label: str, after_id: str, before_id: str | None = None) -> tuple:
    """Two output images in a row, before and after an edit, at the same height."""
    with gr.Row():
        before = gr.Image(label=before_label, format="png", interactive=False, height=320, elem_id=before_id)
        after = gr.Image(label=after_label, format="png", interactive=False, height=320, elem_id=after_id)
    return before, after


def downloads(what: str, elem_id: str) -> gr.File:
    """The files a run wrote, to download: PNGs with their settings and the JSON that reproduces them."""
    return gr.File(label=f"Download: {what}", file_count="multiple", elem_id=elem_id)


# -- photos ----------------------------------------------------------------------------------------
def photo_input(**kwargs: Any) -> gr.Image:
    """A gr.Image input that hands the handler the uploaded file's path unopened.

    Gradio's own preprocessing opens the upload (a text file renamed .png fails in Gradio's words, with a
    server path), decodes a bomb before our header check, and re-encodes a 16-bit photo as near-white
    8-bit; the handler reads it as the command line does instead. (An instance attribute, not a subclass:
    Gradio writes a .pyi stub next to any module that subclasses a component.)"""
    image = gr.Image(type="filepath", **kwargs)
    default = image.preprocess

    def preprocess(payload: Any) -> Any:
        if payload is not None and payload.path and not (payload.url or "").startswith("data:"):
            return str(payload.path)
        return default(payload)  # a webcam or clipboard data URL

    image.preprocess = preprocess
    return image


def upload_path(file: Any) -> Path:
    """The path of an uploaded file (a path or Gradio's file object), checked to exist and to be within the byte
    limit."""
    path = Path(file if isinstance(file, (str, Path)) else getattr(file, "name", ""))
    if not path.is_file():
        raise InputError("The uploaded file could not be found; please upload it again.")
    settings.check_upload_bytes(path.stat().st_size)
    return path


def load_photo(file: Any) -> Image.Image:
    """A user's photo (a path, as the upload arrives) as upright RGB, read as the command line reads it:
    the byte limit, then the pixel limit on the header before decoding, then 16-bit and other modes to RGB."""
    from models.pose_input import load_image

    if isinstance(file, Image.Image):
        return load_image(file)
    return load_image(upload_path(file))


# -- streaming and result files --------------------------------------------------------------------
def generation_batcher(pipe: Any) -> Any:
    """The one micro-batcher (`models.batching`) of a loaded pipeline, with the limits in `ui.settings`."""
    from models.batching import batcher_for

    return batcher_for(
        pipe,
        max_images=settings.BATCH_IMAGES,
        window=settings.BATCH_WINDOW_S,
        max_waiting=settings.MAX_WAITING_IMAGE_STEPS,
    )


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
        settings.save_png(image, f"pose_studio_{record.get('seed', i)}_{i + 1}", record)
        for i, (image, record) in enumerate(zip(images, records))
    ]
    stem, suffix = Path(json_name).stem, Path(json_name).suffix or ".json"
    return [*paths, settings.save_text(json.dumps({**request, "images": records}, indent=1), stem, suffix)]


# -- results: what Refine and Explore start from ---------------------------------------------------
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


# -- the model's refine / edit, and states from JSON -----------------------------------------------
@dataclass(frozen=True)
class ModelOps:
    """The refine / edit / directions functions and capabilities that go with a loaded pipeline."""

    refine: Callable
    edit: Callable
    directions_for: Callable
    capabilities: frozenset[str]


def model_ops(pipe: Any) -> ModelOps:
    """`models.refine` / `models.directions`, or the demo stand-in's own (`ui.fake`)."""
    from models.backends import capabilities

    own = getattr(pipe, "own_ops", None)  # a stand-in model brings its own (`ui.fake`)
    if own is not None:
        return ModelOps(*own, frozenset(capabilities(pipe)))
    from models.directions import directions_for, edit
    from models.refine import refine

    return ModelOps(refine, edit, directions_for, frozenset(capabilities(pipe)))


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
