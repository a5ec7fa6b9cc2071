"""Publishing weights as a Hub model repository (models.publish), offline: a local Hub cache stands in for the Hub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from models import publish
from models.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    """A tiny random PosePipeline saved as weights/ is (model_index.json included)."""
    import torch

    from tests.test_pipeline import tiny_pipeline

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("weights")
    tiny_pipeline().save_pretrained(folder)
    (folder / "model_index.json").write_text((ROOT / "weights" / "model_index.json").read_text())
    (folder / "README.md").write_text("# tiny\n")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "x.pyc").write_bytes(b"")
    return folder


def test_cache_snapshot_has_the_files_and_lfs_attributes(tiny_weights, tmp_path):
    snapshot = publish.to_cache(tiny_weights, "someone/tiny-pose", tmp_path / "hub")
    files = publish.repo_files(tiny_weights)
    assert Path("unet/diffusion_pytorch_model.safetensors") in files and Path("__pycache__/x.pyc") not in files
    for rel in files:
        assert (snapshot / rel).read_bytes() == (tiny_weights / rel).read_bytes()
    assert "*.safetensors filter=lfs diff=lfs merge=lfs -text" in (snapshot / ".gitattributes").read_text()
    root = tmp_path / "hub" / "models--someone--tiny-pose"
    assert (root / "refs" / "main").read_text() == snapshot.name and len(snapshot.name) == 40
    assert not list(root.glob("tmp*"))  # no staging folder left behind


def run_app(args: list[str], cache: Path) -> tuple[int, dict]:
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "app.py", *args], check=False, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])


def test_model_id_loads_the_published_repository_offline(tiny_weights, tmp_path):
    """`--model OWNER/NAME` finds the published repository with HF_HUB_OFFLINE=1 and draws with it."""
    cache = tmp_path / "hub"
    publish.to_cache(tiny_weights, "someone/tiny-pose", cache)
    out = tmp_path / "out.png"
    code, line = run_app(["generate", "--model", "someone/tiny-pose", "--pose", "waving", "--steps", "1",
                          "--out", str(out)], cache)  # fmt: skip
    assert code == 0 and line["outputs"] == [str(out)] and out.is_file(), line
    code, line = run_app(["generate", "--model", "someone/missing", "--pose", "waving", "--out", str(out)], cache)
    assert code == 1 and "HF_HUB_OFFLINE" in line["error"], line


def test_upload_refuses_offline_and_bad_input(tiny_weights, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="HF_HUB_OFFLINE"):
        publish.upload(tiny_weights, "someone/tiny-pose")
    with pytest.raises(InputError, match="OWNER/NAME"):
        publish.to_cache(tiny_weights, "no-owner", tmp_path)
    with pytest.raises(InputError, match="model_index.json"):
        publish.repo_files(tmp_path)
    assert publish.main([str(tiny_weights), "someone/x", "--cache", str(tmp_path / "c")]) == 0


def test_this_repository_keeps_its_safetensors_as_plain_git_files():
    """No LFS filter here: with git-lfs installed it would show every committed safetensors as modified
    (their blobs are not pointers); the published repository gets the attributes instead."""
    weights = "weights/unet/diffusion_pytorch_model.safetensors"
    out = subprocess.run(
        ["git", "check-attr", "filter", weights], check=False, cwd=ROOT, capture_output=True, text=True
    )
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    assert out.stdout.strip().endswith("filter: unspecified"), out.stdout
