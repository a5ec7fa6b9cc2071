"""The pose schema (17 COCO keypoints) and its conversions to and from every format we read.

Coordinates are `(x, y)` in `[0, 1]` of the frame (`x` to the right, `y` down) and a visibility in
`[0, 1]`; a point counts as visible at `v >= VISIBLE`. Points may lie a little outside the frame
(a knee below the bottom edge); they are kept as they are, never clamped.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import InputError

COCO_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
NUM_KEYPOINTS = 17
VISIBLE = 0.5  # visibility at or above which a point is drawn and scored
# COCO's v flag (0 unlabelled, 1 labelled but hidden, 2 visible) <-> our visibility.
COCO_FLAG_TO_VIS = {0: 0.0, 1: 0.25, 2: 1.0}

# The 16 limbs of the COCO skeleton (indices into COCO_NAMES), head first, as drawn by most tools.
LIMBS: tuple[tuple[int, int], ...] = (
    (0, 1), (0, 2), (1, 3), (2, 4),            # face
    (5, 6), (5, 11), (6, 12), (11, 12),        # torso
    (5, 7), (7, 9), (6, 8), (8, 10),           # arms
    (11, 13), (13, 15), (12, 14), (14, 16),    # legs
)  # fmt: skip

# Index of the mirrored partner of each keypoint (left <-> right).
FLIP_INDEX: tuple[int, ...] = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)

# mediapipe Pose's 33 landmarks -> the 17 COCO points.
MEDIAPIPE_TO_COCO: tuple[int, ...] = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)

# OpenPose BODY-18 order: nose, neck, R-sho, R-elb, R-wri, L-sho, L-elb, L-wri, R-hip, R-knee,
# R-ank, L-hip, L-knee, L-ank, R-eye, L-eye, R-ear, L-ear. Entry i is the COCO index of point i
# (-1 for the neck, which COCO lacks: it is the mid-shoulder).
OPENPOSE18_TO_COCO: tuple[int, ...] = (0, -1, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)

# The keypoint-LDM fork's names ("eye_left") for each COCO point.
FORK_NAMES: tuple[str, ...] = tuple("_".join(reversed(n.split("_"))) if "_" in n else n for n in COCO_NAMES)
FORK_FRAME = 512  # the fork's files are in a 512 x 512 frame, as [y, x]

# A sane bound for coordinates: a point may leave the frame, but not by more than a frame.
_COORD_RANGE = (-1.0, 2.0)
MAX_SIDE = 16384  # a frame size above this is not a real image


@dataclass(frozen=True)
class Pose:
    """17 COCO keypoints as an array `(17, 3)` of `x, y` in `[0, 1]` of the frame and visibility."""

    keypoints: np.ndarray = field(repr=False)
    width: int = 512
    height: int = 512

    def __post_init__(self) -> None:
        kp = np.asarray(self.keypoints, dtype=np.float32)
        if kp.shape != (NUM_KEYPOINTS, 3):
            raise InputError(f"A pose needs 17 keypoints of (x, y, visibility); got shape {kp.shape}.")
        if not np.isfinite(kp).all():
            raise InputError("The pose has a coordinate or visibility that is not a finite number.")
        lo, hi = _COORD_RANGE
        if (kp[:, :2] < lo).any() or (kp[:, :2] > hi).any():
            raise InputError("A keypoint lies more than one frame outside the image.")
        if (kp[:, 2] < 0).any() or (kp[:, 2] > 1).any():
            raise InputError("Keypoint visibility must lie between 0 and 1.")
        if not (1 <= int(self.width) <= MAX_SIDE and 1 <= int(self.height) <= MAX_SIDE):
            raise InputError(f"The frame size must be between 1 and {MAX_SIDE} pixels a side.")
        kp.setflags(write=False)
        object.__setattr__(self, "keypoints", kp)
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))

    # -- views ---------------------------------------------------------------------------------
    @property
    def xy(self) -> np.ndarray:
        """The `(17, 2)` normalised coordinates."""
        return self.keypoints[:, :2]

    @property
    def visibility(self) -> np.ndarray:
        """The `(17,)` visibilities."""
        return self.keypoints[:, 2]

    @property
    def visible(self) -> np.ndarray:
        """A `(17,)` boolean mask of the points counted as visible."""
        return self.keypoints[:, 2] >= VISIBLE

    def pixels(self) -> np.ndarray:
        """The `(17, 2)` coordinates in pixels of the frame."""
        return self.xy * np.array([self.width, self.height], dtype=np.float32)

    def bbox(self) -> tuple[float, float, float, float]:
        """The pixel box `(x0, y0, x1, y1)` of the visible points (of all points if none is)."""
        px = self.pixels()
        pts = px[self.visible] if self.visible.any() else px
        return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Pose)
            and (self.width, self.height) == (other.width, other.height)
            and np.array_equal(self.keypoints, other.keypoints)
        )

    __hash__ = None  # type: ignore[assignment]

    def isclose(self, other: Pose, atol: float = 1e-5) -> bool:
        """Same frame and keypoints within `atol` (conversions through pixels lose float32 bits)."""
        return (self.width, self.height) == (other.width, other.height) and bool(
            np.allclose(self.keypoints, other.keypoints, atol=atol)
        )

    # -- our own JSON --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Our own JSON object: `{"format": "coco17", "width", "height", "keypoints": [[x, y, v]...]}`."""
        return {
            "format": "coco17",
            "width": self.width,
            "height": self.height,
            "keypoints": [[float(x), float(y), float(v)] for x, y, v in self.keypoints],
        }

    def to_json(self) -> str:
        """Our own JSON as a string."""
        return json.dumps(self.to_dict())


# -- pure transforms -------------------------------------------------------------------------------
def mirror(pose: Pose) -> Pose:
    """Mirror left to right: `x -> 1 - x`, and the left/right labels swap."""
    kp = pose.keypoints[list(FLIP_INDEX)].copy()
    kp[:, 0] = 1.0 - kp[:, 0]
    return Pose(kp, pose.width, pose.height)


def fit_to_square(pose: Pose, size: int = 512, margin: float = 0.1, centre: tuple[float, float] = (0.5, 0.5)) -> Pose:
    """Put the visible points' box at `centre` of a `size` square frame, its longer side spanning `1 - 2 margin`."""
    if not 0 <= margin < 0.5:
        raise InputError("The margin must lie in [0, 0.5).")
    x0, y0, x1, y1 = pose.bbox()
    extent = max(x1 - x0, y1 - y0)
    scale = (1 - 2 * margin) / extent if extent > 1e-6 else 1.0 / max(pose.width, pose.height)
    box_centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2], dtype=np.float64)
    px = pose.pixels().astype(np.float64)
    xy = (px - box_centre) * scale + np.asarray(centre, dtype=np.float64)
    kp = np.concatenate([xy, pose.visibility[:, None]], axis=1)
    # Far-off hidden points could leave the sane range after scaling; they carry no information.
    hidden_far = ~pose.visible & ((xy < _COORD_RANGE[0]) | (xy > _COORD_RANGE[1])).any(axis=1)
    kp[hidden_far] = [0.5, 0.5, 0.0]
    return Pose(kp.astype(np.float32), size, size)


# -- conversions in --------------------------------------------------------------------------------
def from_mediapipe(landmarks: Any, width: int, height: int) -> Pose:
    """From mediapipe's 33 normalised landmarks (objects with `.x .y .visibility`, or an `(33, 3+)` array)."""
    if hasattr(landmarks, "landmark"):
        landmarks = landmarks.landmark
    if isinstance(landmarks, np.ndarray):
        arr = np.asarray(landmarks, dtype=np.float32)
    else:
        arr = np.array([[lm.x, lm.y, getattr(lm, "visibility", 1.0)] for lm in landmarks], dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] != 33 or arr.shape[1] < 3:
        raise InputError(f"mediapipe landmarks must be 33 points of (x, y, visibility); got {arr.shape}.")
    kp = arr[list(MEDIAPIPE_TO_COCO), :3].copy()
    kp[:, 2] = np.clip(kp[:, 2], 0.0, 1.0)
    # mediapipe extrapolates hidden points far outside the frame; keep them but bound them so a
    # Pose can hold them (they are marked hidden, so nothing draws them).
    far = ((kp[:, :2] < _COORD_RANGE[0]) | (kp[:, :2] > _COORD_RANGE[1])).any(axis=1)
    kp[far, :2] = np.clip(kp[far, :2], *_COORD_RANGE)
    kp[far, 2] = np.minimum(kp[far, 2], 0.1)
    return Pose(kp, width, height)


def to_mediapipe(pose: Pose) -> np.ndarray:
    """To a `(33, 3)` array of mediapipe landmarks; points COCO lacks get visibility 0."""
    out = np.zeros((33, 3), dtype=np.float32)
    out[list(MEDIAPIPE_TO_COCO)] = pose.keypoints
    return out


def from_coco_flat(values: list[float], width: int, height: int) -> Pose:
    """From COCO's flat `[x, y, v] * 17` in pixels, `v` in {0, 1, 2}."""
    arr = _numbers(values, "keypoints")
    if arr.size != 3 * NUM_KEYPOINTS:
        raise InputError(f"COCO keypoints must be 51 numbers (x, y, v for 17 points); got {arr.size}.")
    arr = arr.reshape(NUM_KEYPOINTS, 3)
    flags = arr[:, 2]
    if not np.isin(flags, (0, 1, 2)).all():
        raise InputError("COCO visibility flags must be 0, 1 or 2.")
    kp = np.empty_like(arr)
    kp[:, 0] = arr[:, 0] / width
    kp[:, 1] = arr[:, 1] / height
    kp[:, 2] = [COCO_FLAG_TO_VIS[int(f)] for f in flags]
    return Pose(kp, width, height)


def to_coco_flat(pose: Pose) -> list[float]:
    """To COCO's flat `[x, y, v] * 17` in pixels (`v`: 2 visible, 1 hidden but placed, 0 absent)."""
    out: list[float] = []
    for (x, y), v in zip(pose.pixels(), pose.visibility):
        flag = 2 if v >= VISIBLE else (1 if v > 0 else 0)
        out += [float(x), float(y), flag]
    return out


def from_openpose18(values: list[float], width: int, height: int) -> Pose:
    """From OpenPose BODY-18 `pose_keypoints_2d` (`[x, y, c] * 18` in pixels; the neck is dropped)."""
    arr = _numbers(values, "pose_keypoints_2d")
    if arr.size != 54:
        raise InputError(f"OpenPose BODY-18 keypoints must be 54 numbers (x, y, c for 18 points); got {arr.size}.")
    arr = arr.reshape(18, 3)
    kp = np.zeros((NUM_KEYPOINTS, 3), dtype=np.float32)
    for i, coco in enumerate(OPENPOSE18_TO_COCO):
        if coco < 0:
            continue
        x, y, c = arr[i]
        # OpenPose writes (0, 0, 0) for a point it did not find.
        kp[coco] = [x / width, y / height, min(max(c, 0.0), 1.0)] if c > 0 else [0.5, 0.5, 0.0]
    return Pose(kp, width, height)


def to_openpose18(pose: Pose) -> list[float]:
    """To OpenPose BODY-18 `pose_keypoints_2d`; the neck is the mid-shoulder, absent points are zeros."""
    px = pose.pixels()
    out: list[float] = []
    for coco in OPENPOSE18_TO_COCO:
        if coco < 0:
            ls, rs = 5, 6
            if pose.visibility[ls] > 0 and pose.visibility[rs] > 0:
                x, y = (px[ls] + px[rs]) / 2
                out += [float(x), float(y), float(min(pose.visibility[ls], pose.visibility[rs]))]
            else:
                out += [0.0, 0.0, 0.0]
        elif pose.visibility[coco] > 0:
            out += [float(px[coco, 0]), float(px[coco, 1]), float(pose.visibility[coco])]
        else:
            out += [0.0, 0.0, 0.0]
    return out


def from_fork(obj: dict[str, Any]) -> Pose:
    """From the keypoint-LDM fork's `{"nose": [y, x], ...}` in a 512 frame (all points visible)."""
    missing = [n for n in FORK_NAMES if n not in obj]
    if missing:
        raise InputError(f"The keypoint file lacks {len(missing)} of the 17 names: {', '.join(missing)}.")
    kp = np.zeros((NUM_KEYPOINTS, 3), dtype=np.float32)
    for i, name in enumerate(FORK_NAMES):
        yx = _numbers(obj[name], name)
        if yx.size != 2:
            raise InputError(f"The point '{name}' must be two numbers [y, x]; got {yx.size}.")
        kp[i] = [yx[1] / FORK_FRAME, yx[0] / FORK_FRAME, 1.0]
    return Pose(kp, FORK_FRAME, FORK_FRAME)


def to_fork(pose: Pose) -> dict[str, list[float]]:
    """To the fork's `{"nose": [y, x], ...}` in a 512 frame (the fork has no visibility)."""
    return {name: [float(y * FORK_FRAME), float(x * FORK_FRAME)] for name, (x, y) in zip(FORK_NAMES, pose.xy)}


# The files a pose is saved as, each read back by `from_dict`: ours; OpenPose's JSON (what ControlNet pose editors
# load); a COCO keypoint annotation file; the keypoint-LDM fork's (a 512 x 512 frame, no visibility).
FILE_FORMATS: tuple[str, ...] = ("ours", "openpose", "coco", "fork")


def to_file(pose: Pose, fmt: str = "ours") -> dict[str, Any]:
    """The pose as the JSON object of a file in `fmt` (one of FILE_FORMATS)."""
    if fmt == "ours":
        return pose.to_dict()
    if fmt == "openpose":
        people = [{"pose_keypoints_2d": to_openpose18(pose)}]
        return {"canvas_width": pose.width, "canvas_height": pose.height, "people": people}
    if fmt == "coco":
        annotation = {"id": 1, "image_id": 1, "category_id": 1, "keypoints": to_coco_flat(pose)}
        annotation["num_keypoints"] = int((pose.visibility > 0).sum())
        return {
            "images": [{"id": 1, "width": pose.width, "height": pose.height}],
            "annotations": [annotation],
            "categories": [{"id": 1, "name": "person", "keypoints": list(COCO_NAMES),
                            "skeleton": [[a + 1, b + 1] for a, b in LIMBS]}],  # COCO counts points from 1
        }  # fmt: skip
    if fmt == "fork":
        return to_fork(pose)
    raise InputError(f"Unknown pose file format {fmt!r}; choose one of {', '.join(FILE_FORMATS)}.")


def file_text(pose: Pose, fmt: str = "ours") -> str:
    """The text of a pose file in `fmt`; ours with one keypoint a line and 4 decimals (what the Pose tab shows)."""
    if fmt != "ours":
        return json.dumps(to_file(pose, fmt), indent=1)
    points = ",\n".join(f"  [{x:.4f}, {y:.4f}, {v:.4g}]" for x, y, v in pose.to_dict()["keypoints"])
    return f'{{"format": "coco17",\n "width": {pose.width}, "height": {pose.height},\n "keypoints": [\n{points}\n]}}'


def from_dict(obj: Any) -> Pose:
    """From any JSON object we read: ours, COCO (annotation or flat list), OpenPose, or the fork's."""
    if isinstance(obj, list):
        if len(obj) == 51:
            raise InputError(
                "A bare list of 51 COCO numbers needs a frame size: wrap it as "
                '{"keypoints": [...], "width": W, "height": H}.'
            )
        if len(obj) == 17 and all(isinstance(p, (list, tuple)) for p in obj):
            obj = {"keypoints": obj}
        else:
            raise InputError(f"A list of {len(obj)} items is not a pose; expected 17 [x, y, v] points.")
    if not isinstance(obj, dict):
        raise InputError("The JSON is not an object describing a pose.")
    if "people" in obj:  # OpenPose
        people = obj["people"]
        if not isinstance(people, list) or not people:
            raise InputError("The OpenPose file has no people in it.")
        w, h = _frame(obj, "canvas_width", "canvas_height", 512)
        return from_openpose18(people[0].get("pose_keypoints_2d", []), w, h)
    if "annotations" in obj:  # a COCO file: take the first person
        anns = obj["annotations"]
        if not isinstance(anns, list) or not anns:
            raise InputError("The COCO file has no annotations in it.")
        ann = anns[0]
        img = (obj.get("images") or [{}])[0]
        w, h = _frame(img, "width", "height", None)
        return from_coco_flat(ann.get("keypoints", []), w, h)
    if "keypoints" in obj:
        kps = obj["keypoints"]
        if isinstance(kps, list) and kps and not isinstance(kps[0], (list, tuple)):
            w, h = _frame(obj, "width", "height", None)
            return from_coco_flat(kps, w, h)  # a single COCO annotation with the frame size
        w, h = _frame(obj, "width", "height", 512)
        arr = _numbers(kps, "keypoints")
        if arr.ndim != 2 or arr.shape[0] != NUM_KEYPOINTS or arr.shape[1] not in (2, 3):
            raise InputError(f"A pose needs 17 keypoints of [x, y, visibility]; got {len(kps)}.")
        if arr.shape[1] == 2:
            arr = np.concatenate([arr, np.ones((NUM_KEYPOINTS, 1), np.float32)], axis=1)
        return Pose(arr, w, h)
    if any(n in obj for n in FORK_NAMES):
        return from_fork(obj)
    raise InputError("The JSON is not a pose format we know (ours, COCO-17, OpenPose-18 or the fork's names).")


def loads(text: str) -> Pose:
    """Parse a pose from JSON text of any supported format."""
    if not text.strip():
        raise InputError("The keypoint file is empty.")
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as err:
        raise InputError(f"The keypoint file is not valid JSON ({err.msg} at line {err.lineno}).") from None
    return from_dict(obj)


def load(path: str | Path) -> Pose:
    """Read a pose from a JSON file of any supported format."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError("The keypoint file is not UTF-8 text.") from None
    except OSError as err:
        raise InputError(f"The keypoint file cannot be read ({err.strerror}).") from None
    return loads(text)


# -- helpers ---------------------------------------------------------------------------------------
def _reject_constant(name: str) -> float:
    raise InputError(f"The keypoint file contains {name}, which is not a number.")


def _numbers(values: Any, what: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"'{what}' must hold numbers only.") from None
    if arr.dtype == object:
        raise InputError(f"'{what}' must hold numbers only.")
    if not np.isfinite(arr).all():
        raise InputError(f"'{what}' contains a value that is not a finite number.")
    return arr.astype(np.float32)


def _frame(obj: dict[str, Any], wkey: str, hkey: str, default: int | None) -> tuple[int, int]:
    w, h = obj.get(wkey, default), obj.get(hkey, default)
    if w is None or h is None:
        raise InputError(f"The file needs the frame size ('{wkey}' and '{hkey}') to read pixel coordinates.")
    if isinstance(w, bool) or isinstance(h, bool) or not all(isinstance(v, (int, float)) for v in (w, h)):
        raise InputError(f"'{wkey}' and '{hkey}' must be numbers.")
    if not (math.isfinite(w) and math.isfinite(h) and 1 <= w <= MAX_SIDE and 1 <= h <= MAX_SIDE):
        raise InputError(f"The frame size must be between 1 and {MAX_SIDE} pixels a side.")
    return int(round(w)), int(round(h))  # noqa: RUF046 (numpy floats round to floats)
