"""A character's look as a dataclass of named attributes, and the attribute lists (also used as labels).

Names are short and captionable ("pink hair", "twintails"); the eval and CLIP code use the tuples
below (`HAIR_COLORS`, `HAIR_STYLES`, `EYE_COLORS`, `OUTFITS`, `BACKGROUNDS`, ...) as class labels.
A character's captions (`tags`, `sentence`), and the same character with one attribute changed (`swap`):

    c2 = swap(c, "hair_color", rng)      # c with another hair colour; None where the swap does not apply

The swaps are used by `training.eval judge` (the judge's cross-talk on one-attribute changes) and by
`training.synth --pairs` (training pairs that differ in one attribute, for `train_ldm --pair-weight`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from models.errors import InputError

RGB = tuple[int, int, int]

HAIR_COLORS: dict[str, RGB] = {
    "pink": (246, 150, 190), "blonde": (248, 218, 120), "black": (52, 50, 66), "brown": (140, 92, 62),
    "red": (214, 62, 66), "blue": (80, 130, 226), "white": (236, 236, 246), "purple": (156, 104, 210),
    "green": (98, 178, 106), "orange": (246, 146, 66), "aqua": (96, 214, 214), "grey": (150, 154, 168),
}  # fmt: skip
HAIR_STYLES: tuple[str, ...] = (
    "short hair", "bob cut", "long hair", "twintails", "ponytail", "spiked hair", "hair bun",
)  # fmt: skip
EYE_COLORS: dict[str, RGB] = {
    "blue": (58, 120, 230), "red": (216, 44, 60), "green": (46, 168, 84), "purple": (150, 76, 210),
    "brown": (138, 84, 46), "yellow": (236, 186, 36), "pink": (236, 96, 170), "aqua": (40, 190, 200),
}  # fmt: skip
SKIN_TONES: dict[str, RGB] = {
    "pale": (255, 236, 226), "fair": (252, 222, 198), "tan": (228, 180, 138), "dark": (160, 110, 78),
}  # fmt: skip
OUTFITS: tuple[str, ...] = (
    "dress", "blouse and skirt", "shirt and trousers", "sailor uniform", "hoodie and shorts", "kimono",
)  # fmt: skip
CLOTH_COLORS: dict[str, RGB] = {
    "red": (222, 70, 76), "blue": (66, 110, 210), "navy": (44, 56, 112), "green": (70, 160, 96),
    "yellow": (246, 208, 84), "pink": (244, 148, 186), "purple": (140, 92, 196), "white": (244, 244, 248),
    "black": (50, 50, 60), "grey": (140, 144, 156), "brown": (136, 96, 66), "orange": (240, 140, 60),
    "teal": (50, 160, 160), "light blue": (140, 196, 240),
}  # fmt: skip
SHOES: tuple[str, ...] = ("boots", "sneakers", "loafers")
LEGWEAR: tuple[str, ...] = ("none", "thighhighs", "kneehighs")
LEGWEAR_COLORS: tuple[str, ...] = ("white", "black", "navy", "grey", "pink")
ACCESSORIES: tuple[str, ...] = ("hair ribbon", "glasses", "beret", "cat ears", "hairclip")
BACKGROUND_KINDS: tuple[str, ...] = ("plain", "gradient", "stripes", "dots", "checkered")
BACKGROUNDS: dict[str, tuple[RGB, RGB]] = {
    "pink": ((255, 222, 234), (246, 180, 206)), "blue": ((212, 230, 255), (160, 196, 246)),
    "green": ((220, 244, 214), (168, 216, 160)), "yellow": ((255, 244, 200), (246, 216, 130)),
    "purple": ((234, 222, 255), (196, 170, 240)), "grey": ((232, 232, 236), (190, 192, 200)),
    "orange": ((255, 228, 200), (248, 184, 130)), "teal": ((206, 242, 238), (140, 208, 204)),
    "white": ((252, 252, 252), (226, 230, 238)), "dark": ((70, 72, 96), (44, 46, 66)),
}  # fmt: skip
GENDERS: tuple[str, ...] = ("girl", "boy")


@dataclass
class Character:
    """Everything that decides how a character looks (names from the module's attribute lists)."""

    gender: str = "girl"
    hair_style: str = "long hair"
    hair_color: str = "pink"
    eye_color: str = "blue"
    skin: str = "fair"
    outfit: str = "dress"
    outfit_colors: tuple[str, str] = ("red", "white")  # main, second
    shoes: str = "loafers"
    shoe_color: str = "brown"
    accessories: tuple[str, ...] = ()
    accessory_color: str = "red"
    background: str = "plain"
    background_color: str = "blue"
    smile: bool = True
    blush: bool = True
    legwear: str = "none"  # bare legs, or socks under a skirt or shorts
    legwear_color: str = "white"
    extra: dict[str, Any] = field(default_factory=dict)  # free room for later attributes

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of all attributes."""
        d = asdict(self)
        d["outfit_colors"] = list(self.outfit_colors)
        d["accessories"] = list(self.accessories)
        return d


def _pick(rng: np.random.Generator, items: Any) -> Any:
    items = list(items)
    return items[int(rng.integers(len(items)))]


def sample_character(rng: np.random.Generator) -> Character:
    """A random character: girls mostly, two-colour outfits, a few accessories, a background."""
    gender = "boy" if rng.random() < 0.2 else "girl"
    if gender == "boy":
        style = _pick(rng, ("short hair", "spiked hair", "short hair", "ponytail"))
        outfit = _pick(rng, ("shirt and trousers", "hoodie and shorts", "sailor uniform", "kimono"))
    else:
        style = _pick(rng, HAIR_STYLES)
        outfit = _pick(rng, OUTFITS)
    main = _pick(rng, CLOTH_COLORS)
    second = _pick(rng, [c for c in CLOTH_COLORS if c != main])
    if outfit == "sailor uniform":  # a white top with a coloured collar and skirt reads as one
        main, second = "white", _pick(rng, ("navy", "blue", "black", "green", "red", "purple", "teal"))
    accessories: list[str] = []
    for name, prob in (("hair ribbon", 0.25), ("glasses", 0.12), ("beret", 0.1), ("cat ears", 0.1),
                       ("hairclip", 0.15)):  # fmt: skip
        if rng.random() < prob:
            accessories.append(name)
    if "beret" in accessories and "cat ears" in accessories:
        accessories.remove("cat ears")
    if gender == "boy":
        accessories = [a for a in accessories if a in ("glasses", "beret")]
    bg = _pick(rng, BACKGROUNDS)
    c = Character(
        gender=gender,
        hair_style=style,
        hair_color=_pick(rng, HAIR_COLORS),
        eye_color=_pick(rng, EYE_COLORS),
        skin=_pick(rng, SKIN_TONES) if rng.random() < 0.5 else _pick(rng, ("pale", "fair")),
        outfit=outfit,
        outfit_colors=(main, second),
        shoes=_pick(rng, SHOES),
        shoe_color=_pick(rng, ("brown", "black", "white", "red", "navy", "pink")),
        accessories=tuple(accessories),
        accessory_color=_pick(rng, ("red", "pink", "blue", "yellow", "white", "black", "purple")),
        background=_pick(rng, BACKGROUND_KINDS),
        background_color=bg,
        smile=bool(rng.random() < 0.7),
        blush=bool(rng.random() < 0.6),
    )
    # Drawn last, so every earlier attribute of a given seed stays what it was before legwear existed.
    legwear = LEGWEAR[int(rng.choice(3, p=[0.55, 0.25, 0.2]))]
    legwear_color = _pick(rng, LEGWEAR_COLORS)
    if gender == "girl" and outfit not in ("shirt and trousers", "kimono"):
        c.legwear, c.legwear_color = legwear, legwear_color
    return c


def attributes_markdown() -> str:
    """The attribute table (and the actions and views) as markdown, for docs/ATTRIBUTES.md."""
    from training.skeleton import ACTIONS, YAWS

    rows = [
        ("gender (caption `1girl` / `1boy`)", GENDERS),
        ("hair style", HAIR_STYLES),
        ("hair colour (`<c> hair`)", tuple(HAIR_COLORS)),
        ("eye colour (`<c> eyes`)", tuple(EYE_COLORS)),
        ("skin tone (`<s> skin`)", tuple(SKIN_TONES)),
        ("outfit", OUTFITS),
        ("outfit colours (main, second)", tuple(CLOTH_COLORS)),
        ("shoes", SHOES),
        ("legwear (`<c> thighhighs`)", LEGWEAR),
        ("legwear colour", LEGWEAR_COLORS),
        ("accessories (any of, optional)", ACCESSORIES),
        ("background kind", BACKGROUND_KINDS),
        ("background colour (`<c> background`)", tuple(BACKGROUNDS)),
        ("action", ACTIONS),
        ("view (camera yaw)", YAWS),
    ]
    out = ["| attribute | count | values |", "| --- | --- | --- |"]
    out += [f"| {name} | {len(vals)} | {', '.join(vals)} |" for name, vals in rows]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(attributes_markdown(), end="")


# -- captions: booru-style tags and one plain English sentence ---------------------------------------
_ACTION_TAGS = {
    "stand": "standing", "walk": "walking", "run": "running", "jump": "jumping", "sit": "sitting",
    "kneel": "kneeling", "arms up": "arms up", "wave": "waving", "point": "pointing", "dance": "dancing",
    "fight": "fighting stance", "hands on hips": "hands on hips",
}  # fmt: skip
_YAW_TAGS = {"front": "from front", "three-quarter": "three-quarter view", "side": "from side", "back": "from behind"}


def outfit_words(c: Character) -> str:
    """The outfit with its colours, e.g. 'white blouse and blue skirt'."""
    a, b = c.outfit_colors
    return {
        "dress": f"{a} dress",
        "blouse and skirt": f"{a} blouse and {b} skirt",
        "shirt and trousers": f"{a} shirt and {b} trousers",
        "sailor uniform": f"sailor uniform with {b} collar",
        "hoodie and shorts": f"{a} hoodie and {b} shorts",
        "kimono": f"{a} kimono with {b} sash",
    }[c.outfit]


def tags(character: Character, action: str | None = None, yaw: str | None = None) -> str:
    """Comma-separated tags, e.g. '1girl, twintails, pink hair, blue eyes, sailor uniform, ...'."""
    c = character
    out = [f"1{c.gender}", c.hair_style, f"{c.hair_color} hair", f"{c.eye_color} eyes", f"{c.skin} skin", c.outfit]
    out.append(outfit_words(c))
    out += list(c.accessories)
    if c.legwear != "none":
        out.append(f"{c.legwear_color} {c.legwear}")
    out.append(f"{c.shoe_color} {c.shoes}")
    if c.smile:
        out.append("smile")
    if c.blush:
        out.append("blush")
    if action:
        out.append(_ACTION_TAGS.get(action, action))
    if yaw:
        out.append(_YAW_TAGS.get(yaw, yaw))
    out.append(f"{c.background_color} background")
    if c.background != "plain":
        out.append(f"{c.background} background")
    return ", ".join(out)


_ACTION_WORDS = {
    "stand": "standing", "walk": "walking", "run": "running", "jump": "jumping", "sit": "sitting on a stool",
    "kneel": "kneeling", "arms up": "with arms up", "wave": "waving", "point": "pointing", "dance": "dancing",
    "fight": "in a fighting stance", "hands on hips": "with hands on hips",
}  # fmt: skip
_YAW_WORDS = {"front": "seen from the front", "three-quarter": "seen in three-quarter view",
              "side": "seen from the side", "back": "seen from behind"}  # fmt: skip
_HAIR_WORDS = {
    "short hair": "short {} hair", "bob cut": "{} hair in a bob cut", "long hair": "long {} hair",
    "twintails": "{} hair in twintails", "ponytail": "{} hair in a ponytail", "spiked hair": "spiky {} hair",
    "hair bun": "{} hair in a bun",
}  # fmt: skip


def sentence(character: Character, action: str | None = None, yaw: str | None = None) -> str:
    """One sentence, e.g. 'An anime girl with pink hair in twintails and blue eyes, wearing ..., waving.'."""
    c = character
    hair = _HAIR_WORDS[c.hair_style].format(c.hair_color)
    s = f"An anime {c.gender} with {hair}, {c.eye_color} eyes and {c.skin} skin, wearing a {outfit_words(c)}"
    if c.legwear != "none":
        s += f", {c.legwear_color} {c.legwear}"
    s += f" and {c.shoe_color} {c.shoes}"
    if c.accessories:
        s += ", with " + " and ".join(_article(a) for a in c.accessories)
    if action:
        s += f", {_ACTION_WORDS.get(action, action)}"
    if yaw:
        s += f", {_YAW_WORDS.get(yaw, yaw)}"
    kind = "plain" if c.background == "plain" else c.background
    s += f", on {_article(c.background_color)} {kind} background."
    return s


def _article(word: str) -> str:
    if word.endswith("s"):  # glasses, cat ears
        return word
    return ("an " if word[0] in "aeiou" else "a ") + word


# -- one attribute changed, the rest kept: the renderer's exact counterfactuals -----------------------
# Outfits whose colours follow their own rule: a sailor uniform's top is always white, a dress shows its second
# colour only as a 1 px belt (`models.attributes.record_labels`). Colour swaps skip them.
_FIXED_COLOURS = ("sailor uniform", "dress")


def _other(rng: np.random.Generator, pool: Sequence[str], *current: str) -> str:
    """A class of `pool` other than the `current` ones, drawn by `rng`."""
    left = [p for p in pool if p not in current]
    return left[int(rng.integers(len(left)))]


def _outfit_colour(slot: int) -> Callable[[Character, np.random.Generator], Character | None]:
    """A swap of the outfit's main (0) or second (1) colour, keeping the two different."""

    def swap_colour(c: Character, rng: np.random.Generator) -> Character | None:
        if c.outfit in _FIXED_COLOURS:
            return None
        colours = list(c.outfit_colors)
        colours[slot] = _other(rng, list(CLOTH_COLORS), *colours)
        return dataclasses.replace(c, outfit_colors=(colours[0], colours[1]))

    return swap_colour


def _outfit(c: Character, rng: np.random.Generator) -> Character | None:
    """Another outfit the renderer gives this gender, among those that take any two colours."""
    pool = ("shirt and trousers", "hoodie and shorts", "kimono") if c.gender == "boy" else OUTFITS
    pool = [o for o in pool if o not in _FIXED_COLOURS]
    if c.outfit in _FIXED_COLOURS or len(pool) < 2:
        return None
    return dataclasses.replace(c, outfit=_other(rng, pool, c.outfit))


def _hair_style(c: Character, rng: np.random.Generator) -> Character:
    """Another hair style the renderer gives this gender."""
    pool = ("short hair", "spiked hair", "ponytail") if c.gender == "boy" else HAIR_STYLES
    return dataclasses.replace(c, hair_style=_other(rng, pool, c.hair_style))


# attribute (the judge's head name) -> the swap that changes it alone, or None where it does not apply
SWAPS: dict[str, Callable[[Character, np.random.Generator], Character | None]] = {
    "background_color": lambda c, r: dataclasses.replace(c, background_color=_other(r, list(BACKGROUNDS), c.background_color)),
    "background": lambda c, r: dataclasses.replace(c, background=_other(r, BACKGROUND_KINDS, c.background)),
    "hair_color": lambda c, r: dataclasses.replace(c, hair_color=_other(r, list(HAIR_COLORS), c.hair_color)),
    "hair_style": _hair_style,
    "outfit": _outfit,
    "outfit_color": _outfit_colour(0),
    "outfit_color2": _outfit_colour(1),
    "skin": lambda c, r: dataclasses.replace(c, skin=_other(r, list(SKIN_TONES), c.skin)),
    "eye_color": lambda c, r: dataclasses.replace(c, eye_color=_other(r, list(EYE_COLORS), c.eye_color)),
}  # fmt: skip


def swap(character: Character, attribute: str, rng: np.random.Generator) -> Character | None:
    """`character` with only `attribute` set to another class (drawn by `rng`); None where the swap does not apply."""
    if attribute not in SWAPS:
        raise InputError(f"Unknown attribute '{attribute}'; known: {', '.join(SWAPS)}.")
    return SWAPS[attribute](character, rng)
