"""The keypoint detector: decoding, losses, save/load, `detect`, augmentation geometry, a training
smoke run and the `detect` command line, all on tiny seeded models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.detector import KeypointDetector, decode_heatmaps, gaussian_targets, heatmap_loss
from models.pose import LIMBS, Pose, from_dict

ROOT = Path(__file__).resolve().parents[1]


def tiny_detector(image_size: int = 32) -> KeypointDetector:
    """A seeded detector small enough to run in milliseconds."""
    torch.manual_seed(0)
    return KeypointDetector(image_size=image_size, channels=(4, 4, 8, 8), decoder_channels=4, heatmap_stride=4).eval()


def write_fake_folder(root: Path, n: int, size: int = 64, seed: int = 0) -> None:
    """A synth-layout folder: stick figures (lines between random keypoints) on plain backgrounds."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "keypoints").mkdir()
    for i in range(n):
        pts = rng.uniform(0.2, 0.8, (17, 2)) * size
        im = Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(150, 255, 3)))
        from PIL import ImageDraw

        draw = ImageDraw.Draw(im)
        for a, b in LIMBS:
            draw.line([tuple(pts[a]), tuple(pts[b])], fill=(40, 40, 80), width=2)
        im.save(root / "images" / f"{i:06d}.png")
        flat = []
        for (x, y), v in zip(pts, rng.choice([1, 2], 17, p=[0.2, 0.8])):
            flat += [float(x), float(y), int(v)]
        (root / "keypoints" / f"{i:06d}.json").write_text(
            json.dumps({"width": size, "height": size, "keypoints": flat})
        )


# -- decoding and losses --------------------------------------------------------------------------
def test_decode_recovers_subcell_positions():
    xy = torch.tensor([[[0.5, 0.5], [0.3137, 0.7021], [0.05, 0.95]]])
    logits = gaussian_targets(xy, 32, 1.0).clamp_min(1e-30).log()
    got = decode_heatmaps(logits)
    # A window of +-2 cells truncates the Gaussian a little: within a tenth of a cell.
    assert torch.allclose(got, xy, atol=0.1 / 32)


def test_decode_symmetric_peak_is_exact():
    heat = torch.full((1, 1, 8, 8), -10.0)
    heat[0, 0, 3, 5] = 5.0
    got = decode_heatmaps(heat)[0, 0]
    assert torch.allclose(got, torch.tensor([(5 + 0.5) / 8, (3 + 0.5) / 8]), atol=1e-4)


def test_heatmap_loss_is_zero_at_the_target_and_positive_elsewhere():
    xy = torch.rand(2, 17, 2)
    target = gaussian_targets(xy, 16, 1.0)
    weight = torch.ones(2, 17)
    assert float(heatmap_loss(target.clamp_min(1e-30).log(), target, weight)) == pytest.approx(0.0, abs=1e-4)
    assert float(heatmap_loss(torch.zeros(2, 17, 16, 16), target, weight)) > 1.0
    # Zero weight: those points do not count.
    assert float(heatmap_loss(torch.zeros(2, 17, 16, 16), target, torch.zeros(2, 17))) == 0.0


# -- the model ------------------------------------------------------------------------------------
def test_forward_shapes():
    det = tiny_detector()
    out = det(torch.zeros(3, 3, 32, 32))
    assert out.heatmaps.shape == (3, 17, 8, 8)
    assert out.visibility.shape == (3, 17)
    assert out.features.shape == (3, det.feature_dim)


def test_save_load_round_trip(tmp_path):
    det = tiny_detector()
    det.save_pretrained(tmp_path)
    assert (tmp_path / "config.json").is_file()
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = KeypointDetector.from_pretrained(str(tmp_path)).eval()
    assert loaded.config.channels == det.config.channels or list(loaded.config.channels) == list(det.config.channels)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a, b = det(x), loaded(x)
    assert torch.allclose(a.heatmaps, b.heatmaps, atol=1e-6)
    assert torch.allclose(a.visibility, b.visibility, atol=1e-6)


def test_detect_returns_poses_in_each_images_frame():
    det = tiny_detector()
    images = [Image.new("RGB", (32, 32), "white"), Image.new("RGB", (80, 40), "red"), Image.new("L", (40, 64))]
    poses = det.detect(images)
    assert len(poses) == 3
    for pose, im in zip(poses, images):
        assert isinstance(pose, Pose)
        assert pose.keypoints.shape == (17, 3)
        assert (pose.width, pose.height) == im.size
        assert ((pose.visibility >= 0) & (pose.visibility <= 1)).all()
    assert det.embed(images).shape == (3, det.feature_dim)
    assert det.training is False


def test_detect_keeps_training_mode_and_rejects_non_images():
    det = tiny_detector().train()
    det.detect([Image.new("RGB", (32, 32))])
    assert det.training
    from models.errors import InputError

    with pytest.raises(InputError):
        det.detect([])
    with pytest.raises(InputError):
        det.detect([np.zeros((32, 32, 3))])


def test_shipped_detector_is_small():
    weights = ROOT / "weights" / "detector" / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():
        pytest.skip("weights/detector is not shipped yet")
    assert weights.stat().st_size < 3 * 1024 * 1024


# -- training -------------------------------------------------------------------------------------
def test_augment_moves_keypoints_with_the_pixels():
    from training.train_detector import augment

    rng = np.random.default_rng(1)
    size, b = 64, 12
    images = np.zeros((b, size, size, 3), dtype=np.uint8)
    kp = np.zeros((b, 17, 3), dtype=np.float32)
    kp[:, :, :2] = rng.uniform(0.3, 0.7, (b, 17, 2))
    kp[:, :, 2] = 1.0
    for i in range(b):
        x, y = (kp[i, 0, :2] * size).astype(int)  # the nose maps to itself under mirroring
        images[i, y - 2 : y + 3, x - 2 : x + 3] = 255
        kp[i, 0, :2] = (np.array([x, y]) + 0.5) / size
    out, moved = augment(images, kp, rng)
    assert out.shape == (b, 3, size, size) and moved.shape == (b, 17, 3)
    for i in range(b):
        lum = (out[i].mean(0) + 1).numpy()
        lum = np.where(lum > lum.max() * 0.6, lum, 0.0)
        ys, xs = np.mgrid[:size, :size]
        centre = np.array([(lum * xs).sum(), (lum * ys).sum()]) / lum.sum()
        assert np.abs((centre + 0.5) / size - moved[i, 0, :2].numpy()).max() < 2.0 / size


def test_train_smoke_and_resume(tmp_path):
    from training.train_detector import main

    data = tmp_path / "data"
    write_fake_folder(data, 6)
    out = tmp_path / "run"
    common = [
        "--data",
        str(data),
        "--val-data",
        str(data),
        "--out",
        str(out),
        "--batch",
        "2",
        "--image-size",
        "32",
        "--channels",
        "4,4,8,8",
        "--decoder-channels",
        "4",
        "--log-every",
        "1",
        "--eval-every",
        "2",
        "--checkpoint-every",
        "1",
    ]
    assert main([*common, "--steps", "2"]) == 0
    info = json.loads((out / "training_info.json").read_text())
    assert info["steps"] == 2 and 0 <= info["pck@0.1_heldout"] <= 1
    assert (out / "final" / "config.json").is_file()
    shipped = tmp_path / "weights" / "detector"
    assert main([*common, "--steps", "3", "--resume", "--publish", str(shipped)]) == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "resume" and r["step"] == 2 for r in log)
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3]
    assert "PCK@0.1 on held-out renders" in (shipped / "README.md").read_text()
    assert json.loads((shipped / "training_info.json").read_text())["steps"] == 3
    assert KeypointDetector.from_pretrained(str(shipped)).config.channels is not None


# -- command line ---------------------------------------------------------------------------------
def test_detect_cli_prints_json_lines(tmp_path, capsys):
    # In-process (`python -m training.eval` calls the same `main`): a subprocess would spend ~10 s
    # importing torch and diffusers again.
    from training.eval import main

    tiny_detector().save_pretrained(tmp_path / "det")
    paths = []
    for i, size in enumerate([(32, 32), (48, 40)]):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", size, (200, 100, 50)).save(paths[-1])
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    code = main(["detect", *map(str, paths), str(bad), "--detector", str(tmp_path / "det")])
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(lines) == 3
    for line, path, size in zip(lines, paths, [(32, 32), (48, 40)]):
        assert line["input"] == str(path)
        assert line["format"] == "coco17"
        assert (line["width"], line["height"]) == size
        assert len(line["keypoints"]) == 17 and all(len(p) == 3 for p in line["keypoints"])
        assert from_dict(line).keypoints.shape == (17, 3)  # our own reader takes it back
    assert lines[2]["input"] == str(bad) and "error" in lines[2]
    assert code == 1


def test_detect_cli_without_a_detector_says_so(tmp_path, capsys):
    from training.eval import main

    assert main(["detect", "x.png", "--detector", str(tmp_path / "missing")]) == 1
    assert "No keypoint detector" in json.loads(capsys.readouterr().out)["error"]


@pytest.mark.skipif(not (ROOT / "weights" / "detector" / "config.json").is_file(), reason="no shipped detector")
def test_shipped_detector_tells_a_figure_from_a_blank_or_noise():
    from models.detector import MIN_FIGURE_CONFIDENCE, load_detector
    from training.eval_common import heldout_renders

    det = load_detector()
    renders = [r.image for r in heldout_renders(0, 4)]
    rng = np.random.default_rng(0)
    empty = [Image.new("RGB", (128, 128), c) for c in ("white", (40, 80, 200))]
    empty.append(Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)))
    assert (det.figure_confidence(renders) >= MIN_FIGURE_CONFIDENCE).all()
    assert (det.figure_confidence(empty) < MIN_FIGURE_CONFIDENCE).all()
