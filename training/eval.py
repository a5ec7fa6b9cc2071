"""Evaluate the pose-conditioned generator on poses it never saw, and read poses out of images.

    python -m training.eval [--json] [--model weights] [--detector weights/detector] [--n 64] [--steps 10]
    python -m training.eval detect IMAGE... [--detector weights/detector]
    python -m training.eval quality --json [--n 256] [--ae DIR]         # what a person sees (training.eval_quality)
    python -m training.eval clip|refine|directions|style|judge --json   # the CLIP, refinement, directions, ...

The held-out split (`training.eval_common`): samples `[0, n)` of data set `EVAL_SEED` (10,000,000, never trained
on) are the poses to generate (and their renders), samples `[n, 2n)` the second half of the renders for FD.

Reported (one JSON object with `--json`):
* `pck`: PCK@0.1 of the detector on the generated images against the pose the model was asked for
  (the state's pose brought to the output frame as the pipeline frames it, `output_frame_pose`),
  over the points that pose marks visible; the distance
  threshold is 0.1 of the longer side of the visible points' bounding box.
* `pck_renders`: the same detector on the ground-truth renders of the same poses (its own ceiling).
* `pck_reconstructions`: the same on those renders passed through the pipeline's autoencoder only
  (encode, decode): the share of the gap to `pck_renders` due to decoding, not to the denoiser.
* `fd`: Frechet distance (Heusel et al. 2017, Eq. 6) between generated images and the second half
  of the held-out renders; `fd_ref`: the same between the two halves of the held-out renders
  (the floor `fd` should approach). Features: the detector's pooled bottleneck (`fd_features`).
* `seconds_per_image`: median wall time of one `pipe(...)` call for one image.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from PIL import Image

from models.detector import load_detector
from models.errors import InputError
from training.eval_common import (
    DEFAULT_DETECTOR,
    DEFAULT_MODEL,
    EVAL_SEED,
    frechet_distance,
    generate,
    heldout_render,
    pck,
    pck_counts,
    report,
    round_trip,
)


# -- model evaluation -----------------------------------------------------------------------------
def evaluate(
    model: str | Path = DEFAULT_MODEL,
    detector: str | Path = DEFAULT_DETECTOR,
    n: int = 64,
    steps: int = 10,
    sampler: str | None = None,
    guidance: float | None = None,
    save: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Generate `n` held-out poses, read them back, compare with renders; return the metrics dict."""
    if n < 2:
        raise InputError("--n must be at least 2 (Frechet distance needs two samples per set).")
    if steps < 1:
        raise InputError("--steps must be at least 1.")
    from models.pipeline import PosePipeline

    det = load_detector(detector)
    pipe = PosePipeline.from_pretrained(str(model))
    extra = {k: v for k, v in (("sampler", sampler), ("guidance", guidance)) if v is not None}
    # Held-out renders: [0, n) are the poses to generate, [n, 2n) the other half for FD.
    renders = [heldout_render(i) for i in range(2 * n)]
    first, second = renders[:n], renders[n:]
    images, targets, states, seconds = generate(pipe, [r.pose for r in first], steps, EVAL_SEED, progress, **extra)
    if save:
        Path(save).mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images):
            image.save(Path(save) / f"{i:04d}.png")
    settings = next((s for s in map(_settings_of, states) if s), {})
    return {
        "n": n,
        "steps": steps,
        "sampler": settings.get("sampler", sampler),
        "guidance": settings.get("guidance", guidance),
        **_fidelity(det, pipe, images, targets, first, second),
        "fd_features": f"detector pooled bottleneck ({det.feature_dim} dims, {Path(detector).name})",
        "seconds_per_image": statistics.median(seconds),
        "split": f"synth data set seed {EVAL_SEED}, samples 0..{2 * n - 1} (generated: first {n}; fd: vs the second {n})",
        "model": str(model),
        "detector": str(detector),
    }


def _fidelity(
    det: Any, pipe: Any, images: list[Image.Image], targets: list[Any], first: list[Any], second: list[Any]
) -> dict[str, Any]:
    """PCK of the detector on the samples, on the renders of their poses and on those renders' round trips; FD in
    the detector's features of the samples and of the first renders against the second."""
    hits, total = pck_counts(det.detect(images), targets)
    hits_r, total_r = pck_counts(det.detect([r.image for r in first]), [r.pose for r in first])
    # The same renders through the autoencoder alone: tells "the detector cannot read decoded
    # images" apart from "the denoiser does not follow the pose".
    recon = round_trip(pipe.vae, [r.image for r in first]) if hasattr(pipe, "vae") and hasattr(pipe, "decode") else []
    pck_recon = pck(det.detect(recon), [r.pose for r in first]) if recon else None
    f_gen = det.embed(images)
    f_first = det.embed([r.image for r in first])
    f_second = det.embed([r.image for r in second])
    return {
        "pck": hits / total if total else float("nan"),
        "pck_points": total,
        "pck_renders": hits_r / total_r if total_r else float("nan"),
        "pck_reconstructions": pck_recon,
        "fd": frechet_distance(f_gen, f_second),
        "fd_ref": frechet_distance(f_first, f_second),
    }


def _settings_of(state: Any) -> dict[str, Any]:
    """The sampler settings a generation state records (`state.settings`, or its JSON record's)."""
    settings = getattr(state, "settings", None)
    if isinstance(settings, dict):
        return settings
    for name in ("to_dict", "to_record"):
        if hasattr(state, name):
            record = getattr(state, name)()
            s = record.get("settings", {}) if isinstance(record, dict) else {}
            return s if isinstance(s, dict) else {}
    return {}


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


def main_eval(argv: list[str]) -> int:
    """The model evaluation: print the metrics (JSON with --json)."""
    parser = argparse.ArgumentParser(prog="python -m training.eval", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="pipeline folder (default: %(default)s)")
    parser.add_argument("--detector", default=str(DEFAULT_DETECTOR), help="detector folder (default: %(default)s)")
    parser.add_argument("--n", type=int, default=64, help="held-out poses to generate (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=8, help="sampler steps (default: %(default)s)")
    parser.add_argument("--sampler", default=None, help="sampler name (default: the pipeline's)")
    parser.add_argument("--guidance", type=float, default=None, help="pose guidance scale (default: the pipeline's)")
    parser.add_argument("--save", metavar="DIR", help="also write the generated images here")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return report(
        lambda: evaluate(
            args.model, args.detector, args.n, args.steps, args.sampler, args.guidance, args.save,
            progress=not args.json,
        ),
        args.json,
    )  # fmt: skip


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
    """Dispatch: `detect ...`, a sub-command of SUBCOMMANDS, or the model evaluation (the default)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "detect":
        return main_detect(argv[1:])
    if argv and argv[0] in SUBCOMMANDS:
        module, function = SUBCOMMANDS[argv[0]]
        return int(getattr(importlib.import_module(module), function)(argv[1:]) or 0)
    if argv and argv[0] == "model":  # the default, also reachable by name
        argv = argv[1:]
    return main_eval(argv)


if __name__ == "__main__":
    sys.exit(main())
