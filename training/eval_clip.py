"""The domain CLIP, evaluated: what it reads zero-shot, and what refinement toward an attribute prompt does.

    python -m training.eval clip [--json] [--clip weights/clip] [--n 600] [--seed 10000002]   # or -m training.eval_clip
    python -m training.eval refine --json [--modes style,latent,both] [--n 24] [--threads 2] [--save DIR]

Zero-shot accuracy (`clip`): the renders are samples `[0, n)` of data set `CLIP_EVAL_SEED` (seeds from
`EVAL_SEED` up are never trained on). For each attribute the prompts are its values as the captions write them
(`attribute_prompt`: "red hair", "twintails", "blue eyes", "sailor uniform", "yellow background"); a render counts as
right when its own value's prompt has the highest cosine similarity (Radford et al. 2021, Sec. 3.1.2). `average` is
the mean over hair colour, hair style, eye colour, outfit and background (colour); `background_kind` (plain,
gradient, stripes, dots, checkered) is reported besides. `clip_features` gives the CLIP's image features for FD.

Refinement (`refine`): does the character change as asked, and does it keep its pose? Pairs: pose `i` is held-out sample `i` of `EVAL_SEED` (the poses `python -m training.eval` uses),
generated with seed `EVAL_SEED + i`; its prompt asks for one attribute, cycling over every attribute the judge
reads (`--ask`, default every one of PROMPT_ATTRIBUTES that the judge has a head for) in the captions' wording (`attribute_prompt`: "pink hair",
"twintails", "green eyes", "kimono", "red dress", "dots background", "dark background"). The asked value is
drawn (seeded by `i`) among the values the attribute classifier does *not* see in the unrefined image, so every
pair asks for a change. An accessory (glasses, cat ears, beret, hair ribbon: `models.attributes.ACCESSORIES`) is
asked for by its word ("cat ears") where the judge sees none, and asked away by the same word at weight -1
("cat ears:-1", the prompts' negative weight) where it sees one.

Reported per mode (one row each, `--json`: one object with `rows`):
* `success`: share of pairs where the attribute classifier (`models.attributes`, trained on renders,
  never on CLIP: an independent judge) names the asked value after refinement; `success_by_attribute`.
* `pck_before`, `pck_after`, `pck_drop`: PCK@0.1 of the keypoint detector (`training.eval`) on the image
  before and after refinement against the input pose, pooled over points; drop = before - after.
* `others_changed_mean`: attributes the prompt did not name (nor one tied to it, `TIED`) whose class the judge
  reads differently after refinement, on average per pair; `others_changed_by_attribute` per asked attribute.
* `asked_prob_mean`: the classifier's mean probability of the asked value after refinement (finer than
  `success` on a few pairs).
* `seconds_median`, `seconds_max`: wall time of one `refine` call (default settings unless overridden);
  `cpu_seconds_median`: its process CPU time (with `--threads 1`, the wall time an idle core would take).
Besides the rows, `judge_balanced_accuracy`: how well the judge reads each asked attribute on decoded renders (its
`training_info.json`); a success rate is worth as much as that figure (the 128-px decodings erase eyes, so eye colour
and glasses read near chance there).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from models import paths
from models.attributes import ACCESSORIES
from models.autoencoder import from_pil
from models.detector import load_detector
from models.errors import InputError
from training.eval_common import (
    DEFAULT_DETECTOR,
    DEFAULT_MODEL,
    EVAL_SEED,
    heldout_renders,
    image_grid,
    output_frame_pose,
    pck_counts,
    report,
)

DEFAULT_CLIP = paths.CLIP
DEFAULT_ATTRIBUTES = paths.ATTRIBUTES
CLIP_EVAL_SEED = EVAL_SEED + 2  # data set seed of the CLIP evaluation renders
HEADLINE = ("hair_color", "hair_style", "eye_color", "outfit", "background")
CLIP_DESCRIPTION = "Zero-shot accuracy of a CLIP on held-out renders, per attribute; and CLIP image features for FD."
REFINE_DESCRIPTION = (
    "Evaluate CLIP refinement on held-out (pose, prompt) pairs: does the character change as asked, and does it keep "
    "its pose?"
)
PROMPT_ATTRIBUTES = (
    "hair_color", "hair_style", "eye_color", "outfit", "outfit_color", "background", "background_color",
    *ACCESSORIES,
)  # fmt: skip
# Attributes that change with the asked one by construction: a new outfit brings its own colours.
TIED = {"outfit": ("outfit_color", "outfit_color2"), "outfit_color": ("outfit_color2",)}
# The garment the captions colour with the outfit's main colour (`training.character.outfit_words`);
# the sailor uniform's main colour has no words there, so its pairs ask for another outfit instead.
MAIN_GARMENT = {"dress": "dress", "blouse and skirt": "blouse", "shirt and trousers": "shirt",
                "hoodie and shorts": "hoodie", "kimono": "kimono"}  # fmt: skip


# -- the captions' wording of an attribute --------------------------------------------------------
def attribute_prompt(attribute: str, value: str, outfit: str | None = None) -> str:
    """The caption phrase (`training.character.tags`) asking for `value` of an attribute ('pink hair', 'twintails',
    'green eyes', 'kimono', 'red dress' for the outfit `outfit`'s main colour, 'dots background', 'cat ears' and
    'cat ears:-1' to take them off)."""
    words = {
        "hair_color": f"{value} hair",
        "hair_style": value,
        "eye_color": f"{value} eyes",
        "outfit": value,
        "background": f"{value} background",
        "background_color": f"{value} background",
    }
    if attribute in words:
        return words[attribute]
    if attribute in ACCESSORIES and value in ("with", "without"):
        return ACCESSORIES[attribute] + ("" if value == "with" else ":-1")
    if attribute == "outfit_color" and outfit in MAIN_GARMENT:
        return f"{value} {MAIN_GARMENT[outfit]}"
    raise InputError(f"No prompt for {attribute} (outfit {outfit}).")


def attribute_prompts() -> dict[str, tuple[str, list[str], list[str]]]:
    """attribute -> (key in attributes/*.json, class values, prompts in `attribute_prompt`'s wording), from the
    renderer's vocabulary."""
    from training import character as ch

    vocabulary = {
        "hair_color": ("hair_color", ch.HAIR_COLORS),
        "hair_style": ("hair_style", ch.HAIR_STYLES),
        "eye_color": ("eye_color", ch.EYE_COLORS),
        "outfit": ("outfit", ch.OUTFITS),
        "background": ("background_color", ch.BACKGROUNDS),
        "background_kind": ("background", ch.BACKGROUND_KINDS),
    }
    return {a: (key, list(vs), [attribute_prompt(key, v) for v in vs]) for a, (key, vs) in vocabulary.items()}


# -- zero-shot accuracy ---------------------------------------------------------------------------
@torch.no_grad()
def zero_shot_accuracy(scorer, image_embs: torch.Tensor, attrs: list[dict], prompts: dict) -> dict[str, float]:
    """Accuracy per attribute (and `average` over HEADLINE) from normalised image embeddings and attribute dicts."""
    out: dict[str, float] = {}
    for name, (key, values, texts) in prompts.items():
        labels = [values.index(a[key]) if a.get(key) in values else -1 for a in attrs]
        keep = [i for i, y in enumerate(labels) if y >= 0]
        if not keep:
            continue
        text = scorer.encode_text(texts).to(image_embs.device)
        pred = (image_embs[keep] @ text.T).argmax(dim=-1).cpu().numpy()
        out[name] = float(np.mean(pred == np.array([labels[i] for i in keep])))
    head = [out[k] for k in HEADLINE if k in out]
    if head:
        out["average"] = float(np.mean(head))
    return out


def heldout_set(n: int, seed: int = CLIP_EVAL_SEED, size: int = 128) -> tuple[torch.Tensor, list[dict]]:
    """Held-out renders (n, 3, size, size) in [-1, 1] and their attribute dicts."""
    from training.synth import make_sample

    if seed < EVAL_SEED:
        raise InputError(f"Held-out data set seeds start at {EVAL_SEED}; {seed} is a training seed.")
    samples = [make_sample(seed, i, size) for i in range(n)]
    return from_pil([s["render"].image for s in samples]), [s["attributes"] for s in samples]


def clip_features(images: Any, scorer: Any, batch_size: int = 128) -> np.ndarray:
    """Image-tower embeddings (N, D) float64 of a CLIP for FD; images (N, 3, H, W) in [-1, 1] (a tensor or array) or
    a list of PIL images (converted a batch at a time)."""
    feats = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            batch = images[i : i + batch_size]
            pil = isinstance(batch, list | tuple) and hasattr(batch[0], "convert")
            x = from_pil(batch) if pil else torch.as_tensor(batch).float()
            feats.append(scorer.encode_image(x.to(scorer.device)).cpu())
    return torch.cat(feats).double().numpy()


def evaluate(clip: str | None = None, n: int = 600, seed: int = CLIP_EVAL_SEED) -> dict[str, Any]:
    """Zero-shot accuracy per attribute on `n` held-out renders of data set `seed`."""
    from models.clip import load_clip

    t0 = time.time()
    scorer = load_clip(clip or DEFAULT_CLIP)
    x, attrs = heldout_set(n, seed)
    t1 = time.time()
    embs = torch.from_numpy(clip_features(x, scorer)).float()
    acc = zero_shot_accuracy(scorer, embs, attrs, attribute_prompts())
    return {"clip": scorer.name, "n": n, "seed": seed, **{k: round(v, 4) for k, v in acc.items()},
            "seconds_render": round(t1 - t0, 1), "seconds_score": round(time.time() - t1, 1)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Command line: print the zero-shot accuracies (one JSON line with --json)."""
    ap = argparse.ArgumentParser(description=CLIP_DESCRIPTION)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--clip", default=None, help="CLIP spec (folder, NAME:TAG, NAME:/path); default weights/clip")
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--seed", type=int, default=CLIP_EVAL_SEED)
    a = ap.parse_args(argv)
    try:
        res = evaluate(a.clip, a.n, a.seed)
    except InputError as e:
        print(json.dumps({"error": str(e)}) if a.json else f"error: {e}", file=sys.stderr if not a.json else sys.stdout)
        return 2
    if a.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:>16}: {v}")
    return 0


# -- refinement -----------------------------------------------------------------------------------
def check_asked(names: list[str]) -> tuple[str, ...]:
    """The attributes to ask for, each one the judge reads; one sentence for any other."""
    if not names:
        raise InputError(f"Give at least one attribute to ask for: {', '.join(PROMPT_ATTRIBUTES)}.")
    for name in names:
        if name not in PROMPT_ATTRIBUTES:
            raise InputError(f"Unknown attribute {name!r}; choose from {', '.join(PROMPT_ATTRIBUTES)}.")
    return tuple(dict.fromkeys(names))


def choose_prompt(
    index: int, seen: dict[str, str], classes: dict[str, list[str]], asked: tuple[str, ...] = PROMPT_ATTRIBUTES
) -> tuple[str, str, str]:
    """(attribute, asked value, prompt) for pair `index`: the attribute cycles over `asked`; the value is drawn,
    seeded by the index, among the classes other than the one the classifier `seen` in the unrefined image. The
    sailor uniform's main colour has no words in the captions: such a pair asks for another outfit instead."""
    attribute = asked[index % len(asked)]
    if attribute == "outfit_color" and seen.get("outfit") not in MAIN_GARMENT:
        attribute = "outfit"
    rng = np.random.default_rng([EVAL_SEED, index])
    options = [c for c in classes[attribute] if c != seen.get(attribute)]
    value = options[int(rng.integers(len(options)))]
    return attribute, value, attribute_prompt(attribute, value, seen.get("outfit"))


def others_changed(before: dict[str, str], after: dict[str, str], asked: str) -> list[str]:
    """The judged attributes, besides the asked one and those tied to it (`TIED`), whose class changed."""
    spared = {asked, *TIED.get(asked, ())}
    return [name for name, label in before.items() if name not in spared and after.get(name) != label]


def make_pairs(
    pipe: Any, judge: Any, n: int, steps: int = 20, progress: bool = False, asked: tuple[str, ...] = PROMPT_ATTRIBUTES
) -> list[dict[str, Any]]:
    """The `n` held-out (state, image, what the judge sees, attribute, asked value, prompt) pairs, unrefined."""
    pairs = []
    for i, r in enumerate(heldout_renders(0, n)):
        images, (state,) = pipe(r.pose, seed=EVAL_SEED + i, steps=steps)
        seen = judge.top_labels(images)[0]
        attribute, value, prompt = choose_prompt(i, seen, judge.classes, asked)
        pairs.append(
            {"state": state, "image": images[0], "seen": seen, "attribute": attribute, "value": value, "prompt": prompt}
        )
        if progress:
            print(f"generated {i + 1}/{n}: {prompt!r}", file=sys.stderr, flush=True)
    return pairs


def run_mode(
    pipe: Any, pairs: list[dict[str, Any]], mode: str, scorer: Any, judge: Any, det: Any, progress: bool = False, **kw
) -> tuple[dict[str, Any], list[Image.Image], list[str]]:
    """Refine every pair in `mode` (`kw`: refine's steps, lr, pose_weight); the row of metrics, the images and the
    class the judge sees in each."""
    from models.attributes import attribute_index
    from models.refine import refine

    targets = [output_frame_pose(pipe, p["state"], p["image"]) for p in pairs]
    before = pck_counts(det.detect([p["image"] for p in pairs]), targets)
    refined, seconds, cpu, probs, shown_all = [], [], [], [], []
    hits: dict[str, list[bool]] = {a: [] for a in dict.fromkeys(p["attribute"] for p in pairs)}
    changed: dict[str, list[int]] = {a: [] for a in hits}
    for i, p in enumerate(pairs):
        t0, c0 = time.perf_counter(), time.process_time()
        result = refine(pipe, p["state"], p["prompt"], mode=mode, clip=scorer, detector=det, **kw)
        seconds.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        image = result.images[-1]
        refined.append(image)
        prob = judge.predict([image])[p["attribute"]][0]
        shown = judge.classes[p["attribute"]][int(prob.argmax())]
        shown_all.append(shown)
        probs.append(float(prob[attribute_index(p["attribute"], p["value"], judge.classes)]))
        hits[p["attribute"]].append(shown == p["value"])
        changed[p["attribute"]].append(len(others_changed(p["seen"], judge.top_labels([image])[0], p["attribute"])))
        if progress:
            print(f"{mode} {i + 1}/{len(pairs)}: {p['prompt']!r} -> {shown} ({seconds[-1]:.1f} s)", file=sys.stderr,
                  flush=True)  # fmt: skip
    after = pck_counts(det.detect(refined), targets)
    all_hits = [h for v in hits.values() for h in v]
    pck_b, pck_a = before[0] / max(before[1], 1), after[0] / max(after[1], 1)
    row = {
        "mode": mode,
        "success": float(np.mean(all_hits)),
        "success_by_attribute": {a: (float(np.mean(v)) if v else None) for a, v in hits.items()},
        "pairs_by_attribute": {a: len(v) for a, v in hits.items()},
        "others_changed_mean": float(np.mean([c for v in changed.values() for c in v])),
        "others_changed_by_attribute": {a: float(np.mean(v)) for a, v in changed.items()},
        "asked_prob_mean": float(np.mean(probs)),  # the judge's probability of the asked value, after
        "pck_before": pck_b,
        "pck_after": pck_a,
        "pck_drop": pck_b - pck_a,
        "seconds_median": statistics.median(seconds),
        "seconds_max": max(seconds),
        "cpu_seconds_median": statistics.median(cpu),  # process CPU time: wall time without other processes' load
    }
    return row, refined, shown_all


def evaluate_refine(
    modes: list[str],
    n: int = 24,
    model: str | Path = DEFAULT_MODEL,
    clip: str | Path = DEFAULT_CLIP,
    attributes: str | Path = DEFAULT_ATTRIBUTES,
    detector: str | Path = DEFAULT_DETECTOR,
    steps: int = 20,
    refine_steps: int | None = None,
    lr: float | None = None,
    pose_weight: float | None = None,
    device: str | None = None,
    save: str | Path | None = None,
    progress: bool = False,
    ask: list[str] | tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Generate `n` held-out poses, refine each with its prompt (one attribute of `ask`, default every attribute the
    judge reads) in every mode, judge; the metrics dict."""
    from models.attributes import load_attribute_classifier
    from models.pipeline import PosePipeline
    from models.refine import REFINE_MODES, check_refine_inputs, resolve_clip

    # 1. Check inputs.
    if n < 1:
        raise InputError("--n must be at least 1.")
    if not modes:
        raise InputError(f"Give at least one mode of {', '.join(REFINE_MODES)}.")
    for mode in modes:
        check_refine_inputs(mode, refine_steps, lr, pose_weight)
    asked = check_asked(list(ask)) if ask is not None else None

    # 2. Models (float32 everywhere, so a GPU run judges the same computation as a CPU one).
    pipe = PosePipeline.from_pretrained(str(model), device=device, dtype=torch.float32)
    scorer = resolve_clip(str(clip)).to(pipe.device)
    judge = load_attribute_classifier(attributes, device=pipe.device)
    det = load_detector(detector).to(pipe.device)
    unjudged = [a for a in asked or () if a not in judge.classes]
    asked = asked or tuple(a for a in PROMPT_ATTRIBUTES if a in judge.classes)
    if unjudged:
        raise InputError(f"The judge in {Path(attributes).name} has no head for {', '.join(unjudged)}; "
                         "leave it out of --ask or train the judge (python -m training.train_attributes).")  # fmt: skip

    # 3. The unrefined images and their prompts; 4. every mode on every pair, judged.
    pairs = make_pairs(pipe, judge, n, steps, progress, asked)
    kw = {"steps": refine_steps, "lr": lr, "pose_weight": pose_weight}
    rows, columns, shown = [], [[p["image"] for p in pairs]], {}
    for mode in modes:
        row, images, shown[mode] = run_mode(pipe, pairs, mode, scorer, judge, det, progress, **kw)
        rows.append(row)
        columns.append(images)

    if save:
        save_refine(save, pairs, columns, shown)
    return {
        "n": n,
        "rows": rows,
        "settings": {"steps": steps, "refine_steps": refine_steps, "lr": lr, "pose_weight": pose_weight},
        "device": str(pipe.device),
        "threads": torch.get_num_threads(),
        "split": f"synth data set seed {EVAL_SEED}, samples 0..{n - 1}, generation seeds {EVAL_SEED}+i",
        "judge": f"attribute classifier {attributes}",
        "judge_balanced_accuracy": judge_reliability(attributes, asked),
        "asked": list(asked),
        "model": str(model),
        "clip": str(clip),
    }


def judge_reliability(attributes: str | Path, asked: tuple[str, ...]) -> dict[str, float]:
    """The judge's balanced accuracy on held-out renders through the autoencoder (its `training_info.json`) for each
    asked attribute: how far its verdict on a decoded image can be trusted ({} when the folder does not say)."""
    info = Path(attributes) / "training_info.json"
    if not info.is_file():
        return {}
    split = json.loads(info.read_text()).get("accuracy", {}).get("heldout_autoencoder", {})
    figures = split.get("balanced_accuracy") or split.get("accuracy") or {}
    return {a: round(float(figures[a]), 3) for a in asked if a in figures}


def save_refine(
    save: str | Path, pairs: list[dict[str, Any]], columns: list[list[Image.Image]], shown: dict[str, list[str]]
) -> None:
    """A sheet (a row a pair: before, then each mode) and the pairs with what the judge sees in each mode."""
    Path(save).mkdir(parents=True, exist_ok=True)
    image_grid([list(r) for r in zip(*columns)]).save(Path(save) / "refine_sheet.png")
    records = [
        {**{k: p[k] for k in ("attribute", "value", "prompt")}, "shown": {m: v[i] for m, v in shown.items()}}
        for i, p in enumerate(pairs)
    ]
    (Path(save) / "refine_pairs.json").write_text(json.dumps(records, indent=1))


def main_refine(argv: list[str] | None = None) -> int:
    """`python -m training.eval refine`: print the per-mode table (one JSON object with --json)."""
    parser = argparse.ArgumentParser(prog="python -m training.eval refine", description=REFINE_DESCRIPTION)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--modes", default="style,latent,both", help="comma-separated modes (default: %(default)s)")
    parser.add_argument("--n", type=int, default=24, help="held-out (pose, prompt) pairs (default: %(default)s)")
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="pipeline folder (default: %(default)s)")
    parser.add_argument("--clip", default=str(DEFAULT_CLIP), help="CLIP to refine with (default: %(default)s)")
    parser.add_argument("--attributes", default=str(DEFAULT_ATTRIBUTES), help="judge folder (default: %(default)s)")
    parser.add_argument("--detector", default=str(DEFAULT_DETECTOR), help="detector folder (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=20, help="sampler steps of the generation (default: %(default)s)")
    parser.add_argument("--refine-steps", type=int, default=None, help="refinement steps (default: the mode's)")
    parser.add_argument("--lr", type=float, default=None, help="refinement learning rate (default: the mode's)")
    parser.add_argument("--pose-weight", type=float, default=None, help="pose term weight (default: the mode's)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when present, else cpu)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument(
        "--ask",
        default="",
        help="comma-separated attributes to ask for (default: every one the judge reads, of "
        + ", ".join(PROMPT_ATTRIBUTES)
        + ")",
    )
    parser.add_argument("--save", metavar="DIR", help="write a sheet (before, then each mode) and the pairs here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return report(
        lambda: evaluate_refine(
            [m.strip() for m in args.modes.split(",") if m.strip()],
            args.n, args.model, args.clip, args.attributes, args.detector, args.steps,
            args.refine_steps, args.lr, args.pose_weight, args.device, args.save, progress=not args.json,
            ask=[a.strip() for a in args.ask.split(",") if a.strip()] or None,
        ),
        args.json,
        _show_refine,
    )  # fmt: skip


def _show_refine(result: dict) -> None:
    """One line a mode, then one an asked attribute."""
    print(f"{'mode':<8}{'success':>9}{'others':>8}{'pck_before':>12}{'pck_after':>11}{'pck_drop':>10}"
          f"{'s median':>10}")  # fmt: skip
    for r in result["rows"]:
        print(f"{r['mode']:<8}{r['success']:>9.3f}{r['others_changed_mean']:>8.2f}{r['pck_before']:>12.3f}"
              f"{r['pck_after']:>11.3f}{r['pck_drop']:>10.3f}{r['seconds_median']:>10.2f}")  # fmt: skip
        for a, v in r["success_by_attribute"].items():
            print(f"  {a:<18}{v:>7.3f} of {r['pairs_by_attribute'][a]}, others changed "
                  f"{r['others_changed_by_attribute'][a]:.2f}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
