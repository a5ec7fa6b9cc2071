"""`python app.py generate`: one pose in, PNG files out, one JSON line on stdout."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

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
    from models.image_io import load_image

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
    from models.prompts import prompt_terms
    from models.refine import check_refine_inputs

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


def check_finite(states: list) -> None:
    """Refuse a result whose final latent is not finite: it would be written as a black image."""
    import torch

    for state in states:
        z = getattr(state, "z_0", None)
        if isinstance(z, torch.Tensor) and not bool(torch.isfinite(z).all()):
            raise InputError("The model's output was not finite numbers, so no image was written.")


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
    from models.pose_input import read_pose_input

    check_limits(args)
    paths = output_paths(args.out, args.num_images)
    check_writable(paths)
    source = read_pose_input(args.pose)
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
        from models.editing import generate_edited

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
