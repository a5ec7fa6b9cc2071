"""A small part parser for the rendered-character domain: which pixels are hair, clothes, skin or backdrop.

    parser = PartParser.from_pretrained("weights/parser")
    probs = parser.parse([Image.open("a.png")])        # (N, 4, H, W) float32, PARTS order, summing to 1

Latent refinement confines a colour prompt to the part it names ("pink hair" to the hair). Keying the pose's head
disc by the image's colours (`models.edit_regions`) fails where the hair is the backdrop's colour (white hair on a
white wall) or where the drawn head is smaller or lower than the pose's: refinement then recoloured a sliver of the
crown. The renderer knows every pixel's part exactly (`training.train_parser` renders each character again with
its hair, then its clothes, in other colours), so a parser learns them; trained on the autoencoder's
reconstructions of renders, it reads the generator's images as they look, soft edges and all.

The network is a four-level conv encoder (128 -> 8 px) with a U-Net decoder back to half the input's size; the
logits are upsampled to the input's. BatchNorm, as in `models.detector`: the fastest norm on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from PIL import Image
from torch import nn

PARTS: tuple[str, ...] = ("background", "hair", "clothes", "skin")  # "skin": the rest of the figure (face, hands)
# The refinement region (`models.edit_regions.REGIONS`) each part stands for; the face keeps the pose's mask.
REGION_PARTS: dict[str, str] = {"background": "background", "hair": "hair", "body": "clothes"}


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv, BatchNorm, ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PartParser(ModelMixin, ConfigMixin):
    """U-Net: RGB in [-1, 1] `(B, 3, H, W)` (H, W divisible by 16) in, `(B, len(PARTS), H, W)` part logits out."""

    config_name = "config.json"

    @register_to_config
    def __init__(self, image_size: int = 128, channels: tuple[int, ...] = (16, 32, 64, 96), num_parts: int = 4):
        super().__init__()
        if len(channels) != 4:
            raise ValueError("channels must list 4 widths (1/2, 1/4, 1/8 and 1/16 of the input).")
        c1, c2, c3, c4 = channels
        self.down = nn.ModuleList(
            [
                nn.Sequential(_conv(3, c1, 2), _conv(c1, c1)),
                nn.Sequential(_conv(c1, c2, 2), _conv(c2, c2)),
                nn.Sequential(_conv(c2, c3, 2), _conv(c3, c3)),
                nn.Sequential(_conv(c3, c4, 2), _conv(c4, c4), _conv(c4, c4)),  # 1/16 sees the whole figure
            ]
        )
        self.up = nn.ModuleList([_conv(c4 + c3, c3), _conv(c3 + c2, c2), _conv(c2 + c1, c1)])
        self.head = nn.Conv2d(c1, num_parts, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Part logits at the input's size."""
        skips, x = [], images
        for block in self.down:
            x = block(x)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = block(torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="nearest"), skip], dim=1))
        return F.interpolate(self.head(x), size=images.shape[-2:], mode="bilinear", align_corners=False)

    @torch.no_grad()
    def parse(self, images: Sequence[Image.Image] | torch.Tensor) -> np.ndarray:
        """`(N, P, H, W)` float32 part probabilities of PIL images (at `image_size`) or a `(N, 3, H, W)` tensor in
        [-1, 1] (at its own size)."""
        if not isinstance(images, torch.Tensor):
            side = int(self.config.image_size)
            arrays = [np.asarray(im.convert("RGB").resize((side, side), Image.BILINEAR)) for im in images]
            images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1
        was_training = self.training
        self.eval()
        probs = self(images.to(self.device, self.dtype)).float().softmax(dim=1)
        self.train(was_training)
        return probs.cpu().numpy()


def part_masks_from_probs(probs: np.ndarray, regions: set[str]) -> dict[str, np.ndarray]:
    """`{region: (H, W) float32 in [0, 1]}`: each region's part probability (`REGION_PARTS`) from one image's
    `(P, H, W)` parse; regions with no part (the face) are left out."""
    return {r: probs[PARTS.index(REGION_PARTS[r])].astype(np.float32) for r in regions if r in REGION_PARTS}


__all__ = ["PARTS", "REGION_PARTS", "PartParser", "part_masks_from_probs"]
