"""Named poses shipped with the app (`models/presets/<name>.json`, our own JSON, 512 x 512 frame, front view)."""

from __future__ import annotations

from pathlib import Path

from models.errors import InputError
from models.pose import Pose, load

PRESET_DIR = Path(__file__).resolve().parent / "presets"


def list_presets() -> list[str]:
    """The preset names, sorted."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_preset(name: str) -> Pose:
    """The preset pose called `name` (an unknown name raises an InputError that lists the known ones)."""
    names = list_presets()
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if key not in names:
        raise InputError(f"There is no preset pose called '{name}'; the presets are: {', '.join(names)}.")
    return load(PRESET_DIR / f"{key}.json")
