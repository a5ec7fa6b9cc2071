"""Evaluate and label the SeFa / GANSpace directions of the style code on held-out poses.

    python -m training.eval_directions --json                                    # figures, one JSON object
    python -m training.eval_directions --label --out weights/directions.json     # also write the label cache
    python -m training.eval_directions --label --json --out weights/directions.json   # both, one run

For the top `--k` directions of each method, each of `--seeds` held-out poses (`training.eval`'s split,
samples 0.. of `EVAL_SEED`, seed EVAL_SEED + i) is rendered with its own s and with s +- `--amount`
standard deviations along the direction (`models.editing.edit`, `--steps` sampler steps). Reported per
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
and through the sampler's start E[z_0 | s, pose] (`models.mean_latent`). Each direction is rendered once more with
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
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from models.directions import (
    DEFAULT_K,
    LABELS_PATH,
    MAX_SIGMA,
    METHODS,
    Directions,
    apply_amounts,
    directions_for,
    model_hash,
    start_hash,
)
from models.editing import edit
from models.errors import InputError
from training.eval import (
    DEFAULT_DETECTOR,
    DEFAULT_MODEL,
    EVAL_SEED,
    heldout_render,
    load_detector,
    output_frame_pose,
    pck_counts,
)

VISIBLE_PIXELS = 4.0  # mean |change| in [0, 255] units for an edit to count as visible (module docstring)
CHANGE_TV = 0.25  # mean total variation of an attribute's class probabilities for it to count as changed
SECOND_RATIO = 0.6  # a second attribute is named when it changes at least this share of the first
NOISE_SIGMA = 0.1  # the isotropic perturbation of s that gives the noise floor
PCK_TARGET = 0.8
SUBTLE = "subtle (no attribute change)"


# -- pure measures --------------------------------------------------------------------------------
def to_unit(images: Sequence[Image.Image]) -> Any:
    """PIL images -> float tensor (B, 3, H, W) in [-1, 1] (the attribute classifier's input)."""
    from models.autoencoder import from_pil

    return from_pil(images)


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


def attribute_probs(classifier: Any, images: Sequence[Image.Image]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The classifier's class probabilities per attribute, as (N, C) arrays, and its penultimate features
    (the output of its `shared` layer, before the heads; None when it has no such layer)."""
    import torch

    captured: list[torch.Tensor] = []
    shared = getattr(classifier, "shared", None)
    hook = shared.register_forward_hook(lambda m, i, o: captured.append(o)) if shared is not None else None
    try:
        with torch.no_grad():
            probs = classifier.predict(to_unit(images))
    finally:
        if hook is not None:
            hook.remove()
    feats = torch.cat(captured).float().cpu().numpy() if captured else None
    out = {n: (p.detach().float().cpu().numpy() if torch.is_tensor(p) else np.asarray(p)) for n, p in probs.items()}
    return out, feats


def load_attributes(path: str | None = None) -> tuple[Any, dict[str, Sequence[str]]] | None:
    """The attribute classifier and its class names (`models.attributes`), or None when it is not available."""
    try:
        from models.attributes import ATTRIBUTES, load_attribute_classifier

        clf = load_attribute_classifier(path) if path else load_attribute_classifier()
    except (ImportError, InputError, OSError, ValueError) as err:
        print(f"no attribute classifier: {type(err).__name__}: {err}", file=sys.stderr)
        return None
    return clf, dict(getattr(clf, "classes", None) or ATTRIBUTES)


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
    `models.editing.edit`; "axes", which the app does not offer, by moving s directly, as `edit` would)."""
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
    for sign, name in ((-1.0, "minus"), (1.0, "plus")):
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
    # 1. Check inputs.
    if seeds < 1 or steps < 1 or k < 1:
        raise InputError("--seeds, --steps and --k must be at least 1.")
    if not 0 < amount <= MAX_SIGMA:
        raise InputError(f"--amount must be above 0 and at most {MAX_SIGMA:g} standard deviations.")
    started = time.perf_counter()
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    clf, classes = attributes if attributes is not None else (None, {})
    if pathways and getattr(pipe, "mean_latent", None) is None:
        raise InputError("--pathways needs a model with a sampler start (mean_latent/): without one s has one path.")

    # 2. The unedited renders of held-out poses (seed EVAL_SEED + i), their target poses and features.
    if poses is None:
        poses = [heldout_render(i).pose for i in range(seeds)]
    states = [pipe.prepare(poses[i], EVAL_SEED + i, steps=steps) for i in range(seeds)]
    base, targets = [], []
    for st in states:
        images, done = pipe.render(st)
        base += images
        targets.append(output_frame_pose(pipe, done, images[0]))
    base_feats = detector.embed(base)
    base_attr_feats = attribute_probs(clf, base)[1] if clf is not None else None
    hits, total = pck_counts(detector.detect(base), targets)

    # 3. The noise floor: s perturbed by N(0, NOISE_SIGMA^2 I).
    rng = np.random.default_rng(0)
    noisy = [pipe.render(st.with_style(st.style + NOISE_SIGMA * rng.standard_normal(st.style.shape)))[0][0]
             for st in states]  # fmt: skip
    result: dict[str, Any] = {
        "style_affine_sha256": model_hash(pipe),
        "mean_latent_sha256": start_hash(pipe),
        "seeds": seeds,
        "steps": steps,
        "amount_sigma": amount,
        "visible_threshold_pixels": VISIBLE_PIXELS,
        "noise_floor_pixels": pixel_change(noisy, base),
        "noise_sigma": NOISE_SIGMA,
        "change_threshold_tv": CHANGE_TV,
        "pck_unedited": hits / total if total else float("nan"),
        "features": "feature_distance: detector pooled bottleneck; feature_distance_attributes: the attribute "
        "classifier's penultimate layer; both relative to the mean distance between two seeds' images",
        "attribute_classifier": "models.attributes" if clf is not None else None,
        "methods": {},
    }

    # 4. Each direction at -amount and +amount.
    for method in [*methods, *(["axes"] if axes > 0 else [])]:
        dirs = style_axes(pipe, axes) if method == "axes" else directions_for(pipe, method, k, feature=ganspace_feature)
        rows = []
        for i in range(len(dirs)):
            sides: dict[str, list[Image.Image]] = {}
            for sign, name in ((-1.0, "minus"), (1.0, "plus")):
                sides[name] = [edited_render(pipe, st, (method, i), sign * amount, dirs) for st in states]
            edited = sides["minus"] + sides["plus"]
            h, n = pck_counts(detector.detect(edited), targets + targets)
            judged, feats = judged_row(sides, base, clf, classes)
            row: dict[str, Any] = {
                "index": i,
                "explained": float(dirs.explained[i]),
                "feature_distance": feature_distance(detector.embed(edited), np.concatenate([base_feats, base_feats])),
                "pck": h / n if n else float("nan"),
                **judged,
            }
            if base_attr_feats is not None and feats is not None:
                row["feature_distance_attributes"] = feature_distance(
                    feats, np.concatenate([base_attr_feats, base_attr_feats])
                )
            if pathways:
                arms = {arm: pathway_renders(pipe, states, (method, i), amount, dirs, arm) for arm in ("start", "unet")}
                row["pathways"] = {arm: judged_row(renders, base, clf, classes)[0] for arm, renders in arms.items()}
            rows.append(row)
            say(f"{method} {i}: {row['pixel_change']:.2f} px, pck {row['pck']:.3f}, {row.get('label', '')}")
        result["methods"][method] = {"options": dirs.options, "summary": summarise(rows), "directions": rows}
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


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
def main(argv: list[str] | None = None) -> int:
    """Parse the command line, evaluate, print figures and/or write the label cache."""
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
    args = parser.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
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
        result = evaluate_directions(
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
