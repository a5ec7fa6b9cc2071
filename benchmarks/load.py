"""Load test: N concurrent gradio_client users against a freshly launched app on loopback.

    python -m benchmarks.load --users 4 --seconds 30                 # fake pipeline, /pose and /generate
    python -m benchmarks.load --model weights --users 2 --steps 20   # the real one
    python -m benchmarks.load --scenario queue-full                  # a small queue (QUEUE_SIZE=2) overrun
    python -m benchmarks.load --scenario latency --model weights     # generate / edit / refine, one at a time

Prints one JSON object: start-up seconds, requests served, failures (deliberate queue-full refusals
counted apart: `queue_full`), p50/p95 latency per endpoint, and the server's RSS at start and end.
`latency` reports the median seconds of /generate, /edit (a slider move) and /refine through the API.
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


def wait_up(url: str, proc: subprocess.Popen, timeout: float, start: float | None = None) -> float:
    """Seconds from `start` (now by default) until the app answers at `url`."""
    start = time.perf_counter() if start is None else start
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
    parser.add_argument("--steps", type=int, default=8, help="sampler steps per generation (default: %(default)s)")
    parser.add_argument(
        "--pose-share", type=float, default=0.5, help="share of requests to /pose (default: %(default)s)"
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra environment for the app"
    )
    parser.add_argument(
        "--scenario",
        choices=("mixed", "queue-full", "latency"),
        default="mixed",
        help="mixed: /pose and /generate users; queue-full: /generate users overrunning a small queue "
        "(QUEUE_SIZE=2, CONCURRENCY=1 and a slowed fake unless --env says otherwise); latency: one client timing "
        "/generate, /edit and /refine (default: %(default)s)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="latency: calls per endpoint (default: %(default)s)")
    parser.add_argument("--refine-steps", type=int, default=4, help="latency: refine steps (default: %(default)s)")
    parser.add_argument("--clip", default=None, help="latency: the app's --clip (default: the app's default)")
    parser.add_argument(
        "--backoff",
        type=float,
        default=0.5,
        help="seconds a refused user waits before asking again (default: %(default)s)",
    )
    parser.add_argument("--app-log", default=None, metavar="FILE", help="write the app's output here")
    parser.add_argument(
        "--startup-timeout", type=float, default=300, help="seconds to wait for the app (default: %(default)s)"
    )
    args = parser.parse_args(argv)

    from gradio_client import Client

    port = free_port()
    defaults = {}
    if args.scenario == "queue-full":
        defaults = {"QUEUE_SIZE": "2", "CONCURRENCY": "1", "POSE_STUDIO_FAKE_STEP_SECONDS": "0.05"}
        args.pose_share = 0.0
    env = {**os.environ, **defaults, **dict(e.split("=", 1) for e in args.env)}
    cmd = [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port), "--model", args.model]
    if args.clip:
        cmd += ["--clip", args.clip]
    started = time.perf_counter()
    log = open(args.app_log, "w") if args.app_log else subprocess.DEVNULL  # noqa: SIM115 - closed with the app
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        startup = wait_up(url, proc, args.startup_timeout, started)
        rss_start = rss_mb(proc.pid)
        if args.scenario == "latency":
            report = latency(Client(url, verbose=False), args)
            print(json.dumps({"model": args.model, "startup_s": round(startup, 2), **report,
                              "rss_mb_start": rss_start, "rss_mb_end": rss_mb(proc.pid)}))  # fmt: skip
            return 0
        latencies: dict[str, list[float]] = {"/pose": [], "/generate": []}
        counts = {"served": 0, "failed": 0, "queue_full": 0}
        errors: list[str] = []
        lock = threading.Lock()
        clock = {"t0": 0.0, "deadline": 0.0}

        def start_clock() -> None:  # runs once, before the barrier lets anyone through
            clock["t0"] = time.perf_counter()
            clock["deadline"] = clock["t0"] + args.seconds

        ready = threading.Barrier(args.users + 1, action=start_clock)

        def connect() -> Client:
            """A client (the config download may time out on a busy machine: try again)."""
            for attempt in range(5):
                try:
                    return Client(url, verbose=False)
                except Exception:
                    if attempt == 4:
                        raise
                    time.sleep(1)
            raise AssertionError("unreachable")

        clients = [connect() for _ in range(args.users)]  # set-up, one at a time, not counted
        text = json.dumps(_default_pose())
        clients[0].predict(text, 0, 1, "ddim", 2.0, 1, api_name="/generate")  # loads the model: not counted

        def user(k: int) -> None:
            client = clients[k]
            try:
                for _ in range(100):  # warm-up, not counted (a small queue may refuse it: try again)
                    try:
                        client.predict(None, text, api_name="/pose")
                        break
                    except Exception as err:
                        if "queue is full" not in str(err).lower():
                            raise
                        time.sleep(0.2)
            except BaseException:
                ready.abort()  # the others (and the main thread) stop waiting
                raise
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
                        client.predict(text, k * 1000 + i, args.steps, "ddim", 2.0, 1, api_name="/generate")
                    dt = time.perf_counter() - t0
                    with lock:
                        latencies[endpoint].append(dt)
                        counts["served"] += 1
                except Exception as err:  # noqa: BLE001 - counted and reported
                    with lock:
                        refused = "queue is full" in str(err).lower()
                        if refused:
                            counts["queue_full"] += 1
                        else:
                            counts["failed"] += 1
                            errors.append(f"{type(err).__name__}: {str(err)[:120]}")
                    if refused:
                        time.sleep(args.backoff)  # as a person would, rather than a storm of retries

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
            "scenario": args.scenario,
            "queue_size": env.get("QUEUE_SIZE", "default"),
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
        # Only deliberate refusals are allowed; a queue-full run must also have been refused at least once.
        ok = counts["failed"] == 0 and (args.scenario != "queue-full" or counts["queue_full"] > 0)
        return 0 if ok else 1
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def latency(client, args: argparse.Namespace) -> dict:
    """Median seconds of /generate, /edit (one slider move) and /refine, called one after another."""
    pose = json.dumps(_default_pose())
    *_, states = client.predict(pose, 0, args.steps, "ddim", 2.0, 1, api_name="/generate")  # warm-up
    state = json.dumps(states[0])
    calls = {
        "/generate": lambda i: client.predict(pose, i + 1, args.steps, "ddim", 2.0, 1, api_name="/generate"),
        "/edit": lambda i: client.predict(state, f"sefa:{i % 3}={(-1) ** i * 1.5}", 0, 0, api_name="/edit"),
        "/refine": lambda i: client.predict(
            state, ["pink hair", "blue eyes", "sailor uniform"][i % 3], "", "style", args.refine_steps, 1.0, 0.0,
            api_name="/refine",
        ),
    }  # fmt: skip
    out: dict = {"steps": args.steps, "refine_steps": args.refine_steps, "latency_s": {}}
    for name, call in calls.items():
        times, errors = [], []
        for i in range(args.repeats):
            t0 = time.perf_counter()
            try:
                call(i)
                times.append(time.perf_counter() - t0)
            except Exception as err:  # noqa: BLE001 - reported (e.g. no CLIP for /refine)
                errors.append(f"{type(err).__name__}: {str(err)[:160]}")
        out["latency_s"][name] = {
            "n": len(times),
            "p50": percentile(times, 0.5),
            "p95": percentile(times, 0.95),
            "errors": sorted(set(errors))[:2],
        }
    return out


def _default_pose() -> dict:
    sys.path.insert(0, str(ROOT))
    from ui.handlers import default_value

    return default_value()


if __name__ == "__main__":
    sys.exit(main())
