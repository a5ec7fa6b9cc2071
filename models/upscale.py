"""The upscale pass: the base model's picture redrawn at twice its size by a second pose LDM, below a noise level.

    pipe = PosePipeline.from_pretrained("weights")      # with `upscaler/`: a 256-px pose LDM and its upscale.json
    images, states = pipe(pose, seed=0)                  # 256-px pictures: the 128-px model's, then this pass

As cascaded diffusion models (Ho et al. 2022) and Stable Diffusion's "hires fix" do, with SDEdit (Meng et al. 2022)
as the second stage: the base picture, enlarged to the upscaler's size and encoded by its autoencoder, is noised to
t = strength T and denoised by the upscaler in the same pose (same frame), with the style code its encoder reads
off the enlarged picture. Why two models: the 128-px model lays down one colour a garment but draws soft figures
without faces; the 256-px one draws eyes, outlines and flat fills, but left to choose the colours itself paints a
garment in two or three (docs/EXPERIMENTS.md, "The patchwork"). Colours are set at high noise and detail at low, so
a pass from t = 0.45 T keeps the first model's colours and takes the second's detail ("An upscale pass").
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from models.autoencoder import encode, from_pil
from models.backend import SAMPLER_NAMES
from models.errors import InputError
from models.pose import Pose
from models.samplers import make_scheduler, resample_loop

SETTINGS_FILE = "upscale.json"  # in the upscaler's folder, beside its unet/


@dataclass(frozen=True)
class UpscaleSettings:
    """How the upscale pass runs (stored as `upscale.json` in the upscaler's folder)."""

    strength: float = 0.45  # t_start / T: at 0.3 the faces stay soft, from 0.6 the upscaler's colours creep in
    steps: int = 8
    guidance: float = 2.0  # classifier-free guidance over the pose, as the base model's
    sampler: str = "euler_a"  # stochastic: fewer two-coloured patches than the deterministic samplers

    def __post_init__(self):
        """One sentence for a setting out of range (a hand-edited upscale.json)."""
        numbers = type(self.steps) is int and all(type(v) in (int, float) for v in (self.strength, self.guidance))
        if not numbers or not 0.0 < self.strength <= 1.0 or self.steps < 1 or self.guidance < 0:
            raise InputError(f"upscale.json: strength in (0, 1], whole steps >= 1 and guidance >= 0; got {self}.")
        if self.sampler not in SAMPLER_NAMES:
            raise InputError(
                f"upscale.json: the sampler must be one of {', '.join(SAMPLER_NAMES)}; got {self.sampler!r}."
            )


def read_settings(folder: str | Path) -> UpscaleSettings:
    """The upscale settings of an upscaler folder (the defaults where it has no upscale.json)."""
    path = Path(folder) / SETTINGS_FILE
    if not path.is_file():
        return UpscaleSettings()
    try:
        given = json.loads(path.read_text())
    except ValueError:
        given = None
    if not isinstance(given, dict):
        raise InputError(f"{SETTINGS_FILE} in the upscaler's folder is not a JSON object of settings.")
    known = {f.name for f in dataclasses.fields(UpscaleSettings)}
    return UpscaleSettings(**{k: v for k, v in given.items() if k in known})


def write_settings(settings: UpscaleSettings, folder: str | Path) -> None:
    """`folder/upscale.json`."""
    (Path(folder) / SETTINGS_FILE).write_text(json.dumps(dataclasses.asdict(settings), indent=2) + "\n")


@torch.no_grad()
def upscale(upscaler: Any, image: Image.Image, pose: Pose, seed: int, settings: UpscaleSettings) -> Image.Image:
    """The picture redrawn by `upscaler` (a `PosePipeline`) at its own size: enlarged, noised to t = strength T and
    denoised in `pose` with the style code read off it; the noise comes from `seed`, so a state gives one picture."""
    size = upscaler.native_size
    big = image.convert("RGB").resize((size, size), Image.LANCZOS)
    x = from_pil([big]).to(upscaler.device, upscaler.dtype)
    z_0 = encode(upscaler.vae, x)
    s = upscaler.style_encoder(x)[0] if upscaler.style_encoder is not None else torch.zeros(1, upscaler.style_dim)
    s = s.to(upscaler.device, upscaler.dtype)
    cond = upscaler.condition(pose, size)

    def model_fn(z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return upscaler.predict(z_t, t, cond, s, settings.guidance)

    generator = torch.Generator().manual_seed(int(seed) % 2**63)
    scheduler = make_scheduler(settings.sampler, upscaler.scheduler_config)
    z = resample_loop(model_fn, scheduler, z_0, settings.strength, settings.steps, generator)
    return upscaler.decode(z)[0]
