"""`GenerationState`: everything needed to re-render one image exactly (pose, seed, s, z_T, settings, z_0).

Kept in `gr.State`, so a style slider or a CLIP refinement re-renders from the same noise and pose
without redoing the rest. `to_json()` holds only plain values (the tensors stay in the object).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from models.pose import Pose


@dataclass
class GenerationState:
    """One generated image's inputs and results."""

    pose: Pose  # the pose as given (before fitting to the square frame)
    seed: int  # the seed of this image (the call's seed + image index)
    style: np.ndarray  # s, float32 (style_dim,)
    z_T: torch.Tensor  # the initial noise, (1, C, h, w) float32 on the CPU
    settings: dict[str, Any] = field(default_factory=dict)  # steps, guidance, sampler, eta, size (plain values)
    z_0: torch.Tensor | None = None  # the final latent, (1, C, h, w) float32 on the CPU

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able part: pose, seed, style as a list, settings (no tensors)."""
        return {
            "pose": self.pose.to_dict(),
            "seed": int(self.seed),
            "style": [float(v) for v in np.asarray(self.style, dtype=np.float32)],
            "settings": dict(self.settings),
        }

    def to_json(self) -> str:
        """`to_dict()` as a JSON string."""
        return json.dumps(self.to_dict())

    def with_style(self, style: np.ndarray) -> GenerationState:
        """A copy with another s (same pose, seed, noise and settings); z_0 is cleared."""
        return GenerationState(
            self.pose, self.seed, np.asarray(style, dtype=np.float32).copy(), self.z_T, dict(self.settings), None
        )
