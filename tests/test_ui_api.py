"""The app's named endpoints through gradio_client, on a free loopback port, with a fake pipeline."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file

from models.pose import loads
from ui import common
from ui.fake import FakePipeline
from ui.server import build_demo, launch_local

NOBODY = Path(__file__).resolve().parents[2] / "shared" / "photos" / "39_no_person_coffee.jpg"


@pytest.fixture(scope="module")
def client():
    demo = launch_local(build_demo(lambda: FakePipeline(size=64), model_status=""))
    try:
        yield Client(demo.local_url, verbose=False)
    finally:
        demo.close()


def pose_text() -> str:
    return json.dumps(common.default_value())


def test_pose_from_json_text(client):
    pose, drawing = client.predict(None, pose_text(), api_name="/pose")
    assert loads(json.dumps(pose)).isclose(loads(pose_text()))
    assert Image.open(drawing).size == (384, 384)


def test_pose_in_every_file_format_reads_back(client):
    want = loads(pose_text())
    for fmt in ("openpose", "coco"):
        pose, _ = client.predict(None, pose_text(), fmt, api_name="/pose")
        assert loads(json.dumps(pose)).isclose(want, atol=1e-4), fmt
    with pytest.raises(Exception, match="Unknown pose file format 'bvh'"):
        client.predict(None, pose_text(), "bvh", api_name="/pose")


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


def bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """Files that are not photos we take, each with words our sentence for it holds."""
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(png, "PNG")
    files = {
        "empty.png": (b"", "empty"),
        "text.png": (b"this is not a picture", "not an image"),
        "header.png": (png.getvalue()[:30], "not an image we can read"),  # a truncated header
        "truncated.png": (png.getvalue()[: len(png.getvalue()) // 2], "truncated or damaged"),
        "drawing.svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', "not an image"),
    }
    out = {}
    for name, (data, words) in files.items():
        (folder / name).write_bytes(data)
        out[name] = (folder / name, words)
    Image.new("RGB", (5000, 40)).save(folder / "wide.png")  # a small file, but too many pixels a side
    out["wide.png"] = (folder / "wide.png", "5000 x 40 pixels; the largest we take is")
    Image.new("L", (12000, 12000)).save(folder / "bomb.png")  # 144 megapixels in a few hundred KB
    out["bomb.png"] = (folder / "bomb.png", "12000 x 12000 pixels; the largest we take is")
    return out


def test_bad_images_get_our_sentence_then_still_serving(client, tmp_path):
    """No Gradio words ("Could not preprocess"), no server path, no exception class: our sentence each."""
    for name, (path, words) in bad_files(tmp_path).items():
        started = time.perf_counter()
        with pytest.raises(Exception) as info:
            client.predict(handle_file(str(path)), "", api_name="/pose")
        message = str(info.value)
        assert words in message, (name, message)
        for leak in ("preprocess", "gradio/", "/tmp", "Error(", "UnidentifiedImageError", "Traceback"):
            assert leak not in message, (name, message)
        assert time.perf_counter() - started < 5, name  # the bomb is refused from its header
    pose, _ = client.predict(None, "standing", api_name="/pose")
    assert pose["format"] == "coco17"


def test_sixteen_bit_photo_reaches_the_finder_as_the_cli_reads_it(client, tmp_path, monkeypatch):
    """A 16-bit PNG arrives unconverted and is scaled as models.pose_input scales it (not re-encoded near white)."""
    from models import pose_input
    from models.pose_input import load_image

    arr = np.zeros((96, 64), np.uint16)
    arr[:, 32:] = 40000
    path = tmp_path / "sixteen.png"
    Image.fromarray(arr).save(path)
    seen = []

    def finder(image):
        seen.append(np.asarray(image))
        return common.default_pose()

    monkeypatch.setattr(pose_input, "extract_pose", finder)
    pose, _ = client.predict(handle_file(str(path)), "", api_name="/pose")
    assert (pose["width"], pose["height"]) == (64, 96)
    assert np.array_equal(seen[0], np.asarray(load_image(path)))  # what the command line reads
    assert seen[0][:, :32].max() == 0 and seen[0][:, 32:].min() == round(40000 / 257)


def test_concurrent_downloads_are_complete(client):
    """Many callers of the same preset at once (the same drawing, byte for byte): every download is whole."""
    jobs = [client.submit(None, "standing", api_name="/pose") for _ in range(12)]
    drawings = [job.result()[1] for job in jobs]
    pixels = set()
    for path in drawings:
        with Image.open(path) as im:
            im.load()  # a short transfer fails here
            pixels.add(im.tobytes())
    assert len(pixels) == 1


@pytest.mark.skipif(not NOBODY.exists(), reason=f"no photo at {NOBODY}")
def test_pose_photo_with_nobody(client):
    with pytest.raises(Exception) as info:
        client.predict(handle_file(str(NOBODY)), "", api_name="/pose")
    assert "person" in str(info.value).lower() and "Traceback" not in str(info.value)


def test_generate_parameters_are_named_for_a_stateless_call(client):
    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/generate"]
    names = [p["parameter_name"] for p in info["parameters"]]
    assert names == ["pose", "seed", "steps", "sampler", "guidance", "num_images", "style_image", "fast"]


def test_generate_takes_the_look_from_a_picture(client, tmp_path):
    look = tmp_path / "look.png"
    picture = Image.new("RGB", (64, 64), (200, 20, 110))  # the fake reads s[:3] off the corner colour
    picture.paste((0, 0, 0), (20, 20, 40, 40))
    picture.save(look)
    *_, states = client.predict("waving", 1, 2, "ddim", 2.0, 2, handle_file(str(look)), api_name="/generate")
    expected = [(200 - 110) / 45, (20 - 110) / 45, 0.0]
    for state in states:
        np.testing.assert_allclose(state["style"][:3], expected, atol=1e-5)
    blank = tmp_path / "blank.png"
    Image.new("RGB", (64, 64), "white").save(blank)
    with pytest.raises(Exception) as info:
        client.predict("waving", 1, 2, "ddim", 2.0, 1, handle_file(str(blank)), api_name="/generate")
    assert "No character was found" in str(info.value) and str(tmp_path) not in str(info.value)


def test_generate_from_a_preset_name_keeps_the_seed(client):
    """A fresh client, no /pose call first, no session: a preset name and a seed give that seed's image."""
    _, gallery, _, seed, states = client.predict("waving", 123, 2, "ddim", 2.0, 1, api_name="/generate")
    assert seed == 123 and states[0]["seed"] == 123 and len(gallery) == 1
    again = client.predict(
        pose="waving", seed=123, steps=2, sampler="ddim", guidance=2.0, num_images=1, api_name="/generate"
    )
    assert Image.open(again[1][0]["image"]).tobytes() == Image.open(gallery[0]["image"]).tobytes()


def test_generate_streams_and_writes_png_with_settings(client):
    job = client.submit(pose_text(), 7, 4, "ddim", 2.0, 2, api_name="/generate")
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
    "args, words",
    [
        ((7, 0, "ddim", 2.0, 1), "Steps must be a whole number between 1 and"),
        ((7, 4, "ddim", 2.0, 99), "The number of images must be a whole number between 1 and"),
        ((7, 4, "warp", 2.0, 1), "The sampler must be one of"),
        ((-1, 4, "ddim", 2.0, 1), "The seed must be a whole number between 0 and"),
        ((7, 4, "ddim", 500.0, 1), "Guidance must be a number between 0 and 20"),
        ((7, 2.5, "ddim", 2.0, 1), "Steps must be a whole number"),
    ],
)
def test_generate_out_of_range_names_the_field(client, args, words):
    """Our sentence with the field's name, not Gradio's ("Value 0 is less than minimum value 1.")."""
    with pytest.raises(Exception) as info:
        client.predict(pose_text(), *args, api_name="/generate")
    message = str(info.value)
    assert words in message and "minimum value" not in message and "Traceback" not in message, message


@pytest.mark.parametrize(
    "pose, words",
    [
        ("{nope", "not valid JSON"),
        ("no such preset", "preset"),
        ("[" * 100_000 + "]" * 100_000, "nested more than"),
        ("", "Give a pose"),
    ],
)
def test_generate_bad_pose_then_still_serving(client, pose, words):
    with pytest.raises(Exception) as info:
        client.predict(pose, 1, 2, "ddim", 2.0, 1, api_name="/generate")
    assert words in str(info.value) and "RecursionError" not in str(info.value), str(info.value)
    *_, seed, _ = client.predict(pose_text(), 3, 2, "ddim", 2.0, 1, api_name="/generate")
    assert seed == 3


def test_only_named_endpoints_are_public(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert names == {"/pose", "/generate", "/refine", "/edit"}


@pytest.fixture(scope="module")
def state_text(client) -> str:
    *_, states = client.predict(pose_text(), 11, 3, "ddim", 2.0, 1, api_name="/generate")
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
        ("/refine", ("pink hair", "", "style", 3, 99.0, 0.0), "The strength must be a number between"),
        ("/refine", ("pink hair", "", "style", 500, 1.0, 0.0), "Refine steps must be a whole number between 1 and"),
        ("/refine", ("pink hair", "", "warp", 3, 1.0, 0.0), "The refine mode must be one of"),
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
@pytest.mark.parametrize(
    "change, words",
    [
        ({"style": [1e30] * 8}, "style numbers must lie between"),
        ({"style": [float("inf")] * 8}, "finite"),
        ({"pose": {"keypoints": json.loads("[" * 40 + "0" + "]" * 40)}}, "nested more than"),
    ],
)
def test_absurd_state_is_refused(client, state_text, api, change, words):
    """A style of 1e30 drew an all-black "success"; a state nested past the limit broke the parser."""
    args = ("pink hair", "", "style", 3, 1.0, 0.0) if api == "/refine" else ("sefa:0=1", 0, 0)
    state = json.dumps({**json.loads(state_text), **change}, allow_nan=True)
    with pytest.raises(Exception) as info:
        client.predict(state, *args, api_name=api)
    assert words in str(info.value), str(info.value)


@pytest.mark.parametrize("api", ["/refine", "/edit"])
def test_no_state_is_one_sentence(client, api):
    args = ("pink hair", "", "style", 3, 1.0, 0.0) if api == "/refine" else ("sefa:0=1", 0, 0)
    with pytest.raises(Exception) as info:
        client.predict("", *args, api_name=api)
    assert "Give the state JSON" in str(info.value)


def test_readme_api_examples_run(client):
    """The README's "API" section, run as written against this server (its URL swapped in)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("\n## API\n", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(code.replace("http://127.0.0.1:7860/", client.src), scope)  # noqa: S102 - our own README
    assert scope["seed"] == 3 and [s["seed"] for s in scope["states"]] == [3, 4]
    assert Image.open(scope["image_path"]).size == (64, 64)
    assert json.loads(Image.open(scope["png_path"]).info["pose_studio"])["seed"] == 3
    assert scope["edited_state"]["settings"]["edit"]["edits"][0]["method"] == "sefa"
    assert scope["refined_state"]["seed"] == 3 and "Refined" in scope["notes"]
