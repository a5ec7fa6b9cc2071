"""The app's named endpoints through gradio_client, on a free loopback port, with a fake pipeline."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file

from models.pose import loads
from ui import handlers
from ui.fake import FakePipeline
from ui.server import build_demo, launch_kwargs

NOBODY = Path(__file__).resolve().parents[2] / "shared" / "photos" / "39_no_person_coffee.jpg"


def free_port() -> int:
    """A port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def client():
    demo = build_demo(lambda: FakePipeline(size=64), model_status="")
    demo.launch(
        server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, **launch_kwargs()
    )
    try:
        yield Client(demo.local_url, verbose=False)
    finally:
        demo.close()


def pose_text() -> str:
    return json.dumps(handlers.default_value())


def test_pose_from_json_text(client):
    pose, drawing = client.predict(None, pose_text(), api_name="/pose")
    assert loads(json.dumps(pose)).isclose(loads(pose_text()))
    assert Image.open(drawing).size == (384, 384)


def test_pose_from_other_format(client):
    fork = {
        name: [256.0, 256.0]
        for name in (
            "nose",
            "eye_left",
            "eye_right",
            "ear_left",
            "ear_right",
            "shoulder_left",
            "shoulder_right",
            "elbow_left",
            "elbow_right",
            "wrist_left",
            "wrist_right",
            "hip_left",
            "hip_right",
            "knee_left",
            "knee_right",
            "ankle_left",
            "ankle_right",
        )
    }
    pose, _ = client.predict(None, json.dumps(fork), api_name="/pose")
    assert pose["format"] == "coco17" and pose["width"] == 512


@pytest.mark.parametrize(
    "text, words",
    [
        ('{"keypoints": [1, 2', "not valid JSON"),
        ("", "Give a photo"),
        ("x" * 400, "limit"),
    ],
)
def test_pose_bad_text_is_one_sentence(client, text, words):
    with pytest.raises(Exception) as info:
        client.predict(None, text, api_name="/pose")
    assert words in str(info.value) and "Traceback" not in str(info.value)


def test_pose_not_an_image(client, tmp_path):
    bad = tmp_path / "photo.png"
    bad.write_bytes(b"this is not a picture")
    with pytest.raises(Exception) as info:
        client.predict(handle_file(str(bad)), "", api_name="/pose")
    assert "not an image" in str(info.value) or "cannot" in str(info.value)


def test_pose_huge_image_is_refused(client, tmp_path):
    big = tmp_path / "wide.png"
    Image.new("RGB", (5000, 40)).save(big)  # a small file, but too many pixels a side
    with pytest.raises(Exception) as info:
        client.predict(handle_file(str(big)), "", api_name="/pose")
    assert "5000 x 40" in str(info.value)


@pytest.mark.skipif(not NOBODY.exists(), reason=f"no photo at {NOBODY}")
def test_pose_photo_with_nobody(client):
    with pytest.raises(Exception) as info:
        client.predict(handle_file(str(NOBODY)), "", api_name="/pose")
    assert "person" in str(info.value).lower() and "Traceback" not in str(info.value)


def test_generate_streams_and_writes_png_with_settings(client):
    job = client.submit(pose_text(), 7, False, 4, "ddim", 2.0, 2, api_name="/generate")
    result = job.result()
    outputs = job.outputs()
    assert len(outputs) >= 2  # previews streamed before the results
    _, gallery, files, seed, states = result
    assert seed == 7 and len(gallery) == 2 and [s["seed"] for s in states] == [7, 8]
    pngs = [f for f in files if f.endswith(".png")]
    record = json.loads(Image.open(pngs[0]).info["pose_studio"])
    assert record["seed"] == 7 and record["steps"] == 4 and record["sampler"] == "ddim"
    settings_file = next(f for f in files if f.endswith(".json"))
    with open(settings_file) as f:
        request = json.load(f)
    assert request["num_images"] == 2 and request["pose"]["format"] == "coco17"


@pytest.mark.parametrize(
    "args",
    [
        (7, False, 0, "ddim", 2.0, 1),
        (7, False, 4, "ddim", 2.0, 99),
        (7, False, 4, "warp", 2.0, 1),
        (-1, False, 4, "ddim", 2.0, 1),
        (7, False, 4, "ddim", 500.0, 1),
        (7, False, 2.5, "ddim", 2.0, 1),
    ],
)
def test_generate_out_of_range(client, args):
    # Gradio's own component checks answer first ("Value 0 is less than minimum value 1."), ours after.
    with pytest.raises(Exception) as info:
        client.predict(pose_text(), *args, api_name="/generate")
    message = str(info.value)
    assert re.search(r"minimum|maximum|must be|not in the list|choices", message), message
    assert "Traceback" not in message


def test_generate_broken_pose_then_still_serving(client):
    with pytest.raises(Exception) as info:
        client.predict("{nope", 1, False, 2, "ddim", 2.0, 1, api_name="/generate")
    assert "not valid JSON" in str(info.value)
    *_, seed, _ = client.predict(pose_text(), 3, True, 2, "ddim", 2.0, 1, api_name="/generate")
    assert 0 <= seed < 2**31


def test_only_named_endpoints_are_public(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert names == {"/pose", "/generate", "/refine", "/edit"}


@pytest.fixture(scope="module")
def state_text(client) -> str:
    *_, states = client.predict(pose_text(), 11, False, 3, "ddim", 2.0, 1, api_name="/generate")
    return json.dumps(states[0])


def test_edit_rerenders_from_the_state_json(client, state_text):
    image, files, state, notes = client.predict(state_text, "ganspace:0=2 sefa:1=-4", 0, 0, api_name="/edit")
    assert [e["amount"] for e in state["settings"]["edit"]["edits"]] == [2.0, -3.0] and "clamped" in notes
    again, *_ = client.predict(state_text, "ganspace:0=2 sefa:1=-4", 0, 0, api_name="/edit")
    assert Image.open(image).tobytes() == Image.open(again).tobytes()  # deterministic: z_T comes from the seed
    record = json.loads(Image.open(next(f for f in files if f.endswith(".png"))).info["pose_studio"])
    assert record["seed"] == 11 and record["settings"]["edit"]["edits"][0]["label"] == "background red"


def test_refine_streams_and_returns_the_refined_state(client, state_text):
    job = client.submit(state_text, "pink hair | glasses:-0.5", "hat", "style", 3, 1.0, 0.0, api_name="/refine")
    _, files, state, notes = job.result()
    assert len(job.outputs()) >= 2 and state["seed"] == 11 and "Refined" in notes
    assert state["style"] != json.loads(state_text)["style"]
    assert any(f.endswith("refine.json") for f in files)


@pytest.mark.parametrize(
    "api, args, words",
    [
        ("/refine", ("x" * 10_000, "", "style", 3, 1.0, 0.0), "10000 characters"),
        ("/refine", ("pink hair:xx", "", "style", 3, 1.0, 0.0), "not a number"),
        ("/refine", ("pink hair:nan", "", "style", 3, 1.0, 0.0), "finite"),
        ("/refine", ("pink hair", "", "style", 3, 99.0, 0.0), "maximum"),
        ("/refine", ("pink hair", "", "style", 500, 1.0, 0.0), "maximum"),
        ("/edit", ("sefa:0=nan", 0, 0), "finite"),
        ("/edit", ("sefa:0=1", 2, 1), "start before"),
        ("/edit", ("sefa:0=1", 0, 99), "between 0 and 3"),
    ],
)
def test_refine_and_edit_bad_input_then_still_serving(client, state_text, api, args, words):
    with pytest.raises(Exception) as info:
        client.predict(state_text, *args, api_name=api)
    assert words in str(info.value) and "Traceback" not in str(info.value), str(info.value)


@pytest.mark.parametrize("api", ["/refine", "/edit"])
def test_no_state_is_one_sentence(client, api):
    args = ("pink hair", "", "style", 3, 1.0, 0.0) if api == "/refine" else ("sefa:0=1", 0, 0)
    with pytest.raises(Exception) as info:
        client.predict("", *args, api_name=api)
    assert "Give the state JSON" in str(info.value)
