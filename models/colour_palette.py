"""The colours the training data shows in each part of the picture: the colour search's candidates.

    palette = data_palette(images, poses)            # {"body": (K, 3) uint8, "background": (K, 3) uint8}
    save_palette(palette, "weights/palette.json", source="synth 0:600")
    colours = load_palette("weights/palette.json")   # {region: (K, 3) float32 in [-1, 1]}, {} when absent

The colour search (`models.colour_search`) recolours a part to candidate colours and lets CLIP pick. Over the
decoder's whole gamut, CLIP's pick for "pink background" or "purple kimono" was often a colour no training image
shows in that part (a dusky mauve, a dark navy), where neither CLIP nor any other judge has learnt what the colour
word means. Restricted to the renderer's own colours of that part (an oracle, tried for the diagnosis only), the
pick was the asked colour for every background and outfit prompt of the 24 held-out eval pairs, judged on the
recoloured pixels (issue 5's note). This palette approximates that set from the images alone.

The palette is learnt without labels: each training image's part masks come from its pose and its colours
(`models.edit_regions.colour_keyed_masks`, as refinement finds them), a few pixels are drawn from each mask, and
k-means in Lab over all of them gives PALETTE_COLOURS colours per part. The hair keeps the decoder's gamut: on the
same pairs its palette picked no better (the hair's small, shaded masks mix its colour with the outline's).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from models.errors import InputError
from models.pose import Pose

PALETTE_FILE = "palette.json"  # in a pipeline folder, beside unet/ and autoencoder/
PALETTE_REGIONS: tuple[str, ...] = ("body", "background")  # the parts whose search uses the palette
PALETTE_COLOURS = 24  # colours per part: the renderer's data shows 10-14 named colours per part, plus shades
PIXELS_PER_IMAGE = 40  # pixels drawn from each part of each image
MIN_PIXELS = 10  # a part with fewer pixels in an image (hidden, tiny) gives none


def data_palette(
    images: Sequence[np.ndarray],
    poses: Sequence[Pose],
    regions: Sequence[str] = PALETTE_REGIONS,
    colours: int = PALETTE_COLOURS,
    pixels: int = PIXELS_PER_IMAGE,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """`{region: (K, 3) uint8}`: k-means (in Lab) over pixels drawn from each image's keyed part masks; `images`
    are (S, S, 3) uint8 squares and `poses` their poses in those pixels."""
    from models.edit_regions import colour_keyed_masks

    if len(images) != len(poses) or not len(images):
        raise InputError("A palette needs as many poses as images, and at least one image.")
    rng = np.random.default_rng(seed)
    drawn: dict[str, list[np.ndarray]] = {r: [] for r in regions}
    for image, pose in zip(images, poses):
        masks = colour_keyed_masks(np.ascontiguousarray(image[..., :3]), pose, set(regions), soften=0)
        for region in regions:  # in the given order (not the set's, which varies by process): the same draws
            mask = masks[region]
            inside = image[mask > 0.5][:, :3]
            if len(inside) >= MIN_PIXELS and mask.min() < 1.0:  # an all-ones mask means the pose placed nothing
                drawn[region].append(inside[rng.integers(0, len(inside), pixels)])
    return {r: _kmeans_colours(np.concatenate(v), colours) for r, v in drawn.items() if v}


def _kmeans_colours(rgb: np.ndarray, k: int) -> np.ndarray:
    """`(k', 3)` uint8: the mean RGB of each k-means cluster in Lab (k' <= k, empty clusters dropped)."""
    k = min(k, len(rgb))
    lab = cv2.cvtColor(rgb[None].astype(np.uint8), cv2.COLOR_RGB2LAB)[0].astype(np.float32)
    cv2.setRNGSeed(0)  # k-means++ seeding: the same pixels give the same palette
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 50, 0.5)
    _, labels, _ = cv2.kmeans(lab, k, None, criteria, 4, cv2.KMEANS_PP_CENTERS)
    labels = labels[:, 0]
    centres = [rgb[labels == c].mean(axis=0) for c in range(k) if (labels == c).any()]
    return np.clip(np.round(centres), 0, 255).astype(np.uint8)


def save_palette(palette: dict[str, np.ndarray], path: str | Path, source: str = "") -> None:
    """Write the palette as JSON (`{"source": ..., "regions": {region: [[r, g, b], ...]}}`)."""
    rows = [f"  {json.dumps(r)}: {json.dumps(np.asarray(c).astype(int).tolist())}" for r, c in palette.items()]
    text = '{\n "source": ' + json.dumps(source) + ',\n "regions": {\n' + ",\n".join(rows) + "\n }\n}\n"
    Path(path).write_text(text)  # one line per part: the file is read by people too


def load_palette(path: str | Path) -> dict[str, np.ndarray]:
    """`{region: (K, 3) float32 in [-1, 1]}` from `save_palette`'s JSON; {} when the file is absent (the colour
    search then uses the decoder's gamut everywhere). InputError for a file that is not a palette."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        regions = json.loads(path.read_text())["regions"]
        out = {r: np.asarray(c, dtype=np.float32).reshape(-1, 3) / 127.5 - 1.0 for r, c in regions.items()}
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"{path} is not a colour palette ({type(err).__name__}: {err}).") from err
    if any(len(c) == 0 or np.abs(c).max() > 1.0 for c in out.values()):
        raise InputError(f"{path} is not a colour palette: a region has no colours or values outside 0-255.")
    return out


__all__ = ["PALETTE_FILE", "PALETTE_REGIONS", "data_palette", "load_palette", "save_palette"]
