"""The parts of the picture: where a prompt may change it (hair, face, body, background) found from the pose, their
colours in the training data, and a part parser that reads them off the pixels.

    prompt_regions("pink hair")              -> {"hair"}
    prompt_regions("red dress | blue sky")   -> {"body", "background"}
    prompt_regions("cute")                   -> None (anywhere)
    region_mask(fitted_pose, 32, {"hair"})   -> (32, 32) float32 in [0, 1]

A small domain CLIP's gradient spreads over the whole frame: "red hair" also tints the clothes and the
background. The pose says where the parts are. The head is a disc around the face points, stretched
down over the shoulders for long hair; the face is a smaller disc on the nose and eyes, and the hair is
the head without the face and the body. The body is the torso polygon and the limbs drawn thick. The
background is what none of them covers. With the image at hand (`colour_keyed_mask`), the image's pixels
are clustered by colour (k-means in Lab); the clusters that lie largely in the background region are the
backdrop, which the face and body drop. The hair is keyed by its own colours: those of the crown (the
head just above the eyes), less the skin's (the cheek's), taken over the whole head, so a fringe over the
forehead is hair and the backdrop round the head, the face and a hand raised beside it are not.

Latent refinement moves only the regions its prompt names (as Blended Latent Diffusion, Avrahami et al.
2023, confines an edit to a mask; here the pose and the image give the mask, not the user). Sizes scale
with the torso (mid-shoulder to mid-hip), since the renderer's characters keep their proportions.

The colours each part shows in the training data are the colour search's candidates (`models.recolour`):

    palette = data_palette(images, poses)            # {"body": (K, 3) uint8, "background": (K, 3) uint8}
    save_palette(palette, "weights/palette.json", source="synth 0:600")
    colours = load_palette("weights/palette.json")   # {region: (K, 3) float32 in [-1, 1]}, {} when absent

Over the decoder's whole gamut, CLIP's pick for "pink background" was often a colour no training image shows in that
part, where no judge has learnt what the colour word means; restricted to the renderer's own colours of the part, the
pick was the asked colour (issue 5's note). The palette approximates that set without labels: each image's part masks
come from its pose and colours (`colour_keyed_masks`), and k-means in Lab over pixels drawn from them gives
PALETTE_COLOURS colours per part. The hair keeps the decoder's gamut (its small, shaded masks mix in the outline).

Where the pose and the colours fail (white hair on a white wall, a head drawn smaller or lower than the pose's), a
small part parser reads the parts off the pixels:

    parser = PartParser.from_pretrained("weights/parser")
    probs = parser.parse([Image.open("a.png")])        # (N, 4, H, W) float32, PARTS order, summing to 1

The renderer knows every pixel's part exactly (`training.train_parser` renders each character again with its hair,
then its clothes, in other colours); trained on the autoencoder's reconstructions of renders, the parser reads the
generator's images as they look, soft edges and all. A four-level conv encoder (128 -> 8 px) with a U-Net decoder
back to half the input's size, logits upsampled to the input's; BatchNorm, as in `models.detector`: the fastest norm
on a CPU.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from PIL import Image
from torch import nn

from models.errors import InputError
from models.pose import LIMBS, Pose

REGIONS: tuple[str, ...] = ("hair", "face", "body", "background")
# Words that name a part, by region: a word is looked up as it is, then without a trailing "s" ("eyes" -> "eye";
# "shorts" is listed whole, so "short hair" names the hair alone).
REGION_WORDS: dict[str, tuple[str, ...]] = {
    "hair": ("hair", "head", "ribbon", "hairclip", "beret", "hat", "bun", "twintail", "ponytail", "bob", "fringe",
             "bang"),
    "face": ("eye", "face", "ear", "glasses", "skin", "blush", "smile", "mouth", "cheek"),
    "body": ("dress", "shirt", "blouse", "skirt", "trouser", "shorts", "hoodie", "kimono", "uniform", "outfit",
             "clothes", "clothing", "jacket", "coat", "sleeve", "boot", "sneaker", "loafer", "shoe", "sock",
             "thighhigh", "kneehigh", "legwear", "top", "pant", "jean"),
    "background": ("background", "sky", "wall", "backdrop", "stripe", "dot", "checkered", "gradient"),
}  # fmt: skip
_WORD_REGION = {w: r for r, words in REGION_WORDS.items() for w in words}
HEAD_POINTS = (0, 1, 2, 3, 4)  # nose, eyes, ears
FACE_POINTS = (0, 1, 2)  # nose, eyes: hidden in a back view, where the head is all hair
# In torso lengths (mid-shoulder to mid-hip), measured on renders: the head's radius (hair included), how far
# above the face points its centre is, how far long hair falls below that centre, and a limb's half width.
HEAD_RADIUS = 0.85
HEAD_LIFT = 0.15
HAIR_FALL = 1.3
# Where the hair's colour is read: the crown, the part of a disc of CROWN_RADIUS about the eyes (the head's centre
# in a back view) above the eyes; and the skin's colour, a disc of CHEEK_RADIUS about the nose.
CROWN_RADIUS = 0.5
CHEEK_RADIUS = 0.15
FACE_RADIUS = 0.42
LIMB_HALF_WIDTH = 0.3


def prompt_regions(text: str) -> set[str] | None:
    """The regions a prompt's words name (`REGION_WORDS`); None when it names none (the change may go anywhere)."""
    found = set()
    for word in re.findall(r"[a-z]+", text.lower()):
        region = _WORD_REGION.get(word) or (_WORD_REGION.get(word[:-1]) if word.endswith("s") else None)
        if region:
            found.add(region)
    return found or None


def _px(v: float) -> int:
    """A length or coordinate in whole pixels."""
    return int(np.rint(v))


def _pixel(p: np.ndarray) -> tuple[int, int]:
    """A point (x, y) in whole pixels, as OpenCV's drawing functions take it."""
    return _px(p[0]), _px(p[1])


def _torso_length(xy: np.ndarray, vis: np.ndarray) -> float:
    """Mid-shoulder to mid-hip distance in pixels (from the bounding box's height when those points are hidden)."""
    if vis[[5, 6, 11, 12]].all():
        return float(np.linalg.norm((xy[5] + xy[6]) / 2 - (xy[11] + xy[12]) / 2))
    pts = xy[vis]
    return float(np.ptp(pts[:, 1])) / 3.0 if len(pts) >= 2 else 0.0


def _head_centre(xy: np.ndarray, vis: np.ndarray, torso: float) -> np.ndarray | None:
    """The mean of the visible face points, or above the mid-shoulder when none is visible."""
    face = [i for i in HEAD_POINTS if vis[i]]
    if face:
        return xy[face].mean(axis=0) - np.array([0.0, HEAD_LIFT * torso])
    shoulders = [i for i in (5, 6) if vis[i]]
    if shoulders:
        return xy[shoulders].mean(axis=0) - np.array([0.0, 0.6 * torso])
    return None


def _pose_parts(pose: Pose, size: int) -> dict[str, np.ndarray]:
    """`part_masks`, plus (uint8) the whole head without the body, the crown above the eyes (CROWN_RADIUS), whose
    figure colours are the hair's and the forehead's, and the cheek (CHEEK_RADIUS about the nose), whose are the skin's."""
    xy = pose.xy.astype(np.float64) * size
    vis = pose.visible
    torso = _torso_length(xy, vis)
    head = np.zeros((size, size), np.uint8)
    face = np.zeros((size, size), np.uint8)
    body = np.zeros((size, size), np.uint8)
    above = np.zeros((size, size), np.uint8)
    cheek = np.zeros((size, size), np.uint8)
    if torso > 0:
        centre = _head_centre(xy, vis, torso)
        if centre is not None:
            r = HEAD_RADIUS * torso
            c = _pixel(centre)
            cv2.circle(head, c, max(1, _px(r)), 1, -1)
            # long hair and tails hang below the head: an ellipse reaching HAIR_FALL torsos down
            drop = (_px(centre[0]), _px(centre[1] + HAIR_FALL * torso / 2))
            axes = (max(1, _px(0.9 * r)), max(1, _px(HAIR_FALL * torso / 2)))
            cv2.ellipse(head, drop, axes, 0, 0, 360, 1, -1)
            eyes = [i for i in (1, 2) if vis[i]]
            top = xy[eyes].mean(axis=0) if eyes else centre
            cv2.circle(above, _pixel(top), max(1, _px(CROWN_RADIUS * torso)), 1, -1)
            above[max(0, min(size, _px(top[1]))) :] = 0
            if vis[0] and eyes:
                cv2.circle(cheek, _pixel(xy[0]), max(1, _px(CHEEK_RADIUS * torso)), 1, -1)
        seen = [i for i in FACE_POINTS if vis[i]]
        if seen:
            c = _pixel(xy[seen].mean(axis=0))
            cv2.circle(face, c, max(1, _px(FACE_RADIUS * torso)), 1, -1)
        width = max(1, _px(2 * LIMB_HALF_WIDTH * torso))
        for a, b in LIMBS:
            if vis[a] and vis[b] and a not in HEAD_POINTS and b not in HEAD_POINTS:
                pa, pb = _pixel(xy[a]), _pixel(xy[b])
                cv2.line(body, pa, pb, 1, width)
        quad = [k for k in (5, 6, 12, 11) if vis[k]]
        if len(quad) >= 3:
            cv2.fillPoly(body, [np.round(xy[quad]).astype(np.int32)], 1)
    figure = np.maximum(np.maximum(head, face), body)
    grow = max(1, _px(0.1 * torso)) * 2 + 1
    figure = cv2.dilate(figure, np.ones((grow, grow), np.uint8))
    # The renderer's long hair hangs behind the figure: where the hair's ellipse meets the torso or a limb (a hand
    # raised beside the head), the pixels are the body's, so a hair prompt leaves them to a clothes prompt.
    hair = head * (1 - face) * (1 - body)
    return {"hair": hair.astype(np.float32), "face": face.astype(np.float32), "body": body.astype(np.float32),
            "background": (1 - figure).astype(np.float32), "head": (np.maximum(head, face) * (1 - body)),
            "crown": above * (1 - body), "cheek": cheek}  # fmt: skip


def part_masks(pose: Pose, size: int) -> dict[str, np.ndarray]:
    """Masks `(size, size)` float32 in {0, 1} of the hair, face, body and background of a pose laid on a square
    frame of `size` pixels (the pose already fitted to the frame, `models.pose.fit_to_square`)."""
    return {r: m for r, m in _pose_parts(pose, size).items() if r in REGIONS}


KEY_CLUSTERS = 6  # colour clusters of a 128-pixel character: background (1-2), hair, skin, outfit (1-2)
# A cluster with at least this share of its pixels in the background region is backdrop. Not a majority: the figure's
# pose masks are generous, so a backdrop gradient that is lighter round the figure has much of it inside them.
BACKGROUND_SHARE = 0.45
# A keyed face or body smaller than this share of its pose mask (clothes the colour of the backdrop) falls back to
# the mask; so does the hair, but only when the head has no figure pixel at all (`_keyed_parts`).
MIN_KEPT = 0.05
# The hair's colours: a cluster with at least this share of the crown's figure (not backdrop) pixels; when under
# MIN_FIGURE_CROWN of the crown is figure at all, the hair has no colours of its own and the head's figure is keyed.
HAIR_SHARE = 0.25
MIN_FIGURE_CROWN = 0.05


def _check_regions(regions: set[str]) -> None:
    """ValueError naming the first region that is not one of REGIONS."""
    unknown = set(regions) - set(REGIONS)
    if unknown:
        raise ValueError(f"Unknown region {min(unknown)!r}; regions are {', '.join(REGIONS)}.")


def _keyed_parts(image: np.ndarray, pose: Pose, regions: set[str]) -> dict[str, np.ndarray]:
    """Each named region's pose mask keyed by the colours of `image` (one k-means for all regions): the hair in the
    crown's colours, the body and face without the backdrop's; the whole pose mask where that leaves too little of
    it. Unsoftened, float32 in {0, 1}."""
    _check_regions(regions)
    size = image.shape[0]
    masks = _pose_parts(pose, size)
    lab = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)
    cv2.setRNGSeed(0)  # k-means++ seeding draws from OpenCV's generator: seeded, the same image gives the same mask
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    _, labels, _ = cv2.kmeans(lab, KEY_CLUSTERS, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
    labels = labels.reshape(size, size)
    in_bg = np.bincount(labels[masks["background"] > 0], minlength=KEY_CLUSTERS)
    total = np.maximum(np.bincount(labels.ravel(), minlength=KEY_CLUSTERS), 1)
    backdrop_ids = np.flatnonzero(in_bg / total >= BACKGROUND_SHARE)
    backdrop = np.isin(labels, backdrop_ids)  # background-coloured pixels
    out = {}
    for r in regions:
        if r == "background":
            part = masks[r]
        elif r == "hair":  # the head's pixels in the hair's colours, a fringe over the face included
            hair_ids = _hair_clusters(labels, masks["crown"] > 0, masks["cheek"] > 0, backdrop_ids)
            part = (masks["head"] * np.isin(labels, hair_ids)).astype(np.float32)
            if part.sum() < MIN_KEPT * max(masks[r].sum(), 1.0):  # too few: the head's figure pixels, face and all
                part = (masks["head"] * ~backdrop).astype(np.float32)
            if part.any():  # however few: the pose's hair mask round a head drawn off the pose is all backdrop
                out[r] = part
                continue
        else:  # keying the body by not-hair, not-skin colours too lost blue dresses under blue hair (issue 5's note)
            part = masks[r] * ~backdrop
        out[r] = part if part.sum() >= MIN_KEPT * max(masks[r].sum(), 1.0) else masks[r]
    return out


def _hair_clusters(labels: np.ndarray, crown: np.ndarray, cheek: np.ndarray, backdrop_ids: np.ndarray) -> np.ndarray:
    """The colour clusters of the hair: those holding at least HAIR_SHARE of the crown's figure (not backdrop)
    pixels, less the skin's (the cheek's commonest) unless it is the crown's commonest too (a fringe over a small
    face); none when the crown is nearly all backdrop. That is white hair on a white wall, or, as often, a crown
    the pose puts over the backdrop (a small head drawn lower than the pose's): taking the backdrop's colour as the
    hair's then repainted a halo of backdrop above the head, so the caller keys the head's figure pixels instead."""
    counts = np.bincount(labels[crown], minlength=KEY_CLUSTERS).astype(np.float64)
    figure = counts.copy()
    figure[backdrop_ids] = 0
    if cheek.any():
        skin = np.bincount(labels[cheek], minlength=KEY_CLUSTERS).argmax()
        if skin != figure.argmax():
            figure[skin] = 0
    if figure.sum() >= MIN_FIGURE_CROWN * max(counts.sum(), 1.0):
        return np.flatnonzero(figure >= HAIR_SHARE * figure.sum())
    return np.array([], dtype=np.int64)


def _finish(mask: np.ndarray, soften: float) -> np.ndarray:
    """All ones for an empty mask (the change may go anywhere), else the mask with edges blurred by `soften`."""
    if not mask.any():
        return np.ones(mask.shape, np.float32)
    if soften > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), soften)
    return np.clip(mask, 0.0, 1.0).astype(np.float32)


def colour_keyed_masks(image: np.ndarray, pose: Pose, regions: set[str], soften: float = 1.0) -> dict[str, np.ndarray]:
    """`colour_keyed_mask` of each named region on its own (one colour clustering for all of them)."""
    return {r: _finish(m, soften) for r, m in _keyed_parts(image, pose, regions).items()}


def colour_keyed_mask(image: np.ndarray, pose: Pose, regions: set[str] | None, soften: float = 1.0) -> np.ndarray:
    """`region_mask` of the figure's regions without the background's colours in `image` (H, W, 3) uint8, square,
    with the pose fitted to it (the background region itself is kept as it is); all ones for `regions` None."""
    size = image.shape[0]
    if not regions:
        return np.ones((size, size), np.float32)
    return _finish(np.max(list(_keyed_parts(image, pose, regions).values()), axis=0), soften)


def region_mask(pose: Pose, size: int, regions: set[str] | None, soften: float = 1.0) -> np.ndarray:
    """The union of the named regions' masks `(size, size)` float32 in [0, 1], edges blurred by `soften` pixels;
    all ones for `regions` None (or when the pose gives no region at all)."""
    if not regions:
        return np.ones((size, size), np.float32)
    _check_regions(regions)
    masks = part_masks(pose, size)
    return _finish(np.max([masks[r] for r in regions], axis=0), soften)


# -- the colours of each part in the training data: the colour search's candidates ---------------------------------
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


# -- the part parser: the parts from the pixels ---------------------------------------------------
PARTS: tuple[str, ...] = ("background", "hair", "clothes", "skin")  # "skin": the rest of the figure (face, hands)
# The refinement region (`models.edit_regions.REGIONS`) each part stands for; the face keeps the pose's mask.
REGION_PARTS: dict[str, str] = {"background": "background", "hair": "hair", "body": "clothes"}


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv, BatchNorm, ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PartParser(ModelMixin, ConfigMixin):
    """U-Net: RGB in [-1, 1] `(B, 3, H, W)` (H, W divisible by 16) in, `(B, len(PARTS), H, W)` part logits out."""

    config_name = "config.json"

    @register_to_config
    def __init__(self, image_size: int = 128, channels: tuple[int, ...] = (16, 32, 64, 96), num_parts: int = 4):
        super().__init__()
        if len(channels) != 4:
            raise ValueError("channels must list 4 widths (1/2, 1/4, 1/8 and 1/16 of the input).")
        c1, c2, c3, c4 = channels
        self.down = nn.ModuleList(
            [
                nn.Sequential(_conv(3, c1, 2), _conv(c1, c1)),
                nn.Sequential(_conv(c1, c2, 2), _conv(c2, c2)),
                nn.Sequential(_conv(c2, c3, 2), _conv(c3, c3)),
                nn.Sequential(_conv(c3, c4, 2), _conv(c4, c4), _conv(c4, c4)),  # 1/16 sees the whole figure
            ]
        )
        self.up = nn.ModuleList([_conv(c4 + c3, c3), _conv(c3 + c2, c2), _conv(c2 + c1, c1)])
        self.head = nn.Conv2d(c1, num_parts, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Part logits at the input's size."""
        skips, x = [], images
        for block in self.down:
            x = block(x)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = block(torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="nearest"), skip], dim=1))
        return F.interpolate(self.head(x), size=images.shape[-2:], mode="bilinear", align_corners=False)

    @torch.no_grad()
    def parse(self, images: Sequence[Image.Image] | torch.Tensor) -> np.ndarray:
        """`(N, P, H, W)` float32 part probabilities of PIL images (at `image_size`) or a `(N, 3, H, W)` tensor in
        [-1, 1] (at its own size)."""
        if not isinstance(images, torch.Tensor):
            side = int(self.config.image_size)
            arrays = [np.asarray(im.convert("RGB").resize((side, side), Image.BILINEAR)) for im in images]
            images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1
        was_training = self.training
        self.eval()
        probs = self(images.to(self.device, self.dtype)).float().softmax(dim=1)
        self.train(was_training)
        return probs.cpu().numpy()


def part_masks_from_probs(probs: np.ndarray, regions: set[str]) -> dict[str, np.ndarray]:
    """`{region: (H, W) float32 in [0, 1]}`: each region's part probability (`REGION_PARTS`) from one image's
    `(P, H, W)` parse; regions with no part (the face) are left out."""
    return {r: probs[PARTS.index(REGION_PARTS[r])].astype(np.float32) for r in regions if r in REGION_PARTS}


__all__ = [
    "PALETTE_FILE",
    "PALETTE_REGIONS",
    "PARTS",
    "REGIONS",
    "REGION_PARTS",
    "REGION_WORDS",
    "PartParser",
    "colour_keyed_mask",
    "colour_keyed_masks",
    "data_palette",
    "load_palette",
    "part_masks",
    "part_masks_from_probs",
    "prompt_regions",
    "region_mask",
    "save_palette",
]
