"""Speed of the data, pose and model code, one subcommand each; every subcommand prints one JSON object.

    python -m benchmarks.speed render [--n 400] [--size 128] [--workers 2]
    python -m benchmarks.speed extract [--photos ../shared/photos] [--repeats 3]
    python -m benchmarks.speed detector [--detector weights/detector] [--repeats 20] [--threads 1]
    python -m benchmarks.speed generate [--model weights] [--steps 8] [--sampler S] [--guidance 2.0]
                                        [--repeats 3] [--threads 2]
    python -m benchmarks.speed preview [--model weights] [--frames 24] [--threads 2] [--seed 0] [--app-seconds S] [--json]
    python -m benchmarks.speed throughput [--model weights] [--requests 8] [--steps 8] [--sampler S]
                                          [--rounds 3] [--threads N] [--window 0.05]

render: the renderer alone (one process), then the data set writer with its PNG files (`--workers` processes).
extract: pose extraction on the shared photos: detections and median milliseconds per photo.
detector: `detect` on 1 and 16 images of 128 px and `embed` on 16; without a trained detector folder it times a
    freshly initialised one of the default size (the speed does not depend on the weights).
generate: wall time by stage (noise, denoising loop, decoding) and of a whole call; medians over `--repeats` runs
    after one warm-up, on held-out pose 0 of `training.eval`'s split (a fixed 128 px pose).
preview: seconds per live-preview frame during a drag of the right wrist in small moves from held-out pose 0, drawn
    with the settings the Pose tab uses (`ui.app_pose.preview_settings`: the few-step student when the model has
    one, else `ui.settings.PREVIEW_STEPS` steps of the full model): p50 / p95 after one warm-up frame, frames per
    second and how the frames were drawn, printed indented unless --json. The target of the issue "Live preview" is
    p50 <= 0.25 s at 2 threads. With `--app-seconds S` also the frames a second that the running app's Pose tab shows
    during an S-second drag of the right wrist in headless Chromium (Debian's, as `tests/test_browser.py`), which on
    a 2-core machine shares the cores with the server.
throughput: images per second through the micro-batcher (`models.batching`). Each round runs N 1-image requests one
    after another (each alone in its batch, as a lone user gets; and once more straight through the pipeline, no
    batcher), then all at once from N threads (they share one batch), with the same seeds and a callback as the web
    app passes (so previews are decoded as there). Reports images per second both ways per round, the median
    speed-up, the batch sizes seen, the largest difference between a batched latent and its lone twin, and the
    machine's state (cores, load average before and after: the figures include any other work on the CPU).

Where the process's CPU seconds are reported next to wall seconds, it is because on a shared machine the wall time
grows and the CPU time does not.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from models.backend import DEFAULT_SAMPLER, SAMPLER_NAMES

ROOT = Path(__file__).resolve().parents[1]


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, wall seconds, CPU seconds of the process) of one call of `fn()`."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def median_timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """(median wall seconds, mean CPU seconds) of `fn()` over `repeats` calls after one warm-up."""
    fn()
    runs = [timed(fn)[1:] for _ in range(repeats)]
    return statistics.median(wall for wall, _ in runs), statistics.fmean(cpu for _, cpu in runs)


def set_threads(threads: int | None) -> None:
    """Torch's intra-op threads (None: torch's own), set before any model is built."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def render(args: argparse.Namespace) -> dict[str, Any]:
    """Time rendering alone (one process) and the writer with PNG files (several processes)."""
    import numpy as np

    from training.character import sample_character
    from training.render import render as render_pose
    from training.skeleton import sample_rig
    from training.synth import write_dataset

    t0 = time.perf_counter()
    for i in range(args.n):
        rng = np.random.default_rng([0, i])
        rig = sample_rig(rng)
        render_pose(rig.pose, sample_character(rng), args.size, rig=rig)
    render_s = time.perf_counter() - t0
    # CPU time of the writer in this process (immune to other jobs sharing the cores).
    with tempfile.TemporaryDirectory() as tmp:
        _, _, cpu_s = timed(lambda: write_dataset(tmp, args.n // 2, seed=1, size=args.size, workers=1))
    cpu_ms = cpu_s / (args.n // 2) * 1e3
    with tempfile.TemporaryDirectory() as tmp:
        _, write_s, _ = timed(lambda: write_dataset(tmp, args.n, seed=0, size=args.size, workers=args.workers))
    return {
        "size": args.size, "n": args.n, "cpus": os.cpu_count(),
        "render_images_per_s_1_process": round(args.n / render_s, 1),
        "images_per_s": round(args.n / write_s, 1), "workers": args.workers,
        "writer_cpu_ms_per_image": round(cpu_ms, 2),
        "images_per_s_if_cores_free": round(min(args.workers, os.cpu_count() or 1) * 1e3 / cpu_ms, 1),
        "note": "images_per_s: wall clock of the full writer (sample, render, PNG + JSON + captions) with "
                "`workers` processes; it drops when other jobs share the cores",
    }  # fmt: skip


def extract(args: argparse.Namespace) -> dict[str, Any]:
    """Run every photo `repeats` times (after one warm-up call): detections and milliseconds per photo."""
    from models.pose_input import NoPersonError, extract_pose

    photos = sorted(p for p in Path(args.photos).glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not photos:
        sys.exit(f"no photos in {args.photos}")
    _, load_s, _ = timed(lambda: extract_pose(photos[0]))  # builds the model once, outside the timings

    def found_person(path: Path) -> bool:
        try:
            extract_pose(path)
            return True
        except NoPersonError:
            return False

    found, per_photo = [], []
    for path in photos:
        runs = [timed(lambda path=path: found_person(path)) for _ in range(args.repeats)]
        per_photo.append(statistics.median(wall * 1000 for _, wall, _ in runs))
        if runs[-1][0]:
            found.append(path.name)
    return {
        "photos": len(photos),
        "detections": len(found),
        "no_person": sorted(p.name for p in photos if p.name not in found),
        "median_ms_per_photo": round(statistics.median(per_photo), 1),
        "max_ms_per_photo": round(max(per_photo), 1),
        "first_call_s": round(load_s, 2),
        "repeats": args.repeats,
    }


def detector(args: argparse.Namespace) -> dict[str, Any]:
    """Time `detect` on 1 and 16 images of 128 px, and `embed` on 16."""
    set_threads(args.threads)
    import numpy as np
    from PIL import Image

    from models.detector import KeypointDetector

    folder = Path(args.detector)
    trained = (folder / "config.json").is_file()
    det = (KeypointDetector.from_pretrained(str(folder)) if trained else KeypointDetector()).eval()
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)) for _ in range(16)]
    one_wall, one_cpu = median_timed(lambda: det.detect(images[:1]), args.repeats)
    batch_wall, batch_cpu = median_timed(lambda: det.detect(images), max(3, args.repeats // 4))
    embed_wall, _ = median_timed(lambda: det.embed(images), max(3, args.repeats // 4))
    return {
        "detector": str(folder) if trained else "untrained default config",
        "parameters": sum(p.numel() for p in det.parameters()),
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "detect_1_image_ms": round(one_wall * 1e3, 2),
        "detect_1_image_cpu_ms": round(one_cpu * 1e3, 2),
        "detect_16_images_ms_per_image": round(batch_wall / 16 * 1e3, 2),
        "detect_16_images_cpu_ms_per_image": round(batch_cpu / 16 * 1e3, 2),
        "embed_16_images_ms_per_image": round(embed_wall / 16 * 1e3, 2),
    }


def generate(args: argparse.Namespace) -> dict[str, Any]:
    """Time prepare, denoise and decode separately, then whole `pipe(...)` calls."""
    set_threads(args.threads)
    from models.pipeline import PosePipeline
    from training.eval_common import heldout_render

    pose = heldout_render(0).pose
    pipe, load_s, _ = timed(lambda: PosePipeline.from_pretrained(args.model))
    settings = {"steps": args.steps, "guidance": args.guidance, "sampler": args.sampler}
    stages: dict[str, list[float]] = {k: [] for k in ("prepare", "denoise", "decode", "call", "call_cpu")}
    for i in range(args.repeats + 1):
        state, t_prep, _ = timed(lambda i=i: pipe.prepare(pose=pose, seed=i, **settings))
        done, t_den, _ = timed(lambda s=state: pipe.denoise(s))
        _, t_dec, _ = timed(lambda d=done: pipe.decode(d.z_0))
        _, t_call, c_call = timed(lambda i=i: pipe(pose, seed=i, **settings))
        if i == 0:
            continue  # warm-up
        for k, v in zip(stages, (t_prep, t_den, t_dec, t_call, c_call)):
            stages[k].append(v)
    med = {k: round(statistics.median(v), 4) for k, v in stages.items()}
    return {
        "model": args.model,
        "steps": args.steps,
        "sampler": args.sampler,
        "guidance": args.guidance,
        "size": pipe.native_size,
        "threads": args.threads,
        "cpus": os.cpu_count(),
        "repeats": args.repeats,
        "load_s": round(load_s, 3),
        "prepare_s": med["prepare"],
        "denoise_s": med["denoise"],
        "denoise_s_per_step": round(med["denoise"] / args.steps, 4),
        "decode_s": med["decode"],
        "seconds_per_image": med["call"],
        "cpu_seconds_per_image": med["call_cpu"],
    }


def drag_poses(pose: Any, frames: int, joint: int = 10, step: float = 0.01) -> list:
    """`frames` copies of `pose` with `joint` moved up and out by `step` of the frame each."""
    import numpy as np

    from models.pose import Pose

    out = []
    for i in range(frames):
        kp = pose.keypoints.copy()
        kp[joint, 0] = np.clip(kp[joint, 0] + step * i, 0, 1)
        kp[joint, 1] = np.clip(kp[joint, 1] - step * i, 0, 1)
        out.append(Pose(kp, pose.width, pose.height))
    return out


def preview(args: argparse.Namespace) -> dict[str, Any]:
    """Time the live-preview frames of a scripted drag, as the Pose tab draws them."""
    set_threads(args.threads)
    import numpy as np

    from models.pipeline import PosePipeline
    from training.eval_common import heldout_render
    from ui.app_pose import preview_settings
    from ui.common import model_pose

    pipe = PosePipeline.from_pretrained(args.model, device="cpu")
    kwargs = preview_settings(pipe, args.seed)
    poses = [model_pose(p) for p in drag_poses(heldout_render(0).pose, args.frames + 1)]
    runs = [timed(lambda pose=pose: pipe(pose, **kwargs))[1:] for pose in poses][1:]  # the first frame warms up
    wall, cpu = [w for w, _ in runs], [c for _, c in runs]
    result = {
        "model": args.model,
        "drawn_with": "fast student" if kwargs.get("fast") else "full model",
        "steps": kwargs["steps"],
        "size": pipe.native_size,
        "frames": len(wall),
        "threads": args.threads,
        "seconds_p50": round(float(np.percentile(wall, 50)), 4),
        "seconds_p95": round(float(np.percentile(wall, 95)), 4),
        "frames_per_second": round(len(wall) / sum(wall), 2),
        "cpu_seconds_per_frame": round(float(np.mean(cpu)), 4),
    }
    if args.app_seconds:
        result.update(preview_through_app(args.model, args.app_seconds))
    return result


def preview_through_app(model: str, seconds: float) -> dict[str, Any]:
    """Frames a second that the running app's Pose tab shows while its right wrist is dragged for `seconds` (a move
    every 20 ms, as a mouse sends them), in headless Chromium: every new preview image counts once."""
    from playwright.sync_api import sync_playwright

    from ui.server import LazyPipeline, build_demo, launch_local

    demo = launch_local(build_demo(LazyPipeline(model), model_status="", clip_status=""))
    count = """() => { window.__frames = 0; new MutationObserver(() => window.__frames++).observe(
        document.querySelector('#live-preview'), {subtree: true, attributes: true, attributeFilter: ['src']}); }"""
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=os.getenv("CHROMIUM", "/usr/bin/chromium"), headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])  # fmt: skip
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(demo.local_url)
            page.wait_for_selector("#skeleton-editor circle.pe-pt", timeout=120_000)
            box = page.locator("#skeleton-editor circle[data-i='10']").bounding_box()
            x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            for dx in (10, 0):  # a first edit and back: its frame loads the model
                page.mouse.move(x + 10 - dx, y)
                page.mouse.down()
                page.mouse.move(x + dx, y, steps=4)
                page.mouse.up()
            page.wait_for_selector("#live-preview img", timeout=180_000)
            page.evaluate(count)
            page.mouse.move(x, y)
            page.mouse.down()
            start, k = time.perf_counter(), 0
            while time.perf_counter() - start < seconds:  # back and forth over 60 px
                k += 1
                page.mouse.move(x + 30 * math.sin(k / 15), y - 30 * math.sin(k / 15))
                page.wait_for_timeout(20)
            page.mouse.up()
            frames, note = (
                page.evaluate("() => window.__frames"),
                page.locator("#live-note").inner_text().split("\n")[-1],
            )
            browser.close()
    finally:
        demo.close()
    return {"app_drag_seconds": seconds, "app_drag_moves": k, "app_frames_per_second": round(frames / seconds, 2),
            "app_last_note": note}  # fmt: skip


def batcher_rounds(pipe: Any, pose: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The throughput figures for a loaded pipeline: `args.rounds` of N requests in sequence, then at once."""
    from models.batching import Batcher

    n = args.requests
    batcher = Batcher(pipe, max_images=max(n, 1), window=args.window)

    def request(seed: int) -> tuple[list, list]:
        return batcher(pose, seed=seed, steps=args.steps, sampler=args.sampler, callback=lambda *_: None)

    request(10_000)  # warm-up: first calls allocate
    rounds, diff = [], 0.0
    for _ in range(args.rounds):
        batcher.batch_sizes.clear()
        t0 = time.perf_counter()
        lone = [request(seed) for seed in range(n)]
        sequential = time.perf_counter() - t0
        t0 = time.perf_counter()
        for seed in range(n):  # the pipeline itself, no batcher (no window to wait): the plain baseline
            pipe(pose, seed=seed, steps=args.steps, sampler=args.sampler, callback=lambda *_: None)
        plain = time.perf_counter() - t0
        together: list[Any] = [None] * n
        go = threading.Barrier(n + 1)

        def one(k: int, go: threading.Barrier = go, together: list[Any] = together) -> None:
            go.wait()
            together[k] = request(k)

        threads = [threading.Thread(target=one, args=(k,)) for k in range(n)]
        for t in threads:
            t.start()
        go.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        concurrent = time.perf_counter() - t0
        for (_, (a,)), (_, (b,)) in zip(lone, together):
            diff = max(diff, float((a.z_0 - b.z_0).abs().max()))
        rounds.append(
            {
                "sequential_images_per_s": round(n / sequential, 3),
                "concurrent_images_per_s": round(n / concurrent, 3),
                "plain_pipeline_images_per_s": round(n / plain, 3),
                "speedup": round(sequential / concurrent, 3),
                "speedup_vs_plain": round(plain / concurrent, 3),
                "batch_sizes": list(batcher.batch_sizes),
            }
        )
    return {
        "speedup_median": statistics.median(r["speedup"] for r in rounds),
        "speedup_vs_plain_median": statistics.median(r["speedup_vs_plain"] for r in rounds),
        "rounds": rounds,
        "max_latent_diff_batched_vs_lone": diff,
    }


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    """Images per second through the micro-batcher: N concurrent 1-image requests vs N in sequence."""
    set_threads(args.threads or None)  # 0 or none: torch's own
    import torch

    from models.pipeline import PosePipeline
    from ui.common import default_pose

    load_before = os.getloadavg()
    pipe = PosePipeline.from_pretrained(args.model, device="cpu")
    return {
        "model": args.model,
        "requests": args.requests,
        "steps": args.steps,
        "sampler": args.sampler,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        **batcher_rounds(pipe, default_pose(), args),
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def build_parser() -> argparse.ArgumentParser:
    """The command line (module docstring): one subcommand per benchmark, each with its own flags."""
    from models import paths

    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(fn: Callable[[argparse.Namespace], dict[str, Any]]) -> argparse.ArgumentParser:
        doc = fn.__doc__.split("\n")[0]
        sub = commands.add_parser(fn.__name__, help=doc, description=doc)
        sub.set_defaults(run=fn)
        return sub

    p = command(render)
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2)
    p = command(extract)
    p.add_argument("--photos", default=str(ROOT.parent / "shared" / "photos"))
    p.add_argument("--repeats", type=int, default=3, help="timed runs per photo (default: 3)")
    p = command(detector)
    p.add_argument("--detector", default=str(paths.DETECTOR))
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p = command(generate)
    p.add_argument("--model", default=str(paths.WEIGHTS))
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--sampler", default=DEFAULT_SAMPLER, choices=SAMPLER_NAMES)
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p = command(preview)
    p.add_argument("--model", default=str(paths.WEIGHTS))
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--app-seconds", type=float, default=0, help="also drag in the running app for this long (Chromium)")
    p.add_argument("--json", action="store_true", help="print one JSON object (the default prints it indented)")
    p = command(throughput)
    p.add_argument("--model", default="weights", help="a pipeline folder (default: %(default)s)")
    p.add_argument("--requests", type=int, default=8, help="requests of one image (default: %(default)s)")
    p.add_argument("--steps", type=int, default=8, help="sampler steps (default: %(default)s)")
    p.add_argument("--sampler", default=DEFAULT_SAMPLER, choices=SAMPLER_NAMES, help="sampler (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="sequence-then-concurrent rounds (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--window", type=float, default=0.05, help="the batcher's window, s (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run one subcommand; print its JSON object (indented for `preview` without --json) and return it."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # run as a file (python benchmarks/speed.py ...), the packages still import
    args = build_parser().parse_args(argv)
    result = args.run(args)
    print(json.dumps(result, indent=None if getattr(args, "json", True) else 1))
    return result


if __name__ == "__main__":
    main()
