"""The back-end contract: what `PosePipeline`, `ForkPipeline` and `ControlNetBackend` each offer, called by keyword.

    backend = models.backends.load_backend("weights")            # any of the three
    backend.CAPABILITIES                                         # Capabilities: what it offers, as data
    backend.check_inputs(pose=pose, seed=0, steps=8, guidance=2.0, sampler="ddim", style=None, eta=0.0,
                         num_images=1, size=backend.native_size)  # InputError with one sentence, or None
    state = backend.prepare(pose=pose, seed=0, steps=8, guidance=2.0, sampler="ddim")   # z_T (and s) from the seed
    images, done = backend.render(state, callback, wrap=wrap)    # the same state gives the same pixels
    images, states = backend(pose, seed=0, steps=8)              # check, prepare and render num_images seeds

Every back end takes the same names in the same order (pose, seed, steps, guidance, sampler, style, eta,
num_images or size); its own extras are keyword-only with defaults (ControlNet's prompt, negative_prompt,
controlnet_scale). A back end refuses, with one sentence, what it lacks: a style code on the fork, a guidance
scale it cannot honour. `wrap(state, model_fn) -> model_fn` wraps the denoiser `model_fn(z_t, t)` for one
render, as k-diffusion's model wrappers do (CLIP guidance: `models.clip_guidance`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from models.pose import Pose
    from models.state import GenerationState

# model_fn(z_t, t) -> the model's output (noise, v): the denoiser `models.samplers.sample_loop` steps with.
ModelFn = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]
# wrap(state, model_fn) -> model_fn: a wrapper around the denoiser for one render (k-diffusion's model wrappers).
Wrap = Callable[["GenerationState", ModelFn], ModelFn]
# callback(step, total, preview_image or None): after every sampler step, a preview every few steps.
Callback = Callable[[int, int, "Image.Image | None"], None]


@dataclass(frozen=True)
class Capabilities:
    """What a back end offers beyond check / prepare / render, as data: the app shows the controls of what is
    offered and refuses the rest with one sentence. `names` lists the offered features ("style", "sefa",
    "refine_latent", ...) and `"sefa" in caps` tests one."""

    max_steps: int  # sampler steps, 1 to this
    max_guidance: float | None  # classifier-free guidance from 0 to this; None: no unconditional branch, ignored
    style_code: bool = False  # a style code s (`GenerationState.style`; style sliders, `render(style_at=...)`)
    directions: tuple[str, ...] = ()  # style-code directions (`models.directions`: "sefa", "ganspace")
    refine: tuple[str, ...] = ()  # CLIP refinement modes (`models.refine`: "style", "latent")
    prompt: bool = False  # a text prompt and negative prompt (Stable Diffusion)
    hspace: bool = False  # h-space directions of the UNet's bottleneck (`models.hspace`)
    clip_guidance: bool = False  # CLIP-guided sampling through `render(wrap=...)` (`models.clip_guidance`)
    fast: bool = False  # a few-step student for previews (`fast=True`: `models.pipeline`, `training.train_distill`)

    @property
    def names(self) -> frozenset[str]:
        """The offered features by name, as the app and the command line test them ("style", "refine_latent", ...)."""
        flags = {
            "guidance": self.max_guidance is not None,
            "style": self.style_code,
            "prompt": self.prompt,
            "hspace": self.hspace,
            "clip_guidance": self.clip_guidance,
            "fast": self.fast,
        }
        named = [*self.directions, *(f"refine_{mode}" for mode in self.refine)]
        return frozenset([name for name, on in flags.items() if on] + named)

    def __contains__(self, name: object) -> bool:
        """Whether the feature `name` (one of `names`) is offered."""
        return name in self.names


@runtime_checkable
class Backend(Protocol):
    """The calls every back end answers, by keyword; `models.backends.load_backend` picks one."""

    CAPABILITIES: ClassVar[Capabilities]
    native_size: int  # the side in pixels the model was trained at (the default size)
    size_multiple: int  # sizes are multiples of this, up to 4 x native_size

    def check_inputs(
        self,
        *,
        pose: Pose,
        seed: int,
        steps: int,
        guidance: float | None,
        sampler: str,
        style: Any,
        eta: float,
        num_images: int,
        size: int,
    ) -> None:
        """Raise InputError with one sentence for any input the back end cannot honour."""

    def prepare(
        self,
        *,
        pose: Pose,
        seed: int,
        steps: int = ...,
        guidance: float | None = ...,
        sampler: str = ...,
        style: Any = None,
        eta: float = 0.0,
        size: int | None = None,
    ) -> GenerationState:
        """The state of one image before sampling: its noise (and style code) drawn from `seed`."""

    def render(
        self,
        state: GenerationState,
        callback: Callback | None = None,
        *,
        wrap: Wrap | None = None,
        style_at: Callable[[int], Any] | None = None,
    ) -> tuple[list[Image.Image], GenerationState]:
        """Sample and decode a state; `wrap` wraps its model_fn, `style_at(step)` is the s of each step."""

    def __call__(
        self,
        pose: Pose,
        seed: int,
        *,
        steps: int = ...,
        guidance: float | None = ...,
        sampler: str = ...,
        style: Any = None,
        eta: float = 0.0,
        num_images: int = 1,
        callback: Callback | None = None,
        size: int | None = None,
        wrap: Wrap | None = None,
    ) -> tuple[list[Image.Image], list[GenerationState]]:
        """Check, prepare and render `num_images` images (image i from seed `seed + i`)."""


def refuse_style_at(style_at: Any, what: str) -> None:
    """Raise InputError when a back end without a style code is given a per-step style (`render(style_at=...)`)."""
    if style_at is not None:
        from models.errors import InputError

        raise InputError(f"{what} has no style code, so there is no style to change over a range of steps.")


# -- reaching a model: shared by the back ends' loaders ------------------------------------------------
def is_offline() -> bool:
    """Whether HF_HUB_OFFLINE is set (read now, and as huggingface_hub read it at import)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:  # noqa: BLE001 -- no huggingface_hub: nothing is offline because nothing is online
        return False


def unreachable(name: str, what: str = "model") -> str:
    """The sentence for a name that is neither a local path nor a Hub repository we can read."""
    if is_offline():
        return (
            f"The {what} {name} is not a local folder and not in the Hub cache, "
            "and HF_HUB_OFFLINE=1 keeps the Hub out of reach."
        )
    return f"The {what} {name} is neither a local folder nor a reachable Hub repository."
