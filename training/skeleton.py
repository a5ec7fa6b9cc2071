"""A 3D anime-proportioned skeleton posed by an action, seen from a camera yaw, projected to a Pose.

`sample_rig(rng)` returns everything the renderer needs (2D points, depth per joint, head
orientation, torso widths, action and yaw labels); `sample_pose(rng)` returns only the `Pose`.
Units inside are head radii (the cranium is a unit sphere); the rig is fitted into a unit frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from models.pose import NUM_KEYPOINTS, Pose

ACTIONS: tuple[str, ...] = (
    "stand", "walk", "run", "jump", "sit", "kneel", "arms up", "wave", "point", "dance", "fight",
    "hands on hips",
)  # fmt: skip
YAWS: tuple[str, ...] = ("front", "three-quarter", "side", "back")
HIDDEN = 0.25  # visibility of a point that is placed but hidden (COCO flag 1)
FREE = "free"  # the wide sampler's action: every joint anywhere within its anatomical range

# Ranges (degrees) of the free action, within human joint limits (Kapandji's ranges, rounded): a limb is
# (elevation from straight down, azimuth from outward toward forward, bend of the elbow or knee).
ARM_RANGE = ((0.0, 180.0), (-40.0, 130.0), (0.0, 145.0))
LEG_RANGE = ((0.0, 125.0), (-30.0, 110.0), (0.0, 150.0))
TORSO_RANGE = {"lean": (-25.0, 70.0), "twist": (-45.0, 45.0), "roll": (-25.0, 25.0)}
HEAD_RANGE = {"head_yaw": (-70.0, 70.0), "head_pitch": (-35.0, 40.0), "head_roll": (-30.0, 30.0)}
WIDE_FREE = 0.4  # share of free poses among the wide sampler's
WIDE_CROP = 0.25  # share of wide poses cut by the frame (a figure from the waist or the knees up)
WIDE_PITCH = 30.0  # the wide camera's pitch range (degrees either way): limbs foreshortened toward or away

# Points on the unit head sphere (x = the character's left, y up, z forward), used both to place
# the COCO face points and to draw the face, so the labels and the drawing agree exactly.
FACE_POINTS = {
    "nose": (0.0, -0.52, 0.86),
    "left_eye": (0.36, -0.36, 0.86),
    "right_eye": (-0.36, -0.36, 0.86),
    "left_ear": (0.93, -0.3, -0.05),
    "right_ear": (-0.93, -0.3, -0.05),
}
# The least a face point's surface may turn toward the camera (z of its unit normal) and still be seen.
FACE_LIMITS = {"nose": -0.05, "left_eye": 0.22, "right_eye": 0.22, "left_ear": -0.35, "right_ear": -0.35}


@dataclass
class Rig:
    """A posed, projected character skeleton in a unit frame (x right, y down), with depth."""

    pose: Pose  # 17 points in [0, 1]; visibility from facing (the renderer adds overlap)
    depth: np.ndarray = field(repr=False)  # (17,) nearer is larger, in frame units
    head_center: np.ndarray = field(repr=False)  # (2,)
    head_radius: float = 0.05  # in frame units
    head_depth: float = 0.0
    head_rot: np.ndarray = field(default_factory=lambda: np.eye(3), repr=False)  # head -> camera
    body_rot: np.ndarray = field(default_factory=lambda: np.eye(3), repr=False)  # body -> camera
    neck: np.ndarray = field(default_factory=lambda: np.zeros(2), repr=False)  # (2,) neck base
    shoulder_hw: float = 0.05  # projected half width of the chest
    hip_hw: float = 0.04  # projected half width of the hips
    limb_radius: float = 0.012  # upper-arm radius in frame units
    heads: float = 5.0  # body height in head heights (chibi ~3, adult ~7)
    action: str = "stand"
    yaw: str = "front"
    yaw_deg: float = 0.0


def rot_x(a: float) -> np.ndarray:
    """The rotation by `a` radians about the x axis."""
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_y(a: float) -> np.ndarray:
    """The rotation by `a` radians about the y axis."""
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rot_z(a: float) -> np.ndarray:
    """The rotation by `a` radians about the z axis."""
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def face_turned_away(head_rot: np.ndarray) -> list[bool]:
    """For each face point (in FACE_POINTS order): whether its surface turns too far from the camera to be seen."""
    away = []
    for name, p in FACE_POINTS.items():
        n = head_rot @ np.array(p)
        away.append(bool(n[2] / np.linalg.norm(n) < FACE_LIMITS[name]))
    return away


def _direction(elev: float, azim: float, side: float) -> np.ndarray:
    """A limb direction: elevation from straight down (deg), azimuth from outward toward forward."""
    e, a = math.radians(elev), math.radians(azim)
    return np.array([side * math.sin(e) * math.cos(a), -math.cos(e), math.sin(e) * math.sin(a)])


def _bend(u: np.ndarray, angle: float, hint: np.ndarray) -> np.ndarray:
    """Rotate direction `u` by `angle` degrees toward `hint` (a joint bending in a plane)."""
    h = hint - (hint @ u) * u
    n = np.linalg.norm(h)
    if n < 1e-6:  # hint along the limb: bend forward, or up if the limb points forward
        h = np.array([0.0, 0.0, 1.0]) if abs(u[2]) < 0.9 else np.array([0.0, 1.0, 0.0])
        h = h - (h @ u) * u
        n = np.linalg.norm(h)
    a = math.radians(angle)
    return math.cos(a) * u + math.sin(a) * h / n


FWD, UP, BACK_DOWN = (0.0, 0.2, 1.0), (0.0, 1.0, 0.3), (0.0, -1.0, -1.0)


def _action_params(action: str, rng: np.random.Generator) -> dict:
    """Joint angles (degrees) for an action, jittered: arms/legs are (elev, azim, bend, hint)."""

    def j(s: float) -> float:
        return float(rng.uniform(-s, s))

    hang = lambda: (10 + j(8), 40 + j(30), 12 + j(10), FWD)
    leg = lambda: (4 + j(3), j(20), 3 + j(3), BACK_DOWN)
    p = {"lean": j(4), "twist": j(8), "roll": j(3), "head_yaw": j(15), "head_pitch": j(8), "head_roll": j(8)}
    arms = [hang(), hang()]
    legs = [leg(), leg()]
    if action == "walk":
        s = rng.uniform(0.6, 1.0)
        legs = [(25 * s + j(5), 90, 8 + j(5), BACK_DOWN), (20 * s + j(5), -90, 30 * s + j(8), BACK_DOWN)]
        arms = [(25 * s + j(5), -90, 15 + j(8), FWD), (25 * s + j(5), 90, 30 + j(10), FWD)]
    elif action == "run":
        legs = [(60 + j(10), 90, 95 + j(15), BACK_DOWN), (35 + j(8), -90, 75 + j(15), BACK_DOWN)]
        arms = [(45 + j(10), -90, 90 + j(10), FWD), (50 + j(10), 90, 100 + j(10), UP)]
        p["lean"] = 14 + j(5)
    elif action == "jump":
        if rng.random() < 0.5:
            legs = [(35 + j(10), 90, 80 + j(15), BACK_DOWN), (25 + j(10), 90, 90 + j(15), BACK_DOWN)]
        else:
            legs = [(25 + j(8), j(20), 10 + j(8), BACK_DOWN), (25 + j(8), j(20), 10 + j(8), BACK_DOWN)]
        arms = [(150 + j(15), 10 + j(20), 20 + j(15), FWD), (150 + j(15), 10 + j(20), 20 + j(15), FWD)]
    elif action == "sit":
        a = 80 + j(10)
        legs = [(90 + j(8), a, 90 + j(10), BACK_DOWN), (90 + j(8), a, 90 + j(10), BACK_DOWN)]
        arms = [(20 + j(10), 60 + j(20), 55 + j(15), FWD), (20 + j(10), 60 + j(20), 55 + j(15), FWD)]
    elif action == "kneel":
        if rng.random() < 0.5:
            legs = [(5 + j(5), 10 + j(10), 110 + j(10), BACK_DOWN), (5 + j(5), 10 + j(10), 110 + j(10), BACK_DOWN)]
        else:
            legs = [(90 + j(8), 85, 90 + j(8), BACK_DOWN), (8 + j(5), -80, 100 + j(10), BACK_DOWN)]
        arms = [(15 + j(10), 60 + j(20), 40 + j(15), FWD), (15 + j(10), 60 + j(20), 40 + j(15), FWD)]
    elif action == "arms up":
        arms = [(165 + j(10), 20 + j(30), 15 + j(15), FWD), (165 + j(10), 20 + j(30), 15 + j(15), FWD)]
    elif action == "wave":
        arms[1] = (80 + j(15), 15 + j(20), 100 + j(20), UP)
        p["head_roll"] = j(15)
    elif action == "point":
        arms[1] = (90 + j(15), 70 + j(25), 5 + j(5), FWD)
        p["head_yaw"] = 15 + j(10)
    elif action == "dance":
        arms = [
            (float(rng.uniform(30, 170)), float(rng.uniform(-30, 90)), float(rng.uniform(0, 110)), UP),
            (float(rng.uniform(30, 170)), float(rng.uniform(-30, 90)), float(rng.uniform(0, 110)), FWD),
        ]
        legs[0] = (35 + j(15), float(rng.uniform(0, 90)), 30 + j(20), BACK_DOWN)
        p["roll"] = j(10)
        p["head_roll"] = j(20)
    elif action == "fight":
        arms = [(50 + j(10), 70 + j(15), 120 + j(15), UP), (40 + j(10), 80 + j(10), 125 + j(15), UP)]
        legs = [(22 + j(5), 60 + j(20), 20 + j(10), BACK_DOWN), (20 + j(5), -40 + j(20), 15 + j(10), BACK_DOWN)]
        p["twist"] = 25 + j(10)
    elif action == "hands on hips":
        hip = (-1.0, -0.6, 0.1)
        arms = [(45 + j(8), -15 + j(10), 110 + j(10), hip), (45 + j(8), -15 + j(10), 110 + j(10), hip)]
    p["arms"], p["legs"] = arms, legs
    if rng.random() < 0.5:  # the same action with the other hand / foot leading
        p["arms"], p["legs"] = arms[::-1], legs[::-1]
        p["twist"], p["head_yaw"], p["roll"], p["head_roll"] = (
            -p["twist"],
            -p["head_yaw"],
            -p["roll"],
            -p["head_roll"],
        )
    return p


def _free_params(rng: np.random.Generator) -> dict:
    """Joint angles anywhere within ARM_RANGE, LEG_RANGE, TORSO_RANGE and HEAD_RANGE, each limb on its own."""
    u = lambda lo_hi: float(rng.uniform(*lo_hi))
    hints = (FWD, UP, (-1.0, -0.6, 0.1))
    p = {k: u(r) for k, r in {**TORSO_RANGE, **HEAD_RANGE}.items()}
    p["arms"] = [(*(u(r) for r in ARM_RANGE), hints[int(rng.integers(3))]) for _ in range(2)]
    p["legs"] = [(*(u(r) for r in LEG_RANGE), BACK_DOWN) for _ in range(2)]
    return p


def _sample_yaw(rng: np.random.Generator) -> tuple[str, float]:
    label = YAWS[int(rng.choice(4, p=[0.4, 0.3, 0.15, 0.15]))]
    sign = 1 if rng.random() < 0.5 else -1
    lo, hi = {"front": (0, 20), "three-quarter": (25, 62), "side": (68, 105), "back": (150, 180)}[label]
    return label, sign * float(rng.uniform(lo, hi))


def sample_rig(
    rng: np.random.Generator,
    action: str | None = None,
    yaw: str | None = None,
    heads: float | None = None,
    wide: bool = False,
) -> Rig:
    """Sample body proportions, an action and a camera yaw; pose, project and fit into the frame.

    `wide` widens the space toward the poses people make in photos: a share WIDE_FREE of free poses (every joint
    within its range), a camera pitched up to WIDE_PITCH degrees, and a share WIDE_CROP cut by the frame below
    the head. Without it the draws are those of the 12 actions, exactly as before (the held-out split stays)."""
    if wide and action is None and rng.random() < WIDE_FREE:
        action = FREE
    if action is None:
        action = ACTIONS[int(rng.integers(len(ACTIONS)))]
    if yaw is None:
        yaw_label, yaw_deg = _sample_yaw(rng)
    else:
        yaw_label, yaw_deg = yaw, {"front": 0.0, "three-quarter": 45.0, "side": 90.0, "back": 180.0}[yaw]
    if heads is None:
        heads = float(np.clip(rng.normal(4.2, 0.85), 2.8, 6.6))
    p = _free_params(rng) if action == FREE else _action_params(action, rng)
    b = _build(heads)
    J, torso_rot, head_rot, neck, head_c = _joints(p, b)
    # The camera: yaw about the vertical, a slight pitch; orthographic (y flips to point down).
    pitch = WIDE_PITCH if wide else 6.0
    cam = rot_x(math.radians(float(rng.uniform(-pitch, pitch)))) @ rot_y(math.radians(yaw_deg))
    P, hc, nk = J @ cam.T, cam @ head_c, cam @ neck
    body_rot, hrot = cam @ torso_rot, cam @ head_rot
    xy = np.stack([P[:, 0], -P[:, 1]], axis=1)
    hxy = np.array([hc[0], -hc[1]])
    lo, scale, off = _fit(xy, hxy, b.limb_r, rng, wide)

    def tf(q: np.ndarray) -> np.ndarray:
        return (q - lo) * scale + off

    kp = np.concatenate([tf(xy), _facing_visibility(hrot, body_rot)[:, None]], axis=1).astype(np.float32)
    outside = ((kp[:, :2] < 0.0) | (kp[:, :2] > 1.0)).any(axis=1)
    kp[outside, 2] = 0.0  # cut off by the frame: absent (COCO flag 0), as a photo's keypoint reader leaves it
    # The torso's cross-section is an ellipse (half width x half depth); its projected half widths:
    bx, fx = body_rot[0, 0], body_rot[0, 2]
    return Rig(
        pose=Pose(kp, 128, 128),
        depth=(P[:, 2] * scale).astype(np.float32),
        head_center=tf(hxy),
        head_radius=float(scale),
        head_depth=float(hc[2] * scale),
        head_rot=hrot,
        body_rot=body_rot,
        neck=tf(np.array([nk[0], -nk[1]])),
        shoulder_hw=float(math.hypot(b.sw * bx, b.chest * fx) * scale),
        hip_hw=float(math.hypot(b.hw * bx, 0.9 * b.chest * fx) * scale),
        limb_radius=float(b.limb_r * scale),
        heads=heads,
        action=action,
        yaw=yaw_label,
        yaw_deg=yaw_deg,
    )


@dataclass
class _Build:
    """Body lengths and widths in head radii (the head is 2.1 tall from crown to chin)."""

    neck: float
    torso: float
    thigh: float
    shin: float
    upper: float  # upper arm
    fore: float  # forearm
    sw: float  # half width of the shoulders
    hw: float  # half width of the hips
    chest: float  # half depth of the chest
    limb_r: float


def _build(heads: float) -> _Build:
    """The proportions of a body `heads` head heights tall."""
    k = heads - 3.0
    neck = 0.12 + 0.06 * k
    rest = heads * 2.1 - 2.1 - neck
    torso, leg = 0.44 * rest, 0.56 * rest
    arm = 0.82 * leg
    return _Build(
        neck=neck, torso=torso, thigh=0.5 * leg, shin=0.47 * leg, upper=0.52 * arm, fore=0.48 * arm,
        sw=0.62 + 0.11 * k, hw=0.45 + 0.07 * k, chest=0.42 + 0.06 * k, limb_r=0.2 + 0.025 * k,
    )  # fmt: skip


def _joints(p: dict, b: _Build) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The 17 joints in the body frame (pelvis at the origin, x the character's left, y up, z forward), the torso's
    and the head's rotations, the neck base and the head centre."""
    rad = math.radians
    torso_rot = rot_y(rad(p["twist"])) @ rot_z(rad(p["roll"])) @ rot_x(rad(p["lean"]))
    up = torso_rot @ np.array([0.0, 1.0, 0.0])
    neck = b.torso * up
    J = np.zeros((NUM_KEYPOINTS, 3))
    for i, side in ((5, 1.0), (6, -1.0)):
        J[i] = neck - 0.1 * b.torso * up + torso_rot @ np.array([side * b.sw, 0.0, 0.0])
        elev, azim, bend, hint = p["arms"][0 if side > 0 else 1]
        u = torso_rot @ _direction(elev, azim, side)
        h = torso_rot @ (np.array(hint) * np.array([side, 1.0, 1.0]))
        J[i + 2] = J[i] + b.upper * u
        J[i + 4] = J[i + 2] + b.fore * _bend(u, bend, h)
    for i, side in ((11, 1.0), (12, -1.0)):
        J[i] = np.array([side * b.hw, 0.0, 0.0])
        elev, azim, bend, hint = p["legs"][0 if side > 0 else 1]
        u = _direction(elev, azim, side)
        J[i + 2] = J[i] + b.thigh * u
        J[i + 4] = J[i + 2] + b.shin * _bend(u, bend, np.array(hint))
    head_rot = torso_rot @ rot_y(rad(p["head_yaw"])) @ rot_x(rad(-p["head_pitch"])) @ rot_z(rad(p["head_roll"]))
    head_c = neck + (b.neck + 0.9) * (head_rot @ np.array([0.0, 1.0, 0.12]))
    for idx, point in enumerate(FACE_POINTS.values()):
        J[idx] = head_c + head_rot @ np.array(point)
    return J, torso_rot, head_rot, neck, head_c


def _facing_visibility(head_rot: np.ndarray, body_rot: np.ndarray) -> np.ndarray:
    """1 for every point, HIDDEN where its surface turns from the camera (face points, a far shoulder or hip)."""
    vis = np.ones(NUM_KEYPOINTS)
    for idx, away in enumerate(face_turned_away(head_rot)):
        if away:
            vis[idx] = HIDDEN
    for idx, side in ((5, 1), (6, -1), (11, 1), (12, -1)):
        if (body_rot @ np.array([side, 0.0, 0.0]))[2] < -0.72:
            vis[idx] = HIDDEN
    return vis


def _fit(
    xy: np.ndarray, hxy: np.ndarray, limb_r: float, rng: np.random.Generator, wide: bool
) -> tuple[np.ndarray, float, np.ndarray]:
    """Place the drawn extent (head with hair, limbs with thickness) in the unit frame: `(lo, scale, off)` takes
    a point q to (q - lo) * scale + off. The wide sampler sometimes zooms in on the upper body."""
    pts = np.concatenate([xy - limb_r * 1.5, xy + limb_r * 1.5, [hxy - 1.25, hxy + 1.25]])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    ext = hi - lo
    fill = float(rng.uniform(0.76, 0.92))
    scale = min(fill / ext[1], 0.92 / ext[0])
    size = ext * scale
    room = np.maximum(1.0 - size - 0.04, 0.0)
    off = (1.0 - size - room) / 2 + room * rng.uniform(0.0, 1.0, 2)
    if wide and rng.random() < WIDE_CROP:
        scale, off = _crop(xy, hxy, lo, scale, rng)
    return lo, scale, off


def _crop(
    xy: np.ndarray, hxy: np.ndarray, lo: np.ndarray, base: float, rng: np.random.Generator
) -> tuple[float, np.ndarray]:
    """Zoom in on the upper body: the head (with its hair) stays inside, the frame cuts the legs or the hips. Every
    point stays within a frame of the image (what a Pose allows), else the zoom eases off."""
    zoom, at = float(rng.uniform(1.3, 2.2)), (float(rng.uniform(0.35, 0.65)), float(rng.uniform(0.03, 0.12)))
    while True:
        scale = base * zoom
        head_x, head_top = (hxy[0] - lo[0]) * scale, (hxy[1] - 1.25 - lo[1]) * scale
        off = np.array([at[0] - head_x, at[1] - head_top])
        placed = (xy - lo) * scale + off
        if (placed > -0.9).all() and (placed < 1.9).all() or zoom <= 1.0:
            return scale, off
        zoom = max(1.0, zoom * 0.9)


def sample_pose(rng: np.random.Generator, action: str | None = None, wide: bool = False) -> Pose:
    """A random pose (2D projection in a unit frame; visibility marks self-occlusion by facing)."""
    return sample_rig(rng, action, wide=wide).pose
