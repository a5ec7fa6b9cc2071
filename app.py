"""Pose Studio: draw an anime character in a given pose.

    python app.py                          # serve the web app on http://127.0.0.1:7860
    python app.py pose INPUT... [--preview DIR] [--format ours|openpose|coco|fork]
    python app.py generate --pose INPUT --seed N --out FILE.png [--steps N] [--guidance G] [--style-image IMG] ...

INPUT is a photo, a keypoint JSON (ours, COCO-17, OpenPose-18, the keypoint-LDM fork's) or a
preset name (`python app.py pose --list-presets`).

`pose` prints one JSON line per input on stdout, `{"input", "format": "coco17", "width", "height", "keypoints"}` or
`{"input", "error"}`, and exits with 1 when any input failed; `--format` writes each pose as OpenPose's JSON (what
ControlNet pose editors load), a COCO annotation file or the fork's instead. Each line (saved to a file) reads back
as an input. `generate` writes PNG files (their settings in a text chunk: `models.pose_input.read_png_record`) and
prints one JSON line. Bad input gets one sentence on stdout, never a traceback; the limits are the web app's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from PIL import Image

from models import paths, pose_input
from models.backend import DEFAULT_SAMPLER, SAMPLER_NAMES, check_finite
from models.errors import InputError
from models.pose import FILE_FORMATS, Pose, to_file
from models.pose_input import PoseInput, list_presets, load_image, png_info

DEFAULT_MODEL = paths.WEIGHTS
# --model also takes the keypoint LDM's .ckpt/.safetensors file, or a Stable Diffusion 1.x folder or Hub id plus:
CONTROLNET_HELP = "OpenPose ControlNet (diffusers folder or Hub id) for a Stable Diffusion --model"


# -- `pose`: one JSON line per input ----------------------------------------------------------------
PREVIEW_MAX_SIDE = 1024  # previews of large photos are drawn at most this big


def pose_record(spec: str, fmt: str = "ours") -> dict[str, Any]:
    """The CLI line for one input: the pose as a file of `fmt` (ours by default), or `{"input", "error": ...}`."""
    return _record(spec, fmt)[0]


def write_previews(pose: Pose, image: Image.Image | None, out_dir: str | Path, stem: str) -> list[Path]:
    """Write `<stem>_openpose.png` (and, for a photo, `<stem>_overlay.png`) into `out_dir`; returns the paths."""
    from models.condition import openpose_drawing, skeleton_overlay

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scale = min(1.0, PREVIEW_MAX_SIDE / max(pose.width, pose.height))
    w, h = max(1, round(pose.width * scale)), max(1, round(pose.height * scale))
    paths = [out / f"{stem}_openpose.png"]
    openpose_drawing(pose, h, w).save(paths[0])
    if image is not None:
        if max(image.size) > PREVIEW_MAX_SIDE:
            image = image.copy()
            image.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
        paths.append(out / f"{stem}_overlay.png")
        skeleton_overlay(image, pose).save(paths[1])
    return paths


def main_pose(argv_inputs: list[str], preview: str | None = None, fmt: str = "ours") -> int:
    """Run `app.py pose`: print one JSON line per input (a pose file of `fmt`), write previews if asked; 1 if any
    input failed."""
    if not argv_inputs:
        print("Give at least one input: an image, a keypoint JSON file or a preset name.", file=sys.stderr)
        return 2
    failed = 0
    stems: set[str] = set()
    for spec in argv_inputs:
        record, inp = _record(spec, fmt)
        if inp is not None and preview:
            try:
                write_previews(inp.pose, inp.image, preview, _unique_stem(spec, stems))
            except OSError as err:
                record = {
                    "input": spec,
                    "error": f"The preview could not be written to '{preview}' ({err.strerror or err}).",
                }
        failed += "error" in record
        print(json.dumps(record), flush=True)
    return 1 if failed else 0


def _record(spec: str, fmt: str = "ours") -> tuple[dict[str, Any], PoseInput | None]:

    try:
        inp = pose_input.read_pose_input(spec)  # through the module, so that tests can stand in for it
    except InputError as err:
        return {"input": spec, "error": _one_line(str(err))}, None
    except Exception as err:  # noqa: BLE001 - the CLI promises one sentence per input, never a traceback
        return {"input": spec, "error": f"Reading the input failed unexpectedly ({type(err).__name__})."}, None
    record = {"input": spec, **to_file(inp.pose, fmt)}
    if fmt == "ours":  # float32 -> 6 decimals: a millionth of the frame, and lines people can read
        record["keypoints"] = [[round(c, 6) for c in point] for point in record["keypoints"]]
    return record, inp


def _one_line(message: str) -> str:
    return " ".join(message.split()) or "The input could not be read."


def _unique_stem(spec: str, used: set[str]) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(spec).stem or spec).strip("._") or "pose"
    candidate, n = stem, 2
    while candidate in used:
        candidate, n = f"{stem}_{n}", n + 1
    used.add(candidate)
    return candidate


# -- `generate`: PNG files and one JSON line ----------------------------------------------------------
def output_paths(out: str, n: int) -> list[Path]:
    """`FILE.png` for one image; `FILE_1.png ... FILE_n.png` for several."""
    path = Path(out)
    if path.suffix.lower() != ".png":
        raise InputError("--out must name a .png file.")
    if n == 1:
        return [path]
    return [path.with_name(f"{path.stem}_{i + 1}{path.suffix}") for i in range(n)]


def check_writable(paths: list[Path]) -> None:
    """Refuse `--out` paths that cannot be written (a folder of that name, a read-only place) before the model runs:
    the folder is made and a scratch file written and removed there."""
    for path in paths:
        if path.is_dir():
            raise InputError(f"--out: {path} is a folder; name a .png file.")
    folder = paths[0].parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".pose_studio_", suffix=".png"):
            pass
    except OSError as err:
        raise InputError(f"--out: cannot write into {folder} ({err.strerror or 'not writable'}).") from None


def check_limits(args: argparse.Namespace) -> None:
    """The web app's limits (ui.settings: steps, images, steps x images, seed, prompt length), before any model
    loads."""
    from models.samplers import DEFAULT_FAST_STEPS, MAX_FAST_STEPS
    from ui import settings

    fast = getattr(args, "fast", False)
    if args.steps is None:
        args.steps = DEFAULT_FAST_STEPS if fast else settings.DEFAULT_STEPS
    settings.check_int(args.steps, "--steps", 1, MAX_FAST_STEPS if fast else settings.MAX_STEPS)
    settings.check_int(args.num_images, "--num-images", 1, settings.MAX_NUM_IMAGES)
    settings.check_int(args.seed, "--seed", 0, settings.MAX_SEED)
    settings.check_cost(args.steps, args.num_images)
    if args.guidance is not None:
        settings.check_float(args.guidance, "--guidance", settings.MIN_GUIDANCE, settings.MAX_GUIDANCE)
    settings.check_text(getattr(args, "prompt", None), "--prompt")
    settings.check_text(getattr(args, "negative_prompt", None), "--negative-prompt")


def read_style_image(path: str | None) -> Image.Image | None:
    """The --style-image picture, read with the limits of every image the app takes (None: no picture)."""

    if path is None:
        return None
    try:
        return load_image(path)
    except InputError as err:
        raise InputError(f"--style-image: {err}") from None


def save_atomic(image: Image.Image, path: Path, record: dict) -> None:
    """Write the PNG under a temporary name, then rename it: a failed write leaves no half file at `path`."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        image.save(temp, format="PNG", pnginfo=png_info(record))
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def output_pose(state, image: Image.Image):
    """The state's pose in the generated image's frame (the pipeline fits it to its square frame)."""
    from models.pipeline import frame_pose

    return frame_pose(state.pose, image.width)


def check_refine_args(args: argparse.Namespace) -> None:
    """Raise InputError for bad `--prompt`/`--refine-*` values before any model loads."""
    from models.refine import check_refine_inputs
    from models.refine_settings import prompt_terms

    check_refine_inputs(args.refine_mode, args.refine_steps, None, None)
    prompt_terms(args.prompt, args.negative_prompt)


def refine_states(pipe, states: list, args: argparse.Namespace) -> tuple[list, list, list[dict]]:
    """CLIP-refine every generated state (`--prompt`); the images, states and one record per image."""
    from models.refine import refine

    images, done, records = [], [], []
    for state in states:
        result = refine(
            pipe, state, args.prompt, args.negative_prompt, mode=args.refine_mode, steps=args.refine_steps,
            clip=args.clip,
        )  # fmt: skip
        images.append(result.images[-1] if result.images else pipe.decode(result.state.z_0)[0])
        done.append(result.state)
        records.append({**result.record, "seconds": round(result.seconds, 3)})
    return images, done, records


def merge_refine_records(records: list[dict]) -> dict:
    """One `refine` entry for the JSON line: the first image's settings, every image's seconds, all messages."""
    messages = list(dict.fromkeys(m for r in records for m in r.get("messages", [])))
    return {**records[0], "messages": messages, "seconds": [r["seconds"] for r in records]}


def main_generate(args: argparse.Namespace) -> int:
    """Run `generate`: print one JSON line (the record, or an error) and return the exit code."""
    started = time.perf_counter()
    try:
        paths, images, states, seconds, refine_records = _generate(args)
    except InputError as err:
        print(json.dumps({"input": args.pose, "error": str(err)}))
        return 1
    except RecursionError:
        print(json.dumps({"input": args.pose, "error": "The input is nested too deeply to read."}))
        return 1
    except Exception:  # noqa: BLE001 - stdout promises one sentence; the details go to stderr
        traceback.print_exc(file=sys.stderr)
        print(json.dumps({"input": args.pose, "error": "Generation failed unexpectedly; stderr has the details."}))
        return 1

    outputs = []
    try:
        for i, (path, image, state) in enumerate(zip(paths, images, states)):
            record = {"input": args.pose, **state.to_dict(), "output_pose": output_pose(state, image).to_dict()}
            if refine_records:
                record["refine"] = refine_records[i]
            save_atomic(image, path, record)
            outputs.append(str(path))
    except OSError as err:  # the place was checked before the model ran; a full disk can still fail here
        print(json.dumps({"input": args.pose, "error": f"--out: cannot write {path} ({err.strerror or 'failed'})."}))
        return 1
    first = states[0].to_dict()
    line = {
        "input": args.pose,
        "pose": output_pose(states[0], images[0]).to_dict(),
        "seed": args.seed,
        "seeds": [s.seed for s in states],
        "settings": first["settings"],
        "outputs": outputs,
        "seconds": round(seconds, 3),
        **({"refine": merge_refine_records(refine_records)} if refine_records else {}),
        "seconds_total": round(time.perf_counter() - started, 3),
    }
    print(json.dumps(line))
    sys.stdout.flush()
    return 0


def _generate(args: argparse.Namespace) -> tuple[list[Path], list[Any], list[Any], float, list[dict]]:
    """(output paths, images, states, seconds of sampling, refine records) of a `generate` call; InputError for bad
    input, checked before the model loads wherever it can be."""
    from models.backends import load_backend, model_kind
    from models.directions import parse_edits

    check_limits(args)
    paths = output_paths(args.out, args.num_images)
    check_writable(paths)
    source = pose_input.read_pose_input(args.pose)
    look = read_style_image(getattr(args, "style_image", None))  # a bad picture fails before the model loads
    edits, edit_messages = parse_edits(getattr(args, "edit", None))  # before loading: bad edits fail fast
    prompt = getattr(args, "prompt", None)
    if getattr(args, "fast", False) and (edits or prompt):
        raise InputError("--fast draws quick previews; --edit and --prompt need the full model.")
    # Stable Diffusion reads --prompt as its text condition; the other back ends refine with CLIP.
    if prompt and model_kind(args.model) != "sd":  # bad refine settings fail before the model loads
        check_refine_args(args)
    pipe = load_backend(args.model, getattr(args, "controlnet", None), device=args.device)
    extra, guided = _call_options(pipe, args, prompt, bool(edits), look)
    t0 = time.perf_counter()
    if edits:  # the edits and any clamping note land in settings["edit"]: the JSON line and the PNGs
        from models.directions import generate_edited

        images, states = generate_edited(
            pipe, source.pose, args.seed, edits, args.steps, sampler=args.sampler,
            num_images=args.num_images, messages=edit_messages, **extra,
        )  # fmt: skip
    elif guided:
        from models.clip import resolve_clip
        from models.clip_guidance import generate_guided

        images, states = generate_guided(
            pipe, source.pose, args.seed, resolve_clip(getattr(args, "clip", None)), prompt,
            getattr(args, "negative_prompt", None), steps=args.steps, sampler=args.sampler,
            num_images=args.num_images, **extra,
        )  # fmt: skip
    else:
        images, states = pipe(
            source.pose, seed=args.seed, steps=args.steps, sampler=args.sampler, num_images=args.num_images, **extra
        )
    seconds = time.perf_counter() - t0
    refine_records: list[dict] = []
    if prompt and "prompt" not in extra and not guided:
        images, states, refine_records = refine_states(pipe, states, args)
    check_finite(states)
    return paths, images, states, seconds, refine_records


def _call_options(
    pipe: Any, args: argparse.Namespace, prompt: str | None, edits: bool, look: Any
) -> tuple[dict[str, Any], bool]:
    """The keyword arguments the back end's call takes for these options, and whether --prompt steers its sampling
    with CLIP (the keypoint LDM has neither prompts nor a style code to refine); InputError for an option it lacks."""
    from models.backends import capabilities

    caps = capabilities(pipe)
    extra: dict[str, Any] = {} if args.guidance is None else {"guidance": args.guidance}  # None: the model's default
    if "prompt" in caps:
        extra.update(prompt=prompt, negative_prompt=getattr(args, "negative_prompt", None))
    if getattr(args, "fast", False):
        if "fast" not in caps:
            raise InputError("--fast needs a model with a few-step student (fast_unet/); this one has none.")
        extra["fast"] = True
    if edits and "style" not in caps:
        raise InputError("--edit moves the style code, and this model has none.")
    if look is not None:
        if not callable(getattr(pipe, "style_from_image", None)):
            raise InputError("--style-image sets the style code, and this model has none.")
        extra["style"] = pipe.style_from_image(look)
    guided = bool(prompt) and "clip_guidance" in caps and not caps & {"prompt", "refine_style", "refine_latent"}
    return extra, guided


# -- the command line -----------------------------------------------------------------------------------
def _pose_command(args: argparse.Namespace) -> int:

    if args.list_presets:
        print("\n".join(list_presets()))
        return 0
    if not args.inputs:
        print("pose: give at least one INPUT (a photo, a keypoint JSON or a preset name).", file=sys.stderr)
        return 2
    return main_pose(args.inputs, args.preview, args.format)


def _generate_command(args: argparse.Namespace) -> int:
    return main_generate(args)


def _serve_command(args: argparse.Namespace) -> int:
    from ui.server import serve

    return serve(args)


def build_parser() -> argparse.ArgumentParser:
    """The command line: no sub-command serves the app; `pose` and `generate` run once and print JSON."""
    parser = argparse.ArgumentParser(prog="app.py", description=__doc__.split("\n")[0])
    # No defaults here: ui.server.address takes the flag, else GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, else these.
    parser.add_argument("--host", default=None, help="address to serve on (default: $GRADIO_SERVER_NAME or 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=None, help="port to serve on (default: $GRADIO_SERVER_PORT or 7860)"
    )
    parser.add_argument("--share", action="store_true", help="also ask Gradio for a public share link")
    parser.add_argument(
        "--model",
        default=str(DEFAULT_MODEL),
        help="model folder, Hub id or keypoint-LDM .ckpt (default: the shipped weights/)",
    )
    parser.add_argument("--controlnet", default=None, metavar="FOLDER_OR_ID", help=CONTROLNET_HELP)
    parser.add_argument("--device", default=None, help="torch device (default: cuda when present, else cpu)")
    parser.add_argument("--clip", default=None, metavar="SPEC", help="CLIP for prompts (default: weights/clip)")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("pose", help="read poses from photos, keypoint JSON or presets; print one JSON line each")
    p.add_argument("inputs", nargs="*", metavar="INPUT")
    p.add_argument("--preview", metavar="DIR", help="write the OpenPose drawing (and the skeleton over photos) here")
    p.add_argument("--list-presets", action="store_true", help="print the preset names and exit")
    p.add_argument("--format", default="ours", choices=FILE_FORMATS, help="each line as this file format: ours, "
                   "OpenPose's JSON (ControlNet editors), a COCO annotation file, the fork's (default: %(default)s)")  # fmt: skip
    p.set_defaults(func=_pose_command)

    g = sub.add_parser("generate", help="draw a character in a pose; print one JSON line")
    g.add_argument("--pose", required=True, metavar="INPUT", help="photo, keypoint JSON or preset name")
    g.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    g.add_argument("--out", required=True, metavar="FILE.png", help="where to write the image (K>1: FILE_1.png ...)")
    g.add_argument("--steps", type=int, default=None, help="sampler steps (default: 8; 2 with --fast)")
    g.add_argument(
        "--fast", action="store_true",
        help="draw with the few-step student (weights/fast_unet: a quick preview in 1 to 4 steps)",
    )  # fmt: skip
    g.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the model's: 2 ours, 7.5 SD)")
    g.add_argument("--sampler", default=DEFAULT_SAMPLER, help=f"{', '.join(SAMPLER_NAMES)} (default: %(default)s)")
    g.add_argument("--num-images", type=int, default=1, help="images to draw, 1 to 8 (default: %(default)s)")
    g.add_argument(
        "--edit",
        action="append",
        metavar="METHOD:INDEX=AMOUNT",
        help="move the style code along a direction by AMOUNT sigma (sefa or ganspace, index 0-9), e.g. "
        "sefa:0=2.0; repeatable",
    )
    g.add_argument(
        "--style-image", default=None, metavar="IMG",
        help="take the look of the character in this picture (a render, a generated PNG or any anime image)",
    )  # fmt: skip
    g.add_argument("--prompt", default=None, help="refine the character towards this text with CLIP ('a:1 | b:-0.5')")
    g.add_argument("--negative-prompt", default=None, help="text to move away from (with --prompt)")
    g.add_argument(
        "--refine-mode", default="latent", choices=("style", "latent", "both"),
        help="what CLIP refinement moves: the style code, the final latent, or both (default: %(default)s)",
    )  # fmt: skip
    g.add_argument("--refine-steps", type=int, default=None, help="refinement steps (default: the mode's)")
    g.add_argument("--clip", default=None, metavar="SPEC", help="CLIP folder or NAME:TAG (default: weights/clip)")
    g.add_argument(
        "--model", default=str(DEFAULT_MODEL), help="model folder, Hub id or keypoint-LDM .ckpt (default: %(default)s)"
    )
    g.add_argument("--controlnet", default=None, metavar="FOLDER_OR_ID", help=CONTROLNET_HELP)
    g.add_argument("--device", default=None, help="torch device (default: cuda when present, else cpu)")
    g.set_defaults(func=_generate_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run it."""
    args = build_parser().parse_args(argv)
    func = getattr(args, "func", _serve_command)
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
