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

The attribute judge reads a change (`attribute_changes`, `label_from_changes`: `eval directions` labels its edits
so): per attribute the mean total variation 0.5 sum_c |p(c) - q(c)| between its class probabilities before and after;
an attribute changes at CHANGE_TV or more, a second one is named at SECOND_RATIO of the first, and an edit that changes
none is SUBTLE. `python -m training.eval judge --json [--n 40]` (`main_judge`) measures the judge's cross-talk: `--n`
held-out characters (seed JUDGE_EVAL_SEED) drawn twice in one pose, as sampled and with one attribute swapped, both
through the autoencoder (the judge only reads decodings). Each row of the matrix is one true change; its diagonal
says how surely the judge sees it, the rest of the row is what a direction would show on attributes that did not
change. Where that stays under CHANGE_TV and under SECOND_RATIO of the diagonal, a second attribute in a label is a
change of the picture, not of the judge.

The evaluation modules import from here; `training.eval` (the command line) imports them, never the other way.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from models import paths
from models.errors import InputError
from models.pose import Pose
from training import character as ch
from training.character import SWAPS, swap

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


def frechet_bootstrap_se(feats_a: np.ndarray, feats_b: np.ndarray, rounds: int = 100, seed: int = 0) -> float:
    """Standard error of `frechet_distance(a, b)`: the spread over `rounds` bootstrap resamples of both sets (Efron
    1979), which tells whether two models' FDs at this n differ by more than the sampling of their images."""
    rng = np.random.default_rng(seed)
    a, b = np.asarray(feats_a), np.asarray(feats_b)
    fds = [
        frechet_distance(a[rng.integers(len(a), size=len(a))], b[rng.integers(len(b), size=len(b))])
        for _ in range(rounds)
    ]
    return float(np.std(fds, ddof=1))


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


# -- the attribute judge reading a change ---------------------------------------------------------
JUDGE_EVAL_SEED = EVAL_SEED + 6  # data set seed of these characters (+5: the sampler start's held-out renders)
CHANGE_TV = 0.25  # mean total variation of an attribute's class probabilities for it to count as changed
SECOND_RATIO = 0.6  # a second attribute is named when it changes at least this share of the first
SUBTLE = "subtle (no attribute change)"
DESCRIPTION = "How far the attribute classifier's readings move when exactly one attribute of a character changes."


# -- reading a change -----------------------------------------------------------------------------
def pretty_attribute(name: str) -> str:
    """`hair_color` -> `hair colour` (labels are for people)."""
    return name.replace("_", " ").replace("color", "colour")


def attribute_changes(
    minus: dict[str, np.ndarray], plus: dict[str, np.ndarray], classes: dict[str, Sequence[str]]
) -> dict[str, dict[str, Any]]:
    """Per attribute: mean total variation between paired probabilities (N, C), share of argmax flips,
    and the class that loses most (`from`) and gains most (`to`) mean probability."""
    out: dict[str, dict[str, Any]] = {}
    for name, probs in minus.items():
        p, q = np.asarray(probs, np.float64), np.asarray(plus[name], np.float64)
        tv = 0.5 * np.abs(q - p).sum(axis=1)
        delta = q.mean(axis=0) - p.mean(axis=0)
        names = list(classes.get(name, [str(c) for c in range(p.shape[1])]))
        out[name] = {
            "tv": float(tv.mean()),
            "flips": float((p.argmax(axis=1) != q.argmax(axis=1)).mean()),
            "from": names[int(delta.argmin())],
            "to": names[int(delta.argmax())],
        }
    return out


def label_from_changes(changes: dict[str, dict[str, Any]]) -> tuple[str, list[str]]:
    """The label ("hair colour (pink → blue)", a second joined by " + ", or SUBTLE) and the changed attributes."""
    changed = sorted((n for n, c in changes.items() if c["tv"] >= CHANGE_TV), key=lambda n: -changes[n]["tv"])
    if not changed:
        return SUBTLE, []
    named = changed[:1]
    if len(changed) > 1 and changes[changed[1]]["tv"] >= SECOND_RATIO * changes[changed[0]]["tv"]:
        named.append(changed[1])
    parts = [f"{pretty_attribute(n)} ({changes[n]['from']} → {changes[n]['to']})" for n in named]
    return " + ".join(parts), changed


# -- the cross-talk -------------------------------------------------------------------------------


def pairs(attribute: str, n: int, seed: int = JUDGE_EVAL_SEED, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """uint8 `(m, size, size, 3)` renders of held-out characters and of the same ones with `attribute` swapped
    (m <= n: characters the swap does not apply to are skipped)."""
    from training.render import render
    from training.skeleton import sample_rig

    a, b = [], []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        rig, c = sample_rig(rng), ch.sample_character(rng)
        c2 = swap(c, attribute, rng)
        if c2 is None:
            continue
        a.append(np.asarray(render(rig.pose, c, size, rig=rig).image.convert("RGB")))
        b.append(np.asarray(render(rig.pose, c2, size, rig=rig).image.convert("RGB")))
    empty = np.zeros((0, size, size, 3), np.uint8)
    return (np.stack(a), np.stack(b)) if a else (empty, empty)


def crosstalk(
    judge: Any,
    classes: dict[str, Sequence[str]],
    decode: Callable[[np.ndarray], np.ndarray] | None,
    n: int = 40,
    attributes: Sequence[str] | None = None,
    seed: int = JUDGE_EVAL_SEED,
) -> dict[str, Any]:
    """Per swapped attribute: the judge's total variation on every head (`tv`), the number of pairs, the diagonal
    (`self`) and the largest other head (`max_other`, `max_other_tv`); `decode` maps uint8 renders to what the judge
    reads (the autoencoder's round trip; None: the renders themselves)."""
    import torch

    from training.data import to_tensor

    if n < 1:
        raise InputError("--n must be at least 1.")
    names = list(attributes or [a for a in SWAPS if a in classes])
    unknown = [a for a in names if a not in SWAPS or a not in classes]
    if unknown or not names:
        raise InputError(
            f"Unknown attribute(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(a for a in SWAPS if a in classes)}."
        )
    rows: dict[str, Any] = {}
    for name in names:
        a, b = pairs(name, n, seed)
        if not len(a):
            rows[name] = {"pairs": 0}
            continue
        if decode is not None:
            a, b = decode(a), decode(b)
        with torch.no_grad():
            pa, pb = ({h: p.float().numpy() for h, p in judge.predict(to_tensor(x)).items()} for x in (a, b))
        tv = {h: c["tv"] for h, c in attribute_changes(pa, pb, classes).items()}  # the figure the labels use
        others = {h: v for h, v in tv.items() if h != name}
        worst = max(others, key=others.get)
        rows[name] = {"pairs": len(a), "self": tv[name], "max_other": worst, "max_other_tv": others[worst], "tv": tv}
    return rows


def main_judge(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    p = argparse.ArgumentParser(description=DESCRIPTION)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--n", type=int, default=40, help="held-out characters per attribute (default: 40)")
    p.add_argument("--attributes", default=None, help=f"comma-separated (default: {','.join(SWAPS)})")
    p.add_argument("--judge", default=None, help="attribute classifier folder (default: its own)")
    p.add_argument("--ae", default=str(DEFAULT_MODEL / "autoencoder"), help="autoencoder folder ('' = the renders)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    a = p.parse_args(argv)
    import torch

    from training.data import autoencoder_round_trip

    torch.set_num_threads(a.threads)
    started = time.perf_counter()
    try:
        loaded = load_attributes(a.judge)
        if loaded is None:
            raise InputError("No attribute classifier found (weights/attributes).")
        judge, classes = loaded
        decode = None
        if a.ae:
            from models.autoencoder import load_autoencoder

            vae = load_autoencoder(a.ae)  # once, for every attribute's pairs
            decode = lambda x: autoencoder_round_trip(x, vae, torch.device("cpu"))
        rows = crosstalk(judge, dict(classes), decode, a.n, a.attributes.split(",") if a.attributes else None)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result = {
        "n": a.n,
        "seed": JUDGE_EVAL_SEED,
        "through_autoencoder": a.ae or None,
        "change_threshold_tv": CHANGE_TV,
        "second_ratio": SECOND_RATIO,
        "cross_talk_under_threshold": all(r.get("max_other_tv", 0.0) < CHANGE_TV for r in rows.values()),
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if a.json:
        print(json.dumps(result, indent=1))
    else:
        heads = list(classes)
        print("swapped".ljust(17) + "pairs " + " ".join(h[:10].rjust(10) for h in heads))
        for name, r in rows.items():
            cells = " ".join(f"{r['tv'][h]:10.2f}" for h in heads) if r["pairs"] else "(no pairs)"
            print(f"{name:<17}{r['pairs']:5d} {cells}")
    return 0
