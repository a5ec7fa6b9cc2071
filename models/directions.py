"""Latent directions on the style code s (SeFa and GANSpace, `--edit` parsing), and style edits that move s along them.

    dirs = directions_for(pipe, "sefa")                  # Directions(method, vectors, scale, explained, labels)
    s2 = apply_amounts(s, {("sefa", 0): 2.0}, {"sefa": dirs})   # s + 2 * scale_0 * v_0
    images, edited = edit(pipe, state, {("sefa", 0): 2.0, ("ganspace", 3): -1.5})  # same noise and pose
    images, edited = edit(pipe, state, {("sefa", 0): 2.0}, step_range=(0, 5))   # only the first 5 steps

The UNet reads s only through one affine layer, `A(s) = W s + b` (`PoseUNet.style_affine`,
W: (D, d) = (time_embed_dim, style_dim)), whose output is added to the time embedding:
    emb_t(s) = TimeEmbedding(t) + W s + b,    every resnet reads SiLU(emb_t(s))
That layer plays the part of StyleGAN's per-layer style affine, so both methods act on s directly:

* SeFa (Shen & Zhou 2021, Eq. 5-6): the directions n maximising |A n|^2 with |n| = 1 are the top
  eigenvectors of A^T A. As in the paper's code (`utils.factorize_weight`), the weight is first
  normalised per output unit: SeFa normalises the columns of `style.weight.T`, which are the rows
  of our `nn.Linear.weight`. No sampling.
* GANSpace (Harkonen et al. 2020, Sec. 2): sample s ~ N(0, I), run PCA on a feature of it, map the
  principal axes back to s-space. Two features (`GanspaceFeature`):
  - "affine": PCA of A(s); the axes u_k are mapped back by least squares, v_k = argmin |W v - u_k|
    (`lstsq` of W), as GANSpace does for StyleGAN's w. Because A is linear these are W's right
    singular vectors, i.e. SeFa without the per-unit normalisation.
  - "silu" (the default): PCA of the activation after A, SiLU(TimeEmbedding(t) + A(s)), the input
    of every resnet's scale/shift projection, at several sampler timesteps t (centred per t, so the
    variance is the variance due to s); the axes are mapped back by regressing s on the PCA
    coordinates, U = argmin sum_j |U x_j - s_j|^2, as GANSpace does for BigGAN's z. Chosen as the
    default because it is the "next activation" GANSpace recommends and, unlike "affine", it does
    not merely repeat SeFa.

Every vector is a unit row in s-space with a fixed sign (its largest-magnitude entry positive), so
the same model always gives the same directions. `scale` is the standard deviation of s along each
direction under the prior N(0, I), which is 1 for any unit vector: amounts are in standard deviations
of s, clamped to +-MAX_SIGMA.

Labels ("hair colour (pink -> blue)") come from `training.eval_directions --label`, cached in
`weights/directions.json` under the SHA-256 of `style_affine.weight` (`model_hash`): after retraining the hash
changes and stale labels are ignored.

Edits render s' = s + sum_i amount_i * scale_i * v_i from the same z_T and pose. `step_range=(start, end)` uses s'
only at sampler steps start <= i < end and the original s elsewhere: the analogue of GANSpace's layer range (early
steps set the coarse layout and colours, late steps the details). Amounts are absolute: pass the unedited state each
time a slider moves. The same state, amounts and range always give the same pixels.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from models import paths
from models.backend import DEFAULT_SAMPLER, GenerationState
from models.errors import InputError

METHODS: tuple[str, ...] = ("sefa", "ganspace")
GanspaceFeature = Literal["affine", "silu"]
EditKey = tuple[str, int]  # (method, direction index)
DEFAULT_K = 10  # directions offered per method (sliders, --edit indices)
MAX_SIGMA = 3.0  # amounts are clamped to +-MAX_SIGMA standard deviations
GANSPACE_SAMPLES = 10_000  # codes sampled for GANSpace's PCA
GANSPACE_TIMESTEPS = 10  # timesteps at which the "silu" feature is read (evenly spaced over training's T)
GANSPACE_FEATURE: GanspaceFeature = "silu"  # the feature GANSpace's PCA reads (module docstring)
LABELS_PATH = paths.DIRECTION_LABELS


@dataclass(frozen=True, eq=False)
class Directions:
    """Directions in s-space for one model and method (GANSpace's `(components, stdev, var_ratio)`)."""

    method: str  # "sefa" or "ganspace"
    vectors: np.ndarray  # (k, style_dim) float32, unit rows, sorted by `explained` (descending)
    scale: np.ndarray  # (k,) float32, std of s along each vector (1 under the prior N(0, I))
    explained: np.ndarray  # (k,) float32, share of the eigenvalue sum (SeFa) / feature variance (GANSpace)
    labels: tuple[str, ...] = ()  # one per vector when a label cache matches the model, else empty
    options: str = ""  # how the vectors were computed (keys the label cache together with the weight hash)

    def __len__(self) -> int:
        """Number of directions k."""
        return int(self.vectors.shape[0])

    def label(self, index: int) -> str:
        """The automatic label of direction `index`, or `"<method> <index>"` when there is none."""
        if index < len(self.labels) and self.labels[index]:
            return self.labels[index]
        return f"{self.method} {index}"

    def with_labels(self, labels: list[str] | tuple[str, ...]) -> Directions:
        """A copy carrying `labels` (one per direction, or none)."""
        labels = tuple(str(x) for x in labels)
        if labels and len(labels) != len(self):
            raise ValueError(f"{len(labels)} labels for {len(self)} directions")
        return dataclasses.replace(self, labels=labels)


def _make_directions(method: str, vectors: np.ndarray, explained: np.ndarray, options: str) -> Directions:
    """Directions with sign-fixed rows and scale 1 (the std of s along any unit vector under N(0, I))."""
    k = len(vectors)
    arrays = [np.array(a, dtype=np.float32) for a in (_fix_signs(vectors), np.ones(k), explained[:k])]
    for arr in arrays:  # read-only copies: the dataclass is frozen, so are its arrays
        arr.flags.writeable = False
    return Directions(method, *arrays, options=options)


def _fix_signs(vectors: np.ndarray) -> np.ndarray:
    """Rows flipped so that each row's largest-magnitude entry is positive (eigenvectors have no sign)."""
    idx = np.abs(vectors).argmax(axis=1)
    signs = np.sign(vectors[np.arange(len(vectors)), idx])
    signs[signs == 0] = 1.0
    return vectors * signs[:, None]


def _check_k(k: int, dim: int) -> int:
    """k as an int in [1, dim]."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= dim:
        raise InputError(f"The number of directions must be a whole number from 1 to {dim}.")
    return int(k)


# -- the two methods (pure functions of the weights) ----------------------------------------------
def sefa(weight: np.ndarray, k: int = DEFAULT_K) -> Directions:
    """SeFa (Shen & Zhou 2021, Eq. 6): top-k eigenvectors of A_n^T A_n, A_n = W with unit rows (per output unit)."""
    w = np.asarray(weight, dtype=np.float64)  # (D, d): nn.Linear.weight
    k = _check_k(k, w.shape[1])
    a_n = w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12)
    # A_n^T A_n is symmetric: eigh gives real, orthonormal eigenvectors (the paper's code uses eig).
    values, vectors = np.linalg.eigh(a_n.T @ a_n)
    order = np.argsort(values)[::-1]
    values, vectors = values[order], vectors[:, order].T
    return _make_directions("sefa", vectors[:k], values / values.sum(), "sefa(rows normalised)")


def ganspace(
    weight: np.ndarray,
    bias: np.ndarray,
    k: int = DEFAULT_K,
    n_samples: int = GANSPACE_SAMPLES,
    seed: int = 0,
    time_embeddings: np.ndarray | None = None,
) -> Directions:
    """GANSpace (Harkonen et al. 2020, Sec. 2): PCA of features of sampled s ~ N(0, I), axes mapped back to s.

    `time_embeddings` None: the "affine" feature A(s); (m, D) embeddings e_t: the "silu" feature SiLU(e_t + A(s)).
    """
    w = np.asarray(weight, dtype=np.float64)
    b = np.asarray(bias, dtype=np.float64)
    d = w.shape[1]
    k = _check_k(k, d)
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 2 * d:
        raise InputError(f"GANSpace needs at least {2 * d} samples (twice the style dimension).")
    rng = np.random.default_rng(seed)
    s = rng.standard_normal((int(n_samples), d))  # the prior N(0, I)
    if time_embeddings is None:
        feats = s @ w.T + b  # A(s)
        feats -= feats.mean(axis=0)
        feature = "affine"
    else:
        emb = np.asarray(time_embeddings, dtype=np.float64)
        # Each sample is read at one timestep (round robin), centred per timestep (module docstring).
        which = np.arange(len(s)) % len(emb)
        pre = s @ w.T + b + emb[which]
        feats = pre / (1.0 + np.exp(-pre))  # SiLU
        for j in range(len(emb)):
            feats[which == j] -= feats[which == j].mean(axis=0)
        feature = f"silu@{len(emb)}t"
    # PCA by SVD of the centred features: rows of vt are the principal axes, s_vals^2 their variances.
    _, s_vals, vt = np.linalg.svd(feats, full_matrices=False)
    var = s_vals**2
    axes = vt[:k]  # (k, D)
    if time_embeddings is None:
        # v_k = argmin |W v - u_k|^2 (GANSpace maps w-space axes; here A is linear, so this is exact).
        back = np.linalg.lstsq(w, axes.T, rcond=None)[0].T  # (k, d)
    else:
        coords = feats @ axes.T  # x_j: PCA coordinates of each sample
        back = np.linalg.lstsq(coords, s, rcond=None)[0]  # U: (k, d), s_j ~ U^T x_j
    back /= np.maximum(np.linalg.norm(back, axis=1, keepdims=True), 1e-12)
    return _make_directions("ganspace", back, var / var.sum(), f"ganspace({feature}, n={int(n_samples)}, seed={seed})")


# -- per model: computed once, memoised, labels attached ------------------------------------------
_CACHE: dict[tuple[str, str, int, str], Directions] = {}
_LABELS_CACHE: dict[str, tuple[float, dict[str, Any]]] = {}


def _unet_of(model: Any) -> Any:
    """The PoseUNet of a pipeline, or the UNet itself."""
    unet = model if hasattr(model, "style_affine") else getattr(model, "unet", None)
    if not hasattr(unet, "style_affine"):
        raise InputError("This model has no style layer, so it offers no SeFa or GANSpace directions.")
    return unet


def model_hash(model: Any) -> str:
    """SHA-256 of `style_affine.weight` rounded to float16: the key of the label cache.

    float16 because a CUDA pipeline holds the weights in float16: the same model hashes the same on
    both devices."""
    weight = _unet_of(model).style_affine.weight.detach().cpu().half().numpy()
    return hashlib.sha256(np.ascontiguousarray(weight).tobytes()).hexdigest()


def time_embeddings(unet: Any, n: int = GANSPACE_TIMESTEPS, num_train_timesteps: int = 1000) -> np.ndarray:
    """TimeEmbedding(t) (n, D) at n timesteps evenly spaced over the training schedule (where A(s) is added)."""
    import torch

    inner = unet.unet
    t = torch.linspace(0, num_train_timesteps - 1, n).round().long().to(inner.device)
    with torch.no_grad():
        emb = inner.time_embedding(inner.time_proj(t).to(inner.dtype))
    return emb.float().cpu().numpy()


def compute_directions(
    model: Any, method: str, k: int = DEFAULT_K, feature: GanspaceFeature | None = None
) -> Directions:
    """The directions of a PoseUNet or pipeline (no cache, no labels); `feature`: GANSpace's (default GANSPACE_FEATURE)."""
    unet = _unet_of(model)
    # style_affine's weight (D, d) and bias (D,) as float32 CPU arrays
    weight, bias = (p.detach().float().cpu().numpy() for p in (unet.style_affine.weight, unet.style_affine.bias))
    if method == "sefa":
        return sefa(weight, k)
    if method == "ganspace":
        if (feature or GANSPACE_FEATURE) == "affine":
            return ganspace(weight, bias, k)
        config = getattr(model, "scheduler_config", None)
        total = int(getattr(config, "num_train_timesteps", None) or 1000)
        return ganspace(weight, bias, k, time_embeddings=time_embeddings(unet, num_train_timesteps=total))
    raise InputError(f"Unknown direction method {method!r}; choose one of {', '.join(METHODS)}.")


def directions_for(
    model: Any,
    method: str,
    k: int = DEFAULT_K,
    labels_path: str | Path | None = None,
    feature: GanspaceFeature | None = None,
) -> Directions:
    """The model's directions (memoised per weight hash, method, k and GANSpace feature), with labels when the
    cache matches."""
    if method not in METHODS:
        raise InputError(f"Unknown direction method {method!r}; choose one of {', '.join(METHODS)}.")
    k = min(int(k), int(_unet_of(model).style_affine.in_features))  # a small style code has fewer directions
    feature = feature or GANSPACE_FEATURE
    key = (model_hash(model), method, k, feature if method == "ganspace" else "")
    if key not in _CACHE:
        _CACHE[key] = compute_directions(model, method, k, feature)
    dirs = _CACHE[key]
    labels = cached_labels(key[0], dirs, LABELS_PATH if labels_path is None else labels_path, start_hash(model))
    return dirs.with_labels(labels) if labels else dirs


def read_label_cache(path: str | Path) -> dict[str, Any]:
    """The label cache file as a dict ({} when missing or unreadable), re-read only when it changes."""
    path = Path(path)
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return {}
    hit = _LABELS_CACHE.get(str(path))
    if hit is not None and hit[0] == mtime:
        return hit[1]
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data = data if isinstance(data, dict) else {}
    _LABELS_CACHE[str(path)] = (mtime, data)
    return data


def start_hash(model: Any) -> str | None:
    """SHA-256 of the mean latent's weights rounded to float16 (`models.unet`, where sampling starts), or
    None without one: the labels describe renders, and the start changes them while the directions stay."""
    mean = getattr(model, "mean_latent", None)
    if mean is None:
        return None
    digest = hashlib.sha256()
    for name, tensor in sorted(mean.state_dict().items()):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(tensor.detach().cpu().half().numpy()).tobytes())
    return digest.hexdigest()


def cached_labels(weight_hash: str, dirs: Directions, path: str | Path, start: str | None = None) -> list[str]:
    """The labels stored for this weight hash, start hash and method options (the first len(dirs)), or []."""
    data = read_label_cache(path)
    if data.get("style_affine_sha256") != weight_hash or data.get("mean_latent_sha256") != start:
        return []
    entry = data.get("methods", {}).get(dirs.method, {})
    if entry.get("options") != dirs.options:
        return []
    labels = [str(d.get("label", "")) for d in entry.get("directions", [])]
    return labels[: len(dirs)] if len(labels) >= len(dirs) else []


# -- applying amounts -----------------------------------------------------------------------------
def apply_amounts(
    style: np.ndarray, amounts: Mapping[EditKey, float], directions: Mapping[str, Directions]
) -> np.ndarray:
    """s' = s + sum amount * scale_i * v_i over the edits `{(method, index): amount}` (float32)."""
    out = np.asarray(style, dtype=np.float32).copy()
    for (method, index), amount in amounts.items():
        dirs = directions[method]
        out += np.float32(amount) * dirs.scale[index] * dirs.vectors[index]
    return out


def check_amount(method: str, index: int, amount: float, k: int, messages: list[str] | None = None) -> float:
    """Validate one edit; returns the amount clamped to +-MAX_SIGMA (a note in `messages` when clamped)."""
    if method not in METHODS:
        raise InputError(f"Unknown direction method {method!r}; choose one of {', '.join(METHODS)}.")
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < k:
        raise InputError(f"The {method} direction index must be a whole number from 0 to {k - 1}; got {index}.")
    try:
        value = float(amount)
    except (TypeError, ValueError):
        raise InputError(f"The amount for {method}:{index} must be a number; got {amount!r}.") from None
    if not math.isfinite(value):
        raise InputError(f"The amount for {method}:{index} must be a finite number of standard deviations.")
    clamped = min(max(value, -MAX_SIGMA), MAX_SIGMA)
    if clamped != value and messages is not None:
        messages.append(f"{method}:{index}={value:g} was clamped to {clamped:g} (amounts go to +-{MAX_SIGMA:g} sigma).")
    return clamped


_EDIT_RE = re.compile(r"^\s*([A-Za-z_]+)\s*:\s*(\d+)\s*=\s*(\S+)\s*$")


def parse_edit(text: str, k: int = DEFAULT_K, messages: list[str] | None = None) -> tuple[str, int, float]:
    """`"sefa:0=2.0"` -> `("sefa", 0, 2.0)`; amounts clamped to +-MAX_SIGMA (noted in `messages`)."""
    match = _EDIT_RE.match(str(text))
    if not match:
        raise InputError(f"Could not read the edit {text!r}; write METHOD:INDEX=AMOUNT, e.g. sefa:0=2.0.")
    method, index, amount = match.group(1).lower(), int(match.group(2)), match.group(3)
    try:
        value = float(amount)
    except ValueError:
        raise InputError(f"The amount in the edit {text!r} is not a number.") from None
    return method, index, check_amount(method, index, value, k, messages)


def parse_edits(texts: list[str] | None, k: int = DEFAULT_K) -> tuple[dict[EditKey, float], list[str]]:
    """Several `--edit` values -> `({(method, index): amount}, messages)`; a repeated direction keeps the last."""
    amounts: dict[EditKey, float] = {}
    messages: list[str] = []
    for text in texts or []:
        method, index, amount = parse_edit(text, k, messages)
        if (method, index) in amounts:
            messages.append(f"{method}:{index} was given twice; the last amount ({amount:g}) is used.")
        amounts[(method, index)] = amount
    return amounts, messages


# -- edits: s moved, re-rendered from the same z_T and pose ---------------------------------------
def resolve_amounts(
    pipeline: Any, amounts: Mapping[EditKey, float], directions: Mapping[str, Directions] | None, notes: list[str]
) -> tuple[dict[str, Directions], dict[EditKey, float]]:
    """The directions each edited method needs (those given, else the model's) and the checked amounts."""
    dirs = dict(directions or {})
    for method, _ in amounts:
        if method not in dirs:
            dirs[method] = directions_for(pipeline, method, DEFAULT_K)
    return dirs, {(m, int(i)): check_amount(m, i, a, len(dirs[m]), notes) for (m, i), a in amounts.items()}


def check_step_range(step_range: tuple[int, int] | None, steps: int) -> tuple[int, int] | None:
    """`(start, end)` with 0 <= start < end <= steps, or None (every step)."""
    if step_range is None:
        return None
    try:
        start, end = (int(v) for v in step_range)
    except (TypeError, ValueError):
        raise InputError("The step range must be two whole numbers (start, end).") from None
    if not 0 <= start < end <= steps:
        raise InputError(f"The step range must satisfy 0 <= start < end <= {steps} (the sampler's steps).")
    return start, end


def style_schedule(
    base: np.ndarray, edited: np.ndarray, step_range: tuple[int, int] | None
) -> Callable[[int], np.ndarray] | None:
    """`style_at(step)` for `PosePipeline.render`: the edited s inside the range, the base s outside (None: all)."""
    if step_range is None:
        return None
    start, end = step_range
    return lambda step: edited if start <= step < end else base


def edit_record(
    amounts: Mapping[EditKey, float],
    directions: Mapping[str, Directions],
    step_range: tuple[int, int] | None,
    base_style: np.ndarray,
    messages: list[str] | None = None,
) -> dict[str, Any]:
    """Plain-JSON description of an edit (kept in the state's settings, the PNG metadata and the CLI line)."""
    record: dict[str, Any] = {
        "edits": [
            {"method": m, "index": int(i), "amount": float(a), "label": directions[m].label(int(i))}
            for (m, i), a in amounts.items()
        ],
        "step_range": list(step_range) if step_range is not None else None,
    }
    if step_range is not None:  # outside the range the original s is used: keep it to re-render
        record["base_style"] = [float(v) for v in np.asarray(base_style, dtype=np.float32)]
    if messages:
        record["messages"] = list(messages)
    return record


def edit(
    pipeline: Any,
    state: GenerationState,
    amounts: Mapping[EditKey, float],
    directions: Mapping[str, Directions] | None = None,
    step_range: tuple[int, int] | None = None,
    callback: Any = None,
    messages: list[str] | None = None,
    render: Callable[..., tuple[list[Image.Image], GenerationState]] | None = None,
) -> tuple[list[Image.Image], GenerationState]:
    """Re-render `state` with s moved along directions (`{(method, index): amount}`); returns images and new state.

    The new state carries s' and `settings["edit"]` (the edits, the step range, the original s), so
    `rerender(pipeline, new_state)` reproduces it; with no step range `pipeline.render(new_state)` does too.
    `render` renders the new state instead of `pipeline.render` (a `models.batching.Batcher`'s, so that edits share
    the UNet's batches with generate requests).
    """
    # 1. Check inputs: methods, indices, finite amounts (clamped to +-MAX_SIGMA, noted in `messages`).
    notes = messages if messages is not None else []
    dirs, clean = resolve_amounts(pipeline, amounts, directions, notes)
    step_range = check_step_range(step_range, int(state.settings["steps"]))
    # 2. s' = s + sum amount * scale * v.
    base = np.asarray(state.style, dtype=np.float32)
    edited = apply_amounts(base, clean, dirs)
    new_state = state.with_style(edited)
    if clean or step_range is not None:
        new_state.settings["edit"] = edit_record(clean, dirs, step_range, base, notes)
    # 3. Re-render from the same z_T and pose; outside the step range the original s is used.
    render = render or pipeline.render
    if step_range is None:  # every step uses s': the plain render (back ends without `style_at` work too)
        return render(new_state, callback)
    return render(new_state, callback, style_at=style_schedule(base, edited, step_range))


def rerender(pipeline: Any, state: GenerationState, callback: Any = None) -> tuple[list[Image.Image], GenerationState]:
    """Render a state made by `edit`, honouring its step range (any other state renders as usual)."""
    record = state.settings.get("edit") or {}
    step_range = record.get("step_range")
    if not step_range:
        return pipeline.render(state, callback)
    base = np.asarray(record["base_style"], dtype=np.float32)
    edited = np.asarray(state.style, dtype=np.float32)
    return pipeline.render(state, callback, style_at=style_schedule(base, edited, tuple(step_range)))


def generate_edited(
    pipeline: Any,
    pose: Any,
    seed: int,
    amounts: Mapping[EditKey, float],
    steps: int = 20,
    guidance: float = 2.0,
    sampler: str = DEFAULT_SAMPLER,
    eta: float = 0.0,
    num_images: int = 1,
    size: int | None = None,
    step_range: tuple[int, int] | None = None,
    messages: list[str] | None = None,
    style: Any = None,
) -> tuple[list[Image.Image], list[GenerationState]]:
    """`pipeline(...)` with edits applied to each image's own s (image i: seed + i; `style`: this s for every
    image), rendering each image once."""
    # 1. Check inputs (the pipeline's own checks, then the edits').
    size = pipeline.native_size if size is None else size
    pipeline.check_inputs(
        pose=pose, seed=seed, steps=steps, guidance=guidance, sampler=sampler, style=style, eta=eta,
        num_images=num_images, size=size,
    )  # fmt: skip
    notes = messages if messages is not None else []
    dirs, clean = resolve_amounts(pipeline, amounts, None, notes)
    images: list[Image.Image] = []
    states: list[GenerationState] = []
    for i in range(num_images):
        # 2. z_T and s from the image's seed, 3. edit s and render (every image's record keeps the notes).
        state = pipeline.prepare(
            pose=pose, seed=int(seed) + i, steps=steps, guidance=float(guidance), sampler=sampler, style=style,
            eta=float(eta), size=size,
        )  # fmt: skip
        image, done = edit(pipeline, state, clean, dirs, step_range, messages=list(notes))
        images += image
        states.append(done)
    return images, states
