"""Limits of the web app and of `python app.py generate`, read once from the environment; every handler
and the command line check them again. A photo's pixel limit is `models.image_io.MAX_IMAGE_SIDE`, the one
every channel (web, API, command line) reads images through.

MAX_STEPS=30 MAX_NUM_IMAGES=4 python app.py
"""

from __future__ import annotations

import os

from models.errors import InputError


def _int(name: str, default: int) -> int:
    return int(os.getenv(name, str(default)))


def _float(name: str, default: float) -> float:
    return float(os.getenv(name, str(default)))


MAX_UPLOAD_MB = _int("MAX_UPLOAD_MB", 10)  # uploads larger than this are refused (client and server)
MAX_STEPS = _int("MAX_STEPS", 50)  # sampler steps
MAX_NUM_IMAGES = _int("MAX_NUM_IMAGES", 8)  # images per generation
MAX_PROMPT_CHARS = _int("MAX_PROMPT_CHARS", 300)  # free text (a preset name, a style prompt)
MAX_JSON_CHARS = _int("MAX_JSON_CHARS", 200_000)  # a pasted or uploaded keypoint JSON
MAX_JSON_DEPTH = 32  # nesting of a JSON text: ours is 3 deep; Python's parser recurses once a level
MAX_STYLE_ABS = 10.0  # a style code entry (s ~ N(0, I)): past 10 sigma the model only draws noise or black
FILE_MAX_AGE = _int("FILE_MAX_AGE", 3600)  # seconds a served file stays fetchable before it is swept
SWEEP_EVERY = 60  # seconds between sweeps of old served files
QUEUE_SIZE = _int("QUEUE_SIZE", 20)  # requests waiting for a worker beyond this are refused ("Queue is full")
CONCURRENCY = _int("CONCURRENCY", 1)  # workers of every other event (pose, edit, refine): they share the CPU cores
# Generation: every request goes to one micro-batcher per model (models.batching), which runs the oldest request
# with the later ones that share its settings as one batch through the UNet, one batch at a time.
MAX_IMAGE_STEPS = _int("MAX_IMAGE_STEPS", 96)  # steps x images one generation may take (~9 s alone on 2 cores)
BATCH_IMAGES = _int("BATCH_IMAGES", 8)  # images per UNet batch (8 requests of one image run together)
BATCH_WINDOW_S = _float("BATCH_WINDOW_S", 0.05)  # how long the oldest request waits for others to join its batch
# Generate workers: requests handed to the batcher at once. Twice a batch, so the next batch forms while one runs.
GENERATE_WORKERS = _int("GENERATE_WORKERS", 2 * BATCH_IMAGES)
# steps x images queued or running in the batcher beyond which a request is refused as busy: about 30 s of work
MAX_WAITING_IMAGE_STEPS = _int("MAX_WAITING_IMAGE_STEPS", 4 * MAX_IMAGE_STEPS)
MAX_SEED = 2**31 - 1
MIN_GUIDANCE, MAX_GUIDANCE = 0.0, 20.0
SAMPLERS = ("dpmpp_2m", "ddim", "euler_a")
DEFAULT_STEPS = min(8, MAX_STEPS)  # the pipeline's default: ~0.9 s an image on 2 CPU cores
DEFAULT_GUIDANCE = 2.0
# The Pose tab's live preview: the model's few-step student when it has one, else this many steps of the full model.
PREVIEW_STEPS = _int("PREVIEW_STEPS", 4)
PREVIEW_BEHIND_S = _float("PREVIEW_BEHIND_S", 1.0)  # a frame slower than this says the preview is behind the edits
# Refine (CLIP) and Explore (style directions).
MAX_REFINE_STEPS = _int("MAX_REFINE_STEPS", 30)  # optimisation steps (a style step is ~1.5 s on 2 CPU cores)
MAX_REFINE_STRENGTH = _float("MAX_REFINE_STRENGTH", 3.0)  # multiplier on the mode's default step size
MAX_POSE_WEIGHT = _float("MAX_POSE_WEIGHT", 10.0)  # weight of the keep-the-pose term
REFINE_MODES = ("style", "latent", "both")
NUM_DIRECTIONS = _int("NUM_DIRECTIONS", 10)  # sliders in the Explore tab
MAX_SIGMA = 3.0  # slider amounts, standard deviations of s (models.directions clamps to the same)
DIRECTION_METHODS = ("ganspace", "sefa")


def check_int(value: object, name: str, lo: int, hi: int) -> int:
    """`value` as an int within [lo, hi], or an InputError naming `name` and the range."""
    if value is None or isinstance(value, bool):
        raise InputError(f"{name} must be a whole number between {lo} and {hi}.")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a whole number between {lo} and {hi}.") from None
    if not number.is_integer() or not lo <= number <= hi:
        raise InputError(f"{name} must be a whole number between {lo} and {hi}; got {value}.")
    return int(number)


def check_float(value: object, name: str, lo: float, hi: float) -> float:
    """`value` as a finite float within [lo, hi], or an InputError."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number between {lo:g} and {hi:g}.") from None
    if not lo <= number <= hi:  # also false for NaN
        raise InputError(f"{name} must be a number between {lo:g} and {hi:g}; got {value}.")
    return number


def check_generation(seed: object, steps: object, guidance: object, sampler: object, num_images: object) -> dict:
    """All generation settings checked against the limits, as the pipeline's keyword arguments."""
    if sampler not in SAMPLERS:
        raise InputError(f"The sampler must be one of {', '.join(SAMPLERS)}; got {sampler!r}.")
    checked = {
        "seed": check_int(seed, "The seed", 0, MAX_SEED),
        "steps": check_int(steps, "Steps", 1, MAX_STEPS),
        "guidance": check_float(guidance, "Guidance", MIN_GUIDANCE, MAX_GUIDANCE),
        "sampler": str(sampler),
        "num_images": check_int(num_images, "The number of images", 1, MAX_NUM_IMAGES),
    }
    check_cost(checked["steps"], checked["num_images"])
    return checked


def check_cost(steps: int, num_images: int, limit: int | None = None) -> None:
    """Refuse a generation whose steps x images exceeds MAX_IMAGE_STEPS (one request must not hold the model)."""
    limit = MAX_IMAGE_STEPS if limit is None else limit
    if steps * num_images > limit:
        most = max(1, min(MAX_STEPS, limit // num_images))
        raise InputError(
            f"Steps x images is {steps} x {num_images} = {steps * num_images}; the limit is {limit} "
            f"(for {num_images} image{'s' if num_images > 1 else ''}, at most {most} steps)."
        )


def check_refine(mode: object, steps: object, strength: object, pose_weight: object) -> dict:
    """The Refine tab's settings checked against the limits."""
    if mode not in REFINE_MODES:
        raise InputError(f"The refine mode must be one of {', '.join(REFINE_MODES)}; got {mode!r}.")
    return {
        "mode": str(mode),
        "steps": check_int(steps, "Refine steps", 1, MAX_REFINE_STEPS),
        "strength": check_float(strength, "The strength", 0.01, MAX_REFINE_STRENGTH),
        "pose_weight": check_float(pose_weight, "The pose weight", 0.0, MAX_POSE_WEIGHT),
    }


def check_text(text: str | None, name: str, limit: int = MAX_PROMPT_CHARS) -> str:
    """Text within the length limit (None reads as empty)."""
    text = text or ""
    if len(text) > limit:
        raise InputError(f"{name} is {len(text)} characters long; the limit is {limit}.")
    return text


def check_json_depth(text: str, name: str, limit: int = MAX_JSON_DEPTH) -> str:
    """Refuse JSON text nested deeper than `limit` before a parser recurses into it (RecursionError)."""
    depth, in_string, escaped = 0, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                raise InputError(f"{name} is nested more than {limit} levels deep; a pose is 3 levels deep.")
        elif ch in "]}":
            depth -= 1
    return text


def check_upload_bytes(size: int) -> None:
    """Refuse a file larger than MAX_UPLOAD_MB."""
    if size > MAX_UPLOAD_MB * 2**20:
        raise InputError(f"The file is {size / 2**20:.1f} MB; the largest we take is {MAX_UPLOAD_MB} MB.")
