"""One attribute of a character changed, the rest kept: the renderer's exact counterfactuals.

    c2 = swap(c, "hair_color", rng)      # c with another hair colour; None where the swap does not apply

Used by `training.eval judge` (the judge's cross-talk on one-attribute changes) and by `training.synth --pairs`
(training pairs that differ in one attribute, for `train_ldm --pair-weight`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from models.errors import InputError
from training import character as ch

# Outfits whose colours follow their own rule: a sailor uniform's top is always white, a dress shows its second
# colour only as a 1 px belt (`models.attributes.record_labels`). Colour swaps skip them.
_FIXED_COLOURS = ("sailor uniform", "dress")


def _other(rng: np.random.Generator, pool: Sequence[str], *current: str) -> str:
    """A class of `pool` other than the `current` ones, drawn by `rng`."""
    left = [p for p in pool if p not in current]
    return left[int(rng.integers(len(left)))]


def _outfit_colour(slot: int) -> Callable[[ch.Character, np.random.Generator], ch.Character | None]:
    """A swap of the outfit's main (0) or second (1) colour, keeping the two different."""

    def swap_colour(c: ch.Character, rng: np.random.Generator) -> ch.Character | None:
        if c.outfit in _FIXED_COLOURS:
            return None
        colours = list(c.outfit_colors)
        colours[slot] = _other(rng, list(ch.CLOTH_COLORS), *colours)
        return dataclasses.replace(c, outfit_colors=(colours[0], colours[1]))

    return swap_colour


def _outfit(c: ch.Character, rng: np.random.Generator) -> ch.Character | None:
    """Another outfit the renderer gives this gender, among those that take any two colours."""
    pool = ("shirt and trousers", "hoodie and shorts", "kimono") if c.gender == "boy" else ch.OUTFITS
    pool = [o for o in pool if o not in _FIXED_COLOURS]
    if c.outfit in _FIXED_COLOURS or len(pool) < 2:
        return None
    return dataclasses.replace(c, outfit=_other(rng, pool, c.outfit))


def _hair_style(c: ch.Character, rng: np.random.Generator) -> ch.Character:
    """Another hair style the renderer gives this gender."""
    pool = ("short hair", "spiked hair", "ponytail") if c.gender == "boy" else ch.HAIR_STYLES
    return dataclasses.replace(c, hair_style=_other(rng, pool, c.hair_style))


# attribute (the judge's head name) -> the swap that changes it alone, or None where it does not apply
SWAPS: dict[str, Callable[[ch.Character, np.random.Generator], ch.Character | None]] = {
    "background_color": lambda c, r: dataclasses.replace(c, background_color=_other(r, list(ch.BACKGROUNDS), c.background_color)),
    "background": lambda c, r: dataclasses.replace(c, background=_other(r, ch.BACKGROUND_KINDS, c.background)),
    "hair_color": lambda c, r: dataclasses.replace(c, hair_color=_other(r, list(ch.HAIR_COLORS), c.hair_color)),
    "hair_style": _hair_style,
    "outfit": _outfit,
    "outfit_color": _outfit_colour(0),
    "outfit_color2": _outfit_colour(1),
    "skin": lambda c, r: dataclasses.replace(c, skin=_other(r, list(ch.SKIN_TONES), c.skin)),
    "eye_color": lambda c, r: dataclasses.replace(c, eye_color=_other(r, list(ch.EYE_COLORS), c.eye_color)),
}  # fmt: skip


def swap(character: ch.Character, attribute: str, rng: np.random.Generator) -> ch.Character | None:
    """`character` with only `attribute` set to another class (drawn by `rng`); None where the swap does not apply."""
    if attribute not in SWAPS:
        raise InputError(f"Unknown attribute '{attribute}'; known: {', '.join(SWAPS)}.")
    return SWAPS[attribute](character, rng)
