"""The 256-px autoencoder: its shapes, its save/load round trip, the trainer on streamed renders, and the UNet's
transplant onto a new latent."""

from __future__ import annotations

import json

import pytest
import torch

from models.autoencoder import (
    ShuffleAutoencoder,
    autoencoder_index_entry,
    decode,
    downsample_factor,
    encode,
    load_autoencoder,
    measure_latent_stats,
)
from models.errors import InputError
from models.unet import PoseUNet
from training import train_ae
from training.train_ldm import transplant


def tiny_ae() -> ShuffleAutoencoder:
    torch.manual_seed(0)
    return ShuffleAutoencoder(latent_channels=4, widths=(8, 16), blocks=(1, 1), head_width=8)


def test_shuffle_autoencoder_is_f8_and_speaks_the_autoencoder_interface():
    vae = tiny_ae()
    x = torch.rand(2, 3, 64, 48) * 2 - 1
    z = encode(vae, x)
    assert z.shape == (2, 4, 8, 6) and downsample_factor(vae) == 8
    assert decode(vae, z).shape == x.shape
    assert autoencoder_index_entry(vae) == ["models.autoencoder", "ShuffleAutoencoder"]


def test_load_autoencoder_picks_the_saved_class_and_refuses_others(tmp_path):
    vae = tiny_ae()
    vae.register_to_config(scaling_factor=0.5, shift_factor=0.1)
    vae.save_pretrained(tmp_path / "ae")
    again = load_autoencoder(tmp_path / "ae")
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert isinstance(again, ShuffleAutoencoder) and again.config.scaling_factor == 0.5
    with torch.no_grad():
        assert torch.allclose(decode(again, encode(again, x)), decode(vae, encode(vae, x)))
    config = json.loads((tmp_path / "ae" / "config.json").read_text())
    (tmp_path / "ae" / "config.json").write_text(json.dumps({**config, "_class_name": "Pickle"}))
    with pytest.raises(ValueError, match="not an autoencoder this project reads"):
        load_autoencoder(tmp_path / "ae")


def test_train_ae_streams_renders_resumes_and_reports_the_figure_psnr(tmp_path):
    out = tmp_path / "ae"
    final = train_ae.main(["--out", str(out), "--preset", "tiny", "--gan-weight", "0.1"])
    info = json.loads((final / "training_info.json").read_text())
    assert info["steps"] == 2 and info["data"].startswith("fresh renders")
    assert {"val_psnr_db", "val_psnr_figure_db"} <= set(info) and len(info["curve"]["rows"]) == 2
    assert isinstance(load_autoencoder(final / "autoencoder"), ShuffleAutoencoder)
    train_ae.main(["--out", str(out), "--preset", "tiny", "--gan-weight", "0.1", "--steps", "3", "--resume"])
    log = (out / "log.txt").read_text()
    assert "resumed from" in log and " d=" in log  # the discriminator trains, and resumes
    assert json.loads((final / "training_info.json").read_text())["steps"] == 3


def test_transplant_keeps_the_unet_body_and_starts_its_ends_afresh():
    torch.manual_seed(0)
    src = PoseUNet(sample_size=8, latent_channels=4, hint_widths=(4,), hint_channels=4, style_dim=5,
                   block_out_channels=(8, 16), attention_head_dim=8, norm_num_groups=8)  # fmt: skip
    unet, fresh = transplant(src, latent_channels=16, hint_widths=(4, 8))
    assert unet.config.latent_channels == 16 and unet.downsample_factor == 8
    assert any(k.startswith("unet.conv_in") for k in fresh) and any(k.startswith("unet.conv_out") for k in fresh)
    theirs = src.state_dict()
    kept = [k for k in unet.state_dict() if k not in fresh]
    assert kept and all(torch.equal(unet.state_dict()[k], theirs[k]) for k in kept)
    assert "style_affine.weight" in kept


def test_transplant_adds_attention_that_starts_as_the_identity():
    torch.manual_seed(0)
    src = PoseUNet(sample_size=8, latent_channels=4, hint_widths=(4,), hint_channels=4, style_dim=5,
                   block_out_channels=(8, 16, 16), attention_head_dim=4, norm_num_groups=8)  # fmt: skip
    unet, fresh = transplant(src, attention_levels=2)
    assert unet.config.attention_levels == 2 and fresh
    assert all(".attentions." in k for k in fresh)  # nothing of src is lost
    x, cond, s = torch.randn(2, 4, 8, 8), torch.randn(2, 33, 32, 32), torch.randn(2, 5)
    with torch.no_grad():
        assert torch.allclose(unet(x, 500, cond, s), src(x, 500, cond, s), atol=1e-5)  # the new layers add nothing yet
    with pytest.raises(InputError, match="attention_levels"):
        PoseUNet(block_out_channels=(8, 16), norm_num_groups=8, attention_levels=3)


def test_denoising_decoder_learns_from_its_unets_latents_and_keeps_the_encoder(tmp_path):
    from models.condition import CONDITION_CHANNELS
    from models.pipeline import PosePipeline
    from models.samplers import training_scheduler

    vae = tiny_ae()
    vae.register_to_config(scaling_factor=0.5, shift_factor=0.1)
    unet = PoseUNet(sample_size=4, latent_channels=4, cond_channels=CONDITION_CHANNELS, hint_widths=(4, 4),
                    hint_channels=4, style_dim=6, block_out_channels=(8, 16), attention_head_dim=4,
                    norm_num_groups=4)  # fmt: skip
    PosePipeline(vae, unet, training_scheduler(zero_snr=True), device="cpu").save_pretrained(tmp_path / "pipe")
    out = tmp_path / "dd"
    final = train_ae.main(["--out", str(out), "--preset", "tiny", "--init", str(tmp_path / "pipe" / "autoencoder"),
                           "--denoiser", str(tmp_path / "pipe"), "--denoise-clean", "0"])  # fmt: skip
    info = json.loads((final / "training_info.json").read_text())
    assert info["curve"]["columns"][-1] == "denoised_psnr_figure_db" and len(info["curve"]["rows"][-1]) == 6
    assert "from denoised latents" in (out / "log.txt").read_text()
    trained = load_autoencoder(final / "autoencoder")
    assert trained.config.scaling_factor == 0.5 and trained.config.shift_factor == 0.1  # the UNet's latent space
    before, after = vae.state_dict(), trained.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("encoder"))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder"))
    drawn = PosePipeline.from_pretrained(final / "pipeline")  # the denoiser's pipeline with the new decoder
    assert all(torch.equal(drawn.vae.state_dict()[k], after[k]) for k in after)


def test_per_channel_latent_factors_give_every_channel_unit_spread(tmp_path):
    vae = tiny_ae().eval()
    torch.manual_seed(1)
    images = [torch.rand(4, 3, 32, 32) * 2 - 1 for _ in range(3)]
    mean, std = measure_latent_stats(vae, iter(images), per_channel=True)
    assert len(mean) == len(std) == 4
    g_mean, g_std = measure_latent_stats(vae, iter(images))
    assert isinstance(g_mean, float) and min(std) <= g_std <= max(std) * 1.5
    vae.register_to_config(scaling_factor=[1.0 / v for v in std], shift_factor=mean)
    vae.save_pretrained(tmp_path / "ae")
    again = load_autoencoder(tmp_path / "ae")  # the lists survive the config
    with torch.no_grad():
        z = torch.cat([encode(again, x) for x in images])
        assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-4)
        assert torch.allclose(z.std(dim=(0, 2, 3), correction=0), torch.ones(4), atol=1e-3)
        # decode undoes the channel affine: the same image as decoding the raw posterior mean
        raw = again.encode(images[0]).latent_dist.mean
        assert torch.allclose(decode(again, encode(again, images[0])), again.decode(raw).sample, atol=1e-5)


def test_train_ae_measures_per_channel_factors(tmp_path):
    final = train_ae.main(["--out", str(tmp_path / "ae"), "--preset", "tiny"])  # per channel by default
    vae = load_autoencoder(final / "autoencoder")
    assert len(vae.config.scaling_factor) == len(vae.config.shift_factor) == 4
    info = json.loads((final / "training_info.json").read_text())
    assert len(info["latent_std"]) == 4
    again = train_ae.main(["--out", str(tmp_path / "g"), "--preset", "tiny", "--latent-norm", "global"])
    assert isinstance(load_autoencoder(again / "autoencoder").config.scaling_factor, float)
