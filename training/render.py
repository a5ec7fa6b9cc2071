"""A cel-shaded anime character drawn in a pose, with its exact keypoints and a mask.

`render(pose, character, size=128)` draws at `SS`x supersampling with PIL and downsamples for
anti-aliasing. Every part is drawn three times (a dark outline a little larger, a shadow colour,
then the lit colour shifted toward the light) and also into a part-id buffer, from which the
visibility of each keypoint after overlap and the character mask are read. Parts are painted
far to near using depth from the 3D rig (`training.skeleton.Rig`), or depth guessed from a 2D pose.

    python -m training.render  # writes docs/contact_sheet.png (8 x 8 random samples)
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from models.pose import NUM_KEYPOINTS, VISIBLE, Pose, fit_to_square
from training import character as ch
from training.skeleton import FACE_POINTS, HIDDEN, Rig

SS = 2  # supersampling factor
Color = tuple[int, int, int]
LIGHT = np.array([-0.55, -0.83])  # light from the upper left (screen, y down)

# Part ids in the id buffer, and which parts "own" each keypoint (a point on a part it does not
# own is covered by something else, so it is hidden).
BG, TORSO, SKIRT, NECK, HEAD, BACK_HAIR = 0, 1, 2, 3, 4, 5
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


# -- colours ---------------------------------------------------------------------------------------
def _mix(a: Color, b: Color, t: float) -> Color:
    return (int(a[0] + (b[0] - a[0]) * t), int(a[1] + (b[1] - a[1]) * t), int(a[2] + (b[2] - a[2]) * t))


def _shade(c: Color) -> Color:
    """The cel shadow tone: darker and a little cooler."""
    return (int(c[0] * 0.76), int(c[1] * 0.74), int(min(255, c[2] * 0.84 + 10)))


def _line(c: Color) -> Color:
    """The outline tone for a part of colour `c`: a dark, warm version of it."""
    return _mix(c, (46, 26, 40), 0.78)


# -- a canvas that draws colour and part ids together --------------------------------------------
class _Canvas:
    def __init__(self, img: Image.Image, scale: float):
        self.img = img
        self.d = ImageDraw.Draw(img)
        self.ids = Image.new("L", img.size, 0)
        self.di = ImageDraw.Draw(self.ids)
        self.ow = max(1.5, 1.05 * SS * scale)  # outline width in supersampled pixels

    def _capsule(self, d: ImageDraw.ImageDraw, p, q, r1: float, r2: float, fill) -> None:
        p, q = np.asarray(p, float), np.asarray(q, float)
        v = q - p
        n = np.linalg.norm(v)
        if n > 1e-6 and r1 > 0.3:
            nx, ny = -v[1] / n, v[0] / n
            d.polygon(
                [(p[0] + nx * r1, p[1] + ny * r1), (q[0] + nx * r2, q[1] + ny * r2),
                 (q[0] - nx * r2, q[1] - ny * r2), (p[0] - nx * r1, p[1] - ny * r1)], fill=fill)  # fmt: skip
        d.ellipse((p[0] - r1, p[1] - r1, p[0] + r1, p[1] + r1), fill=fill)
        d.ellipse((q[0] - r2, q[1] - r2, q[0] + r2, q[1] + r2), fill=fill)

    def limb(self, p, q, r1: float, r2: float, color: Color, pid: int, shade: bool = True) -> None:
        """A tapered capsule from p (radius r1) to q (radius r2), outlined and cel shaded."""
        o = self.ow
        self._capsule(self.di, p, q, r1 + o, r2 + o, pid)
        self._capsule(self.d, p, q, r1 + o, r2 + o, _line(color))
        if not shade:
            self._capsule(self.d, p, q, r1, r2, color)
            return
        self._capsule(self.d, p, q, r1, r2, _shade(color))
        off = LIGHT * 0.35 * min(r1, r2)
        self._capsule(self.d, np.asarray(p) + off, np.asarray(q) + off, r1 * 0.72, r2 * 0.72, color)

    def chain(self, segs) -> None:
        """Several capsules `(p, q, r1, r2, color, pid)` outlined as one shape (no lines at the joints)."""
        o = self.ow
        for p, q, r1, r2, color, pid in segs:
            self._capsule(self.di, p, q, r1 + o, r2 + o, pid)
            self._capsule(self.d, p, q, r1 + o, r2 + o, _line(color))
        for p, q, r1, r2, color, pid in segs:
            self._capsule(self.d, p, q, r1, r2, _shade(color))
        for p, q, r1, r2, color, pid in segs:
            off = LIGHT * 0.35 * min(r1, r2)
            self._capsule(self.d, np.asarray(p) + off, np.asarray(q) + off, r1 * 0.7, r2 * 0.7, color)

    def poly(self, pts, color: Color, pid: int | None, outline: bool = True, lit=None) -> None:
        """A polygon with an outline; `lit` is an optional lighter inner polygon over a shadow base."""
        pts = [(float(x), float(y)) for x, y in pts]
        if pid is not None:
            self.di.polygon(pts, fill=pid)
            if outline:
                self.di.line(pts + [pts[0]], fill=pid, width=round(2 * self.ow), joint="curve")
        if outline:
            self.d.line(pts + [pts[0]], fill=_line(color), width=round(2 * self.ow), joint="curve")
        if lit is None:
            self.d.polygon(pts, fill=color)
        else:
            self.d.polygon(pts, fill=_shade(color))
            self.d.polygon([(float(x), float(y)) for x, y in lit], fill=color)

    def disc(self, c, rx: float, ry: float, color: Color, pid: int | None, outline: bool = True) -> None:
        """An (outlined) ellipse."""
        o = self.ow if outline else 0.0
        box = (c[0] - rx - o, c[1] - ry - o, c[0] + rx + o, c[1] + ry + o)
        if pid is not None:
            self.di.ellipse(box, fill=pid)
        if outline:
            self.d.ellipse(box, fill=_line(color))
        self.d.ellipse((c[0] - rx, c[1] - ry, c[0] + rx, c[1] + ry), fill=color)


# -- the figure: everything drawn, in supersampled pixels ------------------------------------------
@dataclass
class _Figure:
    kp: np.ndarray  # (17, 2)
    vis: np.ndarray  # (17,)
    depth: np.ndarray  # (17,)
    head_c: np.ndarray
    head_r: float
    head_rot: np.ndarray  # head-local -> camera (x right, y up, z toward the camera)
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
        head_c=rig.head_center * s,
        head_r=rig.head_radius * s,
        head_rot=rig.head_rot,
        head_depth=rig.head_depth * s,
        neck=rig.neck * s,
        shoulder_hw=rig.shoulder_hw * s,
        hip_hw=rig.hip_hw * s,
        limb_r=rig.limb_radius * s,
        forward_x=float(rig.body_rot[0, 2]),
        facing=float(rig.body_rot[2, 2]),
    )


def _rot_y(a: float) -> np.ndarray:
    c, s_ = math.cos(a), math.sin(a)
    return np.array([[c, 0, s_], [0, 1, 0], [-s_, 0, c]])


def _rot_z(a: float) -> np.ndarray:
    c, s_ = math.cos(a), math.sin(a)
    return np.array([[c, -s_, 0], [s_, c, 0], [0, 0, 1]])


def _figure_from_pose(pose: Pose, s: float) -> _Figure:
    """Guess the 3D cues (head size and turn, depth order, facing) a 2D pose lacks."""
    kp = pose.xy.astype(np.float64) * s
    vis = pose.visibility.astype(np.float64).copy()
    has = vis > 0
    seen = vis >= VISIBLE
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
    # Facing: the character's left shoulder on the image right means the chest faces us.
    sdx = kp[5, 0] - kp[6, 0] if has[5] and has[6] else 0.0
    face_seen = seen[0] or seen[1] or seen[2]
    # Photo pose models often place a face on a back view too; crossed shoulders are the firmer cue.
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
    if has[1] and has[2] and not back:
        e = kp[1] - kp[2]
        roll = -math.atan2(e[1], e[0]) if abs(e[0]) > 0.3 * abs(e[1]) else 0.0
        roll = float(np.clip(roll, -0.6, 0.6))  # eye lines from photos are noisy; heads rarely tilt more
    else:
        roll = 0.0
    rot = _rot_z(roll) @ _rot_y(yaw)
    face = [i for i, name in enumerate(("nose", "left_eye", "right_eye", "left_ear", "right_ear")) if has[i]]
    if face:
        offs = [(rot @ np.array(FACE_POINTS[n]))[:2] * (1, -1) * r for n in
                ("nose", "left_eye", "right_eye", "left_ear", "right_ear")]  # fmt: skip
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
    sw = max(abs(sdx) / 2 + 0.2 * limb_r, 0.55 * r)
    hdx = abs(kp[11, 0] - kp[12, 0]) / 2 if has[11] and has[12] else 0.0
    fwd = math.sin(yaw) if not back else 0.0
    return _Figure(
        kp=kp, vis=vis, depth=depth, head_c=head_c, head_r=r, head_rot=rot, head_depth=0.0,
        neck=ms + (head_c - ms) * 0.2, shoulder_hw=sw, hip_hw=max(hdx + 0.3 * limb_r, 0.45 * r),
        limb_r=limb_r, forward_x=fwd, facing=-1.0 if back else math.cos(yaw),
    )  # fmt: skip


def estimate_view(pose: Pose) -> str:
    """The camera view of a 2D pose ('front', 'three-quarter', 'side' or 'back'), judged from its face."""
    f = _figure_from_pose(pose if pose.width == pose.height else fit_to_square(pose, 128, 0.08), 256.0)
    if f.facing <= -0.5:
        return "back"
    yaw = abs(math.degrees(math.atan2(f.forward_x, f.facing)))
    return "front" if yaw < 22 else "three-quarter" if yaw < 65 else "side"


# -- background ------------------------------------------------------------------------------------
def _background(c: ch.Character, n: int, rng_key: int) -> Image.Image:
    a, b = ch.BACKGROUNDS[c.background_color]
    kind = c.background
    if kind == "gradient":
        t = np.linspace(0.0, 1.0, n)[:, None, None]
        arr = (np.array(a) * (1 - t) + np.array(b) * t).astype(np.uint8)
        return Image.fromarray(np.broadcast_to(arr, (n, n, 3)).copy())
    img = Image.new("RGB", (n, n), a)
    d = ImageDraw.Draw(img)
    soft = _mix(a, b, 0.55)
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


# -- the head --------------------------------------------------------------------------------------
def _head(cv: _Canvas, f: _Figure, c: ch.Character) -> None:
    R, M, hc = f.head_r, f.head_rot, f.head_c
    hair = ch.HAIR_COLORS[c.hair_color]
    skin = ch.SKIN_TONES[c.skin]

    def P(p) -> np.ndarray:
        q = M @ np.asarray(p, float)
        return hc + R * np.array([q[0], -q[1]])

    def Z(p) -> float:
        p = np.asarray(p, float)
        return float((M @ (p / np.linalg.norm(p)))[2])

    def rim(p) -> np.ndarray:
        """Project a head point; one on the far side slides to the silhouette's rim."""
        q = M @ np.asarray(p, float)
        xy = np.array([q[0], -q[1]])
        n = np.linalg.norm(xy)
        if q[2] < 0 and n < 1.06 and n > 1e-6:
            xy = xy * (1.06 / n)
        return hc + R * xy

    face_z = float((M @ np.array([0.0, -0.2, 1.0]) / 1.02)[2])
    front = face_z > -0.3
    up = (M @ np.array([0.0, 1.0, 0.0]))[:2] * (1, -1)

    # 1. Skull and hair cap, with spikes for spiky hair.
    cap_c = hc + up * 0.05 * R
    if c.hair_style == "spiked hair":
        pts = []
        tips = (1.0, 1.42, 1.0, 1.5, 1.0, 1.38, 1.0, 1.5, 1.0, 1.35, 1.0)
        roll = math.atan2(up[0], -up[1])
        for k, a in enumerate(np.linspace(math.pi * 0.82, math.pi * 2.18, len(tips))):
            pts.append(cap_c + R * tips[k] * np.array([math.cos(a + roll), math.sin(a + roll)]))
        cv.poly(pts, hair, HEAD, lit=[cap_c + (p - cap_c) * 0.85 + LIGHT * 0.1 * R for p in pts])
    if not front:
        nape = [P((0.8, -0.3, -0.5))]
        for k in range(1, 6):
            x = 0.8 - 1.6 * k / 6
            nape.append(P((x, -1.3 if k % 2 else -1.05, -0.5)))
        nape.append(P((-0.8, -0.3, -0.5)))
        cv.poly(nape, hair, HEAD)
    cv.disc(cap_c, 1.07 * R, 1.07 * R, hair, HEAD)
    cv.d.ellipse((cap_c[0] - 1.07 * R, cap_c[1] - 1.07 * R, cap_c[0] + 1.07 * R, cap_c[1] + 1.07 * R),
                 fill=_shade(hair))  # fmt: skip
    cv.d.ellipse((cap_c[0] - 1.0 * R - 0.12 * R, cap_c[1] - 1.07 * R, cap_c[0] + 0.9 * R, cap_c[1] + 0.85 * R),
                 fill=hair)  # fmt: skip
    # The "angel ring" highlight across the crown.
    ring = (cap_c[0] - 0.72 * R, cap_c[1] - 0.78 * R, cap_c[0] + 0.72 * R, cap_c[1] + 0.66 * R)
    cv.d.arc(ring, 200, 300, fill=_mix(hair, (255, 255, 255), 0.55), width=max(1, int(0.11 * R)))

    ears = c.hair_style in ("short hair", "spiked hair", "ponytail") or c.gender == "boy"
    if not front:
        # The back of the head: the nape tips (drawn under the cap, above) and ears at the sides.
        if ears:
            for sx in (1, -1):
                if Z((sx, 0, -0.3)) > 0.05:
                    cv.disc(P((0.93 * sx, -0.3, -0.05)), 0.16 * R, 0.22 * R, skin, HEAD)
        return

    # 2. The face: skin below the fringe, down to the jaw and chin; far-side points slide to the rim.
    blunt = c.hair_style in ("bob cut",)
    spiky = c.hair_style == "spiked hair"
    ntip = 4 if spiky else 6
    line = []
    for k in range(2 * ntip + 1):
        x = 0.94 - 1.88 * k / (2 * ntip)
        if blunt:
            y = -0.1
        else:
            y = (-0.2 if spiky else -0.13) if k % 2 else (0.16 if spiky else 0.1)
        if k in (0, 2 * ntip):
            y = 0.05
        z = math.sqrt(max(0.0, 1 - x * x - y * y))
        line.append((x, y, z))
    side = [(-0.99, -0.3, 0.0), (-0.8, -0.78, 0.12), (-0.3, -1.05, 0.45), (0.0, -1.12, 0.45),
            (0.3, -1.05, 0.45), (0.8, -0.78, 0.12), (0.99, -0.3, 0.0)]  # fmt: skip
    pts = [rim(p) for p in line + side]
    lit = [rim((0.88 * x + 0.04, 0.9 * y + 0.02, z)) for x, y, z in line + side]
    cv.poly(pts, skin, HEAD, lit=lit)
    # The fringe's own outline pass over the skin.
    cv.d.line([tuple(p) for p in pts[: len(line)]], fill=_line(hair), width=max(1, round(cv.ow)),
              joint="curve")  # fmt: skip

    # 3. Ears stick out of short hair.
    if ears:
        for sx in (1, -1):
            ep = (0.93 * sx, -0.3, -0.05)
            if Z((sx, 0, 0.3)) > 0.05:
                cv.disc(P(ep), 0.16 * R, 0.22 * R, skin, HEAD)

    # 4. Eyes, brows, mouth, blush.
    iris = ch.EYE_COLORS[c.eye_color]
    lash = (50, 30, 40)
    tall = 0.21 * R * (0.8 if c.gender == "boy" else 1.0)
    for name, sx in (("left_eye", 1), ("right_eye", -1)):
        e = FACE_POINTS[name]
        z = Z(e)
        if z < 0.22:
            continue
        ctr = P(e)
        w = 0.16 * R * (0.3 + 0.7 * z)
        cv.d.ellipse((ctr[0] - w, ctr[1] - tall, ctr[0] + w, ctr[1] + tall), fill=(255, 255, 255))
        iw, ih = w * 0.86, tall * 0.9
        ic = ctr + np.array([0.0, 0.08 * tall])
        cv.d.ellipse((ic[0] - iw, ic[1] - ih, ic[0] + iw, ic[1] + ih), fill=_shade(iris))
        cv.d.ellipse((ic[0] - iw * 0.8, ic[1] - ih * 0.2, ic[0] + iw * 0.8, ic[1] + ih * 0.95),
                     fill=_mix(iris, (255, 255, 255), 0.25))  # fmt: skip
        cv.d.ellipse((ic[0] - iw * 0.45, ic[1] - ih * 0.5, ic[0] + iw * 0.45, ic[1] + ih * 0.3),
                     fill=_mix(iris, (20, 10, 30), 0.65))  # fmt: skip
        hl = max(0.9, 0.34 * w)
        hp = ic + np.array([-0.35 * iw, -0.4 * ih])
        cv.d.ellipse((hp[0] - hl, hp[1] - hl * 1.2, hp[0] + hl, hp[1] + hl * 1.2), fill=(255, 255, 255))
        hp2 = ic + np.array([0.35 * iw, 0.45 * ih])
        cv.d.ellipse((hp2[0] - hl * 0.5, hp2[1] - hl * 0.5, hp2[0] + hl * 0.5, hp2[1] + hl * 0.5),
                     fill=(255, 255, 255))  # fmt: skip
        # Upper lash line: thick, flicking out at the outer corner.
        outer = sx  # the outer corner is toward the character's own side (screen x follows M)
        ox = (M @ np.array([outer, 0.0, 0.0]))[0]
        ox = 1.0 if ox >= 0 else -1.0
        lw = max(1, round(0.085 * R))
        lpts = [(ctr[0] - ox * w * 1.1, ctr[1] - tall * 0.55), (ctr[0] - ox * w * 0.2, ctr[1] - tall * 1.02),
                (ctr[0] + ox * w * 0.8, ctr[1] - tall * 0.85), (ctr[0] + ox * w * 1.35, ctr[1] - tall * 0.35)]  # fmt: skip
        cv.d.line(lpts, fill=lash, width=lw, joint="curve")
        cv.d.line([(ctr[0] - ox * w * 0.6, ctr[1] + tall * 0.98), (ctr[0] + ox * w * 0.5, ctr[1] + tall * 0.98)],
                  fill=_mix(lash, skin, 0.5), width=max(1, lw // 2))  # fmt: skip
        # Brow, just under the fringe.
        bp = P((e[0] * 1.05, -0.02, 0.95))
        cv.d.line([(bp[0] - ox * w, bp[1] + 0.03 * R), (bp[0] + ox * w * 0.9, bp[1] - 0.02 * R)],
                  fill=_mix(hair, lash, 0.6), width=max(1, round(0.05 * R)))  # fmt: skip
        if c.blush:
            bl = P((0.55 * sx, -0.66, 0.6))
            cv.d.ellipse((bl[0] - w * 0.9, bl[1] - 0.05 * R, bl[0] + w * 0.9, bl[1] + 0.05 * R),
                         fill=_mix(skin, (240, 110, 130), 0.45))  # fmt: skip
    mz = Z((0.0, -0.76, 0.64))
    if mz > 0.05:
        m = P((0.0, -0.76, 0.64))
        mw = 0.13 * R * (0.4 + 0.6 * mz)
        if c.smile:
            cv.d.chord((m[0] - mw, m[1] - mw * 0.9, m[0] + mw, m[1] + mw * 0.9), 0, 180, fill=(150, 40, 60))
            cv.d.chord((m[0] - mw * 0.6, m[1] + mw * 0.1, m[0] + mw * 0.6, m[1] + mw * 0.85), 0, 180,
                       fill=(236, 120, 130))  # fmt: skip
        else:
            cv.d.line([(m[0] - mw * 0.7, m[1]), (m[0] + mw * 0.7, m[1])], fill=(150, 60, 70),
                      width=max(1, round(0.045 * R)))  # fmt: skip
    tip = P((0.0, -0.52, 1.1))
    if np.linalg.norm(tip - hc) > 1.02 * R:  # in profile the nose sticks out of the skull's outline
        cv.poly([P((0.0, -0.36, 0.94)), tip, P((0.0, -0.62, 0.86))], skin, HEAD)
    nz = Z(FACE_POINTS["nose"])
    if nz > -0.05:
        n = P(FACE_POINTS["nose"])
        cv.d.ellipse((n[0] - 0.03 * R, n[1] - 0.02 * R, n[0] + 0.03 * R, n[1] + 0.04 * R), fill=_shade(_shade(skin)))

    # 5. Side locks framing the face.
    if c.hair_style in ("long hair", "bob cut", "twintails", "hair bun", "ponytail") and c.gender == "girl":
        for sx in (1, -1):
            if Z((sx, -0.3, 0.35)) < -0.15:
                continue
            lock = [(0.99 * sx, 0.15, 0.0), (1.0 * sx, -0.5, 0.06), (0.93 * sx, -1.18, 0.14),
                    (0.84 * sx, -0.6, 0.36), (0.87 * sx, 0.0, 0.44)]  # fmt: skip
            cv.poly([rim(p) for p in lock], hair, HEAD)

    # 6. Accessories on the head.
    ch.CLOTH_COLORS.get(c.accessory_color, (220, 60, 80))
    if "glasses" in c.accessories:
        for name in ("left_eye", "right_eye"):
            e = FACE_POINTS[name]
            if Z(e) > 0.22:
                ctr = P(e)
                w = 0.2 * R * (0.3 + 0.7 * Z(e))
                cv.d.ellipse((ctr[0] - w, ctr[1] - 0.2 * R, ctr[0] + w, ctr[1] + 0.2 * R), outline=(60, 50, 70),
                             width=max(1, round(0.05 * R)))  # fmt: skip


def _head_top(cv: _Canvas, f: _Figure, c: ch.Character) -> None:
    """Things on top of the head that stay visible from behind (ribbon, beret, ears, clip)."""
    R, M, hc = f.head_r, f.head_rot, f.head_c
    acc = ch.CLOTH_COLORS.get(c.accessory_color, (220, 60, 80))
    hair = ch.HAIR_COLORS[c.hair_color]

    def P(p) -> np.ndarray:
        q = M @ np.asarray(p, float)
        return hc + R * np.array([q[0], -q[1]])

    if "cat ears" in c.accessories:
        for sx in (1, -1):
            base = [P((0.75 * sx, 0.62, 0.0)), P((0.25 * sx, 0.98, 0.0)), P((0.8 * sx, 1.32, 0.0))]
            cv.poly(base, hair, HEAD)
            inner = [base[0] * 0.6 + base[2] * 0.4, base[1] * 0.6 + base[2] * 0.4, base[2] * 0.8 + base[0] * 0.2]
            cv.d.polygon([tuple(p) for p in inner], fill=(246, 170, 190))
    if "beret" in c.accessories:
        b = P((0.1, 0.95, 0.0))
        cv.disc(b, 1.05 * R, 0.42 * R, acc, HEAD)
        cv.disc(b + np.array([0, -0.42 * R]), 0.12 * R, 0.12 * R, acc, HEAD)
    if "hair ribbon" in c.accessories:
        b = P((-0.55, 0.8, 0.2))
        w = 0.38 * R
        cv.poly([b, b + (-w, -w * 0.8), b + (-w, w * 0.8)], acc, HEAD)
        cv.poly([b, b + (w, -w * 0.8), b + (w, w * 0.8)], acc, HEAD)
        cv.disc(b, 0.12 * R, 0.12 * R, acc, HEAD)
    if "hairclip" in c.accessories:
        a = P((0.62, 0.42, 0.68))
        bb = P((0.42, 0.62, 0.68))
        cv.d.line([tuple(a), tuple(bb)], fill=_mix(acc, (255, 255, 255), 0.2), width=max(1, int(0.12 * R)))


def _tail(a: np.ndarray, ax: float, length: float, width: float, swing: float):
    """A hair tail hanging from `a`: an S-curved, tapering strand (outline and lit polygons)."""
    t = np.linspace(0.0, 1.0, 9)
    cx = a[0] + ax * (swing * np.sin(np.pi * t * 0.85) + 0.25 * swing * t)
    cy = a[1] + length * t
    w = width * (0.55 + 0.7 * np.sin(np.pi * np.minimum(t * 1.25, 1.0))) * (1.0 - t) ** 0.7 + 0.02 * width
    left = [(x - wi, y) for x, y, wi in zip(cx, cy, w)]
    right = [(x + wi, y) for x, y, wi in zip(cx, cy, w)]
    pts = left + [(cx[-1] + ax * 0.15 * width, cy[-1] + 0.1 * width)] + right[::-1]
    lit = [(x - wi * 0.5 - 0.15 * width, y) for x, y, wi in zip(cx, cy, w)][:-1] + [
        (x + wi * 0.35 - 0.15 * width, y) for x, y, wi in zip(cx, cy, w)][:-1][::-1]  # fmt: skip
    return pts, lit


def _back_hair(cv: _Canvas, f: _Figure, c: ch.Character, mass: bool = True, tails: bool = True) -> None:
    """The hair behind the head: its mass (long hair, bob) and its tails (twintails, ponytail, bun)."""
    R, M, hc = f.head_r, f.head_rot, f.head_c
    hair = ch.HAIR_COLORS[c.hair_color]
    down = np.array([0.0, 1.0])

    def P(p) -> np.ndarray:
        q = M @ np.asarray(p, float)
        return hc + R * np.array([q[0], -q[1]])

    style = c.hair_style
    if mass and (style in ("long hair", "bob cut") or (style == "short hair" and c.gender == "girl")):
        L = {"long hair": 3.7, "bob cut": 1.25, "short hair": 0.8}[style]
        W = {"long hair": 1.3, "bob cut": 1.22, "short hair": 1.12}[style]
        shape = [(-1.06, -0.1), (-W * 0.95, 0.6), (-W, 0.6 + (L - 0.6) * 0.6), (-W * 0.96, L)]
        k = 7 if style == "long hair" else 5
        for j in range(1, k):
            x = -W * 0.96 + 1.92 * W * j / k
            shape.append((x, L - (0.32 if j % 2 else -0.05) * (1.0 if style == "long hair" else 0.6)))
        shape += [(W * 0.96, L), (W, 0.6 + (L - 0.6) * 0.6), (W * 0.95, 0.6), (1.06, -0.1), (0.8, -0.8),
                  (0.0, -1.08), (-0.8, -0.8)]  # fmt: skip
        pts = [hc + R * np.array(p) for p in shape]
        lit = [hc + R * np.array((x * 0.78 - 0.12, y * 0.97 - 0.04)) for x, y in shape]
        cv.poly(pts, hair, BACK_HAIR, lit=lit)
        if style == "long hair":  # a few strand lines
            for x in (-0.55, 0.05, 0.6):
                cv.d.line([tuple(hc + R * np.array((x * 0.8, 0.9))), tuple(hc + R * np.array((x, L - 0.45)))],
                          fill=_shade(_shade(hair)), width=max(1, int(cv.ow * 0.6)))  # fmt: skip
    if not tails:
        return
    if style == "twintails":
        acc = ch.CLOTH_COLORS.get(c.accessory_color, (220, 60, 80))
        for sx in (1, -1):
            a = P((0.92 * sx, 0.35, -0.2))
            ax = float(np.sign(a[0] - hc[0]) or sx)
            pts, lit = _tail(a, ax, 2.9 * R, 0.42 * R, 0.55 * R)
            cv.poly(pts, hair, BACK_HAIR, lit=lit)
            cv.disc(a, 0.17 * R, 0.17 * R, acc, BACK_HAIR)
    if style == "ponytail":
        a = P((0.0, 0.45, -0.95))
        # The tail swings out on the side the face turns away from.
        sx = float(-np.sign((M @ np.array([0.0, 0.0, 1.0]))[0]) or 1.0)
        pts, lit = _tail(a, sx, 2.5 * R, 0.4 * R, 0.45 * R)
        cv.poly(pts, hair, BACK_HAIR, lit=lit)
        acc = ch.CLOTH_COLORS.get(c.accessory_color, (220, 60, 80))
        cv.disc(a, 0.15 * R, 0.15 * R, acc, BACK_HAIR)
    if style == "hair bun":
        b = P((0.0, 0.8, -0.5))
        cv.disc(b, 0.5 * R, 0.46 * R, hair, BACK_HAIR)
    del down


# -- body ------------------------------------------------------------------------------------------
def _perp(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return np.array([-v[1], v[0]]) / n if n > 1e-6 else np.array([1.0, 0.0])


def render(
    pose: Pose, character: ch.Character, size: int = 128, background: bool = True, rig: Rig | None = None
) -> Render:
    """Draw `character` in `pose` on a `size` square; the returned pose has visibility after occlusion."""
    if pose.width != pose.height:
        pose = fit_to_square(pose, size, margin=0.08)
    S = size * SS
    f = _figure_from_rig(rig, pose, S) if rig is not None else _figure_from_pose(pose, S)
    c = character
    seed = zlib.crc32(f"{c.hair_color}/{c.background_color}".encode()) % 1000  # not hash(): salted per process
    bg = _background(c, S, seed) if background else Image.new("RGB", (S, S), (255, 255, 255))
    cv = _Canvas(bg, size / 128)
    kp, has = f.kp, f.vis > 0
    skin = ch.SKIN_TONES[c.skin]
    top, second = ch.CLOTH_COLORS[c.outfit_colors[0]], ch.CLOTH_COLORS[c.outfit_colors[1]]
    shoe = ch.CLOTH_COLORS.get(c.shoe_color, (120, 80, 60))
    lr = f.limb_r
    R = f.head_r

    # Shadow on the floor under the feet.
    if background:
        feet = [kp[i] for i in (15, 16) if has[i]]
        if feet:
            fy = max(p[1] for p in feet) + 0.3 * lr
            fx = float(np.mean([p[0] for p in feet]))
            a, _ = ch.BACKGROUNDS[c.background_color]
            cv.d.ellipse((fx - 5 * lr, fy - 1.2 * lr, fx + 5 * lr, fy + 1.2 * lr), fill=_shade(a))

    if background and rig is not None and rig.action == "sit" and has[11] and has[12]:
        # A stool under a seated character, so the pose reads (not part of the mask).
        seat = (kp[11] + kp[12]) / 2 + np.array([0.0, 1.2 * lr])
        floor = max(kp[15, 1], kp[16, 1]) + 0.9 * lr
        half = max(abs(kp[11, 0] - kp[12, 0]) / 2 + 3.5 * lr, 4 * lr)
        wood = _mix((170, 120, 80), ch.BACKGROUNDS[c.background_color][1], 0.35)
        o = cv.ow
        for dx in (-half * 0.8, half * 0.8):
            cv.d.rectangle((seat[0] + dx - lr * 0.7 - o, seat[1], seat[0] + dx + lr * 0.7 + o, floor), fill=_line(wood))
            cv.d.rectangle((seat[0] + dx - lr * 0.7, seat[1], seat[0] + dx + lr * 0.7, floor - o), fill=_shade(wood))
        cv.d.rectangle((seat[0] - half - o, seat[1] - lr - o, seat[0] + half + o, seat[1] + lr + o), fill=_line(wood))
        cv.d.rectangle((seat[0] - half, seat[1] - lr, seat[0] + half, seat[1] + lr), fill=wood)

    outfit = c.outfit
    boy = c.gender == "boy"
    skirt_len = {"dress": 0.7, "blouse and skirt": 0.55, "sailor uniform": 0.6, "kimono": 1.9}.get(outfit)
    if boy and outfit != "kimono":
        skirt_len = None
    trousers = outfit == "shirt and trousers" or (boy and outfit == "sailor uniform")
    shorts = outfit == "hoodie and shorts"
    long_sleeves = outfit in ("shirt and trousers", "sailor uniform", "hoodie and shorts", "kimono")

    ms = (kp[5] + kp[6]) / 2
    mh = (kp[11] + kp[12]) / 2
    torso_depth = float(np.mean(f.depth[[5, 6, 11, 12]]))
    parts: list[tuple[float, int, object]] = []

    def add(key: float, fn) -> None:
        parts.append((key, len(parts), fn))

    # Legs: drawn before the torso, near over far; each leg is one outlined shape.
    for sd, (h, k, a) in ((1, (11, 13, 15)), (-1, (12, 14, 16))):
        thigh_id, shin_id, shoe_id = LEG[sd]
        if not (has[h] and has[k]):
            continue

        def leg(h=h, k=k, a=a, thigh_id=thigh_id, shin_id=shin_id, shoe_id=shoe_id) -> None:
            thigh_col = second if trousers else skin
            shin_col = second if trousers else skin
            if skirt_len and skirt_len > 1.5:
                thigh_col = shin_col = top
            socks = c.legwear != "none" and not trousers and not (skirt_len and skirt_len > 1.5)
            sock = ch.CLOTH_COLORS.get(c.legwear_color, (250, 250, 250))
            segs = [(kp[h], kp[k], lr * 1.45, lr * 1.1, thigh_col, thigh_id)]
            if socks and c.legwear == "thighhighs":
                segs.append((kp[h] + (kp[k] - kp[h]) * 0.45, kp[k], lr * 1.32, lr * 1.1, sock, thigh_id))
            if has[a]:
                segs.append((kp[k], kp[a], lr * 1.1, lr * 0.82, shin_col, shin_id))
                if socks:
                    top_t = 0.0 if c.legwear == "thighhighs" else 0.12
                    segs.append((kp[k] + (kp[a] - kp[k]) * top_t, kp[a], lr * 1.1, lr * 0.82, sock, shin_id))
                if c.shoes == "boots":
                    segs.append((kp[k] + (kp[a] - kp[k]) * 0.45, kp[a], lr * 1.12, lr * 0.95, shoe, shin_id))
                toe = kp[a] + np.array([f.forward_x * 1.9 * lr, 0.9 * lr])
                segs.append((kp[a] + np.array([0, 0.2 * lr]), toe, lr * 1.0, lr * 0.95, shoe, shoe_id))
            cv.chain(segs)
            if shorts:
                mid = kp[h] + (kp[k] - kp[h]) * 0.5
                cv.limb(kp[h], mid, lr * 1.6, lr * 1.45, second, thigh_id)
            if has[a] and c.shoes == "sneakers":
                cv.d.line([tuple(kp[a] + np.array([-f.forward_x * 0.4 * lr - lr * 0.5, 1.15 * lr])),
                           tuple(toe + np.array([lr * 0.5 * (1 - abs(f.forward_x)), 0.9 * lr]))],
                          fill=(250, 250, 250), width=max(1, int(0.35 * lr)))  # fmt: skip

        add(-1e6 + float(np.mean(f.depth[[h, k]])), leg)

    # Torso (with skirt, collar, neck).
    axis = ms - mh
    nrm = _perp(axis)
    sw, hw = f.shoulder_hw, f.hip_hw

    def torso() -> None:
        neck_top = f.head_c + np.array([0.0, 0.55 * R])
        cv.limb(f.neck, neck_top, lr * 1.05, lr * 1.05, skin, NECK)
        if outfit == "hoodie and shorts":  # the hood lies behind the neck
            cv.disc(f.neck + (neck_top - f.neck) * 0.1, sw * 0.75, sw * 0.42, _shade(top), TORSO)
        waist = mh + axis * 0.38
        wf = 0.9 if boy else 0.76  # a narrower waist for girls
        body = [ms + nrm * sw * 0.92 + axis * 0.02, ms + nrm * sw - axis * 0.06, waist + nrm * sw * wf,
                mh + nrm * hw - axis * 0.08, mh - nrm * hw - axis * 0.08, waist - nrm * sw * wf,
                ms - nrm * sw - axis * 0.06, ms - nrm * sw * 0.92 + axis * 0.02]  # fmt: skip
        lit = [ms + (p - ms) * 0.85 + LIGHT * sw * 0.12 for p in body]
        cv.poly(body, top, TORSO, lit=lit)
        if skirt_len:
            hem = []
            for sd, h, k in ((1, 11, 13), (-1, 12, 14)):
                if has[k]:
                    t = min(skirt_len, 1.0)
                    pt = kp[h] + (kp[k] - kp[h]) * t
                    if skirt_len > 1.0 and has[k + 2]:
                        pt = kp[k] + (kp[k + 2] - kp[k]) * (skirt_len - 1.0)
                else:
                    pt = kp[h] - axis * 0.6
                out = nrm * (1 if sd == 1 else -1) * (hw * 0.1 + lr * (1.8 if skirt_len < 1.5 else 1.4))
                sign_side = 1.0 if (pt - mh) @ nrm >= 0 else -1.0
                hem.append(pt + out * (sign_side * (1 if sd == 1 else -1)))
            wl, wr = mh + axis * 0.3 + nrm * sw * 0.8, mh + axis * 0.3 - nrm * sw * 0.8
            hl, hr = hem[0], hem[1]
            # Keep the hem's left/right order consistent with the waist's.
            if (hl - hr) @ nrm < 0:
                hl, hr = hr, hl
            spread = (hl - hr) @ nrm
            widen = max(0.0, hw * 2.4 - spread) / 2
            hl, hr = hl + nrm * widen, hr - nrm * widen
            skirt_col = top if outfit in ("dress", "kimono") else second
            pts = [wl, hl, (hl + hr) / 2 - axis * 0.04, hr, wr]
            cv.poly(pts, skirt_col, SKIRT, lit=[wl, hl * 0.8 + hr * 0.2 + LIGHT * lr, (hl + hr) / 2, wr])
            if outfit in ("sailor uniform", "blouse and skirt"):
                for t in (0.3, 0.5, 0.7):
                    a = wl + (wr - wl) * t
                    b = hl + (hr - hl) * t
                    cv.d.line([tuple(a), tuple(b)], fill=_shade(_shade(skirt_col)), width=max(1, int(cv.ow * 0.7)))
        # Belt / obi / collar details.
        if outfit == "kimono":
            b0, b1 = mh + axis * 0.25, mh + axis * 0.5
            cv.poly([b1 + nrm * sw * 0.85, b0 + nrm * sw * 0.85, b0 - nrm * sw * 0.85, b1 - nrm * sw * 0.85],
                    second, TORSO)  # fmt: skip
        if outfit in ("dress", "blouse and skirt") and f.facing > -0.2:
            b0 = mh + axis * 0.3
            cv.d.line([tuple(b0 + nrm * sw * 0.8), tuple(b0 - nrm * sw * 0.8)], fill=second,
                      width=max(1, int(0.5 * lr)))  # fmt: skip
        if f.facing > -0.2:
            neck_c = ms + axis * 0.02
            if outfit == "sailor uniform":
                v = ms - axis * 0.45
                cv.poly([neck_c + nrm * sw * 0.95, v, neck_c - nrm * sw * 0.95, neck_c + axis * 0.08], second, TORSO)
                cv.d.line([tuple(neck_c + nrm * sw * 0.8 - axis * 0.04), tuple(v + axis * 0.1),
                           tuple(neck_c - nrm * sw * 0.8 - axis * 0.04)], fill=(250, 250, 250),
                          width=max(1, int(cv.ow * 0.7)))  # fmt: skip
                rib = ch.CLOTH_COLORS.get(c.accessory_color, (220, 60, 80))
                cv.poly([v, v + nrm * lr * 1.6 - axis * 0.15, v - nrm * lr * 1.6 - axis * 0.15], rib, TORSO)
            elif outfit == "kimono":
                v = ms - axis * 0.62
                cv.d.line([tuple(neck_c + nrm * sw * 0.4), tuple(v)], fill=second, width=max(1, int(0.5 * lr)))
                cv.d.line([tuple(neck_c - nrm * sw * 0.4), tuple(v)], fill=second, width=max(1, int(0.5 * lr)))
            elif outfit == "shirt and trousers":
                cv.poly([neck_c + nrm * sw * 0.45, neck_c - axis * 0.12, neck_c - nrm * sw * 0.45, neck_c + axis * 0.06],
                        (250, 250, 250), TORSO)  # fmt: skip
                tie = ch.CLOTH_COLORS.get(c.accessory_color, (220, 60, 80))
                cv.poly([neck_c - axis * 0.08 + nrm * lr * 0.4, neck_c - axis * 0.5, neck_c - axis * 0.08 - nrm * lr * 0.4],
                        tie, TORSO)  # fmt: skip
            elif outfit in ("dress", "blouse and skirt"):
                cv.disc(neck_c - axis * 0.02 + nrm * lr * 0.9, lr * 1.0, lr * 0.6, (250, 250, 250), TORSO)
                cv.disc(neck_c - axis * 0.02 - nrm * lr * 0.9, lr * 1.0, lr * 0.6, (250, 250, 250), TORSO)
            elif outfit == "hoodie and shorts":
                p = mh + axis * 0.22
                cv.d.line([tuple(p + nrm * sw * 0.5), tuple(p - nrm * sw * 0.5)], fill=_shade(top),
                          width=max(1, int(cv.ow)))  # fmt: skip
                for sd in (1, -1):
                    cv.d.line([tuple(neck_c + nrm * sd * lr * 0.6), tuple(neck_c + nrm * sd * lr * 0.6 - axis * 0.3)],
                              fill=(250, 250, 250), width=max(1, int(cv.ow * 0.8)))  # fmt: skip

    add(torso_depth, torso)

    # Arms: each one outlined shape, in front of the torso unless clearly behind it.
    head_key = max(f.head_depth, torso_depth) + 0.8 * R
    for sd, (s_, e_, w_) in ((1, (5, 7, 9)), (-1, (6, 8, 10))):
        up_id, fore_id, hand_id = ARM[sd]
        if not (has[s_] and has[e_]):
            continue

        def arm(s_=s_, e_=e_, w_=w_, up_id=up_id, fore_id=fore_id, hand_id=hand_id) -> None:
            upper_col = skin if outfit == "dress" else top
            segs = [(kp[s_], kp[e_], lr * 1.1, lr * 0.95, upper_col, up_id)]
            drape = None
            if has[w_]:
                d = kp[w_] - kp[e_]
                n = np.linalg.norm(d)
                hand = kp[w_] + (d / n * lr * 0.45 if n > 1e-6 else 0)
                fore_col = top if long_sleeves else skin
                segs.append((kp[e_], kp[w_], lr * 0.95, lr * 0.8, fore_col, fore_id))
                if outfit == "sailor uniform":
                    segs.append((kp[e_] + d * 0.78, kp[w_] - d * 0.02, lr * 0.92, lr * 0.86, second, fore_id))
                segs.append((hand, hand, lr * 0.95, lr * 0.95, skin, hand_id))
                if outfit == "kimono":
                    drape = [kp[e_], kp[w_] - d * 0.15, kp[w_] + np.array([0, 2.8 * lr]),
                             kp[e_] + np.array([0, 2.6 * lr])]  # fmt: skip
            if drape is not None:
                cv.poly(drape, _shade(top), fore_id)
            cv.chain(segs)
            if outfit in ("dress", "blouse and skirt"):  # puffed short sleeve
                cv.disc(kp[s_] + (kp[e_] - kp[s_]) * 0.2, lr * 1.5, lr * 1.5, top, up_id)

        pts = [s_, e_, w_] if has[w_] else [s_, e_]
        key = float(np.mean(f.depth[pts])) + 0.5 * R
        add(key if key <= head_key else key + 1e3, arm)

    # Head and hair.
    face_z = float((f.head_rot @ np.array([0.0, -0.2, 1.0]) / 1.02)[2])
    if face_z > -0.3:
        add(-2e6, lambda: _back_hair(cv, f, c))
        add(head_key, lambda: (_head(cv, f, c), _head_top(cv, f, c)))
    else:  # from behind the hair lies over the back, under the arms and the head
        add(torso_depth, lambda: _back_hair(cv, f, c, tails=False))
        add(head_key, lambda: (_head(cv, f, c), _back_hair(cv, f, c, mass=False), _head_top(cv, f, c)))

    for _, _, fn in sorted(parts, key=lambda t: (t[0], t[1])):
        fn()

    # Visibility after overlap: a face point must be drawn facing us, and any point must lie on a
    # part that owns it.
    ids = np.asarray(cv.ids)
    vis = f.vis.copy()
    for i, name in enumerate(("nose", "left_eye", "right_eye", "left_ear", "right_ear")):
        n = f.head_rot @ np.array(FACE_POINTS[name])
        limit = {"nose": -0.05, "left_eye": 0.22, "right_eye": 0.22}.get(name, -0.35)
        if face_z <= -0.3 and i < 3 or n[2] / np.linalg.norm(n) < limit:
            vis[i] = min(vis[i], HIDDEN)
    for i in range(NUM_KEYPOINTS):
        if vis[i] < VISIBLE:
            continue
        x, y = math.floor(kp[i, 0]), math.floor(kp[i, 1])
        if not (0 <= x < S and 0 <= y < S) or int(ids[y, x]) not in OWNERS[i]:
            vis[i] = HIDDEN
    image = cv.img.reduce(SS) if SS > 1 else cv.img
    on = cv.ids.point(lambda v: 255 if v else 0).reduce(SS) if SS > 1 else cv.ids.point(lambda v: 255 if v else 0)
    mask = np.asarray(on) >= 96
    out = np.concatenate([kp / S, vis[:, None]], axis=1).astype(np.float32)
    return Render(image=image, pose=Pose(out, size, size), mask=mask)


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
