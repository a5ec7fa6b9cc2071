"""What the UNet sees of a pose (keypoint and limb maps), and the drawings people look at.

* `condition_map`: 17 keypoint Gaussians + 16 limb channels (one per `models.pose.LIMBS`), float32
  in [0, 1]; the model brings them to the latent grid.
* `openpose_drawing`: the OpenPose / ControlNet colour drawing on black (lllyasviel/ControlNet
  `annotator/openpose/util.py: draw_bodypose`), for previews and ControlNet back ends.
* `skeleton_overlay`: the skeleton over the photo it came from, hidden points drawn hollow in grey.

The pose's normalised coordinates are laid on the given canvas as they are; a pose whose frame has
another aspect ratio should go through `models.pose.fit_to_square` (or a crop) first.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image, ImageDraw

from models.pose import LIMBS, NUM_KEYPOINTS, OPENPOSE18_TO_COCO, Pose

CONDITION_CHANNELS = NUM_KEYPOINTS + len(LIMBS)  # 33

_LIMB_A = np.array([a for a, _ in LIMBS])
_LIMB_B = np.array([b for _, b in LIMBS])


def default_sigma(height: int, width: int) -> float:
    """The keypoint Gaussian's standard deviation and the limbs' half width, in pixels: 1/64 of the short side."""
    return max(1.0, min(height, width) / 64.0)


def condition_map(pose: Pose, height: int, width: int, sigma: float | None = None) -> np.ndarray:
    """The `(CONDITION_CHANNELS, H, W)` float32 map: keypoint Gaussians, then limb lines, in [0, 1]."""
    s = default_sigma(height, width) if sigma is None else float(sigma)
    out = np.zeros((CONDITION_CHANNELS, height, width), dtype=np.float32)
    pts = pose.xy.astype(np.float32) * np.array([width, height], dtype=np.float32)
    vis = pose.visible
    inv = np.float32(-0.5 / (s * s))
    # Pixel centres sit at i + 0.5, so a point at x = 0.5 of a 2-pixel row lies between both pixels.
    xs = np.arange(width, dtype=np.float32) + 0.5
    ys = np.arange(height, dtype=np.float32) + 0.5

    # 1. Keypoints: a separable Gaussian exp(-|p - k|^2 / 2 sigma^2) = gy(y) * gx(x).
    k = np.flatnonzero(vis)
    if k.size:
        gx = np.exp(inv * (xs[None, :] - pts[k, 0:1]) ** 2)
        gy = np.exp(inv * (ys[None, :] - pts[k, 1:2]) ** 2)
        out[k] = gy[:, :, None] * gx[:, None, :]

    # 2. Limbs: a Gaussian of the distance to the segment a-b (the projection clamped to it), worked
    # out only in each segment's box grown by 4 sigma (exp(-8) ~ 3e-4 beyond it). All limbs run at
    # once in boxes of the largest box's size, so the cost is a dozen numpy calls, not one per limb.
    limbs = np.flatnonzero(vis[_LIMB_A] & vis[_LIMB_B])
    if limbs.size:
        a, b = pts[_LIMB_A[limbs]], pts[_LIMB_B[limbs]]  # (L, 2) each
        reach = 4.0 * s
        frame = np.array([width, height])
        lo = np.clip(np.floor(np.minimum(a, b) - reach).astype(np.int64), 0, frame)
        hi = np.clip(np.ceil(np.maximum(a, b) + reach).astype(np.int64) + 1, 0, frame)
        bw, bh = (hi - lo).max(axis=0)
        if bw > 0 and bh > 0:
            ab = b - a
            inv_len2 = (1.0 / np.maximum((ab * ab).sum(axis=1), 1e-6)).astype(np.float32)
            dx = (lo[:, 0:1] + np.arange(bw) + 0.5).astype(np.float32)[:, None, :] - a[:, 0, None, None]
            dy = (lo[:, 1:2] + np.arange(bh) + 0.5).astype(np.float32)[:, :, None] - a[:, 1, None, None]
            abx, aby = ab[:, 0, None, None], ab[:, 1, None, None]
            t = np.clip((dx * abx + dy * aby) * inv_len2[:, None, None], 0.0, 1.0)  # (L, bh, bw)
            ex, ey = dx - t * abx, dy - t * aby
            values = np.exp(inv * (ex * ex + ey * ey))
            for k, li in enumerate(limbs):
                (x0, y0), (x1, y1) = lo[k], hi[k]
                out[NUM_KEYPOINTS + li, y0:y1, x0:x1] = values[k, : y1 - y0, : x1 - x0]
    return out


# -- OpenPose / ControlNet drawing -----------------------------------------------------------------
# ControlNet's draw_bodypose: limbs as 1-based pairs of BODY-18 points (only the first 17 are drawn)
# and one colour per point and per limb.
OPENPOSE_LIMBS: tuple[tuple[int, int], ...] = (
    (2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12),
    (12, 13), (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18),
)  # fmt: skip
OPENPOSE_COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip


def openpose18_points(pose: Pose, width: int, height: int) -> list[tuple[float, float] | None]:
    """The 18 OpenPose points in pixels of a `width x height` canvas (None where not visible; neck = mid-shoulder)."""
    px = pose.xy * np.array([width, height], dtype=np.float32)
    vis = pose.visible
    points: list[tuple[float, float] | None] = []
    for coco in OPENPOSE18_TO_COCO:
        if coco < 0:
            points.append(tuple(((px[5] + px[6]) / 2).tolist()) if vis[5] and vis[6] else None)
        else:
            points.append((float(px[coco, 0]), float(px[coco, 1])) if vis[coco] else None)
    return points


def openpose_drawing(pose: Pose, height: int, width: int) -> Image.Image:
    """The ControlNet OpenPose drawing on black: joint circles, then ellipse limbs blended at alpha 0.6."""
    # ControlNet draws at about 512 px with sticks 4 px wide; scale that to the canvas.
    unit = max(height, width) / 512.0
    stickwidth = max(1, round(4 * unit))
    radius = max(1, round(4 * unit))
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    points = openpose18_points(pose, width, height)
    for i, p in enumerate(points):
        if p is not None:
            cv2.circle(canvas, (int(p[0]), int(p[1])), radius, OPENPOSE_COLORS[i], thickness=-1)
    for i, (a, b) in enumerate(OPENPOSE_LIMBS):
        pa, pb = points[a - 1], points[b - 1]
        if pa is None or pb is None:
            continue
        mx, my = (pa[0] + pb[0]) / 2, (pa[1] + pb[1]) / 2
        length = math.hypot(pa[0] - pb[0], pa[1] - pb[1])
        angle = math.degrees(math.atan2(pa[1] - pb[1], pa[0] - pb[0]))
        polygon = cv2.ellipse2Poly((int(mx), int(my)), (int(length / 2), stickwidth), int(angle), 0, 360, 1)
        limb = canvas.copy()
        cv2.fillConvexPoly(limb, polygon, OPENPOSE_COLORS[i])
        canvas = cv2.addWeighted(canvas, 0.4, limb, 0.6, 0)
    return Image.fromarray(canvas, "RGB")


# -- overlay on a photo ----------------------------------------------------------------------------
def skeleton_overlay(image: Image.Image, pose: Pose) -> Image.Image:
    """The skeleton over `image`: visible limbs in OpenPose colours, hidden points as hollow grey rings."""
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    w, h = out.size
    unit = max(w, h) / 512.0
    line, radius = max(1, round(3 * unit)), max(2, round(4 * unit))
    px = pose.xy * np.array([w, h], dtype=np.float32)
    vis = pose.visible
    grey = (160, 160, 160)
    for i, (a, b) in enumerate(LIMBS):
        ends = [tuple(px[a].tolist()), tuple(px[b].tolist())]
        if vis[a] and vis[b]:
            draw.line(ends, fill=OPENPOSE_COLORS[i % len(OPENPOSE_COLORS)], width=line)
        else:
            draw.line(ends, fill=grey, width=max(1, line // 2))  # a thin grey line: a guess, not a sighting
    for i, (x, y) in enumerate(px.tolist()):
        box = (x - radius, y - radius, x + radius, y + radius)
        if vis[i]:
            draw.ellipse(box, fill=(255, 255, 255), outline=(0, 0, 0))
        else:
            draw.ellipse(box, fill=None, outline=grey, width=max(1, radius // 2))
    return out
