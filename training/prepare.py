"""Turn a folder of real images into the synthetic data set's layout, with keypoints from mediapipe.

    python -m training.prepare --images photos/ --out data/real [--size 128] [--margin 0.08]

Each image is cropped to a square around its fitted pose (padded with its border colour where the
square leaves the photo) and resized to `--size`. Images where no person is found (or that cannot
be read) are skipped and counted. Captions are generic ("1person, photo"); attributes record the
source file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from models.errors import InputError
from models.pose import NUM_KEYPOINTS, Pose
from training.synth import SUBDIRS, keypoint_json


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
    from models.image_io import IMAGE_SUFFIXES, load_image
    from models.pose_input import extract_pose

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


def main(argv: list[str] | None = None) -> int:
    """Command line entry."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--margin", type=float, default=0.08)
    a = ap.parse_args(argv)
    try:
        report = prepare(a.images, a.out, a.size, a.margin)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
