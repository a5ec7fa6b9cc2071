"""The attribute classifier: a small CNN that names what a rendered character looks like.

An independent judge for the CLIP refinement (`success`: does the refined image show the asked
attribute?) and for the automatic direction labels (which attribute's score moves most along a
direction). It is trained on renders only (`python -m training.train_attributes`), never on CLIP.

    clf = load_attribute_classifier("weights/attributes")
    probs = clf.predict(images)              # {"hair_color": (B, 12), "eye_color": (B, 8), ...}
    clf.top_labels(images)[0]["hair_color"]  # "pink"
    logits = clf(x)                          # x: (B, 3, H, W) in [-1, 1], differentiable

The vocabulary is the renderer's (`training.character`); the saved config carries its own class
names, so a loaded model always decodes with the labels it was trained on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
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
from training import character as _vocab

# name -> class names. Single-label attributes of `attributes/*.json` (see `record_labels`). Legwear is
# left out: the shipped training renders (data/train) were drawn before the renderer had it.
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "hair_color": tuple(_vocab.HAIR_COLORS),
    "hair_style": _vocab.HAIR_STYLES,
    "eye_color": tuple(_vocab.EYE_COLORS),
    "skin": tuple(_vocab.SKIN_TONES),
    "gender": _vocab.GENDERS,
    "outfit": _vocab.OUTFITS,
    "outfit_color": tuple(_vocab.CLOTH_COLORS),  # the main colour (`outfit_colors[0]`: dress, top, kimono)
    "outfit_color2": tuple(
        _vocab.CLOTH_COLORS
    ),  # the second (`outfit_colors[1]`: skirt, trousers, shorts, collar, sash)
    "background": _vocab.BACKGROUND_KINDS,
    "background_color": tuple(_vocab.BACKGROUNDS),
}
# Accessories may come together, so each is a two-class attribute of its own. The hairclip (2-3 px at
# 128 px) is left out.
ACCESSORIES: dict[str, str] = {
    "glasses": "glasses",
    "cat_ears": "cat ears",
    "beret": "beret",
    "hair_ribbon": "hair ribbon",
}  # attribute -> the renderer's (and captions') word
ATTRIBUTES.update({name: ("without", "with") for name in ACCESSORIES})

DEFAULT_PATH = paths.ATTRIBUTES


def record_labels(record: Mapping[str, Any]) -> dict[str, str | None]:
    """The class name of each attribute in one `attributes/*.json` record; None where it cannot be
    seen (eye colour from behind, a dress's second colour), so training and accuracy skip it."""
    colors = list(record.get("outfit_colors") or (None, None))
    out: dict[str, str | None] = {
        name: record.get(name) for name in ATTRIBUTES if name not in ("outfit_color", "outfit_color2")
    }
    out["outfit_color"], out["outfit_color2"] = colors[0], colors[1]
    worn = set(record.get("accessories") or ())
    for name, word in ACCESSORIES.items():
        out[name] = "with" if word in worn else "without"
    if record.get("yaw") == "back":  # the face is turned away: the eyes and glasses are not drawn
        out["eye_color"] = out["glasses"] = None
    if record.get("outfit") == "dress":  # a dress shows its second colour only as a 1 px belt line
        out["outfit_color2"] = None
    return out


def attribute_index(name: str, value: str, classes: Mapping[str, Sequence[str]] | None = None) -> int:
    """The class index of `value` for attribute `name` (in `classes`, default `ATTRIBUTES`)."""
    classes = ATTRIBUTES if classes is None else classes
    if name not in classes:
        raise InputError(f"Unknown attribute '{name}'; known: {', '.join(classes)}.")
    names = list(classes[name])
    if value not in names:
        raise InputError(f"'{value}' is not a {name.replace('_', ' ')}; known: {', '.join(names)}.")
    return names.index(value)


# Phrases of the captions (`training.character.tags`) that name one attribute value, for judging prompts.
_TOPS = ("dress", "blouse", "shirt", "hoodie", "kimono")
_BOTTOMS = ("skirt", "trousers", "shorts", "collar", "sash")


def _phrases() -> list[tuple[str, str, str]]:
    """(phrase, attribute, value), longest phrase first so 'light blue dress' wins over 'blue dress'."""
    a = ATTRIBUTES
    out = [(f"{c} hair", "hair_color", c) for c in a["hair_color"]]
    out += [(f"{c} eyes", "eye_color", c) for c in a["eye_color"]]
    out += [(f"{s} skin", "skin", s) for s in a["skin"]]
    out += [(f"{c} background", "background_color", c) for c in a["background_color"]]
    out += [(f"{k} background", "background", k) for k in a["background"]]
    out += [(s, "hair_style", s) for s in a["hair_style"]]
    out += [(o, "outfit", o) for o in a["outfit"]]
    out += [(f"{c} {g}", "outfit_color", c) for c in a["outfit_color"] for g in _TOPS]
    out += [(f"{c} {g}", "outfit_color2", c) for c in a["outfit_color2"] for g in _BOTTOMS]
    out += [("1girl", "gender", "girl"), ("1boy", "gender", "boy")]
    out += [(word, name, "with") for name, word in ACCESSORIES.items()]
    return sorted(out, key=lambda t: -len(t[0]))


def attributes_in_text(text: str) -> dict[str, str]:
    """The attribute values a prompt asks for, read from caption phrases ('pink hair, sailor uniform'
    -> {'hair_color': 'pink', 'outfit': 'sailor uniform'}); the first mention of an attribute wins."""
    rest = " " + re.sub(r"[^a-z0-9]+", " ", text.lower()) + " "
    found: list[tuple[int, str, str]] = []
    for phrase, name, value in _phrases():
        at = rest.find(f" {phrase} ")
        if at >= 0:
            found.append((at, name, value))
            rest = rest[:at] + " " + "#" * len(phrase) + rest[at + len(phrase) + 1 :]  # consumed
    out: dict[str, str] = {}
    for _, name, value in sorted(found):
        out.setdefault(name, value)
    return out


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv, BatchNorm, ReLU (BatchNorm: the fastest norm on a CPU)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


@dataclass
class AttributeOutput:
    """What `AttributeClassifier.forward_with_maps` returns."""

    logits: dict[str, torch.Tensor]  # attribute -> (B, n) class logits
    eye_map: torch.Tensor | None  # (B, 1, h, w) logits of a spatial softmax "where the eyes are" (None: off)


class AttributeClassifier(ModelMixin, ConfigMixin):
    """Patch stem, strided 3x3 conv stages, global average + max pooling, one linear head per
    attribute; eye colour read through a learned eye locator.

    The stem is a `patch_size` x `patch_size` stride-`patch_size` conv (a linear map of each pixel
    patch, as ViT's patch embedding): it sees every pixel at a fraction of the cost of a 3x3 conv
    over the full image. Max pooling next to the average, and pooling the finer stages next to the
    coarsest, keep small evidence from being washed out by large regions (background, outfit).

    The eyes are 3-5 px at 128 px: a global pool hides them, and a plain CNN learns to find them
    late. So a 1x1 conv over the first two stages predicts an eye map (a spatial softmax on the stem
    grid, trained against the renderer's exact eye keypoints: `eye_map_loss`), and the heads named
    in `attend` (eye colour; also the face's skin and the hair around it) read the stage features
    pooled under that map (attention pooling, as in attention-based multiple-instance learning,
    Ilse et al. 2018, Eq. 8). At inference the map is the model's own: no keypoints are needed."""

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        image_size: int = 128,  # side every input is resized to (the training renders' side)
        patch_size: int = 4,  # stem kernel and stride (128 px -> 32 x 32 cells)
        channels: tuple[int, ...] = (32, 64, 128),  # width of the stem stage, then of each stride-2 stage
        depths: tuple[int, ...] = (1, 1, 2),  # extra stride-1 3x3 convs per stage (same length as channels)
        pool_stages: int = 3,  # the last this many stages are pooled for the shared layer
        hidden: int = 256,  # width of the shared layer before the heads
        dropout: float = 0.1,  # on the shared layer (training only)
        eye_attention: bool = True,  # learn the eye locator (needs 2+ stages and an eye_color head)
        attend: dict[str, list[int]] | None = None,  # attribute -> stages pooled under the eye map for its head
        class_names: dict[str, list[str]] | None = None,  # attribute -> classes (default: ATTRIBUTES)
    ):
        super().__init__()
        if len(channels) != len(depths) or not channels:
            raise ValueError("channels and depths must be non-empty and of the same length.")
        if not 1 <= pool_stages <= len(channels):
            raise ValueError("pool_stages must be between 1 and the number of stages.")
        names = {k: list(v) for k, v in (class_names or ATTRIBUTES).items()}
        if eye_attention and (len(channels) < 2 or "eye_color" not in names):
            raise ValueError("eye_attention needs at least two stages and an eye_color attribute.")
        attend = {k: [int(i) for i in v] for k, v in (attend or {"eye_color": [0, 1]}).items()} if eye_attention else {}
        if any(k not in names or not v or not all(0 <= i < len(channels) for i in v) for k, v in attend.items()):
            raise ValueError("attend must map known attributes to lists of stage indices.")
        self.register_to_config(class_names=names, attend=attend)
        stem = nn.Sequential(
            nn.Conv2d(3, channels[0], patch_size, stride=patch_size, bias=False),
            nn.BatchNorm2d(channels[0]),
            nn.ReLU(inplace=True),
        )
        self.stages = nn.ModuleList()
        prev = channels[0]
        for i, (c, d) in enumerate(zip(channels, depths)):
            first = [stem] if i == 0 else [_conv(prev, c, 2)]
            self.stages.append(nn.Sequential(*first, *(_conv(c, c) for _ in range(d))))
            prev = c
        pooled = 2 * sum(channels[-pool_stages:])
        self.shared = nn.Sequential(nn.Linear(pooled, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout))
        widths = {k: hidden for k in names}
        if eye_attention:
            # The map from the stem stage's detail plus the next stage's context (upsampled).
            self.eye_fine = nn.Conv2d(channels[0], 1, 1)
            self.eye_coarse = nn.Conv2d(channels[1], 1, 1)
            for k, stages in attend.items():
                widths[k] = hidden + sum(channels[i] for i in stages)
        # Sorted: the order a saved config comes back in, so parameters (and optimiser state) line up.
        self.heads = nn.ModuleDict({k: nn.Linear(widths[k], len(names[k])) for k in sorted(names)})

    @property
    def classes(self) -> dict[str, list[str]]:
        """attribute -> class names, as this model was trained."""
        return {k: list(self.config.class_names[k]) for k in self.heads}

    def forward_with_maps(self, x: torch.Tensor) -> AttributeOutput:
        """`x`: (B, 3, H, W) in [-1, 1], any size (resized to `image_size`) -> logits and the eye map."""
        size = self.config.image_size
        x = x.to(self.dtype)
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        feats, pooled = [], []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            feats.append(x)
            if i >= len(self.stages) - self.config.pool_stages:
                pooled += [x.mean(dim=(2, 3)), x.amax(dim=(2, 3))]
        h = self.shared(torch.cat(pooled, dim=1))
        attend = self.config.attend
        logits = {k: head(h) for k, head in self.heads.items() if k not in attend}
        eye_map = None
        if self.config.eye_attention:
            f0, f1 = feats[0], feats[1]
            eye_map = self.eye_fine(f0) + F.interpolate(self.eye_coarse(f1), size=f0.shape[-2:], mode="nearest")
            a0 = eye_map.flatten(2).softmax(dim=-1).view_as(eye_map)  # (B, 1, h0, w0), sums to 1
            desc = []  # each stage's features pooled under the map (sum-pooled to its grid, so it sums to 1)
            for f in feats:
                a = F.adaptive_avg_pool2d(a0, f.shape[-2:]) * (a0[0, 0].numel() / f[0, 0].numel())
                desc.append((f * a).sum(dim=(2, 3)))
            for k, stages in attend.items():
                logits[k] = self.heads[k](torch.cat([h, *(desc[i] for i in stages)], dim=1))
        return AttributeOutput(logits={k: logits[k] for k in self.heads}, eye_map=eye_map)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """`x`: (B, 3, H, W) in [-1, 1], any size (resized to `image_size`) -> {attribute: (B, n) logits}."""
        return self.forward_with_maps(x).logits

    # -- inference helpers ---------------------------------------------------------------------
    def to_tensor(self, images: torch.Tensor | Sequence[Image.Image]) -> torch.Tensor:
        """PIL images (any size, resized) or a (B, 3, H, W) tensor in [-1, 1] -> a batch on this device."""
        if isinstance(images, torch.Tensor):
            if images.ndim != 4 or images.shape[1] != 3:
                raise InputError(f"Images must be a (B, 3, H, W) tensor; got shape {tuple(images.shape)}.")
            return images.to(self.device, self.dtype)
        if not images:
            raise InputError("Give at least one image to classify.")
        size = self.config.image_size
        arrays = []
        for im in images:
            if not isinstance(im, Image.Image):
                raise InputError(f"The classifier takes PIL images or a tensor, not {type(im).__name__}.")
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            arrays.append(np.asarray(im, dtype=np.float32))
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0
        return x.to(self.device, self.dtype)

    @torch.no_grad()
    def predict(self, images: torch.Tensor | Sequence[Image.Image], batch_size: int = 64) -> dict[str, torch.Tensor]:
        """{attribute: (B, n) class probabilities}, in eval mode (the previous mode is restored)."""
        from models.detector import eval_chunks

        outs = eval_chunks(self, self.to_tensor(images), batch_size)
        return {k: torch.cat([o[k] for o in outs]).float().softmax(dim=1) for k in self.heads}

    def top_labels(self, images: torch.Tensor | Sequence[Image.Image]) -> list[dict[str, str]]:
        """The most likely class name of every attribute, per image."""
        probs = self.predict(images)
        classes = self.classes
        n = len(next(iter(probs.values())))
        return [{k: classes[k][int(p[i].argmax())] for k, p in probs.items()} for i in range(n)]


def eye_map_loss(eye_map: torch.Tensor, eyes: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Cross-entropy of the eye map's spatial softmax against a normalised mixture of Gaussians (std
    `sigma` cells) at the visible eyes. `eye_map`: (B, 1, h, w) logits; `eyes`: (B, E, 3) rows of
    x, y in [0, 1] of the image and visibility (1 seen, 0 not); images with no visible eye are skipped."""
    h, w = eye_map.shape[-2:]
    gx = torch.arange(w, dtype=torch.float32, device=eye_map.device) + 0.5
    gy = torch.arange(h, dtype=torch.float32, device=eye_map.device) + 0.5
    px = torch.exp(-((gx - eyes[..., 0:1] * w) ** 2) / (2 * sigma**2))  # (B, E, w)
    py = torch.exp(-((gy - eyes[..., 1:2] * h) ** 2) / (2 * sigma**2))  # (B, E, h)
    target = (py[..., :, None] * px[..., None, :] * eyes[..., 2, None, None]).sum(dim=1).flatten(1)  # (B, h w)
    seen = target.sum(dim=1) > 1e-6
    if not seen.any():
        return eye_map.sum() * 0.0
    target = target[seen] / target[seen].sum(dim=1, keepdim=True)
    logp = eye_map.flatten(1)[seen].float().log_softmax(dim=1)
    return -(target * logp).sum(dim=1).mean()


def load_attribute_classifier(
    path: str | Path = DEFAULT_PATH, device: str | torch.device = "cpu"
) -> AttributeClassifier:
    """The trained classifier from a folder (config.json + safetensors), in eval mode."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise InputError(
            f"No attribute classifier in {path}; train one with python -m training.train_attributes --publish {path}."
        )
    return AttributeClassifier.from_pretrained(str(path)).to(device).eval()


__all__ = [
    "ACCESSORIES",
    "ATTRIBUTES",
    "AttributeClassifier",
    "AttributeOutput",
    "attribute_index",
    "attributes_in_text",
    "eye_map_loss",
    "load_attribute_classifier",
    "record_labels",
]
