"""The refinement evaluation's prompts: every judged attribute, a change always asked, other changes counted."""

from __future__ import annotations

import json

import pytest

from models.attributes import ACCESSORIES, ATTRIBUTES
from models.errors import InputError
from models.refine_settings import parse_prompts
from training import eval_clip
from training.eval_clip import PROMPT_ATTRIBUTES, attribute_prompt, check_asked, choose_prompt, others_changed

CLASSES = {name: list(values) for name, values in ATTRIBUTES.items()}
SEEN = {"hair_color": "pink", "hair_style": "twintails", "eye_color": "blue", "outfit": "dress",
        "outfit_color": "red", "outfit_color2": "white", "background": "plain", "background_color": "white",
        "skin": "fair", "gender": "girl", "glasses": "with", "cat_ears": "without", "beret": "without",
        "hair_ribbon": "without"}  # fmt: skip


def test_every_attribute_is_asked_in_turn_and_always_for_a_change():
    asked = [choose_prompt(i, SEEN, CLASSES) for i in range(len(PROMPT_ATTRIBUTES))]
    assert [a for a, _, _ in asked] == list(PROMPT_ATTRIBUTES)
    for attribute, value, prompt in asked:
        assert value in CLASSES[attribute] and value != SEEN[attribute]
        assert ACCESSORIES.get(attribute, value) in prompt
    # An accessory is asked for where it is missing and asked away (weight -1) where it is worn.
    assert {a: p for a, _, p in asked if a in ACCESSORIES} == {
        "glasses": "glasses:-1",
        "cat_ears": "cat ears",
        "beret": "beret",
        "hair_ribbon": "hair ribbon",
    }
    assert parse_prompts("glasses:-1") == [("glasses", -1.0)]
    assert attribute_prompt("eye_color", "green") == "green eyes"
    assert attribute_prompt("outfit_color", "teal", "kimono") == "teal kimono"


def test_a_sailor_uniforms_colour_is_asked_as_another_outfit():
    attribute, value, prompt = choose_prompt(
        PROMPT_ATTRIBUTES.index("outfit_color"), {**SEEN, "outfit": "sailor uniform"}, CLASSES
    )
    assert attribute == "outfit" and value != "sailor uniform" and prompt == value


def test_others_changed_spares_the_asked_and_tied_attributes():
    after = {**SEEN, "outfit": "kimono", "outfit_color": "teal", "outfit_color2": "red", "hair_color": "blue"}
    assert others_changed(SEEN, after, "outfit") == ["hair_color"]
    assert others_changed(SEEN, SEEN, "hair_color") == []


@pytest.mark.parametrize(
    "names, words",
    [
        (["hats"], "Unknown attribute 'hats'"),
        (["accessories"], "Unknown attribute 'accessories'"),
        ([], "at least one"),
    ],
)
def test_bad_asked_attributes_are_one_sentence(names, words):
    with pytest.raises(InputError, match=words):
        check_asked(names)


def test_the_command_refuses_an_unknown_attribute_before_loading(capsys):
    assert eval_clip.main_refine(["--json", "--ask", "hats", "--n", "1"]) == 1
    assert "Unknown attribute 'hats'" in capsys.readouterr().out


def test_the_report_carries_the_judges_own_reliability(tmp_path):
    """Each asked attribute comes with the judge's balanced accuracy on decoded renders, when its folder says it."""
    from training.eval_clip import judge_reliability

    split = {"balanced_accuracy": {"beret": 0.907, "eye_color": 0.206}, "accuracy": {"beret": 0.95}}
    (tmp_path / "training_info.json").write_text(json.dumps({"accuracy": {"heldout_autoencoder": split}}))
    assert judge_reliability(tmp_path, ("beret", "eye_color", "hair_color")) == {"beret": 0.907, "eye_color": 0.206}
    assert judge_reliability(tmp_path / "elsewhere", ("beret",)) == {}
