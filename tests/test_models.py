"""The model parts: autoencoder helpers, PoseUNet, StyleEncoder, samplers, presets."""

from __future__ import annotations

import argparse

import pytest
import torch

from models.autoencoder import build_autoencoder, decode, encode, measure_latent_stats, psnr, reconstruction_loss
from models.backend import SAMPLER_NAMES
from models.errors import InputError
from models.samplers import SAMPLERS, make_scheduler, sample_loop, training_scheduler
from models.unet import HintEncoder, PoseUNet, StyleEncoder
from training.presets import LDM_PRESETS, lr_factor, parse_with_preset, run_progress

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def tiny_unet() -> PoseUNet:
    torch.manual_seed(0)
    return PoseUNet(
        sample_size=8,
        latent_channels=4,
        cond_channels=33,
        hint_widths=(4,),
        hint_channels=4,
        style_dim=8,
        block_out_channels=(8, 16),
        attention_head_dim=4,
        norm_num_groups=4,
    )


def test_autoencoder_f8_shapes_and_scaling():
    vae = build_autoencoder((8, 8, 8, 8), 1, 8, 4).eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        mean, std = measure_latent_stats(vae, [x])
        vae.register_to_config(scaling_factor=1 / std, shift_factor=mean)
        z = encode(vae, x)
        assert z.shape == (2, 8, 8, 8)
        assert abs(z.std().item() - 1) < 0.05 and abs(z.mean().item()) < 0.05
        assert decode(vae, z).shape == x.shape
    loss, parts = reconstruction_loss(vae, x)
    loss.backward()
    assert set(parts) == {"loss", "l1", "ms", "grad", "kl"}
    assert psnr(x, x) > 100


def test_hint_encoder_downsamples():
    h = HintEncoder(33, (32, 64), 32)
    assert h(torch.zeros(1, 33, 128, 128)).shape == (1, 32, 16, 16)


def test_unet_forward_uses_style_through_affine(tmp_path):
    unet = tiny_unet().eval()
    z, cond, s = torch.randn(2, 4, 8, 8), torch.rand(2, 33, 32, 32), torch.randn(2, 8)
    with torch.no_grad():
        out = unet(z, torch.tensor([10, 900]), cond, s)
        assert out.shape == z.shape
        assert not torch.allclose(out, unet(z, torch.tensor([10, 900]), cond, s + 1))
        assert not torch.allclose(out, unet(z, torch.tensor([10, 900]), torch.zeros_like(cond), s))
    assert unet.style_affine.weight.shape == (32, 8)  # time_embed_dim x style_dim: what SeFa reads
    unet.save_pretrained(tmp_path)
    loaded = PoseUNet.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(out, loaded(z, torch.tensor([10, 900]), cond, s))


def test_unet_rejects_wrong_condition_size():
    with pytest.raises(InputError):
        tiny_unet()(torch.randn(1, 4, 8, 8), 5, torch.rand(1, 33, 16, 16), torch.randn(1, 8))


def test_style_encoder_kl_and_sample():
    enc = StyleEncoder(widths=(8, 8), style_dim=8)
    mu, logvar = enc(torch.rand(3, 3, 32, 32))
    assert mu.shape == logvar.shape == (3, 8)
    assert StyleEncoder.kl(torch.zeros(2, 8), torch.zeros(2, 8)).item() == 0
    g = torch.Generator().manual_seed(0)
    assert StyleEncoder.sample(mu, logvar, g).shape == (3, 8)


def test_style_encoder_reads_large_images_at_its_input_size(tmp_path):
    enc = StyleEncoder(widths=(8, 8), style_dim=8, norm_num_groups=4, input_size=32).eval()
    big = torch.rand(2, 3, 64, 64)
    small = torch.nn.functional.interpolate(big, size=(32, 32), mode="area")
    with torch.no_grad():
        assert torch.allclose(enc(big)[0], enc(small)[0], atol=1e-6)
        assert not torch.allclose(enc(big)[0], enc(torch.rand(2, 3, 64, 64))[0])
    enc.save_pretrained(tmp_path)  # the size is part of the saved config
    assert StyleEncoder.from_pretrained(tmp_path).config.input_size == 32


def test_every_sampler_the_contract_names_is_built():
    assert set(SAMPLERS) == set(SAMPLER_NAMES)


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_sample_loop_is_seeded(name):
    unet = tiny_unet().eval()
    cfg = training_scheduler().config
    cond, s = torch.rand(1, 33, 32, 32), torch.randn(1, 8)

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            return sample_loop(
                lambda x, t: unet(x, t, cond, s), make_scheduler(name, cfg), torch.randn(1, 4, 8, 8, generator=g), 3, g
            )

    assert torch.equal(run(0), run(0))


@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_ancestral_sampling_on_a_zero_snr_schedule_stays_finite(name):
    cfg = training_scheduler(zero_snr=True).config  # alpha_bar_T = 0: DDIM with eta > 0 gave NaN (black images)
    g = torch.Generator().manual_seed(0)
    z = sample_loop(
        lambda x, t: torch.randn(x.shape, generator=g),
        make_scheduler(name, cfg),
        torch.randn(1, 4, 8, 8),
        25,
        g,
        eta=1.0,
    )
    assert torch.isfinite(z).all()


def test_presets_overrides_and_schedule():
    args, cfg = parse_with_preset(
        argparse.ArgumentParser(),
        LDM_PRESETS,
        ["--preset", "tiny", "--steps", "7", "--block-out-channels", "8,8", "--flip", "no"],
    )
    assert (cfg.steps, cfg.block_out_channels, cfg.flip, args.preset) == (7, (8, 8), False, "tiny")
    assert run_progress(5, 10, 0, 0) == 0.5 and run_progress(1, 10, 60, 2) == 0.5
    assert lr_factor(0, 10, 0.0) == 0.1 and lr_factor(50, 10, 1.0) == pytest.approx(0.1)
