"""`benchmarks.speed`: every subcommand keeps its flags and defaults, and `render` prints its JSON object (the
others need the shipped model or the shared photos for minutes, so only their command lines are checked here)."""

from __future__ import annotations

import json

import pytest

from benchmarks import speed
from models import paths

DEFAULTS = {
    "render": {"n": 400, "size": 128, "workers": 2},
    "extract": {"photos": str(paths.ROOT.parent / "shared" / "photos"), "repeats": 3},
    "detector": {"detector": str(paths.DETECTOR), "repeats": 20, "threads": 1},
    "generate": {"model": str(paths.WEIGHTS), "steps": 8, "sampler": "dpmpp_2m", "guidance": 2.0, "repeats": 3,
                 "threads": 2},
    "preview": {"model": str(paths.WEIGHTS), "frames": 24, "threads": 2, "seed": 0, "app_seconds": 0, "json": False},
    "throughput": {"model": "weights", "requests": 8, "steps": 8, "sampler": "dpmpp_2m", "rounds": 3, "threads": None,
                   "window": 0.05},
}  # fmt: skip


@pytest.mark.parametrize("command", sorted(DEFAULTS))
def test_each_subcommand_keeps_its_flags_and_defaults(command, capsys):
    args = vars(speed.build_parser().parse_args([command]))
    assert args.pop("command") == command and args.pop("run").__name__ == command
    assert args == DEFAULTS[command]
    with pytest.raises(SystemExit) as done:
        speed.main([command, "--help"])
    usage = capsys.readouterr().out
    assert done.value.code == 0 and f"python -m benchmarks.speed {command}" in usage
    assert all(f"--{flag.replace('_', '-')}" in usage for flag in DEFAULTS[command])


def test_a_subcommand_is_required(capsys):
    with pytest.raises(SystemExit) as done:
        speed.main([])
    assert done.value.code == 2 and "COMMAND" in capsys.readouterr().err


def test_render_prints_one_json_object(capsys):
    result = speed.main(["render", "--n", "4", "--size", "64", "--workers", "1"])
    assert json.loads(capsys.readouterr().out) == result
    assert list(result) == ["size", "n", "cpus", "render_images_per_s_1_process", "images_per_s", "workers",
                            "writer_cpu_ms_per_image", "images_per_s_if_cores_free", "note"]  # fmt: skip
    assert result["n"] == 4 and result["size"] == 64 and result["images_per_s"] > 0


def test_median_timed_warms_up_once_then_times_each_call():
    calls = []
    wall, cpu = speed.median_timed(lambda: calls.append(1), 3)
    assert len(calls) == 4 and wall >= 0 and cpu >= 0
