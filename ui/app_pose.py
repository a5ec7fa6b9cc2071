"""The Pose tab: a photo (upload, webcam, clipboard), presets or a keypoint file give a pose; the
skeleton editor fixes it; the OpenPose drawing and the JSON show what the model will get.

    python -m ui.app_pose      # this tab alone
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from ui import handlers, settings
from ui.outputs import served
from ui.skeleton_editor import skeleton_editor


def photo_input(**kwargs: Any) -> gr.Image:
    """A gr.Image input that hands the handler the uploaded file's path unopened.

    Gradio's own preprocessing opens the upload (a text file renamed .png fails in Gradio's words, with a
    server path), decodes a bomb before our header check, and re-encodes a 16-bit photo as near-white
    8-bit; the handler reads it as the command line does instead. (An instance attribute, not a subclass:
    Gradio writes a .pyi stub next to any module that subclasses a component.)"""
    image = gr.Image(type="filepath", **kwargs)
    default = image.preprocess

    def preprocess(payload: Any) -> Any:
        if payload is not None and payload.path and not (payload.url or "").startswith("data:"):
            return str(payload.path)
        return default(payload)  # a webcam or clipboard data URL

    image.preprocess = preprocess
    return image


@dataclass
class PoseTab:
    """The components other tabs read."""

    editor: gr.HTML
    drawing: gr.Image
    json: gr.Code


def build() -> PoseTab:
    """Lay out the Pose tab in the current Blocks; other tabs follow `PoseTab.editor.change`."""
    start = handlers.default_value()
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=260):
            photo = photo_input(
                label="Photo of a person",
                sources=["upload", "webcam", "clipboard"],
                height=300,
            )
            extract_btn = gr.Button("Find the pose in the photo", variant="primary")
            overlay = gr.Image(label="Skeleton over the photo", format="png", interactive=False, height=300)
        with gr.Column(scale=2, min_width=360):
            gr.Markdown("**Skeleton editor**: a pose found in a photo opens here for fixing.")
            editor = skeleton_editor(start, elem_id="skeleton-editor")
            with gr.Row(equal_height=False):
                # Gradio's dropdown has no placeholder: a first entry with an empty value plays that part.
                presets = gr.Dropdown(
                    choices=[("Choose a preset pose...", ""), *handlers.preset_names()],
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
                    "Save pose as JSON", value=handlers.save_pose_file(start, keep=True), size="md",
                    elem_id="save-json",
                )  # fmt: skip
        with gr.Column(scale=1, min_width=260):
            first_drawing, first_json = handlers.show_pose(start)
            drawing = gr.Image(
                value=first_drawing, label="OpenPose drawing", format="png", interactive=False, height=300
            )
            json_box = gr.Code(
                value=first_json,
                label="Pose JSON",
                language="json",
                interactive=False,
                max_lines=24,
                elem_id="pose-json",
            )

    # Every change of the editor (drag, preset, photo...) refreshes the views and the shared pose.
    outputs = [drawing, json_box]
    editor.change(served(handlers.show_pose), editor, outputs, api_visibility="private", queue=False)
    extract = served(handlers.extract_from_photo)
    extract_btn.click(
        extract,
        [photo, editor],
        [overlay, editor, json_box],
        api_visibility="private",
        concurrency_id="pose",
        concurrency_limit=settings.CONCURRENCY,
    )
    photo.upload(
        extract,
        [photo, editor],
        [overlay, editor, json_box],
        api_visibility="private",
        concurrency_id="pose",
    )
    presets.change(handlers.choose_preset, [presets, editor], editor, api_visibility="private", queue=False)
    mirror_btn.click(handlers.mirror_pose, editor, editor, api_visibility="private", queue=False)
    reset_btn.click(handlers.reset_pose, editor, editor, api_visibility="private", queue=False)
    nophoto_btn.click(handlers.clear_background, editor, editor, api_visibility="private", queue=False)
    upload_json.upload(handlers.load_pose_file, [upload_json, editor], editor, api_visibility="private")
    # The file is written when the pose changes, so the download button always holds the current pose.
    editor.change(handlers.save_pose_file, editor, save_json, api_visibility="private", queue=False)
    return PoseTab(editor=editor, drawing=drawing, json=json_box)


def build_api() -> None:
    """The `pose` endpoint for API clients: a photo, keypoint JSON text or preset name -> pose + drawing."""
    with gr.Group(visible=False):
        image = photo_input(label="photo")
        text = gr.Textbox(label="keypoint JSON text or preset name")
        pose = gr.JSON(label="pose")
        picture = gr.Image(label="OpenPose drawing", format="png")
        button = gr.Button("pose")
    button.click(served(handlers.pose_api), [image, text], [pose, picture], api_name="pose", concurrency_id="pose")


def create_demo() -> gr.Blocks:
    """This tab as an app of its own."""
    with gr.Blocks(title="Pose Studio: pose") as demo:
        build()
        build_api()
    return demo


if __name__ == "__main__":
    create_demo().queue(max_size=settings.QUEUE_SIZE).launch(max_file_size=f"{settings.MAX_UPLOAD_MB}mb")
