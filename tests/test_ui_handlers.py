"""The UI's event handlers as plain functions, with a fake pipeline (fast, no server)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from models.pose import Pose, loads
from models.pose_input import PNG_KEY
from ui import app_explore, app_generate, app_pose, app_refine, common, settings
from ui.fake import FakePipeline


def value() -> dict:
    return common.default_value()


def test_show_pose_gives_drawing_and_json():
    picture, text = app_pose.show_pose(value())
    assert picture.size == (common.PREVIEW_SIDE, common.PREVIEW_SIDE)
    assert loads(text).isclose(common.default_pose())


def test_background_is_not_part_of_the_pose():
    v = {**value(), "background": "data:image/jpeg;base64,xx"}
    assert "background" not in json.loads(app_pose.show_pose(v)[1])
    assert app_pose.mirror_pose(v)["background"] == v["background"]  # same frame: the photo stays


def test_mirror_twice_is_identity():
    v = value()
    assert common.pose_from_value(app_pose.mirror_pose(app_pose.mirror_pose(v))).isclose(common.pose_from_value(v))


def test_reset_keeps_photo_frame():
    v = {**Pose(common.DEFAULT_KEYPOINTS, 640, 480).to_dict(), "background": "data:image/jpeg;base64,xx"}
    out = app_pose.reset_pose(v)
    assert (out["width"], out["height"]) == (640, 480) and out["background"]


@pytest.mark.parametrize("bad", [None, "", "{", "[1, 2, 3]", {"keypoints": [[0, 0, 1]] * 3}, 5])
def test_bad_pose_is_a_gr_error_sentence(bad):
    with pytest.raises(gr.Error) as info:
        app_pose.show_pose(bad)
    assert str(info.value.message).endswith(".")


def test_load_and_save_pose_file(tmp_path):
    openpose = {"people": [{"pose_keypoints_2d": [100.0, 100.0, 1.0] * 18}], "canvas_width": 200, "canvas_height": 200}
    path = tmp_path / "op.json"
    path.write_text(json.dumps(openpose))
    v = app_pose.load_pose_file(str(path), value())
    assert v["width"] == 200
    for fmt in ("ours", "openpose", "coco"):  # the fork's format has its own 512-px frame
        saved = app_pose.save_pose_file(v, fmt)
        assert loads(Path(saved).read_text()).isclose(common.pose_from_value(v), atol=1e-4)


def test_load_pose_file_refuses_binary(tmp_path):
    path = tmp_path / "x.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(gr.Error):
        app_pose.load_pose_file(str(path), value())


def test_upload_size_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(settings, "MAX_UPLOAD_MB", 0)
    path = tmp_path / "p.json"
    path.write_text(json.dumps(value()))
    with pytest.raises(gr.Error) as info:
        app_pose.load_pose_file(str(path), value())
    assert "MB" in info.value.message


def test_photo_side_limit(tmp_path, monkeypatch):
    from models import pose_input

    monkeypatch.setattr(pose_input, "MAX_IMAGE_SIDE", 100)
    path = tmp_path / "big.png"
    Image.new("RGB", (200, 120)).save(path)
    with pytest.raises(gr.Error) as info:
        app_pose.pose_api(str(path), "")
    assert "200 x 120" in info.value.message


def test_photo_not_an_image(tmp_path):
    path = tmp_path / "x.jpg"
    path.write_text("hello")
    with pytest.raises(gr.Error) as info:
        app_pose.extract_from_photo(str(path), value())
    assert "image" in info.value.message


def test_photo_with_nobody_keeps_photo_and_warns(tmp_path, monkeypatch):
    from models import pose_input

    def nobody(image):
        raise pose_input.NoPersonError("No person was found in the photo.")

    monkeypatch.setattr(pose_input, "extract_pose", nobody)
    path = tmp_path / "empty.png"
    Image.new("RGB", (320, 240), (200, 220, 240)).save(path)
    with pytest.warns(UserWarning):
        _, v, _ = app_pose.extract_from_photo(str(path), value())
    assert (v["width"], v["height"]) == (320, 240) and v["background"].startswith("data:image/jpeg")


def test_photo_with_person_opens_in_editor(tmp_path, monkeypatch):
    from models import pose_input

    monkeypatch.setattr(pose_input, "extract_pose", lambda image: common.default_pose())
    path = tmp_path / "person.png"
    Image.new("RGB", (300, 400), (90, 90, 90)).save(path)
    overlay, v, text = app_pose.extract_from_photo(str(path), value())
    assert overlay.size == (300, 400) and (v["width"], v["height"]) == (300, 400)
    assert json.loads(text)["format"] == "coco17"


def test_pose_api_preset_and_json():
    pose, picture = app_pose.pose_api(None, json.dumps(value()))
    assert pose["format"] == "coco17" and picture.size == (384, 384)
    with pytest.raises(gr.Error):
        app_pose.pose_api(None, "no such preset surely")


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
    return list(app_generate.generate_handler(lambda: FakePipeline(size=32))(**args))


def test_generate_streams_then_writes_files():
    outs = run_generate()
    assert len(outs) == 2 * 3 + 1  # one yield per step of each image, then the results
    previews, gallery, files, seed, results, current = outs[-1]
    assert seed == 5 and len(gallery) == 2 and len(previews) == 6
    record = json.loads(Image.open(files[0]).info[PNG_KEY])
    assert record["seed"] == 5 and record["sampler"] == "ddim" and len(record["style"]) == 8
    assert json.loads(Path(files[-1]).read_text())["images"][1]["seed"] == 6
    # Each result keeps its state, aligned with the gallery; the first is the current one.
    assert [r.state.seed for r in results] == [5, 6] and current is results[0]
    assert all(o[4] == gr.skip() and o[5] == gr.skip() for o in outs[:-1])


def test_generate_with_a_look_from_a_picture(tmp_path):
    picture = tmp_path / "look.png"
    im = Image.new("RGB", (40, 40), (155, 65, 110))  # the fake reads s[:3] = (1, -1, 0) off the corner colour
    im.paste((0, 0, 0), (10, 10, 30, 30))
    im.save(picture)
    *_, results, _ = run_generate(style_image=str(picture))[-1]
    for r in results:  # every image takes the look; the noise still differs by seed
        np.testing.assert_allclose(r.state.style[:3], [1.0, -1.0, 0.0], atol=1e-6)
    (tmp_path / "text.png").write_text("not an image")
    for bad, words in (("text.png", "image"), ("missing.png", "could not be found")):
        with pytest.raises(gr.Error) as info:
            run_generate(style_image=str(tmp_path / bad))
        assert words in info.value.message and str(tmp_path) not in info.value.message


def test_generate_random_seed_is_reported():
    *_, seed, _, _ = run_generate(randomize=True, num_images=1)[-1]
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
        list(app_generate.generate_handler(missing)(value(), 1, False, 2, "ddim", 2.0, 1))
    assert "No model is loaded" in info.value.message


def test_pipeline_crash_is_one_sentence():
    def broken(*a, **k):
        raise RuntimeError("boom")

    with pytest.raises(gr.Error) as info:
        list(app_generate.generate_handler(lambda: broken)(value(), 1, False, 2, "ddim", 2.0, 1))
    assert "went wrong" in info.value.message


def test_non_square_pose_is_fitted_for_the_model():
    pose = Pose(np.array(common.DEFAULT_KEYPOINTS, np.float32), 640, 480)
    fitted = common.model_pose(pose)
    assert fitted.width == fitted.height == 640


def test_lazy_pipeline_loads_once_and_reports_missing_weights(tmp_path, monkeypatch):
    from ui import settings as server

    monkeypatch.setattr(server, "_PIPELINE", None)
    fake = server.LazyPipeline("fake")
    assert fake() is fake()
    monkeypatch.setattr(server, "_PIPELINE", None)
    missing = server.LazyPipeline(str(tmp_path / "nothing"))
    assert "No model is loaded" in missing.status()
    with pytest.raises(Exception, match="No model is loaded"):
        missing()


def test_presets_when_present():
    names = app_pose.preset_names()
    if not names:
        pytest.skip("no presets in this build")
    v = app_pose.choose_preset(names[0], value())
    assert v["format"] == "coco17"
    pose, _ = app_pose.pose_api(None, names[0])
    assert common.pose_from_value(pose).isclose(common.pose_from_value(v))
    assert app_pose.choose_preset(None, value()) == gr.skip()


def test_each_tab_builds_on_its_own():
    from ui import app_explore, app_generate, app_pose, app_refine

    assert app_pose.create_demo() is not None
    for app in (app_generate, app_refine, app_explore):
        assert app.create_demo(lambda: FakePipeline(size=32)) is not None


# -- results, Refine, Explore (fake model) ---------------------------------------------------------
FAKE = FakePipeline(size=32)


def fake_loader():
    return FAKE


@pytest.fixture(scope="module")
def result():
    return run_generate(num_images=1)[-1][-1]


class Select:
    def __init__(self, index):
        self.index = index


def test_gallery_click_picks_that_result():
    *_, results, _ = run_generate()[-1]
    assert app_generate.select_result(results, Select(1)) is results[1]
    assert app_generate.select_result(results, Select(7)) == gr.skip()


def refine_outs(current, prompt="pink hair | hat:-0.5", negative="", mode="style", steps=3, strength=1.0, pose=0.0):
    return list(app_refine.refine_handler(fake_loader)(current, prompt, negative, mode, steps, strength, pose))


def test_refine_streams_steps_then_before_and_after(result):
    outs = refine_outs(result, mode="both", steps=6)
    assert len(outs) == 6 + 1
    shown, after, files, refined, note = outs[-1]
    assert len(shown) == 6 and after.size == (32, 32) and "Refined" in note
    assert not np.array_equal(np.asarray(after), np.asarray(result.image))  # it moved
    assert refined.state.seed == result.state.seed and refined.image is after
    record = json.loads(Image.open(files[0]).info[PNG_KEY])
    assert record["refine"]["prompt"] == "pink hair | hat:-0.5" and record["refine"]["source"]["seed"] == 5
    assert [s["mode"] for s in json.loads(Path(files[1]).read_text())["refine"]["stages"]] == ["style", "latent"]
    assert common.use_result(refined) is refined
    before, after2, *_ = app_refine.refine_show(refined)
    assert before is refined.image and after2 is None


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"current": None}, "no current result"),
        ({"prompt": "x" * 10_000}, "10000 characters"),
        ({"prompt": "pink hair:xx"}, "not a number"),
        ({"prompt": ""}, "prompt"),
        ({"steps": settings.MAX_REFINE_STEPS + 1}, "Refine steps"),
        ({"strength": float("nan")}, "strength"),
        ({"pose": -1}, "pose weight"),
        ({"mode": "warp"}, "mode"),
    ],
)
def test_refine_bad_input_is_one_sentence(result, overrides, words):
    args = {"current": result, **overrides}
    with pytest.raises(gr.Error) as info:
        refine_outs(**args)
    assert words in info.value.message and info.value.message.endswith(".")


def test_explore_setup_labels_sliders_and_step_range(result):
    out = app_explore.explore_setup_handler(fake_loader)(result, "ganspace")
    status, method, *sliders = out[: 2 + settings.NUM_DIRECTIONS]
    assert "SeFa and GANSpace" in status and method["value"] == "ganspace"
    assert sliders[0]["label"] == "0: background red" and sliders[-1]["visible"] is False  # the fake has 8
    _, end, original = out[2 + settings.NUM_DIRECTIONS : 5 + settings.NUM_DIRECTIONS]
    assert end["maximum"] == 3 and original is result.image
    assert "Generate an image first" in app_explore.explore_setup_handler(fake_loader)(None, "sefa")[0]


def test_explore_slider_rerenders_the_current_result(result):
    render = app_explore.explore_render_handler(fake_loader)
    amounts = [2.0] + [0] * (settings.NUM_DIRECTIONS - 1)
    image, _, edited, _ = render(result, "ganspace", 0, 3, *amounts)
    assert edited.state.settings["edit"]["edits"][0]["label"] == "background red"
    assert np.asarray(image)[0, 0, 0] > np.asarray(result.image)[0, 0, 0]  # more red background
    again, *_ = render(result, "ganspace", 0, 3, *amounts)
    assert np.array_equal(np.asarray(again), np.asarray(image))  # the same amounts: the same pixels
    same, files, _, _ = render(result, "ganspace", 0, 3, *[0] * settings.NUM_DIRECTIONS)
    assert same is result.image and files is None  # nothing moved: nothing re-rendered
    for bad in ([float("nan")], [3.5]):
        with pytest.raises(gr.Error):
            render(result, "sefa", 0, 3, *bad, *[0] * (settings.NUM_DIRECTIONS - 1))
    with pytest.raises(gr.Error, match="start before"):
        render(result, "sefa", 2, 2, *amounts)
    with pytest.raises(gr.Error, match="no current result"):
        render(None, "sefa", 0, 3, *amounts)


def test_explore_preview_draws_the_slider_edit_with_the_student_and_the_release_the_full_model(result):
    preview = app_explore.explore_preview_handler(fake_loader)
    amounts = [2.0] + [0] * (settings.NUM_DIRECTIONS - 1)
    frame, note = preview(result, "ganspace", *amounts)
    assert "Preview" in note and frame.size == result.image.size
    assert np.asarray(frame)[0, 0, 0] > np.asarray(result.image)[0, 0, 0]  # the edit shows while the slider moves
    full, _, edited, _ = app_explore.explore_render_handler(fake_loader)(result, "ganspace", 0, 3, *amounts)
    assert full.size == frame.size
    assert "fast" not in edited.state.settings and edited.state.settings["steps"] == result.state.settings["steps"]
    fast = app_explore.preview_state(edited.state)
    assert fast.settings["fast"] is True and "edit" not in fast.settings and fast.seed == result.state.seed
    assert np.array_equal(fast.z_T, edited.state.z_T) and np.array_equal(fast.style, edited.state.style)
    draft = app_explore.preview_state(edited.state, ("upscale",))  # no student: the full model, without the upscale
    assert draft.settings["draft"] is True and "fast" not in draft.settings
    assert draft.settings["steps"] == edited.state.settings["steps"]
    assert preview(None, "sefa", *amounts) == (gr.skip(), gr.skip())  # nothing to move yet
    frame, note = preview(result, "sefa", float("nan"), *amounts[1:])
    assert frame == gr.skip() and "Slider 0" in note  # a refused value says why, without an error box
    slow = FakePipeline(size=32)
    slow.CAPABILITIES = dataclasses.replace(slow.CAPABILITIES, fast=False)
    assert app_explore.explore_preview_handler(lambda: slow)(result, "sefa", *amounts) == (gr.skip(), gr.skip())


def test_state_json_round_trip_renders_the_same_pixels(result):
    text = json.dumps(common.state_dict(result.state))
    image, _, state, notes = app_explore.edit_api_handler(fake_loader)(text, "ganspace:0=5, sefa:1=-1", 0, 0)
    assert "clamped to 3" in notes and [e["amount"] for e in state["settings"]["edit"]["edits"]] == [3.0, -1.0]
    rebuilt = common.state_from_json(FAKE, json.dumps(state))
    assert np.array_equal(np.asarray(FAKE.render(rebuilt)[0][0]), np.asarray(image))


@pytest.mark.parametrize(
    "state, edits, words",
    [
        ("", "sefa:0=1", "Give the state JSON"),
        ("{", "sefa:0=1", "not valid JSON"),
        ('{"seed": 1}', "sefa:0=1", "pose, seed"),
        (None, "sefa:0=nan", "finite"),
        (None, "sefa:0=x", "not a number"),
        (None, "warp:0=1", "Unknown direction method"),
        ('{"pose": {"keypoints": [1]}, "seed": 1}', "sefa:0=1", "frame size"),
    ],
)
def test_edit_api_bad_input_is_one_sentence(result, state, edits, words):
    state = json.dumps(common.state_dict(result.state)) if state is None else state
    with pytest.raises(gr.Error) as info:
        app_explore.edit_api_handler(fake_loader)(state, edits, 0, 0)
    assert words in info.value.message, info.value.message


def test_refine_api_takes_a_state_json(result):
    text = json.dumps(common.state_dict(result.state))
    outs = list(app_refine.refine_api_handler(fake_loader)(text, "blue eyes", "", "style", 2, 1.0, 0.0))
    image, _, state, _ = outs[-1]
    assert image.size == (32, 32) and state["seed"] == 5 and state["style"] != common.state_dict(result.state)["style"]
    assert all(o[1] == gr.skip() for o in outs[:-1])


def test_clip_status_says_when_clip_is_missing(tmp_path):
    assert "No CLIP model" in app_refine.clip_status("weights", str(tmp_path / "none"))
    assert "Demo mode" in app_refine.clip_status("fake", None)
    assert app_refine.clip_status("weights", "ViT-B-32:laion2b_s34b_b79k") == ""


def test_refine_and_explore_with_tiny_real_models():
    """The real refine / edit / directions behind the same handlers (tiny random pipeline and CLIP)."""
    import torch

    from models.clip import TINY_MODEL_CFG, build_clip
    from tests.test_pipeline import tiny_pipeline

    torch.set_num_threads(1)
    pipe = tiny_pipeline()
    clip = build_clip(TINY_MODEL_CFG, seed=0).requires_grad_(False)
    *_, current = list(app_generate.generate_handler(lambda: pipe)(value(), 3, False, 2, "ddim", 2.0, 1))[-1]
    setup = app_explore.explore_setup_handler(lambda: pipe)(current, "sefa")
    assert "SeFa and GANSpace" in setup[0]
    amounts = [1.5] + [0] * (settings.NUM_DIRECTIONS - 1)
    image, *_ = app_explore.explore_render_handler(lambda: pipe)(current, "sefa", 0, 2, *amounts)
    assert not np.array_equal(np.asarray(image), np.asarray(current.image))
    # The API re-renders the same pixels from the state's JSON (z_T comes from the seed).
    text = json.dumps(common.state_dict(current.state))
    api_image, *_ = app_explore.edit_api_handler(lambda: pipe)(text, "sefa:0=1.5", 0, 0)
    assert np.array_equal(np.asarray(api_image), np.asarray(image))
    outs = list(app_refine.refine_handler(lambda: pipe, clip)(current, "pink hair", "", "style", 1, 1.0, 0.0))
    assert outs[-1][3].state.seed == 3 and outs[-1][1].size == current.image.size


# -- back ends with other signatures; output and logging --------------------------------------------
class ForkLike(FakePipeline):
    """ForkPipeline's check_inputs / prepare signatures (no guidance or style in prepare; the count is `n`)."""

    style_dim = 0

    def check_inputs(self, pose, seed, steps, guidance, sampler, style, eta, n, size):
        self.checked = {"steps": steps, "sampler": sampler, "n": n, "size": size}

    def prepare(self, pose, seed, steps=50, sampler="ddim", eta=0.0, size=None):
        return super().prepare(pose, seed, steps, 1.0, sampler, np.zeros(8, np.float32), eta, size)


class ControlNetLike(FakePipeline):
    """ControlNetBackend's signatures: prompt settings required by the check, defaulted by prepare."""

    style_dim = 0

    def check_inputs(self, pose, seed, steps, guidance, sampler, style, eta, n, size, prompt, negative_prompt,
                     controlnet_scale):  # fmt: skip
        self.checked = {"guidance": guidance, "prompt": prompt, "controlnet_scale": controlnet_scale, "n": n}

    def prepare(self, pose, seed, steps=20, guidance=7.5, sampler="dpmpp_2m", eta=0.0, size=None,
                prompt="an anime character", negative_prompt="", controlnet_scale=1.0):  # fmt: skip
        state = super().prepare(pose, seed, steps, guidance, sampler, None, eta, size)
        state.settings.update(prompt=prompt, negative_prompt=negative_prompt, controlnet_scale=controlnet_scale)
        return state


def state_json(**settings_) -> str:
    base = {"steps": 4, "guidance": 3.0, "sampler": "euler_a", "eta": 0.0, "size": 32}
    return json.dumps({"pose": value(), "seed": 9, "style": [], "settings": {**base, **settings_}})


def test_state_json_calls_each_back_end_by_keyword():
    """The positional call put guidance where the fork's prepare takes the sampler (and failed on ControlNet)."""
    fork = ForkLike(size=32)
    state = common.state_from_json(fork, state_json())
    assert fork.checked == {"steps": 4, "sampler": "euler_a", "n": 1, "size": 32}
    assert (state.seed, state.settings["steps"], state.settings["sampler"]) == (9, 4, "euler_a")
    sd = ControlNetLike(size=32)
    state = common.state_from_json(sd, state_json(prompt="pink hair"))
    assert sd.checked == {"guidance": 3.0, "prompt": "pink hair", "controlnet_scale": 1.0, "n": 1}
    assert state.settings["prompt"] == "pink hair" and state.settings["sampler"] == "euler_a"
    common.state_from_json(sd, state_json())  # no prompt in the state: the back end's default
    assert sd.checked["prompt"] == "an anime character"


def test_non_finite_output_is_an_error_not_a_success():
    import torch

    class NaNPipeline(FakePipeline):
        def render(self, state, callback=None, style_at=None):
            _, done = super().render(state, callback)
            done.z_0 = torch.full((1, 1, 4, 4), float("nan"))
            return [Image.new("RGB", (32, 32))], done

    with pytest.raises(gr.Error, match="not finite"):
        list(app_generate.generate_handler(lambda: NaNPipeline(size=32))(value(), 1, False, 2, "ddim", 2.0, 1))


def test_refusals_log_one_line_and_failures_name_no_class(caplog):
    caplog.set_level("INFO", logger="pose_studio.ui")
    with pytest.raises(gr.Error):
        run_generate(steps=0)
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and refused[0].exc_info is None and "\n" not in refused[0].getMessage()

    def broken(*a, **k):
        raise KeyError("/secret/server/path")

    with pytest.raises(gr.Error) as info:
        list(app_generate.generate_handler(lambda: broken)(value(), 1, False, 2, "ddim", 2.0, 1))
    assert "KeyError" not in info.value.message and "/secret" not in info.value.message


@pytest.mark.parametrize(
    "text, words",
    [("[" * 100_000 + "]" * 100_000, "nested more than"), ('{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', "")],
)
def test_deep_json_is_our_sentence(text, words):
    with pytest.raises(gr.Error) as info:
        app_pose.show_pose(text)
    assert words in info.value.message and "Recursion" not in info.value.message


def test_live_preview_draws_with_the_student_and_says_how():
    preview = app_pose.live_preview_handler(lambda: FakePipeline(size=32))
    image, note = preview(value(), True, 4)
    assert isinstance(image, Image.Image) and "fast student" in note
    assert preview(value(), False, 4) == (gr.skip(), "Live preview is off: Generate draws the character.")


def test_live_preview_without_a_student_uses_a_few_full_steps(monkeypatch):
    import dataclasses

    from ui import fake

    pipe = FakePipeline(size=32)
    pipe.CAPABILITIES = dataclasses.replace(fake.CAPABILITIES, fast=False)
    assert app_pose.preview_settings(pipe, 3) == {"seed": 3, "steps": settings.PREVIEW_STEPS}
    monkeypatch.setattr(settings, "PREVIEW_BEHIND_S", 0.0)
    _, note = app_pose.live_preview_handler(lambda: pipe)(value(), True, 3)
    assert f"{settings.PREVIEW_STEPS} steps of the full model" in note and "behind your edits" in note


@pytest.mark.parametrize(
    "pose_value, seed, words",
    [
        ({**common.default_value(), "keypoints": [[0.5, 0.5, 0]] * 17}, 0, "no visible keypoint"),
        (common.default_value(), -1, "preview seed"),
        ("{oops", 0, "JSON"),
    ],
)
def test_live_preview_refusals_are_a_note_not_an_error_box(pose_value, seed, words):
    image, note = app_pose.live_preview_handler(lambda: FakePipeline(size=32))(pose_value, True, seed)
    assert image == gr.skip() and words in note


def test_generate_fast_uses_the_student_or_says_why_not():
    run = app_generate.generate_handler(lambda: FakePipeline(size=32), api=True)
    *_, states = list(run("waving", 1, 2, "ddim", 2.0, 1, None, True))[-1]
    assert states[0]["settings"]["fast"] is True
    *_, states = list(run("waving", 1, 2, "ddim", 2.0, 1, None, False))[-1]
    assert "fast" not in states[0]["settings"]
    for fast, steps, words in ((True, 6, "1 to 4 steps"), ("maybe", 2, "fast must be true or false")):
        with pytest.raises(gr.Error) as info:
            list(run("waving", 1, steps, "ddim", 2.0, 1, None, fast))
        assert words in info.value.message
