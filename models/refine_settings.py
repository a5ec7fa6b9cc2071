"""What a refinement is asked: weighted prompts, and its knobs, limits and defaults with their checks. Torch-free, so
that the UI (which shows the defaults at start-up, before any model loads) and `models.refine` (which runs them) read
the same values.

Prompts are written as VQGAN-CLIP writes them:

    parse_prompts("pink hair:1 | sailor uniform:0.5 | hat:-0.5")
    -> [("pink hair", 1.0), ("sailor uniform", 0.5), ("hat", -0.5)]
    prompt_terms("pink hair", negative_prompt="hat")  -> [("pink hair", 1.0), ("hat", -1.0)]

Terms are split on `|`; a term's weight follows its last `:` (1 when there is none). A positive weight pulls the
image towards the text, a negative one pushes it away (the refinement loss is `sum_i w_i * spherical_dist(image,
text_i)`, Crowson's VQGAN-CLIP notebook). The negative prompt is parsed the same way with every weight negated. An
empty prompt means "no refinement": `[]`. Texts longer than the CLIP tokenizer's context are cut by the tokenizer;
`truncation_messages` says which.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

import numpy as np

from models.errors import InputError

RefineMode = Literal["style", "latent", "both"]
REFINE_MODES: tuple[str, ...] = get_args(RefineMode)

MAX_REFINE_STEPS = 100
MAX_LR = 1.0
MAX_POSE_WEIGHT = 100.0

# Style mode: the deterministic DDIM steps from z_T that the gradient flows through.
STYLE_DDIM_STEPS = 4


@dataclass(frozen=True)
class RefineSettings:
    """The knobs of one refinement stage; defaults are sized for about 10 s on 2 CPU cores (128 px)."""

    steps: int  # normalised gradient descent steps
    lr: float  # step size: the RMS per coordinate of a step (s and z_0 both have unit prior scale)
    pose_weight: float  # weight of the detector's heatmap loss against the input pose
    cutouts: int  # CLIP views per step: the whole image, then random augmented crops
    tether: float  # weight of mean((x - x_start)^2) on the optimised variable
    # Latent mode, for a prompt that names no region: a k x k offset, upsampled bilinearly onto z_0, which can only
    # make smooth (colour-region) changes, not pixel-wise ones.
    offset_grid: int = 16
    # Weight of the colour-contrast term: a colour prompt ("pink hair") as CLIP's zero-shot classifier against the
    # same prompt in every other colour ("red hair", "blue hair", ...; `models.refine_settings.colour_alternatives`).
    contrast: float = 0.0
    # Latent mode: before the gradient steps, each colour prompt's region is recoloured to the decoder-gamut colour
    # CLIP scores best (`models.recolour`); this many candidates are projected into z_0 and decoded (0: off).
    colour_search: int = 0
    # Latent mode: weight of mean((1 - m) (x - x_start)^2) over the decoded pixels x outside the named regions m.
    # The decoder's group norms see the whole latent, so a region's change also tints the rest of the picture.
    keep_outside: float = 0.0


# Chosen by `python -m training.eval refine` sweeps; what was tried, the figures and the decisions: docs/EXPERIMENTS.md.
DEFAULTS: dict[str, RefineSettings] = {
    "style": RefineSettings(steps=4, lr=0.3, pose_weight=0.0, cutouts=2, tether=0.0),
    "latent": RefineSettings(
        steps=8,
        lr=0.1,
        pose_weight=1.0,
        cutouts=4,
        tether=0.1,
        offset_grid=16,
        contrast=3.0,
        colour_search=4,
        keep_outside=300.0,
    ),
}
# "both" runs each stage with fewer steps so the pair stays within the same time.
BOTH_STEPS = {"style": 3, "latent": 6}


# -- checks -----------------------------------------------------------------------------------------
def _check_number(name: str, value: Any, lo: float, hi: float, lo_open: bool = False) -> float:
    """`value` as a float within `[lo, hi]` (`(lo, hi]` when `lo_open`), else InputError."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = math.isfinite(value) and (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        bracket = "(" if lo_open else "["
        raise InputError(f"The refinement {name} must be a number in {bracket}{lo:g}, {hi:g}].")
    return value


def check_refine_inputs(mode: Any, steps: Any, lr: Any, pose_weight: Any) -> None:
    """Raise InputError with one sentence for a refinement setting out of range."""
    if mode not in REFINE_MODES:
        raise InputError(f"Unknown refine mode {mode!r}; choose one of {', '.join(REFINE_MODES)}.")
    if steps is not None and (
        isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= MAX_REFINE_STEPS
    ):
        raise InputError(f"The number of refine steps must be a whole number from 1 to {MAX_REFINE_STEPS}.")
    if lr is not None:
        _check_number("learning rate", lr, 0.0, MAX_LR, lo_open=True)
    if pose_weight is not None:
        _check_number("pose weight", pose_weight, 0.0, MAX_POSE_WEIGHT)


def stage_settings(
    mode: str, steps: int | None, lr: float | None, pose_weight: float | None
) -> list[tuple[str, RefineSettings]]:
    """The stages a mode runs ("both": style then latent), the given values overriding the defaults."""
    stages = ["style", "latent"] if mode == "both" else [mode]
    out = []
    for stage in stages:
        base = DEFAULTS[stage]
        n = steps if steps is not None else (BOTH_STEPS[stage] if mode == "both" else base.steps)
        given = {"steps": int(n), "lr": lr, "pose_weight": pose_weight}
        out.append((stage, replace(base, **{k: v for k, v in given.items() if v is not None})))
    return out


# -- weighted prompts, written as VQGAN-CLIP writes them -----------------------------------------------------------
MAX_PROMPT_CHARS = 20_000  # longer input is cut here first (before parsing) so parsing stays cheap
MAX_TERMS = 16  # more `|` terms than this are dropped, with a message (each costs a text-tower forward)
MAX_ABS_WEIGHT = 100.0

Term = tuple[str, float]


def _short(text: str, n: int = 40) -> str:
    """`text` cut to `n` characters with an ellipsis, for messages."""
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def _parse_weight(raw: str, term: str) -> float:
    """The weight after a term's last `:`; InputError unless it is a finite number within the limit."""
    if not raw.strip():
        raise InputError(f"The prompt part '{_short(term.strip())}' has a ':' but no weight after it.")
    try:
        weight = float(raw)
    except ValueError:
        raise InputError(
            f"The weight '{_short(raw.strip(), 20)}' after ':' in '{_short(term.strip())}' is not a number; "
            "write it like 'pink hair:0.5'."
        ) from None
    if not math.isfinite(weight) or abs(weight) > MAX_ABS_WEIGHT:
        raise InputError(
            f"The weight in '{_short(term)}' must be a finite number from -{MAX_ABS_WEIGHT:g} to {MAX_ABS_WEIGHT:g}."
        )
    return weight


def parse_prompts(prompt: str | None, messages: list[str] | None = None) -> list[Term]:
    """`"a:1 | b:-0.5"` -> `[(text, weight)]`; empty -> `[]`. Notes (cuts) are appended to `messages`."""
    if prompt is None:
        return []
    if not isinstance(prompt, str):
        raise InputError(f"The prompt must be text, not {type(prompt).__name__}.")
    notes = messages if messages is not None else []
    if len(prompt) > MAX_PROMPT_CHARS:
        notes.append(f"The prompt is {len(prompt):,} characters long; only the first {MAX_PROMPT_CHARS:,} were read.")
        prompt = prompt[:MAX_PROMPT_CHARS]
    terms: list[Term] = []
    for part in prompt.split("|"):
        if not part.strip():
            continue  # "a || b" and a trailing "|" are harmless
        text, weight = part, 1.0
        if ":" in part:
            text, raw = part.rsplit(":", 1)
            weight = _parse_weight(raw, part)
        text = " ".join(text.split())
        if not text:
            raise InputError(f"The prompt part '{_short(part.strip())}' has a weight but no text.")
        if not any(ch.isalnum() for ch in text):  # CLIP reads punctuation alone as nothing in particular
            raise InputError(f"The prompt part '{_short(text)}' has no words; describe what to change.")
        terms.append((text, weight))
    if len(terms) > MAX_TERMS:
        notes.append(f"The prompt has {len(terms)} parts separated by '|'; only the first {MAX_TERMS} were used.")
        terms = terms[:MAX_TERMS]
    return terms


def prompt_terms(
    prompt: str | None, negative_prompt: str | None = None, messages: list[str] | None = None
) -> list[Term]:
    """The prompt's terms followed by the negative prompt's with weights negated; `[]` for an empty prompt."""
    notes = messages if messages is not None else []
    positive = parse_prompts(prompt, notes)
    negative = parse_prompts(negative_prompt, notes)
    if not positive:
        if negative:
            notes.append("A negative prompt alone does not refine: give a prompt too.")
        return []
    terms = positive + [(text, -weight) for text, weight in negative]
    if len(terms) > MAX_TERMS:
        notes.append(f"The prompt and negative prompt have {len(terms)} parts; only the first {MAX_TERMS} were used.")
        terms = terms[:MAX_TERMS]
    if all(w == 0 for _, w in terms):
        notes.append("Every prompt weight is 0: nothing to refine.")
        return []
    return terms


# Colour words a prompt can swap (the renderer's and CLIP's everyday vocabulary); the longer phrase wins
# ("light blue" before "blue"). "gray" is read as "grey", the captions' spelling.
COLOUR_WORDS: tuple[str, ...] = (
    "light blue", "red", "orange", "yellow", "green", "blue", "navy", "purple", "pink", "brown", "black",
    "white", "grey", "aqua", "teal", "blonde", "dark",
)  # fmt: skip
_COLOUR_RE = re.compile(r"\b(" + "|".join(sorted(map(re.escape, (*COLOUR_WORDS, "gray")), key=len, reverse=True))
                        + r")\b", re.IGNORECASE)  # fmt: skip


def colour_alternatives(text: str) -> list[str]:
    """`text` with its first colour word swapped for every other colour word ('pink hair' -> ['red hair', ...]);
    `[]` when it names no colour. These are the classes a colour prompt competes with (`models.refine`)."""
    m = _COLOUR_RE.search(text)
    if m is None:
        return []
    found = "grey" if m.group(1).lower() == "gray" else m.group(1).lower()
    return [text[: m.start()] + c + text[m.end() :] for c in COLOUR_WORDS if c != found]


def truncation_messages(terms: Sequence[Term], truncated: Sequence[bool], context_length: int) -> list[str]:
    """One message per term the tokenizer cut at its context length."""
    return [
        f"The prompt '{_short(text)}' is longer than CLIP's {context_length} tokens and was cut there."
        for (text, _), cut in zip(terms, truncated)
        if cut
    ]


__all__ = [
    "COLOUR_WORDS",
    "MAX_PROMPT_CHARS",
    "MAX_TERMS",
    "Term",
    "colour_alternatives",
    "parse_prompts",
    "prompt_terms",
    "truncation_messages",
]
