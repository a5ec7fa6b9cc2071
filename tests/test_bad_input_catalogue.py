"""Every kind of bad input, on every channel that takes it (the UI's handlers, the HTTP API, the command line), is
refused with one sentence of ours: no traceback, no exception class, no server path, no Gradio words; the server
keeps serving. The catalogue is data: a kind is a row, its channels are columns (`test_the_catalogue_is_complete`
counts them). The fake pipeline stands in for the model, so this runs in seconds."""

from __future__ import annotations

import json
import math
import re

import gradio as gr
import pytest

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import handle_file

import app
from tests.test_ui_api import bad_files, client  # noqa: F401 -- the fake app's client fixture
from ui import app_explore, app_generate, app_pose, app_refine, common, settings
from ui.fake import FakePipeline

LEAKS = re.compile(r"Traceback|\b[A-Z]\w*(Error|Exception)\b|/tmp/|gradio/|preprocess|site-packages|File \"")
GOOD = {"pose": "waving", "seed": 1, "steps": 2, "sampler": "ddim", "guidance": 2.0, "num_images": 1}

# -- the catalogue ------------------------------------------------------------------------------------------------
# Generation settings: (overrides of GOOD, command-line arguments or None where argparse's own type check answers).
SETTINGS = {
    "steps 0": ({"steps": 0}, ["--steps", "0"]),
    "steps over the limit": ({"steps": settings.MAX_STEPS + 1}, ["--steps", str(settings.MAX_STEPS + 1)]),
    "steps a fraction": ({"steps": 2.5}, None),
    "steps not a number": ({"steps": math.nan}, None),
    "seed negative": ({"seed": -1}, ["--seed", "-1"]),
    "seed too large": ({"seed": 2**31}, ["--seed", str(2**31)]),
    "seed a fraction": ({"seed": 1.5}, None),
    "guidance negative": ({"guidance": -1.0}, ["--guidance", "-1"]),
    "guidance too large": ({"guidance": 21.0}, ["--guidance", "21"]),
    "guidance infinite": ({"guidance": math.inf}, ["--guidance", "inf"]),
    "guidance not a number": ({"guidance": math.nan}, ["--guidance", "nan"]),
    "no images": ({"num_images": 0}, ["--num-images", "0"]),
    "too many images": ({"num_images": settings.MAX_NUM_IMAGES + 1}, ["--num-images", "9"]),
    "steps x images over the cap": (
        {"steps": settings.MAX_STEPS, "num_images": settings.MAX_NUM_IMAGES},
        ["--steps", str(settings.MAX_STEPS), "--num-images", str(settings.MAX_NUM_IMAGES)],
    ),
    "unknown sampler": ({"sampler": "plms"}, ["--sampler", "plms"]),
    "empty sampler": ({"sampler": ""}, ["--sampler", ""]),
    "fast with too many steps": ({"steps": 6, "fast": True}, ["--fast", "--steps", "6"]),
}
# Poses, as keypoint JSON text or a preset name (the API's /generate and /pose, the UI, the command line).
POSES = {
    "broken JSON": "{oops",
    "empty": "",
    "unknown preset": "no such preset",
    "nested too deeply": "[" * 100_000 + "]" * 100_000,
    "16 points": json.dumps({"format": "coco17", "width": 64, "height": 64, "keypoints": [[0.5, 0.5, 1]] * 16}),
    "NaN coordinates": json.dumps({"width": 64, "height": 64, "keypoints": [[math.nan, 0.5, 1]] * 17}),
    "no visible point": json.dumps({"width": 64, "height": 64, "keypoints": [[0.5, 0.5, 0]] * 17}),
    "zero width": json.dumps({"width": 0, "height": 64, "keypoints": [[0.5, 0.5, 1]] * 17}),
    "over the length limit": " " * (settings.MAX_JSON_CHARS + 1) + "{}",
    "a bare number": "42",
    "a list of words": '["head", "arm"]',
}
POSE_TAB_TAKES = {"no visible point"}  # a pose to finish in the editor: only drawing it is refused
# Generation states, as the /refine and /edit endpoints take them back (changes of a good state).
STATES = {
    "empty": "",
    "broken JSON": "{",
    "not an object": "[1, 2]",
    "huge style": {"style": [1e30] * 8},
    "infinite style": {"style": ["Infinity"] * 8},
    "style of the wrong length": {"style": [0.1] * 3},
    "negative seed": {"seed": -5},
    "settings not an object": {"settings": "fast"},
}
# Prompts (the Refine tab and /refine; the command line's --prompt).
PROMPTS = {
    "too long": "x" * 10_000,
    "a weight that is no number": "pink hair:xx",
    "a NaN weight": "pink hair:nan",
    "only weights": ":1 | :2",
    "only punctuation": "!!! ,,, ???",
    "a huge weight": "pink hair:1e9",
}
# Style-direction edits (/edit; the command line's --edit).
EDITS = {
    "a NaN amount": "sefa:0=nan",
    "a direction past the tenth": "sefa:99=1",
    "an unknown method": "warp:0=1",
}


# -- channels ------------------------------------------------------------------------------------------------------
def refused(call) -> str:
    """The message of the refusal `call()` must give (gr.Error, the API's AppError, or the CLI's JSON line)."""
    try:
        out = call()
    except gr.Error as err:
        return err.message
    except Exception as err:  # noqa: BLE001 -- the API client's AppError
        return str(err)
    if isinstance(out, dict) and "error" in out:
        return out["error"]
    raise AssertionError(f"accepted: {out!r:.200}")


def assert_ours(message: str, where: str) -> None:
    """One sentence of ours: not empty, no leak of internals."""
    assert message.strip(), where
    assert not LEAKS.search(message), (where, message)
    assert len(message) < 400, (where, message)


def ui_generate(values: dict, style_image=None):
    run = app_generate.generate_handler(lambda: FakePipeline(size=32))
    args = {**GOOD, **values}
    pose = common.pose_from_text(args.pop("pose")) if args["pose"] else args.pop("pose")
    fast = args.pop("fast", False)
    return list(run(pose, randomize=False, style_image=style_image, **args) if not fast else
                app_generate.generate_handler(lambda: FakePipeline(size=32), api=True)(
                    GOOD["pose"], args["seed"], args["steps"], args["sampler"], args["guidance"], args["num_images"],
                    None, True))  # fmt: skip


def api_generate(client, values: dict, style_image=None):  # noqa: F811
    args = {**GOOD, **values}
    return client.predict(args["pose"], args["seed"], args["steps"], args["sampler"], args["guidance"],
                          args["num_images"], style_image, args.get("fast", False), api_name="/generate")  # fmt: skip


def cli(monkeypatch, capsys, tmp_path, *argv: str) -> dict:
    from models import backends

    monkeypatch.setattr(backends, "load_backend", lambda *a, **k: FakePipeline(size=32))
    monkeypatch.setattr(backends, "model_kind", lambda model: "ours")
    code = app.main(["generate", "--out", str(tmp_path / "a.png"), *argv])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 1, line
    return line


# -- the tests -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", SETTINGS)
def test_settings(kind, client, monkeypatch, capsys, tmp_path):  # noqa: F811
    values, argv = SETTINGS[kind]
    assert_ours(refused(lambda: ui_generate(values)), f"ui {kind}")
    assert_ours(refused(lambda: api_generate(client, values)), f"api {kind}")
    if argv is not None:
        assert_ours(refused(lambda: cli(monkeypatch, capsys, tmp_path, "--pose", "waving", *argv)), f"cli {kind}")


@pytest.mark.parametrize("kind", POSES)
def test_poses(kind, client, monkeypatch, capsys, tmp_path):  # noqa: F811
    text = POSES[kind]
    assert_ours(refused(lambda: common.pose_from_text(text) and ui_generate({"pose": text})), f"ui {kind}")
    assert_ours(refused(lambda: api_generate(client, {"pose": text})), f"api generate {kind}")
    if kind not in POSE_TAB_TAKES:
        assert_ours(refused(lambda: client.predict(None, text, api_name="/pose")), f"api pose {kind}")
    if text.strip() and len(text) < 10_000:  # a command-line argument is a preset name, a file or JSON text
        assert_ours(refused(lambda: cli(monkeypatch, capsys, tmp_path, "--pose", text)), f"cli {kind}")


@pytest.mark.parametrize("kind", ["empty.png", "text.png", "header.png", "truncated.png", "drawing.svg", "wide.png"])
def test_images(kind, client, monkeypatch, capsys, tmp_path):  # noqa: F811
    path, words = bad_files(tmp_path)[kind]
    assert_ours(refused(lambda: app_pose.extract_from_photo(str(path), common.default_value())), f"ui photo {kind}")
    assert_ours(refused(lambda: ui_generate({}, style_image=str(path))), f"ui look {kind}")
    message = refused(lambda: client.predict(handle_file(str(path)), "", api_name="/pose"))
    assert_ours(message, f"api pose {kind}")
    assert words in message, (kind, message)  # the sentence for that kind of file, as on every channel
    assert_ours(refused(lambda: api_generate(client, {}, handle_file(str(path)))), f"api look {kind}")
    line = cli(monkeypatch, capsys, tmp_path, "--pose", "waving", "--style-image", str(path))
    assert_ours(line["error"].replace(str(path), "IMG"), f"cli look {kind}")  # the user's own path may be named


def test_a_picture_with_no_character_for_the_look(client, monkeypatch, capsys, tmp_path):  # noqa: F811
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.new("RGB", (64, 64), "white").save(blank)
    for where, call in (
        ("ui", lambda: ui_generate({}, style_image=str(blank))),
        ("api", lambda: api_generate(client, {}, handle_file(str(blank)))),
        ("cli", lambda: cli(monkeypatch, capsys, tmp_path, "--pose", "waving", "--style-image", str(blank))),
    ):
        message = refused(call)
        assert_ours(message, where)
        assert "No character was found" in message


@pytest.fixture(scope="module")
def state_text(client) -> str:  # noqa: F811
    *_, states = client.predict("waving", 11, 3, "ddim", 2.0, 1, None, False, api_name="/generate")
    return json.dumps(states[0])


def changed_state(state_text: str, change) -> str:
    return change if isinstance(change, str) else json.dumps({**json.loads(state_text), **change})


@pytest.mark.parametrize("kind", STATES)
def test_states(kind, client, state_text):  # noqa: F811
    text = changed_state(state_text, STATES[kind])
    refine = ("pink hair", "", "style", 3, 1.0, 0.0)
    assert_ours(refused(lambda: client.predict(text, *refine, api_name="/refine")), f"api refine {kind}")
    assert_ours(refused(lambda: client.predict(text, "sefa:0=1", 0, 0, api_name="/edit")), f"api edit {kind}")
    ui = app_refine.refine_api_handler(lambda: FakePipeline(size=32))
    assert_ours(refused(lambda: list(ui(text, *refine))), f"ui refine {kind}")


@pytest.mark.parametrize("kind", PROMPTS)
def test_prompts(kind, client, state_text, monkeypatch, capsys, tmp_path):  # noqa: F811
    prompt = PROMPTS[kind]
    args = (prompt, "", "style", 3, 1.0, 0.0)
    assert_ours(refused(lambda: client.predict(state_text, *args, api_name="/refine")), f"api {kind}")
    result = common.Result(None, common.state_from_json(FakePipeline(size=32), state_text))
    ui = app_refine.refine_handler(lambda: FakePipeline(size=32))
    assert_ours(refused(lambda: list(ui(result, *args))), f"ui {kind}")
    line = cli(monkeypatch, capsys, tmp_path, "--pose", "waving", "--prompt", prompt, "--refine-mode", "style")
    assert_ours(line["error"], f"cli {kind}")


@pytest.mark.parametrize("kind", EDITS)
def test_edits(kind, client, state_text, monkeypatch, capsys, tmp_path):  # noqa: F811
    edit = EDITS[kind]
    assert_ours(refused(lambda: client.predict(state_text, edit, 0, 0, api_name="/edit")), f"api {kind}")
    ui = app_explore.edit_api_handler(lambda: FakePipeline(size=32))
    assert_ours(refused(lambda: ui(state_text, edit, 0, 0)), f"ui {kind}")
    assert_ours(cli(monkeypatch, capsys, tmp_path, "--pose", "waving", "--edit", edit)["error"], f"cli {kind}")


def test_the_catalogue_is_complete_and_the_server_still_serves(client):  # noqa: F811
    """At least 90 (kind, channel) pairs, as the issue "Serving many people" asks; then a good call works."""
    pairs = sum(2 + (argv is not None) for _, argv in SETTINGS.values())
    pairs += sum(3 - (k in POSE_TAB_TAKES) + (bool(t.strip()) and len(t) < 10_000) for k, t in POSES.items())
    pairs += 6 * 5 + 3 + 3 * len(STATES) + 3 * len(PROMPTS) + 3 * len(EDITS)
    assert pairs >= 90, pairs
    *_, states = client.predict("waving", 1, 2, "ddim", 2.0, 1, None, False, api_name="/generate")
    assert states[0]["seed"] == 1
