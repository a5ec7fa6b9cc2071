"""Files the app serves: each written once, complete, under a name no other request shares.

Gradio caches a returned PIL image under a hash of its bytes and rewrites that file in place, so two
requests that make the same picture (the same preset's drawing, the same seed) rewrite a file while
another response is still sending it ("Too little data for declared Content-Length"). So the app
never hands Gradio a PIL image: `served` turns every image in a handler's outputs into a PNG of our
own, written to a temporary name and renamed into place inside Gradio's cache folder (which Gradio
then serves as it is, without copying), and files are removed only once they are an hour old (our
sweep here, and `gr.Blocks(delete_cache=...)` for Gradio's own).
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

from ui import settings

PNG_KEY = "pose_studio"  # the PNG text chunk holding the settings (as `python app.py generate` writes)
_LOCK = threading.Lock()
_FOLDER: Path | None = None
_LAST_SWEEP = 0.0


def output_folder() -> Path:
    """This process's folder of served files, inside Gradio's cache (GRADIO_TEMP_DIR) so it is served uncopied."""
    global _FOLDER
    with _LOCK:
        if _FOLDER is None or not _FOLDER.is_dir():
            base = Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")
            base.mkdir(parents=True, exist_ok=True)
            _FOLDER = Path(tempfile.mkdtemp(prefix=f"pose_studio_{os.getpid()}_", dir=base))
        return _FOLDER


def sweep(max_age: float | None = None, now: float | None = None) -> int:
    """Remove this process's served files older than `max_age` seconds (default FILE_MAX_AGE); returns how many."""
    max_age = settings.FILE_MAX_AGE if max_age is None else max_age
    now = time.time() if now is None else now
    removed = 0
    for folder in output_folder().iterdir():
        if folder.name == "kept" or not folder.is_dir():
            continue
        for path in folder.iterdir():
            try:
                if now - path.stat().st_mtime > max_age:
                    path.unlink()
                    removed += 1
            except OSError:  # removed by Gradio's own sweep meanwhile
                continue
        try:
            folder.rmdir()  # only once empty
        except OSError:
            pass
    return removed


def _maybe_sweep() -> None:
    global _LAST_SWEEP
    now = time.time()
    if now - _LAST_SWEEP < settings.SWEEP_EVERY:
        return
    _LAST_SWEEP = now
    sweep(now=now)


def write_file(stem: str, suffix: str, write: Callable[[Path], None], keep: bool = False) -> str:
    """A new file `<uuid>/<stem><suffix>` (the download keeps its plain name), written by `write(temp_path)` and
    renamed into place when complete.

    `keep`: never swept (a component's value at build time, which every page load refers to)."""
    _maybe_sweep()
    folder = output_folder() / ("kept" if keep else "") / uuid.uuid4().hex
    folder.mkdir(parents=True)
    final = folder / f"{stem}{suffix}"
    temp = folder / f".{final.name}.part"  # never handed out; swept like the rest if a write dies
    try:
        write(temp)
        os.replace(temp, final)
    finally:
        temp.unlink(missing_ok=True)
    return str(final)


def save_png(image: Image.Image, stem: str = "image", record: dict[str, Any] | None = None) -> str:
    """`image` as a new PNG file (with `record` in its `pose_studio` text chunk when given)."""
    info = None
    if record is not None:
        info = PngImagePlugin.PngInfo()
        info.add_text(PNG_KEY, json.dumps(record))
    return write_file(stem, ".png", lambda p: image.save(p, format="PNG", pnginfo=info))


def save_text(text: str, stem: str, suffix: str = ".json", keep: bool = False) -> str:
    """`text` (UTF-8) as a new file (`keep`: never swept)."""
    return write_file(stem, suffix, lambda p: p.write_text(text, encoding="utf-8"), keep)


def publish(value: Any, saved: dict[int, tuple[Image.Image, str]] | None = None) -> Any:
    """`value` with every PIL image in it (tuples, lists, gr.update dicts) replaced by a new PNG's path.

    `saved` remembers the images of one call, so a streamed row of previews writes each image once."""
    saved = {} if saved is None else saved
    if isinstance(value, Image.Image):
        hit = saved.get(id(value))
        if hit is None or hit[0] is not value:
            hit = saved[id(value)] = (value, save_png(value))  # the image is kept, so its id stays its own
        return hit[1]
    if isinstance(value, tuple):
        return tuple(publish(v, saved) for v in value)
    if isinstance(value, list):
        return [publish(v, saved) for v in value]
    if isinstance(value, dict) and value.get("__type__") == "update" and "value" in value:
        return {**value, "value": publish(value["value"], saved)}
    return value


def served(fn: Callable) -> Callable:
    """Wrap an event function so the images it returns or yields reach Gradio as files of their own (see above)."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen(*args: Any, **kwargs: Any) -> Iterator[Any]:
            saved: dict[int, tuple[Image.Image, str]] = {}
            for item in fn(*args, **kwargs):
                yield publish(item, saved)

        return gen

    @functools.wraps(fn)
    def plain(*args: Any, **kwargs: Any) -> Any:
        return publish(fn(*args, **kwargs))

    return plain
