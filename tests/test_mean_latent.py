"""The sampler's start E[z_0 | s, pose]: the network, the start's arithmetic, the pipeline's use of it, training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models.backend import SAMPLER_NAMES
from models.errors import InputError
from models.pipeline import PosePipeline
from models.pose import Pose
from models.samplers import make_scheduler, sample_loop, start_sample
from models.unet import MeanLatent
from tests.test_pipeline import SIZE, STANDING, tiny_pipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def tiny_mean(seed: int = 0, scale: float = 0.0) -> MeanLatent:
    """A mean latent for `tiny_pipeline` (f2, s of 8); `scale` > 0 makes its output depend strongly on s."""
    from models.condition import CONDITION_CHANNELS

    torch.manual_seed(seed)
    model = MeanLatent(
        CONDITION_CHANNELS, 4, 8, latent_factor=2, cell=4, channels=8, dilations=(1, 2), norm_num_groups=4
    )
    if scale:
        with torch.no_grad():
            model.style_bias.weight.normal_(0, scale)
    return model.eval()


def with_mean(mean: MeanLatent | None) -> PosePipeline:
    """`tiny_pipeline()` with a mean latent."""
    pipe = tiny_pipeline()
    return PosePipeline(pipe.vae, pipe.unet, pipe.scheduler, device="cpu", mean_latent=mean)


def test_network_shapes_and_checks():
    model = tiny_mean()
    out = model(torch.zeros(3, 33, SIZE, SIZE), torch.randn(1, 8))  # one s broadcast over the batch
    assert out.shape == (3, 4, SIZE // 2, SIZE // 2)
    assert MeanLatent().to(torch.float32)(torch.zeros(1, 33, 128, 128), torch.zeros(1, 64)).shape == (1, 4, 32, 32)
    cond, s = torch.rand(2, 33, SIZE, SIZE), torch.randn(2, 8)
    assert torch.allclose(model.from_pooled(model.pool(cond), s), model(cond, s))  # training feeds pooled maps
    with pytest.raises(InputError):
        model(torch.zeros(1, 5, SIZE, SIZE), torch.zeros(1, 8))
    with pytest.raises(InputError):
        model(torch.zeros(1, 33, SIZE, SIZE), torch.zeros(1, 3))
    with pytest.raises(InputError):
        MeanLatent(latent_factor=4, cell=6)


def test_start_is_the_noise_moved_by_sqrt_alpha_bar_of_the_mean():
    z, mu = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    assert start_sample(z, 0.25, None) is z
    assert torch.allclose(start_sample(z, 0.25, mu), z + 0.5 * mu)
    assert torch.equal(start_sample(z, 0.0, mu), z)  # zero terminal SNR: nothing of z_0 survives at T

    seen = []

    def model_fn(x, t):
        seen.append(x.clone())
        return torch.zeros_like(x)

    cfg = tiny_pipeline().scheduler_config
    for name in SAMPLER_NAMES:
        seen.clear()
        sched = make_scheduler(name, cfg)
        sample_loop(model_fn, sched, z, 2, generator=torch.Generator().manual_seed(0), z_mean=mu)
        fresh = make_scheduler(name, cfg)  # scale_model_input reads the step index the loop moved on
        fresh.set_timesteps(2)
        a = fresh.alphas_cumprod[int(fresh.timesteps[0])]
        expected = fresh.scale_model_input((z + a.sqrt() * mu) * fresh.init_noise_sigma, fresh.timesteps[0])
        assert torch.allclose(seen[0], expected, atol=1e-5), name


def test_pipeline_starts_from_the_mean_and_the_look_follows_s():
    pose = Pose(STANDING, 512, 512)
    plain = tiny_pipeline()
    zero = tiny_mean()
    with torch.no_grad():
        for p in zero.out[-1].parameters():
            p.zero_()
    # a mean of zero is the old start: the same pixels
    a, _ = plain(pose, seed=2, steps=3)
    b, _ = with_mean(zero)(pose, seed=2, steps=3)
    assert np.array_equal(np.asarray(a[0]), np.asarray(b[0]))
    # a mean that reads s: two style codes from the same noise differ by more than without it
    pipe = with_mean(tiny_mean(scale=3.0))
    state = pipe.prepare(pose, 5, steps=3)
    s2 = state.style + 2.0
    gap = lambda p: np.abs(
        np.asarray(p.render(state)[0][0], float) - np.asarray(p.render(state.with_style(s2))[0][0], float)
    ).mean()
    assert gap(pipe) > gap(plain)
    # deterministic, and a style edit over later steps only leaves the start as it was
    assert np.array_equal(np.asarray(pipe.render(state)[0][0]), np.asarray(pipe.render(state)[0][0]))
    late, _ = pipe.render(state, style_at=lambda step: state.style if step == 0 else s2)
    assert not np.array_equal(np.asarray(late[0]), np.asarray(pipe.render(state.with_style(s2))[0][0]))


def test_mean_latent_travels_with_the_pipeline_folder(tmp_path):
    pipe = with_mean(tiny_mean(scale=1.0))
    pipe.save_pretrained(tmp_path / "pipe")
    assert (tmp_path / "pipe" / "mean_latent" / "config.json").is_file()
    loaded = PosePipeline.from_pretrained(tmp_path / "pipe", device="cpu")
    assert loaded.mean_latent is not None
    cond, s = torch.rand(1, 33, SIZE, SIZE), torch.randn(1, 8)
    assert torch.allclose(loaded.start_mean(cond, s), pipe.start_mean(cond, s), atol=1e-6)
    assert tiny_pipeline().start_mean(cond, s) is None


def test_style_refinement_gradient_reaches_s_through_the_start():
    pipe = with_mean(tiny_mean(scale=1.0))
    cond = pipe.condition(Pose(STANDING, 512, 512), SIZE)
    s = torch.zeros(1, 8, requires_grad=True)
    z = start_sample(torch.zeros(1, 4, SIZE // 2, SIZE // 2), 0.5, pipe.start_mean(cond, s))
    z.sum().backward()
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_pooled_maps_are_the_training_condition_maps_pooled():
    from training.data import condition_maps_torch
    from training.train_mean_latent import pooled_maps

    kp = np.stack([STANDING, STANDING[::-1].copy()])
    pooled = pooled_maps(kp, SIZE, 4)
    assert pooled.shape == (2, 2, 33, SIZE // 4, SIZE // 4) and pooled.dtype == np.float16
    mirrored = condition_maps_torch(torch.from_numpy(kp), SIZE, torch.ones(2, dtype=torch.bool))
    np.testing.assert_allclose(pooled[:, 1], torch.nn.functional.avg_pool2d(mirrored, 4).numpy(), atol=2e-3)
    assert not np.allclose(pooled[:, 0], pooled[:, 1], atol=1e-2)


def test_training_command_fits_and_publishes(tmp_path):
    from training.train_mean_latent import main

    folder = tmp_path / "pipe"
    pipe = tiny_pipeline()
    from models.unet import StyleEncoder

    torch.manual_seed(0)
    pipe.style_encoder = StyleEncoder(widths=(4, 8), style_dim=8, norm_num_groups=4)
    pipe.save_pretrained(folder)
    out = tmp_path / "run"
    args = ["--synth", "0:12", "--val", "4", "--model", str(folder), "--out", str(out), "--steps", "4",
            "--batch-size", "4", "--channels", "8", "--checkpoint-every", "2", "--workers", "1", "--publish",
            str(folder)]  # fmt: skip
    assert main(args) == 0
    info = json.loads((out / "training_info.json").read_text())
    assert info["steps"] == 4 and {"model", "zero", "data_mean", "model_low"} <= set(info["val"]["mse"])
    loaded = PosePipeline.from_pretrained(folder, device="cpu")
    assert loaded.mean_latent is not None and loaded.mean_latent.config.channels == 8
    assert main(args[:-2] + ["--resume", "--steps", "6"]) == 0  # from the checkpoint and the cached pairs
    assert json.loads((out / "training_info.json").read_text())["steps"] == 6
    with pytest.raises(SystemExit):
        main(["--synth", "5:2", "--out", str(tmp_path / "bad")])
    with pytest.raises(SystemExit, match="no style-guide layout"):  # the tiny pipeline was trained without a guide
        main([*args[:7], str(tmp_path / "labels"), "--style-source", "labels"])


def test_labels_set_the_guided_axes_and_the_posterior_the_rest():
    from training.style_guide import classes_of, make_layout
    from training.train_mean_latent import draw_style

    classes = {"a": ("x", "y", "z"), "b": ("p", "q")}
    layout = make_layout(np.array([[0, 0], [1, 1], [2, 1], [2, 0]]), classes, ("a", "b"), style_dim=4)
    posterior = np.zeros((6, 2, 4), np.float32)
    posterior[:, 0] = 0.7  # the posterior mean, with (nearly) no spread
    posterior[:, 1] = -20.0
    labels = np.array([[0, 1], [1, 0], [2, 1], [0, 0], [1, 1], [2, 0]])
    s = draw_style(posterior, labels, layout, torch.Generator().manual_seed(0))
    assert torch.equal(classes_of(s, layout), torch.from_numpy(labels))  # each guided axis in its label's bin
    np.testing.assert_allclose(s[:, 2:].numpy(), 0.7, atol=1e-3)
    np.testing.assert_allclose(draw_style(posterior, labels, None, torch.Generator()).numpy(), 0.7, atol=1e-3)
    # With `free_prior` (a UNet trained with free_style "prior") the other axes ignore the posterior: N(0, I).
    many = np.repeat(posterior, 500, axis=0)
    s = draw_style(many, np.tile(labels, (500, 1)), layout, torch.Generator().manual_seed(0), free_prior=True)
    assert torch.equal(classes_of(s, layout), torch.from_numpy(np.tile(labels, (500, 1))))
    assert abs(float(s[:, 2:].mean())) < 0.05 and abs(float(s[:, 2:].std()) - 1.0) < 0.05


def test_start_style_moves_the_start_alone():
    """`start_style` is the s the start reads: the state's own s repeats the plain render, another one changes it,
    and without a mean latent it changes nothing."""
    pipe = with_mean(tiny_mean(scale=1.0))
    state = pipe.prepare(Pose(STANDING, 512, 512), seed=5, steps=3)
    plain = np.asarray(pipe.render(state)[0][0])
    other = np.random.default_rng(0).standard_normal(8).astype(np.float32)
    assert np.array_equal(np.asarray(pipe.render(state, start_style=state.style)[0][0]), plain)
    assert not np.array_equal(np.asarray(pipe.render(state, start_style=other)[0][0]), plain)
    bare = with_mean(None)
    assert np.array_equal(np.asarray(bare.render(state, start_style=other)[0][0]), np.asarray(bare.render(state)[0][0]))
