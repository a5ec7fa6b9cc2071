"""Pick the back end that `--model` (and `--controlnet`) name: ours, the keypoint-LDM fork, or SD + ControlNet.

    load_backend("weights")                                          # PosePipeline: our folder (or Hub id)
    load_backend("model.ckpt")                                       # ForkPipeline: the fork's CompVis checkpoint
    load_backend("an/sd15-anime", "lllyasviel/control_v11p_sd15_openpose")   # ControlNetBackend

Every back end answers the calls of `models.backend.Backend` by keyword; `capabilities(backend)` names the extras
it offers (its `Capabilities`: style sliders, prompts, directions, refinement, CLIP guidance), so the UI shows
only those.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from models.backend import CHECKPOINT_SUFFIXES, Capabilities, is_offline, unreachable
from models.errors import InputError

Kind = Literal["ours", "fork", "sd"]

# The OpenPose ControlNet for SD 1.5 that the error message suggests (the one Hub id this module names).
OPENPOSE_CONTROLNET = "lllyasviel/control_v11p_sd15_openpose"


def _looks_like_hub_id(name: str) -> bool:
    """`owner/name`, not a path (no leading `.` or `/`, one slash, no checkpoint suffix)."""
    return (
        name.count("/") == 1
        and not name.startswith((".", "/", "~"))
        and not name.lower().endswith(CHECKPOINT_SUFFIXES)
        and "\\" not in name
    )


def _kind_of_class(class_name: str, where: str) -> Kind:
    """The back end for a `model_index.json` `_class_name`."""
    if class_name == "PosePipeline":
        return "ours"
    if class_name.startswith("StableDiffusion") and "XL" not in class_name and "3" not in class_name:
        return "sd"
    raise InputError(
        f"{where} is a {class_name or 'diffusers'} model, which Pose Studio cannot run "
        "(it runs its own models, the keypoint LDM's checkpoint and Stable Diffusion 1.x with --controlnet)."
    )


def _folder_kind(folder: Path) -> Kind:
    """The back end for a local folder, from its model_index.json or its sub-folders."""
    index = folder / "model_index.json"
    if index.is_file():
        try:
            class_name = str(json.loads(index.read_text()).get("_class_name", ""))
        except (OSError, ValueError, AttributeError):
            raise InputError(f"The model folder {folder} has a model_index.json that is not valid JSON.") from None
        return _kind_of_class(class_name, f"The folder {folder}")
    if (folder / "text_encoder").is_dir() and (folder / "unet").is_dir():
        return "sd"
    if any((folder / s).is_dir() for s in ("autoencoder", "unet", "scheduler")):
        return "ours"  # PosePipeline.from_pretrained says which of its sub-folders are missing
    raise InputError(
        f"The folder {folder} is neither a Pose Studio model (autoencoder/, unet/, scheduler/) "
        "nor a diffusers Stable Diffusion model."
    )


def _hub_kind(repo: str) -> Kind:
    """The back end for a Hub repository, from its model_index.json (the cached one when offline)."""
    try:
        from huggingface_hub import hf_hub_download

        index = hf_hub_download(repo, "model_index.json", local_files_only=is_offline())
        class_name = str(json.loads(Path(index).read_text()).get("_class_name", ""))
    except InputError:
        raise
    except Exception:  # noqa: BLE001 -- offline, unknown repo, no network, no model_index.json
        raise InputError(unreachable(repo)) from None
    return _kind_of_class(class_name, f"The Hub repository {repo}")


def model_kind(model: str | os.PathLike) -> Kind:
    """Which back end `model` needs: "ours", "fork" (a checkpoint file) or "sd" (a diffusers SD model)."""
    name = str(model)
    path = Path(name).expanduser()
    if path.is_file():
        return "fork"  # any file is read as a checkpoint; load_backend says what else it is
    if path.is_dir():
        return _folder_kind(path)
    if not _looks_like_hub_id(name):
        raise InputError(f"The model {name} does not exist.")
    return _hub_kind(name)


def load_backend(model: str | os.PathLike, controlnet: str | os.PathLike | None = None, device: Any = None) -> Any:
    """The back end for `--model` (and `--controlnet`), loaded on `device` (default: cuda when present)."""
    name = str(model)
    kind = model_kind(name)
    if controlnet and kind != "sd":
        what = "the keypoint LDM's checkpoint" if kind == "fork" else "a Pose Studio model"
        raise InputError(f"--controlnet goes with a Stable Diffusion model, and {name} is {what}.")
    if kind == "fork":
        from models.compvis import ForkPipeline

        return ForkPipeline.from_checkpoint(Path(name).expanduser(), device=device)
    if kind == "sd":
        if not controlnet:
            raise InputError(
                f"{name} is a Stable Diffusion model: add --controlnet with an OpenPose ControlNet "
                f"(a diffusers folder or Hub id such as {OPENPOSE_CONTROLNET})."
            )
        from models.controlnet_backend import ControlNetBackend

        return ControlNetBackend.from_pretrained(name, str(controlnet), device=device)
    from models.pipeline import PosePipeline

    return PosePipeline.from_pretrained(name, device=device)


def capabilities(backend: Any) -> frozenset[str]:
    """The names of the extras a back end offers (its `CAPABILITIES.names`); a look-alike without them offers
    PosePipeline's."""
    caps = getattr(backend, "CAPABILITIES", None)
    if caps is None:
        from models.pipeline import PosePipeline

        caps = PosePipeline.CAPABILITIES
    return caps.names if isinstance(caps, Capabilities) else frozenset(caps)


__all__ = ["OPENPOSE_CONTROLNET", "capabilities", "is_offline", "load_backend", "model_kind", "unreachable"]
