"""The draggable 17-point skeleton editor: a `gr.HTML` component drawing the pose as SVG.

Its value is our pose JSON, `{"format": "coco17", "width", "height", "keypoints": [[x, y, v] * 17]}`
(x, y in [0, 1] of the frame), plus an optional `"background"` (a data URL of the photo). In the
browser: drag a point (pointer events, so mouse, pen and touch), double-click a point to hide or show
it, "Undo" steps back through the last 50 edits. The new value is written on pointer-up, which fires
`.change` in Python; while a point moves, a custom `drag` event carries the pose as it is now (at most every
DRAG_EVERY_MS, `{"value": pose}` in `gr.EventData._data`), without re-rendering the editor.

    python -m ui.skeleton_editor      # the editor alone, printing each value it sends
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from models.condition import OPENPOSE_COLORS
from models.pose import COCO_NAMES, LIMBS, OPENPOSE18_TO_COCO


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


# Each COCO point takes the colour OpenPose gives the same joint; limbs as in skeleton_overlay.
POINT_COLORS = [_hex(OPENPOSE_COLORS[OPENPOSE18_TO_COCO.index(i)]) for i in range(len(COCO_NAMES))]
LIMB_COLORS = [_hex(OPENPOSE_COLORS[i % len(OPENPOSE_COLORS)]) for i in range(len(LIMBS))]

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

function commit(next) {
  if (last != null) { history.push(last); if (history.length > 50) history.shift(); }
  last = clone(next);
  props.value = next;
}

watch('value', () => {
  // Python set a new pose (preset, mirror, photo...): remember the old one for Undo.
  if (JSON.stringify(props.value) === JSON.stringify(last)) return;
  if (last != null) { history.push(last); if (history.length > 50) history.shift(); }
  last = clone(props.value);
});

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


def skeleton_editor(value: dict[str, Any] | None = None, **kwargs: Any) -> gr.HTML:
    """A new skeleton editor component holding `value` (our pose dict, or None for an empty editor)."""
    return gr.HTML(
        value=value,
        html_template=HTML_TEMPLATE,
        css_template=CSS_TEMPLATE,
        js_on_load=JS_ON_LOAD,
        names=list(COCO_NAMES),
        limbs=[list(ab) for ab in LIMBS],
        point_colors=POINT_COLORS,
        limb_colors=LIMB_COLORS,
        drag_every_ms=DRAG_EVERY_MS,
        **kwargs,
    )


if __name__ == "__main__":
    from ui.common import default_value

    with gr.Blocks() as demo:
        editor = skeleton_editor(default_value(), elem_id="editor")
        shown = gr.JSON(label="value received by Python")
        editor.change(lambda v: v, editor, shown)
    demo.launch()
