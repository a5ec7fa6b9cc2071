"""Seconds per live-preview frame during a scripted drag, as the Pose tab draws them; prints JSON.

    python -m benchmarks.preview [--model weights] [--frames 24] [--threads 2] [--json]

A drag of the right wrist in small moves from held-out pose 0 of `training.eval`'s split: one frame per move,
drawn with the settings the Pose tab uses (`ui.app_pose.preview_settings`: the few-step student when the model has
one, else `ui.settings.PREVIEW_STEPS` steps of the full model). Reports p50 / p95 of the wall seconds per frame after
one warm-up, frames per second, the process's CPU seconds per frame, and how the frames were drawn. The target of the
issue "Live preview" is p50 <= 0.25 s at 2 threads. (Frames per second through a running app's browser page are
what `tests/test_browser.py` drives; this measures the model's part.)
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def drag_poses(pose, frames: int, joint: int = 10, step: float = 0.01) -> list:
    """`frames` copies of `pose` with `joint` moved up and out by `step` of the frame each."""
    from models.pose import Pose

    out = []
    for i in range(frames):
        kp = pose.keypoints.copy()
        kp[joint, 0] = np.clip(kp[joint, 0] + step * i, 0, 1)
        kp[joint, 1] = np.clip(kp[joint, 1] - step * i, 0, 1)
        out.append(Pose(kp, pose.width, pose.height))
    return out


def main(argv: list[str] | None = None) -> dict:
    """Time the preview frames of a scripted drag; print and return the figures."""
    from models import paths

    ap = argparse.ArgumentParser(prog="python -m benchmarks.preview", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(paths.WEIGHTS))
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON object (the default prints it indented)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from models.pipeline import PosePipeline
    from training.eval import heldout_render
    from ui.app_pose import preview_settings
    from ui.common import model_pose

    pipe = PosePipeline.from_pretrained(a.model, device="cpu")
    kwargs = preview_settings(pipe, a.seed)
    poses = [model_pose(p) for p in drag_poses(heldout_render(0).pose, a.frames + 1)]
    wall, cpu = [], []
    for i, pose in enumerate(poses):
        t0, c0 = time.perf_counter(), time.process_time()
        pipe(pose, **kwargs)
        if i:  # the first frame warms up
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    result = {
        "model": a.model,
        "drawn_with": "fast student" if kwargs.get("fast") else "full model",
        "steps": kwargs["steps"],
        "size": pipe.native_size,
        "frames": len(wall),
        "threads": a.threads,
        "seconds_p50": round(float(np.percentile(wall, 50)), 4),
        "seconds_p95": round(float(np.percentile(wall, 95)), 4),
        "frames_per_second": round(len(wall) / sum(wall), 2),
        "cpu_seconds_per_frame": round(float(np.mean(cpu)), 4),
    }
    print(json.dumps(result) if a.json else json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
