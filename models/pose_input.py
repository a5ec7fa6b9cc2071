"""Turn what a user gives as a pose (a photo, a keypoint JSON file, a preset name from `models/presets/`) into a Pose.

A photo goes through mediapipe's `solutions.pose` (`extract_pose`), a single-person model: its detector finds
people, and the landmark model then runs on the detection it ranks first (the highest score: in practice the most
prominent, usually the largest and most central, person). With several people in a photo we return one, never a mix.

A user's image (path, bytes, PIL image or numpy array) is loaded as a safe, upright RGB PIL image (`load_image`):
every check happens before the pixels are decoded (the file size first, then the size PIL reads from the header),
and any failure is an `InputError` with one sentence a person can act on.
"""

from __future__ import annotations

import io
import json
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from models.errors import InputError
from models.pose import FORK_NAMES, Pose, from_mediapipe, load, loads

PRESET_DIR = Path(__file__).resolve().parent / "presets"  # named poses: our own JSON, 512 x 512 frame, front view
MAX_JSON_BYTES = 5 * 1024 * 1024  # a keypoint file is a few kB; anything this big is not one


# -- a photo: mediapipe's bundled pose model (BlazePose, 0.10.21) ------------------------------------
INFERENCE_MAX_SIDE = 1024  # mediapipe works at 256 px; a smaller copy only saves conversion time


class NoPersonError(InputError):
    """The pose model found no person in the image."""


class _Model:
    """One lazily built mediapipe Pose per process; its `process` is not thread-safe, so a lock guards it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pose: Any = None

    def run(self, rgb: np.ndarray) -> Any:
        """Run the model on an `(H, W, 3)` uint8 RGB array; returns mediapipe's result."""
        with self._lock:
            if self._pose is None:
                import mediapipe as mp  # slow import (about a second); only the photo path needs it

                self._pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1)
            return self._pose.process(rgb)


_MODEL = _Model()


def extract_pose(image: str | Path | bytes | Image.Image | np.ndarray) -> Pose:
    """The 17 COCO keypoints of the most prominent person, in a frame the size of the image."""
    # 1. Load (limits, EXIF rotation, RGB).
    im = load_image(image)
    width, height = im.size
    # 2. Shrink large photos; mediapipe's landmarks are normalised, so they hold for the original.
    scale = INFERENCE_MAX_SIDE / max(width, height)
    if scale < 1:
        im = im.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.BILINEAR)
    # 3. Run the model.
    result = _MODEL.run(np.ascontiguousarray(np.asarray(im, dtype=np.uint8)))
    if result.pose_landmarks is None:
        raise NoPersonError("No person found in the image.")
    # 4. Low-visibility points are kept where mediapipe put them and marked by their visibility.
    return from_mediapipe(result.pose_landmarks, width, height)


def list_presets() -> list[str]:
    """The preset names, sorted."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_preset(name: str) -> Pose:
    """The preset pose called `name` (an unknown name raises an InputError that lists the known ones)."""
    names = list_presets()
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key not in names:
        raise InputError(f"There is no preset pose called '{name}'; the presets are: {', '.join(names)}.")
    return load(PRESET_DIR / f"{key}.json")


@dataclass(frozen=True)
class PoseInput:
    """A pose read from an input, the input's format, and the photo it came from (None otherwise)."""

    pose: Pose
    format: str  # "image", "preset", or a keypoint format: "coco17" (ours), "coco", "openpose18", "fork"
    image: Image.Image | None = None


def read_pose_input(spec: str) -> PoseInput:
    """Read a pose from a photo path, a keypoint JSON path (any supported format) or a preset name."""
    if not isinstance(spec, str) or not spec.strip():
        raise InputError("The input is empty; give an image, a keypoint JSON file or a preset name.")
    path = Path(spec)
    if path.is_dir():
        raise InputError(f"'{spec}' is a folder; give an image, a keypoint JSON file or a preset name.")
    if path.is_file():
        if looks_like_image(path):
            # Imported here: it imports mediapipe (a second or more), which only photos need.

            image = load_image(path)
            return PoseInput(extract_pose(image), "image", image)
        return _read_keypoint_file(path)
    if spec.strip().lower().replace("-", "_").replace(" ", "_") in list_presets():
        return PoseInput(load_preset(spec), "preset", None)
    if path.suffix.lower() in (*IMAGE_SUFFIXES, ".json") or "/" in spec or "\\" in spec:
        raise InputError(f"There is no file at '{spec}'.")
    raise InputError(f"'{spec}' is neither a file nor a preset pose; the presets are: {', '.join(list_presets())}.")


def keypoint_format(obj: Any) -> str:
    """The name of the keypoint format of a parsed JSON object (as `models.pose.from_dict` reads it)."""
    if isinstance(obj, dict):
        if "people" in obj:
            return "openpose18"
        if "annotations" in obj:
            return "coco"
        kps = obj.get("keypoints")
        if isinstance(kps, list) and kps and not isinstance(kps[0], (list, tuple)):
            return "coco"
        if "keypoints" in obj:
            return "coco17"
        if any(n in obj for n in FORK_NAMES):
            return "fork"
    return "coco17" if isinstance(obj, list) else "unknown"


# -- helpers ---------------------------------------------------------------------------------------
def _read_keypoint_file(path: Path) -> PoseInput:
    if path.stat().st_size > MAX_JSON_BYTES:
        raise InputError(f"The keypoint file is over {MAX_JSON_BYTES // 2**20} MB, too big to be a pose.")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"'{path.name}' is neither an image nor a UTF-8 keypoint JSON file.") from None
    except OSError as err:
        raise InputError(f"The keypoint file cannot be read ({err.strerror or err}).") from None
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None  # `loads` below words the error
    if isinstance(obj, dict) and "error" in obj and "keypoints" not in obj:
        raise InputError(f"The file holds an error record, not a pose: {obj['error']}")
    pose = loads(text)  # validates: broken JSON, NaN, missing names, wrong counts -> InputError
    return PoseInput(pose, keypoint_format(obj), None)


# -- a user's image (path, bytes, PIL image or numpy array) as a safe, upright RGB PIL image -----------------------
# Limits, read once from the environment (tests monkeypatch these names). MAX_IMAGE_SIDE is the one pixel
# limit of every channel (web app, API, command line): every message about a too-large image names it.
MAX_IMAGE_BYTES = int(os.getenv("POSE_STUDIO_MAX_IMAGE_BYTES", str(20 * 1024 * 1024)))
MAX_IMAGE_SIDE = int(os.getenv("POSE_STUDIO_MAX_IMAGE_SIDE", "4096"))
MIN_IMAGE_SIDE = int(os.getenv("POSE_STUDIO_MIN_IMAGE_SIDE", "16"))

# We refuse large images from the header ourselves, so PIL's bomb warning (between 1x and 2x its own
# limit) only adds noise; its DecompressionBombError (above 2x) is still caught and reworded below.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff")
_FORMATS = "PNG, JPEG, GIF, WebP, BMP or TIFF"


def load_image(src: str | Path | bytes | Image.Image | np.ndarray) -> Image.Image:
    """Load `src` as an RGB image, upright (EXIF rotation applied), within the size limits."""
    if isinstance(src, Image.Image):
        check_size(*src.size)
        try:  # a lazily opened image may still hold broken data
            src.load()
        except (OSError, SyntaxError, ValueError, EOFError):
            raise InputError("The image file is truncated or damaged and cannot be decoded.") from None
        return _to_rgb(ImageOps.exif_transpose(src) or src)
    if isinstance(src, np.ndarray):
        return _to_rgb(_from_array(src))
    if isinstance(src, (bytes, bytearray, memoryview)):
        return _decode(bytes(src))
    if isinstance(src, (str, Path)):
        return _decode(_read_file(Path(src)))
    raise InputError(f"An image must be a file path, bytes, a PIL image or a numpy array, not {type(src).__name__}.")


def pad_to_square(image: Image.Image) -> tuple[Image.Image, int, int]:
    """The RGB image centred on a square of its border's mean colour, and its offset (x, y) in that square."""
    image = image.convert("RGB")
    w, h = image.size
    side = max(w, h)
    ox, oy = (side - w) // 2, (side - h) // 2
    if w == h:
        return image, 0, 0
    border = np.asarray(image)
    edge = np.concatenate([border[0], border[-1], border[:, 0], border[:, -1]]).mean(axis=0)
    canvas = Image.new("RGB", (side, side), tuple(int(c) for c in edge))
    canvas.paste(image, (ox, oy))
    return canvas, ox, oy


def check_size(width: int, height: int) -> None:
    """Refuse a frame outside the limits (checked on the header, before decoding)."""
    if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE:
        raise InputError(too_large(f"{width} x {height} pixels"))
    if min(width, height) < MIN_IMAGE_SIDE:
        raise InputError(
            f"The image is {width} x {height} pixels, too small to show a person; "
            f"use one at least {MIN_IMAGE_SIDE} pixels a side."
        )


def too_large(size: str) -> str:
    """The one sentence for an image over MAX_IMAGE_SIDE (`size`: "W x H pixels", or words when unknown)."""
    return f"The image is {size}; the largest we take is {MAX_IMAGE_SIDE} pixels a side."


def looks_like_image(path: str | Path) -> bool:
    """Whether a file is an image, judged by its first bytes (or, failing that, its suffix)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return Path(path).suffix.lower() in IMAGE_SUFFIXES
    signatures = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")
    if head.startswith(signatures) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return True
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


# -- helpers ---------------------------------------------------------------------------------------
def _read_file(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise InputError(
                f"The image file is {size / 2**20:.1f} MB; the largest we take is {MAX_IMAGE_BYTES / 2**20:g} MB."
            )
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"There is no file at '{path}'.") from None
    except IsADirectoryError:
        raise InputError(f"'{path}' is a folder, not an image file.") from None
    except OSError as err:
        raise InputError(f"The image file cannot be read ({err.strerror or err}).") from None


def _decode(data: bytes) -> Image.Image:
    # 1. Check the bytes.
    if not data:
        raise InputError("The image file is empty.")
    if len(data) > MAX_IMAGE_BYTES:
        raise InputError(
            f"The image file is {len(data) / 2**20:.1f} MB; the largest we take is {MAX_IMAGE_BYTES / 2**20:g} MB."
        )
    # 2. Read the header only (Image.open is lazy) and check the claimed size.
    try:
        im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        # PIL's own bomb guard (2x Image.MAX_IMAGE_PIXELS) fires inside open, before our check can.
        raise InputError(too_large("far too large")) from None
    except UnidentifiedImageError:
        raise InputError(f"The file is not an image we can read ({_FORMATS}).") from None
    except (OSError, SyntaxError, ValueError):
        raise InputError("The image file is truncated or damaged and cannot be read.") from None
    check_size(*im.size)
    # 3. Decode the first frame (an animated GIF's later frames are ignored).
    try:
        im.seek(0)
        im.load()
        im = ImageOps.exif_transpose(im) or im
    except Image.DecompressionBombError:
        raise InputError(too_large("far too large")) from None
    except (OSError, SyntaxError, ValueError, EOFError):
        # Truncated JPEG/PNG data ("image file is truncated") and broken streams land here.
        raise InputError("The image file is truncated or damaged and cannot be decoded.") from None
    return _to_rgb(im)


def _from_array(arr: np.ndarray) -> Image.Image:
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise InputError(f"An image array must be H x W, H x W x 3 or H x W x 4; got shape {arr.shape}.")
    check_size(arr.shape[1], arr.shape[0])
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint16:
        arr = _scale_16bit(arr)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise InputError("The image array holds values that are not finite numbers.")
        # Float images are [0, 1] by convention; treat anything larger as [0, 255].
        scale = 255.0 if arr.max(initial=0.0) <= 1.0 else 1.0
        arr = np.clip(arr * scale, 0, 255).round().astype(np.uint8)
    elif arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.integer):
            raise InputError(f"An image array must hold numbers; got {arr.dtype}.")
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(arr))


def _scale_16bit(arr: np.ndarray) -> np.ndarray:
    # 65535 -> 255 exactly: divide by 257 (= 65535 / 255), not shift, so white stays white.
    return np.clip(np.round(arr.astype(np.float32) / 257.0), 0, 255).astype(np.uint8)


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode to RGB: alpha composited on white, 16/32-bit grey scaled to 8 bits."""
    mode = im.mode
    if mode == "RGB":
        return im.copy()
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im)
        # Mode "I" holds 16-bit data for most files (PNG/TIFF); 8-bit-range data stays as it is.
        arr = _scale_16bit(arr) if arr.max(initial=0) > 255 else np.clip(arr, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
    if mode == "F":
        arr = np.nan_to_num(np.asarray(im, dtype=np.float32))
        scale = 255.0 if arr.max(initial=0.0) <= 1.0 else 1.0
        return Image.fromarray(np.clip(arr * scale, 0, 255).round().astype(np.uint8), "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info)
    if has_alpha:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")  # L, P, 1, CMYK, YCbCr, LAB, HSV


# -- the record a generated PNG carries (written by the command line and the web app alike) -------------------
PNG_KEY = "pose_studio"  # the PNG text chunk that carries how the image was made, as JSON


def png_info(record: dict[str, Any]) -> PngImagePlugin.PngInfo:
    """A PNG text chunk holding `record` as JSON, so the file says how it was made."""
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_KEY, json.dumps(record))
    return info


def read_png_record(path: str | Path) -> dict[str, Any] | None:
    """The record stored in a PNG by `png_info`, or None."""
    with Image.open(path) as im:
        text = im.info.get(PNG_KEY)
    return json.loads(text) if text else None
