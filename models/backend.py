"""The back-end contract: what `PosePipeline`, `ForkPipeline` and `ControlNetBackend` each offer, called by keyword.

    backend = models.backends.load_backend("weights")            # any of the three
    backend.CAPABILITIES                                         # Capabilities: what it offers, as data
    backend.check_inputs(pose=pose, seed=0, steps=8, guidance=2.0, sampler="ddim", style=None, eta=0.0,
                         num_images=1, size=backend.native_size)  # InputError with one sentence, or None
    state = backend.prepare(pose=pose, seed=0, steps=8, guidance=2.0, sampler="ddim")   # z_T (and s) from the seed
    images, done = backend.render(state, callback, wrap=wrap)    # the same state gives the same pixels
    images, states = backend(pose, seed=0, steps=8)              # check, prepare and render num_images seeds

A `GenerationState` (pose, seed, s, z_T, settings, z_0) is what a back end prepares and renders; the input checks
(`check_common`, `check_size`, ...) are pure functions every back end calls with its own limits.

Every back end takes the same names in the same order (pose, seed, steps, guidance, sampler, style, eta,
num_images or size); its own extras are keyword-only with defaults (ControlNet's prompt, negative_prompt,
controlnet_scale). A back end refuses, with one sentence, what it lacks: a style code on the fork, a guidance
scale it cannot honour. `wrap(state, model_fn) -> model_fn` wraps the denoiser `model_fn(z_t, t)` for one
render, as k-diffusion's model wrappers do (CLIP guidance: `models.clip_guidance`).

Heavy modules (torch, diffusers) are imported inside the helpers: `models.backends` picks a back end without them.
"""

from __future__ import annotations

import json
import math
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from models.errors import InputError, OutputError
from models.pose import Pose

if TYPE_CHECKING:
    import torch
    from PIL import Image

# model_fn(z_t, t) -> the model's output (noise, v): the denoiser `models.samplers.sample_loop` steps with.
ModelFn = Callable[["torch.Tensor", "torch.Tensor"], "torch.Tensor"]
# wrap(state, model_fn) -> model_fn: a wrapper around the denoiser for one render (k-diffusion's model wrappers).
Wrap = Callable[["GenerationState", ModelFn], ModelFn]
# callback(step, total, preview_image or None): after every sampler step, a preview every few steps.
Callback = Callable[[int, int, "Image.Image | None"], None]
PREVIEW_EVERY = 5  # decode (or approximate) the z_0 estimate for the callback every this many steps
SAMPLER_NAMES = ("dpmpp_2m", "euler_a", "ddim")  # every back end takes them by name (`models.samplers`); default first
DEFAULT_SAMPLER = SAMPLER_NAMES[0]


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
    clip_guidance: bool = False  # CLIP-guided sampling through `render(wrap=...)` (`models.clip_guidance`)
    fast: bool = False  # a few-step student for previews (`fast=True`: `models.pipeline`, `training.train_distill`)
    upscale: bool = False  # an upscale pass draws finished pictures larger (`models.upscale`; not `draft=True`)

    @property
    def names(self) -> frozenset[str]:
        """The offered features by name, as the app and the command line test them ("style", "refine_latent", ...)."""
        flags = {
            "guidance": self.max_guidance is not None,
            "style": self.style_code,
            "prompt": self.prompt,
            "clip_guidance": self.clip_guidance,
            "fast": self.fast,
            "upscale": self.upscale,
        }
        named = [*self.directions, *(f"refine_{mode}" for mode in self.refine)]
        return frozenset([name for name, on in flags.items() if on] + named)

    def __contains__(self, name: object) -> bool:
        """Whether the feature `name` (one of `names`) is offered."""
        return name in self.names


@runtime_checkable
class Backend(Protocol):
    """The calls every back end answers, by keyword; `models.backends.load_backend` picks one. The parameters are
    each back end's own to spell out (the module docstring's names, in that order, with its defaults and extras)."""

    CAPABILITIES: ClassVar[Capabilities]
    native_size: int  # the side in pixels the model was trained at (the default size)
    size_multiple: int  # sizes are multiples of this, up to 4 x native_size

    def check_inputs(self, **inputs: Any) -> None:
        """Raise InputError with one sentence for any input (pose, seed, ..., num_images, size) it cannot honour."""

    def prepare(self, **settings: Any) -> GenerationState:
        """The state of one image before sampling (check_inputs' names but num_images): its noise from `seed`."""

    def render(self, state: GenerationState, callback: Callback | None = None, **options: Any) -> tuple[list, Any]:
        """Sample and decode a state; `wrap=` wraps its model_fn, `style_at(step)` (style codes only): each step's s."""

    def __call__(self, pose: Pose, seed: int, **settings: Any) -> tuple[list[Image.Image], list[GenerationState]]:
        """Check, prepare and render `num_images` images (image i from seed `seed + i`): `generate`."""


# -- shared by the back ends' constructors, checks and calls -------------------------------------------
def default_device(device: str | torch.device | None) -> torch.device:
    """`device`, or cuda when there is one, else the CPU."""
    import torch

    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def model_sizes(latent_factor: int, unet_config: Any) -> tuple[int, int]:
    """(native_size, size_multiple): the UNet's sample size in pixels, and the multiple its halvings divide evenly."""
    native_size = int(unet_config.sample_size) * latent_factor
    return native_size, latent_factor * 2 ** (len(unet_config.block_out_channels) - 1)


def check_style_code(style: Any, style_dim: int) -> None:
    """A style code, when given, is `style_dim` finite numbers."""
    if style is not None:
        arr = np.asarray(style, dtype=np.float64)
        if arr.shape != (style_dim,) or not np.isfinite(arr).all():
            raise InputError(f"The style code must be {style_dim} finite numbers.")


def state_settings(steps: int, guidance: float, sampler: str, eta: float, size: int, **extras: Any) -> dict:
    """A state's settings: the common ones as plain numbers, in this order, then the back end's own."""
    common = {"steps": int(steps), "guidance": float(guidance), "sampler": sampler, "eta": float(eta)}
    return {**common, "size": int(size), **extras}


def generate(
    backend: Any,
    *,
    pose: Pose,
    seed: int,
    num_images: int,
    callback: Callback | None,
    wrap: Wrap | None = None,
    **settings: Any,
) -> tuple[list[Image.Image], list[GenerationState]]:
    """Every back end's `__call__`: check the inputs, then prepare and render image i from seed `seed + i`
    (`settings`: prepare's; size None: the native size); `callback` counts the steps of all images as one run."""
    if settings.get("size") is None:
        settings["size"] = backend.native_size
    backend.check_inputs(pose=pose, seed=seed, num_images=num_images, **settings)
    options = {"wrap": wrap} if wrap is not None else {}  # the UI's stand-in has no denoiser to wrap
    images: list[Image.Image] = []
    states: list[GenerationState] = []
    for i in range(num_images):
        state = backend.prepare(pose=pose, seed=int(seed) + i, **settings)
        each = None
        if callback is not None:

            def each(step: int, total: int, preview: Image.Image | None, i: int = i) -> None:
                callback(i * total + step, num_images * total, preview)

        image, done = backend.render(state, each, **options)
        images += image
        states.append(done)
    return images, states


class NoStyleBackend:
    """What the back ends without a style code share (`ForkPipeline`, `ControlNetBackend`): the checks, a state that
    is z_T alone, the sampling loop and render. A subclass sets the attributes below and gives `model_fn(state)`
    and `decode(z_0)` (and a cheaper `preview(z_0, size)` where it has one)."""

    CAPABILITIES: ClassVar[Capabilities]
    NAME: ClassVar[str]  # the back end in a sentence ("Stable Diffusion")
    NO_STYLE: ClassVar[str]  # the sentence that refuses a style code
    device: torch.device
    dtype: torch.dtype
    unet: Any  # a diffusers UNet2DConditionModel
    scheduler_config: Any  # the training DDPMScheduler's config, which every sampler is built from
    latent_factor: int  # pixels per latent cell
    native_size: int
    size_multiple: int

    def check_inputs(
        self,
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
        """Raise InputError with one sentence for any input the back end cannot honour (any style code)."""
        limits = {"max_steps": self.CAPABILITIES.max_steps, "max_guidance": self.CAPABILITIES.max_guidance}
        check_common(pose, seed, steps, guidance, sampler, eta, num_images, **limits)
        check_size(size, self.size_multiple, self.native_size)
        if style is not None and np.asarray(style).size:
            raise InputError(self.NO_STYLE)

    def noise_state(self, pose: Pose, seed: int, settings: dict[str, Any]) -> GenerationState:
        """The state of one image before sampling: z_T drawn from `seed` at `settings["size"]`, no style code."""
        import torch

        side = settings["size"] // self.latent_factor
        g = torch.Generator("cpu").manual_seed(int(seed))
        z_T = torch.randn((1, self.unet.config.in_channels, side, side), generator=g, dtype=torch.float32)
        return GenerationState(pose, int(seed), np.zeros(0, np.float32), z_T, settings)

    def denoise(
        self, state: GenerationState, callback: Callback | None = None, model_fn: ModelFn | None = None
    ) -> GenerationState:
        """Sample z_0 for a state; `model_fn` replaces the back end's own (e.g. a CLIP-guided wrapper)."""
        import torch

        from models.samplers import make_scheduler, sample_loop

        cfg = state.settings
        g = torch.Generator("cpu").manual_seed(state.seed)
        torch.randn(tuple(state.z_T.shape), generator=g)  # advance past z_T, as prepare drew it
        scheduler = make_scheduler(cfg["sampler"], self.scheduler_config)

        def on_step(step: int, total: int, z0: torch.Tensor) -> None:
            callback(step, total, self.preview(z0, cfg["size"]) if step % PREVIEW_EVERY == 0 and step < total else None)

        with torch.no_grad():
            z0 = sample_loop(
                model_fn or self.model_fn(state),
                scheduler,
                state.z_T.to(self.device, self.dtype),
                cfg["steps"],
                generator=g,
                eta=cfg["eta"],
                callback=on_step if callback is not None else None,
            )
        return GenerationState(state.pose, state.seed, state.style, state.z_T, dict(cfg), z0.float().cpu())

    def render(
        self,
        state: GenerationState,
        callback: Callback | None = None,
        wrap: Wrap | None = None,
        style_at: Callable[[int], Any] | None = None,
    ) -> tuple[list[Image.Image], GenerationState]:
        """Re-render a state (the same noise and settings give the same pixels); `wrap` wraps its model_fn (CLIP
        guidance); a `style_at` is refused (no style code)."""
        if style_at is not None:
            raise InputError(f"{self.NAME} has no style code, so there is no style to change over a range of steps.")
        done = self.denoise(state, callback, wrap(state, self.model_fn(state)) if wrap is not None else None)
        return self.decode(done.z_0), done

    def model_fn(self, state: GenerationState) -> ModelFn:
        """`model_fn(z_t, t)` for `sample_loop`, conditioned as the state says (the subclass's)."""
        raise NotImplementedError

    def decode(self, latent: torch.Tensor) -> list[Image.Image]:
        """z_0 -> PIL images (the subclass's)."""
        raise NotImplementedError

    def preview(self, latent: torch.Tensor, size: int) -> Image.Image:
        """The callback's look at a z_0 estimate, `size` pixels square: decoded, as the final image is."""
        return self.decode(latent)[0]


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


# -- reading a checkpoint file (tensors only): the fork's, and what the picker reads to tell it apart --------
CHECKPOINT_SUFFIXES = (".ckpt", ".safetensors", ".pt", ".pth", ".bin")


class _Ignored:
    """Stands in for a non-tensor object a Lightning checkpoint pickles (callbacks); never runs its code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


# Lightning writes its ModelCheckpoint callback's class into `callbacks`; it is data we skip, not code we run.
_STUB_GLOBALS = [
    (_Ignored, "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"),
    (_Ignored, "lightning.pytorch.callbacks.model_checkpoint.ModelCheckpoint"),
]


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a `.safetensors` file or a torch checkpoint read with `weights_only=True` (its "state_dict")."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(f"The checkpoint {path} does not exist.")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # noqa: BLE001 -- a bad header is the user's file, not our bug
            raise InputError(f"{path.name} is not a readable safetensors file ({type(err).__name__}).") from None
    not_one = InputError(f"{path.name} is not a checkpoint (neither safetensors nor a torch file).")
    with path.open("rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # torch's zip format, or a legacy pickle
        raise not_one
    try:
        with torch.serialization.safe_globals(_STUB_GLOBALS):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        names = _unsafe_globals(path)
        what = f" ({', '.join(names[:3])})" if names else ""
        if "weights_only" in str(err) or names:
            raise InputError(
                f"{path.name} pickles Python objects besides tensors{what}, which are not loaded for safety; "
                "convert it to .safetensors."
            ) from None
        raise not_one from None
    except Exception:  # noqa: BLE001 -- truncated files, text files, zip errors: all "not a checkpoint"
        raise not_one from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise InputError(f"{path.name} holds a {type(obj).__name__}, not a state dict of tensors.")
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise InputError(f"{path.name} holds no tensors.")
    return tensors


def _unsafe_globals(path: Path) -> list[str]:
    """The pickled globals that keep `weights_only=True` from reading the file (empty when it cannot tell)."""
    import torch

    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # noqa: BLE001 -- only zip-format checkpoints can be listed
        return []


# -- the state every back end prepares and renders -----------------------------------------------------------
@dataclass
class GenerationState:
    """Everything needed to re-render one image exactly (pose, seed, s, z_T, settings, z_0).

    Kept in `gr.State`, so a style slider or a CLIP refinement re-renders from the same noise and pose without
    redoing the rest; `to_json()` holds only plain values (the tensors stay in the object)."""

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
        s = np.asarray(style, dtype=np.float32).copy()
        return GenerationState(self.pose, self.seed, s, self.z_T, dict(self.settings), None)


# -- the input checks every back end shares: pure functions that raise InputError with one sentence -
MAX_IMAGES = 8  # images per call, the same for every back end
MAX_SEED = 2**63 - 1 - MAX_IMAGES  # image i of a call uses seed + i, which must stay a 64-bit seed


def is_whole(value: Any) -> bool:
    """An int (numpy ints too), not a bool."""
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def check_pose(pose: Any) -> None:
    """A `Pose` with at least one visible keypoint."""
    if not isinstance(pose, Pose):
        raise InputError("The pose must be a models.pose.Pose.")
    if not pose.visible.any():
        raise InputError("The pose has no visible keypoint to draw.")


def check_seed(seed: Any) -> None:
    """A whole number from 0 to MAX_SEED."""
    if not is_whole(seed) or not 0 <= int(seed) <= MAX_SEED:
        raise InputError(f"The seed must be a whole number from 0 to {MAX_SEED}.")


def check_steps(steps: Any, max_steps: int) -> None:
    """A whole number of sampler steps from 1 to `max_steps`."""
    if not is_whole(steps) or not 1 <= steps <= max_steps:
        raise InputError(f"The number of steps must be a whole number from 1 to {max_steps}.")


def check_guidance(guidance: Any, max_guidance: float | None) -> None:
    """A finite number from 0 to `max_guidance`; with `max_guidance` None, None or any finite number."""
    if max_guidance is None:  # the fork has no unconditional branch: its guidance is ignored, not bounded
        if guidance is not None and (not isinstance(guidance, (int, float)) or not math.isfinite(guidance)):
            raise InputError("The guidance scale must be a number.")
    elif not isinstance(guidance, (int, float)) or not math.isfinite(guidance) or not 0 <= guidance <= max_guidance:
        raise InputError(f"The guidance scale must be a number from 0 to {max_guidance:g}.")


def check_finite(states: list[Any]) -> None:
    """Refuse a result whose final latent is not finite: it would decode to a black image shown as a success."""
    import torch

    for state in states:
        z = getattr(state, "z_0", None)
        if isinstance(z, torch.Tensor) and not bool(torch.isfinite(z).all()):
            raise OutputError(
                "The model's output was not finite numbers, so there is no picture; "
                "try another seed, fewer steps or a smaller guidance."
            )


def check_sampler(sampler: Any) -> None:
    """One of SAMPLER_NAMES."""
    if sampler not in SAMPLER_NAMES:
        raise InputError(f"Unknown sampler {sampler!r}; choose one of {', '.join(SAMPLER_NAMES)}.")


def check_eta(eta: Any) -> None:
    """A number from 0 to 1."""
    if not isinstance(eta, (int, float)) or not math.isfinite(eta) or not 0 <= eta <= 1:
        raise InputError("eta must be a number from 0 to 1.")


def check_count(n: Any) -> None:
    """A whole number of images from 1 to MAX_IMAGES."""
    if not is_whole(n) or not 1 <= n <= MAX_IMAGES:
        raise InputError(f"The number of images must be from 1 to {MAX_IMAGES}.")


def check_size(size: Any, size_multiple: int, native_size: int) -> None:
    """A whole multiple of `size_multiple` from `size_multiple` to 4 x `native_size` pixels."""
    if not is_whole(size) or size % size_multiple or not size_multiple <= size <= 4 * native_size:
        raise InputError(
            f"The image size must be a multiple of {size_multiple} "
            f"up to {4 * native_size} pixels (the model draws {native_size})."
        )


def check_common(
    pose: Any,
    seed: Any,
    steps: Any,
    guidance: Any,
    sampler: Any,
    eta: Any,
    n: Any,
    *,
    max_steps: int,
    max_guidance: float | None,
) -> None:
    """The checks every back end runs first, in this order (then `check_size` and its own)."""
    check_pose(pose)
    check_seed(seed)
    check_steps(steps, max_steps)
    check_guidance(guidance, max_guidance)
    check_sampler(sampler)
    check_eta(eta)
    check_count(n)
