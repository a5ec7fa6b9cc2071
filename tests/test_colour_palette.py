"""The training data's colours per part (the colour search's palette) and the command that learns them."""

from __future__ import annotations

import numpy as np
import pytest

from models.edit_regions import PALETTE_FILE, data_palette, load_palette, save_palette
from models.errors import InputError
from training.character import BACKGROUNDS, CLOTH_COLORS
from training.palette import main as palette_main
from training.synth import make_sample


@pytest.fixture(scope="module")
def samples():
    return [make_sample(0, i) for i in range(16)]


def test_palette_holds_each_image_outfit_and_backdrop_colour(samples):
    images = [np.asarray(s["render"].image.convert("RGB")) for s in samples]
    palette = data_palette(images, [s["render"].pose for s in samples], colours=24)
    assert set(palette) == {"body", "background"}
    for colours in palette.values():
        assert colours.dtype == np.uint8 and colours.shape[1] == 3 and 2 <= len(colours) <= 24
    # learnt without labels, the palette still holds each render's main outfit colour and its backdrop's colours
    for s in samples:
        attrs = s["attributes"]
        outfit = np.float32(CLOTH_COLORS[attrs["outfit_colors"][0]])
        backdrop = np.float32(BACKGROUNDS[attrs["background_color"]]).mean(axis=0)
        assert np.abs(palette["body"].astype(np.float32) - outfit).max(axis=1).min() < 48
        assert np.abs(palette["background"].astype(np.float32) - backdrop).max(axis=1).min() < 48
    assert all(
        np.array_equal(a, b)
        for a, b in zip(palette.values(), data_palette(images, [s["render"].pose for s in samples]).values())
    )


def test_palette_file_round_trip_and_bad_files(tmp_path):
    palette = {"body": np.uint8([[255, 0, 0], [0, 0, 255]]), "background": np.uint8([[250, 250, 250]])}
    save_palette(palette, tmp_path / PALETTE_FILE, source="test")
    loaded = load_palette(tmp_path / PALETTE_FILE)
    assert np.allclose(loaded["body"], [[1, -1, -1], [-1, -1, 1]]) and loaded["background"].shape == (1, 3)
    assert load_palette(tmp_path / "absent.json") == {}  # no palette: the search keeps the decoder's gamut
    for text in ("{", '{"regions": {"body": []}}', '{"regions": {"body": [[300, 0, 0]]}}', '{"colours": 1}'):
        (tmp_path / "bad.json").write_text(text)
        with pytest.raises(InputError, match="not a colour palette"):
            load_palette(tmp_path / "bad.json")
    with pytest.raises(InputError):
        data_palette([np.zeros((8, 8, 3), np.uint8)], [])


def test_command_learns_a_palette_from_renders_and_a_folder(tmp_path, capsys):
    from training.synth import write_dataset

    out = tmp_path / "palette.json"
    assert palette_main(["--synth", "0:6", "--out", str(out), "--colours", "4"]) == 0
    assert {k: len(v) for k, v in load_palette(out).items()} == {"body": 4, "background": 4}
    write_dataset(tmp_path / "data", n=4, seed=0, size=128, workers=1)
    assert palette_main(["--data", str(tmp_path / "data"), "--out", str(out), "--colours", "3"]) == 0
    assert "from " in capsys.readouterr().out
    assert palette_main(["--synth", "zero", "--out", str(out)]) == 2
    assert "SEED:N" in capsys.readouterr().err
