"""Evaluate and label the SeFa / GANSpace directions of the style code on held-out poses.

    python -m training.eval_directions --json                                    # figures, one JSON object
    python -m training.eval_directions --label --out weights/directions.json     # also write the label cache
    python -m training.eval_directions --label --json --out weights/directions.json   # both, one run

For the top `--k` directions of each method, each of `--seeds` held-out poses (`training.eval`'s split,
samples 0.. of `EVAL_SEED`, seed EVAL_SEED + i) is rendered with its own s and with s +- `--amount`
standard deviations along the direction (`models.directions.edit`, `--steps` sampler steps). Reported per
direction:
* `pixel_change`: mean |edited - unedited| over pixels and channels, in [0, 255] units; `visible` when
  it is at least VISIBLE_PIXELS on both sides (+ and -). Why 4/255: it is 8x the 8-bit rounding
  error (0.5), and a mean of 4 over the whole 128 px frame is what recolouring a tenth of it by 40
  levels gives (a hair or background colour change covers about that much), while the unedited
  render repeats to the exact pixel. `noise_floor_pixels` gives, for scale, the change when s is
  perturbed by isotropic noise of 0.1 sigma.
* `feature_distance`: |f(edited) - f(unedited)| in the detector's pooled features
  (`KeypointDetector.embed`), divided by the mean distance between two different seeds' unedited
  images (1.0 = as different as two other characters); `feature_distance_attributes`: the same in
  the attribute classifier's penultimate features (appearance, where the detector's are pose).
* `pck`: PCK@0.1 of the keypoint detector on the edited images (both signs) against the asked pose.
* `changes`: per attribute of the attribute classifier (`models.attributes`), the mean total
  variation 0.5 sum_c |p+(c) - p-(c)| between its class probabilities at +amount and -amount;
  an attribute changes when this is at least CHANGE_TV. `attributes_changed` counts them
  (disentanglement: 1 is ideal, 0 is "subtle"). The `label` names the attribute that changes most,
  "hair colour (pink → blue)" (the class that loses most probability → the one that gains most),
  plus a second when it changes at least SECOND_RATIO as much; "subtle (no attribute change)" when
  none does, or when the edit is not `visible` (an uncertain classifier can flip on changes no one
  sees). A label is a clear single-attribute label when it names exactly one attribute.

`--pathways` tells where an edit's changes come from: s reaches the image twice, through the UNet's style affine
and through the sampler's start E[z_0 | s, pose] (`models.unet`). Each direction is rendered once more with
the edit given to the start alone (the UNet reads the unedited s) and once to the UNet alone (the start from the
unedited s); `pathways.start` and `pathways.unet` hold those renders' `pixel_change`, `changes` (attribute: total
variation) and `label`, so one sees which of the two mixes attributes.

`--axes N` adds the first N axes of s as a third block, "axes" (`style_axes`): on a labels-mode model the guided
attributes one by one, which tells how cleanly the model changes one attribute per axis, apart from how closely
SeFa and GANSpace find those axes.

`--label` writes the labels to `--out` keyed by the SHA-256 of `style_affine.weight` and the method's
options; `models.directions.directions_for` attaches them only when both match, so after retraining
one run of this command re-does the labels and the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from models.detector import load_detector
from models.directions import (
    DEFAULT_K,
    LABELS_PATH,
    MAX_SIGMA,
    METHODS,
    Directions,
    apply_amounts,
    directions_for,
    edit,
    model_hash,
    start_hash,
)
from models.errors import InputError
from training.eval_common import (
    CHANGE_TV,
    DEFAULT_DETECTOR,
    DEFAULT_MODEL,
    EVAL_SEED,
    SUBTLE,
    attribute_changes,
    heldout_render,
    label_from_changes,
    load_attributes,
    output_frame_pose,
    pck_counts,
)

VISIBLE_PIXELS = 4.0  # mean |change| in [0, 255] units for an edit to count as visible (module docstring)
NOISE_SIGMA = 0.1  # the isotropic perturbation of s that gives the noise floor
PCK_TARGET = 0.8
SIDES = ((-1.0, "minus"), (1.0, "plus"))  # the sign of each side of an edit, and its name


# -- pure measures --------------------------------------------------------------------------------
def pixel_change(a: Sequence[Image.Image], b: Sequence[Image.Image]) -> float:
    """Mean |a - b| over images, pixels and channels, in [0, 255] units."""
    x = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in a])
    y = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in b])
    return float(np.abs(x - y).mean())


def feature_distance(edited: np.ndarray, base: np.ndarray) -> float:
    """Mean |f(edited_j) - f(base_j)|, divided by the mean distance between different bases (nan with one)."""
    edited, base = np.asarray(edited, np.float64), np.asarray(base, np.float64)
    moved = float(np.linalg.norm(edited - base, axis=1).mean())
    n = len(base)
    if n < 2:
        return float("nan")
    pair = [np.linalg.norm(base[i] - base[j]) for i in range(n) for j in range(i + 1, n)]
    return moved / max(float(np.mean(pair)), 1e-12)


def attribute_probs(classifier: Any, images: Sequence[Image.Image]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The classifier's class probabilities per attribute, as (N, C) arrays, and its penultimate features
    (the output of its `shared` layer, before the heads; None when it has no such layer)."""
    import torch

    from models.autoencoder import from_pil

    captured: list[torch.Tensor] = []
    shared = getattr(classifier, "shared", None)
    hook = shared.register_forward_hook(lambda m, i, o: captured.append(o)) if shared is not None else None
    try:
        with torch.no_grad():
            probs = classifier.predict(from_pil(images))
    finally:
        if hook is not None:
            hook.remove()
    feats = torch.cat(captured).float().cpu().numpy() if captured else None
    out = {n: (p.detach().float().cpu().numpy() if torch.is_tensor(p) else np.asarray(p)) for n, p in probs.items()}
    return out, feats


def training_steps(model: str | Path) -> int | None:
    """The UNet's training steps from the model folder's `training_info_ldm.json` (None when absent)."""
    path = Path(model) / "training_info_ldm.json"
    try:
        info = json.loads(path.read_text())
        return int(info.get("total_steps", info["steps"]))  # total_steps: a warm-started run counts its stages
    except (OSError, ValueError, KeyError, TypeError):
        return None


def style_axes(pipe: Any, k: int) -> Directions:
    """The first k axes of s as directions ("axes"): on a labels-mode model, its guided attributes one by one. A
    diagnostic beside SeFa and GANSpace: how cleanly the model changes one attribute per axis, apart from how
    closely the two methods find those axes (a direction with a few percent of the backdrop axis in it flips the
    backdrop wherever s sits near a bin edge)."""
    d = int(pipe.unet.style_affine.in_features)
    if not 0 < k <= d:
        raise InputError(f"--axes must be from 1 to the style dimension {d}.")
    eye = np.eye(d, dtype=np.float32)[:k]
    return Directions("axes", eye, np.ones(k, np.float32), np.zeros(k, np.float32), options=f"axes(first {k})")


def edited_render(pipe: Any, state: Any, key: tuple[str, int], amount: float, dirs: Directions) -> Image.Image:
    """The render of `state` with s moved `amount` sigma along direction `key` (SeFa/GANSpace through
    `models.directions.edit`; "axes", which the app does not offer, by moving s directly, as `edit` would)."""
    if key[0] == "axes":
        moved = apply_amounts(np.asarray(state.style, dtype=np.float32), {key: amount}, {"axes": dirs})
        return pipe.render(state.with_style(moved))[0][0]
    return edit(pipe, state, {key: amount}, {key[0]: dirs})[0][0]


def pathway_renders(
    pipe: Any, states: Sequence[Any], edit_key: tuple[str, int], amount: float, dirs: Directions, pathway: str
) -> dict[str, list[Image.Image]]:
    """The renders at -amount and +amount with the edit given to one pathway of s: "start" (the sampler's start
    E[z_0 | s, pose] reads the edited s, the UNet the unedited one) or "unet" (the other way round)."""
    sides: dict[str, list[Image.Image]] = {}
    for sign, name in SIDES:
        images = []
        for st in states:
            base = np.asarray(st.style, dtype=np.float32)
            moved = apply_amounts(base, {edit_key: sign * amount}, {edit_key[0]: dirs})
            unet_s, start_s = (base, moved) if pathway == "start" else (moved, base)
            images.append(pipe.render(st.with_style(unet_s), start_style=start_s)[0][0])
        sides[name] = images
    return sides


def judged_row(
    sides: dict[str, list[Image.Image]], base: list[Image.Image], clf: Any, classes: dict[str, Sequence[str]]
) -> tuple[dict[str, Any], np.ndarray | None]:
    """`pixel_change` (both sides), `visible`, and with a classifier the attribute `changes` and the `label` of one
    edit's renders at -amount and +amount against the unedited `base`; and the classifier's penultimate features
    of the minus then the plus renders (None without them)."""
    minus, plus = pixel_change(sides["minus"], base), pixel_change(sides["plus"], base)
    row: dict[str, Any] = {
        "pixel_change": pixel_change(sides["minus"] + sides["plus"], base + base),
        "pixel_change_minus": minus,
        "pixel_change_plus": plus,
        "visible": min(minus, plus) >= VISIBLE_PIXELS,
    }
    if clf is None:
        return row, None
    (p_minus, f_minus), (p_plus, f_plus) = (attribute_probs(clf, sides[n]) for n in ("minus", "plus"))
    label, changed = label_from_changes(changes := attribute_changes(p_minus, p_plus, classes))
    # A classifier can flip on changes no one sees (blurry, uncertain images): an edit that is not visible is subtle.
    row.update(label=label if row["visible"] else SUBTLE, attributes_changed=len(changed), changes=changes)
    return row, (np.concatenate([f_minus, f_plus]) if f_minus is not None else None)


# -- the evaluation -------------------------------------------------------------------------------
@dataclass
class Unedited:
    """The unedited renders of the held-out poses: their states, images, target poses and features."""

    states: list[Any]
    images: list[Image.Image]
    targets: list[Any]
    feats: np.ndarray
    attr_feats: np.ndarray | None


def evaluate_directions(
    pipe: Any,
    detector: Any,
    attributes: tuple[Any, dict[str, Sequence[str]]] | None,
    methods: Sequence[str] = METHODS,
    k: int = DEFAULT_K,
    seeds: int = 4,
    steps: int = 10,
    amount: float = 2.0,
    poses: Sequence[Any] | None = None,
    progress: bool = False,
    ganspace_feature: str | None = None,
    pathways: bool = False,
    axes: int = 0,
) -> dict[str, Any]:
    """Render every direction at +-amount on held-out poses; return figures and labels (module docstring); with
    `pathways`, also each direction's changes through the start alone and through the UNet alone."""
    if seeds < 1 or steps < 1 or k < 1:
        raise InputError("--seeds, --steps and --k must be at least 1.")
    if not 0 < amount <= MAX_SIGMA:
        raise InputError(f"--amount must be above 0 and at most {MAX_SIGMA:g} standard deviations.")
    started = time.perf_counter()
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    judge = attributes if attributes is not None else (None, {})
    if pathways and getattr(pipe, "mean_latent", None) is None:
        raise InputError("--pathways needs a model with a sampler start (mean_latent/): without one s has one path.")
    if poses is None:
        poses = [heldout_render(i).pose for i in range(seeds)]
    ref = unedited_renders(pipe, detector, judge[0], [poses[i] for i in range(seeds)], steps)
    result = _result_header(pipe, detector, judge[0], ref, seeds, steps, amount)
    for method in [*methods, *(["axes"] if axes > 0 else [])]:
        dirs = style_axes(pipe, axes) if method == "axes" else directions_for(pipe, method, k, feature=ganspace_feature)
        rows = []
        for i in range(len(dirs)):
            row = direction_row(pipe, detector, judge, ref, dirs, (method, i), amount, pathways)
            rows.append(row)
            say(f"{method} {i}: {row['pixel_change']:.2f} px, pck {row['pck']:.3f}, {row.get('label', '')}")
        result["methods"][method] = {"options": dirs.options, "summary": summarise(rows), "directions": rows}
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def unedited_renders(pipe: Any, detector: Any, clf: Any, poses: Sequence[Any], steps: int) -> Unedited:
    """The unedited render of each pose (seed EVAL_SEED + i), its pose in the output frame, and its features."""
    states = [pipe.prepare(pose, EVAL_SEED + i, steps=steps) for i, pose in enumerate(poses)]
    images, targets = [], []
    for st in states:
        out, done = pipe.render(st)
        images += out
        targets.append(output_frame_pose(pipe, done, out[0]))
    feats = detector.embed(images)
    attr_feats = attribute_probs(clf, images)[1] if clf is not None else None
    return Unedited(states, images, targets, feats, attr_feats)


def _result_header(
    pipe: Any, detector: Any, clf: Any, ref: Unedited, seeds: int, steps: int, amount: float
) -> dict[str, Any]:
    """The figures that do not depend on a direction: the model's hashes, the settings, the noise floor (s
    perturbed by N(0, NOISE_SIGMA^2 I)) and the detector's PCK on the unedited renders."""
    hits, total = pck_counts(detector.detect(ref.images), ref.targets)
    rng = np.random.default_rng(0)
    noisy = [pipe.render(st.with_style(st.style + NOISE_SIGMA * rng.standard_normal(st.style.shape)))[0][0]
             for st in ref.states]  # fmt: skip
    return {
        "style_affine_sha256": model_hash(pipe),
        "mean_latent_sha256": start_hash(pipe),
        "seeds": seeds,
        "steps": steps,
        "amount_sigma": amount,
        "visible_threshold_pixels": VISIBLE_PIXELS,
        "noise_floor_pixels": pixel_change(noisy, ref.images),
        "noise_sigma": NOISE_SIGMA,
        "change_threshold_tv": CHANGE_TV,
        "pck_unedited": hits / total if total else float("nan"),
        "features": "feature_distance: detector pooled bottleneck; feature_distance_attributes: the attribute "
        "classifier's penultimate layer; both relative to the mean distance between two seeds' images",
        "attribute_classifier": "models.attributes" if clf is not None else None,
        "methods": {},
    }


def direction_row(
    pipe: Any,
    detector: Any,
    judge: tuple[Any, dict[str, Sequence[str]]],
    ref: Unedited,
    dirs: Directions,
    key: tuple[str, int],
    amount: float,
    pathways: bool,
) -> dict[str, Any]:
    """The figures of one direction (`key`: method, index) at -amount and +amount (module docstring)."""
    clf, classes = judge
    sides = {name: [edited_render(pipe, st, key, sign * amount, dirs) for st in ref.states] for sign, name in SIDES}
    edited = sides["minus"] + sides["plus"]
    h, n = pck_counts(detector.detect(edited), ref.targets + ref.targets)
    judged, feats = judged_row(sides, ref.images, clf, classes)
    row: dict[str, Any] = {
        "index": key[1],
        "explained": float(dirs.explained[key[1]]),
        "feature_distance": feature_distance(detector.embed(edited), np.concatenate([ref.feats, ref.feats])),
        "pck": h / n if n else float("nan"),
        **judged,
    }
    if ref.attr_feats is not None and feats is not None:
        row["feature_distance_attributes"] = feature_distance(feats, np.concatenate([ref.attr_feats, ref.attr_feats]))
    if pathways:
        arms = {arm: pathway_renders(pipe, ref.states, key, amount, dirs, arm) for arm in ("start", "unet")}
        row["pathways"] = {arm: judged_row(renders, ref.images, clf, classes)[0] for arm, renders in arms.items()}
    return row


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts against the issue's targets: visible at +-amount with PCK >= 0.8; clear single-attribute labels."""
    out: dict[str, Any] = {
        "k": len(rows),
        "visible": sum(r["visible"] for r in rows),
        "pck_at_least_0.8": sum(r["pck"] >= PCK_TARGET for r in rows),
        "visible_and_pck_ok": sum(r["visible"] and r["pck"] >= PCK_TARGET for r in rows),
        "min_pck": min(r["pck"] for r in rows),
        "mean_pixel_change": float(np.mean([r["pixel_change"] for r in rows])),
    }
    if rows and "label" in rows[0]:
        out["single_attribute_labels"] = sum(_single(r) for r in rows)
        out["mean_attributes_changed"] = float(np.mean([r["attributes_changed"] for r in rows]))
        if "pathways" in rows[0]:
            for arm in ("start", "unet"):
                arms = [r["pathways"][arm] for r in rows]
                out[f"{arm}_only"] = {
                    "visible": sum(a["visible"] for a in arms),
                    "single_attribute_labels": sum(_single(a) for a in arms),
                    "mean_attributes_changed": float(np.mean([a["attributes_changed"] for a in arms])),
                }
    return out


def _single(row: dict[str, Any]) -> bool:
    """Whether a row's label names exactly one attribute."""
    return row["label"] != SUBTLE and " + " not in row["label"]


def label_cache(result: dict[str, Any], model: str | Path) -> dict[str, Any]:
    """The label cache (`weights/directions.json`) from an evaluation with labels."""
    return {
        "style_affine_sha256": result["style_affine_sha256"],
        "mean_latent_sha256": result.get("mean_latent_sha256"),
        "model": str(model),
        "unet_training_steps": training_steps(model),
        "made_by": "python -m training.eval_directions --label",
        "attribute_classifier": result.get("attribute_classifier"),
        "seeds": result["seeds"],
        "steps": result["steps"],
        "amount_sigma": result["amount_sigma"],
        "methods": {
            m: {
                "options": r["options"],
                "directions": [
                    {
                        "index": d["index"],
                        "label": d["label"],
                        "changes": {n: round(c["tv"], 3) for n, c in d["changes"].items()},
                    }
                    for d in r["directions"]
                ],
            }
            for m, r in result["methods"].items()
            if m in METHODS  # not the "axes" diagnostic: the app offers no such sliders
        },
    }


# -- command line ---------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    """The command line's options."""
    parser = argparse.ArgumentParser(prog="python -m training.eval_directions", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--label", action="store_true", help="write the automatic labels to --out")
    parser.add_argument("--out", default=str(LABELS_PATH), help="label cache to write (default: %(default)s)")
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="pipeline folder (default: %(default)s)")
    parser.add_argument("--detector", default=str(DEFAULT_DETECTOR), help="detector folder (default: %(default)s)")
    parser.add_argument("--attributes", default=None, help="attribute classifier folder (default: its own)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated (default: %(default)s)")
    parser.add_argument("--k", type=int, default=DEFAULT_K, help="directions per method (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=4, help="held-out poses/seeds (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=10, help="sampler steps (default: %(default)s)")
    parser.add_argument("--amount", type=float, default=2.0, help="edit size in sigma (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    parser.add_argument(
        "--ganspace-feature",
        choices=["affine", "silu"],
        default=None,
        help="the feature GANSpace's PCA reads (default: models.directions.GANSPACE_FEATURE)",
    )
    parser.add_argument("--pathways", action="store_true", help="also through the start alone and the UNet alone")
    parser.add_argument(
        "--axes", type=int, default=0, help="also the first N axes of s, one by one (a diagnostic; `style_axes`)"
    )
    parser.add_argument("--device", default="cpu", help="device of the pipeline, float32 on any (default: %(default)s)")
    return parser


def _evaluate_args(args: argparse.Namespace) -> dict[str, Any]:
    """Check the options, load the models and evaluate."""
    import torch

    from models.pipeline import PosePipeline

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise InputError(f"Unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}.")
    attributes = load_attributes(args.attributes)
    if args.label and attributes is None:
        raise InputError("--label needs the attribute classifier (models.attributes), which could not be loaded.")
    # float32 everywhere, so that a GPU run gives the CPU's figures (and labels) up to round-off.
    pipe = PosePipeline.from_pretrained(args.model, device=args.device, dtype=torch.float32)
    return evaluate_directions(
        pipe,
        load_detector(args.detector),
        attributes,
        methods,
        args.k,
        args.seeds,
        args.steps,
        args.amount,
        progress=not args.json,
        ganspace_feature=args.ganspace_feature,
        pathways=args.pathways,
        axes=args.axes,
    )


def _show(result: dict[str, Any]) -> None:
    """One line a method and one a direction (and its pathways), then the noise floor."""
    for method, r in result["methods"].items():
        print(f"{method}: {json.dumps(r['summary'])}")
        for d in r["directions"]:
            print(
                f"  {d['index']:>2} px {d['pixel_change']:6.2f} feat {d['feature_distance']:.3f} "
                f"pck {d['pck']:.3f} {d.get('label', '')}"
            )
            for arm, a in d.get("pathways", {}).items():
                print(f"       {arm} only: px {a['pixel_change']:6.2f} {a.get('label', '')}")
    print(f"noise floor {result['noise_floor_pixels']:.2f} px; {result['seconds']} s")


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, evaluate, print figures and/or write the label cache."""
    args = _parser().parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = _evaluate_args(args)
    except InputError as err:
        print(json.dumps({"error": str(err)}) if args.json else f"error: {err}")
        return 1
    result["model"] = args.model
    if result["attribute_classifier"]:
        result["attribute_classifier"] = args.attributes or "models.attributes default (weights/attributes)"
    result["unet_training_steps"] = training_steps(args.model)
    if args.label:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(label_cache(result, args.model), indent=1, ensure_ascii=False) + "\n")
        result["labels_written"] = str(out)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        _show(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
