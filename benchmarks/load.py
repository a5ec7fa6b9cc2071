"""Load test: N concurrent gradio_client users against a freshly launched app on loopback.

    python -m benchmarks.load --users 4 --seconds 30                 # fake pipeline
    python -m benchmarks.load --model weights --users 2 --steps 20   # the real one

Prints one JSON object: start-up seconds, requests served, failures (queue-full refusals counted
apart), p50/p95 latency per endpoint, and the server's RSS at start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children, MB (Linux /proc)."""
    total = 0
    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return round(total / 1024, 1)


def wait_up(url: str, proc: subprocess.Popen, timeout: float) -> float:
    """Seconds until the app answers at `url`."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"the app exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "gradio_api/info", timeout=2):
                return time.perf_counter() - start
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"the app did not answer within {timeout:.0f} s")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, round(q * (len(values) - 1)))], 4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=4, help="concurrent clients (default: %(default)s)")
    parser.add_argument(
        "--seconds", type=float, default=20, help="how long the users keep asking (default: %(default)s)"
    )
    parser.add_argument("--model", default="fake", help="'fake' or a model folder (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=10, help="sampler steps per generation (default: %(default)s)")
    parser.add_argument(
        "--pose-share", type=float, default=0.5, help="share of requests to /pose (default: %(default)s)"
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra environment for the app"
    )
    args = parser.parse_args(argv)

    from gradio_client import Client

    port = free_port()
    env = {**os.environ, **dict(e.split("=", 1) for e in args.env)}
    cmd = [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port), "--model", args.model]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        startup = wait_up(url, proc, args.startup_timeout)
        rss_start = rss_mb(proc.pid)
        latencies: dict[str, list[float]] = {"/pose": [], "/generate": []}
        counts = {"served": 0, "failed": 0, "queue_full": 0}
        errors: list[str] = []
        lock = threading.Lock()
        clock = {"t0": 0.0, "deadline": 0.0}

        def start_clock() -> None:  # runs once, before the barrier lets anyone through
            clock["t0"] = time.perf_counter()
            clock["deadline"] = clock["t0"] + args.seconds

        ready = threading.Barrier(args.users + 1, action=start_clock)

        def user(k: int) -> None:
            client = Client(url, verbose=False)
            pose, _ = client.predict(None, json.dumps(_default_pose()), api_name="/pose")  # warm-up, not counted
            text = json.dumps(pose)
            ready.wait()
            i = 0
            while time.perf_counter() < clock["deadline"]:
                i += 1
                endpoint = "/pose" if (i * 0.618 + k * 0.37) % 1 < args.pose_share else "/generate"
                t0 = time.perf_counter()
                try:
                    if endpoint == "/pose":
                        client.predict(None, text, api_name="/pose")
                    else:
                        client.predict(text, k * 1000 + i, False, args.steps, "ddim", 2.0, 1, api_name="/generate")
                    dt = time.perf_counter() - t0
                    with lock:
                        latencies[endpoint].append(dt)
                        counts["served"] += 1
                except Exception as err:  # noqa: BLE001 - counted and reported
                    with lock:
                        if "queue is full" in str(err).lower():
                            counts["queue_full"] += 1
                        else:
                            counts["failed"] += 1
                            errors.append(f"{type(err).__name__}: {str(err)[:120]}")

        threads = [threading.Thread(target=user, args=(k,)) for k in range(args.users)]
        for t in threads:
            t.start()
        ready.wait()  # every user connected and warmed up: the clock starts now
        t0 = clock["t0"]
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        report = {
            "model": args.model,
            "users": args.users,
            "seconds": round(wall, 2),
            "steps": args.steps,
            "startup_s": round(startup, 2),
            **counts,
            "throughput_rps": round(counts["served"] / wall, 2),
            "latency_s": {
                name: {
                    "n": len(v),
                    "p50": percentile(v, 0.5),
                    "p95": percentile(v, 0.95),
                    "mean": round(statistics.fmean(v), 4) if v else None,
                }
                for name, v in latencies.items()
            },
            "rss_mb_start": rss_start,
            "rss_mb_end": rss_mb(proc.pid),
            "errors": sorted(set(errors))[:5],
        }
        print(json.dumps(report))
        return 0 if counts["failed"] == 0 else 1
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _default_pose() -> dict:
    sys.path.insert(0, str(ROOT))
    from ui.handlers import default_value

    return default_value()


if __name__ == "__main__":
    sys.exit(main())
