"""The guided style axes: bins from class frequencies, the 1-D classifier loss, and the affine penalty that makes
SeFa and GANSpace return the axes."""

from __future__ import annotations

import json
from statistics import NormalDist

import numpy as np
import pytest
import torch

from models.directions import ganspace, sefa
from training.style_guide import (
    FREE_NORM,
    GUIDE_ORDER,
    affine_penalty,
    classes_of,
    guide_accuracy,
    guide_loss,
    make_layout,
    read_labels,
    sample_guided,
    target_norms,
)

CLASSES = {"a": ("x", "y", "z"), "b": ("p", "q")}


def test_layout_bins_follow_class_frequencies():
    labels = np.array([[0, 0]] * 50 + [[1, 1]] * 25 + [[2, -1]] * 25)
    layout = make_layout(labels, CLASSES, ["a", "b"], style_dim=8)
    a, b = layout.centres
    assert list(a) == sorted(a) and list(b) == sorted(b)
    # class x holds ~half the data, so its centre is near the quartile -0.67 and the others sit above 0
    assert a[0] == pytest.approx(NormalDist().inv_cdf((50 + 1) / 103 / 2), abs=1e-4)
    assert a[1] > 0 and a[2] > a[1]
    assert b[0] < 0 < b[1] and layout.taus[1] == pytest.approx(0.5 * (b[1] - b[0]), abs=1e-4)
    # more attributes than axes: only the first style_dim are guided
    assert make_layout(labels, CLASSES, ["a", "b"], style_dim=1).names == ("a",)


def test_guide_loss_is_low_at_the_right_centre_and_skips_unseen():
    labels = np.array([[0, 0], [1, 1], [2, 0]])
    layout = make_layout(labels, CLASSES, ["a", "b"], style_dim=2)
    y = torch.tensor([[2, -1], [0, 1]])
    right = torch.tensor([[layout.centres[0][2], 5.0], [layout.centres[0][0], layout.centres[1][1]]])
    wrong = torch.tensor([[layout.centres[0][0], 5.0], [layout.centres[0][2], layout.centres[1][0]]])
    assert guide_loss(right, y, layout) < 0.5 < guide_loss(wrong, y, layout)
    assert guide_accuracy(right, y, layout) == 1.0 and guide_accuracy(wrong, y, layout) == 0.0
    # nothing seen: zero, and still a graph leaf the optimiser can step through
    mu = torch.zeros(2, 2, requires_grad=True)
    assert guide_loss(mu, torch.full((2, 2), -1), layout).item() == 0.0


def test_read_labels_from_synth_attributes(tmp_path):
    (tmp_path / "attributes").mkdir()
    record = {"hair_color": "pink", "outfit": "dress", "outfit_colors": ["red", "blue"], "yaw": "back",
              "eye_color": "blue", "background": "plain", "background_color": "green"}  # fmt: skip
    (tmp_path / "attributes" / "000000.json").write_text(json.dumps(record))
    labels = read_labels(tmp_path, ["000000", "000001"], GUIDE_ORDER)
    from models.attributes import ATTRIBUTES

    row = dict(zip(GUIDE_ORDER, labels[0], strict=True))
    assert row["hair_color"] == ATTRIBUTES["hair_color"].index("pink")
    assert row["outfit_color"] == ATTRIBUTES["outfit_color"].index("red")
    assert row["eye_color"] == -1 and row["outfit_color2"] == -1  # from behind; a dress's belt line
    assert (labels[1] == -1).all()  # no attributes file


def test_affine_penalty_makes_sefa_and_ganspace_return_the_axes():
    torch.manual_seed(0)
    d, guided = 12, 5
    norms = target_norms(d, guided)
    assert norms[0] > norms[guided - 1] > norms[guided] == FREE_NORM
    w = torch.nn.Parameter(torch.randn(48, d) * 0.3)
    before = affine_penalty(w, norms).item()
    opt = torch.optim.Adam([w], lr=1e-2)
    for _ in range(1500):
        opt.zero_grad()
        affine_penalty(w, norms).backward()
        opt.step()
    assert affine_penalty(w, norms).item() < 1e-4 * before
    weight = w.detach().numpy()
    for dirs in (sefa(weight, guided), ganspace(weight, np.zeros(48), guided)):
        assert np.abs(dirs.vectors).argmax(axis=1).tolist() == list(range(guided)), dirs.method
        assert np.abs(dirs.vectors).max(axis=1).min() > 0.95, dirs.method


def test_label_set_axes_are_standard_normal_and_fall_in_their_class_bins():
    rng = np.random.default_rng(0)
    labels = np.stack([rng.integers(0, 3, 4000), rng.integers(0, 2, 4000)], axis=1)
    labels[:500, 1] = -1  # unseen: the whole of N(0, 1)
    layout = make_layout(labels, CLASSES, ["a", "b"], style_dim=4)
    s = sample_guided(torch.from_numpy(labels), layout, torch.Generator().manual_seed(0))
    assert s.shape == (4000, 2) and abs(float(s.mean())) < 0.05 and abs(float(s.std()) - 1) < 0.05
    back = classes_of(torch.cat([s, torch.zeros(4000, 2)], dim=1), layout).numpy()
    seen = labels >= 0
    assert (back[seen] == labels[seen]).all()


def test_read_layout_restores_a_saved_layout_and_old_files_without_shares(tmp_path):
    from training.style_guide import read_layout

    labels = np.array([[0, 1], [1, 1], [1, 0], [2, -1], [2, 1], [2, 1]])
    layout = make_layout(labels, CLASSES, ("a", "b"), style_dim=4)
    path = tmp_path / "training_info.json"
    path.write_text(json.dumps({"style_guide": layout.to_json()}))
    assert read_layout(path) == layout
    old = {k: v for k, v in layout.to_json().items() if k != "shares"}  # written before the labels mode
    path.write_text(json.dumps({"style_guide": old}))
    np.testing.assert_allclose(np.concatenate(read_layout(path).shares), np.concatenate(layout.shares), atol=1e-4)
    path.write_text(json.dumps({"style_guide": None}))
    assert read_layout(path) is None and read_layout(tmp_path / "missing.json") is None
