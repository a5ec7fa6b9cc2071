"""Weighted prompts for CLIP refinement, written as VQGAN-CLIP writes them.

    parse_prompts("pink hair:1 | sailor uniform:0.5 | hat:-0.5")
    -> [("pink hair", 1.0), ("sailor uniform", 0.5), ("hat", -0.5)]
    prompt_terms("pink hair", negative_prompt="hat")  -> [("pink hair", 1.0), ("hat", -1.0)]

Terms are split on `|`; a term's weight follows its last `:` (1 when there is none). A positive
weight pulls the image towards the text, a negative one pushes it away (the refinement loss is
`sum_i w_i * spherical_dist(image, text_i)`, Crowson's VQGAN-CLIP notebook). The negative prompt is
parsed the same way with every weight negated. An empty prompt means "no refinement": `[]`.
Texts longer than the CLIP tokenizer's context are cut by the tokenizer; `truncation_messages`
says which.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from models.errors import InputError

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
