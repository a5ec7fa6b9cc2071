"""CLIP for prompts: our small domain CLIP (open_clip classes, trained on renders) or any public open_clip model.

    scorer = load_clip("weights/clip")                        # ours: open_clip's hf-hub folder layout
    scorer = load_clip("ViT-B-32:laion2b_s34b_b79k")          # a public model from the local cache
    scorer = load_clip("ViT-B-32:/path/to/checkpoint.safetensors")
    e = scorer.encode_image(images)                           # (B, 3, H, W) in [-1, 1] -> (B, D), differentiable

A folder holds `open_clip_config.json` (`{"model_cfg": ..., "preprocess_cfg": ...}`) and
`open_clip_model.safetensors`, the layout open_clip reads with its `local-dir:` schema and pushes to the Hub.
open_clip is imported lazily: it pulls in torchvision and transformers (seconds on a small CPU).
"""

from __future__ import annotations

import functools
import json
import os
from copy import deepcopy
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from models import paths
from models.errors import InputError

DEFAULT_CLIP = paths.CLIP
CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")

# Our open_clip model configs (`models/clip_configs/*.json`, registered with open_clip so that
# `PoseStudio-CLIP:/path/to/checkpoint.safetensors` works like any built-in name).
# PoseStudio-CLIP, the domain CLIP: the token embedding (49,408 BPE tokens x text width) dominates the size,
# so the text tower is narrow (64 wide, 4 layers) and the image tower (ViT, 192 wide, 6 layers) carries the
# parameters: 6.1 M in all, ~24.5 MB in fp32. 96 px keeps the eyes (a few pixels at 128 px) visible; patch 8
# gives 12 x 12 tokens. PoseStudio-CLIP-tiny: a few-kB-per-layer model for tests (same classes, same tokenizer).
CONFIG_DIR = Path(__file__).resolve().parent / "clip_configs"
DOMAIN_MODEL_NAME = "PoseStudio-CLIP"
TINY_MODEL_NAME = "PoseStudio-CLIP-tiny"
DOMAIN_MODEL_CFG: dict[str, Any] = json.loads((CONFIG_DIR / f"{DOMAIN_MODEL_NAME}.json").read_text())
TINY_MODEL_CFG: dict[str, Any] = json.loads((CONFIG_DIR / f"{TINY_MODEL_NAME}.json").read_text())
# Mean and std 0.5 so that our [-1, 1] images enter unchanged.
DOMAIN_PREPROCESS_CFG: dict[str, Any] = {"size": 96, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
_OUR_NAMES = (DOMAIN_MODEL_NAME, TINY_MODEL_NAME)


class ClipScorer:
    """An open_clip model and its tokenizer, taking our images ((B, 3, H, W) in [-1, 1]) and plain strings."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, name: str = "", model_cfg: dict | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.model_cfg = deepcopy(model_cfg) if model_cfg is not None else None
        pp = _preprocess_cfg(model)
        size = pp.get("size", 224)
        self.image_size: int = int(size if isinstance(size, int) else size[0])
        self.preprocess_cfg = {"size": self.image_size, "mean": list(pp["mean"]), "std": list(pp["std"])}
        self.context_length: int = int(getattr(tokenizer, "context_length", None) or 77)
        self._mean = torch.tensor(self.preprocess_cfg["mean"]).view(1, 3, 1, 1)
        self._std = torch.tensor(self.preprocess_cfg["std"]).view(1, 3, 1, 1)

    # -- placement -------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """The device of the model's weights."""
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the model's weights."""
        return next(self.model.parameters()).dtype

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> ClipScorer:
        """Move the model (in place) and return self."""
        self.model.to(device=device, dtype=dtype)
        return self

    def requires_grad_(self, flag: bool = False) -> ClipScorer:
        """Freeze (default) or unfreeze the weights; gradients still flow to the inputs when frozen."""
        self.model.requires_grad_(flag)
        return self

    @property
    def logit_scale(self) -> float:
        """CLIP's learned temperature, exp(t), capped at 100 as in training."""
        return float(self.model.logit_scale.detach().exp().clamp(max=100).item())

    # -- images ---------------------------------------------------------------------------------------
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> the model's input: centre square, resized (antialiased), normalised."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise InputError(f"CLIP takes images shaped (B, 3, H, W); got {tuple(images.shape)}.")
        h, w = images.shape[-2:]
        if h != w:  # centre square crop, as open_clip's own transform does after resizing the short side
            s = min(h, w)
            top, left = (h - s) // 2, (w - s) // 2
            images = images[..., top : top + s, left : left + s]
        x = (images.float() + 1.0) / 2.0
        if x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True,
                              align_corners=False)  # fmt: skip
        x = (x - self._mean.to(x.device)) / self._std.to(x.device)
        return x.to(device=self.device, dtype=self.dtype)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings (B, D), float32, differentiable with respect to `images`."""
        return F.normalize(self.model.encode_image(self.preprocess(images)).float(), dim=-1)

    # -- text -----------------------------------------------------------------------------------------
    def tokenize(self, texts: list[str] | str) -> tuple[torch.Tensor, list[bool]]:
        """(tokens (B, context_length), truncated per text): a text longer than the context is cut there."""
        texts = [texts] if isinstance(texts, str) else [str(t) for t in texts]
        tokens = self.tokenizer(texts)
        return tokens, [_is_truncated(self.tokenizer, t, self.context_length) for t in texts]

    def encode_text(self, texts: list[str] | str) -> torch.Tensor:
        """L2-normalised text embeddings (B, D), float32 (long texts are cut at the context length)."""
        tokens, _ = self.tokenize(texts)
        return F.normalize(self.model.encode_text(tokens.to(self.device)).float(), dim=-1)

    def zero_shot(self, images: torch.Tensor, class_prompts: list[str]) -> torch.Tensor:
        """Class probabilities (B, C): softmax of the scaled cosine similarity to each prompt (Radford et al. 2021)."""
        with torch.no_grad():
            text = self.encode_text(class_prompts)
            img = self.encode_image(images)
        return (self.logit_scale * img @ text.T).softmax(dim=-1)

    # -- saving ---------------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path, card: str | None = None) -> Path:
        """Write `open_clip_config.json` + `open_clip_model.safetensors` (+ README.md when `card` is given)."""
        if self.model_cfg is None:
            raise InputError("This CLIP has no open_clip config to save (only our own and local-folder CLIPs do).")
        return save_clip(self.model, self.model_cfg, folder, preprocess_cfg=self.preprocess_cfg, card=card)


# -- building and saving ------------------------------------------------------------------------------
def build_clip(model_cfg: dict | None = None, preprocess_cfg: dict | None = None, seed: int = 0) -> ClipScorer:
    """A randomly initialised open_clip `CLIP` from a config (the domain config by default) and its tokenizer."""
    import open_clip
    from open_clip.model import set_model_preprocess_cfg

    model_cfg = deepcopy(model_cfg if model_cfg is not None else DOMAIN_MODEL_CFG)
    pp = dict(preprocess_cfg if preprocess_cfg is not None else DOMAIN_PREPROCESS_CFG)
    pp["size"] = model_cfg["vision_cfg"]["image_size"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.CLIP(**deepcopy(model_cfg))
    set_model_preprocess_cfg(model, _full_preprocess_cfg(pp))
    tokenizer = open_clip.SimpleTokenizer(context_length=model_cfg["text_cfg"].get("context_length", 77))
    return ClipScorer(model, tokenizer, name="random", model_cfg=model_cfg)


def save_clip(
    model: torch.nn.Module,
    model_cfg: dict,
    folder: str | Path,
    preprocess_cfg: dict | None = None,
    card: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Save an open_clip model in open_clip's hf-hub layout (what `load_clip(folder)` and `local-dir:` read)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pp = preprocess_cfg if preprocess_cfg is not None else _preprocess_cfg(model)
    pp = {
        "size": pp.get("size", model_cfg["vision_cfg"]["image_size"]),
        "mean": list(pp["mean"]),
        "std": list(pp["std"]),
    }
    config = {"model_cfg": model_cfg, "preprocess_cfg": pp}
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    state = {
        k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
        for k, v in model.state_dict().items()
    }
    save_file(state, str(folder / WEIGHTS_NAME))
    if card is not None:
        (folder / "README.md").write_text(card)
    return folder


# -- loading ------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=2)
def _load_clip_cached(spec: str) -> ClipScorer:
    return load_clip(spec)


def resolve_clip(clip: Any) -> ClipScorer:
    """A ClipScorer: the one given, or `load_clip(spec)` cached per process (None: `DEFAULT_CLIP`)."""
    if clip is None or isinstance(clip, (str, Path)):
        return _load_clip_cached(str(DEFAULT_CLIP if clip is None else clip))
    return clip


def load_clip(spec: str | Path | None = None, device: str | torch.device | None = None) -> ClipScorer:
    """A CLIP from a folder of ours, `NAME:TAG` (open_clip pretrained tag, from the cache offline),
    `NAME:/path/checkpoint.safetensors|.pt|.bin`, or `hf-hub:org/repo`; bad specs raise one-sentence InputErrors."""
    spec = str(spec).strip() if spec is not None and str(spec).strip() else str(DEFAULT_CLIP)
    spec = spec.removeprefix("local-dir:")
    if spec.startswith("hf-hub:"):
        scorer = _load_hub(spec[len("hf-hub:") :])
    elif Path(spec).is_dir():
        scorer = _load_folder(Path(spec))
    elif ":" in spec and not Path(spec).exists():
        name, rest = spec.split(":", 1)
        scorer = _load_named(name.strip(), rest.strip())
    elif Path(spec).is_file():
        raise InputError(f"{spec} is a file: give a CLIP folder, or NAME:{spec} with the open_clip model name.")
    else:
        raise InputError(
            f"No CLIP at {spec}: give a folder with {CONFIG_NAME}, NAME:TAG (e.g. ViT-B-32:laion2b_s34b_b79k) "
            "or NAME:/path/to/checkpoint.safetensors."
        )
    scorer.requires_grad_(False)  # loaded CLIPs only score: gradients flow to the images, not the weights
    if device is not None:
        scorer.to(device)
    return scorer


def _load_folder(folder: Path) -> ClipScorer:
    """Our layout: open_clip_config.json + open_clip_model.safetensors (or another checkpoint open_clip finds)."""
    import open_clip

    cfg_path = folder / CONFIG_NAME
    if not cfg_path.is_file():
        raise InputError(f"The CLIP folder {folder} has no {CONFIG_NAME}.")
    try:
        config = json.loads(cfg_path.read_text())
        model_cfg = config["model_cfg"]
        context_length = int(model_cfg.get("text_cfg", {}).get("context_length", 77))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise InputError(f"{cfg_path} is not an open_clip config (JSON with a 'model_cfg' object).") from None
    if not any(folder.glob(f"*{s}") for s in CHECKPOINT_SUFFIXES):
        raise InputError(f"The CLIP folder {folder} has no weights ({WEIGHTS_NAME}).")
    try:
        model = open_clip.create_model(f"local-dir:{folder}", device="cpu", weights_only=True, load_weights=True)
        tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}", context_length=context_length)
    except Exception as e:  # noqa: BLE001 - open_clip raises many types; the user gets one sentence
        raise InputError(f"The CLIP in {folder} could not be loaded ({_short(e)}).") from None
    return ClipScorer(model, tokenizer, name=str(folder), model_cfg=model_cfg)


def _load_named(name: str, rest: str) -> ClipScorer:
    """NAME:TAG or NAME:/path/to/checkpoint."""
    import open_clip

    _register_configs()
    if name not in open_clip.list_models():
        raise InputError(
            f"Unknown open_clip model name {name!r}: open_clip.list_models() lists them (e.g. ViT-B-32, RN50)."
        )
    if not rest:
        raise InputError(f"Give a pretrained tag or a checkpoint path after {name}: (e.g. {name}:laion2b_s34b_b79k).")
    looks_like_path = "/" in rest or "\\" in rest or rest.lower().endswith(CHECKPOINT_SUFFIXES)
    if looks_like_path:
        return _load_checkpoint(name, Path(rest).expanduser())
    return _load_tag(name, rest)


def _load_checkpoint(name: str, path: Path) -> ClipScorer:
    """An open_clip model name plus a local state-dict file (safetensors, or torch.load with weights_only)."""
    import open_clip

    if not path.is_file():
        raise InputError(f"No checkpoint file at {path}.")
    if not path.name.lower().endswith(CHECKPOINT_SUFFIXES):
        raise InputError(f"{path} is not a checkpoint: give a .safetensors, .pt, .pth or .bin file.")
    # our configs were trained on [-1, 1] images: mean and std 0.5 (public names keep their own)
    pp = {k: tuple(DOMAIN_PREPROCESS_CFG[k]) for k in ("mean", "std")} if name in _OUR_NAMES else None
    try:
        model = open_clip.create_model(name, pretrained=str(path), device="cpu", weights_only=True,
                                       force_preprocess_cfg=pp)  # fmt: skip
        tokenizer = open_clip.get_tokenizer(name)
    except Exception as e:  # noqa: BLE001
        raise InputError(f"{path} is not a readable {name} checkpoint ({_short(e)}).") from None
    return ClipScorer(model, tokenizer, name=f"{name}:{path}", model_cfg=open_clip.get_model_config(name))


def _load_tag(name: str, tag: str) -> ClipScorer:
    """A pretrained tag: from the local cache when it is there, else downloaded unless offline."""
    import open_clip
    from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

    cfg = get_pretrained_cfg(name, tag)
    if not cfg:
        tags = ", ".join(list_pretrained_tags_by_model(name)[:8]) or "none"
        raise InputError(f"open_clip has no pretrained tag {tag!r} for {name} (known: {tags}).")
    cached = _cached_weights(cfg)
    if cached is None and _offline():
        raise InputError(
            f"The open_clip weights {name}:{tag} are not in the local cache and cannot be downloaded offline "
            "(download them once with network access, or give a local checkpoint as NAME:/path/to/file)."
        )
    pp = {k: cfg[k] for k in ("mean", "std") if k in cfg}
    try:
        if cached is not None:  # read the cached file directly so that nothing touches the network
            model = open_clip.create_model(name, pretrained=cached, device="cpu", weights_only=True,
                                           force_quick_gelu=bool(cfg.get("quick_gelu", False)),
                                           force_preprocess_cfg=pp)  # fmt: skip
        else:
            model = open_clip.create_model(name, pretrained=tag, device="cpu", weights_only=True)
        tokenizer = open_clip.get_tokenizer(name)
    except Exception as e:  # noqa: BLE001
        where = "from the cache" if cached else "(no network, or the download failed)"
        raise InputError(f"The open_clip weights {name}:{tag} could not be loaded {where}: {_short(e)}.") from None
    return ClipScorer(model, tokenizer, name=f"{name}:{tag}", model_cfg=open_clip.get_model_config(name))


def _load_hub(repo: str) -> ClipScorer:
    """hf-hub:org/repo, from the Hugging Face cache (downloaded unless offline)."""
    import open_clip

    cached = _cached_hub_file(repo, CONFIG_NAME)
    if cached is None and _offline():
        raise InputError(
            f"The CLIP hf-hub:{repo} is not in the local Hugging Face cache and cannot be downloaded offline."
        )
    if cached is not None:
        folder = Path(cached).parent
        if any(folder.glob(f"*{s}") for s in CHECKPOINT_SUFFIXES):
            return _load_folder(folder)
    try:
        model = open_clip.create_model(f"hf-hub:{repo}", device="cpu", weights_only=True)
        tokenizer = open_clip.get_tokenizer(f"hf-hub:{repo}")
    except Exception as e:  # noqa: BLE001
        raise InputError(f"The CLIP hf-hub:{repo} could not be loaded ({_short(e)}).") from None
    return ClipScorer(model, tokenizer, name=f"hf-hub:{repo}")


# -- helpers ------------------------------------------------------------------------------------------
_registered = False


def _register_configs() -> None:
    """Add `models/clip_configs/*.json` to open_clip's model registry (once)."""
    global _registered
    if not _registered:
        import open_clip

        open_clip.add_model_config(CONFIG_DIR)
        _registered = True


def _offline() -> bool:
    """HF_HUB_OFFLINE (read now, not at import as huggingface_hub does) or TRANSFORMERS_OFFLINE."""
    v = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return v.strip().lower() in {"1", "true", "yes", "on"}


def _cached_weights(cfg: dict) -> str | None:
    """The local file for a pretrained tag's weights, if already downloaded (Hugging Face cache or ~/.cache/clip)."""
    if cfg.get("file") and Path(cfg["file"]).is_file():
        return str(cfg["file"])
    hub = cfg.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub)
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        for n in names:
            hit = _cached_hub_file(repo, n)
            if hit:
                return hit
    url = cfg.get("url", "")
    if url:
        target = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if target.is_file():
            return str(target)
    return None


def _cached_hub_file(repo: str, filename: str) -> str | None:
    """A file of a Hub repo from the local Hugging Face cache, or None (never touches the network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id=repo, filename=filename)
    except Exception:  # noqa: BLE001 - a malformed repo id is just "not cached"
        return None
    return hit if isinstance(hit, str) and Path(hit).is_file() else None


def _preprocess_cfg(model: torch.nn.Module) -> dict:
    """open_clip's preprocessing config attached to the model (size, mean, std)."""
    from open_clip.model import get_model_preprocess_cfg

    pp = dict(get_model_preprocess_cfg(model))
    pp.setdefault("mean", (0.48145466, 0.4578275, 0.40821073))  # OpenAI's, open_clip's default
    pp.setdefault("std", (0.26862954, 0.26130258, 0.27577711))
    return pp


def _full_preprocess_cfg(pp: dict) -> dict:
    """open_clip's full PreprocessCfg dict with our size, mean and std."""
    from dataclasses import asdict

    from open_clip.transform import PreprocessCfg

    full = asdict(PreprocessCfg())
    full.update({k: (tuple(v) if isinstance(v, list) else v) for k, v in pp.items()})
    return full


def _is_truncated(tokenizer: Any, text: str, context_length: int) -> bool:
    """Whether `text` has more tokens than fit between the start and end tokens."""
    if hasattr(tokenizer, "encode") and hasattr(tokenizer, "sot_token_id"):  # open_clip's SimpleTokenizer
        return len(tokenizer.encode(text)) + 2 > context_length
    inner = getattr(tokenizer, "tokenizer", None)  # open_clip's HFTokenizer wraps a transformers tokenizer
    if inner is not None:
        try:
            return len(inner(text)["input_ids"]) > context_length
        except Exception:  # noqa: BLE001
            return False
    return False


def _short(e: BaseException) -> str:
    """The first line of an exception, at most 200 characters, without a trailing full stop."""
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return (text[:197] + "...") if len(text) > 200 else text.rstrip(".")
