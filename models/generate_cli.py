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


def main_generate(args: argparse.Namespace) -> int:
    """Run `generate`: print one JSON line (the record, or an error) and return the exit code."""
    from models.backends import capabilities, load_backend, model_kind
    from models.directions import parse_edits
    from models.pose_input import read_pose_input

    started = time.perf_counter()
    try:
        paths = output_paths(args.out, args.num_images)
        source = read_pose_input(args.pose)
        edits, edit_messages = parse_edits(getattr(args, "edit", None))  # before loading: bad edits fail fast
        prompt = getattr(args, "prompt", None)
        # Stable Diffusion reads --prompt as its text condition; the other back ends refine with CLIP.
        text_model = model_kind(args.model) == "sd"
        if prompt and not text_model:  # bad refine settings fail before the model loads
            check_refine_args(args)
        pipe = load_backend(args.model, getattr(args, "controlnet", None), device=args.device)
        caps = capabilities(pipe)
        extra = {} if args.guidance is None else {"guidance": args.guidance}  # None: the model's own default
        if "prompt" in caps:
            extra.update(prompt=prompt, negative_prompt=getattr(args, "negative_prompt", None))
        if edits and "style" not in caps:
            raise InputError("--edit moves the style code, and this model has none.")
        # The keypoint LDM has neither prompts nor a style code to refine: --prompt steers its sampling with CLIP.
        guided = bool(prompt) and "clip_guidance" in caps and not caps & {"prompt", "refine_style", "refine_latent"}
        t0 = time.perf_counter()
        if edits:  # the edits and any clamping note land in settings["edit"]: the JSON line and the PNGs
            from models.editing import generate_edited

            images, states = generate_edited(
                pipe, source.pose, args.seed, edits, args.steps, sampler=args.sampler,
                num_images=args.num_images, messages=edit_messages, **extra,
            )  # fmt: skip
        elif guided:
            from models.clip_guidance import generate_guided
            from models.refine import resolve_clip

            images, states = generate_guided(
                pipe, source.pose, args.seed, resolve_clip(getattr(args, "clip", None)), prompt,
                getattr(args, "negative_prompt", None), steps=args.steps, sampler=args.sampler,
                num_images=args.num_images, **extra,
            )  # fmt: skip
        else:
            images, states = pipe(
                source.pose,
                seed=args.seed,
                steps=args.steps,
                sampler=args.sampler,
                num_images=args.num_images,
                **extra,
            )
        seconds = time.perf_counter() - t0
        refine_records: list[dict] = []
        if prompt and "prompt" not in caps and not guided:
            images, states, refine_records = refine_states(pipe, states, args)
    except InputError as err:
        print(json.dumps({"input": args.pose, "error": str(err)}))
        return 1
    except Exception as err:  # noqa: BLE001 - the command line promises one sentence, never a traceback
        print(json.dumps({"input": args.pose, "error": f"Generation failed: {type(err).__name__}: {err}"}))
        return 1

    outputs = []
    for i, (path, image, state) in enumerate(zip(paths, images, states)):
        record = {"input": args.pose, **state.to_dict(), "output_pose": output_pose(state, image).to_dict()}
        if refine_records:
            record["refine"] = refine_records[i]
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
        **({"refine": merge_refine_records(refine_records)} if refine_records else {}),
        "seconds_total": round(time.perf_counter() - started, 3),
    }
    print(json.dumps(line))
    sys.stdout.flush()
    return 0
