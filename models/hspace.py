"""GANSpace-style directions in a diffusion UNet's bottleneck ("h-space") for the back ends with no style code.

    space = fit_hspace(backend, pose, n_samples=32)                  # PCA of h_T over 32 seeds
    images, state = render_hspace(backend, state, space, {0: 2.0})  # +2 sigma along the first component

The output h of the UNet's middle block is a semantic latent space of a diffusion model (Kwon, Jeong & Uh,
ICLR 2023, "Diffusion Models Already Have a Semantic Latent Space"), and its principal components at the
first sampling step are interpretable global edits (Haas et al. 2023, "Discovering Interpretable Directions
in h-space"). As GANSpace (Härkönen et al. 2020) does for a GAN's activations:
  1. for N seeds, run the first sampling step and keep h_T (the mid-block's output, flattened);
  2. PCA of the N vectors: unit components v_k, their standard deviations sigma_k, explained-variance ratios;
  3. an edit adds delta = sum_k alpha_k sigma_k v_k to h at the first `share` of the sampling steps (Kwon et
     al. edit the early, coarse steps), before any ControlNet residual joins h.
With classifier-free guidance both branches get the same delta; h_T is read from the conditional branch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from models.errors import InputError
from models.samplers import make_scheduler
from models.state import GenerationState

MAX_COMPONENTS = 20
MAX_AMOUNT = 10.0  # in standard deviations along a component
DEFAULT_SHARE = 0.5


@dataclass
class HSpace:
    """Principal directions of h_T: `components` (K, C, h, w) of unit norm, `stdev` (K,), `var_ratio` (K,)."""

    components: torch.Tensor
    stdev: torch.Tensor
    var_ratio: torch.Tensor
    size: int  # the image size the directions were fitted at (h's grid depends on it)

    def get_components(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """GANSpace's estimator interface: (components, stdev, var_ratio)."""
        return self.components, self.stdev, self.var_ratio


def pca(x: torch.Tensor, n_components: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PCA of the rows of `x` (N, D) by SVD of the centred data: (components (K, D), stdev (K,), var_ratio (K,))."""
    centred = x.double() - x.double().mean(dim=0, keepdim=True)
    _, s, vt = torch.linalg.svd(centred, full_matrices=False)
    var = s**2 / max(x.shape[0] - 1, 1)
    k = min(n_components, vt.shape[0])
    return vt[:k].float(), var[:k].sqrt().float(), (var[:k] / var.sum().clamp_min(1e-30)).float()


@contextmanager
def capture_h(unet: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """Record every output of `unet.mid_block` (detached, float32, on the CPU) while the context is open."""
    seen: list[torch.Tensor] = []
    handle = unet.mid_block.register_forward_hook(lambda _m, _i, out: seen.append(out.detach().float().cpu()))
    try:
        yield seen
    finally:
        handle.remove()


@contextmanager
def shift_h(unet: torch.nn.Module, delta: torch.Tensor, active: Callable[[], bool]) -> Iterator[None]:
    """Add `delta` (1, C, h, w) to the mid-block's output whenever `active()` is true."""

    def hook(_m: Any, _i: Any, out: torch.Tensor) -> torch.Tensor | None:
        return out + delta.to(out.device, out.dtype) if active() else None

    handle = unet.mid_block.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def first_step_h(backend: Any, state: GenerationState) -> torch.Tensor:
    """h_T of one state: the mid-block's output (C, h, w) at the first sampling step, conditional branch."""
    scheduler = make_scheduler(state.settings["sampler"], backend.scheduler_config)
    scheduler.set_timesteps(state.settings["steps"])
    t = scheduler.timesteps[0]
    z = state.z_T.to(backend.device, backend.dtype) * scheduler.init_noise_sigma
    with torch.no_grad(), capture_h(backend.unet) as seen:
        backend.model_fn(state)(scheduler.scale_model_input(z, t), t)
    return seen[0][-1]  # the last row: the conditional branch under guidance, the only one otherwise


def fit_hspace(
    backend: Any,
    pose: Any,
    n_samples: int = 32,
    n_components: int = 10,
    seed: int = 0,
    size: int | None = None,
    **settings: Any,
) -> HSpace:
    """PCA of h_T over seeds `seed .. seed + n_samples - 1` for one pose (`settings`: the back end's prepare())."""
    if "hspace" not in getattr(backend, "CAPABILITIES", ()):
        raise InputError("This model has a style code: use its SeFa or GANSpace directions instead of h-space.")
    if not 2 <= n_samples <= 4096 or not 1 <= n_components <= MAX_COMPONENTS:
        raise InputError(f"h-space needs 2 to 4096 samples and 1 to {MAX_COMPONENTS} components.")
    size = size or backend.native_size
    rows = [first_step_h(backend, backend.prepare(pose, seed + i, size=size, **settings)) for i in range(n_samples)]
    components, stdev, ratio = pca(torch.stack(rows).flatten(1), n_components)
    return HSpace(components.reshape(len(components), *rows[0].shape), stdev, ratio, int(size))


def direction(space: HSpace, amounts: Mapping[int, float]) -> torch.Tensor:
    """delta = sum_k alpha_k sigma_k v_k, shaped (1, C, h, w)."""
    delta = torch.zeros_like(space.components[0])
    for k, alpha in amounts.items():
        if not isinstance(k, int) or not 0 <= k < len(space.components):
            raise InputError(f"There are {len(space.components)} h-space directions; {k} is not one of them.")
        if not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or abs(alpha) > MAX_AMOUNT:
            raise InputError(f"An h-space amount must be a number from -{MAX_AMOUNT:g} to {MAX_AMOUNT:g}.")
        delta = delta + float(alpha) * space.stdev[k] * space.components[k]
    return delta[None]


def render_hspace(
    backend: Any,
    state: GenerationState,
    space: HSpace,
    amounts: Mapping[int, float],
    share: float = DEFAULT_SHARE,
    callback: Callable[[int, int, Any], None] | None = None,
) -> tuple[list[Any], GenerationState]:
    """Re-render `state` with h moved by `amounts` (component -> sigmas) for the first `share` of the steps."""
    # 1. Check inputs.
    if state.settings["size"] != space.size:
        raise InputError(f"These h-space directions were fitted at {space.size} px, not {state.settings['size']}.")
    if not isinstance(share, (int, float)) or not 0 < share <= 1:
        raise InputError("The share of edited steps must lie in (0, 1].")
    delta = direction(space, amounts).to(backend.device)
    # 2. Count model evaluations: each sampler here makes one per step, so the first ones are the early steps.
    edited = math.ceil(share * state.settings["steps"])
    calls = [0]
    model_fn = backend.model_fn(state)

    def counted(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        return model_fn(x, t)

    # 3. Denoising loop with the shifted bottleneck, 4. decode.
    with shift_h(backend.unet, delta, lambda: calls[0] <= edited):
        done = backend.denoise(state, callback, model_fn=counted)
    settings = dict(done.settings)
    settings["hspace"] = {"amounts": {str(k): float(v) for k, v in amounts.items()}, "share": float(share)}
    done = GenerationState(done.pose, done.seed, done.style, done.z_T, settings, done.z_0)
    return backend.decode(done.z_0), done
