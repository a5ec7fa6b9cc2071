"""Read the synthetic data set (`python -m training.synth --out DIR`): images, keypoints, condition maps.

Layout: `DIR/images/000000.png`, `DIR/keypoints/000000.json` (COCO flat keypoints in pixels, read by
`models.pose.load`), `DIR/captions/`, `DIR/attributes/` (not used here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.errors import InputError
from models.pose import Pose, load, mirror


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


def read_image(path: str | Path, size: int = 128) -> np.ndarray:
    """One image as uint8 `(size, size, 3)` (resized with bicubic if it has another size)."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BICUBIC)
        return np.array(im, dtype=np.uint8)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 `(..., H, W, 3)` -> float32 `(..., 3, H, W)` in [-1, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(images)).float().div_(127.5).sub_(1.0)
    return t.movedim(-1, -3)


def load_images(root: str | Path, stems: list[str], size: int = 128) -> np.ndarray:
    """All images as one uint8 array `(N, size, size, 3)` (a 20k set is ~1 GB; the AE and LDM scripts hold it)."""
    root = Path(root)
    out = np.empty((len(stems), size, size, 3), dtype=np.uint8)
    for i, stem in enumerate(stems):
        out[i] = read_image(root / "images" / f"{stem}.png", size)
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
