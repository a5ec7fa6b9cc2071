"""`PosePipeline`: pose + seed (+ style code) -> anime character image, with the trained latent diffusion model.

    pipe = PosePipeline.from_pretrained("weights")            # or a run's final/ folder, or a Hub id
    images, states = pipe(pose, seed=0, steps=20, guidance=2.0, sampler="euler_a")
    images2, _ = pipe.render(states[0].with_style(new_s))    # same noise and pose, another style

A folder holds `autoencoder/` (`models.autoencoder.load_autoencoder`), `unet/` (PoseUNet), `scheduler/` (the training
DDPMScheduler config, which every sampler is built from) and optionally `style_encoder/`, `mean_latent/`
(E[z_0 | s, pose], where sampling starts: `models.unet`), `parser/`, `palette.json` and `fast_unet/` (the
few-step student of `training.train_distill`, stored in float16: `pipe(pose, seed, steps=2, fast=True)`) and
`detail_unet/` (a low-noise expert, as eDiff-I's: a copy of the UNet trained on small t only, which `predict` uses
wherever t lies in its range) and `upscaler/` (a pose LDM at twice the size, itself such a folder, whose upscale pass,
`models.upscale`, redraws every finished picture at its size; previews stay at the base size).

Symbols: z_T the initial noise, s the style code (prior N(0, I)), c the condition map of the pose,
g the guidance scale; classifier-free guidance over the pose (Ho & Salimans 2022, Eq. 6):
    out = out(z_t, t, 0, s) + g * (out(z_t, t, c, s) - out(z_t, t, 0, s))
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDPMScheduler
from PIL import Image

from models.autoencoder import Autoencoder, downsample_factor, from_pil, load_autoencoder, to_pil
from models.autoencoder import decode as ae_decode
from models.backend import (
    DEFAULT_SAMPLER,
    PREVIEW_EVERY,
    Callback,
    Capabilities,
    GenerationState,
    Wrap,
    check_common,
    check_size,
    check_style_code,
    default_device,
    generate,
    model_sizes,
    state_settings,
)
from models.edit_regions import PALETTE_FILE, PartParser, load_palette, save_palette
from models.errors import NO_FAST, NO_FIGURE, InputError
from models.pose import Pose, fit_to_square
from models.pose_input import pad_to_square
from models.samplers import MAX_FAST_STEPS, make_fast_scheduler, make_scheduler, sample_loop
from models.unet import MeanLatent, PoseUNet, StyleEncoder
from models.upscale import UpscaleSettings, read_settings, upscale, write_settings

# Where a pose goes in the square frame: as the renderer frames its training data, whose visible
# keypoints' box spans a median 0.67 of the side (so a margin of 0.17) centred at y = 0.55 (the hair
# above the eyes and the feet below the ankles also need room). Measured on 3000 training renders.
FRAME_MARGIN = 0.17
FRAME_CENTRE = (0.5, 0.55)
DEFAULT_STEPS = 8  # DPM-Solver++ 2M: PCK and FD as at 10 steps (training.eval), ~0.9 s an image on 2 CPU cores
MAX_STEPS = 200
MAX_GUIDANCE = 20.0


def frame_pose(pose: Pose, size: int) -> Pose:
    """The pose as the model draws it: fitted to its `size` square frame (the output image's frame)."""
    return fit_to_square(pose, size, FRAME_MARGIN, FRAME_CENTRE)


def resolve_folder(name_or_path: str | os.PathLike) -> Path:
    """A local pipeline folder, or a Hub id downloaded by huggingface_hub (honours HF_HUB_OFFLINE)."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    name = str(name_or_path)
    if path.exists() or name.count("/") != 1 or name.startswith((".", "/")):
        raise InputError(f"The model folder {name} does not exist.")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=name))
    except Exception as err:  # noqa: BLE001 -- offline, unknown repo, no network: one sentence for the user
        raise InputError(
            f"The model {name} is neither a local folder nor a reachable Hub repository ({type(err).__name__})."
        ) from None


class PosePipeline:
    """The pose-conditioned latent diffusion pipeline (autoencoder, PoseUNet, scheduler config); a
    `models.backend.Backend`."""

    CAPABILITIES = Capabilities(
        max_steps=MAX_STEPS, max_guidance=MAX_GUIDANCE, style_code=True, directions=("sefa", "ganspace"),
        refine=("style", "latent"),
    )  # fmt: skip

    def __init__(
        self,
        vae: Autoencoder,
        unet: PoseUNet,
        scheduler: DDPMScheduler,
        style_encoder: Any = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        palette: dict[str, np.ndarray] | None = None,
        parser: Any = None,
        mean_latent: Any = None,
        fast_unet: PoseUNet | None = None,
        detail_unet: PoseUNet | None = None,
        upscaler: PosePipeline | None = None,
        upscale_settings: UpscaleSettings | None = None,
    ):
        self.device = default_device(device)
        if dtype is None:
            dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.dtype = dtype

        # Every network computes in the pipeline's dtype whatever it was stored in (the students and experts are
        # stored in float16). `.float()`, not `.to(dtype=float32)`: diffusers' `to` warns at any dtype cast.
        def ready(module: Any) -> Any:
            module = module.to(self.device, dtype=dtype) if dtype != torch.float32 else module.to(self.device).float()
            return module.eval().requires_grad_(False)

        self.vae, self.unet = ready(vae), ready(unet)
        # the low-noise expert (`PoseUNet.covers` says for which t), or None: `self.unet` for every t
        self.detail_unet = ready(detail_unet) if detail_unet is not None else None
        self.style_encoder = ready(style_encoder) if style_encoder is not None else None
        # {region: (K, 3) in [-1, 1]}: the training data's colours per part, the colour search's candidates
        # (`models.edit_regions`); empty when the folder has no palette.json
        self.palette = dict(palette or {})
        # the part parser that tells refinement where the hair, clothes and backdrop are; None: refinement keys the
        # pose's regions by the image's colours (both `models.edit_regions`)
        self.parser = parser.to(self.device).eval().requires_grad_(False) if parser is not None else None
        # E[z_0 | s, pose] (`models.unet`): sampling starts at z_T + sqrt(alpha_bar_T) of it, so the look follows
        # s; None: from z_T alone (the model then takes its colours from the noise)
        self.mean_latent = ready(mean_latent) if mean_latent is not None else None
        # the distilled few-step student (`fast=True`)
        self.fast_unet = ready(fast_unet) if fast_unet is not None else None
        if fast_unet is not None:
            self.CAPABILITIES = dataclasses.replace(type(self).CAPABILITIES, fast=True)
        self.scheduler = scheduler
        self.scheduler_config = scheduler.config
        self.latent_factor = downsample_factor(vae)
        self.native_size, self.size_multiple = model_sizes(self.latent_factor, unet.config)
        # the upscale pass's model and settings (`models.upscale`), or None: pictures at the native size
        self.upscaler, self.upscale_settings = upscaler, upscale_settings or UpscaleSettings()
        if upscaler is not None:
            self.CAPABILITIES = dataclasses.replace(self.CAPABILITIES, upscale=True)

    # -- loading and saving ------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, device: str | torch.device | None = None, dtype: torch.dtype | None = None
    ) -> PosePipeline:
        """Load from a folder with `autoencoder/`, `unet/`, `scheduler/` (or a Hub id with the same layout)."""
        folder = resolve_folder(name_or_path)
        missing = [s for s in ("autoencoder", "unet", "scheduler") if not (folder / s).is_dir()]
        if missing:
            raise InputError(f"The model folder {folder} lacks {', '.join(missing)}/.")
        vae = load_autoencoder(folder / "autoencoder")
        unet = PoseUNet.from_pretrained(folder / "unet")
        scheduler = DDPMScheduler.from_pretrained(folder / "scheduler")
        style_encoder = None
        if (folder / "style_encoder").is_dir():
            style_encoder = StyleEncoder.from_pretrained(folder / "style_encoder")
        palette = load_palette(folder / PALETTE_FILE)
        parser = None
        if (folder / "parser").is_dir():
            parser = PartParser.from_pretrained(folder / "parser")
        mean_latent = None
        if (folder / "mean_latent").is_dir():
            mean_latent = MeanLatent.from_pretrained(folder / "mean_latent")
        fast_unet = PoseUNet.from_pretrained(folder / "fast_unet") if (folder / "fast_unet").is_dir() else None
        detail_unet = PoseUNet.from_pretrained(folder / "detail_unet") if (folder / "detail_unet").is_dir() else None
        upscaler = cls.from_pretrained(folder / "upscaler", device, dtype) if (folder / "upscaler").is_dir() else None
        return cls(
            vae,
            unet,
            scheduler,
            style_encoder,
            device=device,
            dtype=dtype,
            palette=palette,
            parser=parser,
            mean_latent=mean_latent,
            fast_unet=fast_unet,
            detail_unet=detail_unet,
            upscaler=upscaler,
            upscale_settings=read_settings(folder / "upscaler") if upscaler is not None else None,
        )

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write the folder layout `from_pretrained` reads (safetensors)."""
        folder = Path(folder)
        self.vae.save_pretrained(folder / "autoencoder", safe_serialization=True)
        self.unet.save_pretrained(folder / "unet", safe_serialization=True)
        self.scheduler.save_pretrained(folder / "scheduler")
        if self.style_encoder is not None:
            self.style_encoder.save_pretrained(folder / "style_encoder", safe_serialization=True)
        if self.palette:
            colours = {r: np.round((np.asarray(c) + 1.0) * 127.5) for r, c in self.palette.items()}
            save_palette(colours, folder / PALETTE_FILE, source="saved with the pipeline")
        if self.parser is not None:
            self.parser.save_pretrained(folder / "parser", safe_serialization=True)
        if self.mean_latent is not None:
            self.mean_latent.save_pretrained(folder / "mean_latent", safe_serialization=True)
        if self.detail_unet is not None:
            self.detail_unet.save_pretrained(folder / "detail_unet", safe_serialization=True)
        if self.fast_unet is not None:  # float16 on disk (a copy: `.half()`, as `.float()` above, without a warning)
            copy.deepcopy(self.fast_unet).half().save_pretrained(folder / "fast_unet", safe_serialization=True)
        if self.upscaler is not None:
            self.upscaler.save_pretrained(folder / "upscaler")
            write_settings(self.upscale_settings, folder / "upscaler")

    @property
    def output_size(self) -> int:
        """The side of a finished picture drawn at the native size: the upscaler's, when there is one."""
        return self.upscaler.native_size if self.upscaler is not None else self.native_size

    @property
    def style_dim(self) -> int:
        """Dimension of the style code s."""
        return int(self.unet.config.style_dim)

    # -- checks ------------------------------------------------------------------------------------
    def check_inputs(
        self,
        pose: Pose,
        seed: int,
        steps: int,
        guidance: float,
        sampler: str,
        style: Any,
        eta: float,
        num_images: int,
        size: int,
        *,
        fast: bool = False,
        draft: bool = False,
    ) -> None:
        """Raise InputError with one sentence for any input the pipeline cannot honour."""
        if draft not in (True, False):
            raise InputError(f"draft must be true or false; got {draft!r}.")
        check_common(
            pose, seed, steps, guidance, sampler, eta, num_images, max_steps=MAX_STEPS, max_guidance=MAX_GUIDANCE
        )
        if fast and self.fast_unet is None:
            raise InputError(NO_FAST)
        if fast and steps > MAX_FAST_STEPS:
            raise InputError(f"The fast generator takes 1 to {MAX_FAST_STEPS} steps; got {steps}.")
        check_size(size, self.size_multiple, self.native_size)
        check_style_code(style, self.style_dim)

    # -- building blocks (also used by style edits and CLIP refinement) ----------------------------
    def condition(self, pose: Pose, size: int) -> torch.Tensor:
        """The condition map `(1, C, size, size)` of the pose fitted to the square frame."""
        from models.condition import condition_map

        fitted = frame_pose(pose, size)
        return torch.from_numpy(condition_map(fitted, size, size))[None].to(self.device, self.dtype)

    def _generator(
        self, seed: int, latent_shape: tuple[int, ...]
    ) -> tuple[torch.Generator, torch.Tensor, torch.Tensor]:
        """A CPU generator seeded with `seed`, and its first draws: z_T, then s (in that fixed order)."""
        g = torch.Generator("cpu").manual_seed(int(seed))
        z_T = torch.randn(latent_shape, generator=g, dtype=torch.float32)
        s = torch.randn((1, self.style_dim), generator=g, dtype=torch.float32)
        return g, z_T, s

    def prepare(
        self,
        pose: Pose,
        seed: int,
        steps: int = DEFAULT_STEPS,
        guidance: float = 2.0,
        sampler: str = DEFAULT_SAMPLER,
        style: Any = None,
        eta: float = 0.0,
        size: int | None = None,
        *,
        fast: bool = False,
        draft: bool = False,
    ) -> GenerationState:
        """The state of one image before sampling: z_T and s from `seed` (s given overrides the drawn one); `fast`:
        drawn by the few-step student; `draft`: a preview, left at the base size by the upscale pass."""
        size = size or self.native_size
        side = size // self.latent_factor
        _, z_T, s = self._generator(seed, (1, self.vae.config.latent_channels, side, side))
        s_np = np.asarray(style, dtype=np.float32).copy() if style is not None else s[0].numpy()
        # `fast` only when set: a full model's states stay as they were
        extras = {"fast": True} if fast else {}
        settings = state_settings(steps, guidance, sampler, eta, size, **extras, **({"draft": True} if draft else {}))
        return GenerationState(pose=pose, seed=int(seed), style=s_np, z_T=z_T, settings=settings)

    def start_mean(self, cond: torch.Tensor, s: torch.Tensor) -> torch.Tensor | None:
        """E[z_0 | s, pose] `(1, C, h, w)` for a condition map and style code (differentiable in s), or None when
        the folder has no `mean_latent/`: where `models.samplers.start_sample` moves z_T."""
        if self.mean_latent is None:
            return None
        return self.mean_latent(cond, s.to(self.dtype))

    def sampler(self, settings: dict[str, Any]) -> tuple[Callable[..., torch.Tensor], Any]:
        """The denoiser `fn(z_t, t, cond, s)` and the scheduler that a state's settings ask for: the UNet with
        classifier-free guidance and the named sampler, or (`fast`) the student, its guidance folded in, and the
        consistency sampler."""
        if settings.get("fast"):
            if self.fast_unet is None:
                raise InputError(NO_FAST)
            return self.fast_unet, make_fast_scheduler(self.scheduler_config)
        guidance = settings["guidance"]
        scheduler = make_scheduler(settings["sampler"], self.scheduler_config)
        return (lambda z_t, t, cond, s: self.predict(z_t, t, cond, s, guidance)), scheduler

    def predict(
        self, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, s: torch.Tensor, guidance: float
    ) -> torch.Tensor:
        """The guided model output (module docstring); differentiable, one batched forward for both branches; the
        low-noise expert's where it covers every t."""
        unet = self.detail_unet if self.detail_unet is not None and self.detail_unet.covers(t) else self.unet
        if guidance == 1.0:
            return unet(z_t, t, cond, s)
        b = z_t.shape[0]
        if torch.is_tensor(t) and t.numel() == b > 1:  # one timestep per image (training), for both branches
            t = t.repeat(2)
        out = unet(torch.cat([z_t, z_t]), t, torch.cat([cond, torch.zeros_like(cond)]), torch.cat([s, s]))
        c, u = out[:b], out[b:]
        return u + guidance * (c - u)

    @torch.no_grad()
    def denoise(
        self,
        state: GenerationState,
        callback: Callback | None = None,
        preview_every: int = PREVIEW_EVERY,
        style_at: Callable[[int], np.ndarray] | None = None,
        start_style: np.ndarray | None = None,
        wrap: Wrap | None = None,
    ) -> GenerationState:
        """Sample z_0 for a state (its pose, noise, s and settings); returns the state with `z_0` set.

        `style_at(step)` (0-based sampler step), when given, is the s used at that step instead of the
        state's (style edits over a range of steps, `models.directions`). `start_style`, when given, is the s the
        start E[z_0 | s, pose] is computed from instead of the first step's (to tell the start's part of an edit
        from the UNet's: `training.eval_directions --pathways`). `wrap(state, model_fn)`, when given, wraps the
        guided model (`models.backend.Wrap`)."""
        cfg = state.settings
        size = cfg["size"]
        g, _, _ = self._generator(state.seed, tuple(state.z_T.shape))  # advance past z_T and s
        cond = self.condition(state.pose, size)
        s = torch.as_tensor(np.asarray(state.style, dtype=np.float32))[None].to(self.device, self.dtype)
        z_T = state.z_T.to(self.device, self.dtype)
        denoiser, scheduler = self.sampler(cfg)

        def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return denoiser(x, t, cond, s)

        if style_at is not None:
            calls = [0]  # sample_loop calls model_fn once per step: the count is the step index

            def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                s_i = torch.as_tensor(np.asarray(style_at(calls[0]), dtype=np.float32))[None]
                calls[0] += 1
                return denoiser(x, t, cond, s_i.to(self.device, self.dtype))

        if wrap is not None:
            model_fn = wrap(state, model_fn)

        def on_step(step: int, total: int, z0: torch.Tensor) -> None:
            preview = None
            if step % max(preview_every, 1) == 0 and step < total:
                preview = self.decode(z0)[0]
            callback(step, total, preview)

        # the start follows the s of the first step (a style edit over later steps leaves the start as it was)
        s_start = s if style_at is None else torch.as_tensor(np.asarray(style_at(0), dtype=np.float32))[None]
        if start_style is not None:
            s_start = torch.as_tensor(np.asarray(start_style, dtype=np.float32))[None]
        z0 = sample_loop(
            model_fn,
            scheduler,
            z_T,
            cfg["steps"],
            generator=g,
            eta=cfg["eta"],
            callback=on_step if callback is not None else None,
            z_mean=self.start_mean(cond, s_start.to(self.device, self.dtype)),
        )
        return GenerationState(state.pose, state.seed, state.style, state.z_T, dict(cfg), z0.float().cpu())

    @torch.no_grad()
    def style_from_image(self, image: Image.Image, detector: Any = None) -> np.ndarray:
        """The style code s of the character in a picture (the style encoder's posterior mean), as `style=` takes
        it; InputError when the detector (`models.detector.load_detector(detector)`) finds no figure in it."""
        from models.detector import MIN_FIGURE_CONFIDENCE, load_detector

        if self.style_encoder is None:
            raise InputError("This model has no style encoder, so it cannot take a look from a picture.")
        if load_detector(detector).figure_confidence([image])[0] < MIN_FIGURE_CONFIDENCE:
            raise InputError(NO_FIGURE)
        # as the encoder saw its training images: a square frame at the model's size (its input_size resizes further)
        square = pad_to_square(image)[0].resize((self.native_size, self.native_size), Image.BOX)
        encoder = self.style_encoder
        mu, _ = encoder(from_pil([square]).to(encoder.device, encoder.dtype))
        return mu[0].float().cpu().numpy()

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> list[Image.Image]:
        """Scaled latents `(B, C, h, w)` -> PIL images."""
        return to_pil(ae_decode(self.vae, latent.to(self.device, self.dtype)))

    def picture(self, state: GenerationState, image: Image.Image | None = None) -> Image.Image:
        """A finished state's picture: its decoded z_0 (or `image`, already decoded), redrawn by the upscale pass when
        the folder has one and the state is at the native size; a preview (a draft, or the few-step student's) stays
        as decoded."""
        image = self.decode(state.z_0)[0] if image is None else image
        cfg = state.settings
        if self.upscaler is None or cfg.get("fast") or cfg.get("draft") or cfg.get("size") != self.native_size:
            return image
        return upscale(self.upscaler, image, state.pose, state.seed, self.upscale_settings)

    def render(
        self,
        state: GenerationState,
        callback: Callback | None = None,
        style_at: Callable[[int], np.ndarray] | None = None,
        start_style: np.ndarray | None = None,
        wrap: Wrap | None = None,
    ) -> tuple[list[Image.Image], GenerationState]:
        """Re-render a state (e.g. `state.with_style(s)`): same noise and pose give the same pixels (`denoise`'s
        `style_at`, `start_style` and `wrap`)."""
        done = self.denoise(state, callback, style_at=style_at, start_style=start_style, wrap=wrap)
        return [self.picture(done)], done

    # -- the one way to run it ---------------------------------------------------------------------
    def __call__(
        self,
        pose: Pose,
        seed: int,
        steps: int = DEFAULT_STEPS,
        guidance: float = 2.0,
        sampler: str = DEFAULT_SAMPLER,
        style: Any = None,
        eta: float = 0.0,
        num_images: int = 1,
        callback: Callback | None = None,
        size: int | None = None,
        wrap: Wrap | None = None,
        fast: bool = False,
        draft: bool = False,
    ) -> tuple[list[Image.Image], list[GenerationState]]:
        """Draw `num_images` characters in `pose`; image i uses seed `seed + i` (`wrap`: `render`'s; `fast`: the
        few-step student, 1 to MAX_FAST_STEPS steps; `draft`: without the upscale pass). Returns images and states."""
        return generate(
            self, pose=pose, seed=seed, num_images=num_images, callback=callback, wrap=wrap, steps=steps,
            guidance=guidance, sampler=sampler, style=style, eta=eta, size=size, fast=fast, draft=draft,
        )  # fmt: skip
