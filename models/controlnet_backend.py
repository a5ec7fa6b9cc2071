"""Stable Diffusion 1.x + an OpenPose ControlNet with PosePipeline's call: our pose, drawn the OpenPose way, is
the control image.

    backend = ControlNetBackend.from_pretrained("an/sd15-anime-model", "lllyasviel/control_v11p_sd15_openpose")
    images, states = backend(pose, seed=0, prompt="1girl, red dress", negative_prompt="lowres", guidance=7.5)

The components come from diffusers (`StableDiffusionControlNetPipeline.from_pretrained`); the denoising loop is
ours (`models.samplers.sample_loop`, as PosePipeline's), so CLIP guidance wraps the same `model_fn(z_t, t)` for
every back end. Classifier-free guidance over the prompt (Ho & Salimans 2022, Eq. 6), with the ControlNet's
residuals added to both branches as diffusers' pipeline does:
    eps = eps(z_t, t, c_neg, pose) + g * (eps(z_t, t, c, pose) - eps(z_t, t, c_neg, pose))
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

from models.backend import (
    DEFAULT_SAMPLER,
    Callback,
    Capabilities,
    GenerationState,
    ModelFn,
    NoStyleBackend,
    Wrap,
    default_device,
    generate,
    is_offline,
    model_sizes,
    state_settings,
    unreachable,
)
from models.errors import InputError
from models.pose import Pose

DEFAULT_PROMPT = "1girl, solo, full body, anime style, best quality"
DEFAULT_NEGATIVE = "lowres, bad anatomy, bad hands, extra limbs, missing fingers, worst quality, low quality, blurry"
DEFAULT_GUIDANCE = 7.5
MAX_STEPS = 200
MAX_GUIDANCE = 30.0
MAX_PROMPT_CHARS = 2000
# SD 1.x latent -> RGB, a linear fit (the common "cheap approximation" preview): no VAE pass per preview.
LATENT_RGB = ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264), (-0.184, -0.271, -0.473))
DEFAULT_STEPS = 20


def control_image(pose: Pose, size: int) -> Image.Image:
    """The ControlNet input: the OpenPose drawing of the pose framed as PosePipeline frames it (same output_pose)."""
    from models.condition import openpose_drawing
    from models.pipeline import frame_pose

    return openpose_drawing(frame_pose(pose, size), size, size)


def latent_preview(latent: torch.Tensor, size: int) -> Image.Image:
    """A quick RGB look at an SD latent `(1, 4, h, w)` (a linear map, not the VAE), resized to `size`."""
    rgb = torch.einsum("chw,cr->rhw", latent[0].float().cpu(), torch.tensor(LATENT_RGB))
    arr = ((rgb.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(arr).resize((size, size), Image.BILINEAR)


def _load(what: str, name: str, load: Callable[[], Any]) -> Any:
    """Run a diffusers loader; any failure becomes one sentence naming `what` and `name`."""
    try:
        return load()
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 -- missing files, offline Hub, wrong layout: one sentence each
        if os.path.isdir(name):
            raise InputError(f"The {what} folder {name} is not a diffusers {what} ({type(err).__name__}).") from None
        raise InputError(unreachable(name, what)) from None


class ControlNetBackend(NoStyleBackend):
    """Stable Diffusion + an OpenPose ControlNet: a `models.backend.Backend` with a prompt and a negative prompt."""

    CAPABILITIES = Capabilities(max_steps=MAX_STEPS, max_guidance=MAX_GUIDANCE, prompt=True, clip_guidance=True)
    NAME = "Stable Diffusion"
    NO_STYLE = "Stable Diffusion has no style code; describe the character in the prompt instead."

    def __init__(self, pipe: Any, device: str | torch.device | None = None):
        self.pipe = pipe
        self.device = default_device(device)
        self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        self.vae, self.unet, self.controlnet = pipe.vae, pipe.unet, pipe.controlnet
        for module in (self.vae, self.unet, self.controlnet, pipe.text_encoder):
            module.eval().requires_grad_(False)
        self.dtype = self.unet.dtype
        self.scheduler_config = pipe.scheduler.config
        self.latent_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.native_size, self.size_multiple = model_sizes(self.latent_factor, self.unet.config)

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike,
        controlnet: str | os.PathLike,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> ControlNetBackend:
        """Load a diffusers SD 1.x folder or Hub id and an OpenPose ControlNet folder or Hub id."""
        from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

        offline = {"local_files_only": True} if is_offline() else {}
        device = default_device(device)
        dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
        model, controlnet = str(model), str(controlnet)
        cn = _load(
            "ControlNet", controlnet, lambda: ControlNetModel.from_pretrained(controlnet, dtype=dtype, **offline)
        )
        pipe = _load(
            "model",
            model,
            lambda: StableDiffusionControlNetPipeline.from_pretrained(model, controlnet=cn, dtype=dtype, **offline),
        )
        if cn.config.cross_attention_dim != pipe.unet.config.cross_attention_dim:
            raise InputError(
                f"The ControlNet {controlnet} was made for another base model (text width "
                f"{cn.config.cross_attention_dim}, the model's {pipe.unet.config.cross_attention_dim})."
            )
        return cls(pipe, device=device)

    # -- checks (the common ones: NoStyleBackend's) --------------------------------------------------
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
        prompt: str = DEFAULT_PROMPT,
        negative_prompt: str = DEFAULT_NEGATIVE,
        controlnet_scale: float = 1.0,
    ) -> None:
        """Raise InputError with one sentence for any input the back end cannot honour."""
        super().check_inputs(
            pose=pose, seed=seed, steps=steps, guidance=guidance, sampler=sampler, style=style, eta=eta,
            num_images=num_images, size=size,
        )  # fmt: skip
        for name, text in (("prompt", prompt), ("negative prompt", negative_prompt)):
            if not isinstance(text, str) or len(text) > MAX_PROMPT_CHARS:
                raise InputError(f"The {name} must be text of at most {MAX_PROMPT_CHARS} characters.")
        if not isinstance(controlnet_scale, (int, float)) or not 0 <= controlnet_scale <= 2:
            raise InputError("The ControlNet scale must be a number from 0 to 2.")

    # -- building blocks (shared with CLIP guidance); denoise and render: NoStyleBackend's --------------
    @torch.no_grad()
    def text_embeddings(self, prompt: str, negative_prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The CLIP text encoder's states for the prompt and the negative prompt, `(1, 77, d)` each."""
        cond, uncond = self.pipe.encode_prompt(prompt, self.device, 1, True, negative_prompt=negative_prompt)
        return cond, uncond

    def control_tensor(self, pose: Pose, size: int) -> torch.Tensor:
        """The control image as the ControlNet reads it: `(1, 3, size, size)` in [0, 1]."""
        arr = np.asarray(control_image(pose, size), dtype=np.float32) / 255.0
        return torch.from_numpy(arr).permute(2, 0, 1)[None].to(self.device, self.dtype)

    def prepare(
        self,
        pose: Pose,
        seed: int,
        steps: int = DEFAULT_STEPS,
        guidance: float = DEFAULT_GUIDANCE,
        sampler: str = DEFAULT_SAMPLER,
        style: Any = None,
        eta: float = 0.0,
        size: int | None = None,
        *,
        prompt: str = DEFAULT_PROMPT,
        negative_prompt: str = DEFAULT_NEGATIVE,
        controlnet_scale: float = 1.0,
    ) -> GenerationState:
        """The state of one image before sampling: z_T drawn from `seed` (no style code); the prompt lives in the
        settings."""
        prompts = {"prompt": prompt, "negative_prompt": negative_prompt, "controlnet_scale": float(controlnet_scale)}
        return self.noise_state(
            pose, seed, state_settings(steps, guidance, sampler, eta, size or self.native_size, **prompts)
        )

    def predict(
        self,
        z_t: torch.Tensor,
        t: torch.Tensor,
        text: torch.Tensor,
        control: torch.Tensor,
        scale: float,
    ) -> torch.Tensor:
        """eps(z_t, t, text, pose): the ControlNet's residuals added into the UNet (differentiable)."""
        b = z_t.shape[0]
        text, control = text.expand(b, -1, -1), control.expand(b, -1, -1, -1)
        down, mid = self.controlnet(
            z_t, t, encoder_hidden_states=text, controlnet_cond=control, conditioning_scale=scale, return_dict=False
        )
        return self.unet(
            z_t, t, encoder_hidden_states=text, down_block_additional_residuals=down, mid_block_additional_residual=mid
        ).sample

    def model_fn(self, state: GenerationState) -> ModelFn:
        """`model_fn(z_t, t)` for `sample_loop`: the guided noise prediction for the state's pose and prompt."""
        cfg = state.settings
        cond, uncond = self.text_embeddings(cfg["prompt"], cfg["negative_prompt"])
        control = self.control_tensor(state.pose, cfg["size"])
        g, scale = cfg["guidance"], cfg["controlnet_scale"]

        def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if g == 1.0:
                return self.predict(x, t, cond, control, scale)
            b = x.shape[0]
            out = self.predict(
                torch.cat([x, x]), t, torch.cat([uncond.expand(b, -1, -1), cond.expand(b, -1, -1)]), control, scale
            )
            u, c = out[:b], out[b:]
            return u + g * (c - u)

        return model_fn

    def decode_tensor(self, latent: torch.Tensor) -> torch.Tensor:
        """z_0 -> images in [-1, 1] through the SD VAE (differentiable)."""
        latent = latent.to(self.device, self.dtype) / self.vae.config.scaling_factor
        return self.vae.decode(latent).sample

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> list[Image.Image]:
        """z_0 -> PIL images, through the model's safety checker when it has one (flagged images come back black)."""
        images = self.decode_tensor(latent)
        images, _ = self.pipe.run_safety_checker(images, self.device, self.dtype)
        arr = ((images.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(a) for a in arr]

    def preview(self, latent: torch.Tensor, size: int) -> Image.Image:
        """The callback's look at a z_0 estimate: `latent_preview`, no VAE pass."""
        return latent_preview(latent, size)

    # -- the one way to run it ---------------------------------------------------------------------
    def __call__(
        self,
        pose: Pose,
        seed: int,
        steps: int = DEFAULT_STEPS,
        guidance: float | None = None,
        sampler: str = DEFAULT_SAMPLER,
        style: Any = None,
        eta: float = 0.0,
        num_images: int = 1,
        callback: Callback | None = None,
        size: int | None = None,
        wrap: Wrap | None = None,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        controlnet_scale: float = 1.0,
    ) -> tuple[list[Image.Image], list[GenerationState]]:
        """Draw `num_images` characters in `pose` (seed + i each); prompts default to an anime character."""
        # None picks the defaults
        guidance = DEFAULT_GUIDANCE if guidance is None else guidance
        prompt = DEFAULT_PROMPT if prompt is None else prompt
        negative_prompt = DEFAULT_NEGATIVE if negative_prompt is None else negative_prompt
        return generate(
            self, pose=pose, seed=seed, num_images=num_images, callback=callback, wrap=wrap, steps=steps,
            guidance=guidance, sampler=sampler, style=style, eta=eta, size=size, prompt=prompt,
            negative_prompt=negative_prompt, controlnet_scale=controlnet_scale,
        )  # fmt: skip
