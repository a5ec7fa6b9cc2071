"""The Pose tab: a photo (upload, webcam, clipboard), presets or a keypoint file give a pose; the skeleton editor
fixes it; the OpenPose drawing and the JSON show what the model will get, and a live preview redraws the character.

The skeleton editor is a `gr.HTML` drawing the pose as SVG; its value is `Pose.to_dict()` (x, y in [0, 1] of the
frame) plus an optional `"background"` (a data URL of the photo). Drag a point (mouse, pen or touch), double-click
it to hide or show it; "Undo" steps back through the last 50 edits. Pointer-up writes the value (`.change`); mid-drag
a custom `drag` event carries the pose without re-rendering, at most every DRAG_EVERY_MS (`{"value": pose}` in
`gr.EventData._data`).

    python -m ui.app_pose      # this tab alone
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gradio as gr
from PIL import Image

from models import pose_input
from models.condition import OPENPOSE_COLORS, skeleton_overlay
from models.errors import InputError
from models.pose import COCO_NAMES, FILE_FORMATS, LIMBS, OPENPOSE18_TO_COCO, Pose, file_text, mirror, to_file
from ui import settings
from ui.common import (
    default_pose,
    default_value,
    drawing,
    generation_batcher,
    load_json_text,
    load_photo,
    log,
    model_pose,
    photo_input,
    pose_from_text,
    pose_from_value,
    preset_pose,
    upload_path,
    user_errors,
)
from ui.settings import served


@dataclass
class PoseTab:
    """The components other tabs read."""

    editor: gr.HTML


def build(pipeline_loader: Callable[[], Any] | None = None) -> PoseTab:
    """Lay out the Pose tab in the current Blocks; other tabs follow `PoseTab.editor.change`. With a
    `pipeline_loader`, a live preview draws the character after every edit."""
    start = default_value()
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=260):
            photo = photo_input(label="Photo of a person", sources=["upload", "webcam", "clipboard"], height=300)
            extract_btn = gr.Button("Find the pose in the photo", variant="primary")
            overlay = gr.Image(label="Skeleton over the photo", format="png", interactive=False, height=300)
        with gr.Column(scale=2, min_width=360):
            editor, presets, mirror_btn, reset_btn, nophoto_btn, upload_json, save_json, save_as = _editor_column(start)
        with gr.Column(scale=1, min_width=260):
            if pipeline_loader is not None:
                _live_preview(pipeline_loader, editor)
            first_drawing, first_json = show_pose(start)
            drawing = gr.Image(
                value=first_drawing, label="OpenPose drawing", format="png", interactive=False, height=300
            )
            json_box = gr.Code(value=first_json, label="Pose JSON", language="json", interactive=False, max_lines=24,
                               elem_id="pose-json")  # fmt: skip

    # Every change of the editor (drag, preset, photo...) refreshes the views and the shared pose.
    editor.change(served(show_pose), editor, [drawing, json_box], api_visibility="private", queue=False)
    for event in (extract_btn.click, photo.upload):  # a photo is read when dropped, and again on the button
        event(
            served(extract_from_photo), [photo, editor], [overlay, editor, json_box], api_visibility="private",
            concurrency_id="pose", concurrency_limit=settings.CONCURRENCY,
        )  # fmt: skip
    presets.change(choose_preset, [presets, editor], editor, api_visibility="private", queue=False)
    mirror_btn.click(mirror_pose, editor, editor, api_visibility="private", queue=False)
    reset_btn.click(reset_pose, editor, editor, api_visibility="private", queue=False)
    nophoto_btn.click(clear_background, editor, editor, api_visibility="private", queue=False)
    upload_json.upload(load_pose_file, [upload_json, editor], editor, api_visibility="private")
    # The file is written when the pose or its format changes, so the download button always holds the current pose.
    for event in (editor.change, save_as.change):
        event(save_pose_file, [editor, save_as], save_json, api_visibility="private", queue=False)
    return PoseTab(editor=editor)


def _editor_column(start: dict) -> tuple:
    """The skeleton editor with its preset, mirror, reset, hide-photo, load and save controls below it."""
    gr.Markdown("**Skeleton editor**: a pose found in a photo opens here for fixing.")
    editor = gr.HTML(
        value=start,
        html_template=HTML_TEMPLATE,
        css_template=CSS_TEMPLATE,
        js_on_load=JS_ON_LOAD,
        names=list(COCO_NAMES),
        limbs=[list(ab) for ab in LIMBS],
        point_colors=POINT_COLORS,
        limb_colors=LIMB_COLORS,
        drag_every_ms=DRAG_EVERY_MS,
        elem_id="skeleton-editor",
    )
    with gr.Row(equal_height=False):
        # Gradio's dropdown has no placeholder: a first entry with an empty value plays that part.
        presets = gr.Dropdown(
            choices=[("Choose a preset pose...", ""), *preset_names()],
            value="",
            show_label=False,
            container=False,
            scale=3,
            min_width=180,
            elem_id="preset",
        )
        mirror_btn = gr.Button("Mirror", size="md", min_width=70)
        reset_btn = gr.Button("Reset", size="md", min_width=70)
        nophoto_btn = gr.Button("Hide photo", size="md", min_width=110)
    with gr.Row():
        upload_json = gr.UploadButton(
            "Load keypoint JSON", file_types=[".json"], type="filepath", size="md", elem_id="load-json"
        )
        # The first file is the page's own value, so it is kept (not swept after an hour).
        save_json = gr.DownloadButton(
            "Save pose as JSON", value=save_pose_file(start, keep=True), size="md", elem_id="save-json"
        )
        save_as = gr.Dropdown(
            [(SAVE_FORMATS[f], f) for f in FILE_FORMATS], value="ours", label="Save as", min_width=160,
            elem_id="save-format",
        )  # fmt: skip
    return editor, presets, mirror_btn, reset_btn, nophoto_btn, upload_json, save_json, save_as


def _live_preview(pipeline_loader: Callable[[], Any], editor: Any) -> None:
    """The live preview, redrawn after every edit, mid-drag (the editor's throttled `drag` event) and on its knobs."""
    preview = gr.Image(
        label="Live preview (the character in this pose)", format="png", interactive=False, height=300,
        elem_id="live-preview",
    )  # fmt: skip
    with gr.Row():
        live = gr.Checkbox(label="Live preview", value=True, min_width=100, elem_id="live-on")
        preview_seed = gr.Number(label="Preview seed", value=0, min_width=100)
    preview_note = gr.Markdown(elem_id="live-note")
    # "always_last": while a frame draws, later edits collapse into the newest one (a drag storm queues one).
    redraw = live_preview_handler(pipeline_loader)

    def redraw_mid_drag(live_on: Any, seed: Any, evt: gr.EventData) -> tuple[Any, str]:
        return redraw((evt._data or {}).get("value"), live_on, seed)  # the pose mid-drag rides in the event

    events = [(served(redraw), event, [editor, live, preview_seed])
              for event in (editor.change, live.change, preview_seed.submit)]  # fmt: skip
    events.append((served(redraw_mid_drag), editor.drag, [live, preview_seed]))
    for fn, event, inputs in events:
        event(
            fn, inputs, [preview, preview_note], api_visibility="private", trigger_mode="always_last",
            show_progress="hidden", concurrency_id="preview", concurrency_limit=settings.CONCURRENCY,
        )  # fmt: skip


def build_api() -> None:
    """The `pose` endpoint for API clients: a photo, keypoint JSON text or preset name (and a file format) -> pose +
    drawing."""
    with gr.Group(visible=False):
        image = photo_input(label="photo")
        text = gr.Textbox(label="keypoint JSON text or preset name")
        fmt = gr.Dropdown(list(FILE_FORMATS), value="ours", label="format", allow_custom_value=True)  # ours says no
        pose = gr.JSON(label="pose")
        picture = gr.Image(label="OpenPose drawing", format="png")
        button = gr.Button("pose")
    button.click(served(pose_api), [image, text, fmt], [pose, picture], api_name="pose", concurrency_id="pose")


def create_demo() -> gr.Blocks:
    """This tab as an app of its own."""
    with gr.Blocks(title="Pose Studio: pose") as demo:
        build()
        build_api()
    return demo


# -- the skeleton editor ----------------------------------------------------------------------------
# Each COCO point takes the colour OpenPose gives the same joint; limbs as in skeleton_overlay.
_HEX = ["#{:02x}{:02x}{:02x}".format(*rgb) for rgb in OPENPOSE_COLORS]
POINT_COLORS = [_HEX[OPENPOSE18_TO_COCO.index(i)] for i in range(len(COCO_NAMES))]
LIMB_COLORS = [_HEX[i % len(_HEX)] for i in range(len(LIMBS))]

# Evaluated in the browser as a JS template string (after Handlebars, so no double braces here).
HTML_TEMPLATE = r"""
<div class="pe-wrap">
${(() => {
  const v = value && typeof value === 'object' && Array.isArray(value.keypoints) && value.keypoints.length === 17 ? value : null;
  if (!v) return '<div class="pe-empty">No pose yet: choose a preset, upload a photo or load a keypoint file.</div>';
  const W = Number(v.width) || 512, H = Number(v.height) || 512;
  const s = 512 / Math.max(W, H), vw = W * s, vh = H * s, pad = 24;
  const kp = v.keypoints, shown = kp.map(p => (p.length < 3 || p[2] >= 0.5));
  let out = `<svg class="pe-svg" viewBox="${-pad} ${-pad} ${vw + 2 * pad} ${vh + 2 * pad}" data-vw="${vw}" data-vh="${vh}" xmlns="http://www.w3.org/2000/svg">`;
  out += `<rect class="pe-frame" x="0" y="0" width="${vw}" height="${vh}"/>`;
  if (typeof v.background === 'string' && v.background.startsWith('data:image/')) {
    out += `<image href="${v.background.replace(/"/g, '')}" x="0" y="0" width="${vw}" height="${vh}" preserveAspectRatio="none" opacity="0.75"/>`;
  }
  limbs.forEach((ab, i) => {
    const a = ab[0], b = ab[1], on = shown[a] && shown[b];
    out += `<line class="pe-limb${on ? '' : ' pe-off'}" data-a="${a}" data-b="${b}" x1="${kp[a][0] * vw}" y1="${kp[a][1] * vh}" x2="${kp[b][0] * vw}" y2="${kp[b][1] * vh}" stroke="${on ? limb_colors[i] : '#999'}"/>`;
  });
  kp.forEach((p, i) => {
    out += `<circle class="pe-pt${shown[i] ? '' : ' pe-off'}" data-i="${i}" cx="${p[0] * vw}" cy="${p[1] * vh}" r="7" fill="${shown[i] ? point_colors[i] : 'none'}"><title>${names[i]}${shown[i] ? '' : ' (hidden)'}</title></circle>`;
  });
  return out + '</svg>';
})()}
<div class="pe-bar"><button type="button" class="pe-undo">Undo</button><span class="pe-hint">Drag a point to move it; double-click a point to hide or show it.</span></div>
</div>
"""

CSS_TEMPLATE = """
.pe-wrap { display: flex; flex-direction: column; gap: 6px; }
.pe-svg { width: 100%; max-height: 560px; touch-action: none; user-select: none; background: #2a2a2a; border-radius: 8px; }
.pe-frame { fill: #000; }
.pe-limb { stroke-width: 6; stroke-linecap: round; opacity: 0.85; pointer-events: none; }
.pe-limb.pe-off { stroke-width: 2; stroke-dasharray: 4 4; }
.pe-pt { stroke: #fff; stroke-width: 2; cursor: grab; }
.pe-pt.pe-off { stroke: #bbb; stroke-dasharray: 3 2; }
.pe-pt.pe-drag { cursor: grabbing; stroke: #ff0; }
.pe-bar { display: flex; align-items: center; gap: 10px; font-size: 0.85em; }
.pe-undo { padding: 2px 12px; border-radius: 6px; border: 1px solid #888; background: transparent; color: inherit; cursor: pointer; }
.pe-hint { opacity: 0.75; }
.pe-empty { padding: 40px; text-align: center; border: 1px dashed #888; border-radius: 8px; opacity: 0.8; }
"""

DRAG_EVERY_MS = 150  # the live preview's frame budget: a drag sends at most this often

JS_ON_LOAD = r"""
const clone = (v) => (v == null ? v : JSON.parse(JSON.stringify(v)));
let lastDragSent = 0;
const history = [];
let last = clone(props.value);
let drag = null;

function remember(next) {  // the last value goes on the Undo stack (50 at most); `next` is the last now
  if (last != null) { history.push(last); if (history.length > 50) history.shift(); }
  last = clone(next);
}

function commit(next) {
  remember(next);
  props.value = next;
}

// Python set a new pose (preset, mirror, photo...): remember the old one for Undo.
watch('value', () => { if (JSON.stringify(props.value) !== JSON.stringify(last)) remember(props.value); });

function svgPoint(svg, e) {
  const pt = svg.createSVGPoint();
  pt.x = e.clientX; pt.y = e.clientY;
  return pt.matrixTransform(svg.getScreenCTM().inverse());
}

element.addEventListener('pointerdown', (e) => {
  const c = e.target.closest && e.target.closest('circle.pe-pt');
  if (!c || e.button > 0) return;
  const svg = c.ownerSVGElement;
  e.preventDefault();
  svg.setPointerCapture(e.pointerId);
  c.classList.add('pe-drag');
  drag = { i: Number(c.dataset.i), c, svg, vw: Number(svg.dataset.vw), vh: Number(svg.dataset.vh), moved: false, x: 0, y: 0, sx: e.clientX, sy: e.clientY };
});

element.addEventListener('pointermove', (e) => {
  if (!drag) return;
  if (!drag.moved && Math.hypot(e.clientX - drag.sx, e.clientY - drag.sy) < 3) return;  // a click's jitter
  const p = svgPoint(drag.svg, e);
  // A point may leave the frame a little (a foot below the edge), not far.
  const x = Math.min(Math.max(p.x / drag.vw, -0.04), 1.04), y = Math.min(Math.max(p.y / drag.vh, -0.04), 1.04);
  drag.x = x; drag.y = y; drag.moved = true;
  drag.c.setAttribute('cx', x * drag.vw); drag.c.setAttribute('cy', y * drag.vh);
  drag.svg.querySelectorAll(`line[data-a="${drag.i}"]`).forEach((l) => { l.setAttribute('x1', x * drag.vw); l.setAttribute('y1', y * drag.vh); });
  drag.svg.querySelectorAll(`line[data-b="${drag.i}"]`).forEach((l) => { l.setAttribute('x2', x * drag.vw); l.setAttribute('y2', y * drag.vh); });
  const now = Date.now();
  if (now - lastDragSent >= props.drag_every_ms) {  // the pose as it is now, for the live preview
    lastDragSent = now;
    const next = clone(props.value);
    next.keypoints[drag.i] = [x, y, next.keypoints[drag.i][2] ?? 1];
    trigger('drag', { value: next });
  }
});

function toggle(i) {
  const next = clone(props.value), v = next.keypoints[i][2] ?? 1;
  next.keypoints[i] = [next.keypoints[i][0], next.keypoints[i][1], v >= 0.5 ? 0 : 1];
  commit(next);
}

// A double click (or double tap) is two presses without a move on the same point. The native
// dblclick event cannot be used: pointer capture retargets it to the <svg>.
let lastTap = { i: -1, t: 0 };
function endDrag() {
  if (!drag) return;
  const d = drag; drag = null;
  d.c.classList.remove('pe-drag');
  if (!d.moved) {
    const now = Date.now();
    if (lastTap.i === d.i && now - lastTap.t < 450) { lastTap = { i: -1, t: 0 }; toggle(d.i); }
    else lastTap = { i: d.i, t: now };
    return;
  }
  lastTap = { i: -1, t: 0 };
  const next = clone(props.value);
  next.keypoints[d.i] = [Math.round(d.x * 1e4) / 1e4, Math.round(d.y * 1e4) / 1e4, next.keypoints[d.i][2] ?? 1];
  commit(next);
}
element.addEventListener('pointerup', endDrag);
element.addEventListener('pointercancel', endDrag);

element.addEventListener('click', (e) => {
  if (!(e.target.closest && e.target.closest('.pe-undo')) || !history.length) return;
  last = history.pop();
  props.value = clone(last);
});
"""


# -- handlers ---------------------------------------------------------------------------------------
BACKGROUND_SIDE = 384  # the photo behind the editor travels with each edit: keep it small


def live_preview_handler(pipeline_loader: Callable[[], Any]) -> Callable:
    """The live preview: (editor value, on, seed) -> (the character in that pose, a note on how it was drawn).

    A pose the model refuses (every point hidden, a bad seed) leaves the last frame and says why in the note:
    an error box on every drag would be noise."""

    def preview(value: Any, live: Any, seed: Any) -> tuple[Any, str]:
        if not live:
            return gr.skip(), "Live preview is off: Generate draws the character."
        try:
            seed = settings.check_int(seed, "The preview seed", 0, settings.MAX_SEED)
            pose = model_pose(pose_from_value(value))
            pipe = pipeline_loader()
            kwargs = preview_settings(pipe, seed)
            started = time.perf_counter()
            images, _ = generation_batcher(pipe)(pose, **kwargs)
        except InputError as err:
            log.info("preview refused: %s", err)
            return gr.skip(), str(err)
        seconds = time.perf_counter() - started
        how = "the fast student" if kwargs.get("fast") else f"{kwargs['steps']} steps of the full model"
        note = f"Drawn in {seconds:.2f} s with {how}; Generate draws the full picture."
        if seconds > settings.PREVIEW_BEHIND_S:
            note += " The preview is behind your edits: it skips to the newest one."
        return images[0], note

    return preview


def preview_settings(pipe: Any, seed: int) -> dict[str, Any]:
    """The generation settings of a preview frame: the few-step student when the model has one, else a few steps of
    the full model; a draft (no upscale pass) where the model has one."""
    from models.backends import capabilities
    from models.samplers import DEFAULT_FAST_STEPS

    offered = capabilities(pipe)
    if "fast" in offered:
        return {"seed": seed, "steps": DEFAULT_FAST_STEPS, "fast": True}
    return {"seed": seed, "steps": settings.PREVIEW_STEPS, **({"draft": True} if "upscale" in offered else {})}


def editor_value(pose: Pose, background: str | None = None) -> dict[str, Any]:
    """The editor's value for `pose`, with the photo (a data URL) behind it when given."""
    value = pose.to_dict()
    if background:
        value["background"] = background
    return value


@user_errors
def show_pose(value: Any) -> tuple[Image.Image, str]:
    """Editor value -> (OpenPose drawing, pose JSON text)."""
    pose = pose_from_value(value)
    return drawing(pose), file_text(pose)


def keep_background(old: Any, pose: Pose) -> dict[str, Any]:
    """A new editor value for `pose` that keeps the old value's photo when the frame is the same."""
    bg = old.get("background") if isinstance(old, dict) else None
    same_frame = isinstance(old, dict) and (old.get("width"), old.get("height")) == (pose.width, pose.height)
    return editor_value(pose, bg if same_frame else None)


@user_errors
def mirror_pose(value: Any) -> dict[str, Any]:
    """Mirror the editor's pose left to right (the photo stays as it is)."""
    return keep_background(value, mirror(pose_from_value(value)))


@user_errors
def reset_pose(value: Any) -> dict[str, Any]:
    """Back to the default pose, fitted to the current frame when a photo is behind it."""
    pose = default_pose()
    if isinstance(value, dict) and value.get("background"):
        pose = Pose(pose.keypoints, int(value["width"]), int(value["height"]))
    return keep_background(value, pose)


def preset_names() -> list[str]:
    """The preset names."""
    return pose_input.list_presets()


@user_errors
def choose_preset(name: str | None, value: Any) -> dict[str, Any]:
    """The preset `name` in the editor (no change when the dropdown is cleared)."""
    if not name:
        return gr.skip()
    settings.check_text(name, "The preset name")
    return keep_background(value, preset_pose(name))


@user_errors
def load_pose_file(file: Any, value: Any) -> dict[str, Any]:
    """A keypoint JSON file (any format `models.pose.loads` reads) -> the editor's value."""
    if file is None:
        return gr.skip()
    path = upload_path(file)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError("The keypoint file is not UTF-8 text.") from None
    return keep_background(value, load_json_text(text, "The keypoint file"))


# What the Save menu calls each file format of models.pose.FILE_FORMATS.
SAVE_FORMATS = {"ours": "Pose Studio JSON", "openpose": "OpenPose JSON (ControlNet editors)", "coco": "COCO keypoints",
                "fork": "keypoint-LDM fork (512 px, no hidden points)"}  # fmt: skip


@user_errors
def save_pose_file(value: Any, fmt: str = "ours", keep: bool = False) -> str:
    """The editor's pose written to a new JSON file of `fmt` for download (`keep`: the page's first value, never
    swept)."""
    stem = "pose" if fmt == "ours" else f"pose_{fmt}"
    return settings.save_text(file_text(pose_from_value(value), fmt), stem, keep=keep)


def background_url(image: Image.Image, side: int = BACKGROUND_SIDE) -> str:
    """A small JPEG data URL of the photo, to lie behind the editor."""
    small = image.copy()
    small.thumbnail((side, side))
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=75)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


@user_errors
def extract_from_photo(file: Any, value: Any, progress: gr.Progress = gr.Progress()) -> tuple:  # noqa: B008
    """Photo -> (skeleton over the photo, editor value with the photo behind it, pose JSON).

    When nobody is found the photo still goes behind the editor (with the current pose stretched to
    its frame) so the person can place the points by hand; a warning says so.
    """
    if file is None:
        return gr.skip(), gr.skip(), gr.skip()
    progress(0.1, desc="reading the photo")
    image = load_photo(file)
    progress(0.4, desc="finding the person")
    try:
        pose = Pose(pose_input.extract_pose(image).keypoints, image.width, image.height)
    except pose_input.NoPersonError as err:
        gr.Warning(f"{err} Place the points on the photo by hand.")
        current = pose_from_value(value) if value else default_pose()
        pose = Pose(current.keypoints, image.width, image.height)
        return image, editor_value(pose, background_url(image)), file_text(pose)
    return skeleton_overlay(image, pose), editor_value(pose, background_url(image)), file_text(pose)


@user_errors
def clear_background(value: Any) -> dict[str, Any]:
    """The same pose without the photo behind it."""
    return editor_value(pose_from_value(value))


@user_errors
def pose_api(image: Any, text: str | None, fmt: str = "ours") -> tuple[dict[str, Any], Image.Image]:
    """A photo, or a keypoint JSON text, or a preset name -> (the pose as a file of `fmt`, OpenPose drawing)."""
    if image is not None:
        photo = load_photo(image)
        pose = Pose(pose_input.extract_pose(photo).keypoints, photo.width, photo.height)
    elif isinstance(text, str) and text.strip():
        pose = pose_from_text(text)
    else:
        raise InputError("Give a photo, a keypoint JSON or a preset name.")
    return to_file(pose, fmt if isinstance(fmt, str) else "ours"), drawing(pose)


if __name__ == "__main__":
    create_demo().queue(max_size=settings.QUEUE_SIZE).launch(max_file_size=f"{settings.MAX_UPLOAD_MB}mb")
