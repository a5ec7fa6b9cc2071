"""CLIP refinement of a generated character: change it to match a prompt while keeping its pose.

    result = refine(pipe, state, "pink hair | sailor uniform:0.5", mode="latent")
    result.state          # a normal GenerationState (style mode: new s; latent mode: new z_0)
    result.images         # the image after each optimisation step, then the final image
    result.messages       # notes for the user (e.g. a prompt cut at the tokenizer's length)

Two variables can move (ARCHITECTURE.md, "CLIP refinement"), each by normalised gradient descent (`ngd_step`):
* `style`: the style code s, the loss backpropagated through `STYLE_DDIM_STEPS` deterministic DDIM
  steps from the state's z_T (Song et al. 2021, Eq. 12 with eta = 0) and the decoder; on a GPU every
  UNet call is wrapped in `torch.utils.checkpoint` so memory stays flat in the number of steps (on a
  CPU, where time binds and memory does not, it is off). The result is re-rendered with the state's
  own sampler and steps, so it is an ordinary state.
* `latent`: the final latent z_0, as VQGAN-CLIP does (Crowson et al. 2022): the CLIP loss averaged
  over random cutouts of the decoded image, with a small L2 tether to the original z_0 that keeps it near what the
  decoder knows. A prompt that names a part ("pink hair", "teal background") is a recolouring (`models.recolour`):
  each named region gets one affine map of the latent's channels (z -> z + A z + b), which cannot turn into the
  dithered texture a free z_0 drifts to, starting from a colour search (gradient steps from blue hair towards
  "pink hair" stall at purple); a prompt that names no part moves a smooth offset of z_0 (`offset_grid`).
* `both`: style first, then latent from the re-rendered z_0.

The loss (`models.clip_guidance.prompt_loss`, summed over the weighted prompts of `models.refine_settings`):
    L = prompt_loss + contrast * sum_{i: w_i > 0, colour} w_i * mean_cutouts CE(softmax(scale * E_img . [text_i,
        others]), 0) + pose_weight * L_pose + tether terms
with `L_pose` the keypoint detector's heatmap loss (`models.detector.heatmap_loss`) of the decoded image against
Gaussians at the input pose fitted to the frame. The contrast term reads a colour prompt as CLIP's zero-shot
classifier over the same words in every other colour: pulling towards pink alone also pulls towards what pink
shares with its neighbours, the classifier only towards what sets pink apart.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.checkpoint import checkpoint

from models import recolour
from models.autoencoder import decode as ae_decode
from models.autoencoder import to_pil
from models.backend import GenerationState
from models.backends import capabilities
from models.clip import resolve_clip
from models.clip_guidance import contrast_loss, make_cutouts, prompt_loss, text_embeddings
from models.errors import InputError
from models.pipeline import frame_pose  # the one framing of a pose in the output square
from models.refine_settings import (
    DEFAULTS,
    REFINE_MODES,
    STYLE_DDIM_STEPS,
    RefineMode,
    RefineSettings,
    Term,
    check_refine_inputs,
    prompt_terms,
    stage_settings,
)
from models.samplers import make_scheduler, sample_loop

# callback(step, total, image): after every optimisation step, with the image it produced.
Callback = Callable[[int, int, Image.Image], None]


@dataclass
class RefineResult:
    """What `refine` returns."""

    state: GenerationState  # the refined state (z_0 set); the input state when nothing was refined
    images: list[Image.Image] = field(default_factory=list)  # one per optimisation step, then the final image
    messages: list[str] = field(default_factory=list)  # notes fit to show a person
    seconds: float = 0.0  # wall time of the refinement
    record: dict[str, Any] = field(default_factory=dict)  # prompt, mode, steps, messages as plain values
    losses: list[dict[str, float]] = field(default_factory=list)  # the loss parts of every step


# -- the pose term -----------------------------------------------------------------------------------
class PoseTerm:
    """The detector's heatmap loss of an image `(1, 3, S, S)` in [-1, 1] against the fitted input pose."""

    def __init__(self, detector: Any, pose: Any, size: int, device: torch.device):
        from models.detector import gaussian_targets

        self.detector = detector
        fitted = frame_pose(pose, size)  # the pipeline's frame: where the model drew the figure
        xy = torch.from_numpy(fitted.xy.astype(np.float32))[None]
        cfg = detector.config
        self.target = gaussian_targets(xy, cfg.image_size // cfg.heatmap_stride, float(cfg.sigma)).to(device)
        self.weight = torch.from_numpy(fitted.visible.astype(np.float32))[None].to(device)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """The heatmap loss (0 for a perfect match)."""
        from models.detector import heatmap_loss

        side = self.detector.config.image_size
        if image.shape[-1] != side:
            image = F.interpolate(image, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
        logits = self.detector(image.to(self.detector.dtype)).heatmaps
        return heatmap_loss(logits.float(), self.target, self.weight)


# -- loading (cached: one CLIP and one detector per process) ----------------------------------------
def resolve_detector(detector: Any) -> Any:
    """A KeypointDetector in eval mode: the one given, or loaded from a folder (None: weights/detector)."""
    from models.detector import load_detector

    return load_detector(detector).eval().requires_grad_(False)


# -- the differentiable sampler (style mode) ---------------------------------------------------------
def style_sample(
    model_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    pipeline: Any,
    z_T: torch.Tensor,
    s: torch.Tensor,
    z_mean: torch.Tensor | None,
    steps: int = STYLE_DDIM_STEPS,
    checkpointing: bool = True,
) -> torch.Tensor:
    """z_0 from z_T by the pipeline's own deterministic `ddim` sampler (`models.samplers.sample_loop`, eta = 0),
    differentiable in `s`; `model_fn(z_t, t, s)`. With `checkpointing` every model call is recomputed in the backward
    pass (`torch.utils.checkpoint`), so memory stays flat in the number of steps."""

    def fn(z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if checkpointing:
            return checkpoint(model_fn, z_t, t, s, use_reentrant=False).float()
        return model_fn(z_t, t, s).float()

    return sample_loop(fn, make_scheduler("ddim", pipeline.scheduler_config), z_T, steps, z_mean=z_mean)


# -- the stages -------------------------------------------------------------------------------------
@dataclass
class _Objective:
    """The CLIP + pose loss of a decoded image; shared by both stages."""

    clip: Any
    text_embeds: torch.Tensor  # (T, D) unit
    weights: torch.Tensor  # (T,)
    pose_term: PoseTerm | None
    generator: torch.Generator  # cutout randomness, seeded by the state's seed
    # (text, weight, (K, D) unit embeddings: a positive colour term, then its other colours), for the contrast term
    contrasts: list[tuple[str, float, torch.Tensor]] = field(default_factory=list)

    def __call__(
        self, image: torch.Tensor, cutouts: int, pose_weight: float, contrast: float = 0.0
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss and its parts for an image `(1, 3, H, W)` in [-1, 1]."""
        size = int(self.clip.image_size)
        views = make_cutouts(image.float(), max(cutouts, 1), size, self.generator)
        emb = self.clip.encode_image(views.to(self.text_embeds.device)).float()
        loss_clip = prompt_loss(emb, self.text_embeds, self.weights)
        loss = loss_clip
        parts = {"clip": float(loss_clip.detach())}
        if contrast > 0 and self.contrasts:
            scale = self.clip.logit_scale
            loss_contrast = sum(w * contrast_loss(emb, classes, scale) for _, w, classes in self.contrasts)
            loss = loss + contrast * loss_contrast
            parts["contrast"] = float(loss_contrast.detach())
        if self.pose_term is not None and pose_weight > 0:
            loss_pose = self.pose_term(image.float())
            loss = loss + pose_weight * loss_pose
            parts["pose"] = float(loss_pose.detach())
        return loss, parts


def ngd_step(x: torch.Tensor, lr: float) -> None:
    """One normalised gradient descent step on `x` in place: along `-x.grad`, with an RMS of `lr` per coordinate
    (Adam's per-coordinate scaling is sign descent over a few steps, which turned every prompt blue)."""
    with torch.no_grad():
        g = x.grad
        x -= lr * g * (g.numel() ** 0.5) / g.norm().clamp_min(1e-12)


def _optimise(
    param: torch.Tensor,
    forward: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    settings: RefineSettings,
    on_step: Callable[[torch.Tensor], None],
    messages: list[str],
    score: Callable[[torch.Tensor], float] | None = None,
) -> torch.Tensor:
    """`ngd_step` on `param` for `settings.steps` steps; `forward(param) -> (loss, image)`. Returns the iterate
    of the lowest loss among those after one step or more, the last included (a non-finite loss or value stops
    early, with a message): on s the loss is not monotone in the steps, so the last iterate is not always the
    best. The start itself is not returned unless nothing could be stepped: asked to refine, it moves.

    With `score(image) -> float` (lower is better, deterministic), the iterates are ranked by it instead, the start
    included: the loss sees random cutouts, so two iterates' losses are not comparable, and a start that is
    already a refinement (the colour search's) may be the best of them."""
    start = param.detach().clone()
    x = start.clone().requires_grad_(True)
    best, best_loss = start, math.inf
    first = 0 if score is not None else 1

    def total(loss: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return loss + settings.tether * (value - start).pow(2).mean() if settings.tether > 0 else loss

    for i in range(settings.steps):
        x.grad = None
        loss, image = forward(x)
        loss = total(loss, x)
        if not torch.isfinite(loss):
            messages.append("The refinement loss stopped being a finite number; the last good result was kept.")
            return best
        on_step(image)
        value = float(loss.detach()) if score is None else score(image.detach())
        if i >= first and value < best_loss:
            best, best_loss = x.detach().clone(), value
        loss.backward()
        ngd_step(x, settings.lr)
        if not torch.isfinite(x).all():
            messages.append("The refinement step gave non-finite values; the last good result was kept.")
            return best
    if settings.steps > 1:  # the last step's result, scored once without a gradient
        with torch.no_grad():
            loss, image = forward(x)
            loss = total(loss, x)
        if not torch.isfinite(loss):
            return best
        value = float(loss.detach()) if score is None else score(image.detach())
        if value >= best_loss:
            return best
    return x.detach().clone()


def _style_stage(
    pipeline: Any, state: GenerationState, objective: _Objective, settings: RefineSettings, on_image, messages, log
) -> GenerationState:
    """Optimise s through `STYLE_DDIM_STEPS` DDIM steps and the decoder; re-render with the state's sampler."""
    cfg = state.settings
    device, dtype = pipeline.device, pipeline.dtype
    cond = pipeline.condition(state.pose, cfg["size"])
    z_T = state.z_T.to(device, torch.float32)
    guidance = cfg["guidance"]
    # Recompute each UNet call in the backward pass on a GPU, where memory binds; not on a CPU, where time binds
    # (128 px, 4 DDIM steps, 1 thread: 2.75 s and +208 MB a step with it, 1.40 s and +334 MB without).
    checkpointing = torch.device(device).type != "cpu"

    def model_fn(z_t: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return pipeline.predict(z_t.to(dtype), t, cond, s.to(dtype), guidance)

    def forward(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # the start moves with s too (E[z_0 | s, pose], `models.unet`), so the gradient reaches s both ways
        z_mean = pipeline.start_mean(cond, s[None].to(dtype))
        z0 = style_sample(model_fn, pipeline, z_T, s[None], z_mean, STYLE_DDIM_STEPS, checkpointing)
        image = ae_decode(pipeline.vae, z0.to(dtype)).float()
        loss, parts = objective(image, settings.cutouts, settings.pose_weight, settings.contrast)
        log.append(parts)
        return loss, image

    s0 = torch.as_tensor(np.asarray(state.style, dtype=np.float32)).to(device)
    s = _optimise(s0, forward, settings, on_image, messages)
    _, done = pipeline.render(state.with_style(s.cpu().numpy()))
    return done


def _latent_stage(
    pipeline: Any,
    state: GenerationState,
    objective: _Objective,
    settings: RefineSettings,
    on_image,
    messages,
    log,
    terms: Sequence[Term],
) -> GenerationState:
    """Optimise one affine map of z_0's channels per region the `terms` name, each moving only its region
    (`models.recolour.latent_masks`), from the colour search's start when `settings.colour_search`; a
    prompt that names no region moves a smooth offset of z_0 (`offset_grid`). Cutouts and the tether to the start."""
    device, dtype = pipeline.device, pipeline.dtype
    if state.z_0 is None:
        state = pipeline.denoise(state)
    z_start = state.z_0.to(device, torch.float32)
    masks = outside = score = None
    if terms:
        with torch.no_grad():
            image = ae_decode(pipeline.vae, z_start.to(dtype)).float().clamp(-1, 1)
        keyed = recolour.region_pixel_masks(state, terms, to_pil(image)[0], getattr(pipeline, "parser", None))
        if keyed is not None:
            masks = recolour.latent_masks(keyed, int(z_start.shape[-1])).to(device)
            outside = 1 - torch.from_numpy(np.max(list(keyed.values()), axis=0)).to(device)
            start_image = image
            if settings.colour_search > 0 and objective.contrasts:
                clip, contrasts = objective.clip, objective.contrasts
                z_start = recolour.searched_start(
                    pipeline, clip, contrasts, z_start, image, keyed, settings.colour_search
                )
                score = recolour.search_score(clip, contrasts)

    channels = z_start.shape[1]

    def latent(x: torch.Tensor) -> torch.Tensor:
        if masks is not None:  # x: (R, C, C + 1), each region's [A | b]
            moved = torch.einsum("rij,bjhw->rihw", x[..., :channels], z_start) + x[..., channels:, None]
            return z_start + (masks * moved).sum(dim=0, keepdim=True)
        return z_start + F.interpolate(x, size=z_start.shape[-2:], mode="bilinear", align_corners=False)

    def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image = ae_decode(pipeline.vae, latent(x).to(dtype)).float()
        loss, parts = objective(image, settings.cutouts, settings.pose_weight, settings.contrast)
        if outside is not None and settings.keep_outside > 0:
            loss_keep = (outside * (image - start_image)).pow(2).mean()
            loss = loss + settings.keep_outside * loss_keep
            parts["keep"] = float(loss_keep.detach())
        log.append(parts)
        return loss, image

    if masks is not None:
        start = torch.zeros((len(masks), channels, channels + 1), device=device)
    else:
        start = torch.zeros((1, channels, settings.offset_grid, settings.offset_grid), device=device)
    x = _optimise(start, forward, settings, on_image, messages, score)
    z = latent(x).detach()
    if score is not None and torch.equal(z, state.z_0.to(device, torch.float32)):
        messages.append("CLIP scored no recolouring above the image as it was, so the image is kept unchanged.")
    return GenerationState(state.pose, state.seed, state.style, state.z_T, dict(state.settings), z.float().cpu())


# -- the entry point --------------------------------------------------------------------------------
def refine(
    pipeline: Any,
    state: GenerationState,
    prompt: str | None,
    negative_prompt: str | None = None,
    mode: RefineMode = "latent",
    steps: int | None = None,
    lr: float | None = None,
    pose_weight: float | None = None,
    clip: Any = None,
    callback: Callback | None = None,
    detector: Any = None,
) -> RefineResult:
    """Move the state's s ("style"), z_0 ("latent") or both so the image matches the weighted prompt,
    keeping the pose; `steps`/`lr`/`pose_weight` None take the defaults (`DEFAULTS`). An empty prompt
    returns the state unchanged. `clip`: a ClipScorer or a `models.clip.load_clip` spec."""
    started = time.perf_counter()
    # 1. Check inputs.
    check_refine_inputs(mode, steps, lr, pose_weight)
    if not isinstance(state, GenerationState):
        raise InputError("refine needs the GenerationState of a generated image.")
    caps = capabilities(pipeline)
    missing = [m for m in ("style", "latent") if mode in (m, "both") and f"refine_{m}" not in caps]
    if missing:
        raise InputError(f"This model does not support CLIP refinement in {mode} mode.")
    messages: list[str] = []
    terms: list[Term] = prompt_terms(prompt, negative_prompt, messages)
    stages = stage_settings(mode, steps, lr, pose_weight)
    record: dict[str, Any] = {
        "prompt": prompt or "",
        "negative_prompt": negative_prompt or "",
        "mode": mode,
        "steps": [s.steps for _, s in stages] if mode == "both" else stages[0][1].steps,
        "terms": [[t, w] for t, w in terms],
    }
    if not terms:
        if not messages:
            messages.append("The prompt is empty: nothing to refine.")
        record["messages"] = messages
        return RefineResult(state, [], messages, time.perf_counter() - started, record)

    # 2. Text embeddings of the weighted prompts (cut at the tokenizer's length, said so).
    scorer = resolve_clip(clip)
    text_embeds, weights, contrasts = text_embeddings(scorer, terms, any(s.contrast > 0 for _, s in stages), messages)

    # 3. The pose term (only when weighted), and the cutout randomness from the state's seed.
    pose_term = None
    if any(s.pose_weight > 0 for _, s in stages):
        det = resolve_detector(detector).to(pipeline.device)
        pose_term = PoseTerm(det, state.pose, int(state.settings["size"]), pipeline.device)
    generator = torch.Generator("cpu").manual_seed(int(state.seed) % 2**63)
    objective = _Objective(scorer, text_embeds, weights, pose_term, generator, contrasts)

    # 4. The stages, streaming the image of every step.
    images: list[Image.Image] = []
    total = sum(s.steps for _, s in stages)
    log: list[dict[str, float]] = []

    def on_image(image: torch.Tensor) -> None:
        images.append(to_pil(image)[0])
        if callback is not None:
            callback(len(images), total, images[-1])

    current = state
    with torch.enable_grad():
        for stage, settings in stages:
            if stage == "style":
                current = _style_stage(pipeline, current, objective, settings, on_image, messages, log)
            else:
                current = _latent_stage(pipeline, current, objective, settings, on_image, messages, log, terms)

    # 5. The final image of the refined state.
    images.append(pipeline.picture(current))
    record["messages"] = messages
    return RefineResult(current, images, messages, time.perf_counter() - started, record, log)


__all__ = [
    "DEFAULTS",
    "REFINE_MODES",
    "STYLE_DDIM_STEPS",
    "RefineMode",
    "RefineResult",
    "RefineSettings",
    "check_refine_inputs",
    "ngd_step",
    "refine",
    "style_sample",
]
