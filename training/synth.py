"""Write a data set: rendered characters with exact keypoints, captions and attributes, or real images with
mediapipe's keypoints in the same layout.

    python -m training.synth --out data/synth --n 20000 --seed 0 [--size 128] [--poses FILE] [--workers 2]
    python -m training.synth --out data/pairs --n 12000 --seed 11 --pairs     # one-attribute pairs (below)
    python -m training.synth --out data/wide --n 20000 --seed 12 --wide       # poses as varied as photos
    python -m training.synth --out data/real --images photos/ [--margin 0.08]  # real images (below)

Layout: `images/000000.png`, `keypoints/000000.json` (`{"width", "height", "keypoints": [x, y, v] * 17}`
in pixels, COCO flags v: 2 visible, 1 hidden, 0 absent), `captions/000000.txt` (tags line, then a
sentence line), `attributes/000000.json`. Image i depends only on (seed, i), so the output is the
same bytes whatever the worker count. `--poses` takes JSON lines of poses (any format
`models.pose.from_dict` reads), used in order (cycling when `--n` exceeds their count).

`--pairs`: images 2k and 2k+1 are one character in one pose, the second with exactly one attribute changed
(`training.character.swap`; the attribute cycles with k), and both attribute files say `"pair": k, "swapped": name`.
`train_ldm --pair-weight` trains on such pairs with shared noise, so the UNet is told what one attribute's change
moves in the picture and what it leaves alone.

`--images`: each real image is cropped to a square around its pose (mediapipe, `models.pose_input.extract_pose`),
padded with its border colour where the square leaves the photo, and resized to `--size`. Images where no person is
found (or that cannot be read) are skipped and counted. Captions are generic ("1person, photo"); attributes record
the source file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

from models.errors import InputError
from models.pose import NUM_KEYPOINTS, Pose, from_dict, to_coco_flat
from training.character import SWAPS, sample_character, sentence, swap, tags
from training.render import estimate_view, render
from training.skeleton import Rig, sample_rig

SUBDIRS = ("images", "keypoints", "captions", "attributes")


def make_sample(
    seed: int, index: int, size: int = 128, pose: Pose | None = None, wide: bool = False, eyes: bool = True
) -> dict:
    """Render sample `index` of data set `seed`: image, pose, captions and attributes (`wide`: from the wide pose
    sampler, `training.skeleton.sample_rig`; `eyes=False`: the same picture without eyes)."""
    rng = np.random.default_rng([seed, index])
    if pose is None:
        return _describe(sample_rig(rng, wide=wide), sample_character(rng), seed, index, size, eyes)
    return _describe(pose, sample_character(rng), seed, index, size, eyes)


def make_pair(seed: int, pair: int, size: int = 128) -> tuple[dict, dict]:
    """Samples 2 * pair and 2 * pair + 1 of a `--pairs` data set: a character, then the same one in the same pose
    with one attribute swapped (the first of SWAPS, from `pair`'s place in the cycle, that applies to it)."""
    rng = np.random.default_rng([seed, pair])
    rig, character = sample_rig(rng), sample_character(rng)
    names = list(SWAPS)
    for k in range(len(names)):
        attribute = names[(pair + k) % len(names)]
        other = swap(character, attribute, rng)
        if other is not None:
            break
    samples = (
        _describe(rig, character, seed, 2 * pair, size),
        _describe(rig, other, seed, 2 * pair + 1, size),
    )
    for s in samples:
        s["attributes"].update(pair=pair, swapped=attribute)
    return samples


def _describe(rig_or_pose: Rig | Pose, character, seed: int, index: int, size: int, eyes: bool = True) -> dict:
    """Render `character` on a sampled rig (or a given pose) and describe it: image, pose, captions, attributes."""
    if isinstance(rig_or_pose, Rig):
        rig = rig_or_pose
        out = render(rig.pose, character, size, rig=rig, eyes=eyes)
        action, yaw, yaw_deg, heads = rig.action, rig.yaw, round(rig.yaw_deg, 1), round(rig.heads, 2)
    else:
        out = render(rig_or_pose, character, size, eyes=eyes)
        action, yaw, yaw_deg, heads = "custom", estimate_view(rig_or_pose), None, None
    attrs = character.to_dict()
    ys, xs = np.nonzero(out.mask)
    bbox = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if xs.size else None
    attrs.update(bbox=bbox, action=action, yaw=yaw, yaw_deg=yaw_deg, heads=heads, seed=seed, index=index, size=size)
    cap_action = None if action == "custom" else action
    cap_yaw = None if yaw == "unknown" else yaw
    return {
        "render": out,
        "tags": tags(character, cap_action, cap_yaw),
        "sentence": sentence(character, cap_action, cap_yaw),
        "attributes": attrs,
    }


def keypoint_json(pose: Pose) -> dict:
    """The keypoint file's object: pixels, COCO flags (readable by `models.pose.load`)."""
    flat = to_coco_flat(pose)
    flat = [round(v, 3) if k % 3 != 2 else int(v) for k, v in enumerate(flat)]
    return {"width": pose.width, "height": pose.height, "keypoints": flat}


def write_sample(out: Path, seed: int, index: int, size: int, pose: Pose | None, wide: bool = False) -> None:
    """Render and write the four files of one sample."""
    _write(out, make_sample(seed, index, size, pose, wide))


def _write(out: Path, s: dict) -> None:
    """Write the four files of one described sample, named by its index."""
    name = f"{s['attributes']['index']:06d}"
    s["render"].image.save(out / "images" / f"{name}.png")
    (out / "keypoints" / f"{name}.json").write_text(json.dumps(keypoint_json(s["render"].pose)))
    (out / "captions" / f"{name}.txt").write_text(s["tags"] + "\n" + s["sentence"] + "\n")
    (out / "attributes" / f"{name}.json").write_text(json.dumps(s["attributes"], sort_keys=True))


def _job(args: tuple) -> int:
    out, seed, index, size, pose_obj, wide = args
    pose = from_dict(pose_obj) if pose_obj is not None else None
    write_sample(Path(out), seed, index, size, pose, wide)
    return index


def _pair_job(args: tuple) -> int:
    out, seed, pair, size = args
    for s in make_pair(seed, pair, size):
        _write(Path(out), s)
    return pair


def read_poses(path: str | Path) -> list[dict]:
    """The pose objects of a JSON-lines file (blank lines skipped); each is checked to parse."""
    objs = []
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            from_dict(obj)
        except (json.JSONDecodeError, InputError) as err:
            raise InputError(f"Line {lineno} of {path} is not a pose ({err}).") from None
        objs.append(obj)
    if not objs:
        raise InputError(f"{path} holds no poses.")
    return objs


def write_dataset(
    out: str | Path,
    n: int,
    seed: int = 0,
    size: int = 128,
    poses: list[dict] | None = None,
    workers: int = 2,
    pairs: bool = False,
    wide: bool = False,
) -> None:
    """Write samples 0..n-1 of data set `seed` under `out` using `workers` processes (`pairs`: n // 2 pairs;
    `wide`: poses from the wide sampler)."""
    out = Path(out)
    for sub in SUBDIRS:
        (out / sub).mkdir(parents=True, exist_ok=True)
    if pairs:
        fn, jobs = _pair_job, [(str(out), seed, k, size) for k in range(n // 2)]
    else:
        fn, jobs = _job, [(str(out), seed, i, size, poses[i % len(poses)] if poses else None, wide) for i in range(n)]
    if workers <= 1:
        for j in jobs:
            fn(j)
        return
    with Pool(workers) as pool:
        for _ in pool.imap_unordered(fn, jobs, chunksize=16):
            pass


def main(argv: list[str] | None = None) -> int:
    """Command line entry."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=None, help="number of images (default: 1000, or one per pose)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--poses", default=None, help="JSON-lines file of poses, one image each, in order")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pairs", action="store_true", help="n // 2 pairs differing in one attribute (module docstring)")
    ap.add_argument("--wide", action="store_true", help="poses from the wide sampler: free joints, pitch, crops")
    ap.add_argument("--images", default=None, help="a folder of real images instead of renders (module docstring)")
    ap.add_argument("--margin", type=float, default=0.08, help="with --images: room around the pose, share of side")
    a = ap.parse_args(argv)
    if a.images is not None:
        if a.poses or a.pairs or a.wide or a.n is not None:
            print("error: --images takes the images' own poses (no --n, --poses, --pairs or --wide).", file=sys.stderr)
            return 2
        try:
            print(json.dumps(prepare(a.images, a.out, a.size, a.margin)))
        except InputError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        return 0
    try:
        poses = read_poses(a.poses) if a.poses else None
    except (InputError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    n = a.n if a.n is not None else (len(poses) if poses else 1000)
    if n < 1 or not 16 <= a.size <= 1024:
        print("error: --n must be at least 1 and --size between 16 and 1024.", file=sys.stderr)
        return 2
    if a.pairs and (poses or n < 2 or a.wide):
        print(
            "error: --pairs draws its own poses (no --poses, no --wide) and needs --n of at least 2.", file=sys.stderr
        )
        return 2
    if a.wide and poses:
        print("error: --wide draws its own poses; it does not go with --poses.", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    n = n - n % 2 if a.pairs else n
    write_dataset(a.out, n, a.seed, a.size, poses, a.workers, a.pairs, a.wide)
    dt = time.perf_counter() - t0
    print(json.dumps({"out": str(a.out), "n": n, "seconds": round(dt, 2), "images_per_s": round(n / dt, 1)}))
    return 0


# -- real images ----------------------------------------------------------------------------------
def crop_to_pose(image: Image.Image, pose: Pose, size: int = 128, margin: float = 0.08) -> tuple[Image.Image, Pose]:
    """A `size` square crop around the pose's visible points (head room added), and the pose in it."""
    x0, y0, x1, y1 = pose.bbox()
    h = max(y1 - y0, 1.0)
    y0 -= 0.14 * h  # the top keypoints are the eyes; leave room for the head
    y1 += 0.05 * h  # and below the ankles for the feet
    side = max(x1 - x0, y1 - y0) / (1 - 2 * margin)
    side = max(side, 16.0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = round(cx - side / 2), round(cy - side / 2)
    s = round(side)
    arr = np.asarray(image)
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]]).mean(axis=0)
    canvas = Image.new("RGB", (s, s), tuple(int(v) for v in border))
    canvas.paste(image, (-left, -top))
    out = canvas.resize((size, size), Image.LANCZOS)
    px = pose.pixels().astype(np.float64)
    xy = (px - np.array([left, top])) / s
    kp = np.concatenate([xy, pose.visibility[:, None].astype(np.float64)], axis=1)
    far = ((xy < -1.0) | (xy > 2.0)).any(axis=1)
    kp[far] = [0.5, 0.5, 0.0]  # far outside the crop: no information left
    # A point outside the crop cannot be seen in it.
    outside = ((xy < 0) | (xy > 1)).any(axis=1) & (kp[:, 2] >= 0.5)
    kp[outside, 2] = 0.25
    assert kp.shape == (NUM_KEYPOINTS, 3)
    return out, Pose(kp.astype(np.float32), size, size)


def prepare(images: str | Path, out: str | Path, size: int = 128, margin: float = 0.08) -> dict:
    """Extract, crop and write every image of a folder; returns the counts."""
    from models.pose_input import IMAGE_SUFFIXES, extract_pose, load_image

    src, out = Path(images), Path(out)
    if not src.is_dir():
        raise InputError(f"{src} is not a folder.")
    for sub in SUBDIRS:
        (out / sub).mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    written, skipped = 0, []
    for path in files:
        try:
            im = load_image(path)
            pose = extract_pose(im)
        except Exception as err:  # noqa: BLE001 - any failure on one photo only skips it
            skipped.append(f"{path.name}: {err}")
            continue
        crop, fitted = crop_to_pose(im, pose, size, margin)
        name = f"{written:06d}"
        crop.save(out / "images" / f"{name}.png")
        (out / "keypoints" / f"{name}.json").write_text(json.dumps(keypoint_json(fitted)))
        (out / "captions" / f"{name}.txt").write_text("1person, photo\nA photo of a person.\n")
        attrs = {"source": str(path.relative_to(src)), "kind": "photo", "index": written, "size": size}
        (out / "attributes" / f"{name}.json").write_text(json.dumps(attrs, sort_keys=True))
        written += 1
    return {"images": len(files), "written": written, "skipped": len(skipped), "skipped_files": skipped[:20]}


if __name__ == "__main__":
    sys.exit(main())
