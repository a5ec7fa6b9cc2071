"""Read the synthetic data set (`python -m training.synth --out DIR`): images, keypoints, condition maps.

Layout: `DIR/images/000000.png`, `DIR/keypoints/000000.json` (COCO flat keypoints in pixels, read by
`models.pose.load`), `DIR/captions/`, `DIR/attributes/` (not used here).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.errors import InputError
from models.pose import FLIP_INDEX, LIMBS, VISIBLE, Pose, load, mirror


def list_items(root: str | Path, max_images: int = 0) -> list[str]:
    """The sorted stems of the images that have a keypoint file (at most `max_images`, 0 for all)."""
    root = Path(root)
    images = root / "images"
    if not images.is_dir():
        raise InputError(f"The data folder {root} has no images/ folder.")
    stems = sorted(p.stem for p in images.glob("*.png") if (root / "keypoints" / f"{p.stem}.json").exists())
    if not stems:
        raise InputError(f"The data folder {root} has no image with a keypoint file.")
    return stems[:max_images] if max_images > 0 else stems


def count_pairs(root: str | Path, stems: list[str]) -> int:
    """The number of pairs of a `synth --pairs` folder (items 2k and 2k + 1 share a `pair`); InputError otherwise."""
    if len(stems) < 2 or len(stems) % 2:
        raise InputError(f"{root} holds {len(stems)} images; a pairs folder holds an even number of them.")
    for k in range(0, len(stems), 2):
        marks = []
        for stem in stems[k : k + 2]:
            path = Path(root) / "attributes" / f"{stem}.json"
            marks.append(json.loads(path.read_text()).get("pair") if path.exists() else None)
        if marks[0] is None or marks[0] != marks[1]:
            raise InputError(
                f"{root}: images {stems[k]} and {stems[k + 1]} are not a pair (write it with `synth --pairs`)."
            )
    return len(stems) // 2


def read_image(path: str | Path, size: int = 128) -> np.ndarray:
    """One image as uint8 `(size, size, 3)` (resized with bicubic if it has another size)."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BICUBIC)
        return np.array(im, dtype=np.uint8)


def to_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 `(..., H, W, 3)` (array, or tensor on any device) -> float32 `(..., 3, H, W)` in [-1, 1]."""
    t = images if torch.is_tensor(images) else torch.from_numpy(np.ascontiguousarray(images))
    t = t.float().div_(127.5).sub_(1.0)
    return t.movedim(-1, -3)


def _read_chunk(paths: list[Path], size: int) -> np.ndarray:
    """Images of one chunk of paths, stacked (a worker's share of `load_images`)."""
    return np.stack([read_image(p, size) for p in paths])


def load_images(root: str | Path, stems: list[str], size: int = 128, workers: int = 1) -> np.ndarray:
    """All images as one uint8 array `(N, size, size, 3)` (a 20k set is ~1 GB; the AE and LDM scripts hold it).

    `workers > 1` decodes in that many processes (PNG decoding holds the GIL); 0 means one per CPU.
    """
    root = Path(root)
    paths = [root / "images" / f"{stem}.png" for stem in stems]
    workers = os.cpu_count() or 1 if workers <= 0 else workers
    out = np.empty((len(stems), size, size, 3), dtype=np.uint8)
    if workers == 1 or len(paths) < 256:
        for i, path in enumerate(paths):
            out[i] = read_image(path, size)
        return out
    chunk = 256
    starts = range(0, len(paths), chunk)
    with ProcessPoolExecutor(workers) as pool:
        for start, arr in zip(
            starts, pool.map(_read_chunk, [paths[i : i + chunk] for i in starts], [size] * len(starts))
        ):
            out[start : start + len(arr)] = arr
    return out


def read_pose(root: str | Path, stem: str) -> Pose:
    """The keypoints of one item, normalised to its frame."""
    return load(Path(root) / "keypoints" / f"{stem}.json")


def load_keypoints(root: str | Path, stems: list[str]) -> np.ndarray:
    """All poses as float32 `(N, 17, 3)` (x, y in [0, 1] of the frame, visibility)."""
    return np.stack([read_pose(root, s).keypoints for s in stems]).astype(np.float32)


def condition_maps(keypoints: np.ndarray, size: int = 128, flip: bool = False) -> torch.Tensor:
    """Condition maps `(B, C, size, size)` of a batch of keypoints (mirrored poses if `flip`)."""
    from models.condition import condition_map  # written by the pose front end; imported late

    maps = []
    for kp in keypoints:
        pose = Pose(kp, size, size)
        maps.append(condition_map(mirror(pose) if flip else pose, size, size))
    return torch.from_numpy(np.stack(maps))


_LIMB_A = torch.tensor([a for a, _ in LIMBS])
_LIMB_B = torch.tensor([b for _, b in LIMBS])


def condition_maps_torch(keypoints: torch.Tensor, size: int = 128, flip: torch.Tensor | None = None) -> torch.Tensor:
    """`condition_maps` for a `(B, 17, 3)` tensor on its own device (a GPU draws a batch in microseconds).

    The same maps as `models.condition.condition_map` to float32 rounding: keypoint Gaussians, then
    limb Gaussians of the distance to each segment, cut to the segment's box grown by 4 sigma.
    """
    from models.condition import default_sigma

    kp = keypoints.float()
    if flip is not None:  # models.pose.mirror: x -> 1 - x, left and right labels swapped
        mirrored = kp[:, list(FLIP_INDEX)].clone()
        mirrored[..., 0] = 1.0 - mirrored[..., 0]
        kp = torch.where(flip.to(kp.device).view(-1, 1, 1), mirrored, kp)
    device = kp.device
    s = default_sigma(size, size)
    inv = -0.5 / (s * s)
    pts = kp[..., :2] * size  # (B, 17, 2) pixels
    vis = kp[..., 2] >= VISIBLE
    grid = torch.arange(size, device=device, dtype=torch.float32) + 0.5  # pixel centres
    gx = torch.exp(inv * (grid - pts[..., 0:1]) ** 2)  # (B, 17, W)
    gy = torch.exp(inv * (grid - pts[..., 1:2]) ** 2)  # (B, 17, H)
    points = gy[..., :, None] * gx[..., None, :] * vis[..., None, None]

    a, b = pts[:, _LIMB_A.to(device)], pts[:, _LIMB_B.to(device)]  # (B, L, 2)
    on = vis[:, _LIMB_A.to(device)] & vis[:, _LIMB_B.to(device)]
    ab = b - a
    inv_len2 = 1.0 / (ab * ab).sum(-1).clamp(min=1e-6)
    dx = grid.view(1, 1, 1, -1) - a[..., 0, None, None]  # (B, L, 1, W)
    dy = grid.view(1, 1, -1, 1) - a[..., 1, None, None]  # (B, L, H, 1)
    abx, aby = ab[..., 0, None, None], ab[..., 1, None, None]
    t = ((dx * abx + dy * aby) * inv_len2[..., None, None]).clamp(0.0, 1.0)
    ex, ey = dx - t * abx, dy - t * aby
    limbs = torch.exp(inv * (ex * ex + ey * ey))
    reach = 4.0 * s
    lo = torch.floor(torch.minimum(a, b) - reach).clamp(0, size)
    hi = (torch.ceil(torch.maximum(a, b) + reach) + 1).clamp(0, size)
    index = torch.arange(size, device=device, dtype=torch.float32)
    in_x = (index >= lo[..., 0, None]) & (index < hi[..., 0, None])  # (B, L, W)
    in_y = (index >= lo[..., 1, None]) & (index < hi[..., 1, None])  # (B, L, H)
    limbs = limbs * (in_y[..., :, None] & in_x[..., None, :] & on[..., None, None])
    return torch.cat([points, limbs], dim=1)


class PoseDataset(torch.utils.data.Dataset):
    """Items `dict(image (3,H,W) in [-1,1], cond (C,H,W), pose (17,3), index)` of a synth data folder."""

    def __init__(self, root: str | Path, size: int = 128, max_images: int = 0, with_cond: bool = True):
        self.root = Path(root)
        self.size = size
        self.stems = list_items(root, max_images)
        self.with_cond = with_cond

    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, index: int) -> dict:
        stem = self.stems[index]
        image = to_tensor(read_image(self.root / "images" / f"{stem}.png", self.size))
        kp = read_pose(self.root, stem).keypoints.copy()
        item = {"image": image, "pose": torch.from_numpy(kp), "index": index}
        if self.with_cond:
            item["cond"] = condition_maps(kp[None], self.size)[0]
        return item


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8) -> None:
    """Save a batch of images in [-1, 1] `(B, 3, H, W)` as one PNG grid, `nrow` images a row."""
    images = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().cpu()
    b, _, h, w = images.shape
    rows = (b + nrow - 1) // nrow
    grid = torch.full((3, rows * h, min(b, nrow) * w), 255, dtype=torch.uint8)
    for i in range(b):
        r, c = divmod(i, nrow)
        grid[:, r * h : (r + 1) * h, c * w : (c + 1) * w] = images[i]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(path)
