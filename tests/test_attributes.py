"""The attribute classifier: save/load, shapes, gradients, the renderer's vocabulary, prompt parsing,
a two-step training run on a tiny synth set, and the shipped weights on fresh renders."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.attributes import (
    ACCESSORIES,
    ATTRIBUTES,
    AttributeClassifier,
    attribute_index,
    attributes_in_text,
    load_attribute_classifier,
    record_labels,
)
from models.errors import InputError
from training import character

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "weights" / "attributes"


def tiny_classifier() -> AttributeClassifier:
    """A seeded classifier small enough to run in milliseconds."""
    torch.manual_seed(0)
    return AttributeClassifier(image_size=32, channels=(4, 8), depths=(0, 1), pool_stages=2, hidden=8).eval()


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    """Eight real renders at 64 px in the synth layout (images/, attributes/, ...)."""
    from training.synth import write_dataset

    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, n=8, seed=3, size=64, workers=1)
    return root


# -- the model ------------------------------------------------------------------------------------
def test_save_load_round_trip_and_shapes(tmp_path):
    model = tiny_classifier()
    model.save_pretrained(tmp_path)
    loaded = load_attribute_classifier(tmp_path)
    assert loaded.classes == {k: list(v) for k, v in ATTRIBUTES.items()}
    x = torch.rand(2, 3, 48, 40) * 2 - 1  # any size: resized to image_size inside
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert set(a) == set(ATTRIBUTES)
    for name, names in ATTRIBUTES.items():
        assert a[name].shape == (2, len(names))
        torch.testing.assert_close(a[name], b[name])


def test_predict_probabilities_and_labels():
    model = tiny_classifier()
    images = [Image.new("RGB", (64, 64), (250, 150, 190)), Image.new("RGB", (20, 30), (10, 20, 30))]
    probs = model.predict(images)
    for name, p in probs.items():
        assert p.shape == (2, len(ATTRIBUTES[name]))
        torch.testing.assert_close(p.sum(dim=1), torch.ones(2))
    labels = model.top_labels(images)
    assert all(labels[i][k] in ATTRIBUTES[k] for i in range(2) for k in ATTRIBUTES)
    assert not model.training


def test_differentiable_wrt_the_image():
    model = tiny_classifier()
    x = (torch.rand(1, 3, 64, 64) * 2 - 1).requires_grad_()
    model(x)["hair_color"][0, attribute_index("hair_color", "pink")].backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_bad_input_is_one_sentence(tmp_path):
    with pytest.raises(InputError, match="No attribute classifier"):
        load_attribute_classifier(tmp_path / "missing")
    with pytest.raises(InputError, match="not a hair color"):
        attribute_index("hair_color", "plaid")
    with pytest.raises(InputError, match="Unknown attribute"):
        attribute_index("hat", "red")
    with pytest.raises(InputError):
        tiny_classifier().predict(torch.zeros(3, 32, 32))
    with pytest.raises(InputError):
        tiny_classifier().predict([])


# -- the vocabulary -------------------------------------------------------------------------------
def test_vocabulary_is_the_renderers():
    assert ATTRIBUTES["hair_color"] == tuple(character.HAIR_COLORS)
    assert ATTRIBUTES["eye_color"] == tuple(character.EYE_COLORS)
    assert ATTRIBUTES["outfit"] == character.OUTFITS
    assert ATTRIBUTES["background_color"] == tuple(character.BACKGROUNDS)
    assert attribute_index("hair_color", "pink") == 0


def test_rendered_attributes_are_in_the_vocabulary(synth):
    records = [json.loads(p.read_text()) for p in sorted((synth / "attributes").glob("*.json"))[:3]]
    assert len(records) == 3
    for rec in records:
        labels = record_labels(rec)
        assert set(labels) == set(ATTRIBUTES)
        for name, value in labels.items():
            assert value is None or value in ATTRIBUTES[name], (name, value)
        assert labels["hair_color"] == rec["hair_color"] and labels["outfit_color"] == rec["outfit_colors"][0]
    assert record_labels({"yaw": "back", "eye_color": "red"})["eye_color"] is None  # no eyes drawn from behind
    assert record_labels({"outfit": "dress", "outfit_colors": ["red", "blue"]})["outfit_color2"] is None
    worn = record_labels({"accessories": ["glasses", "cat ears", "hairclip"], "yaw": "front"})
    assert [worn[k] for k in ("glasses", "cat_ears", "beret", "hair_ribbon")] == ["with", "with", "without", "without"]
    behind = record_labels({"accessories": ["glasses", "beret"], "yaw": "back"})
    assert behind["glasses"] is None and behind["beret"] == "with"  # glasses sit on the face; a beret shows anyway


def test_attributes_in_text():
    got = attributes_in_text("Pink hair, sailor uniform; light blue dress, 1boy, dots background, dark background")
    assert got == {
        "hair_color": "pink",
        "outfit": "sailor uniform",
        "outfit_color": "light blue",
        "gender": "boy",
        "background": "dots",
        "background_color": "dark",
    }
    assert attributes_in_text("blue eyes and long hair") == {"eye_color": "blue", "hair_style": "long hair"}
    assert attributes_in_text("a cat 🐱") == {}
    assert attributes_in_text("cat ears and a beret") == {"cat_ears": "with", "beret": "with"}


# -- training -------------------------------------------------------------------------------------
def test_two_step_training_run_publishes_and_resumes(synth, tmp_path):
    from training import train_attributes

    out, pub = tmp_path / "run", tmp_path / "pub"
    common = ["--data", str(synth), "--out", str(out), "--batch", "4", "--image-size", "32"]
    common += ["--channels", "4,8", "--depths", "0,1", "--pool-stages", "1", "--hidden", "8", "--holdout", "0.25"]
    common += ["--attend", "eye_color=0+1"]  # two stages here: the default attends stage 2 too
    assert train_attributes.main([*common, "--steps", "2", "--eval-data", str(synth), "--publish", str(pub)]) == 0
    report = json.loads((out / "accuracy.json").read_text())
    assert set(report["heldout"]["accuracy"]) == set(ATTRIBUTES) and report["heldout"]["n"]["hair_color"] == 2
    assert "eval_data" in report
    assert {"config.json", "diffusion_pytorch_model.safetensors", "README.md"} <= {p.name for p in pub.iterdir()}
    assert "hair_color" in (pub / "README.md").read_text()
    assert load_attribute_classifier(pub).config.image_size == 32
    assert train_attributes.main([*common, "--steps", "3", "--resume"]) == 0
    assert json.loads((out / "training_info.json").read_text())["steps"] == 3


def test_fine_tune_on_decoded_renders(synth, tmp_path):
    """`--init` starts from a trained judge; `--train-decoded` trains on the autoencoder's decodings (cached)."""
    from models.autoencoder import build_autoencoder
    from training import train_attributes

    torch.manual_seed(0)
    vae = build_autoencoder((8, 16), 1, 4, 4, sample_size=64)
    vae.save_pretrained(tmp_path / "ae")
    first, second = tmp_path / "first", tmp_path / "second"
    common = ["--data", str(synth), "--batch", "4", "--image-size", "32", "--holdout", "0.25", "--steps", "2"]
    tiny = ["--channels", "4,8", "--depths", "0,1", "--pool-stages", "1", "--hidden", "8", "--attend", "eye_color=0+1"]
    assert train_attributes.main([*common, *tiny, "--out", str(first)]) == 0
    args = [*common, "--out", str(second), "--init", str(first / "final"), "--ae", str(tmp_path / "ae")]
    assert train_attributes.main([*args, "--train-decoded", "0.5", "--decoded-n", "3"]) == 0
    cache = np.load(second / "decoded.npz")
    assert cache["train"].shape == (3, 32, 32, 3) and cache["val"].shape == (2, 32, 32, 3)
    report = json.loads((second / "accuracy.json").read_text())
    assert "heldout_autoencoder" in report
    info = json.loads((second / "training_info.json").read_text())
    assert info["config"]["hidden"] == 8 and info["args"]["init"] == str(first / "final")  # the init's architecture
    with pytest.raises(SystemExit, match="needs --ae"):
        train_attributes.main([*common, "--out", str(second), "--train-decoded", "0.5"])


def test_preset_keeps_the_command_line(capsys):
    """The preset's defaults are the command line's (the accessories are what `--balance` weighs) and its fields
    are its flags, with their help; `--no-eye-attention` is still a bare switch."""
    from training import train_attributes
    from training.presets import ATTRIBUTES_PRESETS, parse_with_preset

    assert ATTRIBUTES_PRESETS["cpu"].balance == ",".join(ACCESSORIES)
    argv = ["--data", "x", "--out", "y", "--no-eye-attention", "--channels", "4,8", "--batch", "4", "--eval-n", "9"]
    args, cfg = parse_with_preset(train_attributes.build_parser(), ATTRIBUTES_PRESETS, argv)
    assert (args.data, args.eval_n, args.preset) == ("x", 9, "cpu")
    assert cfg.no_eye_attention and cfg.channels == (4, 8) and cfg.batch == 4 and cfg.steps == 100_000
    with pytest.raises(SystemExit):
        train_attributes.main(["--help"])
    assert "stem and stage widths (default: 32,64,128)" in " ".join(capsys.readouterr().out.split())


def test_an_older_judge_grows_heads_for_new_attributes(tmp_path):
    """`--init` with a judge trained before an attribute existed: its heads keep their outputs, new ones are added."""
    from training.presets import ATTRIBUTES_PRESETS
    from training.train_attributes import grown_classifier

    torch.manual_seed(0)
    old_names = {k: list(v) for k, v in ATTRIBUTES.items() if k not in ("glasses", "beret")}
    old = AttributeClassifier(image_size=32, channels=(4, 8), depths=(0, 1), pool_stages=2, hidden=8,
                              class_names=old_names).eval()  # fmt: skip
    old.save_pretrained(tmp_path / "old")
    cfg = dataclasses.replace(ATTRIBUTES_PRESETS["cpu"], attend="glasses=0+1")
    grown = grown_classifier(str(tmp_path / "old"), cfg).eval()
    assert set(grown.classes) == set(ATTRIBUTES) and grown.config.attend["glasses"] == [0, 1]
    assert "beret" not in grown.config.attend  # not named: it reads the pooled features
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        before, after = old(x), grown(x)
    for name in old_names:
        torch.testing.assert_close(after[name], before[name])
    assert after["glasses"].shape == (2, 2)


def test_balancing_weights_ask_for_every_class_equally():
    """A 9:1 attribute weighs its rare class 9 times as much (mean 1); unbalanced attributes get no weights."""
    from training.train_attributes import IGNORE, balancing_weights, classification_loss

    classes = {"beret": ["without", "with"], "gender": ["female", "male"]}
    labels = np.array([[0, 0]] * 9 + [[1, 1]] + [[IGNORE, 0]] * 5)
    w = balancing_weights(labels, classes, ["beret"])
    assert list(w) == ["beret"]
    torch.testing.assert_close(w["beret"], torch.tensor([0.2, 1.8]))
    logits = {k: torch.zeros(len(labels), 2, requires_grad=True) for k in classes}
    loss = classification_loss(logits, torch.from_numpy(labels), list(classes), None, w)
    assert torch.isfinite(loss)


def test_augment_keeps_shape_range_and_is_seeded():
    from training.train_attributes import augment

    x = torch.rand(4, 3, 32, 32) * 2 - 1
    pts = torch.tensor([[[0.3, 0.4, 1.0], [0.5, 0.5, 0.0]]]).repeat(4, 1, 1)
    a, pa = augment(x, np.random.default_rng([0, 5]), points=pts)
    b, pb = augment(x, np.random.default_rng([0, 5]), points=pts)
    assert a.shape == x.shape and a.min() >= -1 and a.max() <= 1
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(pa, pb)
    assert torch.equal(pa[..., 2], pts[..., 2])  # visibility is carried, not moved


def test_augment_moves_points_with_the_image():
    from training.train_attributes import augment

    x = -torch.ones(8, 3, 64, 64)
    x[:, :, 20:23, 40:43] = 1.0  # a bright 3 px dot centred at (41.5, 21.5)
    pts = torch.tensor([[[41.5 / 64, 21.5 / 64, 1.0]]]).repeat(8, 1, 1)
    a, pa = augment(x, np.random.default_rng(1), points=pts)
    for img, p in zip(a, pa):
        flat = int(img[0].argmax())
        y, xx = divmod(flat, 64)
        assert abs(xx + 0.5 - p[0, 0] * 64) <= 2.5 and abs(y + 0.5 - p[0, 1] * 64) <= 2.5


def test_eye_map_loss_prefers_the_eyes():
    from models.attributes import eye_map_loss

    eyes = torch.tensor([[[0.25, 0.25, 1.0], [0.75, 0.25, 1.0]], [[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]]])
    right = torch.full((2, 1, 8, 8), -5.0)
    right[0, 0, 2, 2] = right[0, 0, 2, 6] = 5.0
    wrong = torch.full((2, 1, 8, 8), -5.0)
    wrong[0, 0, 6, 4] = 5.0
    assert eye_map_loss(right, eyes) < eye_map_loss(wrong, eyes)
    assert eye_map_loss(right, eyes[1:].repeat(2, 1, 1)) == 0  # no visible eye: nothing to learn


# -- the shipped weights --------------------------------------------------------------------------
@pytest.mark.slow
def test_shipped_weights_name_hair_colours_of_fresh_renders():
    if not (SHIPPED / "config.json").is_file():
        pytest.skip("weights/attributes is absent")
    from training.eval_common import EVAL_SEED
    from training.synth import make_sample

    clf = load_attribute_classifier(SHIPPED)
    samples = [make_sample(EVAL_SEED, i) for i in range(8)]  # reserved seed: never trained on
    labels = clf.top_labels([s["render"].image for s in samples])
    right = sum(lab["hair_color"] == s["attributes"]["hair_color"] for lab, s in zip(labels, samples))
    assert right >= 6, f"{right}/8 hair colours right"
