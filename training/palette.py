"""Learn the colour search's palette (`models.edit_regions`) from training images.

    python -m training.palette --synth 0:600 --out weights/palette.json     # 600 renders of data set seed 0
    python -m training.palette --data DIR --out weights/palette.json        # a synth/prepare data folder

No labels are read: the parts come from each image's pose and colours, as refinement finds them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from models.edit_regions import PALETTE_COLOURS, data_palette, save_palette
from models.errors import InputError


def synth_images(spec: str) -> tuple[list[np.ndarray], list, str]:
    """Renders `SEED:N` of the training renderer: images, poses and a description."""
    from training.data import parse_synth
    from training.synth import make_sample

    seed, n = parse_synth(spec)  # a training seed: the palette must not learn the held-out renders
    renders = [make_sample(seed, i)["render"] for i in range(n)]
    return [np.asarray(r.image.convert("RGB")) for r in renders], [r.pose for r in renders], f"synth {seed}:{n}"


def folder_images(root: str, max_images: int) -> tuple[list[np.ndarray], list, str]:
    """Images and poses of a data folder (images/, keypoints/) and a description."""
    from PIL import Image

    from training.data import list_items, read_pose

    stems = list_items(root, max_images)
    images = []
    for stem in stems:  # at their own size: the keypoint files are in the images' pixels
        with Image.open(Path(root) / "images" / f"{stem}.png") as im:
            images.append(np.asarray(im.convert("RGB")))
    return images, [read_pose(root, s) for s in stems], f"{root} ({len(stems)} images)"


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--synth", help="SEED:N renders of the training renderer")
    source.add_argument("--data", help="a data folder with images/ and keypoints/")
    parser.add_argument("--max-images", type=int, default=600, help="images read from --data (0: all)")
    parser.add_argument("--colours", type=int, default=PALETTE_COLOURS, help="colours per part")
    parser.add_argument("--out", default="weights/palette.json")
    args = parser.parse_args(argv)
    try:
        images, poses, described = synth_images(args.synth) if args.synth else folder_images(args.data, args.max_images)
        palette = data_palette(images, poses, colours=args.colours)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    save_palette(palette, args.out, source=described)
    print(f"{args.out}: " + ", ".join(f"{r} {len(c)} colours" for r, c in palette.items()) + f" from {described}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
