"""`python app.py generate`: one pose in, PNG files out, one JSON line on stdout."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from PIL import Image, PngImagePlugin

from models.errors import InputError

PNG_KEY = "pose_studio"  # the PNG text chunk that carries the settings


def png_info(record: dict) -> PngImagePlugin.PngInfo:
    """A PNG text chunk holding `record` as JSON, so the file says how it was made."""
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_KEY, json.dumps(record))
    return info


def read_png_record(path: str | Path) -> dict | None:
    """The settings stored in a PNG by `png_info`, or None."""
    with Image.open(path) as im:
        text = im.info.get(PNG_KEY)
    return json.loads(text) if text else None


def output_paths(out: str, n: int) -> list[Path]:
    """`FILE.png` for one image; `FILE_1.png ... FILE_n.png` for several."""
    path = Path(out)
    if path.suffix.lower() != ".png":
        raise InputError("--out must name a .png file.")
    if n == 1:
        return [path]
    return [path.with_name(f"{path.stem}_{i + 1}{path.suffix}") for i in range(n)]


def output_pose(state, image: Image.Image):
    """The state's pose in the generated image's frame (the pipeline fits it to its square frame)."""
    from models.pipeline import FRAME_MARGIN
    from models.pose import fit_to_square

    return fit_to_square(state.pose, image.width, FRAME_MARGIN)


def main_generate(args: argparse.Namespace) -> int:
    """Run `generate`: print one JSON line (the record, or an error) and return the exit code."""
    from models.pipeline import PosePipeline
    from models.pose_input import read_pose_input

    started = time.perf_counter()
    try:
        paths = output_paths(args.out, args.num_images)
        source = read_pose_input(args.pose)
        pipe = PosePipeline.from_pretrained(args.model, device=args.device)
        t0 = time.perf_counter()
        images, states = pipe(
            source.pose,
            seed=args.seed,
            steps=args.steps,
            guidance=args.guidance,
            sampler=args.sampler,
            num_images=args.num_images,
        )
        seconds = time.perf_counter() - t0
    except InputError as err:
        print(json.dumps({"input": args.pose, "error": str(err)}))
        return 1
    except Exception as err:  # noqa: BLE001 - the command line promises one sentence, never a traceback
        print(json.dumps({"input": args.pose, "error": f"Generation failed: {type(err).__name__}: {err}"}))
        return 1

    outputs = []
    for path, image, state in zip(paths, images, states):
        record = {"input": args.pose, **state.to_dict(), "output_pose": output_pose(state, image).to_dict()}
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, pnginfo=png_info(record))
        outputs.append(str(path))
    first = states[0].to_dict()
    line = {
        "input": args.pose,
        "pose": output_pose(states[0], images[0]).to_dict(),
        "seed": args.seed,
        "seeds": [s.seed for s in states],
        "settings": first["settings"],
        "outputs": outputs,
        "seconds": round(seconds, 3),
        "seconds_total": round(time.perf_counter() - started, 3),
    }
    print(json.dumps(line))
    sys.stdout.flush()
    return 0
