"""Load a user's image (path, bytes, PIL image or numpy array) as a safe, upright RGB PIL image.

Every check happens before the pixels are decoded: the file size first, then the size PIL reads
from the header. Any failure is an `InputError` with one sentence a person can act on.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from models.errors import InputError

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
