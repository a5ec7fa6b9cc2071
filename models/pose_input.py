"""Turn what a user gives as a pose (a photo, a keypoint JSON file, a preset name from `models/presets/`) into a Pose.

A photo goes through mediapipe's `solutions.pose` (`extract_pose`), a single-person model: its detector finds
people, and the landmark model then runs on the detection it ranks first (the highest score: in practice the most
prominent, usually the largest and most central, person). With several people in a photo we return one, never a mix.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from models.errors import InputError
from models.image_io import IMAGE_SUFFIXES, load_image, looks_like_image
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
