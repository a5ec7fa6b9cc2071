"""Evaluate the pose-conditioned generator on poses it never saw, and read poses out of images.

    python -m training.eval [quality] --json [--n 256] [--model weights]   # what a person sees (training.eval_quality)
    python -m training.eval detect IMAGE... [--detector weights/detector]
    python -m training.eval clip|refine|directions|style|judge --json    # the CLIP, refinement, directions, ...

PCK (`training.eval_common.pck_counts`) is PCK@0.1 of the detector on the generated images against the pose the
model was asked for, brought to the output frame as the pipeline frames it, over the points that pose marks
visible; the distance threshold is 0.1 of the longer side of the visible points' bounding box.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from models.detector import load_detector
from models.errors import InputError
from training.eval_common import DEFAULT_DETECTOR


# -- command line ---------------------------------------------------------------------------------
def main_detect(argv: list[str]) -> int:
    """`detect IMAGE...`: one JSON line per image (our pose JSON plus "input", or an "error")."""
    from models.pose_input import load_image

    parser = argparse.ArgumentParser(prog="python -m training.eval detect", description="Read the pose out of images.")
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("--detector", default=str(DEFAULT_DETECTOR), help="detector folder (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        det = load_detector(args.detector)
    except InputError as err:
        print(json.dumps({"error": str(err)}))
        return 1
    status = 0
    for path in args.images:
        try:
            pose = det.detect([load_image(path)])[0]
            line = {"input": path, **pose.to_dict()}
        except InputError as err:
            line, status = {"input": path, "error": str(err)}, 1
        print(json.dumps(line), flush=True)
    return status


# Sub-commands evaluated by other modules: `python -m training.eval refine --json` runs
# `training.eval_clip.main_refine(["--json"])`.
SUBCOMMANDS = {
    "clip": ("training.eval_clip", "main"),
    "refine": ("training.eval_clip", "main_refine"),
    "directions": ("training.eval_directions", "main"),
    "style": ("training.eval_style", "main"),
    "judge": ("training.eval_common", "main_judge"),
    "quality": ("training.eval_quality", "main"),
}


def main(argv: list[str] | None = None) -> int:
    """Dispatch: `detect ...`, or a sub-command of SUBCOMMANDS (`quality` when none is named)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "detect":
        return main_detect(argv[1:])
    if not argv or argv[0] not in SUBCOMMANDS:
        argv = ["quality", *argv]
    module, function = SUBCOMMANDS[argv[0]]
    return int(getattr(importlib.import_module(module), function)(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
