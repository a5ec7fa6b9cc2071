"""The one pipeline of this process, loaded lazily on the first generation (the UI's only global state).

Its own module so that `ui.server` (which assembles the tabs) and each tab's stand-alone `__main__` can both reach
it without importing each other.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from models.errors import InputError

log = logging.getLogger("pose_studio.ui")

_PIPELINE: Any = None  # the one loaded pipeline of this process
_LOCK = threading.Lock()


class LazyPipeline:
    """Loads `model` (a folder, a Hub id, a keypoint-LDM checkpoint, or "fake"; `controlnet` for SD) on first call
    through `models.backends.load_backend`, and returns the same back end after."""

    def __init__(self, model: str | Path, device: str | None = None, controlnet: str | None = None) -> None:
        self.model = str(model)
        self.device = device
        self.controlnet = controlnet
        self.error: str | None = None

    def status(self) -> str:
        """One line for the Generate tab: empty when a model looks loadable, else why not."""
        if self.model == "fake":
            return "**Demo mode**: no model is loaded; the results are the pose drawings (`--model fake`)."
        path = Path(self.model)
        looks_local = path.is_absolute() or self.model.startswith(".") or path.exists() or self.model.count("/") != 1
        if looks_local and not path.is_file() and (not path.is_dir() or not any(path.iterdir())):
            return (
                f"**No model is loaded**: the weights folder `{self.model}` is missing or empty, so Generate "
                "cannot draw yet. The Pose tab works."
            )
        return ""

    def __call__(self) -> Any:
        """The process's pipeline, loading it on the first call."""
        global _PIPELINE
        with _LOCK:
            if _PIPELINE is not None:
                return _PIPELINE
            if self.error:
                raise InputError(self.error)
            note = self.status()
            if note and self.model != "fake":
                self.error = "No model is loaded: the weights folder is missing or empty."
                raise InputError(self.error)
            started = time.perf_counter()
            try:
                if self.model == "fake":
                    from ui.fake import FakePipeline

                    _PIPELINE = FakePipeline()
                else:
                    from models.backends import load_backend

                    _PIPELINE = load_backend(self.model, self.controlnet, device=self.device)
            except InputError as err:
                self.error = f"No model is loaded: {err}"
                raise InputError(self.error) from None
            except Exception as err:
                log.exception("loading %s failed", self.model)
                self.error = f"No model is loaded: loading '{self.model}' failed ({type(err).__name__})."
                raise InputError(self.error) from None
            log.info("loaded %s in %.1f s", self.model, time.perf_counter() - started)
            return _PIPELINE
