"""Zero-shot accuracy of a CLIP on held-out renders, per attribute; and CLIP image features for FD.

    python -m training.eval_clip [--json] [--clip weights/clip] [--n 600] [--seed 10000002]

The renders are samples `[0, n)` of data set `CLIP_EVAL_SEED` (`training.eval.heldout_render`; seeds from
`EVAL_SEED` up are never trained on). For each attribute the prompts are its values as the captions write them
("red hair", "twintails", "blue eyes", "sailor uniform", "yellow background"); a render counts as right when
its own value's prompt has the highest cosine similarity (Radford et al. 2021, Sec. 3.1.2).
`average` is the mean over hair colour, hair style, eye colour, outfit and background (colour);
`background_kind` (plain, gradient, stripes, dots, checkered) is reported besides.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np
import torch

from models.errors import InputError
from training.eval import EVAL_SEED

CLIP_EVAL_SEED = EVAL_SEED + 2  # data set seed of the CLIP evaluation renders
HEADLINE = ("hair_color", "hair_style", "eye_color", "outfit", "background")


def attribute_prompts() -> dict[str, tuple[str, list[str], list[str]]]:
    """attribute -> (key in attributes/*.json, class values, prompts), from the renderer's vocabulary."""
    from training import character as ch

    return {
        "hair_color": ("hair_color", list(ch.HAIR_COLORS), [f"{c} hair" for c in ch.HAIR_COLORS]),
        "hair_style": ("hair_style", list(ch.HAIR_STYLES), list(ch.HAIR_STYLES)),
        "eye_color": ("eye_color", list(ch.EYE_COLORS), [f"{c} eyes" for c in ch.EYE_COLORS]),
        "outfit": ("outfit", list(ch.OUTFITS), list(ch.OUTFITS)),
        "background": ("background_color", list(ch.BACKGROUNDS), [f"{c} background" for c in ch.BACKGROUNDS]),
        "background_kind": ("background", list(ch.BACKGROUND_KINDS), [f"{k} background" for k in ch.BACKGROUND_KINDS]),
    }


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
    arr = np.stack([np.asarray(s["render"].image.convert("RGB")) for s in samples])
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    return x, [s["attributes"] for s in samples]


def clip_features(images: Any, scorer=None, batch_size: int = 128) -> np.ndarray:
    """Image-tower embeddings (N, D) float64 of the domain CLIP (or `scorer`) for FD; images (N, 3, H, W) in [-1, 1]
    (a tensor or array) or a list of PIL images."""
    scorer = scorer or _default_scorer()
    if isinstance(images, list | tuple) and images and hasattr(images[0], "convert"):
        arr = np.stack([np.asarray(im.convert("RGB")) for im in images])
        images = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    x = torch.as_tensor(images).float()
    feats = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            feats.append(scorer.encode_image(x[i : i + batch_size].to(scorer.device)).cpu())
    return torch.cat(feats).double().numpy()


_SCORER = None


def _default_scorer():
    """The shipped domain CLIP, loaded once."""
    global _SCORER
    if _SCORER is None:
        from models.clip import load_clip

        _SCORER = load_clip()
    return _SCORER


def evaluate(clip: str | None = None, n: int = 600, seed: int = CLIP_EVAL_SEED) -> dict[str, Any]:
    """Zero-shot accuracy per attribute on `n` held-out renders of data set `seed`."""
    from models.clip import DEFAULT_CLIP, load_clip

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
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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


if __name__ == "__main__":
    sys.exit(main())
