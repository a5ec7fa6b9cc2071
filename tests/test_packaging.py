"""Packaging: what the Docker build context leaves out, and the image's HEALTHCHECK command against a live app."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ignored(rel: str) -> bool:
    """Whether .dockerignore leaves `rel` (a path under the build context) out, as Docker's matcher reads these lines."""
    import fnmatch

    out = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        parts = rel.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatch(p, pattern[3:]) for p in parts)
        else:
            hit = any(fnmatch.fnmatch(p, pattern) for p in prefixes)
        if hit:
            out = not negate
    return out


def test_build_context_leaves_out_history_runs_data_and_environments():
    for rel in (".git/objects/pack/x.pack", "runs/ldm/final/unet.safetensors", "data/train/0.png", ".venv/bin/python",
                "venv/lib/x.py", "models/__pycache__/pose.cpython-311.pyc", ".pytest_cache/v", ".ruff_cache/x"):  # fmt: skip
        assert ignored(rel), rel
    for rel in ("app.py", "models/pose.py", "ui/common.py", "weights/unet/diffusion_pytorch_model.safetensors",
                "requirements.txt", "models/presets/waving.json"):  # fmt: skip
        assert not ignored(rel), rel


WEIGHTS_BUDGET = 80 * 1000**2  # bytes: what the shipped weights may take in the repository and the image


def test_the_shipped_weights_fit_their_budget():
    total = sum(f.stat().st_size for f in (ROOT / "weights").rglob("*") if f.is_file())
    assert total <= WEIGHTS_BUDGET, f"weights/ holds {total / 1e6:.1f} MB, over {WEIGHTS_BUDGET / 1e6:.0f} MB"


def healthcheck_command() -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK .*?CMD (.*?)\s*\|\| exit 1\s*$", text, re.MULTILINE)
    assert match, "the Dockerfile has no HEALTHCHECK ... CMD"
    return shlex.split(match.group(1))


def test_healthcheck_passes_on_a_live_app_and_fails_without_one():
    from ui.fake import FakePipeline
    from ui.server import build_demo, free_port, launch_kwargs

    port = free_port()
    cmd = [sys.executable if c == "python" else c for c in healthcheck_command()]
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port)}
    assert (
        subprocess.run(cmd, check=False, env=env, capture_output=True, timeout=30).returncode != 0
    )  # nothing listens yet
    demo = build_demo(lambda: FakePipeline(size=32), model_status="")
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_kwargs())
    try:
        assert subprocess.run(cmd, check=False, env=env, capture_output=True, timeout=30).returncode == 0
    finally:
        demo.close()
