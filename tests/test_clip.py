"""models.clip (load_clip, ClipScorer), training.train_clip and training.eval_clip on tiny random open_clip models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.clip import DOMAIN_MODEL_NAME, TINY_MODEL_CFG, TINY_MODEL_NAME, build_clip, load_clip, save_clip
from models.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    """A tiny random open_clip CLIP (our tiny config)."""
    torch.set_num_threads(1)
    return build_clip(TINY_MODEL_CFG, seed=1)


@pytest.fixture(scope="module")
def tiny_dir(tiny, tmp_path_factory):
    """The tiny model saved in open_clip's hf-hub layout."""
    return tiny.save_pretrained(tmp_path_factory.mktemp("clip"), card="# tiny\n")


def _images(n=2, size=40, grad=False):
    x = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return x.requires_grad_(grad)


def test_folder_round_trip(tiny, tiny_dir):
    assert (tiny_dir / "open_clip_config.json").is_file() and (tiny_dir / "open_clip_model.safetensors").is_file()
    loaded = load_clip(tiny_dir)
    assert loaded.image_size == 32 and loaded.context_length == 32
    assert loaded.preprocess_cfg["mean"] == [0.5, 0.5, 0.5]
    x = _images()
    assert torch.allclose(loaded.encode_image(x), tiny.encode_image(x), atol=1e-6)
    assert torch.allclose(loaded.encode_text(["red hair"]), tiny.encode_text(["red hair"]), atol=1e-6)
    assert load_clip(f"local-dir:{tiny_dir}").image_size == 32


def test_fp16_file_loads_into_fp32(tiny, tmp_path):
    save_clip(tiny.model, TINY_MODEL_CFG, tmp_path, preprocess_cfg=tiny.preprocess_cfg, dtype=torch.float16)
    loaded = load_clip(tmp_path)
    assert loaded.dtype == torch.float32
    assert torch.allclose(loaded.encode_image(_images()), tiny.encode_image(_images()), atol=2e-2)


def test_name_and_checkpoint(tiny, tmp_path):
    from safetensors.torch import save_file

    pt, st = tmp_path / "ck.pt", tmp_path / "ck.safetensors"
    torch.save(tiny.model.state_dict(), pt)
    save_file({k: v.contiguous() for k, v in tiny.model.state_dict().items()}, str(st))
    for path in (pt, st):
        loaded = load_clip(f"{TINY_MODEL_NAME}:{path}")
        assert torch.allclose(loaded.encode_image(_images()), tiny.encode_image(_images()), atol=1e-6)


@pytest.mark.parametrize(
    "spec, words",
    [
        ("NoSuchModel:/x.pt", "Unknown open_clip model name"),
        (f"{TINY_MODEL_NAME}:/no/such/file.safetensors", "No checkpoint file"),
        ("ViT-B-32:no_such_tag", "no pretrained tag"),
        ("/no/such/folder", "No CLIP at"),
    ],
)
def test_bad_specs(spec, words):
    with pytest.raises(InputError, match=words) as e:
        load_clip(spec)
    assert "\n" not in str(e.value)


def test_garbage_and_wrong_files(tmp_path, tiny_dir):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(InputError, match="not a readable"):
        load_clip(f"{TINY_MODEL_NAME}:{garbage}")
    with pytest.raises(InputError, match="not a readable"):  # a checkpoint of another architecture
        load_clip(f"{DOMAIN_MODEL_NAME}:{tiny_dir / 'open_clip_model.safetensors'}")
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text("{not json")
    (folder / "open_clip_model.safetensors").write_bytes(b"x")
    with pytest.raises(InputError, match="not an open_clip config"):
        load_clip(folder)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_MODEL_CFG}))
    with pytest.raises(InputError, match="could not be loaded"):
        load_clip(folder)


def test_tag_offline_fails_in_one_sentence(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache
    monkeypatch.setenv("HOME", str(tmp_path))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(InputError, match="not in the local cache") as e:
        load_clip("ViT-B-32:laion2b_s34b_b79k")
    assert str(e.value).count(". ") == 0 and "\n" not in str(e.value)


def test_tokenize_truncation_emoji_unknown(tiny):
    tokens, truncated = tiny.tokenize(["pink hair " * 2000, "pink hair 🎀✨ zxqvwpl glorbnak", ""])
    assert len("pink hair " * 2000) >= 10_000
    assert tokens.shape == (3, tiny.context_length)
    assert truncated == [True, False, False]
    assert (tokens[1] > 0).sum() > 5
    emb = tiny.encode_text(["🎀", "zxqvwpl", "x" * 10_000])
    assert torch.isfinite(emb).all() and torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_encode_image_gradients_and_zero_shot(tiny):
    x = _images(size=50, grad=True)  # any size: resized to 32 inside
    e = tiny.encode_image(x)
    assert e.shape == (2, 16) and torch.allclose(e.norm(dim=-1), torch.ones(2), atol=1e-5)
    (e @ tiny.encode_text(["red hair"]).T).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    rect = tiny.encode_image(torch.zeros(1, 3, 40, 64))  # not square: centre crop
    assert rect.shape == (1, 16)
    p = tiny.zero_shot(_images(), ["red hair", "blue hair", "green hair"])
    assert p.shape == (2, 3) and torch.allclose(p.sum(-1), torch.ones(2), atol=1e-5)
    with pytest.raises(InputError):
        tiny.encode_image(torch.zeros(3, 32, 32))


def test_train_clip_two_steps_and_publish(tmp_path):
    data, out, pub = tmp_path / "synth", tmp_path / "run", tmp_path / "pub"
    subprocess.run(
        [sys.executable, "-m", "training.synth", "--out", str(data), "--n", "8", "--size", "64"],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    from training import train_clip

    args = ["--data", str(data), "--out", str(out), "--model", TINY_MODEL_NAME, "--minutes", "0", "--max-steps", "2",
            "--batch-size", "4", "--workers", "1", "--image-size", "64", "--device", "cpu", "--threads", "1"]  # fmt: skip
    assert train_clip.main([*args, "--publish", str(pub)]) == 0
    assert (out / "last.pt").is_file() and (out / "final" / "open_clip_model.safetensors").is_file()
    assert "zero-shot" in (pub / "README.md").read_text().lower()
    info = json.loads((pub / "training_info.json").read_text())
    assert info["steps"] == 2
    assert load_clip(pub).image_size == 32
    assert train_clip.main([*args[:-4], "--max-steps", "3", "--resume", "--device", "cpu"]) == 0
    assert json.loads((out / "final" / "training_info.json").read_text())["steps"] == 3
    assert train_clip.main(["--out", str(out), "--max-steps", "1"]) == 2  # no data: one-line error
    # --init: a published folder's weights, a fresh run (step 0); a folder without weights is a one-line error
    init_out = tmp_path / "init"
    assert train_clip.main([*args[:3], str(init_out), *args[4:], "--init", str(pub)]) == 0
    assert json.loads((init_out / "final" / "training_info.json").read_text())["steps"] == 2
    assert train_clip.main([*args[:3], str(init_out), *args[4:], "--init", str(tmp_path)]) == 2


def test_text_variants_and_zero_shot_accuracy(tiny):
    import numpy as np

    from training.data import N_TEXTS, split_tags, text_variants

    tags = split_tags("1girl, red hair, blue eyes, pink background")
    assert tags[-1] == "plain background"
    tok = tiny.tokenizer
    rows, masks = text_variants([tok.encode(t) for t in tags], tok.encode("A girl."), 32, np.random.default_rng(0))
    assert rows.shape == (N_TEXTS, 32) and (rows[:, 0] == tok.sot_token_id).all()
    assert all(tok.eot_token_id in r for r in rows)
    assert masks[0] == (1 << len(tags)) - 1 and all(0 < m < (1 << len(tags)) for m in masks)
    # one text per mask bit pattern: the "red hair" row names exactly the tag of bit 1
    red = tok.encode("red hair")
    for r, m in zip(rows, masks):
        ids = [int(v) for v in r if v not in (0, tok.sot_token_id, tok.eot_token_id)]
        if ids == red:
            assert m == 1 << 1


def test_focus_puts_a_weak_attribute_in_every_short_text(tiny):
    import numpy as np

    from models.errors import InputError
    from training.data import focus_tag_set, split_tags, text_variants

    tags = split_tags("1girl, long hair, red hair, blue eyes, dress, smile, pink background")
    focus = focus_tag_set(["eye_color", "hair_style"])
    assert "blue eyes" in focus and "long hair" in focus and "red hair" not in focus
    idx = [i for i, t in enumerate(tags) if t in focus]
    tok = tiny.tokenizer
    ids = [tok.encode(t) for t in tags]
    _, masks = text_variants(ids, tok.encode("A girl."), 40, np.random.default_rng(1), idx)
    focus_bits = sum(1 << i for i in idx)
    assert all(int(m) & focus_bits for m in masks[6:11])  # the five short texts
    _, plain = text_variants(ids, tok.encode("A girl."), 40, np.random.default_rng(1))
    assert not all(int(m) & focus_bits for m in plain[6:16])  # without focus some texts skip them
    with pytest.raises(InputError, match="unknown attribute"):
        focus_tag_set(["shoe_size"])


def test_batch_positives():
    from training.train_clip import MultiPositiveClipLoss, batch_positives

    tags = torch.tensor([[0, 2, 4, 4], [1, 2, 3, 4], [0, 3, 4, 4]])  # vocab of 4; padding 4
    masks = torch.tensor([0b01, 0b010, 0b11])  # "tag 0"; "tag 2"; "tags 0 and 3"
    pos = batch_positives(tags, masks, 4)
    assert pos.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    f = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    eye = MultiPositiveClipLoss()(f, f, torch.tensor(10.0), torch.eye(3))
    from open_clip import ClipLoss

    assert torch.allclose(eye, ClipLoss()(f, f, torch.tensor(10.0)), atol=1e-6)


def test_zero_shot_accuracy(tiny):
    from training.eval_clip import attribute_prompts, zero_shot_accuracy

    prompts = attribute_prompts()
    attrs = [{"hair_color": "red", "hair_style": "twintails", "eye_color": "blue", "outfit": "kimono",
              "background_color": "pink", "background": "dots"}] * 2  # fmt: skip
    acc = zero_shot_accuracy(tiny, tiny.encode_image(_images()), attrs, prompts)
    assert set(acc) >= {"hair_color", "hair_style", "eye_color", "outfit", "background", "average"}
    assert all(0.0 <= v <= 1.0 for v in acc.values())


def test_clip_features(tiny):
    from training.eval_clip import clip_features

    f = clip_features(_images(3), tiny)
    assert f.shape == (3, 16) and f.dtype.name == "float64"
