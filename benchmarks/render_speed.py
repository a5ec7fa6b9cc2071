"""How fast the renderer and the data set writer run; prints one JSON object.

python -m benchmarks.render_speed [--n 400] [--size 128] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np

from training.character import sample_character
from training.render import render
from training.skeleton import sample_rig
from training.synth import write_dataset


def main() -> None:
    """Time rendering alone (one process) and the writer with PNG files (several processes)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    t0 = time.perf_counter()
    for i in range(a.n):
        rng = np.random.default_rng([0, i])
        rig = sample_rig(rng)
        render(rig.pose, sample_character(rng), a.size, rig=rig)
    render_s = time.perf_counter() - t0
    # CPU time of the writer in this process (immune to other jobs sharing the cores).
    with tempfile.TemporaryDirectory() as tmp:
        c0 = time.process_time()
        write_dataset(tmp, a.n // 2, seed=1, size=a.size, workers=1)
        cpu_ms = (time.process_time() - c0) / (a.n // 2) * 1e3
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_dataset(tmp, a.n, seed=0, size=a.size, workers=a.workers)
        write_s = time.perf_counter() - t0
    print(json.dumps({
        "size": a.size, "n": a.n, "cpus": os.cpu_count(),
        "render_images_per_s_1_process": round(a.n / render_s, 1),
        "images_per_s": round(a.n / write_s, 1), "workers": a.workers,
        "writer_cpu_ms_per_image": round(cpu_ms, 2),
        "images_per_s_if_cores_free": round(min(a.workers, os.cpu_count() or 1) * 1e3 / cpu_ms, 1),
        "note": "images_per_s: wall clock of the full writer (sample, render, PNG + JSON + captions) with "
                "`workers` processes; it drops when other jobs share the cores",
    }))  # fmt: skip


if __name__ == "__main__":
    main()
