"""The training scripts run two steps on a tiny fake data set, checkpoint, resume, and save a loadable pipeline."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.pipeline import PosePipeline
from models.pose import Pose
from training import train_ae, train_ldm
from training.data import condition_maps, list_items, read_pose

N = 6


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A synth-layout folder of 32 px coloured squares with random keypoints."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for d in ("images", "keypoints"):
        (root / d).mkdir()
    for i in range(N):
        arr = np.full((32, 32, 3), rng.integers(0, 255, 3), np.uint8)
        arr[8:24, 10:22] = rng.integers(0, 255, 3)
        Image.fromarray(arr).save(root / "images" / f"{i:06d}.png")
        kp = np.concatenate([rng.uniform(4, 28, (17, 2)), np.full((17, 1), 2.0)], axis=1)
        (root / "keypoints" / f"{i:06d}.json").write_text(
            json.dumps({"width": 32, "height": 32, "keypoints": kp.flatten().tolist()})
        )
    return root


def test_items_and_condition_maps(data):
    stems = list_items(data)
    assert len(stems) == N
    kp = read_pose(data, stems[0]).keypoints
    assert condition_maps(kp[None], 32, flip=True).shape == condition_maps(kp[None], 32).shape
    assert condition_maps(kp[None], 32).shape[-2:] == (32, 32)


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="this CPU's oneDNN has no bf16 kernels")
def test_bf16_on_a_cpu_runs_the_unet_in_bf16(data, tmp_path, monkeypatch):
    """`--mixed-precision bf16` on a CPU with bf16 kernels: accelerate's autocast runs the UNet in bf16, the loss
    stays finite and the saved weights stay fp32."""
    from accelerate.state import AcceleratorState

    from models.unet import PoseUNet

    ae = train_ae.main(["--data", str(data), "--out", str(tmp_path / "ae"), "--preset", "tiny"]) / "autoencoder"
    AcceleratorState._reset_state(True)  # accelerate keeps one state a process, fp32 since the first trainer
    seen: list[torch.dtype] = []
    forward = PoseUNet.forward

    def spy(self, noisy_latent, *args, **kwargs):
        out = forward(self, noisy_latent, *args, **kwargs)
        seen.append(out.dtype)
        return out

    monkeypatch.setattr(PoseUNet, "forward", spy)
    out = tmp_path / "ldm"
    final = train_ldm.main(["--data", str(data), "--ae", str(ae.parent), "--out", str(out), "--preset", "tiny",
                            "--mixed-precision", "bf16"])  # fmt: skip
    assert "mixed precision bf16" in (out / "log.txt").read_text()
    assert torch.bfloat16 in seen
    losses = json.loads((final / "training_info.json").read_text())["final_losses"]
    assert all(np.isfinite(v) for v in losses.values())
    assert PoseUNet.from_pretrained(final / "unet").dtype == torch.float32
    AcceleratorState._reset_state(True)


def test_train_ae_then_ldm_then_pipeline(data, tmp_path):
    ae_out, ldm_out = tmp_path / "ae", tmp_path / "ldm"
    final = train_ae.main(["--data", str(data), "--out", str(ae_out), "--preset", "tiny"])
    info = json.loads((final / "training_info.json").read_text())
    assert info["steps"] == 2 and (final / "autoencoder" / "diffusion_pytorch_model.safetensors").exists()
    assert (ae_out / "checkpoints" / "step_0000002" / "step.json").exists()
    assert list((ae_out / "samples").glob("*.png"))
    # resume continues from step 2
    train_ae.main(["--data", str(data), "--out", str(ae_out), "--preset", "tiny", "--steps", "3", "--resume"])
    assert json.loads((final / "training_info.json").read_text())["steps"] == 3
    assert "resumed from" in (ae_out / "log.txt").read_text()

    ldm_args = ["--data", str(data), "--ae", str(ae_out / "final"), "--out", str(ldm_out), "--preset", "tiny",
                "--flip", "true"]  # fmt: skip
    final = train_ldm.main(ldm_args)
    info = json.loads((final / "training_info.json").read_text())
    assert info["steps"] == 2 and {"mu_std", "sigma_mean"} <= set(info["style_posterior"]) | {"mu_std"}
    for sub in ("autoencoder", "unet", "style_encoder", "scheduler"):
        assert (final / sub).is_dir()
    assert (ldm_out / "cache" / "latents.npy").exists()
    train_ldm.main([*ldm_args, "--steps", "3", "--resume"])
    log = (ldm_out / "log.txt").read_text()
    assert "latents from cache" in log and "resumed from" in log
    assert json.loads((final / "training_info.json").read_text())["steps"] == 3

    pipe = PosePipeline.from_pretrained(final, device="cpu")
    kp = np.concatenate([np.random.default_rng(1).uniform(0.2, 0.8, (17, 2)), np.ones((17, 1))], axis=1)
    images, _ = pipe(Pose(kp.astype(np.float32), 64, 64), seed=0, steps=2)
    assert images[0].size == (32, 32)


def test_compile_hands_the_loss_to_torch_compile(data, tmp_path, monkeypatch):
    """`--compile true` hands the loss module to torch.compile (here a spy: inductor takes minutes on a CPU)."""
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda module: compiled.append(type(module).__name__) or module)
    ae = train_ae.main(["--data", str(data), "--out", str(tmp_path / "ae"), "--preset", "tiny"])
    final = train_ldm.main(["--data", str(data), "--ae", str(ae), "--out", str(tmp_path / "ldm"), "--preset", "tiny",
                            "--compile", "true"])  # fmt: skip
    assert compiled == ["LDMLoss"] and (final / "unet").is_dir()


def test_decoder_only_fine_tune_keeps_the_latent_space_and_ldm_init_starts_fresh(data, tmp_path):
    first = train_ae.main(["--data", str(data), "--out", str(tmp_path / "ae"), "--preset", "tiny"])
    tuned = train_ae.main(["--data", str(data), "--out", str(tmp_path / "ae2"), "--preset", "tiny",
                           "--init", str(first), "--train-encoder", "false", "--steps", "2"])  # fmt: skip
    from models.autoencoder import load_autoencoder

    a = load_autoencoder(first / "autoencoder")
    b = load_autoencoder(tuned / "autoencoder")
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa if k.startswith(("encoder.", "quant_conv.")))
    assert any(not torch.equal(sa[k], sb[k]) for k in sa if k.startswith("decoder."))
    assert a.config.scaling_factor == b.config.scaling_factor and a.config.shift_factor == b.config.shift_factor

    args = ["--data", str(data), "--ae", str(first), "--preset", "tiny"]
    ldm = train_ldm.main([*args, "--out", str(tmp_path / "ldm")])
    again = train_ldm.main([*args, "--out", str(tmp_path / "ldm2"), "--init", str(tmp_path / "ldm" / "checkpoints" /
                            "step_0000002"), "--style-lr-mult", "10", "--style-kl-ramp", "100"])  # fmt: skip
    log = (tmp_path / "ldm2" / "log.txt").read_text()
    assert "initialised from" in log and json.loads((again / "training_info.json").read_text())["steps"] == 2
    assert (
        "active=" in log
        and len(json.loads((again / "training_info.json").read_text())["style_posterior"]["kl_per_dim"]) > 0
    )
    assert ldm != again
    # a warm start on the zero-terminal-SNR schedule: saved with the pipeline, read by every sampler
    with pytest.raises(SystemExit, match="min-snr-gamma 0"):
        train_ldm.main([*args, "--out", str(tmp_path / "bad"), "--zero-snr", "true"])
    zero = train_ldm.main([*args, "--out", str(tmp_path / "zero"), "--init", str(ldm), "--zero-snr", "true",
                           "--min-snr-gamma", "0"])  # fmt: skip
    # a low-noise expert (eDiff-I): trained on t in [0, 300) only, and says so in its config
    with pytest.raises(SystemExit, match="LO,HI"):
        train_ldm.main([*args, "--out", str(tmp_path / "bad_t"), "--timesteps", "300,300"])
    expert = train_ldm.main([*args, "--out", str(tmp_path / "expert"), "--init", str(ldm), "--timesteps", "0,300",
                             "--style-lr-mult", "0"])  # fmt: skip
    assert PosePipeline.from_pretrained(expert, device="cpu").unet.config.timesteps == [0, 300]
    assert PosePipeline.from_pretrained(ldm, device="cpu").unet.config.timesteps is None
    pipe = PosePipeline.from_pretrained(zero, device="cpu")
    assert pipe.scheduler.config.rescale_betas_zero_snr and float(pipe.scheduler.alphas_cumprod[-1]) < 1e-6
    kp = np.concatenate([np.random.default_rng(1).uniform(0.2, 0.8, (17, 2)), np.ones((17, 1))], axis=1)
    for sampler in ("ddim", "dpmpp_2m", "euler_a"):
        images, _ = pipe(Pose(kp.astype(np.float32), 64, 64), seed=0, steps=3, sampler=sampler)
        assert np.isfinite(np.asarray(images[0], dtype=np.float32)).all() and np.asarray(images[0]).std() > 0


def test_ordered_kl_weights_ramp_geometrically():
    from diffusers import DDPMScheduler

    from models.unet import PoseUNet, StyleEncoder
    from training.presets import LDM_PRESETS

    unet = PoseUNet(sample_size=8, latent_channels=4, cond_channels=33, hint_widths=(), hint_channels=8,
                    style_dim=5, block_out_channels=(8, 16), attention_head_dim=8, norm_num_groups=8)  # fmt: skip
    cfg = dataclasses.replace(LDM_PRESETS["tiny"], style_kl_weight=1e-3, style_kl_ramp=100.0)
    w = train_ldm.LDMLoss(unet, StyleEncoder(style_dim=5), DDPMScheduler(), cfg).kl_weights
    assert torch.allclose(w, torch.tensor([1e-3, 1e-3 * 10**0.5, 1e-2, 1e-2 * 10**0.5, 1e-1]))
    mu, logvar = torch.zeros(3, 5), torch.zeros(3, 5)
    mu[:, 0] = 1.0
    assert torch.allclose(StyleEncoder.kl_per_dim(mu, logvar), torch.tensor([0.5, 0, 0, 0, 0]))


def test_guided_style_axes_train_and_record_their_layout(data, tmp_path):
    import shutil

    from models.attributes import ATTRIBUTES

    root = tmp_path / "data"
    shutil.copytree(data, root)
    (root / "attributes").mkdir()
    rng = np.random.default_rng(0)
    for i in range(N):
        record = {name: str(rng.choice(classes)) for name, classes in ATTRIBUTES.items()}
        record["outfit_colors"] = [record.pop("outfit_color"), record.pop("outfit_color2")]
        (root / "attributes" / f"{i:06d}.json").write_text(json.dumps(record))
    ae = train_ae.main(["--data", str(root), "--out", str(tmp_path / "ae"), "--preset", "tiny"])
    args = ["--data", str(root), "--ae", str(ae), "--preset", "tiny", "--affine-reg-weight", "1"]
    train_ldm.main([*args, "--out", str(tmp_path / "loss"), "--style-guide", "loss", "--style-guide-weight", "0.1"])
    log = (tmp_path / "loss" / "log.txt").read_text()
    assert "style guide: axes" in log and "guide=" in log and "guide_acc=" in log and "affine=" in log
    final = train_ldm.main([*args, "--out", str(tmp_path / "labels"), "--style-guide", "labels"])
    log = (tmp_path / "labels" / "log.txt").read_text()
    assert "style guide: axes" in log and "guide=" not in log  # the axes come from the labels: no loss to log
    # with a weight, the guide trains the encoder's mean alone, so a look read off a picture names the classes
    train_ldm.main([*args, "--out", str(tmp_path / "reader"), "--style-guide", "labels", "--style-guide-weight", "0.1"])
    assert "guide_acc=" in (tmp_path / "reader" / "log.txt").read_text()
    layout = json.loads((final / "training_info.json").read_text())["style_guide"]
    assert len(layout["names"]) == 8 == len(layout["centres"])  # the tiny preset's style_dim
    assert layout["names"][:2] == ["background_color", "hair_color"]
    assert all(len(c) == len(ATTRIBUTES[n]) for n, c in zip(layout["names"], layout["centres"], strict=True))
    # The other axes from the prior, as the sampler draws them: no axis is read off the image, so no KL.
    from training.train_mean_latent import pipeline_free_style

    prior = train_ldm.main(
        [*args, "--out", str(tmp_path / "prior"), "--style-guide", "labels", "--free-style", "prior"]
    )
    assert pipeline_free_style(prior) == "prior" and pipeline_free_style(final) == "posterior"
    assert "kl=0.0000" in (tmp_path / "prior" / "log.txt").read_text()


def test_pairs_share_noise_step_and_style_but_for_the_swapped_axis(monkeypatch):
    from diffusers import DDPMScheduler

    from models.attributes import ATTRIBUTES
    from models.unet import PoseUNet, StyleEncoder
    from training.presets import LDM_PRESETS
    from training.style_guide import GUIDE_ORDER, make_layout

    names = GUIDE_ORDER[:4]
    labels = np.array([[0, 1, 2, 0], [0, 1, 3, 0], [1, 0, 0, 1], [2, 0, 0, 1]])  # pair 0: axis 2; pair 1: axis 0
    layout = make_layout(labels, ATTRIBUTES, names, 6)
    unet = PoseUNet(sample_size=8, latent_channels=4, cond_channels=33, hint_widths=(), hint_channels=8,
                    style_dim=6, block_out_channels=(8, 16), attention_head_dim=8, norm_num_groups=8)  # fmt: skip
    seen = {}

    def record(z_t, t, cond, s):
        seen.update(z_t=z_t, t=t, s=s)
        return z_t * 0.5

    monkeypatch.setattr(unet, "forward", record)
    loss = train_ldm.LDMLoss(
        unet,
        StyleEncoder(style_dim=6, widths=(8, 8)),
        DDPMScheduler(prediction_type="v_prediction"),
        dataclasses.replace(LDM_PRESETS["tiny"], style_guide="labels", free_style="prior", pair_weight=1.0),
        layout,
    )
    z0 = torch.randn(4, 4, 8, 8)
    z0[1] = z0[0]  # pair 0: the same latent, so only the swapped axis tells them apart
    total, parts = loss(z0, torch.zeros(4, 3, 32, 32), torch.zeros(4, 33, 32, 32), torch.ones(4, dtype=torch.bool),
                        torch.from_numpy(labels))  # fmt: skip
    t, s, z_t = seen["t"], seen["s"], seen["z_t"]
    assert t[0] == t[1] and t[2] == t[3] and torch.equal(z_t[0], z_t[1])  # one step and one noise per pair
    same = (s[0] == s[1]).tolist()
    assert same == [True, True, False, True, True, True]  # one s but for the swapped axis
    assert (s[2] == s[3]).tolist() == [False, True, True, True, True, True]
    assert parts["pair"] >= 0 and "pair" in parts and float(total) > 0


def test_pair_training_keeps_the_init_bins_and_logs_the_pair_loss(data, tmp_path):
    from training.synth import write_dataset

    root = tmp_path / "pairs"
    write_dataset(root, 8, seed=3, size=32, workers=1, pairs=True)
    ae = train_ae.main(["--data", str(root), "--out", str(tmp_path / "ae"), "--preset", "tiny"])
    args = [
        "--data",
        str(root),
        "--ae",
        str(ae),
        "--preset",
        "tiny",
        "--style-guide",
        "labels",
        "--free-style",
        "prior",
    ]
    first = train_ldm.main([*args, "--out", str(tmp_path / "a")])
    info = json.loads((first / "training_info.json").read_text())
    info["style_guide"]["centres"][0] = [
        c + 0.01 for c in info["style_guide"]["centres"][0]
    ]  # bins of another data set
    (first / "training_info.json").write_text(json.dumps(info))
    final = train_ldm.main([*args, "--out", str(tmp_path / "b"), "--pair-weight", "1", "--init", str(first)])
    log = (tmp_path / "b" / "log.txt").read_text()
    assert "pairs: 4 pairs" in log and "pair=" in log and "style guide: the bins of" in log
    kept = json.loads((final / "training_info.json").read_text())["style_guide"]["centres"][0]
    assert kept == info["style_guide"]["centres"][0]
    with pytest.raises(SystemExit, match="not a pair"):  # a folder of single images
        train_ldm.main([*args, "--out", str(tmp_path / "c"), "--pair-weight", "1", "--data", str(data)])


@pytest.mark.parametrize("size", [32, 128, 256])
def test_torch_condition_maps_are_the_reference_maps(size):
    """The batched maps the trainers draw equal `models.condition.condition_map` of each pose (mirrored where asked),
    hidden points and limbs included."""
    from models.condition import condition_map
    from models.pose import Pose, mirror
    from training.data import condition_maps_torch

    rng = np.random.default_rng(size)
    kp = np.concatenate([rng.uniform(-0.1, 1.1, (6, 17, 2)), np.ones((6, 17, 1))], axis=2).astype(np.float32)
    kp[rng.random((6, 17)) < 0.2, 2] = 0.0  # some points not visible
    flip = np.array([False, True, False, True, True, False])
    got = condition_maps_torch(torch.from_numpy(kp), size, torch.from_numpy(flip)).numpy()
    poses = [Pose(k, size, size) for k in kp]
    want = np.stack([condition_map(mirror(p) if f else p, size, size) for p, f in zip(poses, flip)])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_a_fresh_run_keeps_its_checkpoints_beside_an_earlier_runs(tmp_path):
    """Checkpoints go by when they were written: a run started afresh in a folder with an earlier run's higher steps
    keeps its own newest two and resumes from its own latest."""
    import os

    from training.runs import checkpoints_by_age

    for age, step in ((300, 4500), (200, 4687), (100, 500), (0, 1000)):
        folder = tmp_path / "checkpoints" / f"step_{step:07d}"
        folder.mkdir(parents=True)
        (folder / "step.json").write_text("{}")
        os.utime(folder, (1e9 - age, 1e9 - age))
    assert [f.name for f in checkpoints_by_age(tmp_path)][-2:] == ["step_0000500", "step_0001000"]
