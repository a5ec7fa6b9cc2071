"""`python app.py generate`: the web app's limits, `--out` checked before the model runs, one JSON line always."""

from __future__ import annotations

import json

import pytest
from PIL import Image

import app
from ui import settings
from ui.fake import FakePipeline


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if the command loads a model (the checks must come first)."""
    from models import backends

    def load(*a, **k):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(backends, "load_backend", load)
    monkeypatch.setattr(backends, "model_kind", lambda model: "ours")


def generate(capsys, *argv: str) -> tuple[int, dict]:
    code = app.main(["generate", "--pose", "waving", *argv])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1  # one JSON line, no traceback on stdout
    return code, json.loads(lines[0])


@pytest.mark.parametrize(
    "argv, words",
    [
        (
            ["--steps", str(settings.MAX_STEPS + 1)],
            f"--steps must be a whole number between 1 and {settings.MAX_STEPS}",
        ),
        (["--num-images", "9"], f"--num-images must be a whole number between 1 and {settings.MAX_NUM_IMAGES}"),
        (["--prompt", "x" * 10_000], f"--prompt is 10000 characters long; the limit is {settings.MAX_PROMPT_CHARS}"),
        (["--negative-prompt", "y" * 400], "--negative-prompt is 400 characters long"),
        (["--seed", "-1"], "--seed must be a whole number"),
        (["--guidance", "nan"], "--guidance must be a number"),
    ],
)
def test_web_limits_apply_before_the_model(no_model, capsys, tmp_path, argv, words):
    code, line = generate(capsys, "--out", str(tmp_path / "a.png"), *argv)
    assert code == 1 and words in line["error"], line


def test_out_is_a_folder(no_model, capsys, tmp_path):
    (tmp_path / "x.png").mkdir()
    code, line = generate(capsys, "--out", str(tmp_path / "x.png"))
    assert code == 1 and "is a folder" in line["error"]


def test_out_cannot_be_written(no_model, capsys):
    code, line = generate(capsys, "--out", "/proc/pose_studio_test/x.png")
    assert code == 1 and "--out: cannot write into /proc/pose_studio_test" in line["error"], line


def test_deep_json_pose_is_one_sentence(no_model, capsys, tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    code = app.main(["generate", "--pose", str(deep), "--out", str(tmp_path / "a.png")])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 1 and "Recursion" not in line["error"] and line["error"].endswith("."), line


def test_writes_whole_pngs_and_no_scratch_files(monkeypatch, capsys, tmp_path):
    from models import backends

    monkeypatch.setattr(backends, "load_backend", lambda *a, **k: FakePipeline(size=32))
    monkeypatch.setattr(backends, "model_kind", lambda model: "ours")
    code, line = generate(capsys, "--out", str(tmp_path / "out" / "a.png"), "--num-images", "2", "--steps", "2")
    assert code == 0 and [p.split("/")[-1] for p in line["outputs"]] == ["a_1.png", "a_2.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_1.png", "a_2.png"]
    with Image.open(line["outputs"][0]) as im:
        assert json.loads(im.info["pose_studio"])["seed"] == 0


def test_unexpected_failure_names_no_exception_class(monkeypatch, capsys, tmp_path):
    from models import backends

    def broken(*a, **k):
        raise KeyError("/some/server/path")

    monkeypatch.setattr(backends, "load_backend", broken)
    monkeypatch.setattr(backends, "model_kind", lambda model: "ours")
    code, line = generate(capsys, "--out", str(tmp_path / "a.png"))
    assert code == 1 and "KeyError" not in line["error"] and "/some" not in line["error"]


def test_style_image_gives_every_image_its_look(monkeypatch, capsys, tmp_path):
    from models import backends

    monkeypatch.setattr(backends, "load_backend", lambda *a, **k: FakePipeline(size=32))
    picture = tmp_path / "look.png"
    im = Image.new("RGB", (48, 48), (155, 65, 110))  # the fake reads s[:3] = (1, -1, 0) off the corner colour
    im.paste((0, 0, 0), (10, 10, 30, 30))
    im.save(picture)
    code, line = generate(capsys, "--out", str(tmp_path / "a.png"), "--num-images", "2", "--style-image", str(picture))
    assert code == 0, line
    for path in line["outputs"]:
        style = json.loads(Image.open(path).info["pose_studio"])["style"]
        assert [round(v, 4) for v in style[:3]] == [1.0, -1.0, 0.0]


def test_bad_style_image_fails_before_the_model(no_model, capsys, tmp_path):
    (tmp_path / "t.png").write_text("text")
    code, line = generate(capsys, "--out", str(tmp_path / "a.png"), "--style-image", str(tmp_path / "t.png"))
    assert code == 1 and line["error"].startswith("--style-image: ")
