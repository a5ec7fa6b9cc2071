"""Images per second through the micro-batcher (`models.batching`): N concurrent 1-image requests vs N in sequence.

    python -m benchmarks.throughput                          # the shipped weights, 8 requests of 8 steps, 3 rounds
    python -m benchmarks.throughput --requests 8 --rounds 1 --threads 1

Each round runs the N requests one after another (each alone in its batch, as a lone user gets; and once more
straight through the pipeline, no batcher), then all at once from N threads (they share one batch), with the same seeds, and a callback as the web app passes (so previews are
decoded as there). Prints one JSON object: images per second both ways per round, the median speed-up, the batch
sizes seen, the largest difference between a batched latent and its lone twin, and the machine's state (cores,
load average before and after: the CPU may be shared with other work, which the figures then include).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    """The command line (module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="weights", help="a pipeline folder (default: %(default)s)")
    parser.add_argument("--requests", type=int, default=8, help="requests of one image (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=8, help="sampler steps (default: %(default)s)")
    parser.add_argument("--sampler", default="dpmpp_2m", help="sampler (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="sequence-then-concurrent rounds (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--window", type=float, default=0.05, help="the batcher's window, s (default: %(default)s)")
    return parser


def measure(pipe: Any, pose: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The figures for a loaded pipeline (module docstring)."""
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


def main(argv: list[str] | None = None) -> int:
    """Load the model, measure, print the JSON report."""
    args = build_parser().parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import torch

    from models.pipeline import PosePipeline
    from ui.common import default_pose

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    pipe = PosePipeline.from_pretrained(args.model, device="cpu")
    report = {
        "model": args.model,
        "requests": args.requests,
        "steps": args.steps,
        "sampler": args.sampler,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        **measure(pipe, default_pose(), args),
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
