"""Publish a weights folder (`weights/`) as a Hugging Face model repository that `--model OWNER/NAME` loads.

    python -m models.publish weights OWNER/NAME                 # upload (a token: `hf auth login` or HF_TOKEN)
    python -m models.publish weights OWNER/NAME --cache DIR     # offline: the repository as a download leaves it
    HF_HUB_CACHE=DIR HF_HUB_OFFLINE=1 python app.py --model OWNER/NAME

The repository gets a `.gitattributes` storing the weight files with Git LFS, as Hub repositories do (the Hub
refuses plain git files over 10 MB). This source repository does not carry that file itself: with git-lfs
installed, it would make the safetensors committed here as plain blobs show as modified in every checkout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from models.errors import InputError

# What the Hub writes into a new model repository for its weight formats (each line: store with LFS).
LFS_PATTERNS = ("*.safetensors", "*.bin", "*.ckpt", "*.pt", "*.pth", "*.onnx", "*.msgpack", "*.h5", "*.npz")
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS)
SKIP_NAMES = {"__pycache__", ".git", ".cache", ".DS_Store"}


def check_repo_id(repo_id: str) -> str:
    """`owner/name`, as `--model` reads a Hub id."""
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts) or repo_id.startswith((".", "/", "~")):
        raise InputError(f"The repository must be written OWNER/NAME; got {repo_id!r}.")
    return repo_id


def repo_files(weights: str | Path) -> list[Path]:
    """The files of `weights` to publish (relative paths, sorted), without caches, hidden or partial files."""
    folder = Path(weights)
    if not (folder / "model_index.json").is_file():
        raise InputError(f"{folder} has no model_index.json, so `--model` could not tell which model it is.")
    files = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(p in SKIP_NAMES or p.startswith(".") for p in rel.parts):
            files.append(rel)
    return files


def stage(weights: str | Path, out: str | Path) -> Path:
    """The repository's content in `out`: the weights' files plus the LFS `.gitattributes`."""
    src, out = Path(weights), Path(out)
    for rel in repo_files(src):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / rel, out / rel)
    (out / ".gitattributes").write_text(GITATTRIBUTES, encoding="utf-8")
    return out


def snapshot_id(folder: Path) -> str:
    """A 40-hex commit id from the staged files' names and bytes (the same content gives the same id)."""
    sha = hashlib.sha1()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        sha.update(str(path.relative_to(folder)).encode())
        sha.update(hashlib.sha256(path.read_bytes()).digest())
    return sha.hexdigest()


def to_cache(weights: str | Path, repo_id: str, cache: str | Path) -> Path:
    """Lay the repository out in a Hub cache folder as a download of `repo_id` would; returns the snapshot folder.

    With HF_HUB_CACHE=cache and HF_HUB_OFFLINE=1, `--model repo_id` then loads it without a network: the
    local stand-in for the Hub that the tests use, also handy to check a repository before uploading it."""
    check_repo_id(repo_id)
    root = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:  # the same file system: the move below is a rename
        staged = stage(weights, Path(tmp) / "repo")
        commit = snapshot_id(staged)
        snapshot = root / "snapshots" / commit
        if snapshot.exists():
            shutil.rmtree(snapshot)
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staged), snapshot)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return snapshot


def upload(weights: str | Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Create (if needed) the model repository `repo_id` on the Hub and upload the staged weights; returns its URL."""
    from huggingface_hub import HfApi

    from models.backends import is_offline

    check_repo_id(repo_id)
    if is_offline():
        raise InputError("HF_HUB_OFFLINE=1 keeps the Hub out of reach; use --cache DIR to publish into a local cache.")
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory() as tmp:
        staged = stage(weights, tmp)
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(staged), repo_id=repo_id, repo_type="model",
                          commit_message="Publish Pose Studio weights")  # fmt: skip
    return str(url)


def main(argv: list[str] | None = None) -> int:
    """Publish and print one JSON line: the repository and where it went, or the error."""
    parser = argparse.ArgumentParser(prog="python -m models.publish", description=__doc__.split("\n")[0])
    parser.add_argument("weights", help="the weights folder (with model_index.json), e.g. weights")
    parser.add_argument("repo_id", metavar="OWNER/NAME", help="the model repository")
    parser.add_argument("--cache", metavar="DIR", help="write into this Hub cache folder instead of uploading")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    args = parser.parse_args(argv)
    try:
        if args.cache:
            where = str(to_cache(args.weights, args.repo_id, args.cache))
        else:
            where = upload(args.weights, args.repo_id, args.private, os.environ.get("HF_TOKEN"))
    except InputError as err:
        print(json.dumps({"repo_id": args.repo_id, "error": str(err)}))
        return 1
    print(json.dumps({"repo_id": args.repo_id, "published": where, "files": len(repo_files(args.weights))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
