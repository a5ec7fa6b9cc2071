"""How fast the keypoint detector reads poses (one image, and batches); prints one JSON object.

    python -m benchmarks.detector_speed [--detector weights/detector] [--repeats 20] [--threads 1]

Without a trained detector folder it times a freshly initialised one of the default size (the speed
does not depend on the weights). Wall medians and process CPU time are both reported: CPU time is
what the detector costs even when other jobs share the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from models.detector import KeypointDetector

ROOT = Path(__file__).resolve().parents[1]


def _time(fn, repeats: int) -> tuple[float, float]:
    """(median wall seconds, mean CPU seconds) of `fn()` over `repeats` calls after one warm-up."""
    fn()
    walls, c0 = [], time.process_time()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
    return statistics.median(walls), (time.process_time() - c0) / repeats


def main() -> None:
    """Time `detect` on 1 and 16 images of 128 px, and `embed` on 16."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--detector", default=str(ROOT / "weights" / "detector"))
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    folder = Path(a.detector)
    trained = (folder / "config.json").is_file()
    det = (KeypointDetector.from_pretrained(str(folder)) if trained else KeypointDetector()).eval()
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)) for _ in range(16)]
    one_wall, one_cpu = _time(lambda: det.detect(images[:1]), a.repeats)
    batch_wall, batch_cpu = _time(lambda: det.detect(images), max(3, a.repeats // 4))
    embed_wall, _ = _time(lambda: det.embed(images), max(3, a.repeats // 4))
    print(
        json.dumps(
            {
                "detector": str(folder) if trained else "untrained default config",
                "parameters": sum(p.numel() for p in det.parameters()),
                "threads": a.threads,
                "cpus": os.cpu_count(),
                "detect_1_image_ms": round(one_wall * 1e3, 2),
                "detect_1_image_cpu_ms": round(one_cpu * 1e3, 2),
                "detect_16_images_ms_per_image": round(batch_wall / 16 * 1e3, 2),
                "detect_16_images_cpu_ms_per_image": round(batch_cpu / 16 * 1e3, 2),
                "embed_16_images_ms_per_image": round(embed_wall / 16 * 1e3, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
