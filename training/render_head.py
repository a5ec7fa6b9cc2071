"""The head and hair of a `training.render` character, and the canvas every part is drawn on.

The canvas draws each part three times (a dark outline a little larger, a shadow colour, then the lit colour
shifted toward the light) and also into a part-id buffer. The head is a unit sphere turned by its rotation; the
face is drawn at `training.skeleton.FACE_POINTS`, the points the keypoint labels use, so the two agree exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from training import character as ch
from training.skeleton import FACE_POINTS

Color = ch.RGB
LIGHT = np.array([-0.55, -0.83])  # light from the upper left (screen, y down)
# Part ids in the id buffer (0 is the background; `training.render` numbers the limbs 10-25).
TORSO, SKIRT, NECK, HEAD, BACK_HAIR = 1, 2, 3, 4, 5
WHITE = (255, 255, 255)


# -- colours ---------------------------------------------------------------------------------------
def mix(a: Color, b: Color, t: float) -> Color:
    """Colour `a` moved a share `t` of the way to `b`."""
    return (int(a[0] + (b[0] - a[0]) * t), int(a[1] + (b[1] - a[1]) * t), int(a[2] + (b[2] - a[2]) * t))


def shade(c: Color) -> Color:
    """The cel shadow tone: darker and a little cooler."""
    return (int(c[0] * 0.76), int(c[1] * 0.74), int(min(255, c[2] * 0.84 + 10)))


def ink(c: Color) -> Color:
    """The outline tone for a part of colour `c`: a dark, warm version of it."""
    return mix(c, (46, 26, 40), 0.78)


def accent(c: ch.Character) -> Color:
    """The colour of the character's accessories (ribbons, ties, hair ties)."""
    return ch.CLOTH_COLORS.get(c.accessory_color, (220, 60, 80))


# -- a canvas that draws colour and part ids together ----------------------------------------------
def _capsule(d: ImageDraw.ImageDraw, p, q, r1: float, r2: float, fill) -> None:
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


class Canvas:
    """A supersampled picture and its part-id buffer, drawn together; `ow` is the outline width in pixels."""

    def __init__(self, img: Image.Image, ow: float, eyes: bool = True):
        self.img = img
        self.eyes = eyes  # False: heads drawn without eyes (the face check's negatives, `training.eval_face`)
        self.d = ImageDraw.Draw(img)
        self.ids = Image.new("L", img.size, 0)
        self.di = ImageDraw.Draw(self.ids)
        self.ow = ow

    def limb(self, p, q, r1: float, r2: float, color: Color, pid: int) -> None:
        """A tapered capsule from p (radius r1) to q (radius r2), outlined and cel shaded."""
        self.chain([(p, q, r1, r2, color, pid)], lit=0.72)

    def chain(self, segs, lit: float = 0.7) -> None:
        """Capsules `(p, q, r1, r2, color, pid)` outlined as one shape (no lines at the joints); `lit`: the
        lit core's share of the radius."""
        o = self.ow
        for p, q, r1, r2, color, pid in segs:
            _capsule(self.di, p, q, r1 + o, r2 + o, pid)
            _capsule(self.d, p, q, r1 + o, r2 + o, ink(color))
        for p, q, r1, r2, color, pid in segs:
            _capsule(self.d, p, q, r1, r2, shade(color))
        for p, q, r1, r2, color, pid in segs:
            off = LIGHT * 0.35 * min(r1, r2)
            _capsule(self.d, np.asarray(p) + off, np.asarray(q) + off, r1 * lit, r2 * lit, color)

    def poly(self, pts, color: Color, pid: int | None, outline: bool = True, lit=None) -> None:
        """A polygon with an outline; `lit` is an optional lighter inner polygon over a shadow base."""
        pts = [(float(x), float(y)) for x, y in pts]
        if pid is not None:
            self.di.polygon(pts, fill=pid)
            if outline:
                self.di.line(pts + [pts[0]], fill=pid, width=round(2 * self.ow), joint="curve")
        if outline:
            self.d.line(pts + [pts[0]], fill=ink(color), width=round(2 * self.ow), joint="curve")
        if lit is None:
            self.d.polygon(pts, fill=color)
        else:
            self.d.polygon(pts, fill=shade(color))
            self.d.polygon([(float(x), float(y)) for x, y in lit], fill=color)

    def disc(self, c, rx: float, ry: float, color: Color, pid: int | None, outline: bool = True) -> None:
        """An (outlined) ellipse."""
        o = self.ow if outline else 0.0
        box = (c[0] - rx - o, c[1] - ry - o, c[0] + rx + o, c[1] + ry + o)
        if pid is not None:
            self.di.ellipse(box, fill=pid)
        if outline:
            self.d.ellipse(box, fill=ink(color))
        self.d.ellipse((c[0] - rx, c[1] - ry, c[0] + rx, c[1] + ry), fill=color)


# -- the head --------------------------------------------------------------------------------------
@dataclass
class Head:
    """Where a head is drawn: centre and radius in supersampled pixels, rotation head -> camera."""

    c: np.ndarray
    r: float
    rot: np.ndarray  # x right, y up, z toward the camera

    def at(self, p) -> np.ndarray:
        """The picture point of head point `p` (unit sphere: x the character's left, y up, z forward)."""
        q = self.rot @ np.asarray(p, float)
        return self.c + self.r * np.array([q[0], -q[1]])

    def z(self, p) -> float:
        """How much the direction `p` turns toward the camera (1: straight at it)."""
        p = np.asarray(p, float)
        return float((self.rot @ (p / np.linalg.norm(p)))[2])

    def rim(self, p) -> np.ndarray:
        """Like `at`, but a point on the far side slides out to the silhouette's rim."""
        q = self.rot @ np.asarray(p, float)
        xy = np.array([q[0], -q[1]])
        n = np.linalg.norm(xy)
        if q[2] < 0 and n < 1.06 and n > 1e-6:
            xy = xy * (1.06 / n)
        return self.c + self.r * xy

    @property
    def front(self) -> bool:
        """Whether the face turns far enough toward the camera to be drawn."""
        return float((self.rot @ np.array([0.0, -0.2, 1.0]) / 1.02)[2]) > -0.3


# The jaw and chin below the face's fringe line, from the right ear round to the left.
_JAW = [(-0.99, -0.3, 0.0), (-0.8, -0.78, 0.12), (-0.3, -1.05, 0.45), (0.0, -1.12, 0.45),
        (0.3, -1.05, 0.45), (0.8, -0.78, 0.12), (0.99, -0.3, 0.0)]  # fmt: skip
_LASH = (50, 30, 40)


def draw_head(cv: Canvas, h: Head, c: ch.Character) -> None:
    """The skull under its hair cap; from the front also the face, ears, side locks and glasses."""
    skin = ch.SKIN_TONES[c.skin]
    ears = c.hair_style in ("short hair", "spiked hair", "ponytail") or c.gender == "boy"
    _skull(cv, h, c)
    if not h.front:  # from behind: only ears at the sides
        if ears:
            _ears(cv, h, skin, -0.3)
        return
    _face(cv, h, c)
    if ears:  # they stick out of short hair
        _ears(cv, h, skin, 0.3)
    for name, sx in (("left_eye", 1), ("right_eye", -1)) if cv.eyes else ():
        _eye(cv, h, c, FACE_POINTS[name], sx)
    _mouth_and_nose(cv, h, c)
    if c.hair_style in ("long hair", "bob cut", "twintails", "hair bun", "ponytail") and c.gender == "girl":
        _side_locks(cv, h, ch.HAIR_COLORS[c.hair_color])
    if "glasses" in c.accessories:
        for name in ("left_eye", "right_eye"):
            e = FACE_POINTS[name]
            if h.z(e) > 0.22:
                ctr, w = h.at(e), 0.2 * h.r * (0.3 + 0.7 * h.z(e))
                cv.d.ellipse((ctr[0] - w, ctr[1] - 0.2 * h.r, ctr[0] + w, ctr[1] + 0.2 * h.r), outline=(60, 50, 70),
                             width=max(1, round(0.05 * h.r)))  # fmt: skip


def _skull(cv: Canvas, h: Head, c: ch.Character) -> None:
    """The hair cap over the skull (spikes for spiky hair, the nape from behind), with the crown's highlight."""
    R, hair = h.r, ch.HAIR_COLORS[c.hair_color]
    up = (h.rot @ np.array([0.0, 1.0, 0.0]))[:2] * (1, -1)
    cap_c = h.c + up * 0.05 * R
    if c.hair_style == "spiked hair":
        tips = (1.0, 1.42, 1.0, 1.5, 1.0, 1.38, 1.0, 1.5, 1.0, 1.35, 1.0)
        roll = math.atan2(up[0], -up[1])
        angles = np.linspace(math.pi * 0.82, math.pi * 2.18, len(tips))
        pts = [cap_c + R * t * np.array([math.cos(a + roll), math.sin(a + roll)]) for t, a in zip(tips, angles)]
        cv.poly(pts, hair, HEAD, lit=[cap_c + (p - cap_c) * 0.85 + LIGHT * 0.1 * R for p in pts])
    if not h.front:
        nape = [h.at((0.8 - 1.6 * k / 6, -1.3 if k % 2 else -1.05, -0.5)) for k in range(1, 6)]
        cv.poly([h.at((0.8, -0.3, -0.5)), *nape, h.at((-0.8, -0.3, -0.5))], hair, HEAD)
    x, y = cap_c
    cv.disc(cap_c, 1.07 * R, 1.07 * R, hair, HEAD)
    cv.d.ellipse((x - 1.07 * R, y - 1.07 * R, x + 1.07 * R, y + 1.07 * R), fill=shade(hair))
    cv.d.ellipse((x - 1.0 * R - 0.12 * R, y - 1.07 * R, x + 0.9 * R, y + 0.85 * R), fill=hair)
    ring = (x - 0.72 * R, y - 0.78 * R, x + 0.72 * R, y + 0.66 * R)  # the "angel ring" across the crown
    cv.d.arc(ring, 200, 300, fill=mix(hair, WHITE, 0.55), width=max(1, int(0.11 * R)))


def _ears(cv: Canvas, h: Head, skin: Color, probe_z: float) -> None:
    """The ears whose side turns toward the camera (probed toward the face, or the back of the head)."""
    for sx in (1, -1):
        if h.z((sx, 0, probe_z)) > 0.05:
            cv.disc(h.at((0.93 * sx, -0.3, -0.05)), 0.16 * h.r, 0.22 * h.r, skin, HEAD)


def _face(cv: Canvas, h: Head, c: ch.Character) -> None:
    """The face's skin from the fringe's zigzag down to the jaw and chin, then the fringe's own outline."""
    spiky, blunt = c.hair_style == "spiked hair", c.hair_style == "bob cut"
    ntip = 4 if spiky else 6
    line = []
    for k in range(2 * ntip + 1):
        x = 0.94 - 1.88 * k / (2 * ntip)
        if k in (0, 2 * ntip):
            y = 0.05
        elif blunt:
            y = -0.1
        else:
            y = (-0.2 if spiky else -0.13) if k % 2 else (0.16 if spiky else 0.1)
        line.append((x, y, math.sqrt(max(0.0, 1 - x * x - y * y))))
    pts = [h.rim(p) for p in line + _JAW]
    lit = [h.rim((0.88 * x + 0.04, 0.9 * y + 0.02, z)) for x, y, z in line + _JAW]
    cv.poly(pts, ch.SKIN_TONES[c.skin], HEAD, lit=lit)
    cv.d.line([tuple(p) for p in pts[: len(line)]], fill=ink(ch.HAIR_COLORS[c.hair_color]),
              width=max(1, round(cv.ow)), joint="curve")  # fmt: skip


def _eye(cv: Canvas, h: Head, c: ch.Character, e: tuple, sx: int) -> None:
    """The eye at head point `e` on side `sx` (if it faces the camera): white, iris, highlights, lashes, brow, blush."""
    z = h.z(e)
    if z < 0.22:
        return
    R, skin, iris = h.r, ch.SKIN_TONES[c.skin], ch.EYE_COLORS[c.eye_color]
    tall = 0.21 * R * (0.8 if c.gender == "boy" else 1.0)
    ctr = h.at(e)
    w = 0.16 * R * (0.3 + 0.7 * z)
    cv.d.ellipse((ctr[0] - w, ctr[1] - tall, ctr[0] + w, ctr[1] + tall), fill=WHITE)
    iw, ih = w * 0.86, tall * 0.9
    ic = ctr + np.array([0.0, 0.08 * tall])
    cv.d.ellipse((ic[0] - iw, ic[1] - ih, ic[0] + iw, ic[1] + ih), fill=shade(iris))
    cv.d.ellipse((ic[0] - iw * 0.8, ic[1] - ih * 0.2, ic[0] + iw * 0.8, ic[1] + ih * 0.95), fill=mix(iris, WHITE, 0.25))
    cv.d.ellipse((ic[0] - iw * 0.45, ic[1] - ih * 0.5, ic[0] + iw * 0.45, ic[1] + ih * 0.3),
                 fill=mix(iris, (20, 10, 30), 0.65))  # fmt: skip
    hl = max(0.9, 0.34 * w)
    hp = ic + np.array([-0.35 * iw, -0.4 * ih])
    cv.d.ellipse((hp[0] - hl, hp[1] - hl * 1.2, hp[0] + hl, hp[1] + hl * 1.2), fill=WHITE)
    hp2 = ic + np.array([0.35 * iw, 0.45 * ih])
    cv.d.ellipse((hp2[0] - hl * 0.5, hp2[1] - hl * 0.5, hp2[0] + hl * 0.5, hp2[1] + hl * 0.5), fill=WHITE)
    # Upper lash line: thick, flicking out at the outer corner (toward the character's own side).
    ox = 1.0 if (h.rot @ np.array([sx, 0.0, 0.0]))[0] >= 0 else -1.0
    lw = max(1, round(0.085 * R))
    lpts = [(ctr[0] - ox * w * 1.1, ctr[1] - tall * 0.55), (ctr[0] - ox * w * 0.2, ctr[1] - tall * 1.02),
            (ctr[0] + ox * w * 0.8, ctr[1] - tall * 0.85), (ctr[0] + ox * w * 1.35, ctr[1] - tall * 0.35)]  # fmt: skip
    cv.d.line(lpts, fill=_LASH, width=lw, joint="curve")
    cv.d.line([(ctr[0] - ox * w * 0.6, ctr[1] + tall * 0.98), (ctr[0] + ox * w * 0.5, ctr[1] + tall * 0.98)],
              fill=mix(_LASH, skin, 0.5), width=max(1, lw // 2))  # fmt: skip
    bp = h.at((e[0] * 1.05, -0.02, 0.95))  # the brow, just under the fringe
    cv.d.line([(bp[0] - ox * w, bp[1] + 0.03 * R), (bp[0] + ox * w * 0.9, bp[1] - 0.02 * R)],
              fill=mix(ch.HAIR_COLORS[c.hair_color], _LASH, 0.6), width=max(1, round(0.05 * R)))  # fmt: skip
    if c.blush:
        bl = h.at((0.55 * sx, -0.66, 0.6))
        cv.d.ellipse((bl[0] - w * 0.9, bl[1] - 0.05 * R, bl[0] + w * 0.9, bl[1] + 0.05 * R),
                     fill=mix(skin, (240, 110, 130), 0.45))  # fmt: skip


def _mouth_and_nose(cv: Canvas, h: Head, c: ch.Character) -> None:
    """The mouth (a smile or a line), the nose's profile where it leaves the skull's outline, and its tip."""
    R, skin = h.r, ch.SKIN_TONES[c.skin]
    mz = h.z((0.0, -0.76, 0.64))
    if mz > 0.05:
        m = h.at((0.0, -0.76, 0.64))
        mw = 0.13 * R * (0.4 + 0.6 * mz)
        if c.smile:
            cv.d.chord((m[0] - mw, m[1] - mw * 0.9, m[0] + mw, m[1] + mw * 0.9), 0, 180, fill=(150, 40, 60))
            cv.d.chord((m[0] - mw * 0.6, m[1] + mw * 0.1, m[0] + mw * 0.6, m[1] + mw * 0.85), 0, 180,
                       fill=(236, 120, 130))  # fmt: skip
        else:
            cv.d.line([(m[0] - mw * 0.7, m[1]), (m[0] + mw * 0.7, m[1])], fill=(150, 60, 70),
                      width=max(1, round(0.045 * R)))  # fmt: skip
    tip = h.at((0.0, -0.52, 1.1))
    if np.linalg.norm(tip - h.c) > 1.02 * R:
        cv.poly([h.at((0.0, -0.36, 0.94)), tip, h.at((0.0, -0.62, 0.86))], skin, HEAD)
    if h.z(FACE_POINTS["nose"]) > -0.05:
        n = h.at(FACE_POINTS["nose"])
        cv.d.ellipse((n[0] - 0.03 * R, n[1] - 0.02 * R, n[0] + 0.03 * R, n[1] + 0.04 * R), fill=shade(shade(skin)))


def _side_locks(cv: Canvas, h: Head, hair: Color) -> None:
    """Locks of hair framing the face, on the sides that turn toward the camera."""
    for sx in (1, -1):
        if h.z((sx, -0.3, 0.35)) < -0.15:
            continue
        lock = [(0.99 * sx, 0.15, 0.0), (1.0 * sx, -0.5, 0.06), (0.93 * sx, -1.18, 0.14),
                (0.84 * sx, -0.6, 0.36), (0.87 * sx, 0.0, 0.44)]  # fmt: skip
        cv.poly([h.rim(p) for p in lock], hair, HEAD)


def head_top(cv: Canvas, h: Head, c: ch.Character) -> None:
    """Things on top of the head that stay visible from behind (cat ears, beret, ribbon, clip)."""
    R, acc, hair = h.r, accent(c), ch.HAIR_COLORS[c.hair_color]
    if "cat ears" in c.accessories:
        for sx in (1, -1):
            base = [h.at((0.75 * sx, 0.62, 0.0)), h.at((0.25 * sx, 0.98, 0.0)), h.at((0.8 * sx, 1.32, 0.0))]
            cv.poly(base, hair, HEAD)
            inner = [base[0] * 0.6 + base[2] * 0.4, base[1] * 0.6 + base[2] * 0.4, base[2] * 0.8 + base[0] * 0.2]
            cv.d.polygon([tuple(p) for p in inner], fill=(246, 170, 190))
    if "beret" in c.accessories:
        b = h.at((0.1, 0.95, 0.0))
        cv.disc(b, 1.05 * R, 0.42 * R, acc, HEAD)
        cv.disc(b + np.array([0, -0.42 * R]), 0.12 * R, 0.12 * R, acc, HEAD)
    if "hair ribbon" in c.accessories:
        b = h.at((-0.55, 0.8, 0.2))
        w = 0.38 * R
        cv.poly([b, b + (-w, -w * 0.8), b + (-w, w * 0.8)], acc, HEAD)
        cv.poly([b, b + (w, -w * 0.8), b + (w, w * 0.8)], acc, HEAD)
        cv.disc(b, 0.12 * R, 0.12 * R, acc, HEAD)
    if "hairclip" in c.accessories:
        a, b = h.at((0.62, 0.42, 0.68)), h.at((0.42, 0.62, 0.68))
        cv.d.line([tuple(a), tuple(b)], fill=mix(acc, WHITE, 0.2), width=max(1, int(0.12 * R)))


# -- the hair behind the head ----------------------------------------------------------------------
def hair_mass(cv: Canvas, h: Head, c: ch.Character) -> None:
    """The mass of long hair, a bob or a girl's short hair behind the head, with strand lines on long hair."""
    style = c.hair_style
    if not (style in ("long hair", "bob cut") or (style == "short hair" and c.gender == "girl")):
        return
    R, hc, hair = h.r, h.c, ch.HAIR_COLORS[c.hair_color]
    L = {"long hair": 3.7, "bob cut": 1.25, "short hair": 0.8}[style]
    W = {"long hair": 1.3, "bob cut": 1.22, "short hair": 1.12}[style]
    shape = [(-1.06, -0.1), (-W * 0.95, 0.6), (-W, 0.6 + (L - 0.6) * 0.6), (-W * 0.96, L)]
    k = 7 if style == "long hair" else 5
    for j in range(1, k):  # the zigzag of the tips
        x = -W * 0.96 + 1.92 * W * j / k
        shape.append((x, L - (0.32 if j % 2 else -0.05) * (1.0 if style == "long hair" else 0.6)))
    shape += [(W * 0.96, L), (W, 0.6 + (L - 0.6) * 0.6), (W * 0.95, 0.6), (1.06, -0.1), (0.8, -0.8),
              (0.0, -1.08), (-0.8, -0.8)]  # fmt: skip
    pts = [hc + R * np.array(p) for p in shape]
    lit = [hc + R * np.array((x * 0.78 - 0.12, y * 0.97 - 0.04)) for x, y in shape]
    cv.poly(pts, hair, BACK_HAIR, lit=lit)
    if style == "long hair":
        for x in (-0.55, 0.05, 0.6):
            cv.d.line([tuple(hc + R * np.array((x * 0.8, 0.9))), tuple(hc + R * np.array((x, L - 0.45)))],
                      fill=shade(shade(hair)), width=max(1, int(cv.ow * 0.6)))  # fmt: skip


def hair_tails(cv: Canvas, h: Head, c: ch.Character) -> None:
    """Twintails or a ponytail (each with its hair tie), or a bun."""
    R, hair = h.r, ch.HAIR_COLORS[c.hair_color]
    if c.hair_style == "twintails":
        for sx in (1, -1):
            a = h.at((0.92 * sx, 0.35, -0.2))
            pts, lit = _tail(a, float(np.sign(a[0] - h.c[0]) or sx), 2.9 * R, 0.42 * R, 0.55 * R)
            cv.poly(pts, hair, BACK_HAIR, lit=lit)
            cv.disc(a, 0.17 * R, 0.17 * R, accent(c), BACK_HAIR)
    if c.hair_style == "ponytail":
        a = h.at((0.0, 0.45, -0.95))
        sx = float(-np.sign((h.rot @ np.array([0.0, 0.0, 1.0]))[0]) or 1.0)  # swings away from the face's turn
        pts, lit = _tail(a, sx, 2.5 * R, 0.4 * R, 0.45 * R)
        cv.poly(pts, hair, BACK_HAIR, lit=lit)
        cv.disc(a, 0.15 * R, 0.15 * R, accent(c), BACK_HAIR)
    if c.hair_style == "hair bun":
        cv.disc(h.at((0.0, 0.8, -0.5)), 0.5 * R, 0.46 * R, hair, BACK_HAIR)


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
