"""Samplers: a name -> diffusers scheduler table, and one denoising loop every sampler shares.

Symbols (DDPM/DDIM notation; diffusers names in brackets):
    alpha_bar_t  [alphas_cumprod[t]]      signal share of z_t = sqrt(alpha_bar_t) z_0 + sqrt(1 - alpha_bar_t) eps
    v            [model_output]            sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) z_0 (Salimans & Ho 2022, Sec. 4)
    z_0 estimate [pred_original_sample]    f_theta(z_t, t): what the preview decodes
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    LCMScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin


def _ddim(cfg: Any) -> DDIMScheduler:
    """DDIM (Song et al. 2021); eta = 0 is deterministic, eta = 1 is DDPM-like."""
    scheduler = DDIMScheduler.from_config(cfg, clip_sample=False, set_alpha_to_one=False)
    if scheduler.config.rescale_betas_zero_snr:
        # With alpha_bar_T = 0 the first step's sigma^2 equals 1 - alpha_bar_prev, and the rounding of
        # sqrt(1 - alpha_bar_prev - sigma^2) gives NaN (black images at eta > 0); diffusers' Euler schedulers take
        # 2^-24 for alpha_bar_T for the same reason.
        scheduler.alphas_cumprod[-1] = 2.0**-24
    return scheduler


# name -> factory from the training scheduler's config (beta schedule, prediction type, timestep spacing).
SAMPLERS: dict[str, Callable[[Any], SchedulerMixin]] = {
    "ddim": _ddim,
    # Lu et al. 2022 (DPM-Solver++(2M)): second-order multistep, good at 15-25 steps.
    "dpmpp_2m": lambda cfg: DPMSolverMultistepScheduler.from_config(
        cfg, algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero"
    ),
    # Karras et al. 2022 Algorithm 2 with ancestral noise (k-diffusion's sample_euler_ancestral).
    "euler_a": lambda cfg: EulerAncestralDiscreteScheduler.from_config(cfg),
}


# The few-step student's sampler (latent consistency, Luo et al. 2023; `training.train_distill`): diffusers'
# LCMScheduler on the skipping schedule t_n = (n + 1) T / N - 1, N = LCM_ORIGINAL_STEPS, that the student is distilled
# on, with the boundary scalings of `consistency_scalings`.
LCM_ORIGINAL_STEPS = 50
LCM_TIMESTEP_SCALING = 10.0
LCM_SIGMA_DATA = 0.5
MAX_FAST_STEPS = 4  # the student is trained for 1-4 steps; more add nothing
DEFAULT_FAST_STEPS = 1  # 2 steps add little, at 0.06 s more (docs/EXPERIMENTS.md, "The few-step student")


def make_fast_scheduler(config: Any) -> LCMScheduler:
    """The consistency sampler of the distilled student, configured like the training scheduler (`config`)."""
    return LCMScheduler.from_config(
        config, original_inference_steps=LCM_ORIGINAL_STEPS, timestep_scaling=LCM_TIMESTEP_SCALING
    )


def skip_timesteps(num_train_timesteps: int, n: int = LCM_ORIGINAL_STEPS) -> torch.Tensor:
    """The N timesteps t_n = (n + 1) T / N - 1 (ascending) of the consistency sampler's schedule."""
    ratio = num_train_timesteps // n
    return torch.arange(1, n + 1) * ratio - 1


def consistency_scalings(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_skip, c_out) of the consistency function f(z_t, t) = c_skip z_t + c_out z_0(z_t, t), as LCMScheduler's:
    f is the identity at t = 0 and the model's z_0 estimate elsewhere."""
    scaled = LCM_TIMESTEP_SCALING * t.float()
    c_skip = LCM_SIGMA_DATA**2 / (scaled**2 + LCM_SIGMA_DATA**2)
    c_out = scaled / (scaled**2 + LCM_SIGMA_DATA**2).sqrt()
    return c_skip, c_out


def split_output(
    prediction_type: str, model_output: torch.Tensor, sample: torch.Tensor, alpha_bar: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(z_0, eps) estimates from a model output at z_t with signal share `alpha_bar` (broadcastable)."""
    a, b = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    if prediction_type == "v_prediction":  # v = sqrt(a) eps - sqrt(1 - a) z_0
        return a * sample - b * model_output, b * sample + a * model_output
    z0 = (sample - b * model_output) / a
    return z0, model_output


def training_scheduler(
    prediction_type: str = "v_prediction", num_train_timesteps: int = 1000, zero_snr: bool = False
) -> DDPMScheduler:
    """The noise schedule the UNet is trained with (its config is saved as `scheduler/` and feeds every sampler);
    `zero_snr` rescales it to zero terminal SNR (Lin et al. 2024; every sampler here reads that from the config)."""
    return DDPMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_schedule="scaled_linear",  # Stable Diffusion's schedule (latents of unit std)
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type=prediction_type,
        clip_sample=False,
        timestep_spacing="trailing",  # the first sampling step starts at t = T - 1 (Lin et al. 2024, Sec. 3.3)
        rescale_betas_zero_snr=zero_snr,
    )


def make_scheduler(name: str, config: Any) -> SchedulerMixin:
    """A fresh sampler `name` configured like the training scheduler (`config`)."""
    return SAMPLERS[name](config)


def _x0_from_output(
    scheduler: SchedulerMixin, model_output: torch.Tensor, sample: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """The z_0 estimate for schedulers that do not return one (DPM-Solver works on the DDPM z_t)."""
    a = scheduler.alphas_cumprod.to(sample.device)[int(t)].to(sample.dtype)
    return split_output(scheduler.config.prediction_type, model_output, sample, a)[0]


def start_sample(z_T: torch.Tensor, alpha_bar: torch.Tensor | float, z_mean: torch.Tensor | None) -> torch.Tensor:
    """z_T + sqrt(alpha_bar_T) E[z_0]: unit noise moved to the mean of the training marginal q(z_T | E[z_0]) (in
    DDPM units; `models.unet` says why); `z_T` itself when no mean is given (or at zero terminal SNR)."""
    if z_mean is None:
        return z_T
    return z_T + torch.as_tensor(alpha_bar, dtype=z_T.dtype, device=z_T.device).sqrt() * z_mean.to(z_T)


def sample_loop(
    model_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    scheduler: SchedulerMixin,
    z_T: torch.Tensor,
    steps: int,
    generator: torch.Generator | None = None,
    eta: float = 0.0,
    callback: Callable[[int, int, torch.Tensor], None] | None = None,
    z_mean: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run `steps` sampler steps from unit Gaussian noise `z_T`; returns z_0. `model_fn(z_t, t)` -> model output.

    `callback(step, total, z0_estimate)` is called after every step; ancestral noise (euler_a, ddim
    with eta > 0) is drawn from `generator`, so a seeded generator gives the same result every run.
    `z_mean` (E[z_0 | s, pose], `models.unet`), when given, moves the start to `start_sample`'s; a
    sigma-space sampler (euler_a) scales the sum by its `init_noise_sigma`, sigma_T = sqrt((1 - a) / a), which puts
    the mean at sqrt(1 - a) E[z_0], i.e. E[z_0] to 0.3%, where x = z_0 + sigma eps wants it.
    """
    scheduler.set_timesteps(steps, device=z_T.device)
    if z_mean is not None:
        z_T = start_sample(z_T, scheduler.alphas_cumprod[int(scheduler.timesteps[0])], z_mean)
    return _run(model_fn, scheduler, z_T * scheduler.init_noise_sigma, scheduler.timesteps, generator, eta, callback)


def resample_loop(
    model_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    scheduler: SchedulerMixin,
    z_0: torch.Tensor,
    strength: float,
    steps: int,
    generator: torch.Generator | None = None,
    eta: float = 0.0,
) -> torch.Tensor:
    """SDEdit (Meng et al. 2022): `z_0` noised to t = strength T and denoised again by the last `steps` steps of a
    schedule of ceil(steps / strength) steps, as diffusers' image-to-image pipelines do; returns the new z_0. The
    noise is drawn from `generator`."""
    total = max(steps, math.ceil(steps / strength))
    scheduler.set_timesteps(total, device=z_0.device)
    begin = (total - steps) * scheduler.order
    if hasattr(scheduler, "set_begin_index"):  # the multistep and sigma-space schedulers count their steps
        scheduler.set_begin_index(begin)
    timesteps = scheduler.timesteps[begin:]
    noise = torch.randn(z_0.shape, generator=generator, dtype=torch.float32).to(z_0)
    x = scheduler.add_noise(z_0, noise, timesteps[:1])
    return _run(model_fn, scheduler, x, timesteps, generator, eta, None)


def _run(
    model_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    scheduler: SchedulerMixin,
    x: torch.Tensor,
    timesteps: torch.Tensor,
    generator: torch.Generator | None,
    eta: float,
    callback: Callable[[int, int, torch.Tensor], None] | None,
) -> torch.Tensor:
    """The denoising steps over `timesteps` from `x` (in the scheduler's own space); returns z_0."""
    params = inspect.signature(scheduler.step).parameters
    extra: dict[str, Any] = {}
    if "generator" in params:
        extra["generator"] = generator
    if "eta" in params:
        extra["eta"] = eta
    for i, t in enumerate(timesteps):
        model_in = scheduler.scale_model_input(x, t)
        out = model_fn(model_in, t)
        res = scheduler.step(out, t, x, return_dict=True, **extra)
        if callback is not None:
            x0 = getattr(res, "pred_original_sample", None)
            if x0 is None:
                x0 = _x0_from_output(scheduler, out, x, t)
            callback(i + 1, len(timesteps), x0)
        x = res.prev_sample
    return x
