"""The few-step student: the consistency maths, the distillation trainer on a tiny model, and the `fast` path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from models.errors import InputError
from models.pipeline import PosePipeline
from models.pose import Pose
from models.samplers import DEFAULT_FAST_STEPS, consistency_scalings, skip_timesteps, split_output, training_scheduler
from tests.test_train import data  # noqa: F401 -- the tiny synth-layout folder fixture
from training import train_ae, train_distill, train_ldm

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def test_consistency_function_is_the_identity_at_t_zero_and_the_estimate_later():
    c_skip, c_out = consistency_scalings(torch.tensor([0, 19, 999]))
    assert c_skip[0] == 1 and c_out[0] == 0
    assert c_skip[-1] < 1e-6 and c_out[-1] > 0.999
    t = skip_timesteps(1000)
    assert len(t) == 50 and int(t[0]) == 19 and int(t[-1]) == 999


@pytest.mark.parametrize("prediction_type", ["v_prediction", "epsilon"])
def test_split_output_recovers_image_and_noise(prediction_type):
    g = torch.Generator().manual_seed(0)
    z0, eps = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    a = torch.tensor(0.3)
    z_t = a.sqrt() * z0 + (1 - a).sqrt() * eps
    out = a.sqrt() * eps - (1 - a).sqrt() * z0 if prediction_type == "v_prediction" else eps
    x0, e = split_output(prediction_type, out, z_t, a)
    assert torch.allclose(x0, z0, atol=1e-5) and torch.allclose(e, eps, atol=1e-5)


@pytest.fixture(scope="module")
def teacher(data, tmp_path_factory) -> Path:  # noqa: F811
    """A tiny zero-SNR pipeline folder, as the 256-px model is trained."""
    root = tmp_path_factory.mktemp("teacher")
    ae = train_ae.main(["--data", str(data), "--out", str(root / "ae"), "--preset", "tiny"])
    return train_ldm.main(["--data", str(data), "--ae", str(ae), "--out", str(root / "ldm"), "--preset", "tiny",
                           "--zero-snr", "true", "--min-snr-gamma", "0"])  # fmt: skip


def pose() -> Pose:
    kp = np.concatenate([np.random.default_rng(1).uniform(0.2, 0.8, (17, 2)), np.ones((17, 1))], axis=1)
    return Pose(kp.astype(np.float32), 64, 64)


def test_distil_save_load_and_draw_fast(data, teacher, tmp_path):  # noqa: F811
    args = ["--teacher", str(teacher), "--data", str(data), "--out", str(tmp_path / "lcm"), "--preset", "tiny"]
    final = train_distill.main(args)
    weights = load_file(next((final / "fast_unet").glob("*.safetensors")))
    assert {t.dtype for t in weights.values()} == {torch.float16}  # half the bytes on disk
    assert list((tmp_path / "lcm" / "samples").glob("step_*.png"))
    train_distill.main([*args, "--steps", "3", "--resume"])
    log = (tmp_path / "lcm" / "log.txt").read_text()
    assert "resumed from" in log and "latents from cache" in log
    assert json.loads((final / "fast_unet" / "training_info.json").read_text())["steps"] == 3

    pipe = PosePipeline.from_pretrained(final, device="cpu")
    assert "fast" in pipe.CAPABILITIES and pipe.fast_unet.dtype == torch.float32
    a, states = pipe(pose(), seed=3, steps=2, fast=True)
    b, _ = pipe(pose(), seed=3, steps=2, fast=True)
    assert np.array_equal(np.asarray(a[0]), np.asarray(b[0])) and states[0].settings["fast"] is True
    again, _ = pipe.render(states[0])  # a state re-renders through the same student
    assert np.array_equal(np.asarray(again[0]), np.asarray(a[0]))
    full, full_states = pipe(pose(), seed=3, steps=2)
    assert "fast" not in full_states[0].settings and not np.array_equal(np.asarray(full[0]), np.asarray(a[0]))
    with pytest.raises(InputError, match="1 to 4 steps"):
        pipe(pose(), seed=3, steps=5, fast=True)

    from models.batching import render_batch

    images, _ = render_batch(pipe, [pipe.prepare(pose(), seed=3, steps=2, fast=True)])
    assert np.array_equal(np.asarray(images[0]), np.asarray(a[0]))


def test_a_model_without_a_student_refuses_fast(teacher):
    pipe = PosePipeline.from_pretrained(teacher, device="cpu")
    assert "fast" not in pipe.CAPABILITIES
    with pytest.raises(InputError, match="no fast generator"):
        pipe(pose(), seed=0, steps=2, fast=True)


def test_training_scheduler_is_what_the_student_learns_on():
    sched = training_scheduler(zero_snr=True)
    assert float(sched.alphas_cumprod[int(skip_timesteps(1000)[-1])]) < 1e-6  # the last step starts at pure noise


def test_cli_fast_draws_with_the_student_or_says_why_not(data, teacher, tmp_path, capsys):  # noqa: F811
    import app

    final = train_distill.main(
        ["--teacher", str(teacher), "--data", str(data), "--out", str(tmp_path / "lcm"), "--preset", "tiny"]
    )

    def run(*argv: str) -> tuple[int, dict]:
        code = app.main(["generate", "--pose", "waving", "--out", str(tmp_path / "a.png"), *argv])
        return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    code, line = run("--model", str(final), "--fast")
    assert code == 0 and line["settings"]["fast"] is True and line["settings"]["steps"] == DEFAULT_FAST_STEPS, line
    code, line = run("--model", str(teacher), "--fast")
    assert code == 1 and "few-step student" in line["error"]
    code, line = run("--model", str(final), "--fast", "--steps", "6")
    assert code == 1 and "--steps must be a whole number between 1 and 4" in line["error"]
    code, line = run("--model", str(final), "--fast", "--edit", "sefa:0=1")
    assert code == 1 and "need the full model" in line["error"]


def test_preview_benchmark_times_a_drag_with_the_student(data, teacher, tmp_path, capsys):  # noqa: F811
    from benchmarks import speed

    final = train_distill.main(
        ["--teacher", str(teacher), "--data", str(data), "--out", str(tmp_path / "lcm"), "--preset", "tiny"]
    )
    result = speed.main(["preview", "--model", str(final), "--frames", "2", "--threads", "1", "--json"])
    assert result["drawn_with"] == "fast student" and result["frames"] == 2 and result["steps"] == DEFAULT_FAST_STEPS
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["seconds_p50"] > 0
    full = speed.main(["preview", "--model", str(teacher), "--frames", "1", "--threads", "1"])
    assert full["drawn_with"] == "full model"
