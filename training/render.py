"""A cel-shaded anime character drawn in a pose, with its exact keypoints and a mask.

`render(pose, character, size=128)` draws at `SS`x supersampling with PIL and downsamples for anti-aliasing. Every
part is drawn on a `training.render_head.Canvas`, which outlines and shades it and also writes it into a part-id
buffer, from which the visibility of each keypoint after overlap and the character mask are read. Parts are painted
far to near by the 3D rig's depth (`training.skeleton.Rig`) or one guessed from a 2D pose; heads: `render_head`.

    python -m training.render  # writes docs/contact_sheet.png (8 x 8 random samples)
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
from PIL import Image, ImageDraw

from models.pose import NUM_KEYPOINTS, VISIBLE, Pose, fit_to_square
from training import character as ch
from training.render_head import (
    BACK_HAIR,
    HEAD,
    LIGHT,
    NECK,
    SKIRT,
    TORSO,
    Canvas,
    Color,
    Head,
    accent,
    draw_head,
    hair_mass,
    hair_tails,
    head_top,
    ink,
    mix,
    shade,
)
from training.skeleton import FACE_POINTS, HIDDEN, Rig, face_turned_away, rot_y, rot_z

SS = 2  # supersampling factor
OFF_WHITE = (250, 250, 250)  # collars, socks, laces

# Limb part ids (the others are in `training.render_head`), and which parts "own" each keypoint (a
# point on a part it does not own is covered by something else, so it is hidden).
ARM = {1: (10, 11, 12), -1: (13, 14, 15)}  # upper, fore, hand
LEG = {1: (20, 21, 22), -1: (23, 24, 25)}  # thigh, shin, shoe
OWNERS: tuple[frozenset[int], ...] = (
    frozenset({HEAD}), frozenset({HEAD}), frozenset({HEAD}), frozenset({HEAD}), frozenset({HEAD}),
    frozenset({TORSO, NECK, HEAD, BACK_HAIR, 10}), frozenset({TORSO, NECK, HEAD, BACK_HAIR, 13}),
    frozenset({10, 11}), frozenset({13, 14}), frozenset({11, 12}), frozenset({14, 15}),
    frozenset({TORSO, SKIRT, BACK_HAIR, 20}), frozenset({TORSO, SKIRT, BACK_HAIR, 23}),
    frozenset({20, 21, SKIRT}), frozenset({23, 24, SKIRT}), frozenset({21, 22, SKIRT}), frozenset({24, 25, SKIRT}),
)  # fmt: skip


@dataclass
class Render:
    """A rendered character: the image, its pose with visibility after occlusion, and its mask."""

    image: Image.Image
    pose: Pose
    mask: np.ndarray  # (H, W) bool, True on character pixels


# -- the figure: everything drawn, in supersampled pixels ------------------------------------------
@dataclass
class _Figure:
    """The figure as drawn: keypoints, depth, head, neck and widths, in supersampled pixels."""

    kp: np.ndarray  # (17, 2)
    vis: np.ndarray  # (17,)
    depth: np.ndarray  # (17,)
    head: Head
    head_depth: float
    neck: np.ndarray
    shoulder_hw: float
    hip_hw: float
    limb_r: float
    forward_x: float  # screen x of the body's forward direction (feet point this way)
    facing: float  # > 0 when the chest faces the camera


def _figure_from_rig(rig: Rig, pose: Pose, s: float) -> _Figure:
    return _Figure(
        kp=pose.xy.astype(np.float64) * s,
        vis=pose.visibility.astype(np.float64).copy(),
        depth=rig.depth.astype(np.float64) * s,
        head=Head(c=rig.head_center * s, r=rig.head_radius * s, rot=rig.head_rot),
        head_depth=rig.head_depth * s,
        neck=rig.neck * s,
        shoulder_hw=rig.shoulder_hw * s,
        hip_hw=rig.hip_hw * s,
        limb_r=rig.limb_radius * s,
        forward_x=float(rig.body_rot[0, 2]),
        facing=float(rig.body_rot[2, 2]),
    )


def _figure_from_pose(pose: Pose, s: float) -> _Figure:
    """Guess the 3D cues (head size and turn, depth order, facing) a 2D pose lacks."""
    kp = pose.xy.astype(np.float64) * s
    vis = pose.visibility.astype(np.float64).copy()
    has, seen = vis > 0, vis >= VISIBLE
    ms = (kp[5] + kp[6]) / 2 if has[5] and has[6] else kp[5] if has[5] else kp[6]
    mh = (kp[11] + kp[12]) / 2 if has[11] and has[12] else kp[11] if has[11] else kp[12]
    torso = float(np.linalg.norm(ms - mh)) if (has[5] or has[6]) and (has[11] or has[12]) else 0.0
    cues = []
    if has[1] and has[2]:
        cues.append(np.linalg.norm(kp[1] - kp[2]) / 0.72)
    if has[3] and has[4]:
        cues.append(np.linalg.norm(kp[3] - kp[4]) / 1.86)
    r = max(cues) if cues else 0.0
    if torso > 0:
        r = float(np.clip(r, 0.4 * torso, 0.52 * torso)) if r > 0 else 0.45 * torso  # anime: a big head
    if r <= 0:
        r = 0.06 * s
    sdx = kp[5, 0] - kp[6, 0] if has[5] and has[6] else 0.0
    back, yaw, roll = _guess_turn(kp, has, seen, r, torso, sdx)
    rot = rot_z(roll) @ rot_y(yaw)
    face = [i for i in range(len(FACE_POINTS)) if has[i]]
    if face:
        offs = [(rot @ np.array(p))[:2] * (1, -1) * r for p in FACE_POINTS.values()]
        head_c = np.mean([kp[i] - offs[i] for i in face], axis=0)
    else:
        head_c = ms + np.array([0.0, -1.9 * r])
    # Depth: hidden points lie behind the body; in a side view the hidden side is the far side.
    depth = np.zeros(NUM_KEYPOINTS)
    depth[has & ~seen] = -0.8 * r
    for far, pts in ((5, (5, 7, 9, 11, 13, 15)), (6, (6, 8, 10, 12, 14, 16))):
        if has[far] and not seen[far]:
            depth[list(pts)] -= 0.6 * r
    limb_r = max(0.22 * r, 0.045 * torso) if torso > 0 else 0.22 * r
    hdx = abs(kp[11, 0] - kp[12, 0]) / 2 if has[11] and has[12] else 0.0
    return _Figure(
        kp=kp, vis=vis, depth=depth, head=Head(head_c, r, rot), head_depth=0.0, neck=ms + (head_c - ms) * 0.2,
        shoulder_hw=max(abs(sdx) / 2 + 0.2 * limb_r, 0.55 * r), hip_hw=max(hdx + 0.3 * limb_r, 0.45 * r),
        limb_r=limb_r, forward_x=math.sin(yaw) if not back else 0.0, facing=-1.0 if back else math.cos(yaw),
    )  # fmt: skip


def _guess_turn(kp, has, seen, r: float, torso: float, sdx: float) -> tuple[bool, float, float]:
    """Whether a 2D pose shows the back, and its head's yaw and roll (radians), from the face and the shoulders."""
    # Facing: the character's left shoulder on the image right (sdx > 0) means the chest faces us. Photo pose
    # models often place a face on a back view too; crossed shoulders are the firmer cue.
    face_seen = seen[0] or seen[1] or seen[2]
    back = (not face_seen and (sdx < 0 or not (seen[3] or seen[4]))) or (torso > 0 and sdx < -0.25 * torso)
    if back:
        yaw = math.pi
    elif has[3] and has[4] and has[0]:
        t = (kp[0, 0] - (kp[3, 0] + kp[4, 0]) / 2) / (0.86 * r)
        yaw = math.asin(float(np.clip(t, -0.98, 0.98)))
    elif has[0] and (seen[3] != seen[4]):
        yaw = math.radians(70) * (1 if seen[3] else -1)
    else:
        yaw = 0.0
    roll = 0.0
    if has[1] and has[2] and not back:
        e = kp[1] - kp[2]
        roll = -math.atan2(e[1], e[0]) if abs(e[0]) > 0.3 * abs(e[1]) else 0.0
        roll = float(np.clip(roll, -0.6, 0.6))  # eye lines from photos are noisy; heads rarely tilt more
    return back, yaw, roll


def estimate_view(pose: Pose) -> str:
    """The camera view of a 2D pose ('front', 'three-quarter', 'side' or 'back'), judged from its face."""
    f = _figure_from_pose(pose if pose.width == pose.height else fit_to_square(pose, 128, 0.08), 256.0)
    if f.facing <= -0.5:
        return "back"
    yaw = abs(math.degrees(math.atan2(f.forward_x, f.facing)))
    return "front" if yaw < 22 else "three-quarter" if yaw < 65 else "side"


# -- background ------------------------------------------------------------------------------------
def _background(c: ch.Character, n: int, rng_key: int) -> Image.Image:
    """The backdrop: plain, a gradient, or stripes (shifted by `rng_key`), dots or checks."""
    a, b = ch.BACKGROUNDS[c.background_color]
    kind = c.background
    if kind == "gradient":
        t = np.linspace(0.0, 1.0, n)[:, None, None]
        arr = (np.array(a) * (1 - t) + np.array(b) * t).astype(np.uint8)
        return Image.fromarray(np.broadcast_to(arr, (n, n, 3)).copy())
    img = Image.new("RGB", (n, n), a)
    d = ImageDraw.Draw(img)
    soft = mix(a, b, 0.55)
    step = n / 8
    if kind == "stripes":
        for k in range(-8, 9):
            x0 = k * step * 2 + (rng_key % 7) * step / 7
            d.polygon([(x0, 0), (x0 + step, 0), (x0 + step + n, n), (x0 + n, n)], fill=soft)
    elif kind == "dots":
        rr = step * 0.18
        for i in range(9):
            for j in range(9):
                x, y = (i + 0.5 * (j % 2)) * step, j * step + step / 2
                d.ellipse((x - rr, y - rr, x + rr, y + rr), fill=b)
    elif kind == "checkered":
        for i in range(8):
            for j in range(8):
                if (i + j) % 2:
                    d.rectangle((i * step, j * step, (i + 1) * step, (j + 1) * step), fill=soft)
    return img


def _floor_shadow(cv: Canvas, f: _Figure, c: ch.Character) -> None:
    """A shadow on the floor under the feet."""
    feet = [f.kp[i] for i in (15, 16) if f.vis[i] > 0]
    if feet:
        lr = f.limb_r
        fy = max(p[1] for p in feet) + 0.3 * lr
        fx = float(np.mean([p[0] for p in feet]))
        a, _ = ch.BACKGROUNDS[c.background_color]
        cv.d.ellipse((fx - 5 * lr, fy - 1.2 * lr, fx + 5 * lr, fy + 1.2 * lr), fill=shade(a))


def _stool(cv: Canvas, f: _Figure, c: ch.Character) -> None:
    """A stool under a seated character, so the pose reads (scenery: not in the id buffer)."""
    kp, lr, o = f.kp, f.limb_r, cv.ow
    seat = (kp[11] + kp[12]) / 2 + np.array([0.0, 1.2 * lr])
    floor = max(kp[15, 1], kp[16, 1]) + 0.9 * lr
    half = max(abs(kp[11, 0] - kp[12, 0]) / 2 + 3.5 * lr, 4 * lr)
    wood = mix((170, 120, 80), ch.BACKGROUNDS[c.background_color][1], 0.35)
    for dx in (-half * 0.8, half * 0.8):
        cv.d.rectangle((seat[0] + dx - lr * 0.7 - o, seat[1], seat[0] + dx + lr * 0.7 + o, floor), fill=ink(wood))
        cv.d.rectangle((seat[0] + dx - lr * 0.7, seat[1], seat[0] + dx + lr * 0.7, floor - o), fill=shade(wood))
    cv.d.rectangle((seat[0] - half - o, seat[1] - lr - o, seat[0] + half + o, seat[1] + lr + o), fill=ink(wood))
    cv.d.rectangle((seat[0] - half, seat[1] - lr, seat[0] + half, seat[1] + lr), fill=wood)


# -- body ------------------------------------------------------------------------------------------
def _perp(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return np.array([-v[1], v[0]]) / n if n > 1e-6 else np.array([1.0, 0.0])


@dataclass
class _Body:
    """What every body part's drawing reads: the canvas, the figure, the character, its colours and cut."""

    cv: Canvas
    f: _Figure
    c: ch.Character
    skin: Color
    top: Color
    second: Color
    skirt_len: float | None  # the hem: a share of the thigh, past 1.0 down the shin
    trousers: bool
    ms: np.ndarray  # mid-shoulder
    mh: np.ndarray  # mid-hip
    axis: np.ndarray  # mid-hip -> mid-shoulder
    nrm: np.ndarray  # unit normal of `axis`


def _body(cv: Canvas, f: _Figure, c: ch.Character) -> _Body:
    boy = c.gender == "boy"
    skirt_len = {"dress": 0.7, "blouse and skirt": 0.55, "sailor uniform": 0.6, "kimono": 1.9}.get(c.outfit)
    if boy and c.outfit != "kimono":
        skirt_len = None
    ms, mh = (f.kp[5] + f.kp[6]) / 2, (f.kp[11] + f.kp[12]) / 2
    return _Body(
        cv=cv, f=f, c=c, skin=ch.SKIN_TONES[c.skin], top=ch.CLOTH_COLORS[c.outfit_colors[0]],
        second=ch.CLOTH_COLORS[c.outfit_colors[1]], skirt_len=skirt_len,
        trousers=c.outfit == "shirt and trousers" or (boy and c.outfit == "sailor uniform"),
        ms=ms, mh=mh, axis=ms - mh, nrm=_perp(ms - mh),
    )  # fmt: skip


def _leg(b: _Body, h: int, k: int, a: int, sd: int) -> None:
    """One leg (thigh, shin, socks, boot, shoe) outlined as one shape; shorts and sneaker laces over it."""
    kp, has, lr, fx, c = b.f.kp, b.f.vis > 0, b.f.limb_r, b.f.forward_x, b.c
    thigh_id, shin_id, shoe_id = LEG[sd]
    robe = bool(b.skirt_len and b.skirt_len > 1.5)  # a kimono covers the legs
    col = b.top if robe else b.second if b.trousers else b.skin
    socks = c.legwear != "none" and not b.trousers and not robe
    sock = ch.CLOTH_COLORS.get(c.legwear_color, OFF_WHITE)
    shoe = ch.CLOTH_COLORS.get(c.shoe_color, (120, 80, 60))
    segs = [(kp[h], kp[k], lr * 1.45, lr * 1.1, col, thigh_id)]
    if socks and c.legwear == "thighhighs":
        segs.append((kp[h] + (kp[k] - kp[h]) * 0.45, kp[k], lr * 1.32, lr * 1.1, sock, thigh_id))
    if has[a]:
        segs.append((kp[k], kp[a], lr * 1.1, lr * 0.82, col, shin_id))
        if socks:
            top_t = 0.0 if c.legwear == "thighhighs" else 0.12
            segs.append((kp[k] + (kp[a] - kp[k]) * top_t, kp[a], lr * 1.1, lr * 0.82, sock, shin_id))
        if c.shoes == "boots":
            segs.append((kp[k] + (kp[a] - kp[k]) * 0.45, kp[a], lr * 1.12, lr * 0.95, shoe, shin_id))
        toe = kp[a] + np.array([fx * 1.9 * lr, 0.9 * lr])
        segs.append((kp[a] + np.array([0, 0.2 * lr]), toe, lr * 1.0, lr * 0.95, shoe, shoe_id))
    b.cv.chain(segs)
    if c.outfit == "hoodie and shorts":
        b.cv.limb(kp[h], kp[h] + (kp[k] - kp[h]) * 0.5, lr * 1.6, lr * 1.45, b.second, thigh_id)
    if has[a] and c.shoes == "sneakers":
        b.cv.d.line([tuple(kp[a] + np.array([-fx * 0.4 * lr - lr * 0.5, 1.15 * lr])),
                     tuple(toe + np.array([lr * 0.5 * (1 - abs(fx)), 0.9 * lr]))],
                    fill=OFF_WHITE, width=max(1, int(0.35 * lr)))  # fmt: skip


def _torso(b: _Body) -> None:
    """The neck, the chest down to the hips (with a hood behind the neck), the skirt, belt and collar."""
    cv, f, lr, sw, hw = b.cv, b.f, b.f.limb_r, b.f.shoulder_hw, b.f.hip_hw
    ms, mh, axis, nrm = b.ms, b.mh, b.axis, b.nrm
    neck_top = f.head.c + np.array([0.0, 0.55 * f.head.r])
    cv.limb(f.neck, neck_top, lr * 1.05, lr * 1.05, b.skin, NECK)
    if b.c.outfit == "hoodie and shorts":
        cv.disc(f.neck + (neck_top - f.neck) * 0.1, sw * 0.75, sw * 0.42, shade(b.top), TORSO)
    waist = mh + axis * 0.38
    wf = 0.9 if b.c.gender == "boy" else 0.76  # a narrower waist for girls
    body = [ms + nrm * sw * 0.92 + axis * 0.02, ms + nrm * sw - axis * 0.06, waist + nrm * sw * wf,
            mh + nrm * hw - axis * 0.08, mh - nrm * hw - axis * 0.08, waist - nrm * sw * wf,
            ms - nrm * sw - axis * 0.06, ms - nrm * sw * 0.92 + axis * 0.02]  # fmt: skip
    cv.poly(body, b.top, TORSO, lit=[ms + (p - ms) * 0.85 + LIGHT * sw * 0.12 for p in body])
    if b.skirt_len:
        _skirt(b)
    if b.c.outfit == "kimono":  # the obi
        b0, b1 = mh + axis * 0.25, mh + axis * 0.5
        cv.poly([b1 + nrm * sw * 0.85, b0 + nrm * sw * 0.85, b0 - nrm * sw * 0.85, b1 - nrm * sw * 0.85],
                b.second, TORSO)  # fmt: skip
    if b.c.outfit in ("dress", "blouse and skirt") and f.facing > -0.2:
        b0 = mh + axis * 0.3
        cv.d.line([tuple(b0 + nrm * sw * 0.8), tuple(b0 - nrm * sw * 0.8)], fill=b.second,
                  width=max(1, int(0.5 * lr)))  # fmt: skip
    if f.facing > -0.2:
        _collar(b)


def _skirt(b: _Body) -> None:
    """A skirt (or a kimono's robe) from the waist to a hem spread over the thighs, pleated on uniforms."""
    kp, has, lr, sw, hw = b.f.kp, b.f.vis > 0, b.f.limb_r, b.f.shoulder_hw, b.f.hip_hw
    mh, axis, nrm, skirt_len = b.mh, b.axis, b.nrm, b.skirt_len
    hem = []
    for sd, h, k in ((1, 11, 13), (-1, 12, 14)):
        if has[k]:
            pt = kp[h] + (kp[k] - kp[h]) * min(skirt_len, 1.0)
            if skirt_len > 1.0 and has[k + 2]:
                pt = kp[k] + (kp[k + 2] - kp[k]) * (skirt_len - 1.0)
        else:
            pt = kp[h] - axis * 0.6
        out = nrm * (1 if sd == 1 else -1) * (hw * 0.1 + lr * (1.8 if skirt_len < 1.5 else 1.4))
        sign_side = 1.0 if (pt - mh) @ nrm >= 0 else -1.0
        hem.append(pt + out * (sign_side * (1 if sd == 1 else -1)))
    wl, wr = mh + axis * 0.3 + nrm * sw * 0.8, mh + axis * 0.3 - nrm * sw * 0.8
    hl, hr = hem
    if (hl - hr) @ nrm < 0:  # keep the hem's left/right order that of the waist
        hl, hr = hr, hl
    widen = max(0.0, hw * 2.4 - (hl - hr) @ nrm) / 2
    hl, hr = hl + nrm * widen, hr - nrm * widen
    col = b.top if b.c.outfit in ("dress", "kimono") else b.second
    lit = [wl, hl * 0.8 + hr * 0.2 + LIGHT * lr, (hl + hr) / 2, wr]
    b.cv.poly([wl, hl, (hl + hr) / 2 - axis * 0.04, hr, wr], col, SKIRT, lit=lit)
    if b.c.outfit in ("sailor uniform", "blouse and skirt"):
        for t in (0.3, 0.5, 0.7):
            p, q = wl + (wr - wl) * t, hl + (hr - hl) * t
            b.cv.d.line([tuple(p), tuple(q)], fill=shade(shade(col)), width=max(1, int(b.cv.ow * 0.7)))


def _collar(b: _Body) -> None:
    """The front of the neckline: a sailor collar and ribbon, a kimono's lapels, a shirt's collar and tie, a
    dress's round collar, or a hoodie's pocket seam and strings."""
    cv, d, lr, sw, ow = b.cv, b.cv.d, b.f.limb_r, b.f.shoulder_hw, b.cv.ow
    ms, axis, nrm, outfit = b.ms, b.axis, b.nrm, b.c.outfit
    neck_c = ms + axis * 0.02
    if outfit == "sailor uniform":
        v = ms - axis * 0.45
        cv.poly([neck_c + nrm * sw * 0.95, v, neck_c - nrm * sw * 0.95, neck_c + axis * 0.08], b.second, TORSO)
        d.line([tuple(neck_c + nrm * sw * 0.8 - axis * 0.04), tuple(v + axis * 0.1),
                tuple(neck_c - nrm * sw * 0.8 - axis * 0.04)], fill=OFF_WHITE, width=max(1, int(ow * 0.7)))  # fmt: skip
        cv.poly([v, v + nrm * lr * 1.6 - axis * 0.15, v - nrm * lr * 1.6 - axis * 0.15], accent(b.c), TORSO)
    elif outfit == "kimono":
        v = ms - axis * 0.62
        d.line([tuple(neck_c + nrm * sw * 0.4), tuple(v)], fill=b.second, width=max(1, int(0.5 * lr)))
        d.line([tuple(neck_c - nrm * sw * 0.4), tuple(v)], fill=b.second, width=max(1, int(0.5 * lr)))
    elif outfit == "shirt and trousers":
        cv.poly([neck_c + nrm * sw * 0.45, neck_c - axis * 0.12, neck_c - nrm * sw * 0.45, neck_c + axis * 0.06],
                OFF_WHITE, TORSO)  # fmt: skip
        cv.poly([neck_c - axis * 0.08 + nrm * lr * 0.4, neck_c - axis * 0.5, neck_c - axis * 0.08 - nrm * lr * 0.4],
                accent(b.c), TORSO)  # fmt: skip
    elif outfit in ("dress", "blouse and skirt"):
        cv.disc(neck_c - axis * 0.02 + nrm * lr * 0.9, lr * 1.0, lr * 0.6, OFF_WHITE, TORSO)
        cv.disc(neck_c - axis * 0.02 - nrm * lr * 0.9, lr * 1.0, lr * 0.6, OFF_WHITE, TORSO)
    elif outfit == "hoodie and shorts":
        p = b.mh + axis * 0.22
        d.line([tuple(p + nrm * sw * 0.5), tuple(p - nrm * sw * 0.5)], fill=shade(b.top), width=max(1, int(ow)))
        for sd in (1, -1):
            d.line([tuple(neck_c + nrm * sd * lr * 0.6), tuple(neck_c + nrm * sd * lr * 0.6 - axis * 0.3)],
                   fill=OFF_WHITE, width=max(1, int(ow * 0.8)))  # fmt: skip


def _arm(b: _Body, s: int, e: int, w: int, sd: int) -> None:
    """One arm (sleeve, forearm, cuff, hand) outlined as one shape, with a kimono's drape under it and a puffed
    sleeve over it."""
    kp, has, lr, outfit = b.f.kp, b.f.vis > 0, b.f.limb_r, b.c.outfit
    up_id, fore_id, hand_id = ARM[sd]
    long_sleeves = outfit in ("shirt and trousers", "sailor uniform", "hoodie and shorts", "kimono")
    segs = [(kp[s], kp[e], lr * 1.1, lr * 0.95, b.skin if outfit == "dress" else b.top, up_id)]
    if has[w]:
        d = kp[w] - kp[e]
        n = np.linalg.norm(d)
        hand = kp[w] + (d / n * lr * 0.45 if n > 1e-6 else 0)
        segs.append((kp[e], kp[w], lr * 0.95, lr * 0.8, b.top if long_sleeves else b.skin, fore_id))
        if outfit == "sailor uniform":
            segs.append((kp[e] + d * 0.78, kp[w] - d * 0.02, lr * 0.92, lr * 0.86, b.second, fore_id))
        segs.append((hand, hand, lr * 0.95, lr * 0.95, b.skin, hand_id))
        if outfit == "kimono":
            drape = [kp[e], kp[w] - d * 0.15, kp[w] + np.array([0, 2.8 * lr]), kp[e] + np.array([0, 2.6 * lr])]
            b.cv.poly(drape, shade(b.top), fore_id)
    b.cv.chain(segs)
    if outfit in ("dress", "blouse and skirt"):  # a puffed short sleeve
        b.cv.disc(kp[s] + (kp[e] - kp[s]) * 0.2, lr * 1.5, lr * 1.5, b.top, up_id)


def _parts(b: _Body) -> list[tuple[float, Callable[[], object]]]:
    """Every part's drawing with its depth key (larger is nearer), in an order that breaks ties."""
    cv, f, c, hd = b.cv, b.f, b.c, b.f.head
    has = f.vis > 0
    torso_depth = float(np.mean(f.depth[[5, 6, 11, 12]]))
    parts = []
    for sd, (h, k, a) in ((1, (11, 13, 15)), (-1, (12, 14, 16))):  # legs: under the torso, near over far
        if has[h] and has[k]:
            parts.append((-1e6 + float(np.mean(f.depth[[h, k]])), partial(_leg, b, h, k, a, sd)))
    parts.append((torso_depth, lambda: _torso(b)))
    head_key = max(f.head_depth, torso_depth) + 0.8 * hd.r
    for sd, (s, e, w) in ((1, (5, 7, 9)), (-1, (6, 8, 10))):  # arms: over the torso unless clearly behind it
        if has[s] and has[e]:
            key = float(np.mean(f.depth[[s, e, w] if has[w] else [s, e]])) + 0.5 * hd.r
            parts.append((key if key <= head_key else key + 1e3, partial(_arm, b, s, e, w, sd)))
    if hd.front:
        parts.append((-2e6, lambda: (hair_mass(cv, hd, c), hair_tails(cv, hd, c))))
        parts.append((head_key, lambda: (draw_head(cv, hd, c), head_top(cv, hd, c))))
    else:  # from behind the hair lies over the back, under the arms and the head
        parts.append((torso_depth, lambda: hair_mass(cv, hd, c)))
        parts.append((head_key, lambda: (draw_head(cv, hd, c), hair_tails(cv, hd, c), head_top(cv, hd, c))))
    return parts


def _visibility(f: _Figure, ids: np.ndarray) -> np.ndarray:
    """Visibility after overlap: a face point must face the camera, and any point must lie on a part that owns it."""
    vis = f.vis.copy()
    for i, away in enumerate(face_turned_away(f.head.rot)):
        if (not f.head.front and i < 3) or away:
            vis[i] = min(vis[i], HIDDEN)
    for i in range(NUM_KEYPOINTS):
        if vis[i] < VISIBLE:
            continue
        x, y = math.floor(f.kp[i, 0]), math.floor(f.kp[i, 1])
        if not (0 <= x < ids.shape[1] and 0 <= y < ids.shape[0]) or int(ids[y, x]) not in OWNERS[i]:
            vis[i] = HIDDEN
    return vis


def render(
    pose: Pose,
    character: ch.Character,
    size: int = 128,
    background: bool = True,
    rig: Rig | None = None,
    eyes: bool = True,
) -> Render:
    """Draw `character` in `pose` on a `size` square (`eyes=False`: a face without eyes); the pose out has occlusion."""
    if pose.width != pose.height:
        pose = fit_to_square(pose, size, margin=0.08)
    S = size * SS
    f = _figure_from_rig(rig, pose, S) if rig is not None else _figure_from_pose(pose, S)
    c = character
    seed = zlib.crc32(f"{c.hair_color}/{c.background_color}".encode()) % 1000  # not hash(): salted per process
    bg = _background(c, S, seed) if background else Image.new("RGB", (S, S), (255, 255, 255))
    cv = Canvas(bg, max(1.5, 1.05 * SS * (size / 128)), eyes)  # outlines about a pixel wide at any size
    if background:
        _floor_shadow(cv, f, c)
        if rig is not None and rig.action == "sit" and f.vis[11] > 0 and f.vis[12] > 0:
            _stool(cv, f, c)
    parts = _parts(_body(cv, f, c))
    for i in sorted(range(len(parts)), key=lambda i: (parts[i][0], i)):
        parts[i][1]()
    vis = _visibility(f, np.asarray(cv.ids))
    on = cv.ids.point(lambda v: 255 if v else 0)
    image, on = (cv.img.reduce(SS), on.reduce(SS)) if SS > 1 else (cv.img, on)
    out = np.concatenate([f.kp / S, vis[:, None]], axis=1).astype(np.float32)
    return Render(image=image, pose=Pose(out, size, size), mask=np.asarray(on) >= 96)


def contact_sheet(seed: int = 0, n: int = 8, size: int = 128) -> Image.Image:
    """An n x n sheet of random characters in random poses."""
    from training.character import sample_character
    from training.skeleton import sample_rig

    sheet = Image.new("RGB", (n * size, n * size))
    for i in range(n * n):
        rng = np.random.default_rng([seed, i])
        rig = sample_rig(rng)
        r = render(rig.pose, sample_character(rng), size, rig=rig)
        sheet.paste(r.image, ((i % n) * size, (i // n) * size))
    return sheet


if __name__ == "__main__":
    contact_sheet().save("docs/contact_sheet.png")
