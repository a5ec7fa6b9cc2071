"""Find a person's pose in a photo with mediapipe's bundled pose model (BlazePose, 0.10.21).

mediapipe's `solutions.pose` is a single-person model: its detector finds people, and the landmark
model then runs on the detection it ranks first (the highest score, which in practice is the most
prominent, usually the largest and most central, person). With several people in a photo we
therefore return one of them, never a mix.

    python -c "from models.extract import extract_pose; print(extract_pose('photo.jpg').to_json())"
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from models.errors import InputError
from models.image_io import load_image
from models.pose import Pose, from_mediapipe

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
