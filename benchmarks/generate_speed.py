"""Wall time of generation by stage (noise, denoising loop, decoding) and of a whole call; prints JSON.

    python -m benchmarks.generate_speed [--model weights] [--steps 8] [--sampler dpmpp_2m] [--repeats 3] [--threads 2]

Medians over `--repeats` runs after one warm-up, on held-out pose 0 of `training.eval`'s split (a
fixed 128 px pose). CPU seconds of the process are reported next to wall seconds: on a shared
machine the wall time grows, the CPU time does not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _timed(fn):
    """(result, wall seconds, CPU seconds) of `fn()`."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    """Time prepare, denoise and decode separately, then whole `pipe(...)` calls."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "weights"))
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--sampler", default="dpmpp_2m")
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from models.pipeline import PosePipeline
    from training.eval import heldout_render

    pose = heldout_render(0).pose
    pipe, load_s, _ = _timed(lambda: PosePipeline.from_pretrained(a.model))
    stages: dict[str, list[float]] = {k: [] for k in ("prepare", "denoise", "decode", "call", "call_cpu")}
    for i in range(a.repeats + 1):
        state, t_prep, _ = _timed(
            lambda i=i: pipe.prepare(pose=pose, seed=i, steps=a.steps, guidance=a.guidance, sampler=a.sampler)
        )
        done, t_den, _ = _timed(lambda s=state: pipe.denoise(s))
        _, t_dec, _ = _timed(lambda d=done: pipe.decode(d.z_0))
        _, t_call, c_call = _timed(
            lambda i=i: pipe(pose, seed=i, steps=a.steps, guidance=a.guidance, sampler=a.sampler)
        )
        if i == 0:
            continue  # warm-up
        for k, v in zip(stages, (t_prep, t_den, t_dec, t_call, c_call)):
            stages[k].append(v)
    med = {k: round(statistics.median(v), 4) for k, v in stages.items()}
    print(
        json.dumps(
            {
                "model": a.model,
                "steps": a.steps,
                "sampler": a.sampler,
                "guidance": a.guidance,
                "size": pipe.native_size,
                "threads": a.threads,
                "cpus": os.cpu_count(),
                "repeats": a.repeats,
                "load_s": round(load_s, 3),
                "prepare_s": med["prepare"],
                "denoise_s": med["denoise"],
                "denoise_s_per_step": round(med["denoise"] / a.steps, 4),
                "decode_s": med["decode"],
                "seconds_per_image": med["call"],
                "cpu_seconds_per_image": med["call_cpu"],
            }
        )
    )


if __name__ == "__main__":
    main()
