"""The judge's cross-talk evaluation: renders that differ in one attribute, and what the judge reads off them."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.errors import InputError
from training.character import SWAPS, sample_character, swap
from training.eval_common import crosstalk, load_attributes, main_judge, pairs

# the Character fields each swap may touch
FIELDS = {"outfit_color": {"outfit_colors"}, "outfit_color2": {"outfit_colors"}}


@pytest.mark.parametrize("attribute", list(SWAPS))
def test_swap_changes_that_attribute_alone(attribute):
    rng = np.random.default_rng(0)
    applied = 0
    for _ in range(30):
        c = sample_character(rng)
        c2 = swap(c, attribute, rng)
        if c2 is None:  # only outfits with their own colour rule are skipped
            assert attribute.startswith("outfit") and c.outfit in ("sailor uniform", "dress")
            continue
        applied += 1
        before, after = c.to_dict(), c2.to_dict()
        changed = {k for k in before if before[k] != after[k]}
        assert changed == FIELDS.get(attribute, {attribute})
        if attribute.startswith("outfit_color"):
            assert c2.outfit_colors[0] != c2.outfit_colors[1]
    assert applied >= 15


def test_pairs_share_the_pose_and_differ_in_pixels():
    a, b = pairs("hair_color", 3)
    assert a.shape == b.shape == (3, 128, 128, 3) and a.dtype == np.uint8
    assert all(np.abs(a[i].astype(int) - b[i]).mean() > 0.5 for i in range(3))
    a2, _ = pairs("hair_color", 3)
    np.testing.assert_array_equal(a, a2)  # seeded: the same characters every run


def test_shipped_judge_sees_the_swapped_attribute_most():
    loaded = load_attributes()
    if loaded is None:
        pytest.skip("no attribute classifier in weights/attributes")
    judge, classes = loaded
    rows = crosstalk(judge, dict(classes), None, n=4, attributes=["hair_color", "background"])
    for name in ("hair_color", "background"):
        assert rows[name]["pairs"] == 4
        assert rows[name]["self"] > 0.5 > rows[name]["max_other_tv"]
        assert rows[name]["max_other"] != name


def test_bad_input_is_refused():
    loaded = load_attributes()
    if loaded is None:
        pytest.skip("no attribute classifier in weights/attributes")
    judge, classes = loaded
    with pytest.raises(InputError, match="at least 1"):
        crosstalk(judge, dict(classes), None, n=0)
    with pytest.raises(InputError, match="Unknown attribute.*wings"):
        crosstalk(judge, dict(classes), None, n=1, attributes=["hair_color", "wings"])
    with pytest.raises(InputError, match="Unknown attribute"):
        swap(sample_character(np.random.default_rng(0)), "wings", np.random.default_rng(0))


def test_command_line_json(capsys):
    if load_attributes() is None:
        pytest.skip("no attribute classifier in weights/attributes")
    assert main_judge(["--json", "--n", "2", "--attributes", "background", "--ae", ""]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"]["background"]["pairs"] == 2 and out["through_autoencoder"] is None
    assert main_judge(["--n", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err
