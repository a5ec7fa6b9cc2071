"""The keypoint-LDM fork's CompVis checkpoint as diffusers components, and `ForkPipeline` to sample it.

    pipe = ForkPipeline.from_checkpoint("model.ckpt")        # .ckpt (read weights-only) or .safetensors
    images, states = pipe(pose, seed=0, steps=50, sampler="ddim")

The fork (lxj616/latent-diffusion, `configs/latent-diffusion/danbooru-keypoints-ldm-vq-4.yaml`):

    first_stage_model.*        taming VQ-f4 (embed_dim 3, n_embed 8192, ch 128, ch_mult 1,2,4)  -> diffusers VQModel
    model.diffusion_model.*    openaimodel.UNetModel (model_channels 160, channel_mult 1,2,3,4,
                               attention at ds 2,4,8, 8 heads, spatial transformer, context_dim 17) -> UNet2DConditionModel
    condition                  the 17 keypoints as cells of a 32 x 32 grid: a [1, 17] float context
    schedule                   1000 steps, LDM "linear" betas 0.0015 -> 0.0195 (= diffusers' scaled_linear), eps

Both models are rebuilt from the shapes in the checkpoint (nothing is unpickled but tensors), every key is
renamed by the tables below and every shape is checked against the diffusers module before loading, so a
checkpoint of another architecture fails with the keys it lacks.

Symbols: z_T the initial noise, c the [1, 17] keypoint context, eps the UNet's noise prediction,
z_0 the final latent (decoded as VQModel.decode(z_0 / scale_factor), quantised as the fork's first stage does).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDPMScheduler, UNet2DConditionModel, VQModel
from PIL import Image

from models.autoencoder import to_pil
from models.backend import (
    Callback,
    Capabilities,
    GenerationState,
    ModelFn,
    NoStyleBackend,
    Wrap,
    default_device,
    generate,
    model_sizes,
    read_state_dict,
    state_settings,
)
from models.errors import InputError
from models.pose import FORK_FRAME, NUM_KEYPOINTS, Pose, to_fork

UNET_PREFIX = "model.diffusion_model."
EMA_PREFIX = "model_ema."
VQ_PREFIX = "first_stage_model."
# Keys whose absence means "not the fork's layout" (checked before anything is built).
REQUIRED_KEYS = (
    UNET_PREFIX + "input_blocks.0.0.weight",
    UNET_PREFIX + "out.2.weight",
    VQ_PREFIX + "encoder.conv_in.weight",
    VQ_PREFIX + "decoder.conv_out.weight",
    VQ_PREFIX + "quantize.embedding.weight",
    VQ_PREFIX + "quant_conv.weight",
)

# The fork's config (what the checkpoint's shapes cannot tell).
FORK_NUM_HEADS = 8  # num_heads: 8 with legacy: false, so each head has channels / 8 dimensions
FORK_IMAGE_SIZE = 64  # image_size of the UNet: a 64 x 64 latent, 256 px images through the f4 first stage
FORK_GRID = 32  # the keypoints are cells of a 32 x 32 grid over the 512 frame (build_tensor_from_kps(kps, dim=32))
FORK_BETAS = (0.0015, 0.0195)  # linear_start, linear_end of the fork's config
FORK_TIMESTEPS = 1000
MAX_STEPS = 1000  # the fork's own sampler ran 500 DDIM steps (-c 500)
DEFAULT_STEPS = 50


def is_fork_checkpoint(sd: dict[str, torch.Tensor]) -> bool:
    """Whether a state dict has the fork's layout (an openaimodel UNet and a VQ first stage)."""
    return all(k in sd for k in REQUIRED_KEYS)


def missing_fork_keys(sd: dict[str, torch.Tensor]) -> list[str]:
    """The fork's required keys that `sd` lacks."""
    return [k for k in REQUIRED_KEYS if k not in sd]


def describe_other(sd: dict[str, torch.Tensor]) -> str:
    """One sentence on why `sd` is not the fork's checkpoint, naming what it lacks."""
    missing = missing_fork_keys(sd)
    kind = ""
    if any(k.startswith("cond_stage_model.") for k in sd) and any(k.startswith(UNET_PREFIX) for k in sd):
        kind = " (it looks like a Stable Diffusion checkpoint: give a diffusers folder or Hub id with --controlnet)"
    elif any(k.startswith(UNET_PREFIX) for k in sd) and VQ_PREFIX + "quantize.embedding.weight" in missing:
        kind = " (its first stage is not a VQ model)"
    return (
        f"The checkpoint is not the keypoint LDM's: it lacks {len(missing)} of its keys "
        f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}){kind}."
    )


# -- key renaming ------------------------------------------------------------------------------------
def _by_prefix(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of `sd` under `prefix`, with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def _ema_weights(sd: dict[str, torch.Tensor], unet_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """The EMA copy of the UNet (LitEma stores `model_ema.<key without dots>`), or None when it is incomplete."""
    flat = {key: EMA_PREFIX + ("diffusion_model." + key).replace(".", "") for key in unet_sd}
    return {key: sd[name] for key, name in flat.items()} if all(name in sd for name in flat.values()) else None


def rename(
    sd: dict[str, torch.Tensor], table: dict[str, tuple[str, dict[str, str]]]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename keys by their longest prefix in `table` (prefix -> (new prefix, renames of the rest)); also unmatched keys."""
    prefixes = sorted(table, key=len, reverse=True)
    out: dict[str, torch.Tensor] = {}
    unmatched: list[str] = []
    for key, value in sd.items():
        prefix = next((p for p in prefixes if key.startswith(p + ".")), None)
        if prefix is None:
            unmatched.append(key)
            continue
        new_prefix, parts = table[prefix]
        rest = key[len(prefix) + 1 :]
        for old, new in parts.items():
            if rest.startswith(old + "."):
                rest = new + rest[len(old) :]
                break
        out[f"{new_prefix}.{rest}"] = value
    return out, unmatched


def load_checked(model: torch.nn.Module, sd: dict[str, torch.Tensor], unmatched: list[str], what: str) -> None:
    """Load `sd` into `model` after checking that every key exists on both sides with the same shape."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    extra = unmatched + [k for k in sd if k not in expected]
    if missing or extra:
        part = f"lacks {len(missing)} keys ({', '.join(missing[:3])})" if missing else ""
        if extra:
            part += (" and " if part else "") + f"has {len(extra)} unknown ones ({', '.join(extra[:3])})"
        raise InputError(f"The checkpoint's {what} does not have the fork's layout: it {part}.")
    for key, tensor in expected.items():
        value = sd[key]
        if value.shape != tensor.shape and value.numel() == tensor.numel() and value.dim() > tensor.dim():
            value = value.reshape(tensor.shape)  # 1x1 convolutions of the CompVis attention -> linear layers
        if value.shape != tensor.shape:
            raise InputError(
                f"The checkpoint's {what} key {key} has shape {tuple(value.shape)} where {tuple(tensor.shape)} fits."
            )
        sd[key] = value
    model.load_state_dict(sd, strict=True)


# -- the UNet: openaimodel.UNetModel -> UNet2DConditionModel ----------------------------------------
_RESNET_PARTS = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}  # the SpatialTransformer's inner names (norm, proj_in, transformer_blocks.*, proj_out) are diffusers' too


def _input_layout(unet_sd: dict[str, torch.Tensor]) -> list[list[int]]:
    """The input blocks grouped by level: `[[1, 2], [4, 5], ...]` (the downsamplers between them left out)."""
    ids = sorted({int(m.group(1)) for k in unet_sd if (m := re.match(r"input_blocks\.(\d+)\.", k))})
    levels: list[list[int]] = [[]]
    for i in ids[1:]:
        if f"input_blocks.{i}.0.op.weight" in unet_sd:
            levels.append([])
        else:
            levels[-1].append(i)
    return levels


def unet_config(unet_sd: dict[str, torch.Tensor], num_heads: int = FORK_NUM_HEADS) -> dict[str, Any]:
    """The UNet2DConditionModel config of an openaimodel UNet's state dict (shapes only; heads from the fork)."""
    try:
        conv_in = unet_sd["input_blocks.0.0.weight"]
        levels = _input_layout(unet_sd)
        per_level = {len(ids) for ids in levels}
        if len(per_level) != 1 or not levels[0]:
            raise InputError(
                "The checkpoint's UNet has a different number of blocks per level, which is not supported."
            )
        channels = [int(unet_sd[f"input_blocks.{ids[0]}.0.out_layers.3.weight"].shape[0]) for ids in levels]
        attn = [f"input_blocks.{ids[0]}.1.proj_in.weight" in unet_sd for ids in levels]
        proj_in = unet_sd["middle_block.1.proj_in.weight"]
        context_dim = int(unet_sd["middle_block.1.transformer_blocks.0.attn2.to_k.weight"].shape[1])
        depth = 1 + max(
            int(m.group(1)) for k in unet_sd if (m := re.match(r"middle_block\.1\.transformer_blocks\.(\d+)\.", k))
        )
        out_channels = int(unet_sd["out.2.weight"].shape[0])
    except KeyError as err:
        raise InputError(f"The checkpoint's UNet lacks the key model.diffusion_model.{err.args[0]}.") from None
    return {
        "sample_size": FORK_IMAGE_SIZE,
        "in_channels": int(conv_in.shape[1]),
        "out_channels": out_channels,
        "block_out_channels": tuple(channels),
        "layers_per_block": per_level.pop(),
        "down_block_types": tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        "up_block_types": tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        "cross_attention_dim": context_dim,
        "attention_head_dim": num_heads,  # diffusers' name for the number of heads (SD 1.x's convention)
        "transformer_layers_per_block": depth,
        "use_linear_projection": proj_in.dim() == 2,  # SD 2-style linear proj_in; the fork's is a 1x1 conv
        "norm_num_groups": 32,  # openaimodel's GroupNorm32
    }


def unet_table(config: dict[str, Any]) -> dict[str, tuple[str, dict[str, str]]]:
    """openaimodel prefix -> (UNet2DConditionModel prefix, renames inside it), for the layout in `config`."""
    attn = [t.startswith("CrossAttn") for t in config["down_block_types"]]
    n, per = len(attn), config["layers_per_block"]
    table: dict[str, tuple[str, dict[str, str]]] = {
        "time_embed.0": ("time_embedding.linear_1", {}),
        "time_embed.2": ("time_embedding.linear_2", {}),
        "input_blocks.0.0": ("conv_in", {}),
        "middle_block.0": ("mid_block.resnets.0", _RESNET_PARTS),
        "middle_block.1": ("mid_block.attentions.0", {}),
        "middle_block.2": ("mid_block.resnets.1", _RESNET_PARTS),
        "out.0": ("conv_norm_out", {}),
        "out.2": ("conv_out", {}),
    }
    k = 1
    for level in range(n):
        for r in range(per):
            table[f"input_blocks.{k}.0"] = (f"down_blocks.{level}.resnets.{r}", _RESNET_PARTS)
            if attn[level]:
                table[f"input_blocks.{k}.1"] = (f"down_blocks.{level}.attentions.{r}", {})
            k += 1
        if level < n - 1:
            table[f"input_blocks.{k}.0.op"] = (f"down_blocks.{level}.downsamplers.0.conv", {})
            k += 1
    k = 0
    for i, level in enumerate(reversed(range(n))):
        for r in range(per + 1):
            table[f"output_blocks.{k}.0"] = (f"up_blocks.{i}.resnets.{r}", _RESNET_PARTS)
            j = 1
            if attn[level]:
                table[f"output_blocks.{k}.1"] = (f"up_blocks.{i}.attentions.{r}", {})
                j = 2
            if level > 0 and r == per:
                table[f"output_blocks.{k}.{j}.conv"] = (f"up_blocks.{i}.upsamplers.0.conv", {})
            k += 1
    return table


def convert_unet(
    unet_sd: dict[str, torch.Tensor], num_heads: int = FORK_NUM_HEADS, sample_size: int = FORK_IMAGE_SIZE
) -> UNet2DConditionModel:
    """An openaimodel UNet state dict (prefix removed) -> a loaded UNet2DConditionModel."""
    config = unet_config(unet_sd, num_heads)
    config["sample_size"] = sample_size
    for width in config["block_out_channels"]:
        if width % num_heads or width % config["norm_num_groups"]:
            raise InputError(f"The checkpoint's UNet has {width} channels, which {num_heads} heads cannot split.")
    model = UNet2DConditionModel(**config)
    renamed, unmatched = rename(unet_sd, unet_table(config))
    load_checked(model, renamed, unmatched, "UNet")
    return model


# -- the first stage: taming VQModel -> diffusers VQModel ----------------------------------------------
_VQ_RESNET = {"nin_shortcut": "conv_shortcut"}  # norm1, conv1, norm2, conv2 keep their names
_VQ_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


def vq_config(vq_sd: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The diffusers VQModel config of a taming VQ first stage's state dict (shapes only)."""
    if any(re.match(r"(encoder\.down|decoder\.up)\.\d+\.attn\.", k) for k in vq_sd):
        raise InputError("The checkpoint's first stage has attention inside its levels, which is not supported.")
    try:
        n = 1 + max(int(m.group(1)) for k in vq_sd if (m := re.match(r"encoder\.down\.(\d+)\.", k)))
        per = 1 + max(int(m.group(1)) for k in vq_sd if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k)))
        channels = [int(vq_sd[f"encoder.down.{i}.block.0.conv2.weight"].shape[0]) for i in range(n)]
        config = {
            "in_channels": int(vq_sd["encoder.conv_in.weight"].shape[1]),
            "out_channels": int(vq_sd["decoder.conv_out.weight"].shape[0]),
            "down_block_types": ("DownEncoderBlock2D",) * n,
            "up_block_types": ("UpDecoderBlock2D",) * n,
            "block_out_channels": tuple(channels),
            "layers_per_block": per,
            "latent_channels": int(vq_sd["encoder.conv_out.weight"].shape[0]),  # z_channels (double_z: false)
            "vq_embed_dim": int(vq_sd["quant_conv.weight"].shape[0]),  # embed_dim
            "num_vq_embeddings": int(vq_sd["quantize.embedding.weight"].shape[0]),  # n_embed
            "norm_num_groups": 32,
            "scaling_factor": 1.0,  # LatentDiffusion's scale_factor lives in the LDM, not here
        }
    except (KeyError, ValueError) as err:
        raise InputError(f"The checkpoint's first stage lacks first_stage_model.{err.args[0]}.") from None
    return config


def vq_table(config: dict[str, Any]) -> dict[str, tuple[str, dict[str, str]]]:
    """taming prefix -> (diffusers VQModel prefix, renames inside it)."""
    n, per = len(config["block_out_channels"]), config["layers_per_block"]
    table: dict[str, tuple[str, dict[str, str]]] = {}
    for part in ("encoder", "decoder"):
        table[f"{part}.conv_in"] = (f"{part}.conv_in", {})
        table[f"{part}.conv_out"] = (f"{part}.conv_out", {})
        table[f"{part}.norm_out"] = (f"{part}.conv_norm_out", {})
        table[f"{part}.mid.block_1"] = (f"{part}.mid_block.resnets.0", _VQ_RESNET)
        table[f"{part}.mid.attn_1"] = (f"{part}.mid_block.attentions.0", _VQ_ATTN)
        table[f"{part}.mid.block_2"] = (f"{part}.mid_block.resnets.1", _VQ_RESNET)
    for i in range(n):
        for j in range(per):
            table[f"encoder.down.{i}.block.{j}"] = (f"encoder.down_blocks.{i}.resnets.{j}", _VQ_RESNET)
        if i < n - 1:
            table[f"encoder.down.{i}.downsample.conv"] = (f"encoder.down_blocks.{i}.downsamplers.0.conv", {})
    for i in range(n):  # the decoder's up.{n-1} is the lowest resolution: diffusers' up_blocks.0
        level = n - 1 - i
        for j in range(per + 1):
            table[f"decoder.up.{level}.block.{j}"] = (f"decoder.up_blocks.{i}.resnets.{j}", _VQ_RESNET)
        if level > 0:
            table[f"decoder.up.{level}.upsample.conv"] = (f"decoder.up_blocks.{i}.upsamplers.0.conv", {})
    for name in ("quant_conv", "post_quant_conv", "quantize.embedding"):
        table[name] = (name, {})
    return table


def convert_vq(vq_sd: dict[str, torch.Tensor]) -> VQModel:
    """A taming VQ first stage's state dict (prefix removed) -> a loaded diffusers VQModel."""
    vq_sd = {k: v for k, v in vq_sd.items() if not k.startswith("loss.")}  # training-only loss modules
    config = vq_config(vq_sd)
    for width in config["block_out_channels"]:
        if width % config["norm_num_groups"]:
            raise InputError(f"The checkpoint's first stage has {width} channels, not a multiple of 32.")
    model = VQModel(**config)
    renamed, unmatched = rename(vq_sd, vq_table(config))
    load_checked(model, renamed, unmatched, "first stage")
    return model


def fork_scheduler(sd: dict[str, torch.Tensor]) -> DDPMScheduler:
    """The fork's noise schedule: its stored `betas` when present, else the config's; eps prediction, LDM's DDIM spacing."""
    common = {
        "prediction_type": "epsilon",  # LatentDiffusion's default parameterization
        "clip_sample": False,
        "timestep_spacing": "leading",  # LDM's make_ddim_timesteps: range(0, T, T // steps) + 1
        "steps_offset": 1,
    }
    betas = sd.get("betas")
    if betas is not None and betas.dim() == 1 and len(betas) > 1:
        return DDPMScheduler(num_train_timesteps=len(betas), trained_betas=betas.double().tolist(), **common)
    return DDPMScheduler(
        num_train_timesteps=FORK_TIMESTEPS,
        beta_schedule="scaled_linear",  # LDM's "linear": linspace(sqrt(start), sqrt(end)) ** 2
        beta_start=FORK_BETAS[0],
        beta_end=FORK_BETAS[1],
        **common,
    )


# -- the condition ------------------------------------------------------------------------------------
def fork_tokens(fork_points: dict[str, list[float]], grid: int = FORK_GRID) -> np.ndarray:
    """The fork's `build_tensor_from_kps`: each point's cell `first // s + (second // s) * grid`, s = 512 / grid.

    The fork's files hold `[y, x]` and its dataset reads the pair as (x, y) = (file[0], file[1]), so the
    low digit is the row: we repeat that exactly, since it is what the model was trained on.
    """
    from models.pose import FORK_NAMES

    cell = FORK_FRAME / grid
    out = np.zeros(NUM_KEYPOINTS, dtype=np.float32)
    for i, name in enumerate(FORK_NAMES):
        a, b = (min(max(math.floor(v / cell), 0), grid - 1) for v in fork_points[name][:2])
        out[i] = a + b * grid
    return out


def fork_context(pose: Pose, grid: int = FORK_GRID) -> np.ndarray:
    """The `(1, 17)` context of a pose framed as PosePipeline frames it, as the fork's DummyEncoder passes it on."""
    from models.pipeline import frame_pose  # one framing for every back end: `output_pose` holds for all

    fitted = frame_pose(pose, FORK_FRAME)
    return fork_tokens(to_fork(fitted), grid)[None]


class ForkPipeline(NoStyleBackend):
    """The keypoint-LDM fork (VQ-f4 + keypoint cross-attention UNet): a `models.backend.Backend`."""

    # no style code, and no unconditional branch (the fork never dropped the keypoints in training): no guidance
    CAPABILITIES = Capabilities(max_steps=MAX_STEPS, max_guidance=None, clip_guidance=True)
    NAME = "The keypoint LDM"
    NO_STYLE = "The keypoint LDM has no style code; leave the style empty."

    def __init__(
        self,
        vqvae: VQModel,
        unet: UNet2DConditionModel,
        scheduler: DDPMScheduler,
        scale_factor: float = 1.0,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ):
        self.device = default_device(device)
        # float32 even on a GPU: the context carries raw cell indices up to 1023, which can overflow fp16 logits.
        self.dtype = dtype or torch.float32
        cast = {"dtype": self.dtype} if self.dtype != torch.float32 else {}
        self.vae = vqvae.to(self.device, **cast).eval().requires_grad_(False)
        self.unet = unet.to(self.device, **cast).eval().requires_grad_(False)
        self.scheduler = scheduler
        self.scheduler_config = scheduler.config
        self.scale_factor = float(scale_factor)
        self.latent_factor = 2 ** (len(vqvae.config.block_out_channels) - 1)
        self.native_size, self.size_multiple = model_sizes(self.latent_factor, unet.config)

    @classmethod
    def from_state_dict(
        cls,
        sd: dict[str, torch.Tensor],
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        use_ema: bool = True,
        sample_size: int = FORK_IMAGE_SIZE,
    ) -> ForkPipeline:
        """Build from the fork's state dict: the EMA UNet weights when the checkpoint has them all (`use_ema`)."""
        if not is_fork_checkpoint(sd):
            raise InputError(describe_other(sd))
        unet_sd = _by_prefix(sd, UNET_PREFIX)
        if use_ema:
            unet_sd = _ema_weights(sd, unet_sd) or unet_sd
        unet = convert_unet(unet_sd, sample_size=sample_size)
        vq = convert_vq(_by_prefix(sd, VQ_PREFIX))
        scale = sd.get("scale_factor")
        scale_factor = float(scale) if scale is not None and scale.numel() == 1 else 1.0
        return cls(vq, unet, fork_scheduler(sd), scale_factor, device=device, dtype=dtype)

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, device: str | torch.device | None = None, dtype: torch.dtype | None = None
    ) -> ForkPipeline:
        """Load the fork's `.ckpt` (weights only) or `.safetensors` file."""
        sd = read_state_dict(path)
        if not is_fork_checkpoint(sd):
            raise InputError(f"{Path(path).name}: {describe_other(sd)}")
        return cls.from_state_dict(sd, device=device, dtype=dtype)

    # -- building blocks (shared with CLIP guidance); checks, denoise and render: NoStyleBackend's ----
    def context(self, pose: Pose) -> torch.Tensor:
        """The `(1, 1, 17)` cross-attention context of the pose."""
        return torch.from_numpy(fork_context(pose))[None].to(self.device, self.dtype)

    def prepare(
        self,
        pose: Pose,
        seed: int,
        steps: int = DEFAULT_STEPS,
        guidance: float | None = None,
        sampler: str = "ddim",
        style: Any = None,
        eta: float = 0.0,
        size: int | None = None,
    ) -> GenerationState:
        """The state of one image before sampling: z_T drawn from `seed` (no style code; guidance recorded as 1.0)."""
        return self.noise_state(pose, seed, state_settings(steps, 1.0, sampler, eta, size or self.native_size))

    def predict(self, z_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """eps(z_t, t, c): the UNet's noise prediction (differentiable)."""
        return self.unet(z_t, t, encoder_hidden_states=context.expand(z_t.shape[0], -1, -1)).sample

    def model_fn(self, state: GenerationState) -> ModelFn:
        """`model_fn(z_t, t)` for `sample_loop`, with the state's pose as the context."""
        context = self.context(state.pose)
        return lambda x, t: self.predict(x, t, context)

    def decode_tensor(self, latent: torch.Tensor) -> torch.Tensor:
        """z_0 -> images in [-1, 1] through the VQ first stage (quantised; differentiable straight through)."""
        return self.vae.decode(latent.to(self.device, self.dtype) / self.scale_factor).sample

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> list[Image.Image]:
        """z_0 -> PIL images."""
        return to_pil(self.decode_tensor(latent))

    # -- the one way to run it ---------------------------------------------------------------------
    def __call__(
        self,
        pose: Pose,
        seed: int,
        steps: int = DEFAULT_STEPS,
        guidance: float | None = None,
        sampler: str = "ddim",
        style: Any = None,
        eta: float = 0.0,
        num_images: int = 1,
        callback: Callback | None = None,
        size: int | None = None,
        wrap: Wrap | None = None,
    ) -> tuple[list[Image.Image], list[GenerationState]]:
        """Draw `num_images` characters in `pose` (seed + i each); `guidance` is ignored (states record 1.0)."""
        return generate(
            self, pose=pose, seed=seed, num_images=num_images, callback=callback, wrap=wrap, steps=steps,
            guidance=guidance, sampler=sampler, style=style, eta=eta, size=size,
        )  # fmt: skip
