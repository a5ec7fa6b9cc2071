"""What every evaluation stands on: the held-out split, PCK and Frechet distance, the models' loaders, and the report.

The held-out split is fixed. Sample `i` of data set `seed` is what `training.synth` writes as
image `i` of `--seed seed` (`training.synth.make_sample`: `np.random.default_rng([seed, i])` draws
the pose with `training.skeleton.sample_rig` / `sample_pose`, then the character, and
`training.render.render` draws it at 128 px). Data set seeds from `EVAL_SEED` (10,000,000) up are
reserved for evaluation and never used for training (training sets use small seeds: 0, 1, ...):
* `EVAL_SEED`: the model evaluation; samples `[0, n)` are the poses to generate (and their
  renders), samples `[n, 2n)` the second half of the renders for FD.
* `DETECTOR_VAL_SEED` (10,000,001): the detector's validation renders (`training.train_detector`).
* `EVAL_SEED + 2`: the CLIP's renders (and the characters `eval quality` draws real poses with), `+ 3`: the style
  reading's, `+ 5`: the sampler start's (`training.train_mean_latent`), `+ 6`: the judge's cross-talk.

The evaluation modules import from here; `training.eval` (the command line) imports them, never the other way.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from models import paths
from models.errors import InputError
from models.pose import Pose

DEFAULT_MODEL = paths.WEIGHTS
DEFAULT_DETECTOR = paths.DETECTOR
EVAL_SEED = 10_000_000  # data set seed of the model evaluation (seeds >= this are never trained on)
DETECTOR_VAL_SEED = EVAL_SEED + 1  # data set seed of the detector's validation renders
PCK_THRESHOLD = 0.1


# -- metrics (pure) -------------------------------------------------------------------------------
def pck_counts(
    pred: Pose | Sequence[Pose], target: Pose | Sequence[Pose], thr: float = PCK_THRESHOLD
) -> tuple[int, int]:
    """(hits, total) over the target's visible points: a hit lies within `thr` x the longer side of
    the target's visible bounding box (in the target's pixels); the prediction's visibility is ignored."""
    preds = [pred] if isinstance(pred, Pose) else list(pred)
    targets = [target] if isinstance(target, Pose) else list(target)
    if len(preds) != len(targets):
        raise InputError(f"PCK needs as many predicted poses as targets; got {len(preds)} and {len(targets)}.")
    hits = total = 0
    for p, t in zip(preds, targets):
        vis = t.visible
        if not vis.any():
            continue
        x0, y0, x1, y1 = t.bbox()
        scale = max(x1 - x0, y1 - y0, 1e-6)
        frame = np.array([t.width, t.height], dtype=np.float64)
        # Both poses are normalised to their own frame; the same image resized keeps them aligned.
        dist = np.linalg.norm((p.xy.astype(np.float64) - t.xy.astype(np.float64)) * frame, axis=1)
        hits += int((dist[vis] <= thr * scale).sum())
        total += int(vis.sum())
    return hits, total


def pck(pred: Pose | Sequence[Pose], target: Pose | Sequence[Pose], thr: float = PCK_THRESHOLD) -> float:
    """PCK@thr pooled over all visible target points (nan when no point is visible)."""
    hits, total = pck_counts(pred, target, thr)
    return hits / total if total else float("nan")


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Frechet distance of Gaussians fitted to two feature sets (N, D) (Heusel et al. 2017, Eq. 6):
    `|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))`."""
    a = np.asarray(feats_a, dtype=np.float64)
    b = np.asarray(feats_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise InputError(f"Frechet distance needs two (N, D) arrays of the same D; got {a.shape} and {b.shape}.")
    if len(a) < 2 or len(b) < 2:
        raise InputError("Frechet distance needs at least two samples per set.")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    cov_a, cov_b = np.atleast_2d(cov_a), np.atleast_2d(cov_b)
    # Tr((S_a S_b)^(1/2)) = Tr((S_a^(1/2) S_b S_a^(1/2))^(1/2)): the inner matrix is symmetric PSD,
    # so its square root comes from a real eigendecomposition (no complex round-off as with sqrtm).
    root_a = _sqrt_psd(cov_a)
    inner = root_a @ cov_b @ root_a
    tr_covmean = float(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)).sum())
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr_covmean)


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (negative round-off eigenvalues -> 0)."""
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


# -- the held-out split ---------------------------------------------------------------------------
def heldout_render(index: int, size: int = 128, seed: int = EVAL_SEED) -> Any:
    """Sample `index` of the reserved data set `seed` (a `training.render.Render`), as synth draws it."""
    if seed < EVAL_SEED:
        raise InputError(f"Held-out data set seeds start at {EVAL_SEED}; {seed} is a training seed.")
    from training.synth import make_sample

    return make_sample(seed, index, size)["render"]


def heldout_renders(start: int, n: int, size: int = 128, seed: int = EVAL_SEED) -> list[Any]:
    """Samples `start .. start + n - 1` of the reserved data set `seed`."""
    return [heldout_render(start + i, size, seed) for i in range(n)]


# -- models and images ----------------------------------------------------------------------------
def load_detector(path: str | Path) -> Any:
    """The keypoint detector from a folder (config.json + safetensors), on the CPU, in eval mode."""
    from models.detector import load_detector as load

    return load(path)


def load_attributes(path: str | None = None) -> tuple[Any, dict[str, Sequence[str]]] | None:
    """The attribute classifier and its class names (`models.attributes`), or None when it is not available."""
    try:
        from models.attributes import ATTRIBUTES, load_attribute_classifier

        clf = load_attribute_classifier(path) if path else load_attribute_classifier()
    except (ImportError, InputError, OSError, ValueError) as err:
        print(f"no attribute classifier: {type(err).__name__}: {err}", file=sys.stderr)
        return None
    return clf, dict(getattr(clf, "classes", None) or ATTRIBUTES)


def round_trip(vae: Any, images: list[Image.Image], batch: int = 16) -> list[Image.Image]:
    """PIL images through `models.autoencoder.round_trip` (posterior mean, on the autoencoder's device)."""
    from models.autoencoder import from_pil, to_pil
    from models.autoencoder import round_trip as tensor_round_trip

    return to_pil(tensor_round_trip(vae, from_pil(images), batch))


def output_frame_pose(pipe: Any, state: Any, image: Image.Image) -> Pose:
    """The pose in the generated image's frame: the pipeline draws the state's pose (as given) fitted
    to its square frame (`models.pipeline.frame_pose`); a pipeline's own `frame_pose(pose, size)`,
    when it has one, is the authority."""
    size = image.width
    if hasattr(pipe, "frame_pose"):
        return pipe.frame_pose(state.pose, size)
    import models.pipeline as pipeline_module

    return pipeline_module.frame_pose(state.pose, size)


def generate(
    pipe: Any, poses: Sequence[Pose], steps: int, seed0: int = EVAL_SEED, progress: bool = False, **extra: Any
) -> tuple[list[Image.Image], list[Pose], list[Any], list[float]]:
    """One image a pose (seed `seed0 + i`, one call each so the time is per image): the images, the poses in the
    output's frame, the generation states and the seconds each took; `extra` goes to every call."""
    images, targets, states, seconds = [], [], [], []
    for i, pose in enumerate(poses):
        t0 = time.perf_counter()
        out, made = pipe(pose, seed=seed0 + i, steps=steps, num_images=1, **extra)
        seconds.append(time.perf_counter() - t0)
        images.append(out[0])
        targets.append(output_frame_pose(pipe, made[0], out[0]))
        states.append(made[0])
        if progress:
            print(f"generated {i + 1}/{len(poses)} ({seconds[-1]:.2f} s)", file=sys.stderr, flush=True)
    return images, targets, states, seconds


def image_grid(rows: list[list[Image.Image]]) -> Image.Image:
    """Images in a grid on white, one list per row, each at the size of the first."""
    w, h = rows[0][0].size
    sheet = Image.new("RGB", (max(len(r) for r in rows) * w, len(rows) * h), "white")
    for y, row in enumerate(rows):
        for x, im in enumerate(row):
            sheet.paste(im.convert("RGB").resize((w, h)), (x * w, y * h))
    return sheet


# -- command line ---------------------------------------------------------------------------------
def report(compute: Callable[[], dict[str, Any]], as_json: bool, show: Callable[[dict], None] | None = None) -> int:
    """Run an evaluation and print its result: one JSON object, or `show(result)` (default: one line a figure);
    an InputError becomes `{"error": ...}` (or `error: ...`) and exit status 1."""
    try:
        result = compute()
    except InputError as err:
        print(json.dumps({"error": str(err)}) if as_json else f"error: {err}")
        return 1
    if as_json:
        print(json.dumps(result))
    elif show is not None:
        show(result)
    else:
        width = max(len(k) for k in result) + 2
        for key, value in result.items():
            print(f"{key:>{width}}: {value:.4f}" if isinstance(value, float) else f"{key:>{width}}: {value}")
    return 0
