"""`app.py pose` prints one JSON line per input and fails with exit code 1."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from app import main_pose, pose_record
from models import pose_input
from models.pose import FORK_NAMES, load, to_coco_flat, to_fork, to_openpose18
from models.pose_input import load_preset, read_pose_input


@pytest.fixture
def inputs(tmp_path):
    """A few keypoint files of every format and some bad files."""
    pose = load_preset("waving")
    files = {
        "coco": {"keypoints": to_coco_flat(pose), "width": 512, "height": 512},
        "openpose18": {
            "people": [{"pose_keypoints_2d": to_openpose18(pose)}],
            "canvas_width": 512,
            "canvas_height": 512,
        },
        "fork": to_fork(pose),
        "coco17": pose.to_dict(),
    }
    for name, obj in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(obj))
    (tmp_path / "nan.json").write_text('{"keypoints": [[NaN, 0.5, 1]' + ", [0.5, 0.5, 1]" * 16 + "]}")
    (tmp_path / "broken.json").write_text('{"keypoints": [')
    (tmp_path / "missing.json").write_text(json.dumps({n: [1, 2] for n in FORK_NAMES[:-1]}))
    (tmp_path / "sixteen.json").write_text(json.dumps({"keypoints": [[0.5, 0.5, 1]] * 16}))
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not a photo")
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    Image.new("RGB", (96, 96), (128, 128, 128)).save(tmp_path / "grey.png")
    return tmp_path


def test_formats_are_named_and_agree(inputs):
    want = load_preset("waving")
    for fmt in ("coco", "openpose18", "fork", "coco17"):
        got = read_pose_input(str(inputs / f"{fmt}.json"))
        assert got.format == fmt and got.image is None
        assert got.pose.isclose(want, atol=1e-4), fmt
    assert read_pose_input("waving").format == "preset"


def test_mixed_inputs_one_line_each_and_exit_1(inputs, capsys, tmp_path):
    good = ["standing", str(inputs / "coco.json"), str(inputs / "fork.json"), str(inputs / "openpose18.json")]
    bad = [
        str(inputs / n)
        for n in (
            "nan.json",
            "broken.json",
            "missing.json",
            "sixteen.json",
            "empty.png",
            "text.jpg",
            "dot.png",
            "grey.png",
        )
    ] + ["moonwalk", str(inputs / "absent.json"), str(inputs)]
    rc = main_pose(good + bad, str(tmp_path / "previews"))
    lines = capsys.readouterr().out.splitlines()
    assert rc == 1 and len(lines) == len(good + bad)
    records = [json.loads(line) for line in lines]
    assert [r["input"] for r in records] == good + bad
    for r in records[: len(good)]:
        assert r["format"] == "coco17" and len(r["keypoints"]) == 17 and "error" not in r
        assert all(len(p) == 3 for p in r["keypoints"])
    for r in records[len(good) :]:
        assert set(r) == {"input", "error"}, r
        assert r["error"].endswith(".") and "Traceback" not in r["error"] and "\n" not in r["error"]
    assert "No person" in records[len(good) + 7]["error"]
    assert (tmp_path / "previews" / "standing_openpose.png").is_file()


def test_own_output_reads_back(tmp_path, capsys):
    assert main_pose(["dancing"], None) == 0
    line = capsys.readouterr().out.strip()
    (tmp_path / "out.json").write_text(line)
    assert load(tmp_path / "out.json").isclose(load_preset("dancing"), atol=1e-5)
    assert read_pose_input(str(tmp_path / "out.json")).format == "coco17"
    (tmp_path / "err.json").write_text(json.dumps(pose_record("moonwalk")))
    assert "error record" in pose_record(str(tmp_path / "err.json"))["error"]


def test_unexpected_exception_is_one_sentence(monkeypatch):
    def boom(spec):
        raise RuntimeError("internal\ntraceback-like detail")

    monkeypatch.setattr(pose_input, "read_pose_input", boom)
    record = pose_record("standing")
    assert set(record) == {"input", "error"} and "RuntimeError" in record["error"] and "\n" not in record["error"]


def test_photo_previews(photos_dir, tmp_path, capsys):
    photo = str(photos_dir / "05_frisbee_throw.jpg")
    assert main_pose([photo, "t_pose"], str(tmp_path)) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (records[0]["width"], records[0]["height"]) == (513, 513)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["05_frisbee_throw_openpose.png", "05_frisbee_throw_overlay.png", "t_pose_openpose.png"]
    assert Image.open(tmp_path / "05_frisbee_throw_overlay.png").size == (513, 513)


def test_no_inputs():
    assert main_pose([], None) == 2


@pytest.mark.parametrize("fmt", ["openpose", "coco", "fork"])
def test_pose_lines_in_another_format_read_back(fmt, tmp_path, capsys):
    assert main_pose(["waving"], fmt=fmt) == 0
    line = capsys.readouterr().out.strip()
    (tmp_path / "line.json").write_text(line)
    assert load(tmp_path / "line.json").isclose(load_preset("waving"), atol=1e-4)
