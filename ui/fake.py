"""A stand-in pipeline for UI tests, load benchmarks and demos without weights: its "generation" is
the OpenPose drawing of the pose tinted by the seed, with `callback` called every step.

    python app.py --model fake
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from models.errors import InputError
from models.pose import Pose


@dataclass
class FakeState:
    """What a GenerationState records, without latents."""

    pose: Pose
    seed: int
    settings: dict[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        """The JSON record of this image."""
        return {"pose": self.pose.to_dict(), "seed": self.seed, **self.settings, "model": "fake"}


class FakePipeline:
    """Same call as `models.pipeline.PosePipeline`; draws instead of denoising."""

    def __init__(self, size: int = 128, step_seconds: float = 0.0) -> None:
        self.size = size
        self.step_seconds = step_seconds  # simulated work per step (benchmarks)

    def __call__(
        self,
        pose: Pose,
        seed: int,
        steps: int = 20,
        guidance: float = 2.0,
        sampler: str = "dpmpp_2m",
        style: Any = None,
        eta: float = 0.0,
        num_images: int = 1,
        callback: Any = None,
    ):
        """(images, states) for `num_images` seeds starting at `seed`."""
        from models.condition import openpose_drawing

        if sampler not in ("ddim", "dpmpp_2m", "euler_a"):
            raise InputError(f"Unknown sampler {sampler!r}.")
        base = np.asarray(openpose_drawing(pose, self.size, self.size), dtype=np.float32)
        rng = np.random.default_rng(seed)
        noise = rng.uniform(0, 255, base.shape).astype(np.float32)
        for step in range(1, steps + 1):
            if self.step_seconds:
                time.sleep(self.step_seconds)
            if callback is not None:
                t = step / steps
                callback(step, steps, Image.fromarray(((1 - t) * noise + t * base).astype(np.uint8)))
        images, states = [], []
        for i in range(num_images):
            tint = np.random.default_rng(seed + i).uniform(40, 120, 3).astype(np.float32)
            img = np.clip(base + tint * (base.sum(axis=2, keepdims=True) == 0), 0, 255).astype(np.uint8)
            images.append(Image.fromarray(img))
            states.append(FakeState(pose, seed + i, {"steps": steps, "guidance": guidance, "sampler": sampler}))
        return images, states
