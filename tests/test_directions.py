"""SeFa / GANSpace directions, style edits, labels and `generate --edit`, with tiny random models."""

from __future__ import annotations

import json
import math
from typing import ClassVar

import numpy as np
import pytest
import torch

from models.directions import (
    MAX_SIGMA,
    apply_amounts,
    directions_for,
    edit,
    ganspace,
    generate_edited,
    model_hash,
    parse_edit,
    parse_edits,
    rerender,
    sefa,
    start_hash,
)
from models.errors import InputError
from models.pose import Pose
from tests.test_pipeline import STANDING
from training import eval_directions as ed

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _pixels(images) -> np.ndarray:
    return np.stack([np.asarray(im) for im in images])


def _spectrum_weight(d: int = 8, out: int = 32, seed: int = 0) -> np.ndarray:
    """A (out, d) weight with well-separated singular values 8, 7, ..., 1 (so the axes are well defined)."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((out, d)))
    v, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return (u * np.arange(d, 0, -1.0)) @ v.T


# -- the methods ----------------------------------------------------------------------------------
def test_sefa_vectors_are_sorted_eigenvectors_of_normalised_weight():
    w = np.random.default_rng(1).standard_normal((32, 8))
    d = sefa(w, k=5)
    a_n = w / np.linalg.norm(w, axis=1, keepdims=True)
    m = a_n.T @ a_n
    v = d.vectors.astype(np.float64)
    lam = np.einsum("kd,de,ke->k", v, m, v)
    np.testing.assert_allclose(v @ m, lam[:, None] * v, atol=1e-5)  # A_n^T A_n v = lambda v
    assert np.all(np.diff(lam) <= 1e-9) and np.all(np.diff(d.explained) <= 0)
    np.testing.assert_allclose(d.explained, lam / np.trace(m), rtol=1e-5)
    np.testing.assert_allclose(v @ v.T, np.eye(5), atol=1e-5)
    assert d.vectors.dtype == np.float32 and d.scale.tolist() == [1.0] * 5 and not d.vectors.flags.writeable


def test_sefa_matches_the_papers_code():
    w = np.random.default_rng(2).standard_normal((32, 8))
    # SeFa's utils.factorize_weight on style.weight.T, verbatim.
    weight = w.T
    weight = weight / np.linalg.norm(weight, axis=0, keepdims=True)
    values, vectors = np.linalg.eig(weight.dot(weight.T))
    top = vectors.T[np.argsort(values.real)[::-1]].real
    cos = np.abs(np.sum(sefa(w, k=8).vectors * top, axis=1))
    np.testing.assert_allclose(cos, 1.0, atol=1e-5)


def test_ganspace_is_deterministic_and_explains_decreasing_variance():
    w = _spectrum_weight()
    b = np.random.default_rng(3).standard_normal(32)
    emb = np.random.default_rng(4).standard_normal((3, 32))
    for kwargs in ({}, {"time_embeddings": emb}):
        d1 = ganspace(w, b, k=6, n_samples=2000, **kwargs)
        d2 = ganspace(w, b, k=6, n_samples=2000, **kwargs)
        np.testing.assert_array_equal(d1.vectors, d2.vectors)
        assert np.all(np.diff(d1.explained) <= 0) and d1.explained.sum() <= 1.0 + 1e-6
        np.testing.assert_allclose(np.linalg.norm(d1.vectors, axis=1), 1.0, atol=1e-5)
    # Without the activation, PCA of A(s) mapped back by lstsq gives W's right singular vectors.
    _, _, vt = np.linalg.svd(w)
    cos = np.abs(np.sum(ganspace(w, b, k=3, n_samples=4000).vectors * vt[:3], axis=1))
    assert cos.min() > 0.97  # up to sampling noise
    assert "silu" in ganspace(w, b, k=2, n_samples=100, time_embeddings=emb).options
    with pytest.raises(InputError):
        ganspace(w, b, k=2, n_samples=3)


def test_directions_for_memoises_and_attaches_matching_labels(pipe, tmp_path):
    d = directions_for(pipe, "ganspace", labels_path=tmp_path / "none.json")
    assert len(d) == 8 and d is directions_for(pipe.unet, "ganspace", labels_path=tmp_path / "none.json")
    assert d.labels == () and d.label(2) == "ganspace 2"
    labels = [f"thing {i}" for i in range(8)]
    entry = {"options": d.options, "directions": [{"index": i, "label": t} for i, t in enumerate(labels)]}
    path = tmp_path / "directions.json"
    path.write_text(json.dumps({"style_affine_sha256": model_hash(pipe), "methods": {"ganspace": entry}}))
    assert directions_for(pipe, "ganspace", labels_path=path).labels == tuple(labels)
    path.write_text(json.dumps({"style_affine_sha256": "0" * 64, "methods": {"ganspace": entry}}))
    assert directions_for(pipe, "ganspace", labels_path=path).labels == ()  # stale: another model's labels
    # labels describe renders: a pipeline that starts from a mean latent takes only labels made with that one
    from models.pipeline import PosePipeline
    from tests.test_mean_latent import tiny_mean

    started = PosePipeline(pipe.vae, pipe.unet, pipe.scheduler, device="cpu", mean_latent=tiny_mean())
    path.write_text(json.dumps({"style_affine_sha256": model_hash(pipe), "methods": {"ganspace": entry}}))
    assert directions_for(started, "ganspace", labels_path=path).labels == ()
    made = {"style_affine_sha256": model_hash(pipe), "mean_latent_sha256": start_hash(started)}
    path.write_text(json.dumps({**made, "methods": {"ganspace": entry}}))
    assert directions_for(started, "ganspace", labels_path=path).labels == tuple(labels)
    other = PosePipeline(pipe.vae, pipe.unet, pipe.scheduler, device="cpu", mean_latent=tiny_mean(seed=1))
    assert start_hash(pipe) is None and start_hash(started) != start_hash(other)
    with pytest.raises(InputError, match="Unknown direction method"):
        directions_for(pipe, "pca")


# -- editing --------------------------------------------------------------------------------------
def test_edit_with_zero_amount_gives_identical_pixels(pipe, pose):
    state = pipe.prepare(pose, seed=5, steps=3)
    base = _pixels(pipe.render(state)[0])
    for step_range in (None, (0, 2)):
        images, new = edit(pipe, state, {("sefa", 0): 0.0, ("ganspace", 1): 0.0}, step_range=step_range)
        np.testing.assert_array_equal(_pixels(images), base)
    np.testing.assert_array_equal(new.style, state.style)


def test_edit_moves_s_and_repeats_exactly(pipe, pose):
    state = pipe.prepare(pose, seed=6, steps=3)
    dirs = {"sefa": directions_for(pipe, "sefa")}
    a, new = edit(pipe, state, {("sefa", 0): 3.0}, dirs)
    b, _ = edit(pipe, state, {("sefa", 0): 3.0}, dirs)
    np.testing.assert_array_equal(_pixels(a), _pixels(b))
    assert np.abs(_pixels(a).astype(int) - _pixels(pipe.render(state)[0])).max() > 0
    np.testing.assert_allclose(new.style, state.style + 3.0 * dirs["sefa"].vectors[0], atol=1e-6)
    np.testing.assert_array_equal(new.z_T, state.z_T)
    np.testing.assert_array_equal(_pixels(pipe.render(new)[0]), _pixels(a))  # the new state re-renders it
    assert new.settings["edit"]["edits"] == [{"method": "sefa", "index": 0, "amount": 3.0, "label": "sefa 0"}]


def test_step_range_uses_edited_style_only_inside(pipe, pose):
    state = pipe.prepare(pose, seed=7, steps=4)
    amounts = {("ganspace", 0): -3.0}
    full = _pixels(edit(pipe, state, amounts)[0])
    np.testing.assert_array_equal(_pixels(edit(pipe, state, amounts, step_range=(0, 4))[0]), full)
    part, new = edit(pipe, state, amounts, step_range=(0, 2))
    assert not np.array_equal(_pixels(part), full)
    assert not np.array_equal(_pixels(part), _pixels(pipe.render(state)[0]))
    assert new.settings["edit"]["step_range"] == [0, 2]
    np.testing.assert_array_equal(_pixels(rerender(pipe, new)[0]), _pixels(part))
    for bad in ((2, 2), (0, 5), (-1, 2), ("a", 3)):
        with pytest.raises(InputError, match="step range"):
            edit(pipe, state, amounts, step_range=bad)


def test_generate_edited_matches_edit_of_each_seed(pipe, pose):
    messages: list[str] = []
    images, states = generate_edited(pipe, pose, 3, {("sefa", 1): 5.0}, steps=2, num_images=2, messages=messages)
    assert [s.seed for s in states] == [3, 4] and "clamped" in messages[0]
    one, _ = edit(pipe, pipe.prepare(pose, 4, steps=2), {("sefa", 1): MAX_SIGMA})
    np.testing.assert_array_equal(_pixels(images[1:]), _pixels(one))
    assert states[1].settings["edit"]["messages"] == messages


# -- parsing --------------------------------------------------------------------------------------
def test_parse_edit_and_clamping():
    assert parse_edit("sefa:0=2.0") == ("sefa", 0, 2.0)
    assert parse_edit(" GANSpace : 3 = -1.5 ") == ("ganspace", 3, -1.5)
    notes: list[str] = []
    assert parse_edit("sefa:1=7", messages=notes) == ("sefa", 1, MAX_SIGMA)
    assert parse_edit("sefa:1=-1e9", messages=notes)[2] == -MAX_SIGMA
    assert len(notes) == 2 and "clamped to 3" in notes[0]
    amounts, notes = parse_edits(["sefa:0=1", "sefa:0=2"])
    assert amounts == {("sefa", 0): 2.0} and "twice" in notes[0]
    assert apply_amounts(np.zeros(3), {}, {}).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "text, match",
    [
        ("pca:0=1", "Unknown direction method"),
        ("sefa:10=1", "from 0 to 9"),
        ("sefa:0=nan", "finite"),
        ("sefa:0=inf", "finite"),
        ("sefa:0=big", "not a number"),
        ("sefa0=1", "METHOD:INDEX=AMOUNT"),
        ("sefa:-1=1", "METHOD:INDEX=AMOUNT"),
    ],
)
def test_bad_edits_are_one_sentence(text, match):
    with pytest.raises(InputError, match=match) as err:
        parse_edit(text)
    assert "\n" not in str(err.value) and str(err.value).endswith(".")


def test_edit_index_beyond_the_models_directions(pipe, pose):
    with pytest.raises(InputError, match="from 0 to 7"):
        edit(pipe, pipe.prepare(pose, 0, steps=2), {("sefa", 9): 1.0})


# -- labels and evaluation ------------------------------------------------------------------------
def test_labels_name_the_attribute_that_changes_most():
    minus = {"hair_color": np.array([[0.9, 0.1, 0.0]] * 4), "eye_color": np.array([[0.5, 0.5]] * 4)}
    plus = {"hair_color": np.array([[0.1, 0.0, 0.9]] * 4), "eye_color": np.array([[0.45, 0.55]] * 4)}
    classes = {"hair_color": ["pink", "blue", "green"], "eye_color": ["red", "blue"]}
    changes = ed.attribute_changes(minus, plus, classes)
    assert changes["hair_color"]["flips"] == 1.0 and math.isclose(changes["hair_color"]["tv"], 0.9)
    assert ed.label_from_changes(changes) == ("hair colour (pink → green)", ["hair_color"])
    minus["eye_color"], plus["eye_color"] = np.array([[0.8, 0.2]] * 4), np.array([[0.2, 0.8]] * 4)
    label, changed = ed.label_from_changes(ed.attribute_changes(minus, plus, classes))
    assert label == "hair colour (pink → green) + eye colour (red → blue)" and len(changed) == 2
    assert ed.label_from_changes(ed.attribute_changes(minus, minus, classes)) == (ed.SUBTLE, [])


class FakeClassifier:
    """Brightness and redness as two-class attributes of images in [-1, 1]."""

    classes: ClassVar[dict[str, list[str]]] = {"brightness": ["dark", "light"], "redness": ["grey", "red"]}

    def predict(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b = torch.sigmoid(20 * x.mean(dim=(1, 2, 3)))
        r = torch.sigmoid(20 * (x[:, 0] - x[:, 1:].mean(1)).mean(dim=(1, 2)))
        return {"brightness": torch.stack([1 - b, b], 1), "redness": torch.stack([1 - r, r], 1)}


class FakeDetector:
    """Returns the standing pose for every image; embeds an image as its mean colour."""

    def detect(self, images):
        return [Pose(STANDING, im.width, im.height) for im in images]

    def embed(self, images):
        return np.stack([np.asarray(im, dtype=np.float32).mean(axis=(0, 1)) for im in images])


def test_evaluation_and_label_cache_round_trip(pipe, pose, tmp_path):
    attrs = (FakeClassifier(), FakeClassifier.classes)
    result = ed.evaluate_directions(pipe, FakeDetector(), attrs, k=2, seeds=2, steps=2, poses=[pose, pose])
    for method in ("sefa", "ganspace"):
        summary = result["methods"][method]["summary"]
        assert summary["k"] == 2 and 0 <= summary["single_attribute_labels"] <= 2
        row = result["methods"][method]["directions"][0]
        assert {"pixel_change", "feature_distance", "pck", "visible", "label", "attributes_changed"} <= set(row)
    cache = ed.label_cache(result, tmp_path)
    path = tmp_path / "directions.json"
    path.write_text(json.dumps(cache))
    d = directions_for(pipe, "sefa", k=2, labels_path=path)
    assert d.labels == tuple(r["label"] for r in result["methods"]["sefa"]["directions"])


def test_axes_diagnostic_moves_one_coordinate_of_s_and_stays_out_of_the_label_cache(pipe, pose):
    attrs = (FakeClassifier(), FakeClassifier.classes)
    result = ed.evaluate_directions(pipe, FakeDetector(), attrs, ["sefa"], k=1, seeds=1, steps=2, poses=[pose], axes=2)
    assert list(result["methods"]) == ["sefa", "axes"] and result["methods"]["axes"]["summary"]["k"] == 2
    dirs = ed.style_axes(pipe, 2)
    assert dirs.vectors.shape == (2, pipe.unet.style_affine.in_features) and dirs.vectors[1, 1] == 1.0
    st = pipe.prepare(pose, 0, steps=2)
    moved = np.asarray(st.style, np.float32).copy()
    moved[1] += 1.5
    expected = pipe.render(st.with_style(moved))[0][0]
    assert np.array_equal(np.asarray(ed.edited_render(pipe, st, ("axes", 1), 1.5, dirs)), np.asarray(expected))
    assert set(ed.label_cache(result, "m")["methods"]) == {"sefa"}
    with pytest.raises(InputError, match="--axes"):
        ed.style_axes(pipe, 10_000)


def test_pathways_split_an_edit_between_the_start_and_the_unet(pose):
    """A start that ignores s leaves the start-only renders unchanged and gives the UNet-only renders the whole edit."""
    from tests.test_mean_latent import tiny_mean, with_mean

    attrs = (FakeClassifier(), FakeClassifier.classes)
    mean = tiny_mean(scale=1.0)
    result = ed.evaluate_directions(with_mean(mean), FakeDetector(), attrs, ["sefa"], k=2, seeds=2, steps=2,
                                    poses=[pose, pose], pathways=True)  # fmt: skip
    summary = result["methods"]["sefa"]["summary"]
    assert {"start_only", "unet_only"} <= set(summary) and summary["start_only"]["visible"] <= 2
    row = result["methods"]["sefa"]["directions"][0]
    assert {"pixel_change", "visible", "label", "changes"} <= set(row["pathways"]["start"])
    assert row["pathways"]["start"]["pixel_change"] > 0  # this start reads s

    with torch.no_grad():  # now the start ignores s: only the UNet's path is left
        mean.style_bias.weight.zero_()
        for block in mean.blocks:
            block.film.weight.zero_()
    deaf = ed.evaluate_directions(with_mean(mean), FakeDetector(), attrs, ["sefa"], k=2, seeds=2, steps=2,
                                  poses=[pose, pose], pathways=True)  # fmt: skip
    for row in deaf["methods"]["sefa"]["directions"]:
        assert row["pathways"]["start"]["pixel_change"] == 0.0 and row["pathways"]["start"]["label"] == ed.SUBTLE
        assert row["pathways"]["unet"]["pixel_change"] == row["pixel_change"]
    with pytest.raises(InputError, match="sampler start"):
        ed.evaluate_directions(with_mean(None), FakeDetector(), attrs, ["sefa"], k=1, seeds=1, steps=2, poses=[pose],
                               pathways=True)  # fmt: skip


# -- command line ---------------------------------------------------------------------------------
def test_cli_edit_records_edits_and_clamping(pipe, tmp_path, capsys):
    from app import main
    from models.pose_input import read_png_record

    pipe.save_pretrained(tmp_path / "model")
    out = tmp_path / "x.png"
    argv = ["generate", "--pose", "waving", "--seed", "3", "--out", str(out), "--steps", "2"]
    argv += ["--model", str(tmp_path / "model"), "--edit", "sefa:0=2.0", "--edit", "ganspace:3=-4.5"]
    assert main(argv) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    record = line["settings"]["edit"]
    assert [(e["method"], e["index"], e["amount"]) for e in record["edits"]] == [
        ("sefa", 0, 2.0),
        ("ganspace", 3, -3.0),
    ]
    assert "clamped" in record["messages"][0]
    assert read_png_record(out)["settings"]["edit"] == record
    assert main(argv[:-1] + ["ganspace:3=nan"]) == 1
    assert "finite" in json.loads(capsys.readouterr().out.strip())["error"]
