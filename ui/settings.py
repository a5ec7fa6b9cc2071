"""What the app's process holds: its limits, its one pipeline, and the files it serves.

Limits of the web app and of `python app.py generate` are read once from the environment; every handler and the
command line check them again. A photo's pixel limit is `models.pose_input.MAX_IMAGE_SIDE`, the one every channel
(web, API, command line) reads images through.

    MAX_STEPS=30 MAX_NUM_IMAGES=4 python app.py

The pipeline (`LazyPipeline`) is loaded on the first generation: the UI's only global state, here so that
`ui.server` (which assembles the tabs) and each tab's stand-alone `__main__` reach it without importing each other.

Files the app serves are each written once, complete, under a name no other request shares. Gradio caches a
returned PIL image under a hash of its bytes and rewrites that file in place, so two requests that make the same
picture (the same preset's drawing, the same seed) rewrite a file while another response is still sending it ("Too
little data for declared Content-Length"). So the app never hands Gradio a PIL image: `served` turns every image in
a handler's outputs into a PNG of our own, written to a temporary name and renamed into place inside Gradio's cache
folder (which Gradio then serves as it is, without copying), and files are removed only once they are an hour old
(our sweep here, and `gr.Blocks(delete_cache=...)` for Gradio's own).
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from models.backend import SAMPLER_NAMES
from models.errors import InputError
from models.pose_input import png_info
from models.refine_settings import REFINE_MODES


def _int(name: str, default: int) -> int:
    return int(os.getenv(name, str(default)))


def _float(name: str, default: float) -> float:
    return float(os.getenv(name, str(default)))


MAX_UPLOAD_MB = _int("MAX_UPLOAD_MB", 10)  # uploads larger than this are refused (client and server)
MAX_STEPS = _int("MAX_STEPS", 50)  # sampler steps
MAX_NUM_IMAGES = _int("MAX_NUM_IMAGES", 8)  # images per generation
MAX_PROMPT_CHARS = _int("MAX_PROMPT_CHARS", 300)  # free text (a preset name, a style prompt)
MAX_JSON_CHARS = _int("MAX_JSON_CHARS", 200_000)  # a pasted or uploaded keypoint JSON
MAX_JSON_DEPTH = 32  # nesting of a JSON text: ours is 3 deep; Python's parser recurses once a level
MAX_STYLE_ABS = 10.0  # a style code entry (s ~ N(0, I)): past 10 sigma the model only draws noise or black
FILE_MAX_AGE = _int("FILE_MAX_AGE", 3600)  # seconds a served file stays fetchable before it is swept
SWEEP_EVERY = 60  # seconds between sweeps of old served files
QUEUE_SIZE = _int("QUEUE_SIZE", 20)  # requests waiting for a worker beyond this are refused ("Queue is full")
CONCURRENCY = _int("CONCURRENCY", 1)  # workers of every other event (pose, edit, refine): they share the CPU cores
# Generation: every request goes to one micro-batcher per model (models.batching), which runs the oldest request
# with the later ones that share its settings as one batch through the UNet, one batch at a time.
MAX_IMAGE_STEPS = _int("MAX_IMAGE_STEPS", 96)  # steps x images one generation may take (~9 s alone on 2 cores)
BATCH_IMAGES = _int("BATCH_IMAGES", 8)  # images per UNet batch (8 requests of one image run together)
BATCH_WINDOW_S = _float("BATCH_WINDOW_S", 0.05)  # how long the oldest request waits for others to join its batch
# Generate workers: requests handed to the batcher at once. Twice a batch, so the next batch forms while one runs.
GENERATE_WORKERS = _int("GENERATE_WORKERS", 2 * BATCH_IMAGES)
# steps x images queued or running in the batcher beyond which a request is refused as busy: about 30 s of work
MAX_WAITING_IMAGE_STEPS = _int("MAX_WAITING_IMAGE_STEPS", 4 * MAX_IMAGE_STEPS)
MAX_SEED = 2**31 - 1  # the web form's seeds (JavaScript numbers; the back ends take up to 2**63)
MIN_GUIDANCE, MAX_GUIDANCE = 0.0, 20.0
SAMPLERS = SAMPLER_NAMES  # the default first
DEFAULT_STEPS = min(8, MAX_STEPS)  # the pipeline's default: ~0.9 s an image on 2 CPU cores
DEFAULT_GUIDANCE = 2.0
# The Pose tab's live preview: the model's few-step student when it has one, else this many steps of the full model.
PREVIEW_STEPS = _int("PREVIEW_STEPS", 4)
PREVIEW_BEHIND_S = _float("PREVIEW_BEHIND_S", 1.0)  # a frame slower than this says the preview is behind the edits
# Refine (CLIP) and Explore (style directions).
MAX_REFINE_STEPS = _int("MAX_REFINE_STEPS", 30)  # optimisation steps (a style step is ~1.5 s on 2 CPU cores)
MAX_REFINE_STRENGTH = _float("MAX_REFINE_STRENGTH", 3.0)  # multiplier on the mode's default step size
MAX_POSE_WEIGHT = _float("MAX_POSE_WEIGHT", 10.0)  # weight of the keep-the-pose term
NUM_DIRECTIONS = _int("NUM_DIRECTIONS", 10)  # sliders in the Explore tab


def check_int(value: object, name: str, lo: int, hi: int) -> int:
    """`value` as an int within [lo, hi], or an InputError naming `name` and the range."""
    if value is None or isinstance(value, bool):
        raise InputError(f"{name} must be a whole number between {lo} and {hi}.")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a whole number between {lo} and {hi}.") from None
    if not number.is_integer() or not lo <= number <= hi:
        raise InputError(f"{name} must be a whole number between {lo} and {hi}; got {value}.")
    return int(number)


def check_float(value: object, name: str, lo: float, hi: float) -> float:
    """`value` as a finite float within [lo, hi], or an InputError."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number between {lo:g} and {hi:g}.") from None
    if not lo <= number <= hi:  # also false for NaN
        raise InputError(f"{name} must be a number between {lo:g} and {hi:g}; got {value}.")
    return number


def check_generation(seed: object, steps: object, guidance: object, sampler: object, num_images: object) -> dict:
    """All generation settings checked against the limits, as the pipeline's keyword arguments."""
    if sampler not in SAMPLERS:
        raise InputError(f"The sampler must be one of {', '.join(SAMPLERS)}; got {sampler!r}.")
    checked = {
        "seed": check_int(seed, "The seed", 0, MAX_SEED),
        "steps": check_int(steps, "Steps", 1, MAX_STEPS),
        "guidance": check_float(guidance, "Guidance", MIN_GUIDANCE, MAX_GUIDANCE),
        "sampler": str(sampler),
        "num_images": check_int(num_images, "The number of images", 1, MAX_NUM_IMAGES),
    }
    check_cost(checked["steps"], checked["num_images"])
    return checked


def check_cost(steps: int, num_images: int, limit: int | None = None) -> None:
    """Refuse a generation whose steps x images exceeds MAX_IMAGE_STEPS (one request must not hold the model)."""
    limit = MAX_IMAGE_STEPS if limit is None else limit
    if steps * num_images > limit:
        most = max(1, min(MAX_STEPS, limit // num_images))
        raise InputError(
            f"Steps x images is {steps} x {num_images} = {steps * num_images}; the limit is {limit} "
            f"(for {num_images} image{'s' if num_images > 1 else ''}, at most {most} steps)."
        )


def check_refine(mode: object, steps: object, strength: object, pose_weight: object) -> dict:
    """The Refine tab's settings checked against the limits."""
    if mode not in REFINE_MODES:
        raise InputError(f"The refine mode must be one of {', '.join(REFINE_MODES)}; got {mode!r}.")
    return {
        "mode": str(mode),
        "steps": check_int(steps, "Refine steps", 1, MAX_REFINE_STEPS),
        "strength": check_float(strength, "The strength", 0.01, MAX_REFINE_STRENGTH),
        "pose_weight": check_float(pose_weight, "The pose weight", 0.0, MAX_POSE_WEIGHT),
    }


def check_text(text: str | None, name: str, limit: int = MAX_PROMPT_CHARS) -> str:
    """Text within the length limit (None reads as empty)."""
    text = text or ""
    if len(text) > limit:
        raise InputError(f"{name} is {len(text)} characters long; the limit is {limit}.")
    return text


def check_json_depth(text: str, name: str, limit: int = MAX_JSON_DEPTH) -> str:
    """Refuse JSON text nested deeper than `limit` before a parser recurses into it (RecursionError)."""
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                raise InputError(f"{name} is nested more than {limit} levels deep; a pose is 3 levels deep.")
        elif ch in "]}":
            depth -= 1
    return text


def check_upload_bytes(size: int) -> None:
    """Refuse a file larger than MAX_UPLOAD_MB."""
    if size > MAX_UPLOAD_MB * 2**20:
        raise InputError(f"The file is {size / 2**20:.1f} MB; the largest we take is {MAX_UPLOAD_MB} MB.")


# -- the one pipeline of this process, loaded lazily ----------------------------------------------
log = logging.getLogger("pose_studio.ui")

_PIPELINE: Any = None  # the one loaded pipeline of this process
_PIPELINE_LOCK = threading.Lock()


class LazyPipeline:
    """Loads `model` (a folder, a Hub id, a keypoint-LDM checkpoint, or "fake"; `controlnet` for SD) on first call
    through `models.backends.load_backend`, and returns the same back end after."""

    def __init__(self, model: str | Path, device: str | None = None, controlnet: str | None = None) -> None:
        self.model = str(model)
        self.device = device
        self.controlnet = controlnet
        self.error: str | None = None

    def status(self) -> str:
        """One line for the Generate tab: empty when a model looks loadable, else why not."""
        if self.model == "fake":
            return "**Demo mode**: no model is loaded; the results are the pose drawings (`--model fake`)."
        path = Path(self.model)
        looks_local = path.is_absolute() or self.model.startswith(".") or path.exists() or self.model.count("/") != 1
        if looks_local and not path.is_file() and (not path.is_dir() or not any(path.iterdir())):
            return (
                f"**No model is loaded**: the weights folder `{self.model}` is missing or empty, so Generate "
                "cannot draw yet. The Pose tab works."
            )
        return ""

    def __call__(self) -> Any:
        """The process's pipeline, loading it on the first call."""
        global _PIPELINE
        with _PIPELINE_LOCK:
            if _PIPELINE is not None:
                return _PIPELINE
            if self.error:
                raise InputError(self.error)
            note = self.status()
            if note and self.model != "fake":
                self.error = "No model is loaded: the weights folder is missing or empty."
                raise InputError(self.error)
            started = time.perf_counter()
            try:
                if self.model == "fake":
                    from ui.fake import FakePipeline

                    _PIPELINE = FakePipeline()
                else:
                    from models.backends import load_backend

                    _PIPELINE = load_backend(self.model, self.controlnet, device=self.device)
            except InputError as err:
                self.error = f"No model is loaded: {err}"
                raise InputError(self.error) from None
            except Exception as err:
                log.exception("loading %s failed", self.model)
                self.error = f"No model is loaded: loading '{self.model}' failed ({type(err).__name__})."
                raise InputError(self.error) from None
            log.info("loaded %s in %.1f s", self.model, time.perf_counter() - started)
            return _PIPELINE


# -- the files the app serves ---------------------------------------------------------------------
_LOCK = threading.Lock()
_FOLDER: Path | None = None
_LAST_SWEEP = 0.0


def output_folder() -> Path:
    """This process's folder of served files, inside Gradio's cache (GRADIO_TEMP_DIR) so it is served uncopied."""
    global _FOLDER
    with _LOCK:
        if _FOLDER is None or not _FOLDER.is_dir():
            base = Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")
            base.mkdir(parents=True, exist_ok=True)
            _FOLDER = Path(tempfile.mkdtemp(prefix=f"pose_studio_{os.getpid()}_", dir=base))
        return _FOLDER


def sweep(max_age: float | None = None, now: float | None = None) -> int:
    """Remove this process's served files older than `max_age` seconds (default FILE_MAX_AGE); returns how many."""
    max_age = FILE_MAX_AGE if max_age is None else max_age
    now = time.time() if now is None else now
    removed = 0
    for folder in output_folder().iterdir():
        if folder.name == "kept" or not folder.is_dir():
            continue
        for path in folder.iterdir():
            try:
                if now - path.stat().st_mtime > max_age:
                    path.unlink()
                    removed += 1
            except OSError:  # removed by Gradio's own sweep meanwhile
                continue
        try:
            folder.rmdir()  # only once empty
        except OSError:
            pass
    return removed


def _maybe_sweep() -> None:
    global _LAST_SWEEP
    now = time.time()
    if now - _LAST_SWEEP < SWEEP_EVERY:
        return
    _LAST_SWEEP = now
    sweep(now=now)


def write_file(stem: str, suffix: str, write: Callable[[Path], None], keep: bool = False) -> str:
    """A new file `<uuid>/<stem><suffix>` (the download keeps its plain name), written by `write(temp_path)` and
    renamed into place when complete.

    `keep`: never swept (a component's value at build time, which every page load refers to)."""
    _maybe_sweep()
    folder = output_folder() / ("kept" if keep else "") / uuid.uuid4().hex
    folder.mkdir(parents=True)
    final = folder / f"{stem}{suffix}"
    temp = folder / f".{final.name}.part"  # never handed out; swept like the rest if a write dies
    try:
        write(temp)
        os.replace(temp, final)
    finally:
        temp.unlink(missing_ok=True)
    return str(final)


def save_png(image: Image.Image, stem: str = "image", record: dict[str, Any] | None = None) -> str:
    """`image` as a new PNG file (with `record` in its `pose_studio` text chunk when given)."""
    info = None if record is None else png_info(record)
    return write_file(stem, ".png", lambda p: image.save(p, format="PNG", pnginfo=info))


def save_text(text: str, stem: str, suffix: str = ".json", keep: bool = False) -> str:
    """`text` (UTF-8) as a new file (`keep`: never swept)."""
    return write_file(stem, suffix, lambda p: p.write_text(text, encoding="utf-8"), keep)


def publish(value: Any, saved: dict[int, tuple[Image.Image, str]] | None = None) -> Any:
    """`value` with every PIL image in it (tuples, lists, gr.update dicts) replaced by a new PNG's path.

    `saved` remembers the images of one call, so a streamed row of previews writes each image once."""
    saved = {} if saved is None else saved
    if isinstance(value, Image.Image):
        hit = saved.get(id(value))
        if hit is None or hit[0] is not value:
            hit = saved[id(value)] = (value, save_png(value))  # the image is kept, so its id stays its own
        return hit[1]
    if isinstance(value, tuple):
        return tuple(publish(v, saved) for v in value)
    if isinstance(value, list):
        return [publish(v, saved) for v in value]
    if isinstance(value, dict) and value.get("__type__") == "update" and "value" in value:
        return {**value, "value": publish(value["value"], saved)}
    return value


def served(fn: Callable) -> Callable:
    """Wrap an event function so the images it returns or yields reach Gradio as files of their own (see above)."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen(*args: Any, **kwargs: Any) -> Iterator[Any]:
            saved: dict[int, tuple[Image.Image, str]] = {}
            for item in fn(*args, **kwargs):
                yield publish(item, saved)

        return gen

    @functools.wraps(fn)
    def plain(*args: Any, **kwargs: Any) -> Any:
        return publish(fn(*args, **kwargs))

    return plain
