"""Whether a picture has eyes where its pose puts them: the `face` figure of `training.eval quality`.

The judge's eye locator and the per-pixel check both failed their negative check (docs/EXPERIMENTS.md, "A face
check that sees eyes"): the locator finds a head's eyes from its outline, and speckle gives any point a white and a
dark pixel. This check is trained for the one question, at evaluation time and at the evaluation's size:

1. Training pairs: renders of a seed of their own (`FACE_SEED`, not the evaluation's) and the same pictures drawn
   without eyes (`training.render.render(..., eyes=False)`); only faces whose eyes the renderer drew are used.
2. The eye region (`eye_crop`: around the eyes' midpoint, sized by the face) at CROP x CROP, with the same
   degradations on both classes (a blur, colour-block noise, a mosaic of flat cells like an undertrained UNet's, a
   shift and a zoom), so that neither blur nor noise tells the classes apart, and hard negatives (dark shapes where
   the eyes go, eyes blurred away): only eyes do.
3. A small CNN (`EyeNet`) learns eyes against no eyes; every evaluation reports its reading on the held-out
   renders and on their eyeless twins (`face_renders`, `face_eyeless`), so the figure carries its own control.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter

from models.pose import COCO_NAMES, Pose

FACE_SEED = 4141  # the check's own renders (the evaluation split is `training.eval_common.EVAL_SEED`)
CROP = 32  # side of the eye region given to the CNN
NOSE, EYES = COCO_NAMES.index("nose"), (COCO_NAMES.index("left_eye"), COCO_NAMES.index("right_eye"))


@dataclass(frozen=True)
class FaceCheckConfig:
    """How the check is trained (its defaults take about 40 s on 2 CPU threads at 256 px)."""

    characters: int = 1024  # renders with eyes, each with its eyeless twin
    views: int = 6  # jittered eye pairs of each picture (against as many negatives)
    steps: int = 1200
    batch_size: int = 64
    lr: float = 2e-3
    seed: int = 0


def shows_eyes(pose: Pose) -> bool:
    """Whether the pose shows both eyes and the nose (a face turned toward the camera)."""
    return bool(all(pose.visible[i] for i in (*EYES, NOSE)))


def _box(pose: Pose, eye: int, width: int, height: int, shift: tuple[float, float], zoom: float) -> tuple:
    """Centre and half side in pixels of the square around eye `eye` (0 or 1): 1.2 face widths a side (the face
    width: the eye distance, or 4 x the nose's distance from the eyes' midpoint when the head turns)."""
    xy = pose.xy.astype(np.float64) * np.array([width, height])
    mid = (xy[EYES[0]] + xy[EYES[1]]) / 2
    face = max(float(np.linalg.norm(xy[EYES[0]] - xy[EYES[1]])), 4 * float(np.linalg.norm(xy[NOSE] - mid)), 2.0)
    half = 0.6 * face * zoom
    cx, cy = xy[EYES[eye]] + 2 * half * np.asarray(shift)
    return float(cx), float(cy), half


def eye_crop(
    image: Image.Image, pose: Pose, eye: int, shift: tuple[float, float] = (0, 0), zoom: float = 1.0
) -> np.ndarray:
    """`(CROP, CROP, 3)` uint8: the square around eye `eye` of the pose (`_box`), `shift` in sides."""
    cx, cy, half = _box(pose, eye, image.width, image.height, shift, zoom)
    box = (cx - half, cy - half, cx + half, cy + half)
    crop = image.convert("RGB").transform((CROP, CROP), Image.Transform.EXTENT, box, Image.Resampling.BILINEAR)
    return np.asarray(crop, dtype=np.uint8)


def eye_in_crop(shift: tuple[float, float]) -> np.ndarray:
    """`(1, 2)`: the eye (x, y) in the pixels of its `eye_crop` shifted by `shift`."""
    return (0.5 - np.asarray(shift, dtype=np.float64))[None] * CROP


def smudge(crop: np.ndarray, eyes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A hard negative: dark shapes where the eyes go (an eye's place and darkness without its white, iris or
    highlight), as a blurry model draws them: blobs, or fringe tips reaching down to the eyes, in a dark colour or
    the crop's own darkest."""
    img = Image.fromarray(crop)
    flat = crop.reshape(-1, 3)
    darkest = flat[np.argmin(flat.sum(axis=1))]
    colour = tuple(int(v) for v in (darkest if rng.random() < 0.5 else rng.integers(20, 120, 3)))
    layer, alpha = Image.new("RGB", img.size, colour), Image.new("L", img.size, 0)
    da = ImageDraw.Draw(alpha)
    r = rng.uniform(3.0, 8.0)
    tips = rng.random() < 0.5
    for x, y in eyes + rng.normal(0, 2.0, eyes.shape):
        if tips:  # a downward triangle from above the eye to its lower lid
            w = r * rng.uniform(0.8, 1.6)
            da.polygon([(x - w, y - 3 * r), (x + w, y - 3 * r), (x + rng.normal(0, 1), y + r)], fill=255)
        else:
            da.ellipse((x - r * rng.uniform(0.6, 1.0), y - r * rng.uniform(0.8, 1.6), x + r, y + r), fill=255)
    alpha = alpha.point(lambda v: v * float(rng.uniform(0.5, 1.0))).filter(
        ImageFilter.GaussianBlur(rng.uniform(0.5, 2))
    )
    return np.asarray(Image.composite(layer, img, alpha))


def erase(crop: np.ndarray, eyes: np.ndarray, rng: np.random.Generator, whole: bool = False) -> np.ndarray:
    """A hard negative: the eyes blurred away (sigma 2.5-5 crop pixels, under a soft mask around each eye unless
    `whole`), as an autoencoder that cannot keep them decodes them."""
    blurred = np.asarray(Image.fromarray(crop).filter(ImageFilter.GaussianBlur(rng.uniform(2.5, 5.0))), np.float32)
    if whole:
        return blurred.astype(np.uint8)
    ys, xs = np.mgrid[0:CROP, 0:CROP]
    mask = np.zeros((CROP, CROP), np.float32)
    for x, y in eyes:
        mask = np.maximum(mask, np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 7.0**2)))
    mask = np.clip(1.6 * mask, 0, 1)[..., None]
    return (mask * blurred + (1 - mask) * crop).astype(np.uint8)


def mosaic(crop: np.ndarray, eyes: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """The crop under a mosaic of flat cells (random points' Voronoi cells, in the crop's own colours, white and
    near black), as an undertrained UNet paints a head; with `eyes` given the cells stop short of them, so eyes
    stay eyes among the blobs, and without, a blob may sit where an eye goes."""
    k = int(rng.integers(16, 64))
    pts = rng.uniform(0, CROP, (k, 2))
    own = crop.reshape(-1, 3)[rng.integers(0, CROP * CROP, k // 2)]
    vivid = rng.integers(0, 256, (k - k // 2, 3))
    vivid[: k // 8] = rng.integers(225, 256, (k // 8, 1))  # whites
    vivid[k // 8 : k // 4] = rng.integers(10, 70, (k // 4 - k // 8, 3))  # near blacks
    palette = np.concatenate([own, vivid])
    ys, xs = np.mgrid[0:CROP, 0:CROP]
    cell = np.argmin((xs[..., None] - pts[:, 0]) ** 2 + (ys[..., None] - pts[:, 1]) ** 2, axis=-1)
    paint = Image.fromarray(palette[cell].astype(np.uint8)).filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5)))
    paint = np.asarray(paint, dtype=np.float64)
    alpha = np.full((CROP, CROP), rng.uniform(0.6, 1.0))
    if eyes is not None:
        for x, y in eyes:
            alpha *= 1 - np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * 6.0**2))
    return (alpha[..., None] * paint + (1 - alpha[..., None]) * crop).astype(np.uint8)


def degrade(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A crop under a random blur and (half the time) colour-block noise: what both classes share."""
    img = Image.fromarray(crop)
    sigma = rng.uniform(0.0, 1.2)
    if sigma > 0.2:
        img = img.filter(ImageFilter.GaussianBlur(sigma))
    x = np.asarray(img, dtype=np.float32)
    if rng.random() < 0.5:
        block = int(rng.integers(1, 5))
        cells = -(-CROP // block)
        noise = rng.normal(0.0, rng.uniform(3, 25), (cells, cells, 3)).repeat(block, 0).repeat(block, 1)
        x = x + noise[:CROP, :CROP]
    return np.clip(x, 0, 255).astype(np.uint8)


class EyeNet(torch.nn.Module):
    """A small CNN on a pair of CROP x CROP eye crops (the second mirrored, six channels): one logit, two eyes
    against not two eyes; it sees both at once, so it can ask them to match as a face's eyes do."""

    def __init__(self, width: int = 24):
        super().__init__()
        layers, c = [], 6
        for w, stride in ((width, 1), (2 * width, 2), (4 * width, 2), (4 * width, 2)):
            layers += [torch.nn.Conv2d(c, w, 3, stride=stride, padding=1), torch.nn.BatchNorm2d(w), torch.nn.SiLU()]
            c = w
        self.body = torch.nn.Sequential(*layers)
        self.head = torch.nn.Linear(c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, 6, CROP, CROP)` in [-1, 1] -> `(B,)` logits."""
        return self.head(self.body(x).mean(dim=(2, 3)))[:, 0]


def _to_tensor(pairs: np.ndarray) -> torch.Tensor:
    """uint8 `(N, 2, CROP, CROP, 3)` eye pairs -> float `(N, 6, CROP, CROP)` in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(pairs)).permute(0, 1, 4, 2, 3).float() / 127.5 - 1
    return x.reshape(len(pairs), 6, CROP, CROP)


def eyes_drawn(render: Image.Image, eyeless: Image.Image, pose: Pose) -> bool:
    """Whether the renderer drew eyes in this face: the pose `shows_eyes` and the eyeless twin's eye region differs."""
    return shows_eyes(pose) and all(
        np.abs(eye_crop(render, pose, e).astype(int) - eye_crop(eyeless, pose, e)).max() > 40 for e in (0, 1)
    )


def eye_pairs(seed: int, indices: range, size: int) -> list[tuple[Image.Image, Image.Image, Pose]]:
    """(render, the same without eyes, pose) for the samples of `seed` whose faces the renderer drew with eyes."""
    from training.synth import make_sample

    out = []
    for i in indices:
        sample = make_sample(seed, i, size)
        pose = sample["render"].pose
        if shows_eyes(pose):
            eyed, eyeless = sample["render"].image, make_sample(seed, i, size, eyes=False)["render"].image
            if eyes_drawn(eyed, eyeless, pose):
                out.append((eyed, eyeless, pose))
    return out


def _negative(crop: np.ndarray, bare: np.ndarray, at: np.ndarray, kind: int, rng: np.random.Generator) -> np.ndarray:
    """One eye's hard negative of a kind: dark shapes (0), eyes blurred away (1) or the whole crop blurred (2), the
    bare face (3)."""
    if kind == 0:
        return smudge(bare, at, rng)
    return erase(crop, at, rng, whole=kind == 2) if kind < 3 else bare


def training_pairs(size: int, cfg: FaceCheckConfig) -> tuple[np.ndarray, np.ndarray]:
    """`(N, 2, CROP, CROP, 3)` degraded, jittered eye crops (the second eye mirrored) and their labels: the
    renders' eyes (1) against as many hard negatives (0), each eye of a pair a `_negative` of one kind (as a model
    draws the two alike), of two kinds, or one eye kept; 40 % of each class under a `mosaic` at each eye (sparing
    the positives' eyes)."""
    rng = np.random.default_rng([FACE_SEED, cfg.seed])
    pairs, labels = [], []
    for eyed, eyeless, pose in eye_pairs(FACE_SEED, range(cfg.characters * 2), size)[: cfg.characters]:
        for view in range(cfg.views):
            zoom, kinds, seed = float(rng.uniform(0.8, 1.25)), rng.integers(0, 4, 2), int(rng.integers(1 << 30))
            pos, neg, mosaics = [], [], rng.random() < 0.4
            for eye in (0, 1):
                shift = tuple(rng.uniform(-0.15, 0.15, 2))
                at, crop = eye_in_crop(shift), eye_crop(eyed, pose, eye, shift, zoom)
                bare = eye_crop(eyeless, pose, eye, shift, zoom)
                # view 0 mod 3: both eyes one kind with one seed; 1: two kinds; 2: the first eye kept
                kind = int(kinds[0 if view % 3 == 0 else eye])
                sub = np.random.default_rng(seed) if view % 3 == 0 else rng
                negative = crop if view % 3 == 2 and eye == 0 else _negative(crop, bare, at, kind, sub)
                if mosaics:
                    crop, negative = mosaic(crop, at, rng), mosaic(negative, None, rng)
                pos.append(degrade(crop, rng))
                neg.append(degrade(negative, rng))
            for label, pair in ((1.0, pos), (0.0, neg)):
                pairs.append(np.stack([pair[0], pair[1][:, ::-1]]))
                labels.append(label)
    return np.stack(pairs), np.asarray(labels, dtype=np.float32)


def train_face_check(size: int, cfg: FaceCheckConfig = FaceCheckConfig()) -> EyeNet:
    """An `EyeNet` trained on `training_crops` at image size `size` (seeded: the same net every run)."""
    pairs, labels = training_pairs(size, cfg)
    x, y = _to_tensor(pairs), torch.from_numpy(labels)
    torch.manual_seed(cfg.seed)
    net = EyeNet()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.steps)
    g = torch.Generator().manual_seed(cfg.seed)
    net.train()
    for _ in range(cfg.steps):
        idx = torch.randint(0, len(x), (cfg.batch_size,), generator=g)
        swap = torch.rand(len(idx), 1, 1, 1, generator=g) < 0.5  # either eye first: the mirror image of the pair
        xb = torch.where(swap, x[idx], torch.cat([x[idx, 3:], x[idx, :3]], dim=1).flip(-1))
        loss = F.binary_cross_entropy_with_logits(net(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


@torch.no_grad()
def eyes_found(net: EyeNet, images: list[Image.Image], poses: list[Pose]) -> np.ndarray:
    """`(N,)` probability that each image has both eyes where its pose puts them (its pose must `shows_eyes`)."""
    if not images:
        return np.zeros(0, dtype=np.float32)
    pairs = [np.stack([eye_crop(im, p, 0), eye_crop(im, p, 1)[:, ::-1]]) for im, p in zip(images, poses)]
    return torch.sigmoid(net(_to_tensor(np.stack(pairs)))).numpy()


def face_figures(
    net: EyeNet, renders: list[Image.Image], eyeless: list[Image.Image], poses: list[Pose], sets: dict
) -> dict[str, float | int]:
    """`face` (samples, set ""), `face_ae` (round trips), and the check's control on the held-out renders and
    their eyeless twins (`face_renders`, `face_eyeless`: 1 and 0 when it works): the share of the faces that the
    renderer drew with eyes (`eyes_drawn`) in which it finds them (probability > 0.5); `face_n` such faces."""
    keep = [i for i, p in enumerate(poses) if eyes_drawn(renders[i], eyeless[i], p)]

    def share(images: list[Image.Image], frame: list[Pose]) -> float:
        return float((eyes_found(net, [images[i] for i in keep], [frame[i] for i in keep]) > 0.5).mean())

    out: dict[str, float | int] = {"face_n": len(keep)}
    if not keep:
        return out
    out["face_renders"], out["face_eyeless"] = share(renders, poses), share(eyeless, poses)
    for name, (images, frame) in sets.items():
        out["face_ae" if name else "face"] = share(images, frame)
    return out
