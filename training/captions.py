"""Captions for a character: booru-style tags and one plain English sentence."""

from __future__ import annotations

from training.character import Character

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
