"""Read the synthetic data set (`python -m training.synth --out DIR`): images, keypoints, condition maps, and the
CLIP trainer's captioned images with their texts as token rows.

Layout: `DIR/images/000000.png`, `DIR/keypoints/000000.json` (COCO flat keypoints in pixels, read by
`models.pose.load`), `DIR/captions/` (line 1 the tags, line 2 the sentence), `DIR/attributes/` (read here only
for the CLIP set's zero-shot check).
"""

from __future__ import annotations

import json
import math
import os
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from models.errors import InputError
from models.pose import FLIP_INDEX, LIMBS, VISIBLE, Pose, load, mirror


def list_items(root: str | Path, max_images: int = 0) -> list[str]:
    """The sorted stems of the images that have a keypoint file (at most `max_images`, 0 for all)."""
    root = Path(root)
    images = root / "images"
    if not images.is_dir():
        raise InputError(f"The data folder {root} has no images/ folder.")
    stems = sorted(p.stem for p in images.glob("*.png") if (root / "keypoints" / f"{p.stem}.json").exists())
    if not stems:
        raise InputError(f"The data folder {root} has no image with a keypoint file.")
    return stems[:max_images] if max_images > 0 else stems


def count_pairs(root: str | Path, stems: list[str]) -> int:
    """The number of pairs of a `synth --pairs` folder (items 2k and 2k + 1 share a `pair`); InputError otherwise."""
    if len(stems) < 2 or len(stems) % 2:
        raise InputError(f"{root} holds {len(stems)} images; a pairs folder holds an even number of them.")
    for k in range(0, len(stems), 2):
        marks = []
        for stem in stems[k : k + 2]:
            path = Path(root) / "attributes" / f"{stem}.json"
            marks.append(json.loads(path.read_text()).get("pair") if path.exists() else None)
        if marks[0] is None or marks[0] != marks[1]:
            raise InputError(
                f"{root}: images {stems[k]} and {stems[k + 1]} are not a pair (write it with `synth --pairs`)."
            )
    return len(stems) // 2


def read_image(path: str | Path, size: int = 128) -> np.ndarray:
    """One image as uint8 `(size, size, 3)` (resized with bicubic if it has another size)."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BICUBIC)
        return np.array(im, dtype=np.uint8)


def to_tensor(images: np.ndarray | torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 `(..., H, W, 3)` (array, or tensor on any device) -> float32 `(..., 3, H, W)` in [-1, 1], on `device`
    (default: where the images are; they move as uint8, a quarter of the bytes)."""
    t = images if torch.is_tensor(images) else torch.from_numpy(np.ascontiguousarray(images))
    t = t if device is None else t.to(device)
    t = t.float().div_(127.5).sub_(1.0)
    return t.movedim(-1, -3)


def autoencoder_round_trip(images: np.ndarray, ae: Any, device: torch.device, batch: int = 64) -> np.ndarray:
    """uint8 images through `models.autoencoder.round_trip`; `ae` a folder or an autoencoder already loaded."""
    from models.autoencoder import load_autoencoder, round_trip

    vae = (load_autoencoder(str(ae)) if isinstance(ae, (str, Path)) else ae).to(device).eval()
    y = round_trip(vae, to_tensor(images), batch)
    return ((y + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def _read_chunk(paths: list[Path], size: int) -> np.ndarray:
    """Images of one chunk of paths, stacked (a worker's share of `load_images`)."""
    return np.stack([read_image(p, size) for p in paths])


def load_images(root: str | Path, stems: list[str], size: int = 128, workers: int = 1) -> np.ndarray:
    """All images as one uint8 array `(N, size, size, 3)` (a 20k set is ~1 GB; the AE and LDM scripts hold it).

    `workers > 1` decodes in that many processes (PNG decoding holds the GIL); 0 means one per CPU.
    """
    root = Path(root)
    paths = [root / "images" / f"{stem}.png" for stem in stems]
    workers = os.cpu_count() or 1 if workers <= 0 else workers
    out = np.empty((len(stems), size, size, 3), dtype=np.uint8)
    if workers == 1 or len(paths) < 256:
        for i, path in enumerate(paths):
            out[i] = read_image(path, size)
        return out
    chunk = 256
    starts = range(0, len(paths), chunk)
    with ProcessPoolExecutor(workers) as pool:
        for start, arr in zip(
            starts, pool.map(_read_chunk, [paths[i : i + chunk] for i in starts], [size] * len(starts))
        ):
            out[start : start + len(arr)] = arr
    return out


def read_pose(root: str | Path, stem: str) -> Pose:
    """The keypoints of one item, normalised to its frame."""
    return load(Path(root) / "keypoints" / f"{stem}.json")


def load_keypoints(root: str | Path, stems: list[str]) -> np.ndarray:
    """All poses as float32 `(N, 17, 3)` (x, y in [0, 1] of the frame, visibility)."""
    return np.stack([read_pose(root, s).keypoints for s in stems]).astype(np.float32)


def condition_maps(keypoints: np.ndarray, size: int = 128, flip: bool = False) -> torch.Tensor:
    """Condition maps `(B, C, size, size)` of a batch of keypoints (mirrored poses if `flip`)."""
    from models.condition import condition_map  # written by the pose front end; imported late

    maps = []
    for kp in keypoints:
        pose = Pose(kp, size, size)
        maps.append(condition_map(mirror(pose) if flip else pose, size, size))
    return torch.from_numpy(np.stack(maps))


_LIMB_A = torch.tensor([a for a, _ in LIMBS])
_LIMB_B = torch.tensor([b for _, b in LIMBS])


def condition_maps_torch(keypoints: torch.Tensor, size: int = 128, flip: torch.Tensor | None = None) -> torch.Tensor:
    """`condition_maps` for a `(B, 17, 3)` tensor on its own device (a GPU draws a batch in microseconds).

    The same maps as `models.condition.condition_map` to float32 rounding: keypoint Gaussians, then limb Gaussians
    of the distance to each segment, worked out only in the segment's box grown by 4 sigma; all limbs of the batch
    at once in boxes of the largest box's size, added into their place (2.7x faster than the whole frame at 256 px
    on the CPU, where these maps had cost a third of a training step).
    """
    from models.condition import default_sigma

    kp = keypoints.float()
    if flip is not None:  # models.pose.mirror: x -> 1 - x, left and right labels swapped
        mirrored = kp[:, list(FLIP_INDEX)].clone()
        mirrored[..., 0] = 1.0 - mirrored[..., 0]
        kp = torch.where(flip.to(kp.device).view(-1, 1, 1), mirrored, kp)
    device, (n, k), n_limbs = kp.device, kp.shape[:2], len(_LIMB_A)
    s = default_sigma(size, size)
    inv = -0.5 / (s * s)
    pts = kp[..., :2] * size  # (B, 17, 2) pixels
    vis = kp[..., 2] >= VISIBLE
    grid = torch.arange(size, device=device, dtype=torch.float32) + 0.5  # pixel centres
    out = torch.zeros(n, k + n_limbs, size, size, device=device)
    gx = torch.exp(inv * (grid - pts[..., 0:1]) ** 2)  # (B, 17, W)
    gy = torch.exp(inv * (grid - pts[..., 1:2]) ** 2) * vis[..., None]  # (B, 17, H)
    torch.mul(gy[..., :, None], gx[..., None, :], out=out[:, :k])

    a, b = pts[:, _LIMB_A.to(device)], pts[:, _LIMB_B.to(device)]  # (B, L, 2)
    on = vis[:, _LIMB_A.to(device)] & vis[:, _LIMB_B.to(device)]
    reach = 4.0 * s
    lo = torch.floor(torch.minimum(a, b) - reach).clamp(0, size).long()
    hi = (torch.ceil(torch.maximum(a, b) + reach) + 1).clamp(0, size).long()
    bw, bh = (int(v) for v in ((hi - lo) * on[..., None]).amax(dim=(0, 1)))
    if bw <= 0 or bh <= 0:
        return out
    ab = b - a
    inv_len2 = 1.0 / (ab * ab).sum(-1).clamp(min=1e-6)
    cols = lo[..., 0, None] + torch.arange(bw, device=device)  # (B, L, bw) pixel columns of each box
    rows = lo[..., 1, None] + torch.arange(bh, device=device)
    dx = (cols + 0.5 - a[..., 0, None])[..., None, :]  # (B, L, 1, bw)
    dy = (rows + 0.5 - a[..., 1, None])[..., :, None]  # (B, L, bh, 1)
    abx, aby = ab[..., 0, None, None], ab[..., 1, None, None]
    t = ((dx * abx + dy * aby) * inv_len2[..., None, None]).clamp(0.0, 1.0)
    ex, ey = dx - t * abx, dy - t * aby
    inside = (cols < hi[..., 0, None])[..., None, :] & (rows < hi[..., 1, None])[..., :, None] & on[..., None, None]
    values = torch.exp(inv * (ex * ex + ey * ey)) * inside  # 0 past the box (and its clamped indices add nothing)
    index = rows.clamp(max=size - 1)[..., :, None] * size + cols.clamp(max=size - 1)[..., None, :]
    out[:, k:].view(n, n_limbs, -1).scatter_add_(2, index.view(n, n_limbs, -1), values.view(n, n_limbs, -1))
    return out


def save_grid(images: torch.Tensor, path: str | Path, nrow: int = 8) -> None:
    """Save a batch of images in [-1, 1] `(B, 3, H, W)` as one PNG grid, `nrow` images a row."""
    images = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().cpu()
    b, _, h, w = images.shape
    rows = (b + nrow - 1) // nrow
    grid = torch.full((3, rows * h, min(b, nrow) * w), 255, dtype=torch.uint8)
    for i in range(b):
        r, c = divmod(i, nrow)
        grid[:, r * h : (r + 1) * h, c * w : (c + 1) * w] = images[i]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(path)


# -- the CLIP set: captioned images, their texts as token rows (training.train_clip) ---------------------
KIND_TAGS = ("gradient background", "stripes background", "dots background", "checkered background")  # else plain
# Each image gets N_TEXTS token rows, made once while loading (in the worker processes) and drawn from at random
# on the device each step, so the loop does no text work on the CPU: the sentence (3 slots), all tags in
# order (1) or shuffled (2), a random subset of 1-4 tags (5; short prompts like "pink hair") and of 1-all tags (5).
N_TEXTS = 16
MAX_TAGS = 62  # tags per image tracked in the int64 bit masks of the multi-positive loss


def list_captioned(root: str | Path, max_images: int = 0) -> list[tuple[Path, Path]]:
    """(image, caption) paths of a synth folder, sorted by name (at most `max_images`, 0 for all)."""
    root = Path(root)
    if not (root / "images").is_dir() or not (root / "captions").is_dir():
        raise InputError(f"The data folder {root} needs images/ and captions/ (python -m training.synth --out {root}).")
    pairs = [
        (p, root / "captions" / f"{p.stem}.txt")
        for p in sorted((root / "images").glob("*.png"))
        if (root / "captions" / f"{p.stem}.txt").is_file()
    ]
    if not pairs:
        raise InputError(f"The data folder {root} has no image with a caption.")
    return pairs[:max_images] if max_images > 0 else pairs


def split_tags(line: str) -> list[str]:
    """The tag list of caption line 1, with 'plain background' added where no background kind is named."""
    tags = [t.strip() for t in line.split(",") if t.strip()]
    if any(t.endswith(" background") for t in tags) and not any(t in KIND_TAGS for t in tags):
        tags.append("plain background")  # so that the zero-shot "plain background" prompt has something to match
    return tags


def _encode_caption(tok, cache: dict, tag_line: str, sentence: str) -> tuple[list[list[int]], list[int]]:
    """A caption as BPE ids: each tag (cached; tags repeat) and the sentence."""
    tags = split_tags(tag_line)
    for t in tags:
        if t not in cache:
            cache[t] = tok.encode(t)
    return [cache[t] for t in tags], tok.encode(sentence.strip() or tag_line)


def _load_clip_chunk(job: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray, list, list]:
    """Decode a chunk of (image, caption, attributes) files, or render samples of a synth seed: uint8 images
    (n, size, size, 3), text rows (n, N_TEXTS, ctx) int32, their tag bit masks (n, N_TEXTS), tag lists, attributes."""
    kind, items, size, ctx, seed, focus_tags = job
    tok, cache = _tokenizer(), {}
    images = np.empty((len(items), size, size, 3), dtype=np.uint8)
    texts = np.empty((len(items), N_TEXTS, ctx), dtype=np.int32)
    masks = np.empty((len(items), N_TEXTS), dtype=np.int64)
    attrs, tags = [], []
    for i, item in enumerate(items):
        if kind == "files":
            img_path, cap_path, attr_path = item
            images[i] = read_image(img_path, size)
            lines = Path(cap_path).read_text().splitlines() + ["", ""]
            attrs.append(json.loads(Path(attr_path).read_text()) if Path(attr_path).is_file() else {})
            key = zlib.crc32(str(img_path).encode())
        else:  # ("synth", [(seed, index), ...]): rendered here, never written to disk
            from training.synth import make_sample

            smp = make_sample(item[0], item[1], size)
            images[i] = np.asarray(smp["render"].image.convert("RGB"))
            lines = [smp["tags"], smp["sentence"]]
            attrs.append(smp["attributes"])
            key = item[0] * 1_000_003 + item[1]
        tag_ids, sent_ids = _encode_caption(tok, cache, lines[0], lines[1])
        focus = [j for j, t in enumerate(split_tags(lines[0])) if t in focus_tags]
        texts[i], masks[i] = text_variants(tag_ids, sent_ids, ctx, np.random.default_rng([seed, key]), focus)
        tags.append(split_tags(lines[0])[:MAX_TAGS])
    return images, texts, masks, tags, attrs


def focus_tag_set(attributes: Sequence[str]) -> frozenset[str]:
    """The caption tags of the named zero-shot attributes (`training.eval_clip.attribute_prompts`: 'eye_color' ->
    'blue eyes', 'red eyes', ...)."""
    from training.eval_clip import attribute_prompts

    prompts = attribute_prompts()
    unknown = [a for a in attributes if a not in prompts]
    if unknown:
        raise InputError(f"--focus: unknown attribute {unknown[0]!r} (known: {', '.join(prompts)}).")
    return frozenset(t for a in attributes for t in prompts[a][2])


def parse_synth(spec: str) -> tuple[int, int]:
    """'SEED:N' -> (seed, n)."""
    try:
        seed, n = (int(v) for v in spec.split(":"))
    except ValueError:
        raise InputError(f"--synth takes SEED:N (e.g. 0:40000), not {spec!r}.") from None
    from training.eval_common import EVAL_SEED

    if seed >= EVAL_SEED or seed < 0 or n <= 0:
        raise InputError(f"--synth {spec}: the seed must be in [0, {EVAL_SEED}) (held-out seeds are not for training).")
    return seed, n


@dataclass
class ClipData:
    """The CLIP training set in memory."""

    images: np.ndarray  # (N, size, size, 3) uint8
    texts: np.ndarray  # (N, N_TEXTS, ctx) int32 token rows
    masks: np.ndarray  # (N, N_TEXTS) int64: bit t set when the text names the image's tag t
    tags: list[list[str]]  # each image's tags (caption line 1)
    attrs: list[dict]  # attributes/*.json

    def tag_table(self) -> tuple[np.ndarray, list[str]]:
        """(N, MAX_TAGS) int64 vocabulary index of each image's tags (padding: len(vocab)), and the vocabulary."""
        vocab = sorted({t for ts in self.tags for t in ts})
        index = {t: i for i, t in enumerate(vocab)}
        table = np.full((len(self.tags), MAX_TAGS), len(vocab), dtype=np.int64)
        for i, ts in enumerate(self.tags):
            table[i, : len(ts)] = [index[t] for t in ts]
        return table, vocab


def load_clip_data(
    folders: list[str],
    synth: list[str] | None = None,
    size: int = 128,
    max_images: int = 0,
    workers: int = 0,
    context_length: int = 77,
    seed: int = 0,
    focus: Sequence[str] = (),
) -> ClipData:
    """All images, N_TEXTS token rows per image, their tag masks, tag lists and attribute dicts, from synth folders
    and/or rendered in memory (`SEED:N`), in parallel processes; `focus`: attributes whose tags (`focus_tag_set`)
    every short text names."""
    focus_tags = focus_tag_set(focus)
    sources: list[tuple[str, list]] = []
    for f in folders:
        root = Path(f)
        sources += [("files", [(str(a), str(b), str(root / "attributes" / f"{a.stem}.json"))
                               for a, b in list_captioned(f, max_images)])]  # fmt: skip
    for spec in synth or []:
        sd, n = parse_synth(spec)
        sources.append(("synth", [(sd, i) for i in range(min(n, max_images) if max_images else n)]))
    workers = workers or max(1, min(16, os.cpu_count() or 1))
    jobs = []
    for kind, items in sources:
        chunk = max(32, math.ceil(len(items) / (workers * 4)))
        jobs += [(kind, items[i : i + chunk], size, context_length, seed, focus_tags)
                 for i in range(0, len(items), chunk)]  # fmt: skip
    if workers > 1 and len(jobs) > 1:  # not runs.pool_map: training.runs imports this module
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_load_clip_chunk, jobs))
    else:
        parts = [_load_clip_chunk(j) for j in jobs]
    images, texts, masks = (np.concatenate([p[k] for p in parts]) for k in range(3))
    return ClipData(images, texts, masks, [t for p in parts for t in p[3]], [a for p in parts for a in p[4]])


def text_variants(
    tag_ids: list[list[int]], sent_ids: list[int], ctx: int, rng: np.random.Generator, focus: Sequence[int] = ()
) -> tuple[np.ndarray, np.ndarray]:
    """(N_TEXTS, ctx) int32 token rows for one image (<start> ids <end>, cut at ctx with the end kept, 0-padded)
    and, per row, the bit mask (int64) of which of the image's tags the text names (the sentence names all).
    `focus`: indices of tags that every short (1-4 tag) text names, one drawn at random per text."""
    tok = _tokenizer()
    sot, eot, comma = tok.sot_token_id, tok.eot_token_id, _comma_ids()
    n = min(len(tag_ids), MAX_TAGS)
    every = (1 << n) - 1

    def join(order) -> tuple[list[int], int]:
        out: list[int] = []
        for k, j in enumerate(order):
            out += (comma if k else []) + tag_ids[j]
        return out, sum(1 << int(j) for j in order)

    texts = [(sent_ids, every)] * 3 + [join(range(n))]
    for _ in range(2):
        texts.append(join(rng.permutation(n)))
    focus = [j for j in focus if j < n]
    for r, hi in enumerate([min(4, n)] * 5 + [n] * 5):
        k = int(rng.integers(1, hi + 1)) if n else 0
        if focus and r < 5:  # a short text: one focus tag and k - 1 others, in random order
            f = int(focus[int(rng.integers(len(focus)))])
            others = [j for j in rng.permutation(n) if j != f][: k - 1]
            texts.append(join(rng.permutation([f, *others])))
        else:
            texts.append(join(rng.permutation(n)[:k]))
    rows = np.zeros((N_TEXTS, ctx), dtype=np.int32)
    masks = np.zeros(N_TEXTS, dtype=np.int64)
    for r, (ids, mask) in enumerate(texts):
        ids = [sot] + ids[: ctx - 2] + [eot]
        rows[r, : len(ids)] = ids
        masks[r] = mask
    return rows, masks


_TOK = None


def _tokenizer():
    """open_clip's standard BPE tokenizer, built once per process."""
    global _TOK
    if _TOK is None:
        from open_clip import SimpleTokenizer

        _TOK = SimpleTokenizer()
    return _TOK


def _comma_ids() -> list[int]:
    """The BPE ids of ', ' between tags (the tokenizer splits punctuation from words, so joining ids is exact)."""
    return _tokenizer().encode(",")
