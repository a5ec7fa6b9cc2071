"""Assemble the tabs into one app and serve it: `python app.py [--host H] [--port P] [--share] [--model M] [--clip C]`.

The pipeline is loaded once per process, lazily on the first generation (`ui.settings.LazyPipeline`): the only
global state of the UI, with its micro-batcher (`models.batching`, made on the first generation), through which
every generate request runs. `--model fake` serves a drawing stand-in (no weights) for demos and tests.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import gradio as gr

from models import paths
from models.errors import InputError
from ui import app_explore, app_generate, app_pose, app_refine, common, settings
from ui.settings import LazyPipeline, served

log = logging.getLogger("pose_studio.ui")

CSS = """
#skeleton-editor { min-height: 420px; }
/* Gradio narrows a gallery's grid to its item count; keep the columns so one image is not blown up. */
#results .grid-container { grid-template-columns: repeat(4, minmax(0, 1fr)) !important; }
#denoising .grid-container, #refine-steps .grid-container { grid-template-columns: repeat(8, minmax(0, 1fr)) !important; }
footer { display: none !important; }
"""


def build_demo(
    pipeline_loader: Callable[[], Any],
    model_status: str | None = None,
    clip: str | None = None,
    clip_status: str | None = None,
) -> gr.Blocks:
    """The whole app: Pose, Generate, Refine and Explore tabs sharing one pose and one current result,
    plus the `pose`, `generate`, `refine` and `edit` endpoints. `clip`: the CLIP spec for Refine (None: weights/clip)."""
    if model_status is None:
        status = getattr(pipeline_loader, "status", None)
        model_status = status() if callable(status) else ""
    if clip_status is None:
        clip_status = app_refine.clip_status(str(getattr(pipeline_loader, "model", "")), clip)
    # Gradio's copies go after an hour, as our own files do (ui.settings): long after any page fetches them.
    age = settings.FILE_MAX_AGE
    with gr.Blocks(title="Pose Studio", delete_cache=(age, age)) as demo:
        gr.Markdown("# Pose Studio\nDraw or upload a pose, then draw an anime character in it.")
        pose_state = gr.State(common.default_value())
        result = gr.State(None)  # the current result (common.Result) that Refine and Explore start from
        with gr.Tabs():
            with gr.Tab("Pose", id="pose"):
                pose_tab = app_pose.build(pipeline_loader)
            with gr.Tab("Generate", id="generate"):
                current = app_generate.build(pipeline_loader, pose_state, model_status, result)
            with gr.Tab("Refine", id="refine"):
                app_refine.build(pipeline_loader, result, clip, clip_status)
            with gr.Tab("Explore", id="explore"):
                app_explore.build(pipeline_loader, result)
        app_pose.build_api()
        demo.load(served(common.model_drawing), pose_state, current, api_visibility="private", queue=False)
        # The Generate tab follows the editor (gr.State has no reliable change event of its own).
        pose_tab.editor.change(
            served(lambda v: (v, common.model_drawing(v))),
            pose_tab.editor,
            [pose_state, current],
            api_visibility="private",
            queue=False,
        )
    # Generate has GENERATE_WORKERS workers of its own (app_generate), which hand requests to the batcher; every
    # other event has CONCURRENCY; past QUEUE_SIZE waiting requests Gradio refuses ("Queue is full"), so a crowd
    # is told to come back rather than left waiting for minutes.
    demo.queue(default_concurrency_limit=settings.CONCURRENCY, max_size=settings.QUEUE_SIZE)
    return demo


def launch_kwargs() -> dict[str, Any]:
    """Keyword arguments for `launch` shared by serve and the tests."""
    return {"max_file_size": f"{settings.MAX_UPLOAD_MB}mb", "css": CSS, "show_error": True}


def free_port() -> int:
    """A loopback port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_local(demo: gr.Blocks) -> gr.Blocks:
    """Launch a built app on a free loopback port without blocking (the tests and the preview benchmark)."""
    demo.launch(
        server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, **launch_kwargs()
    )
    return demo


DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 7860


def address(args: argparse.Namespace) -> tuple[str, int]:
    """(host, port): the flags, else GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, else 127.0.0.1:7860."""
    host = getattr(args, "host", None) or os.environ.get("GRADIO_SERVER_NAME") or DEFAULT_HOST
    port = getattr(args, "port", None)
    if port is None:
        text = os.environ.get("GRADIO_SERVER_PORT", "").strip()
        try:
            port = int(text) if text else DEFAULT_PORT
        except ValueError:
            raise InputError(f"GRADIO_SERVER_PORT must be a port number; got {text!r}.") from None
    if not 0 < int(port) < 65536:
        raise InputError(f"The port must be from 1 to 65535; got {port}.")
    return host, int(port)


def serve(args: argparse.Namespace) -> int:
    """Build and launch the app on `address(args)`; returns the exit code when the server stops."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio polls itself at start; not news
    started = time.perf_counter()
    try:
        host, port = address(args)
    except InputError as err:
        print(err, flush=True)
        return 2
    loader = LazyPipeline(
        getattr(args, "model", str(paths.WEIGHTS)), getattr(args, "device", None), getattr(args, "controlnet", None)
    )
    clip = getattr(args, "clip", None)
    status, clip_note = loader.status(), app_refine.clip_status(loader.model, clip)
    for note in (status, clip_note):
        if note:
            print(note.replace("**", "").replace("`", ""), flush=True)
    demo = build_demo(loader, status, clip, clip_note)
    share = bool(getattr(args, "share", False))
    try:
        demo.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=True, **launch_kwargs())
    except OSError:
        # Gradio's own text suggests only the environment variable; both ways work here (the flag wins).
        print(
            f"Cannot serve on {host}:{port}: the port is in use (or not allowed here). "
            "Choose another with --port N or GRADIO_SERVER_PORT=N (the flag wins when both are given).",
            flush=True,
        )
        return 1
    log.info("serving at %s after %.1f s", demo.local_url, time.perf_counter() - started)
    if share and not getattr(demo, "share_url", None):
        print(
            "No public share link could be made (no network, or sharing is off here, e.g. on a Space); "
            f"the app is still served locally at {demo.local_url}.",
            flush=True,
        )
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        demo.close()
    return 0
