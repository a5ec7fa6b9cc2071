"""The app in headless Chromium (Debian's /usr/bin/chromium through Playwright), fake pipeline.

python -m pytest tests/test_browser.py
python tests/test_browser.py --screenshots docs/screenshots --model weights [--clip SPEC]   # the README's pictures
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import pytest

CHROMIUM = os.getenv("CHROMIUM", "/usr/bin/chromium")
PHOTO = Path(os.getenv("POSE_STUDIO_PHOTOS", "/work/shared/photos")) / "10_skier_standing.jpg"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}")


def launch_app(model: str | None = None, clip: str | None = None):
    """The whole app on a free loopback port, with the fake pipeline or (for screenshots) a real model folder."""
    from ui.fake import FakePipeline
    from ui.server import LazyPipeline, build_demo, launch_local

    loader = LazyPipeline(model) if model else (lambda: FakePipeline(size=128))
    return launch_local(build_demo(loader, model_status="", clip=clip, clip_status=None if model else ""))


@pytest.fixture(scope="module")
def page():
    sync_api = pytest.importorskip("playwright.sync_api")
    import models.backend  # noqa: F401 - torch, imported now rather than inside the first generation's wait

    demo = launch_app()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(60_000)  # generous: the CPU is shared with training jobs
        pg.goto(demo.local_url)
        pg.wait_for_selector("#skeleton-editor circle.pe-pt", timeout=120_000)
        yield pg
        browser.close()
    demo.close()


def pose_json(page) -> dict:
    """The JSON panel's text, parsed."""
    text = page.locator("#pose-json .cm-content").inner_text()
    return json.loads(text)


def drag(page, index: int, dx: float, dy: float) -> None:
    box = page.locator(f"#skeleton-editor circle[data-i='{index}']").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx / 2, y + dy / 2, steps=4)
    page.mouse.move(x + dx, y + dy, steps=4)
    page.mouse.up()


def test_drag_a_joint_changes_the_pose_json(page):
    before = pose_json(page)["keypoints"][9]
    drag(page, 9, 60, -80)  # the left wrist, up and out
    page.wait_for_function(
        "(old) => { const t = document.querySelector('#pose-json .cm-content'); "
        "return t && JSON.parse(t.innerText).keypoints[9][0] !== old; }",
        arg=before[0],
    )
    after = pose_json(page)["keypoints"][9]
    assert after[0] > before[0] and after[1] < before[1]


def test_a_drag_redraws_the_live_preview(page):
    note = "() => { const n = document.querySelector('#live-note'); return n && n.innerText.includes('Drawn in'); }"
    drag(page, 10, -40, -60)  # the right wrist
    page.wait_for_function(note, timeout=30_000)
    page.wait_for_function("() => document.querySelector('#live-preview img') !== null", timeout=30_000)
    assert "fast student" in page.locator("#live-note").inner_text()


def test_the_preview_follows_a_point_while_it_is_still_held(page):
    src = "() => { const i = document.querySelector('#live-preview img'); return i ? i.src : ''; }"
    page.wait_for_function("() => document.querySelector('#live-preview img') !== null", timeout=30_000)
    before = page.evaluate(src)
    box = page.locator("#skeleton-editor circle[data-i='9']").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    for k in range(1, 13):  # a slow drag: more than the editor's DRAG_EVERY_MS between moves
        page.mouse.move(x + 4 * k, y - 5 * k)
        page.wait_for_timeout(60)
    page.wait_for_function(f"(old) => ({src})() !== old", arg=before, timeout=30_000)  # a frame mid-drag
    page.mouse.up()


def test_double_click_hides_a_point_and_undo_brings_it_back(page):
    page.locator("#skeleton-editor circle[data-i='0']").dblclick()
    page.wait_for_function(
        "() => JSON.parse(document.querySelector('#pose-json .cm-content').innerText).keypoints[0][2] === 0"
    )
    page.locator("#skeleton-editor .pe-undo").click()
    page.wait_for_function(
        "() => JSON.parse(document.querySelector('#pose-json .cm-content').innerText).keypoints[0][2] === 1"
    )


def keypoint(page, i: int) -> list:
    return pose_json(page)["keypoints"][i]


def test_mirror_then_undo_restores_the_pose(page):
    # Compare the keypoints as the page writes them (JSON.stringify), so a change is a change of the pose.
    js_keypoints = (
        "() => JSON.stringify(JSON.parse(document.querySelector('#pose-json .cm-content').innerText).keypoints)"
    )
    before_text = page.evaluate(js_keypoints)
    before = json.loads(before_text)
    page.get_by_role("button", name="Mirror").click()
    page.wait_for_function(f"(old) => ({js_keypoints})() !== old", arg=before_text)
    after = pose_json(page)["keypoints"]
    assert abs(after[10][0] - (1 - before[9][0])) < 1e-3  # the left wrist became the right one, mirrored
    page.locator("#skeleton-editor .pe-undo").click()  # Undo also steps back over Python's changes
    page.wait_for_function(f"(old) => ({js_keypoints})() === old", arg=before_text)


@contextlib.contextmanager
def generated(page, tab: str | None = None):
    """Generate one image in the Generate tab (it becomes the current result), open `tab`, and go back to the Pose
    tab afterwards, whatever happened, so the next test starts where the page opens."""
    try:
        page.get_by_role("tab", name="Generate").click()
        page.locator("#generate-btn").click()
        page.wait_for_selector("#results img", timeout=180_000)
        page.wait_for_selector("#downloads a")
        if tab:
            page.get_by_role("tab", name=tab).click()
        yield
    finally:
        page.get_by_role("tab", name="Pose").click()


def test_generate_shows_an_image(page):
    with generated(page):
        assert page.locator("#results img").count() >= 1


def test_refine_shows_before_and_after(page):
    with generated(page, "Refine"):
        page.wait_for_selector("#before img")  # the current result followed the generation
        page.locator("#refine-prompt textarea").fill("pink hair | glasses:-0.5")
        page.locator("#refine-btn").click()
        page.wait_for_selector("#after img")
        page.wait_for_selector("#refine-downloads a")
        assert page.locator("#refine-steps img").count() >= 1  # the optimisation steps streamed
        page.locator("#refine-prompt textarea").fill("pink hair:xx")  # a bad weight: one sentence, no traceback
        page.locator("#refine-btn").click()
        page.get_by_text("is not a number").first.wait_for()


def test_explore_slider_rerenders(page):
    with generated(page, "Explore"):
        page.get_by_text("0: background red").first.wait_for()  # the labels of the fake's SeFa directions
        number = page.locator("#direction-0 input[type=number]")
        number.fill("2")
        number.press("Tab")  # leaving the box is a release: one re-render
        page.wait_for_selector("#explore-downloads a")
        page.locator("#explore-reset").click()
        page.wait_for_selector("#explore-downloads a", state="detached")
        assert number.input_value() == "0"
        # A drag: the student's frames while the slider moves, the full model's image when it is let go.
        box = page.locator("#direction-1 input[type=range]").bounding_box()
        y = box["y"] + box["height"] / 2
        page.mouse.move(box["x"] + box["width"] / 2, y)
        page.mouse.down()
        for k in range(1, 6):
            page.mouse.move(box["x"] + box["width"] * (0.5 + 0.06 * k), y, steps=2)
        page.get_by_text("the full picture is drawn when you let go").first.wait_for()
        page.mouse.up()
        page.wait_for_selector("#explore-downloads a")


@pytest.mark.skipif(not PHOTO.exists(), reason=f"no photo at {PHOTO}")
def test_upload_a_photo_shows_the_skeleton(page):
    page.locator("input[type=file]").first.set_input_files(str(PHOTO))
    page.wait_for_selector("#skeleton-editor svg image", timeout=120_000)  # the photo behind the editor
    from PIL import Image

    width, height = Image.open(PHOTO).size
    # The JSON panel follows the editor's change event, which may land after the photo shows.
    page.wait_for_function(
        "([w, h]) => { const j = JSON.parse(document.querySelector('#pose-json .cm-content').innerText);"
        " return j.width === w && j.height === h; }",
        arg=[width, height],
    )
    pose = pose_json(page)
    assert (pose["width"], pose["height"]) == (width, height)


def screenshots(folder: Path, model: str | None = None, clip: str | None = None) -> None:
    """pose.png, generate.png, refine.png and explore.png of the app (fake pipeline unless `model` names a folder)."""
    from playwright.sync_api import sync_playwright

    folder.mkdir(parents=True, exist_ok=True)
    demo = launch_app(model, clip)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            pg = browser.new_page(viewport={"width": 1400, "height": 950})
            pg.set_default_timeout(180_000)
            pg.goto(demo.local_url)
            pg.wait_for_selector("#skeleton-editor circle.pe-pt")
            if PHOTO.exists():
                pg.locator("input[type=file]").first.set_input_files(str(PHOTO))
                pg.wait_for_selector("#skeleton-editor svg image")
            pg.wait_for_function(  # the live preview of the pose the photo gave (the first one loads the model)
                "() => (document.querySelector('#live-note') || {}).innerText?.includes('Drawn in')"
            )
            pg.wait_for_timeout(1500)
            pg.screenshot(path=str(folder / "pose.png"), full_page=True)
            pg.get_by_role("tab", name="Generate").click()
            pg.locator("#generate-btn").click()
            pg.wait_for_selector("#results img")
            pg.wait_for_selector("#downloads a")
            pg.wait_for_timeout(1000)
            pg.screenshot(path=str(folder / "generate.png"), full_page=True)
            # Refine: without a CLIP the tab says so, and the picture shows that.
            pg.get_by_role("tab", name="Refine").click()
            pg.wait_for_selector("#before img")
            pg.locator("#refine-prompt textarea").fill("pink hair | sailor uniform")
            pg.locator("#refine-btn").click()
            pg.wait_for_selector("#after img, .toast-body", timeout=600_000)
            pg.wait_for_timeout(1000)
            pg.screenshot(path=str(folder / "refine.png"), full_page=True)
            # Explore: move the first two directions.
            pg.get_by_role("tab", name="Explore").click()
            pg.wait_for_selector("#direction-0 input[type=number]")
            pg.wait_for_function("() => !document.querySelector('#direction-0').innerText.includes('direction 0')")
            for i, amount in ((0, "2"), (1, "-1.5")):
                box = pg.locator(f"#direction-{i} input[type=number]")
                box.fill(amount)
                box.press("Tab")
            pg.wait_for_selector("#explore-downloads a")
            pg.wait_for_function("() => !document.body.innerText.includes('re-rendering')")  # the last edit's too
            pg.wait_for_timeout(1500)
            pg.screenshot(path=str(folder / "explore.png"), full_page=True)
            browser.close()
    finally:
        demo.close()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    out = (
        Path(sys.argv[sys.argv.index("--screenshots") + 1]) if "--screenshots" in sys.argv else Path("docs/screenshots")
    )
    model = sys.argv[sys.argv.index("--model") + 1] if "--model" in sys.argv else None
    screenshots(out, model, sys.argv[sys.argv.index("--clip") + 1] if "--clip" in sys.argv else None)
    print(f"wrote {out}/pose.png, generate.png, refine.png and explore.png")
