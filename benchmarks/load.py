"""Load test: N concurrent gradio_client users against the app (one it starts, or a running one with --url).

    python -m benchmarks.load --users 20 --seconds 60                  # starts `app.py --model weights` itself
    python -m benchmarks.load --url http://127.0.0.1:7860/ --pid 1234  # a running app (--pid: read its RSS)
    python -m benchmarks.load --model fake --users 4 --seconds 20      # the drawing stand-in, no weights
    python -m benchmarks.load --scenario queue-full --model fake       # a small queue (QUEUE_SIZE=2) overrun
    python -m benchmarks.load --scenario latency                       # generate / edit / refine, one at a time
    python -m benchmarks.load --scenario throughput --users 8          # 8 generate calls in sequence vs at once

Prints one JSON object, also when requests (or the whole run) fail: requests served, failed and refused (a full
queue or the batcher's "server is busy": deliberate, counted apart), p50/p95 seconds per endpoint, and the
server's RSS (MB, with its children) at start, after the warm-up (each user calls each endpoint once, all at once)
and at the end, read from /proc/<pid>/status of the app it started or of --pid (null with --url alone).
Exits 1 when any request failed (or the run did).
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
from typing import Any

from models.backend import DEFAULT_SAMPLER, SAMPLER_NAMES

ROOT = Path(__file__).resolve().parents[1]
ENDPOINTS = ("/pose", "/generate", "/edit")
REFUSALS = ("queue is full", "server is busy")  # Gradio's max_size, and models.batching's waiting limit


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int | None) -> float | None:
    """Resident memory of a process and its children, MB (Linux /proc); None without a pid or a readable one."""
    if pid is None:
        return None
    pids, total, seen = [pid], 0, False
    try:
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    seen = True
        except OSError:
            pass
    return round(total / 1024, 1) if seen else None


def wait_up(url: str, proc: subprocess.Popen | None, timeout: float, start: float | None = None) -> float:
    """Seconds from `start` (now by default) until the app answers at `url`."""
    start = time.perf_counter() if start is None else start
    while time.perf_counter() - start < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the app exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "gradio_api/info", timeout=5):
                return time.perf_counter() - start
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the app did not answer at {url} within {timeout:.0f} s")


def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile (nearest rank) of `values`, None when empty."""
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, round(q * (len(values) - 1)))], 4)


def is_refusal(err: BaseException) -> bool:
    """Whether an error is a deliberate refusal (full queue, busy batcher) rather than a failure."""
    return any(words in str(err).lower() for words in REFUSALS)


def build_parser() -> argparse.ArgumentParser:
    """The command line (module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=None, help="a running app to load (default: start one on a free port)")
    parser.add_argument("--pid", type=int, default=None, help="with --url: the server's process id, for its RSS")
    parser.add_argument("--users", type=int, default=4, help="concurrent clients (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=20, help="how long users keep asking (default: %(default)s)")
    parser.add_argument("--model", default="weights", help="the started app's --model (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=8, help="sampler steps per generation (default: %(default)s)")
    parser.add_argument(
        "--sampler",
        default=DEFAULT_SAMPLER,
        choices=SAMPLER_NAMES,
        help="sampler of each generation (default: %(default)s)",
    )
    parser.add_argument("--pose-share", type=float, default=0.4, help="share of /pose calls (default: %(default)s)")
    parser.add_argument("--edit-share", type=float, default=0.2, help="share of /edit calls (default: %(default)s)")
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra environment for the started app"
    )
    parser.add_argument(
        "--scenario",
        choices=("mixed", "queue-full", "latency", "throughput"),
        default="mixed",
        help="mixed: /pose, /generate and /edit users; queue-full: /generate users overrunning a small queue "
        "(QUEUE_SIZE=2, GENERATE_WORKERS=1 and a slowed fake unless --env says otherwise); latency: one client "
        "timing /generate, /edit and /refine; throughput: --users 1-image /generate calls in sequence, then at "
        "once, --repeats rounds (default: %(default)s)",
    )
    parser.add_argument("--repeats", type=int, default=5, help="latency: calls per endpoint (default: %(default)s)")
    parser.add_argument("--refine-steps", type=int, default=4, help="latency: refine steps (default: %(default)s)")
    parser.add_argument("--clip", default=None, help="the started app's --clip (default: the app's default)")
    parser.add_argument(
        "--backoff", type=float, default=0.5, help="seconds a refused user waits to ask again (default: %(default)s)"
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=300,
        help="seconds before a call counts as failed (default: %(default)s)",
    )
    parser.add_argument("--app-log", default=None, metavar="FILE", help="write the started app's output here")
    parser.add_argument(
        "--startup-timeout", type=float, default=300, help="seconds to wait for the app (default: %(default)s)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the load test; print the JSON report; 0 when no request failed."""
    args = build_parser().parse_args(argv)
    report: dict[str, Any] = {"model": args.model if not args.url else None, "url": args.url,
                              "scenario": args.scenario, "users": args.users}  # fmt: skip
    proc: subprocess.Popen | None = None
    log = None
    ok = False
    try:
        if args.url:
            url, pid = args.url.rstrip("/") + "/", args.pid
            report["startup_s"] = round(wait_up(url, None, args.startup_timeout), 2)
        else:
            defaults = {}
            if args.scenario == "queue-full":
                defaults = {"QUEUE_SIZE": "2", "GENERATE_WORKERS": "1", "POSE_STUDIO_FAKE_STEP_SECONDS": "0.05"}
                args.pose_share = args.edit_share = 0.0
            env = {**os.environ, **defaults, **dict(e.split("=", 1) for e in args.env)}
            port = free_port()
            cmd = [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port)]
            cmd += ["--model", args.model] + (["--clip", args.clip] if args.clip else [])
            started = time.perf_counter()
            log = open(args.app_log, "w") if args.app_log else None  # noqa: SIM115 - closed in finally
            out = log if log is not None else subprocess.DEVNULL
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
            url, pid = f"http://127.0.0.1:{port}/", proc.pid
            report["queue_size"] = env.get("QUEUE_SIZE", "default")
            report["startup_s"] = round(wait_up(url, proc, args.startup_timeout, started), 2)
        report["rss_mb_start"] = rss_mb(pid)
        if args.scenario in ("latency", "throughput"):
            report.update((latency if args.scenario == "latency" else throughput)(url, args))
            report["rss_mb_after_warmup"] = None
            ok = True
        else:
            ok = mixed(url, pid, args, report)
    except Exception as err:  # noqa: BLE001 - the report says what stopped the run
        report["run_error"] = f"{type(err).__name__}: {str(err)[:300]}"
        ok = False
    finally:
        if proc is not None:
            report["rss_mb_end"] = rss_mb(proc.pid)
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        else:
            report["rss_mb_end"] = rss_mb(args.pid)
        if log is not None:
            log.close()
        warm, end = report.get("rss_mb_after_warmup"), report.get("rss_mb_end")
        report["rss_growth_after_warmup_pct"] = round(100 * (end - warm) / warm, 2) if warm and end else None
        print(json.dumps(report))
    return 0 if ok else 1


def connect(url: str) -> Any:
    """A gradio_client Client (the config download may time out on a busy machine: try again)."""
    from gradio_client import Client

    for attempt in range(5):
        try:
            return Client(url, verbose=False)
        except Exception:
            if attempt == 4:
                raise
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")


def call(client: Any, timeout: float, *args: Any, api_name: str) -> Any:
    """One call that gives up after `timeout` seconds (a hung request must not hang the benchmark)."""
    job = client.submit(*args, api_name=api_name)
    try:
        return job.result(timeout=timeout)
    except TimeoutError:
        job.cancel()
        raise TimeoutError(f"no answer within {timeout:.0f} s") from None


def mixed(url: str, pid: int | None, args: argparse.Namespace, report: dict[str, Any]) -> bool:
    """Users asking /pose, /generate and /edit in a fixed mix for `args.seconds`; fills `report`, True when none
    failed (and, for queue-full, at least one was refused)."""
    text = json.dumps(_default_pose())
    first = connect(url)
    # loads the model (not counted) and gives /edit a state to start from
    *_, states = call(first, args.startup_timeout, text, 0, args.steps, args.sampler, 2.0, 1, api_name="/generate")
    mix = Mix(args, text, json.dumps(states[0]))
    clients = [first] + [connect(url) for _ in range(args.users - 1)]  # set-up, one at a time, not counted
    warmup = mix.warm_up(clients)
    report["rss_mb_after_warmup"] = rss_mb(pid)
    wall = mix.run_users(clients)
    total = mix.totals()
    report.update({"seconds": round(wall, 2), "steps": args.steps, "sampler": args.sampler, **total,
                   "warmup": warmup, **mix.summary(wall)})  # fmt: skip
    failed = total["failed"] + sum(c.get("failed", 0) for c in warmup.values())
    # only deliberate refusals are allowed; a queue-full run must also have been refused at least once
    return failed == 0 and (args.scenario != "queue-full" or total["refused"] > 0)


def together(fn: Any, n: int) -> None:
    """`fn(0)` ... `fn(n - 1)`, each in its own thread, all at once; returns when all have."""
    threads = [threading.Thread(target=fn, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


class Mix:
    """The mixed scenario's calls, and their latencies and served / failed / refused counts per endpoint."""

    def __init__(self, args: argparse.Namespace, text: str, state: str) -> None:
        self.args, self.text, self.state = args, text, state
        self.latencies: dict[str, list[float]] = {name: [] for name in ENDPOINTS}
        self.counts = {name: {"served": 0, "failed": 0, "refused": 0} for name in ENDPOINTS}
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def ask(self, client: Any, endpoint: str, seed: int) -> None:
        """One call of `endpoint`, timed and counted; a refused user waits `--backoff` before asking again."""
        args, text, state = self.args, self.text, self.state
        t0 = time.perf_counter()
        try:
            if endpoint == "/pose":
                call(client, args.request_timeout, None, text, api_name="/pose")
            elif endpoint == "/edit":
                edit = f"sefa:{seed % 3}={(-1) ** seed * 1.5}"
                call(client, args.request_timeout, state, edit, 0, 0, api_name="/edit")
            else:
                call(client, args.request_timeout, text, seed, args.steps, args.sampler, 2.0, 1, api_name="/generate")
            with self.lock:
                self.latencies[endpoint].append(time.perf_counter() - t0)
                self.counts[endpoint]["served"] += 1
        except Exception as err:  # noqa: BLE001 - counted and reported
            refused = is_refusal(err)
            with self.lock:
                self.counts[endpoint]["refused" if refused else "failed"] += 1
                if not refused:
                    self.errors.append(f"{endpoint} {type(err).__name__}: {str(err)[:160]}")
            if refused:
                time.sleep(args.backoff)  # as a person would, rather than a storm of retries

    def warm_up(self, clients: list[Any]) -> dict[str, dict[str, int]]:
        """Every user calls each endpoint of the mix once, all at once; returns those counts, then starts afresh."""
        # so batches of every size and every path have run before the RSS is read; not counted in the latencies
        # (refusals and failures are reported)
        shares = {"/pose": self.args.pose_share, "/edit": self.args.edit_share}

        def user(k: int) -> None:
            for endpoint in ("/pose", "/generate", "/edit"):
                if shares.get(endpoint, 1.0) > 0:
                    self.ask(clients[k], endpoint, 900_000 + k)

        together(user, len(clients))
        warmup = {name: dict(c) for name, c in self.counts.items() if any(c.values())}
        for v in self.latencies.values():
            v.clear()
        for c in self.counts.values():
            c.update(served=0, failed=0, refused=0)
        return warmup

    def run_users(self, clients: list[Any]) -> float:
        """`args.users` users asking in a fixed mix until `args.seconds` have passed; the wall seconds taken."""
        args = self.args
        below_pose, below_edit = args.pose_share, args.pose_share + args.edit_share
        deadline = time.perf_counter() + args.seconds

        def user(k: int) -> None:
            i = 0
            while time.perf_counter() < deadline:
                i += 1
                r = (i * 0.618 + k * 0.37) % 1  # a fixed, well-spread mix per user
                endpoint = "/pose" if r < below_pose else "/edit" if r < below_edit else "/generate"
                self.ask(clients[k], endpoint, k * 1000 + i)

        t0 = time.perf_counter()
        together(user, args.users)
        return time.perf_counter() - t0

    def totals(self) -> dict[str, int]:
        """Served, failed and refused calls over all endpoints."""
        return {key: sum(c[key] for c in self.counts.values()) for key in ("served", "failed", "refused")}

    def summary(self, wall: float) -> dict[str, Any]:
        """Requests per second, the counts and latency quantiles per endpoint, and the first distinct errors."""
        return {
            "throughput_rps": round(self.totals()["served"] / wall, 2),
            "endpoints": {
                name: {
                    **self.counts[name],
                    "p50_s": percentile(v, 0.5),
                    "p95_s": percentile(v, 0.95),
                    "mean_s": round(statistics.fmean(v), 4) if v else None,
                }
                for name, v in self.latencies.items()
            },
            "errors": sorted(set(self.errors))[:5],
        }


def throughput(url: str, args: argparse.Namespace) -> dict:
    """Images per second of `args.users` 1-image /generate calls one after another, then all at once (the
    batcher's case), with the same seeds; the median of `args.repeats` rounds."""
    pose = json.dumps(_default_pose())
    clients = [connect(url) for _ in range(args.users)]

    def generate(k: int, seed: int) -> None:
        call(clients[k], args.request_timeout, pose, seed, args.steps, args.sampler, 2.0, 1, api_name="/generate")

    generate(0, 0)  # loads the model: not counted
    rounds = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for k in range(args.users):
            generate(0, k)
        sequential = time.perf_counter() - t0
        threads = [threading.Thread(target=generate, args=(k, k)) for k in range(args.users)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        concurrent = time.perf_counter() - t0
        rounds.append({"sequential_images_per_s": round(args.users / sequential, 3),
                       "concurrent_images_per_s": round(args.users / concurrent, 3),
                       "speedup": round(sequential / concurrent, 3)})  # fmt: skip
    return {"steps": args.steps, "speedup_median": statistics.median(r["speedup"] for r in rounds), "rounds": rounds}


def latency(url: str, args: argparse.Namespace) -> dict:
    """Median seconds of /generate, /edit (one slider move) and /refine, called one after another."""
    client = connect(url)
    pose = json.dumps(_default_pose())
    *_, states = client.predict(pose, 0, args.steps, args.sampler, 2.0, 1, api_name="/generate")  # warm-up
    state = json.dumps(states[0])
    calls = {
        "/generate": lambda i: client.predict(pose, i + 1, args.steps, args.sampler, 2.0, 1, api_name="/generate"),
        "/edit": lambda i: client.predict(state, f"sefa:{i % 3}={(-1) ** i * 1.5}", 0, 0, api_name="/edit"),
        "/refine": lambda i: client.predict(
            state, ["pink hair", "blue eyes", "sailor uniform"][i % 3], "", "style", args.refine_steps, 1.0, 0.0,
            api_name="/refine",
        ),
    }  # fmt: skip
    out: dict = {"steps": args.steps, "refine_steps": args.refine_steps, "endpoints": {}}
    for name, fn in calls.items():
        times, errors = [], []
        for i in range(args.repeats):
            t0 = time.perf_counter()
            try:
                fn(i)
                times.append(time.perf_counter() - t0)
            except Exception as err:  # noqa: BLE001 - reported (e.g. no CLIP for /refine)
                errors.append(f"{type(err).__name__}: {str(err)[:160]}")
        out["endpoints"][name] = {
            "n": len(times),
            "p50_s": percentile(times, 0.5),
            "p95_s": percentile(times, 0.95),
            "errors": sorted(set(errors))[:2],
        }
    return out


def _default_pose() -> dict:
    sys.path.insert(0, str(ROOT))
    from ui.common import default_value

    return default_value()


if __name__ == "__main__":
    sys.exit(main())
