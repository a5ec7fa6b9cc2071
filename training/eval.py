"""Evaluate the pose-conditioned generator on poses it never saw, and read poses out of images.

    python -m training.eval [--json] [--model weights] [--detector weights/detector] [--n 64] [--steps 10]
    python -m training.eval detect IMAGE... [--detector weights/detector]
    python -m training.eval quality --json [--n 256] [--ae DIR]         # what a person sees (training.eval_quality)
    python -m training.eval clip|refine|directions|style|judge --json   # the CLIP, refinement, directions, ...

The held-out split is fixed. Sample `i` of data set `seed` is what `training.synth` writes as
image `i` of `--seed seed` (`training.synth.make_sample`: `np.random.default_rng([seed, i])` draws
the pose with `training.skeleton.sample_rig` / `sample_pose`, then the character, and
`training.render.render` draws it at 128 px). Data set seeds from `EVAL_SEED` (10,000,000) up are
reserved for evaluation and never used for training (training sets use small seeds: 0, 1, ...):
* `EVAL_SEED`: the model evaluation; samples `[0, n)` are the poses to generate (and their
  renders), samples `[n, 2n)` the second half of the renders for FD.
* `DETECTOR_VAL_SEED` (10,000,001): the detector's validation renders (`training.train_detector`).

Reported (one JSON object with `--json`):
* `pck`: PCK@0.1 of the detector on the generated images against the pose the model was asked for
  (the state's pose brought to the output frame as the pipeline frames it, `output_frame_pose`),
  over the points that pose marks visible; the distance
  threshold is 0.1 of the longer side of the visible points' bounding box.
* `pck_renders`: the same detector on the ground-truth renders of the same poses (its own ceiling).
* `pck_reconstructions`: the same on those renders passed through the pipeline's autoencoder only
  (encode, decode): the share of the gap to `pck_renders` due to decoding, not to the denoiser.
* `fd`: Frechet distance (Heusel et al. 2017, Eq. 6) between generated images and the second half
  of the held-out renders; `fd_ref`: the same between the two halves of the held-out renders
  (the floor `fd` should approach). Features: the detector's pooled bottleneck (`fd_features`).
* `seconds_per_image`: median wall time of one `pipe(...)` call for one image.
"""

from __future__ import annotations

import argparse
import json
import statistics
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


# -- model evaluation -----------------------------------------------------------------------------
def load_detector(path: str | Path) -> Any:
    """The keypoint detector from a folder (config.json + safetensors), on the CPU, in eval mode."""
    from models.detector import load_detector as load

    return load(path)


def evaluate(
    model: str | Path = DEFAULT_MODEL,
    detector: str | Path = DEFAULT_DETECTOR,
    n: int = 64,
    steps: int = 10,
    sampler: str | None = None,
    guidance: float | None = None,
    save: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Generate `n` held-out poses, read them back, compare with renders; return the metrics dict."""
    # 1. Check inputs
    if n < 2:
        raise InputError("--n must be at least 2 (Frechet distance needs two samples per set).")
    if steps < 1:
        raise InputError("--steps must be at least 1.")
    from models.pipeline import PosePipeline

    # 2. Models
    det = load_detector(detector)
    pipe = PosePipeline.from_pretrained(str(model))
    extra: dict[str, Any] = {}
    if sampler is not None:
        extra["sampler"] = sampler
    if guidance is not None:
        extra["guidance"] = guidance

    # 3. Held-out renders: [0, n) are the poses to generate, [n, 2n) the other half for FD
    renders = heldout_renders(0, 2 * n)
    first, second = renders[:n], renders[n:]

    # 4. Generate, one image per call so the time is per image
    images, targets, seconds, settings = [], [], [], {}
    for i, r in enumerate(first):
        t0 = time.perf_counter()
        out_images, states = pipe(r.pose, seed=EVAL_SEED + i, steps=steps, num_images=1, **extra)
        seconds.append(time.perf_counter() - t0)
        images.append(out_images[0])
        targets.append(output_frame_pose(pipe, states[0], out_images[0]))
        if not settings:
            settings = _settings_of(states[0])
        if save:
            Path(save).mkdir(parents=True, exist_ok=True)
            out_images[0].save(Path(save) / f"{i:04d}.png")
        if progress:
            print(f"generated {i + 1}/{n} ({seconds[-1]:.2f} s)", file=sys.stderr, flush=True)

    # 5. Pose fidelity: the detector on generated images and on the renders of the same poses
    pred_gen = det.detect(images)
    pred_ren = det.detect([r.image for r in first])
    hits, total = pck_counts(pred_gen, targets)
    hits_r, total_r = pck_counts(pred_ren, [r.pose for r in first])
    # The same renders through the autoencoder alone: tells "the detector cannot read decoded
    # images" apart from "the denoiser does not follow the pose".
    recon = autoencoder_round_trip(pipe, [r.image for r in first])
    pck_recon = pck(det.detect(recon), [r.pose for r in first]) if recon else None

    # 6. Image statistics: FD in the detector's feature space
    f_gen = det.embed(images)
    f_first = det.embed([r.image for r in first])
    f_second = det.embed([r.image for r in second])

    return {
        "n": n,
        "steps": steps,
        "sampler": settings.get("sampler", sampler),
        "guidance": settings.get("guidance", guidance),
        "pck": hits / total if total else float("nan"),
        "pck_points": total,
        "pck_renders": hits_r / total_r if total_r else float("nan"),
        "pck_reconstructions": pck_recon,
        "fd": frechet_distance(f_gen, f_second),
        "fd_ref": frechet_distance(f_first, f_second),
        "fd_features": f"detector pooled bottleneck ({det.feature_dim} dims, {Path(detector).name})",
        "seconds_per_image": statistics.median(seconds),
        "split": f"synth data set seed {EVAL_SEED}, samples 0..{2 * n - 1} (generated: first {n}; fd: vs the second {n})",
        "model": str(model),
        "detector": str(detector),
    }


def autoencoder_round_trip(pipe: Any, images: list[Image.Image], batch: int = 16) -> list[Image.Image]:
    """The images encoded (posterior mean) and decoded by the pipeline's autoencoder; [] without one."""
    if not hasattr(pipe, "vae") or not hasattr(pipe, "decode"):
        return []
    return round_trip(pipe.vae, images, batch)


def round_trip(vae: Any, images: list[Image.Image], batch: int = 16) -> list[Image.Image]:
    """The images encoded (posterior mean) and decoded by an autoencoder, on its device and in its dtype."""
    import torch

    from models.autoencoder import decode, encode, to_pil
    from training.eval_directions import to_unit

    out: list[Image.Image] = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            out += to_pil(decode(vae, encode(vae, to_unit(images[i : i + batch]).to(vae.device, vae.dtype))))
    return out


def output_frame_pose(pipe: Any, state: Any, image: Image.Image) -> Pose:
    """The pose in the generated image's frame: the pipeline draws the state's pose (as given) fitted
    to its square frame (`models.pipeline.frame_pose`); a pipeline's own `frame_pose(pose, size)`,
    when it has one, is the authority."""
    size = image.width
    if hasattr(pipe, "frame_pose"):
        return pipe.frame_pose(state.pose, size)
    import models.pipeline as pipeline_module

    return pipeline_module.frame_pose(state.pose, size)


def _settings_of(state: Any) -> dict[str, Any]:
    """The sampler settings a generation state records (`state.settings`, or its JSON record's)."""
    settings = getattr(state, "settings", None)
    if isinstance(settings, dict):
        return settings
    for name in ("to_dict", "to_record"):
        if hasattr(state, name):
            record = getattr(state, name)()
            s = record.get("settings", {}) if isinstance(record, dict) else {}
            return s if isinstance(s, dict) else {}
    return {}


# -- command line ---------------------------------------------------------------------------------
def main_detect(argv: list[str]) -> int:
    """`detect IMAGE...`: one JSON line per image (our pose JSON plus "input", or an "error")."""
    from models.image_io import load_image

    parser = argparse.ArgumentParser(prog="python -m training.eval detect", description="Read the pose out of images.")
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("--detector", default=str(DEFAULT_DETECTOR), help="detector folder (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        det = load_detector(args.detector)
    except InputError as err:
        print(json.dumps({"error": str(err)}))
        return 1
    status = 0
    for path in args.images:
        try:
            pose = det.detect([load_image(path)])[0]
            line = {"input": path, **pose.to_dict()}
        except InputError as err:
            line, status = {"input": path, "error": str(err)}, 1
        print(json.dumps(line), flush=True)
    return status


def main_eval(argv: list[str]) -> int:
    """The model evaluation: print the metrics (JSON with --json)."""
    parser = argparse.ArgumentParser(prog="python -m training.eval", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="pipeline folder (default: %(default)s)")
    parser.add_argument("--detector", default=str(DEFAULT_DETECTOR), help="detector folder (default: %(default)s)")
    parser.add_argument("--n", type=int, default=64, help="held-out poses to generate (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=8, help="sampler steps (default: %(default)s)")
    parser.add_argument("--sampler", default=None, help="sampler name (default: the pipeline's)")
    parser.add_argument("--guidance", type=float, default=None, help="pose guidance scale (default: the pipeline's)")
    parser.add_argument("--save", metavar="DIR", help="also write the generated images here")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return report(
        lambda: evaluate(
            args.model, args.detector, args.n, args.steps, args.sampler, args.guidance, args.save,
            progress=not args.json,
        ),
        args.json,
    )  # fmt: skip


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


# Sub-commands evaluated by their own modules: `python -m training.eval clip --json` runs
# `training.eval_clip.main(["--json"])`.
SUBCOMMANDS = {
    "clip": "training.eval_clip",
    "refine": "training.eval_refine",
    "directions": "training.eval_directions",
    "style": "training.eval_style",
    "judge": "training.eval_judge",
    "quality": "training.eval_quality",
}


def main(argv: list[str] | None = None) -> int:
    """Dispatch: `detect ...`, a sub-command of SUBCOMMANDS, or the model evaluation (the default)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "detect":
        return main_detect(argv[1:])
    if argv and argv[0] in SUBCOMMANDS:
        import importlib

        return int(importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:]) or 0)
    if argv and argv[0] == "model":  # the default, also reachable by name
        argv = argv[1:]
    return main_eval(argv)


if __name__ == "__main__":
    sys.exit(main())
