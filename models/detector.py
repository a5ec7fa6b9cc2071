"""A small heatmap keypoint detector for the rendered-character domain: it reads the pose back out
of an image (ours or the generator's) to measure pose fidelity (PCK) and gives features for FD.

    det = KeypointDetector.from_pretrained("weights/detector")
    poses = det.detect([Image.open("a.png")])        # list[Pose], in each image's own frame
    feats = det.embed([Image.open("a.png")])         # (N, D) pooled bottleneck features

The network is a strided conv encoder (128 -> 8 px) with a light FPN-style decoder back to a
`image_size / heatmap_stride` grid (32 x 32 by default): one heatmap per COCO keypoint, trained as
a spatial softmax against a Gaussian target (the integral / soft-argmax view of Sun et al. 2018,
"Integral Human Pose Regression"), plus one visibility logit per keypoint from the pooled
bottleneck. Decoding is argmax followed by a soft-argmax over a small window around the peak,
which gives sub-cell positions without the bias a global soft-argmax has toward the centre.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from PIL import Image
from torch import nn

from models import paths
from models.errors import InputError
from models.pose import NUM_KEYPOINTS, Pose
from models.pose_input import pad_to_square

# `KeypointDetector.figure_confidence` below this: no figure in the image (renders 0.53-0.75, generated 0.36, photos
# of people 0.14-0.42, blank 0.03-0.06, noise 0.17: docs/EXPERIMENTS.md "A look from a picture").
MIN_FIGURE_CONFIDENCE = 0.2


@dataclass
class DetectorOutput:
    """What `KeypointDetector.forward` returns."""

    heatmaps: torch.Tensor  # (B, K, h, w) logits of a spatial softmax over the grid
    visibility: torch.Tensor  # (B, K) logits of "the point is visible in the image"
    features: torch.Tensor  # (B, D) global-average-pooled bottleneck (the FD feature space)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv, BatchNorm, ReLU (BatchNorm: the fastest norm on a CPU, folded at eval time)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class KeypointDetector(ModelMixin, ConfigMixin):
    """Heatmap CNN: RGB `image_size` square in, `num_keypoints` heatmaps + visibility logits out."""

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        image_size: int = 128,  # side the input is resized (after padding to a square) to
        channels: tuple[int, ...] = (16, 32, 64, 128),  # widths at 1/2, 1/4, 1/8, 1/16 of the input
        decoder_channels: int = 48,  # width of the upsampling path
        heatmap_stride: int = 4,  # heatmap cell = this many input pixels (must be 2, 4 or 8)
        num_keypoints: int = NUM_KEYPOINTS,
        sigma: float = 1.0,  # std of the Gaussian target, in heatmap cells (training only)
    ):
        super().__init__()
        if len(channels) != 4:
            raise ValueError("channels must list 4 widths (1/2, 1/4, 1/8 and 1/16 of the input).")
        if heatmap_stride not in (2, 4, 8):
            raise ValueError("heatmap_stride must be 2, 4 or 8.")
        c1, c2, c3, c4 = channels
        d = decoder_channels
        self.stem = nn.Sequential(_conv(3, c1, 2), _conv(c1, c1))  # 1/2
        self.down2 = nn.Sequential(_conv(c1, c2, 2), _conv(c2, c2))  # 1/4
        self.down3 = nn.Sequential(_conv(c2, c3, 2), _conv(c3, c3))  # 1/8
        # Two convs at 1/16 give every cell a receptive field over the whole figure, which is what
        # tells a left wrist from a right one.
        self.down4 = nn.Sequential(_conv(c3, c4, 2), _conv(c4, c4), _conv(c4, c4))  # 1/16
        self.lateral = nn.ModuleDict(
            {
                "16": nn.Conv2d(c4, d, 1),
                "8": nn.Conv2d(c3, d, 1),
                "4": nn.Conv2d(c2, d, 1),
                "2": nn.Conv2d(c1, d, 1),
            }
        )
        self.smooth = nn.ModuleDict({k: _conv(d, d) for k in ("8", "4", "2")})
        self.head = nn.Conv2d(d, num_keypoints, 1)
        self.vis_head = nn.Sequential(nn.Linear(c4, c4), nn.ReLU(inplace=True), nn.Linear(c4, num_keypoints))

    @property
    def heatmap_size(self) -> int:
        """Side of the heatmap grid."""
        return self.config.image_size // self.config.heatmap_stride

    @property
    def feature_dim(self) -> int:
        """Dimension of the pooled features `embed` returns."""
        return int(self.config.channels[-1])

    def forward(self, x: torch.Tensor) -> DetectorOutput:
        """`x`: (B, 3, S, S) in [-1, 1]."""
        f2 = self.stem(x)
        f4 = self.down2(f2)
        f8 = self.down3(f4)
        f16 = self.down4(f8)
        y = self.lateral["16"](f16)
        skips = {"8": f8, "4": f4, "2": f2}
        for key in ("8", "4", "2"):
            if int(key) < self.config.heatmap_stride:
                break
            y = F.interpolate(y, scale_factor=2, mode="nearest") + self.lateral[key](skips[key])
            y = self.smooth[key](y)
        pooled = f16.mean(dim=(2, 3))
        return DetectorOutput(heatmaps=self.head(y), visibility=self.vis_head(pooled), features=pooled)

    # -- inference on PIL images ---------------------------------------------------------------
    def preprocess(self, images: Sequence[Image.Image]) -> tuple[torch.Tensor, list[tuple[int, int, int, int, int]]]:
        """Pad each image to a square (edge colour), resize, stack in [-1, 1]; return the boxes to map back."""
        if not images:
            raise InputError("Give at least one image to detect a pose in.")
        size = self.config.image_size
        arrays, frames = [], []
        for im in images:
            if not isinstance(im, Image.Image):
                raise InputError(f"detect takes PIL images, not {type(im).__name__}.")
            w, h = im.size
            im, ox, oy = pad_to_square(im)
            side = im.width
            if side != size:
                im = im.resize((size, size), Image.BILINEAR)
            arrays.append(np.asarray(im, dtype=np.float32))
            frames.append((w, h, side, ox, oy))
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0
        return x.to(self.device, self.dtype), frames

    def _run(self, x: torch.Tensor, batch_size: int = 64) -> DetectorOutput:
        """Forward in eval mode, in chunks, restoring the previous mode."""
        outs = eval_chunks(self, x, batch_size)
        return DetectorOutput(
            *(torch.cat([getattr(o, k) for o in outs]) for k in ("heatmaps", "visibility", "features"))
        )

    def detect(self, images: Sequence[Image.Image]) -> list[Pose]:
        """The pose in each image, in that image's own frame; visibility = P(visible) from the visibility head."""
        x, frames = self.preprocess(images)
        out = self._run(x)
        xy = decode_heatmaps(out.heatmaps).cpu().numpy().astype(np.float64)  # in [0, 1] of the square
        vis = torch.sigmoid(out.visibility).cpu().numpy()
        poses = []
        for (w, h, side, ox, oy), p, v in zip(frames, xy, vis):
            px = p[:, 0] * side - ox
            py = p[:, 1] * side - oy
            kp = np.stack([px / w, py / h, v], axis=1).astype(np.float32)
            kp[:, :2] = np.clip(kp[:, :2], -0.5, 1.5)  # a padded square can map a little outside the frame
            poses.append(Pose(kp, w, h))
        return poses

    def figure_confidence(self, images: Sequence[Image.Image]) -> np.ndarray:
        """`(N,)` how surely each image shows a figure: the mean over keypoints of the heatmap's probability
        within one cell of its peak (a figure ~0.5-0.75, a blank or noise image <= 0.17: MIN_FIGURE_CONFIDENCE)."""
        x, _ = self.preprocess(images)
        logits = self._run(x).heatmaps
        prob = torch.softmax(logits.flatten(2), dim=-1).view_as(logits)
        near_peak = F.avg_pool2d(prob, 3, stride=1, padding=1) * 9  # mass in each 3x3 window
        return near_peak.flatten(2).amax(dim=-1).mean(dim=1).cpu().numpy().astype(np.float64)

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(N, D) pooled bottleneck features of the images (the feature space of our FD)."""
        x, _ = self.preprocess(images)
        return self._run(x).features.cpu().numpy().astype(np.float64)


@functools.lru_cache(maxsize=2)
def _load(path: str) -> KeypointDetector:
    if not (Path(path) / "config.json").is_file():
        raise InputError(f"No keypoint detector at {path}: the folder needs config.json and the safetensors weights.")
    return KeypointDetector.from_pretrained(path).eval().requires_grad_(False)


@torch.no_grad()
def eval_chunks(module: torch.nn.Module, x: torch.Tensor, batch_size: int = 64) -> list[Any]:
    """`module`'s outputs for `x` in chunks of `batch_size`, in eval mode (its previous mode restored after)."""
    was_training = module.training
    module.eval()
    try:
        return [module(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    finally:
        module.train(was_training)


def load_detector(path: str | Path | KeypointDetector | None = None) -> KeypointDetector:
    """The detector of a folder (None: the shipped one), in eval mode and frozen, loaded once per folder; a
    detector given is returned as it is."""
    if path is not None and not isinstance(path, (str, Path)):  # a detector (or a stand-in with its methods)
        return path
    return _load(str(path or paths.DETECTOR))


def decode_heatmaps(heatmaps: torch.Tensor, window: int = 2) -> torch.Tensor:
    """(B, K, h, w) logits -> (B, K, 2) `x, y` in [0, 1]: argmax, then soft-argmax of the softmax in a
    `(2 window + 1)^2` window around it (cell `j` is centred at `(j + 0.5) / w`)."""
    b, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(b * k, h * w).float()
    prob = torch.softmax(flat, dim=1).reshape(b * k, h, w)
    idx = flat.argmax(dim=1)
    cy, cx = (idx // w).float(), (idx % w).float()
    ys = torch.arange(h, dtype=torch.float32, device=heatmaps.device)
    xs = torch.arange(w, dtype=torch.float32, device=heatmaps.device)
    # The window as a mask: no gathering, so it works the same at the borders.
    my = ((ys[None, :] - cy[:, None]).abs() <= window).float()  # (BK, h)
    mx = ((xs[None, :] - cx[:, None]).abs() <= window).float()  # (BK, w)
    wprob = prob * my[:, :, None] * mx[:, None, :]
    total = wprob.sum(dim=(1, 2)).clamp_min(1e-12)
    ex = (wprob.sum(dim=1) * xs[None, :]).sum(dim=1) / total
    ey = (wprob.sum(dim=2) * ys[None, :]).sum(dim=1) / total
    out = torch.stack([(ex + 0.5) / w, (ey + 0.5) / h], dim=1)
    return out.reshape(b, k, 2)


def gaussian_targets(xy: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """(B, K, 2) `x, y` in [0, 1] -> (B, K, size, size) Gaussians normalised to sum 1 (cell centres at
    `(j + 0.5) / size`); points off the grid get whatever mass lands on it (their loss is masked)."""
    grid = torch.arange(size, dtype=torch.float32, device=xy.device) + 0.5
    cx = xy[..., 0:1] * size  # (B, K, 1)
    cy = xy[..., 1:2] * size
    gx = torch.exp(-((grid - cx) ** 2) / (2 * sigma**2))  # (B, K, size)
    gy = torch.exp(-((grid - cy) ** 2) / (2 * sigma**2))
    g = gy[..., :, None] * gx[..., None, :]
    return g / g.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-12)


def heatmap_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the spatial softmax against the Gaussian target, weighted per keypoint (B, K)."""
    b, k, h, w = logits.shape
    logp = torch.log_softmax(logits.reshape(b, k, h * w), dim=-1)
    ce = -(target.reshape(b, k, h * w) * logp).sum(dim=-1)
    # Subtract the target's own entropy so a perfect prediction scores 0 (only changes the log).
    ent = -(target * target.clamp_min(1e-12).log()).reshape(b, k, h * w).sum(dim=-1)
    return ((ce - ent) * weight).sum() / weight.sum().clamp_min(1.0)


__all__ = ["DetectorOutput", "KeypointDetector", "decode_heatmaps", "gaussian_targets", "heatmap_loss"]
