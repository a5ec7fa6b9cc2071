"""`benchmarks.load`: it loads a running app (--url), reports JSON even when requests or the whole run fail, counts
deliberate refusals apart, and reads the RSS of the app it starts (or of --pid)."""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("gradio_client")

from benchmarks import load
from ui.fake import FakePipeline
from ui.server import build_demo, free_port, launch_local


class SometimesFails(FakePipeline):
    """The stand-in, failing (unexpectedly, not a refusal) for odd seeds."""

    def __call__(self, pose, seed, *args, **kwargs):
        if seed % 2:
            raise RuntimeError("odd seed")
        return super().__call__(pose, seed, *args, **kwargs)


def serve(pipe):
    return launch_local(build_demo(lambda: pipe, model_status=""))


def run(capsys, argv: list[str]) -> tuple[int, dict]:
    code = load.main(argv)
    lines = capsys.readouterr().out.strip().splitlines()
    return code, json.loads(lines[-1])


def test_defaults_to_the_shipped_weights_and_its_own_app():
    args = load.build_parser().parse_args([])
    assert args.model == "weights" and args.url is None and args.pid is None


def test_loads_a_running_app_by_url(capsys):
    demo = serve(FakePipeline(size=64))
    try:
        argv = ["--url", demo.local_url, "--users", "2", "--seconds", "2", "--steps", "2"]
        code, report = run(capsys, argv)
        code_pid, with_pid = run(capsys, [*argv, "--pid", str(os.getpid())])
    finally:
        demo.close()
    assert code == 0 and report["failed"] == 0 and report["served"] > 0, report
    assert set(report["endpoints"]) == {"/pose", "/generate", "/edit"}
    served = [e for e in report["endpoints"].values() if e["served"]]
    assert served and all(e["p50_s"] > 0 and e["p95_s"] >= e["p50_s"] for e in served)
    # --url alone cannot know the server's process; --pid names it
    assert report["rss_mb_start"] is None and report["rss_mb_end"] is None
    assert code_pid == 0 and all(with_pid[k] > 0 for k in ("rss_mb_start", "rss_mb_after_warmup", "rss_mb_end"))
    assert with_pid["rss_growth_after_warmup_pct"] is not None


def test_reports_when_some_requests_fail(capsys):
    demo = serve(SometimesFails(size=64))
    try:
        code, report = run(capsys, ["--url", demo.local_url, "--users", "2", "--seconds", "2", "--steps", "2",
                                    "--pose-share", "0", "--edit-share", "0"])  # fmt: skip
    finally:
        demo.close()
    assert code == 1
    assert report["failed"] > 0 and report["served"] > 0 and report["refused"] == 0, report
    assert report["endpoints"]["/generate"]["failed"] == report["failed"]
    assert report["errors"] and "went wrong" in report["errors"][0]


def test_an_unreachable_app_still_gets_a_report(capsys):
    code, report = run(capsys, ["--url", f"http://127.0.0.1:{free_port()}/", "--startup-timeout", "1"])
    assert code == 1 and "did not answer" in report["run_error"]


def test_its_own_app_overrun_counts_refusals_and_reads_rss(capsys):
    """A small queue (QUEUE_SIZE=2, one generate worker, a slowed stand-in): refusals are counted, not failures."""
    code, report = run(capsys, ["--model", "fake", "--scenario", "queue-full", "--users", "6", "--seconds", "3",
                                "--steps", "4", "--startup-timeout", "120"])  # fmt: skip
    assert code == 0, report
    assert report["refused"] > 0 and report["failed"] == 0 and report["served"] > 0
    assert all(report[k] > 0 for k in ("rss_mb_start", "rss_mb_after_warmup", "rss_mb_end"))
