"""The attribute judge reading a change: the label it gives an edit, and how far its readings move when exactly one
attribute of a character changes.

    python -m training.eval judge --json [--n 40]

A change is read as `eval directions` labels its edits (`attribute_changes`, `label_from_changes`): per attribute the
mean total variation 0.5 sum_c |p(c) - q(c)| between the judge's class probabilities before and after; an attribute
changes at CHANGE_TV or more, a second one is named at SECOND_RATIO of the first, and an edit that changes none is
SUBTLE.

The cross-talk: for `--n` held-out characters (data set seed JUDGE_EVAL_SEED, never trained on) and each attribute
the renderer can change alone, the character is drawn twice in the same pose: as sampled, and with that one attribute
set to another class (`swap`). Both renders go through the autoencoder, since the judge only ever reads decodings.
Then the judge's class probabilities are compared head by head with the figure `eval directions` uses: the mean
total variation 0.5 sum_c |p(c) - q(c)|.

Why: `eval directions` counts an attribute as changed at a total variation of CHANGE_TV and names a second one at
SECOND_RATIO of the first. Each row of the matrix is one true change. Its diagonal says how surely the judge sees
that change. The rest of the row is cross-talk: what a direction would show on attributes that did not change.
Where the cross-talk stays under CHANGE_TV, and under SECOND_RATIO of the diagonal, a second attribute in a label is
a change of the picture, not of the judge.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from models.errors import InputError
from training import character as ch
from training.character import SWAPS, swap
from training.eval_common import DEFAULT_MODEL, EVAL_SEED, load_attributes

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

    from training.train_attributes import to_tensor

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


def main(argv: list[str] | None = None) -> int:
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

    from training.train_attributes import autoencoder_round_trip

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


if __name__ == "__main__":
    sys.exit(main())
