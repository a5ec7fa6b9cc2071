"""The data set writer: layout, keypoint files, determinism across worker counts, --poses."""

import json

import numpy as np
import pytest

from models.errors import InputError
from models.pose import load
from training.skeleton import sample_pose
from training.synth import SUBDIRS, main, read_poses


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_files(tmp_path):
    assert main(["--out", str(tmp_path), "--n", "5", "--seed", "3", "--workers", "1"]) == 0
    for sub, ext in zip(SUBDIRS, ("png", "json", "txt", "json")):
        assert sorted(p.name for p in (tmp_path / sub).iterdir()) == [f"{i:06d}.{ext}" for i in range(5)]
    obj = json.loads((tmp_path / "keypoints" / "000002.json").read_text())
    assert obj["width"] == obj["height"] == 128 and len(obj["keypoints"]) == 51
    assert set(obj["keypoints"][2::3]) <= {0, 1, 2}
    pose = load(tmp_path / "keypoints" / "000002.json")
    assert pose.width == 128 and pose.visible.sum() >= 8
    lines = (tmp_path / "captions" / "000002.txt").read_text().splitlines()
    attrs = json.loads((tmp_path / "attributes" / "000002.json").read_text())
    assert len(lines) == 2 and lines[0].startswith("1")
    assert f"{attrs['hair_color']} hair" in lines[0] and attrs["action"] and attrs["yaw"]


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    main(["--out", str(a), "--n", "6", "--seed", "4", "--workers", "1"])
    main(["--out", str(b), "--n", "6", "--seed", "4", "--workers", "2"])
    main(["--out", str(c), "--n", "6", "--seed", "5", "--workers", "1"])
    assert _files(a) == _files(b)
    assert _files(a)["images/000000.png"] != _files(c)["images/000000.png"]


def test_poses_file(tmp_path):
    rng = np.random.default_rng(0)
    poses = [sample_pose(rng) for _ in range(3)]
    f = tmp_path / "poses.jsonl"
    f.write_text("\n".join(p.to_json() for p in poses) + "\n")
    out = tmp_path / "out"
    assert main(["--out", str(out), "--poses", str(f), "--workers", "1"]) == 0
    assert len(list((out / "images").iterdir())) == 3
    for i, p in enumerate(poses):
        got = load(out / "keypoints" / f"{i:06d}.json")
        assert np.allclose(got.xy, p.xy, atol=1e-3)
        assert json.loads((out / "attributes" / f"{i:06d}.json").read_text())["action"] == "custom"


def test_pairs_differ_in_the_swapped_attribute_alone_and_share_the_pose(tmp_path, capsys):
    from training.data import count_pairs, list_items

    assert main(["--out", str(tmp_path), "--n", "19", "--seed", "2", "--pairs", "--workers", "2"]) == 0
    stems = list_items(tmp_path)
    assert len(stems) == 18 and count_pairs(tmp_path, stems) == 9  # an odd --n drops the unpaired last
    swapped = set()
    for k in range(9):
        a, b = (json.loads((tmp_path / "attributes" / f"{2 * k + j:06d}.json").read_text()) for j in (0, 1))
        assert a["pair"] == b["pair"] == k and a["swapped"] == b["swapped"]
        ignore = {"index", "outfit_colors"} if a["swapped"].startswith("outfit_color") else {"index"}
        changed = {key for key in a if a[key] != b[key]} - ignore
        assert changed == ({a["swapped"]} if a["swapped"] not in ("outfit_color", "outfit_color2") else set())
        assert a["swapped"] not in ("outfit_color", "outfit_color2") or a["outfit_colors"] != b["outfit_colors"]
        pa, pb = (load(tmp_path / "keypoints" / f"{2 * k + j:06d}.json") for j in (0, 1))
        assert np.array_equal(pa.xy, pb.xy)
        ia, ib = ((tmp_path / "images" / f"{2 * k + j:06d}.png").read_bytes() for j in (0, 1))
        assert ia != ib
        swapped.add(a["swapped"])
    assert len(swapped) >= 5  # the attribute cycles with the pair
    assert main(["--out", str(tmp_path / "x"), "--n", "1", "--pairs"]) == 2
    assert "--pairs" in capsys.readouterr().err


def test_count_pairs_refuses_a_folder_without_pairs(tmp_path):
    from training.data import count_pairs, list_items

    main(["--out", str(tmp_path), "--n", "4", "--seed", "1", "--workers", "1"])
    with pytest.raises(InputError, match="not a pair"):
        count_pairs(tmp_path, list_items(tmp_path))
    with pytest.raises(InputError, match="even number"):
        count_pairs(tmp_path, list_items(tmp_path)[:3])


def test_bad_poses_file(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"keypoints": [[0, 0, 1]]}\n')
    with pytest.raises(InputError):
        read_poses(f)
    assert main(["--out", str(tmp_path / "o"), "--poses", str(f)]) == 2


def test_prepare_crops_around_the_pose_and_skips_failures(tmp_path, monkeypatch):
    from PIL import Image

    from models import pose_input
    from models.pose import Pose

    src = tmp_path / "photos"
    src.mkdir()
    Image.new("RGB", (320, 240), (200, 100, 50)).save(src / "a.png")
    Image.new("RGB", (200, 300), (10, 100, 50)).save(src / "b.jpg")
    pose = sample_pose(np.random.default_rng(1))

    def fake(im):
        if im.size == (200, 300):
            raise pose_input.NoPersonError("No person found in the image.")
        return Pose(pose.keypoints * np.array([0.5, 0.8, 1], np.float32), *im.size)

    monkeypatch.setattr(pose_input, "extract_pose", fake)
    out = tmp_path / "out"
    assert main(["--images", str(src), "--out", str(out), "--size", "64"]) == 0
    assert [p.name for p in (out / "images").iterdir()] == ["000000.png"]
    got = load(out / "keypoints" / "000000.json")
    assert got.width == 64
    x0, y0, x1, y1 = got.bbox()
    assert 0 <= x0 and x1 <= 64 and 0 <= y0 and y1 <= 64 and max(x1 - x0, y1 - y0) > 40
    assert Image.open(out / "images" / "000000.png").size == (64, 64)


def test_the_wide_sampler_makes_free_cropped_poses_and_leaves_the_default_draws_alone():
    import numpy as np

    from training.skeleton import FREE, sample_rig

    rigs = [sample_rig(np.random.default_rng([7, i]), wide=True) for i in range(200)]
    assert 0.25 < np.mean([r.action == FREE for r in rigs]) < 0.55
    cut = [r for r in rigs if (r.pose.visibility == 0).any()]
    assert 0.1 < len(cut) / len(rigs) < 0.4  # a quarter is zoomed in; some keep every point in the frame
    for r in rigs:
        inside = (r.pose.xy >= 0).all(axis=1) & (r.pose.xy <= 1).all(axis=1)
        assert (r.pose.visibility[~inside] == 0).all()  # a point cut off by the frame is absent
        assert inside[0] or r.pose.visibility[0] == 0
    again = sample_rig(np.random.default_rng([7, 3]), wide=True)
    assert np.array_equal(again.pose.xy, rigs[3].pose.xy)
    plain = [sample_rig(np.random.default_rng([7, i])) for i in range(50)]
    assert all(r.action != FREE and (r.pose.visibility > 0).all() for r in plain)
