"""Public weights, offline: the keypoint-LDM fork's CompVis checkpoint and Stable Diffusion + OpenPose ControlNet.

Nothing is downloaded: the fixtures below write tiny random models in each format (a CompVis state dict
with the fork's key names, written from openaimodel's and taming's constructors, as .ckpt and
.safetensors; a diffusers SD folder and ControlNet folder with a tokenizer made from a tiny vocabulary),
and the tests load them through `--model` / `--controlnet` as a user would.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import app
from models.backends import capabilities, load_backend, model_kind
from models.errors import InputError
from models.pose import FORK_NAMES

FORK_SIZE = 128  # the tiny fork: f2 VQ first stage, a 64 x 64 latent (the fork's image_size)
SD_SIZE = 64  # the tiny SD: f2 VAE, a 32 x 32 latent


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


# -- the fork's key names, written from the constructors (not from our converter) -----------------
def _ldm_resblock(d: dict, p: str, cin: int, cout: int, emb: int) -> None:
    """openaimodel.ResBlock: in_layers (GroupNorm, SiLU, conv), emb_layers (SiLU, linear), out_layers, skip."""
    d |= {f"{p}.in_layers.0.weight": (cin,), f"{p}.in_layers.0.bias": (cin,)}
    d |= {f"{p}.in_layers.2.weight": (cout, cin, 3, 3), f"{p}.in_layers.2.bias": (cout,)}
    d |= {f"{p}.emb_layers.1.weight": (cout, emb), f"{p}.emb_layers.1.bias": (cout,)}
    d |= {f"{p}.out_layers.0.weight": (cout,), f"{p}.out_layers.0.bias": (cout,)}
    d |= {f"{p}.out_layers.3.weight": (cout, cout, 3, 3), f"{p}.out_layers.3.bias": (cout,)}
    if cin != cout:
        d |= {f"{p}.skip_connection.weight": (cout, cin, 1, 1), f"{p}.skip_connection.bias": (cout,)}


def _ldm_transformer(d: dict, p: str, ch: int, context: int) -> None:
    """attention.SpatialTransformer (depth 1, conv proj_in/out, GEGLU feed-forward, inner width = ch)."""
    d |= {f"{p}.norm.weight": (ch,), f"{p}.norm.bias": (ch,)}
    d |= {f"{p}.proj_in.weight": (ch, ch, 1, 1), f"{p}.proj_in.bias": (ch,)}
    t = f"{p}.transformer_blocks.0"
    for attn, kv in (("attn1", ch), ("attn2", context)):
        d |= {
            f"{t}.{attn}.to_q.weight": (ch, ch),
            f"{t}.{attn}.to_k.weight": (ch, kv),
            f"{t}.{attn}.to_v.weight": (ch, kv),
        }
        d |= {f"{t}.{attn}.to_out.0.weight": (ch, ch), f"{t}.{attn}.to_out.0.bias": (ch,)}
    d |= {f"{t}.ff.net.0.proj.weight": (8 * ch, ch), f"{t}.ff.net.0.proj.bias": (8 * ch,)}
    d |= {f"{t}.ff.net.2.weight": (ch, 4 * ch), f"{t}.ff.net.2.bias": (ch,)}
    for norm in ("norm1", "norm2", "norm3"):
        d |= {f"{t}.{norm}.weight": (ch,), f"{t}.{norm}.bias": (ch,)}
    d |= {f"{p}.proj_out.weight": (ch, ch, 1, 1), f"{p}.proj_out.bias": (ch,)}


def ldm_unet_shapes(mc: int = 32, mult=(1, 2), blocks: int = 1, attention_ds=(2,), context: int = 17) -> dict:
    """openaimodel.UNetModel's state dict shapes (use_spatial_transformer, legacy False), as its __init__ builds it."""
    d: dict = {}
    emb = 4 * mc
    d |= {"time_embed.0.weight": (emb, mc), "time_embed.0.bias": (emb,)}
    d |= {"time_embed.2.weight": (emb, emb), "time_embed.2.bias": (emb,)}
    d |= {"input_blocks.0.0.weight": (mc, 3, 3, 3), "input_blocks.0.0.bias": (mc,)}
    skips, ch, ds, k = [mc], mc, 1, 1
    for level, m in enumerate(mult):
        for _ in range(blocks):
            _ldm_resblock(d, f"input_blocks.{k}.0", ch, m * mc, emb)
            ch = m * mc
            if ds in attention_ds:
                _ldm_transformer(d, f"input_blocks.{k}.1", ch, context)
            skips.append(ch)
            k += 1
        if level != len(mult) - 1:
            d |= {f"input_blocks.{k}.0.op.weight": (ch, ch, 3, 3), f"input_blocks.{k}.0.op.bias": (ch,)}
            skips.append(ch)
            ds *= 2
            k += 1
    _ldm_resblock(d, "middle_block.0", ch, ch, emb)
    _ldm_transformer(d, "middle_block.1", ch, context)
    _ldm_resblock(d, "middle_block.2", ch, ch, emb)
    k = 0
    for level, m in list(enumerate(mult))[::-1]:
        for i in range(blocks + 1):
            _ldm_resblock(d, f"output_blocks.{k}.0", ch + skips.pop(), mc * m, emb)
            ch, j = mc * m, 1
            if ds in attention_ds:
                _ldm_transformer(d, f"output_blocks.{k}.1", ch, context)
                j = 2
            if level and i == blocks:
                d |= {f"output_blocks.{k}.{j}.conv.weight": (ch, ch, 3, 3), f"output_blocks.{k}.{j}.conv.bias": (ch,)}
                ds //= 2
            k += 1
    d |= {"out.0.weight": (ch,), "out.0.bias": (ch,), "out.2.weight": (3, mc, 3, 3), "out.2.bias": (3,)}
    return d


def _taming_resblock(d: dict, p: str, cin: int, cout: int) -> None:
    """taming's ResnetBlock without a time embedding: norm1, conv1, norm2, conv2, nin_shortcut."""
    d |= {f"{p}.norm1.weight": (cin,), f"{p}.norm1.bias": (cin,), f"{p}.conv1.weight": (cout, cin, 3, 3)}
    d |= {f"{p}.conv1.bias": (cout,), f"{p}.norm2.weight": (cout,), f"{p}.norm2.bias": (cout,)}
    d |= {f"{p}.conv2.weight": (cout, cout, 3, 3), f"{p}.conv2.bias": (cout,)}
    if cin != cout:
        d |= {f"{p}.nin_shortcut.weight": (cout, cin, 1, 1), f"{p}.nin_shortcut.bias": (cout,)}


def _taming_mid(d: dict, p: str, c: int) -> None:
    """The middle of taming's Encoder/Decoder: block_1, attn_1 (1x1-conv q, k, v, proj_out), block_2."""
    _taming_resblock(d, f"{p}.mid.block_1", c, c)
    d |= {f"{p}.mid.attn_1.norm.weight": (c,), f"{p}.mid.attn_1.norm.bias": (c,)}
    for name in ("q", "k", "v", "proj_out"):
        d |= {f"{p}.mid.attn_1.{name}.weight": (c, c, 1, 1), f"{p}.mid.attn_1.{name}.bias": (c,)}
    _taming_resblock(d, f"{p}.mid.block_2", c, c)


def taming_vq_shapes(ch: int = 32, ch_mult=(1, 2), blocks: int = 1, z: int = 3, n_embed: int = 16) -> dict:
    """taming's VQModel (Encoder, Decoder, quant convs, codebook) with attn_resolutions [], as the fork's VQ-f4."""
    d: dict = {"encoder.conv_in.weight": (ch, 3, 3, 3), "encoder.conv_in.bias": (ch,)}
    in_mult = (1, *ch_mult)
    for i, m in enumerate(ch_mult):
        block_in = ch * in_mult[i]
        for j in range(blocks):
            _taming_resblock(d, f"encoder.down.{i}.block.{j}", block_in, ch * m)
            block_in = ch * m
        if i != len(ch_mult) - 1:
            conv = f"encoder.down.{i}.downsample.conv"
            d |= {f"{conv}.weight": (block_in, block_in, 3, 3), f"{conv}.bias": (block_in,)}
    _taming_mid(d, "encoder", block_in)
    d |= {"encoder.norm_out.weight": (block_in,), "encoder.norm_out.bias": (block_in,)}
    d |= {"encoder.conv_out.weight": (z, block_in, 3, 3), "encoder.conv_out.bias": (z,)}
    block_in = ch * ch_mult[-1]
    d |= {"decoder.conv_in.weight": (block_in, z, 3, 3), "decoder.conv_in.bias": (block_in,)}
    _taming_mid(d, "decoder", block_in)
    for i in reversed(range(len(ch_mult))):
        for j in range(blocks + 1):
            _taming_resblock(d, f"decoder.up.{i}.block.{j}", block_in, ch * ch_mult[i])
            block_in = ch * ch_mult[i]
        if i != 0:
            conv = f"decoder.up.{i}.upsample.conv"
            d |= {f"{conv}.weight": (block_in, block_in, 3, 3), f"{conv}.bias": (block_in,)}
    d |= {"decoder.norm_out.weight": (block_in,), "decoder.norm_out.bias": (block_in,)}
    d |= {"decoder.conv_out.weight": (3, block_in, 3, 3), "decoder.conv_out.bias": (3,)}
    d |= {"quant_conv.weight": (z, z, 1, 1), "quant_conv.bias": (z,)}
    d |= {"post_quant_conv.weight": (z, z, 1, 1), "post_quant_conv.bias": (z,)}
    d |= {"quantize.embedding.weight": (n_embed, z)}
    return d


def fork_state_dict(seed: int = 0, ema: bool = False) -> dict[str, torch.Tensor]:
    """A random state dict with the fork's key names and small shapes (plus LatentDiffusion's `betas` buffer)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for prefix, shapes in (("model.diffusion_model.", ldm_unet_shapes()), ("first_stage_model.", taming_vq_shapes())):
        for key, shape in shapes.items():
            value = torch.randn(shape, generator=g) * 0.05
            sd[prefix + key] = value + 1 if len(shape) == 1 and key.endswith(".weight") else value  # norms near 1
    if ema:  # LitEma: "model_ema." + the key without its dots
        for key in [k for k in sd if k.startswith("model.diffusion_model.")]:
            flat = "model_ema." + key[len("model.") :].replace(".", "")
            sd[flat] = sd[key] + 0.5
        sd["model_ema.num_updates"] = torch.tensor(7)
    sd["betas"] = torch.linspace(0.0015**0.5, 0.0195**0.5, 1000, dtype=torch.float64) ** 2
    return sd


@pytest.fixture(scope="module")
def fork_sd() -> dict[str, torch.Tensor]:
    return fork_state_dict()


@pytest.fixture(scope="module")
def fork_ckpt(tmp_path_factory, fork_sd) -> Path:
    """The fork's checkpoint as Lightning writes it: "state_dict", a step, and a callbacks entry keyed by a class."""
    path = tmp_path_factory.mktemp("fork") / "model.ckpt"
    module = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")

    class ModelCheckpoint:  # a stand-in with Lightning's qualified name, pickled by reference as Lightning's is
        pass

    ModelCheckpoint.__module__, ModelCheckpoint.__qualname__ = module.__name__, "ModelCheckpoint"
    module.ModelCheckpoint = ModelCheckpoint
    names = ("pytorch_lightning", "pytorch_lightning.callbacks", module.__name__)
    saved = {n: sys.modules.get(n) for n in names}
    for n in names[:-1]:
        sys.modules[n] = types.ModuleType(n)
    sys.modules[module.__name__] = module
    try:
        torch.save({"state_dict": fork_sd, "global_step": 3, "callbacks": {ModelCheckpoint: {"best": 0.1}}}, path)
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m
    return path


def _generate(capsys, *argv: str) -> tuple[int, dict]:
    """Run `python app.py generate ...` in this process; the exit code and the JSON line."""
    code = app.main(["generate", *argv])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


# -- the fork's checkpoint -----------------------------------------------------------------------------
def test_fork_keys_rename_as_diffusers_own_converter(fork_sd):
    """Our tables give the keys and tensors diffusers' single-file converter gives (the SD 1.x UNet/VAE map)."""
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    from models.compvis import _by_prefix, rename, unet_config, unet_table, vq_config, vq_table

    unet_sd = _by_prefix(fork_sd, "model.diffusion_model.")
    config = unet_config(unet_sd)
    assert config["down_block_types"] == ("DownBlock2D", "CrossAttnDownBlock2D")
    assert config["cross_attention_dim"] == 17 and config["block_out_channels"] == (32, 64)
    ours, unmatched = rename(unet_sd, unet_table(config))
    theirs = convert_ldm_unet_checkpoint(fork_sd, {"layers_per_block": config["layers_per_block"]})
    assert not unmatched and ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)

    vq_sd = _by_prefix(fork_sd, "first_stage_model.")
    vconfig = vq_config(vq_sd)
    assert vconfig["num_vq_embeddings"] == 16 and vconfig["vq_embed_dim"] == 3
    ours, unmatched = rename(vq_sd, vq_table(vconfig))
    theirs = convert_ldm_vae_checkpoint(fork_sd, vconfig)
    assert not unmatched and set(ours) - set(theirs) == {"quantize.embedding.weight"}
    assert all(torch.equal(ours[k].reshape(theirs[k].shape), theirs[k]) for k in theirs)


def test_fork_ckpt_generates_through_the_command_line(fork_ckpt, tmp_path, capsys):
    """`python app.py generate --model model.ckpt`: a Lightning .ckpt read weights-only, an image of the model's size."""
    out = tmp_path / "fork.png"
    code, line = _generate(
        capsys, "--model", str(fork_ckpt), "--pose", "standing", "--out", str(out), "--steps", "2", "--device", "cpu"
    )
    assert code == 0, line
    from PIL import Image

    with Image.open(out) as im:
        assert im.size == (FORK_SIZE, FORK_SIZE) and im.mode == "RGB"
    assert line["settings"]["guidance"] == 1.0 and line["settings"]["steps"] == 2  # no unconditional branch
    assert line["pose"]["width"] == FORK_SIZE


def test_fork_safetensors_prefers_ema_and_is_deterministic(tmp_path, pose):
    """The .safetensors form loads too; the EMA UNet weights are used; one seed gives one image."""
    from safetensors.torch import save_file

    sd = fork_state_dict(seed=1, ema=True)
    path = tmp_path / "fork.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    backend = load_backend(str(path), device="cpu")
    assert capabilities(backend) == {"clip_guidance"}
    w = backend.unet.state_dict()["conv_in.weight"]
    assert torch.equal(w, sd["model_ema.diffusion_modelinput_blocks00weight"])
    images, states = backend(pose, seed=5, steps=2, sampler="euler_a", size=64, num_images=2)
    assert [im.size for im in images] == [(64, 64)] * 2 and [s.seed for s in states] == [5, 6]
    again, _ = backend(pose, seed=6, steps=2, sampler="euler_a", size=64)
    assert np.array_equal(np.asarray(again[0]), np.asarray(images[1]))
    with pytest.raises(InputError, match="no style code"):
        backend(pose, seed=0, steps=1, style=np.zeros(4))


def test_fork_tokens_follow_the_fork_dataset_encoding(pose):
    """Each point is `first // 16 + (second // 16) * 32` of the file's [y, x] pair, clamped into the grid."""
    from models.compvis import fork_context, fork_tokens
    from models.pipeline import frame_pose
    from models.pose import to_fork

    points = {name: [100.0 + i, 300.0 - i] for i, name in enumerate(FORK_NAMES)}
    points["ankle_left"] = [533.2, -4.0]  # the fork's files pass 512; the dataset clamps to the grid
    tokens = fork_tokens(points)
    assert tokens[0] == 100 // 16 + (300 // 16) * 32
    assert tokens[FORK_NAMES.index("ankle_left")] == 31 + 0 * 32
    context = fork_context(pose)
    assert context.shape == (1, 17) and context.dtype == np.float32
    assert np.array_equal(context[0], fork_tokens(to_fork(frame_pose(pose, 512))))
    assert 0 <= context.min() and context.max() <= 1023


def test_fork_bad_files_say_one_sentence(tmp_path, fork_sd):
    """Not a checkpoint, another architecture (naming missing keys), pickled code, --controlnet with the fork."""
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    half = tmp_path / "half.safetensors"
    from safetensors.torch import save_file

    save_file({k: v for k, v in fork_sd.items() if not k.startswith("first_stage_model.")}, str(half))
    sd_like = tmp_path / "sd15.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1),
                               "cond_stage_model.transformer.x": torch.zeros(1)}}, sd_like)  # fmt: skip
    code = tmp_path / "code.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hook": Path("x")}, code)
    cases = [
        (text, "is not a checkpoint"),
        (junk, "not a readable safetensors"),
        (half, "lacks 4 of its keys \\(first_stage_model.encoder.conv_in.weight"),
        (sd_like, "Stable Diffusion checkpoint"),
        (code, "pickles Python objects"),
    ]
    for path, message in cases:
        with pytest.raises(InputError, match=message) as err:
            load_backend(str(path), device="cpu")
        assert str(err.value).count(". ") == 0 and "\n" not in str(err.value)
    with pytest.raises(InputError, match="--controlnet goes with a Stable Diffusion model"):
        load_backend(str(half), "some/controlnet", device="cpu")


def test_fork_checkpoint_of_another_shape_names_the_key(tmp_path, fork_sd):
    """Right names, wrong shapes: the first mismatching key and both shapes."""
    sd = dict(fork_sd)
    sd["first_stage_model.decoder.conv_out.weight"] = torch.zeros(3, 64, 3, 3)
    with pytest.raises(InputError, match=r"decoder.conv_out.weight has shape \(3, 64, 3, 3\) where \(3, 32, 3, 3\)"):
        from models.compvis import ForkPipeline

        ForkPipeline.from_state_dict(sd, device="cpu")


def test_lazy_pipeline_serves_a_checkpoint_file(fork_ckpt, monkeypatch):
    """The app's loader takes a checkpoint file for --model (no 'missing folder' note) and loads the fork."""
    from ui import settings as server

    monkeypatch.setattr(server, "_PIPELINE", None)
    loader = server.LazyPipeline(str(fork_ckpt), "cpu")
    assert loader.status() == ""
    backend = loader()
    assert type(backend).__name__ == "ForkPipeline" and capabilities(backend) == {"clip_guidance"}


# -- Stable Diffusion + ControlNet ------------------------------------------------------------------------
def tiny_tokenizer(folder: Path):
    """A CLIPTokenizer from a 514-entry vocabulary (the 256 bytes, with and without `</w>`, and the 2 specials)."""
    from transformers import CLIPTokenizer

    chars = []
    n = 0
    table = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    for b in range(256):
        if b in table:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + n))
            n += 1
    vocab = {c: i for i, c in enumerate(chars)}
    vocab |= {c + "</w>": 256 + i for i, c in enumerate(chars)}
    vocab |= {"<|startoftext|>": 512, "<|endoftext|>": 513}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}))
    return CLIPTokenizer.from_pretrained(str(folder))


@pytest.fixture(scope="module")
def sd_folders(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny SD 1.x folder (StableDiffusionPipeline layout) and a matching OpenPose-ControlNet-shaped folder."""
    pytest.importorskip("transformers", reason="Stable Diffusion's text encoder and tokenizer need transformers")
    return build_sd_folders(tmp_path_factory.mktemp("sd"))


def build_sd_folders(root: Path) -> tuple[Path, Path]:
    """Write the tiny SD folder `root/sd15` and ControlNet folder `root/openpose` (diffusers' save_pretrained)."""
    from diffusers import (
        AutoencoderKL,
        ControlNetModel,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    blocks = {"block_out_channels": (32, 64), "layers_per_block": 1, "norm_num_groups": 8, "attention_head_dim": 2}
    down = ("DownBlock2D", "CrossAttnDownBlock2D")
    unet = UNet2DConditionModel(
        sample_size=SD_SIZE // 2, in_channels=4, out_channels=4, down_block_types=down,
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, **blocks,
    )  # fmt: skip
    controlnet = ControlNetModel(
        in_channels=4, down_block_types=down, cross_attention_dim=32, conditioning_embedding_out_channels=(16, 32),
        **blocks,
    )  # fmt: skip
    vae = AutoencoderKL(
        block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8, sample_size=SD_SIZE,
    )  # fmt: skip
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=512, eos_token_id=513, pad_token_id=513, hidden_size=32, intermediate_size=37,
            num_attention_heads=4, num_hidden_layers=2, vocab_size=514, max_position_embeddings=77,
        )
    )  # fmt: skip
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1,
    )  # fmt: skip
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tiny_tokenizer(root / "vocab"), unet=unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(root / "sd15", safe_serialization=True)
    controlnet.save_pretrained(root / "openpose", safe_serialization=True)
    return root / "sd15", root / "openpose"


def test_sd_controlnet_generates_through_the_command_line(sd_folders, tmp_path, capsys):
    """`--model SD --controlnet CN --prompt ...`: an image of the model's size; the prompt lands in the settings."""
    base, cn = sd_folders
    out = tmp_path / "sd.png"
    code, line = _generate(
        capsys, "--model", str(base), "--controlnet", str(cn), "--pose", "standing", "--out", str(out),
        "--steps", "2", "--prompt", "1girl, red dress", "--negative-prompt", "lowres", "--num-images", "2",
        "--device", "cpu",
    )  # fmt: skip
    assert code == 0, line
    from PIL import Image

    for path in line["outputs"]:
        with Image.open(path) as im:
            assert im.size == (SD_SIZE, SD_SIZE) and im.mode == "RGB"
    settings = line["settings"]
    assert settings["prompt"] == "1girl, red dress" and settings["negative_prompt"] == "lowres"
    assert settings["guidance"] == 7.5 and line["seeds"] == [0, 1]


def test_sd_controlnet_backend_state_and_callback(sd_folders, pose):
    """load_backend picks the ControlNet back end; states re-render to the same pixels; callbacks count steps."""
    base, cn = sd_folders
    assert model_kind(str(base)) == "sd"
    backend = load_backend(str(base), str(cn), device="cpu")
    assert capabilities(backend) == {"guidance", "prompt", "clip_guidance"}
    steps: list[tuple[int, int]] = []
    images, states = backend(
        pose, seed=2, steps=5, guidance=3.0, sampler="ddim", callback=lambda i, n, _p: steps.append((i, n))
    )
    assert images[0].size == (SD_SIZE, SD_SIZE) and states[0].z_0.shape == (1, 4, SD_SIZE // 2, SD_SIZE // 2)
    assert steps[-1] == (5, 5)
    again, _ = backend.render(states[0])
    assert np.array_equal(np.asarray(again[0]), np.asarray(images[0]))
    drawing = np.asarray(backend.control_tensor(pose, SD_SIZE)[0].permute(1, 2, 0))
    assert drawing.max() > 0.5 and drawing.min() == 0.0  # the OpenPose drawing on black


def test_sd_bad_input_says_one_sentence(sd_folders, tmp_path, monkeypatch):
    """SD without --controlnet, a ControlNet folder that is not one, and a Hub id while offline."""
    import huggingface_hub.constants

    base, _ = sd_folders
    with pytest.raises(InputError, match="add --controlnet with an OpenPose ControlNet"):
        load_backend(str(base), device="cpu")
    with pytest.raises(InputError, match="not a diffusers ControlNet"):
        load_backend(str(base), str(tmp_path), device="cpu")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    for model, controlnet in (("someone/anime-sd15", "someone/openpose"), (str(base), "someone/openpose")):
        with pytest.raises(InputError, match="HF_HUB_OFFLINE=1 keeps the Hub out of reach"):
            load_backend(model, controlnet, device="cpu")


def test_capabilities_of_ours_and_look_alikes():
    """Each back end declares its Capabilities; a look-alike without them (a test double) offers PosePipeline's."""
    from models.compvis import ForkPipeline
    from models.controlnet_backend import ControlNetBackend
    from models.pipeline import PosePipeline

    ours = {"guidance", "style", "sefa", "ganspace", "refine_style", "refine_latent"}
    assert capabilities(object()) == PosePipeline.CAPABILITIES.names == ours
    assert "prompt" in ControlNetBackend.CAPABILITIES and "style" not in ForkPipeline.CAPABILITIES


# -- CLIP guidance for these back ends --------------------------------------------------------------------
class FakeClip:
    """A stand-in CLIP: a fixed random projection of 8 x 8 images; texts embed by a seed from their characters."""

    image_size = 8

    def __init__(self) -> None:
        self.proj = torch.randn(3 * 8 * 8, 16, generator=torch.Generator().manual_seed(0))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        small = torch.nn.functional.interpolate(images.float(), size=(8, 8), mode="bilinear", align_corners=False)
        return torch.nn.functional.normalize(small.flatten(1) @ self.proj.to(small.device), dim=-1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        seeds = [sum(map(ord, t)) for t in texts]
        rows = [torch.randn(16, generator=torch.Generator().manual_seed(s)) for s in seeds]
        return torch.nn.functional.normalize(torch.stack(rows), dim=-1)


@pytest.fixture(scope="module")
def fork_backend(fork_sd):
    from models.compvis import ForkPipeline

    return ForkPipeline.from_state_dict(fork_sd, device="cpu")


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_cond_model_fn_moves_the_denoised_estimate_by_sigma_squared(prediction_type):
    """k-diffusion's D' = D + sigma^2 grad in DDPM terms: z_0' = z_0 + (1 - a) / sqrt(a) * grad; no grad, no change."""
    from models.clip_guidance import make_cond_model_fn
    from models.samplers import split_output

    alphas = torch.linspace(0.99, 0.01, 1000)
    z_t, t = torch.randn(1, 3, 4, 4), torch.tensor(600)
    model_fn = lambda x, _t: 0.5 * x  # any differentiable model
    a = alphas[600]
    plain = split_output(prediction_type, model_fn(z_t, t), z_t, a)[0]
    zero = make_cond_model_fn(model_fn, lambda x, _t, d: torch.zeros_like(x), alphas, prediction_type)
    assert torch.allclose(zero(z_t, t), model_fn(z_t, t), atol=1e-5)
    push = make_cond_model_fn(model_fn, lambda x, _t, d: torch.ones_like(x), alphas, prediction_type)
    moved = split_output(prediction_type, push(z_t, t), z_t, a)[0]
    assert torch.allclose(moved - plain, torch.full_like(plain, float((1 - a) / a.sqrt())), atol=1e-4)


def test_clip_guided_sampling_on_the_fork(fork_backend, pose):
    """Guidance changes the image, records its settings, and at scale 0 gives the unguided image back."""
    from models.clip_guidance import generate_guided

    call = {"steps": 2, "size": 64}
    plain, _ = fork_backend(pose, 3, **call)
    images, (done,) = generate_guided(fork_backend, pose, 3, FakeClip(), "red hair", scale=5000, cutouts=2, **call)
    assert images[0].size == (64, 64) and done.settings["clip_guidance"]["prompt"] == "red hair"
    assert not np.array_equal(np.asarray(images[0]), np.asarray(plain[0]))
    same, _ = generate_guided(fork_backend, pose, 3, FakeClip(), "red hair", scale=0, cutouts=1, **call)
    assert np.abs(np.asarray(same[0], dtype=int) - np.asarray(plain[0], dtype=int)).max() <= 2
    with pytest.raises(InputError, match="offers no CLIP-guided sampling"):
        from ui.fake import FakePipeline

        generate_guided(FakePipeline(), pose, 3, FakeClip(), "red hair")
