"""Files the app serves (ui.settings): one new, complete file per request, never rewritten, swept only when old."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ui import app_generate, app_pose, common, settings
from ui.fake import FakePipeline

FAKE = FakePipeline(size=48)


def run_threads(fn, n: int) -> list:
    """`fn(i)` in n threads released at once; their results in order (an exception fails the test)."""
    barrier = threading.Barrier(n)
    results: list = [None] * n
    errors: list = []

    def work(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except BaseException as err:  # noqa: BLE001 - re-raised in the test's thread below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def png_pixels(path: str) -> bytes:
    """The decoded pixels of a PNG; a truncated or half-written file fails here (CRC / missing data)."""
    with Image.open(path) as im:
        im.load()
        return im.tobytes()


def test_concurrent_generate_calls_get_their_own_complete_files():
    """Eight threads ask for the same picture (same pose, seed, settings) at once, as twenty users of one
    preset do: every file handed out is its own path, complete, and the same picture."""
    run = settings.served(app_generate.generate_handler(lambda: FAKE, api=True))
    pose = json.dumps(common.default_value())

    def call(_: int) -> tuple:
        streamed = list(run(pose, 3, 2, "ddim", 2.0, 2))
        return streamed, streamed[-1]

    results = run_threads(call, 8)
    per_request, pictures = [], []
    for streamed, (preview, gallery, downloads, seed, states) in results:
        assert seed == 3 and [s["seed"] for s in states] == [3, 4]
        previews = [item[0] for item in streamed[:-1]]  # the last streamed preview is `preview` itself
        per_request.append({preview, *previews, *(path for path, _ in gallery), *downloads})
        pictures.append([png_pixels(path) for path, _ in gallery])
    files = set().union(*per_request)
    assert len(files) == sum(map(len, per_request))  # no file is shared between two requests
    assert all(len(r) == 4 + 2 + 3 for r in per_request)  # 4 previews, 2 shown, 2 PNGs + 1 JSON to download
    assert all(isinstance(f, str) and Path(f).is_file() for f in files)
    assert all(p == pictures[0] for p in pictures)  # the same picture, each in a file of its own
    for f in files:
        if f.endswith(".png"):
            png_pixels(f)
        else:
            assert json.loads(Path(f).read_text())["seed"] == 3
    assert not list(settings.output_folder().glob("*/.*.part"))  # every write was renamed into place


def test_concurrent_pose_drawings_are_distinct_files():
    """The `/pose` endpoint's drawing: identical for every caller, yet one file each, all intact."""
    run = settings.served(app_pose.pose_api)
    paths = [drawing for _, drawing in run_threads(lambda i: run(None, "standing"), 12)]
    assert len(set(paths)) == 12
    assert len({png_pixels(p) for p in paths}) == 1


def test_streamed_rows_write_each_preview_once():
    """A growing row of previews re-yields earlier images: each keeps its one file."""
    run = settings.served(app_generate.generate_handler(lambda: FAKE))
    outs = list(run(common.default_value(), 1, False, 3, "ddim", 2.0, 1))
    rows = [o[0] for o in outs[:-1]]
    assert rows[1][0] == rows[0][0] and rows[2][:2] == rows[1][:2]  # (path, caption) kept across yields
    assert isinstance(outs[-1][4][0], common.Result)  # states are not touched


def test_files_are_swept_only_when_old():
    fresh = settings.save_text("{}", "fresh")
    old = settings.save_text("{}", "old")
    kept = settings.save_text("{}", "kept", keep=True)
    hour_ago = time.time() - 3700
    os.utime(old, (hour_ago, hour_ago))
    os.utime(kept, (hour_ago, hour_ago))
    settings.sweep(max_age=3600)
    assert Path(fresh).is_file() and not Path(old).exists() and Path(kept).is_file()


def test_publish_replaces_images_everywhere():
    image = Image.fromarray(np.zeros((8, 8, 3), np.uint8))
    value = (image, [(image, "a")], {"__type__": "update", "value": image}, "text", None)
    out = settings.publish(value)
    assert out[0] == out[1][0][0] == out[2]["value"] and out[3:] == ("text", None)
    assert Path(out[0]).parent.parent == settings.output_folder()
