"""CLIP's losses on an image (cutouts, spherical distance, zero-shot classes), and CLIP-guided sampling for the
keypoint LDM and SD + ControlNet as a conditioning wrapper around the denoiser.

    images, states = generate_guided(backend, pose, seed, clip, "red hair", scale=200, steps=20)

The losses (VQGAN-CLIP's `Prompt` module, Crowson et al. 2022) are shared by the guidance, the refinement
(`models.refine`) and the recolouring (`models.recolour`):
    prompt_loss = sum_i w_i * mean_cutouts d(E_img(cutout), E_txt(text_i)),   d(a, b) = 2 arcsin(|a - b| / 2)^2.

k-diffusion's `make_cond_model_fn` (Crowson): with x the noisy sample and D(x) the denoised estimate,
    D'(x) = D(x) + sigma^2 * grad_x log p(prompt | x).
Our samplers work in the DDPM parametrisation, z_t = sqrt(a) z_0 + sqrt(1 - a) eps (a = alpha_bar_t), where
k-diffusion's x is z_t / sqrt(a) and sigma^2 = (1 - a) / a, so the same correction reads
    z_0' = z_0 + (1 - a) / sqrt(a) * grad_{z_t} log p,   i.e. eps' = eps - sqrt(1 - a) grad_{z_t} log p
(Dhariwal & Nichol 2021, Eq. 14). The wrapper returns the model output (eps or v) that z_0' implies, so every
sampler runs unchanged and never sees CLIP. log p(prompt | x) is -scale times `prompt_loss` of cutouts of the
decoded z_0 estimate (positive terms attract, negative ones repel), differentiated through the decoder and the
UNet, as CLIP-guided diffusion does.

`clip` is any object with `encode_image(images in [-1, 1]) -> unit embeddings`, `encode_text(list[str])`,
`logit_scale` and `image_size` (models.clip.ClipScorer).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from models.backend import GenerationState
from models.errors import InputError
from models.refine_settings import Term, colour_alternatives, prompt_terms, truncation_messages
from models.samplers import split_output

ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# cond_fn(z_t, t, denoised) -> grad_{z_t} log p(prompt | z_t), the shape of z_t.
CondFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

DEFAULT_SCALE = 100.0
MAX_SCALE = 10000.0
DEFAULT_CUTOUTS = 4
MAX_CUTOUTS = 32


# -- CLIP's losses (pure) ---------------------------------------------------------------------------
def make_cutouts(
    images: torch.Tensor, n: int, size: int, generator: torch.Generator, min_scale: float = 0.6, noise: float = 0.05
) -> torch.Tensor:
    """`n` views `(n, 3, size, size)` of one image: the whole image, then random square crops (a side of
    `min_scale`..1 of the image), random horizontal flips and a little Gaussian noise (VQGAN-CLIP's MakeCutouts)."""
    _, _, h, w = images.shape
    side = min(h, w)
    views = [F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)]
    for _ in range(n - 1):
        r = torch.rand(5, generator=generator).tolist()
        crop = max(8, round(side * (min_scale + (1 - min_scale) * r[0])))
        y = int(r[1] * (h - crop + 1))
        x = int(r[2] * (w - crop + 1))
        view = images[:, :, y : y + crop, x : x + crop]
        view = F.interpolate(view, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        if r[3] < 0.5:
            view = view.flip(-1)
        eps = torch.randn(view.shape, generator=generator).to(view.device, view.dtype)
        views.append(view + noise * r[4] * eps)
    return torch.cat(views)


def spherical_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared great-circle distance of unit vectors, `2 arcsin(|a - b| / 2)^2`, broadcast over leading dims."""
    return (a - b).norm(dim=-1).div(2).clamp(max=1.0).arcsin().pow(2).mul(2)


def prompt_loss(image_embeds: torch.Tensor, text_embeds: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """`sum_i w_i * mean_n d(image_n, text_i)` for unit image `(N, D)` and text `(T, D)` embeddings."""
    dists = spherical_dist(image_embeds[:, None, :], text_embeds[None, :, :])  # (N, T)
    return (dists.mean(dim=0) * weights).sum()


def contrast_loss(image_embeds: torch.Tensor, class_embeds: torch.Tensor, scale: float) -> torch.Tensor:
    """Cross-entropy of class 0 under CLIP's zero-shot softmax (Radford et al. 2021) of unit image `(N, D)`
    against unit class `(K, D)` embeddings at logit `scale`, averaged over the N views."""
    logits = scale * image_embeds @ class_embeds.T
    return F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))


def class_prob(clip: Any, embeds: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Probability of class 0 under CLIP's zero-shot softmax for image embeddings `(..., D)` against unit class
    embeddings `(K, D)`; shape `(...)`."""
    return (clip.logit_scale * embeds.float() @ classes.T.float()).softmax(dim=-1)[..., 0]


@torch.no_grad()
def view_embeddings(clip: Any, images: torch.Tensor, views: int = 4) -> torch.Tensor:
    """`(N, views, D)`: CLIP's embeddings of `views` augmented views of each image `(N, 3, H, W)`
    (`make_cutouts`, the same seeded views every call, so two images' scores compare)."""
    generator = torch.Generator("cpu").manual_seed(0)
    cutouts = torch.cat([make_cutouts(x[None].float(), views, int(clip.image_size), generator) for x in images])
    return clip.encode_image(cutouts).float().view(len(images), views, -1)


def text_embeddings(
    scorer: Any, terms: Sequence[Term], contrast: bool, messages: list[str]
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[str, float, torch.Tensor]]]:
    """The terms' unit text embeddings `(T, D)` and weights `(T,)`, and with `contrast` each positive colour term's
    classes (its text, then the same words in the other colours); a prompt cut at the tokenizer's length is noted."""
    texts = [t for t, _ in terms]
    _, truncated = scorer.tokenize(texts)
    messages += truncation_messages(terms, truncated, int(scorer.context_length))
    others = [colour_alternatives(t) if contrast and w > 0 else [] for t, w in terms]
    with torch.no_grad():  # one text-tower forward for the terms and all their alternatives
        embeds = scorer.encode_text(texts + [o for alts in others for o in alts]).float()
    text_embeds = embeds[: len(texts)]
    weights = torch.tensor([w for _, w in terms], dtype=torch.float32, device=text_embeds.device)
    contrasts, at = [], len(texts)
    for i, alts in enumerate(others):
        if alts:
            classes = torch.cat([text_embeds[i : i + 1], embeds[at : at + len(alts)]])
            contrasts.append((terms[i][0], terms[i][1], classes))
            at += len(alts)
    return text_embeds, weights, contrasts


# -- guidance as a model wrapper -------------------------------------------------------------------
def output_from_x0(z0: torch.Tensor, z_t: torch.Tensor, a: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """The eps or v prediction that yields `z0` at `z_t` (the inverse of `models.samplers.split_output`)."""
    eps = (z_t - a.sqrt() * z0) / (1 - a).sqrt()
    if prediction_type == "v_prediction":
        return a.sqrt() * eps - (1 - a).sqrt() * z0
    return eps


def make_cond_model_fn(
    model_fn: ModelFn, cond_fn: CondFn, alphas_cumprod: torch.Tensor, prediction_type: str = "epsilon"
) -> ModelFn:
    """Wrap `model_fn(z_t, t)` so its z_0 estimate moves by (1 - a) / sqrt(a) * cond_fn (module docstring)."""

    def cond_model_fn(z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = alphas_cumprod[round(float(t))].to(z_t.device, torch.float32)
        with torch.enable_grad():
            x = z_t.detach().float().requires_grad_()
            out = model_fn(x.to(z_t.dtype), t).float()
            denoised = split_output(prediction_type, out, x, a)[0]
            grad = cond_fn(x, t, denoised).detach()
        cond_denoised = denoised.detach() + grad * (1 - a) / a.sqrt()
        return output_from_x0(cond_denoised, z_t.float(), a, prediction_type).to(z_t.dtype)

    return cond_model_fn


def clip_cond_fn(
    decode: Callable[[torch.Tensor], torch.Tensor],
    clip: Any,
    terms: list[tuple[str, float]],
    scale: float = DEFAULT_SCALE,
    cutouts: int = DEFAULT_CUTOUTS,
    generator: torch.Generator | None = None,
) -> CondFn:
    """grad_{z_t} of -scale * sum_i w_i d(CLIP(cutouts of decode(z_0)), CLIP(text_i)) for prompt terms (text, w)."""
    with torch.no_grad():
        text = clip.encode_text([t for t, _ in terms]).float()
    weights = torch.tensor([w for _, w in terms], dtype=torch.float32, device=text.device)
    generator = generator or torch.Generator().manual_seed(0)

    def cond_fn(z_t: torch.Tensor, t: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
        image = decode(denoised).float()
        views = make_cutouts(image, cutouts, int(clip.image_size), generator)
        loss = prompt_loss(clip.encode_image(views).float(), text.to(views.device), weights.to(views.device))
        return -scale * torch.autograd.grad(loss, z_t)[0]

    return cond_fn


@dataclass(frozen=True)
class Guidance:
    """What CLIP guidance steers towards, and how hard: the prompt terms' text and the sampling knobs."""

    prompt: str
    negative_prompt: str | None = None
    scale: float = DEFAULT_SCALE
    cutouts: int = DEFAULT_CUTOUTS

    def check(self, backend: Any) -> list[Term]:
        """The prompt's weighted terms; InputError for a back end without CLIP guidance or settings out of range."""
        from models.backends import capabilities

        if "clip_guidance" not in capabilities(backend):
            raise InputError("This model offers no CLIP-guided sampling; its prompts go through refinement instead.")
        if not isinstance(self.prompt, str) or not self.prompt.strip():
            raise InputError("CLIP guidance needs a prompt.")
        scale, cutouts = self.scale, self.cutouts
        if not isinstance(scale, (int, float)) or not math.isfinite(scale) or not 0 <= scale <= MAX_SCALE:
            raise InputError(f"The CLIP guidance scale must be a number from 0 to {MAX_SCALE:g}.")
        if isinstance(cutouts, bool) or not isinstance(cutouts, int) or not 1 <= cutouts <= MAX_CUTOUTS:
            raise InputError(f"The number of CLIP cutouts must be from 1 to {MAX_CUTOUTS}.")
        terms = prompt_terms(self.prompt, self.negative_prompt)  # the refinement's syntax: 'a:1 | b:-0.5'
        if not terms:
            raise InputError("The prompt has no term with a weight to guide towards.")
        return terms

    def record(self, state: GenerationState) -> GenerationState:
        """The state with these settings written into `settings["clip_guidance"]`."""
        entry = {"prompt": self.prompt, "negative_prompt": self.negative_prompt or "", "scale": float(self.scale),
                 "cutouts": int(self.cutouts)}  # fmt: skip
        return replace(state, settings={**state.settings, "clip_guidance": entry})


def guidance_wrap(backend: Any, clip: Any, guide: Guidance) -> Callable[[GenerationState, ModelFn], ModelFn]:
    """`wrap(state, model_fn)` for a back end's `__call__`/`render`: CLIP guidance towards the prompt terms."""
    from diffusers import DDPMScheduler

    terms = guide.check(backend)
    schedule = DDPMScheduler.from_config(backend.scheduler_config)

    def wrap(state: GenerationState, model_fn: ModelFn) -> ModelFn:
        generator = torch.Generator().manual_seed(state.seed)  # seeded cutouts: the same state gives the same pixels
        cond_fn = clip_cond_fn(backend.decode_tensor, clip, terms, float(guide.scale), int(guide.cutouts), generator)
        return make_cond_model_fn(model_fn, cond_fn, schedule.alphas_cumprod, schedule.config.prediction_type)

    return wrap


def generate_guided(
    backend: Any,
    pose: Any,
    seed: int,
    clip: Any,
    prompt: str,
    negative_prompt: str | None = None,
    scale: float = DEFAULT_SCALE,
    cutouts: int = DEFAULT_CUTOUTS,
    **call: Any,
) -> tuple[list[Any], list[GenerationState]]:
    """`backend(pose, seed, **call)` with CLIP guidance: the back end checks its inputs, the wrapper steers."""
    guide = Guidance(prompt, negative_prompt, scale, cutouts)
    images, states = backend(pose, seed, wrap=guidance_wrap(backend, clip, guide), **call)
    return images, [guide.record(s) for s in states]
