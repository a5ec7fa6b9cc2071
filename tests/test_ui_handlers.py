"""The UI's event handlers as plain functions, with a fake pipeline (fast, no server)."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from models.pose import Pose, loads
from ui import handlers, settings
from ui.fake import FakePipeline


def value() -> dict:
    return handlers.default_value()


def test_show_pose_gives_drawing_and_json():
    picture, text = handlers.show_pose(value())
    assert picture.size == (handlers.PREVIEW_SIDE, handlers.PREVIEW_SIDE)
    assert loads(text).isclose(handlers.default_pose())


def test_background_is_not_part_of_the_pose():
    v = {**value(), "background": "data:image/jpeg;base64,xx"}
    assert "background" not in json.loads(handlers.show_pose(v)[1])
    assert handlers.mirror_pose(v)["background"] == v["background"]  # same frame: the photo stays


def test_mirror_twice_is_identity():
    v = value()
    assert handlers.pose_from_value(handlers.mirror_pose(handlers.mirror_pose(v))).isclose(handlers.pose_from_value(v))


def test_reset_keeps_photo_frame():
    v = {**Pose(handlers.DEFAULT_KEYPOINTS, 640, 480).to_dict(), "background": "data:image/jpeg;base64,xx"}
    out = handlers.reset_pose(v)
    assert (out["width"], out["height"]) == (640, 480) and out["background"]


@pytest.mark.parametrize("bad", [None, "", "{", "[1, 2, 3]", {"keypoints": [[0, 0, 1]] * 3}, 5])
def test_bad_pose_is_a_gr_error_sentence(bad):
    with pytest.raises(gr.Error) as info:
        handlers.show_pose(bad)
    assert str(info.value.message).endswith(".")


def test_load_and_save_pose_file(tmp_path):
    openpose = {"people": [{"pose_keypoints_2d": [100.0, 100.0, 1.0] * 18}], "canvas_width": 200, "canvas_height": 200}
    path = tmp_path / "op.json"
    path.write_text(json.dumps(openpose))
    v = handlers.load_pose_file(str(path), value())
    assert v["width"] == 200
    saved = handlers.save_pose_file(v)
    assert loads(Path(saved).read_text()).isclose(handlers.pose_from_value(v))


def test_load_pose_file_refuses_binary(tmp_path):
    path = tmp_path / "x.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(gr.Error):
        handlers.load_pose_file(str(path), value())


def test_upload_size_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(settings, "MAX_UPLOAD_MB", 0)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(value()))
    with pytest.raises(gr.Error) as info:
        handlers.load_pose_file(str(path), value())
    assert "MB" in info.value.message


def test_photo_side_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(settings, "MAX_IMAGE_SIDE", 100)
    path = tmp_path / "big.png"
    Image.new("RGB", (200, 120)).save(path)
    with pytest.raises(gr.Error) as info:
        handlers.pose_api(str(path), "")
    assert "200 x 120" in info.value.message


def test_photo_not_an_image(tmp_path):
    path = tmp_path / "x.jpg"
    path.write_text("hello")
    with pytest.raises(gr.Error) as info:
        handlers.extract_from_photo(str(path), value())
    assert "image" in info.value.message


def test_photo_with_nobody_keeps_photo_and_warns(tmp_path, monkeypatch):
    from models import extract

    def nobody(image):
        raise extract.NoPersonError("No person was found in the photo.")

    monkeypatch.setattr(extract, "extract_pose", nobody)
    path = tmp_path / "empty.png"
    Image.new("RGB", (320, 240), (200, 220, 240)).save(path)
    with pytest.warns(UserWarning):
        _, v, _ = handlers.extract_from_photo(str(path), value())
    assert (v["width"], v["height"]) == (320, 240) and v["background"].startswith("data:image/jpeg")


def test_photo_with_person_opens_in_editor(tmp_path, monkeypatch):
    from models import extract

    monkeypatch.setattr(extract, "extract_pose", lambda image: handlers.default_pose())
    path = tmp_path / "person.png"
    Image.new("RGB", (300, 400), (90, 90, 90)).save(path)
    overlay, v, text = handlers.extract_from_photo(str(path), value())
    assert overlay.size == (300, 400) and (v["width"], v["height"]) == (300, 400)
    assert json.loads(text)["format"] == "coco17"


def test_pose_api_preset_and_json():
    pose, picture = handlers.pose_api(None, json.dumps(value()))
    assert pose["format"] == "coco17" and picture.size == (384, 384)
    with pytest.raises(gr.Error):
        handlers.pose_api(None, "no such preset surely")


def run_generate(**overrides):
    args = {
        "pose_value": value(),
        "seed": 5,
        "randomize": False,
        "steps": 3,
        "sampler": "ddim",
        "guidance": 2.0,
        "num_images": 2,
    }
    args.update(overrides)
    return list(handlers.generate_handler(lambda: FakePipeline(size=32))(**args))


def test_generate_streams_then_writes_files():
    outs = run_generate()
    assert len(outs) == 3 + 1  # one yield per step, then the results
    previews, gallery, files, seed = outs[-1]
    assert seed == 5 and len(gallery) == 2 and len(previews) == 3
    record = json.loads(Image.open(files[0]).info[handlers.PNG_KEY])
    assert record["seed"] == 5 and record["sampler"] == "ddim"
    assert json.loads(Path(files[-1]).read_text())["images"][1]["seed"] == 6


def test_generate_random_seed_is_reported():
    *_, seed = run_generate(randomize=True, num_images=1)[-1]
    assert 0 <= seed <= settings.MAX_SEED


@pytest.mark.parametrize(
    "overrides",
    [
        {"steps": 0},
        {"steps": settings.MAX_STEPS + 1},
        {"num_images": settings.MAX_NUM_IMAGES + 1},
        {"guidance": float("nan")},
        {"sampler": "plms"},
        {"seed": -3},
        {"seed": "abc"},
        {"pose_value": "{oops"},
    ],
)
def test_generate_refuses_bad_settings(overrides):
    with pytest.raises(gr.Error):
        run_generate(**overrides)


def test_generate_without_model_says_so():
    def missing():
        from models.errors import InputError

        raise InputError("No model is loaded: the weights folder is missing or empty.")

    with pytest.raises(gr.Error) as info:
        list(handlers.generate_handler(missing)(value(), 1, False, 2, "ddim", 2.0, 1))
    assert "No model is loaded" in info.value.message


def test_pipeline_crash_is_one_sentence():
    def broken(*a, **k):
        raise RuntimeError("boom")

    with pytest.raises(gr.Error) as info:
        list(handlers.generate_handler(lambda: broken)(value(), 1, False, 2, "ddim", 2.0, 1))
    assert "went wrong" in info.value.message


def test_non_square_pose_is_fitted_for_the_model():
    pose = Pose(np.array(handlers.DEFAULT_KEYPOINTS, np.float32), 640, 480)
    fitted = handlers.model_pose(pose)
    assert fitted.width == fitted.height == 640


def test_lazy_pipeline_loads_once_and_reports_missing_weights(tmp_path, monkeypatch):
    from ui import server

    monkeypatch.setattr(server, "_PIPELINE", None)
    fake = server.LazyPipeline("fake")
    assert fake() is fake()
    monkeypatch.setattr(server, "_PIPELINE", None)
    missing = server.LazyPipeline(str(tmp_path / "nothing"))
    assert "No model is loaded" in missing.status()
    with pytest.raises(Exception, match="No model is loaded"):
        missing()


def test_presets_when_present():
    names = handlers.preset_names()
    if not names:
        pytest.skip("no presets in this build")
    v = handlers.choose_preset(names[0], value())
    assert v["format"] == "coco17"
    pose, _ = handlers.pose_api(None, names[0])
    assert handlers.pose_from_value(pose).isclose(handlers.pose_from_value(v))
    assert handlers.choose_preset(None, value()) == gr.skip()


def test_each_tab_builds_on_its_own():
    from ui import app_generate, app_pose

    assert app_pose.create_demo() is not None
    assert app_generate.create_demo(lambda: FakePipeline(size=32)) is not None
