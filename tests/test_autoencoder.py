"""The 256-px autoencoder: its shapes, its save/load round trip, the trainer on streamed renders, and the UNet's
transplant onto a new latent."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models.autoencoder import (
    PoseDecoder,
    ShuffleAutoencoder,
    autoencoder_index_entry,
    build_autoencoder,
    decode,
    downsample_factor,
    encode,
    enlarged_decode,
    load_autoencoder,
    pose_decode,
)
from models.pipeline import PosePipeline
from models.pose import Pose, mirror
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


def tiny_pose_decoder(latent_channels: int = 4) -> PoseDecoder:
    torch.manual_seed(1)
    decoder = PoseDecoder(latent_channels=latent_channels, widths=(8, 16), blocks=(1, 1), head_width=8, sample_size=64)
    for p in decoder.parameters():  # the residual blocks and the last layer start at zero: move them
        p.data.add_(torch.randn_like(p) * 0.05)
    return decoder


def tiny_source() -> torch.nn.Module:
    torch.manual_seed(2)
    return build_autoencoder((8, 16, 16), 1, 4, 4, sample_size=32)  # f4, as the shipped one


def test_pose_decoder_is_f8_and_draws_what_the_pose_says(tmp_path):
    from tests.test_pipeline import STANDING

    decoder, source = tiny_pose_decoder(), tiny_source()
    z = torch.randn(2, 4, 8, 8)
    pose = Pose(STANDING, 64, 64)
    with torch.no_grad():
        posed, unposed = pose_decode(decoder, source, z, [pose, None])
        moved = pose_decode(decoder, source, z[:1], [mirror(pose)])[0]
        same = pose_decode(decoder, source, z[1:], None)[0]
        fresh = PoseDecoder(widths=(8, 16), blocks=(1, 1), head_width=8, sample_size=64)
        start = pose_decode(fresh, source, z, None)
    assert posed.shape == (3, 64, 64)
    assert torch.allclose(unposed, same, atol=1e-5)  # a missing pose is the all-zero map
    assert not torch.allclose(posed, moved)
    assert torch.allclose(start, enlarged_decode(source, z, 8), atol=1e-5)  # untrained, it is the source's decoding enlarged
    decoder.save_pretrained(tmp_path / "decoder")
    again = PoseDecoder.from_pretrained(tmp_path / "decoder")
    with torch.no_grad():
        assert torch.allclose(pose_decode(again, source, z[:1], [pose])[0], posed, atol=1e-5)


def test_pipeline_with_a_pose_decoder_draws_at_its_scale_with_the_pose(tmp_path):
    from tests.test_pipeline import SIZE, STANDING, tiny_pipeline

    base = tiny_pipeline()  # f2 autoencoder: 32 px from a 16 x 16 latent
    pipe = PosePipeline(base.vae, base.unet, base.scheduler, device="cpu", decoder=tiny_pose_decoder())
    size = (SIZE // 2) * 8
    assert pipe.native_size == size and pipe.output_factor == 8
    pose = Pose(STANDING, 64, 64)
    images, (state,) = pipe(pose, seed=3, steps=2)
    _, (plain_state,) = base(pose, seed=3, steps=2)
    assert images[0].size == (size, size) and state.settings["size"] == size
    assert torch.equal(state.z_0, plain_state.z_0)  # the same UNet on the same latent grid; only the decoding differs
    assert np.array_equal(np.asarray(pipe.decode(state.z_0, [pose])[0]), np.asarray(images[0]))
    assert not np.array_equal(np.asarray(pipe.decode(state.z_0)[0]), np.asarray(images[0]))
    pipe.save_pretrained(tmp_path / "model")
    again = PosePipeline.from_pretrained(tmp_path / "model", device="cpu")
    assert again.native_size == size
    assert np.array_equal(np.asarray(again(pose, seed=3, steps=2)[0][0]), np.asarray(images[0]))


def test_train_decoder_decodes_a_fixed_source_at_twice_its_size_and_resumes(tmp_path):
    from training import train_decoder

    source = tiny_source()
    source.save_pretrained(tmp_path / "source")
    out, args = tmp_path / "decoder", ["--preset", "tiny", "--source", str(tmp_path / "source"), "--gan-weight", "0.1"]
    final = train_decoder.main(["--out", str(out), *args])
    info = json.loads((final / "training_info.json").read_text())
    assert info["steps"] == 2 and info["model"] == "decoder" and len(info["source_enlarged_psnr_db"]) == 2
    decoder = PoseDecoder.from_pretrained(final / "decoder")
    assert decoder.config.sample_size == 64 and decoder.config.latent_channels == 4
    train_decoder.main(["--out", str(out), *args, "--steps", "3", "--resume"])
    assert json.loads((out / "final" / "training_info.json").read_text())["steps"] == 3


def test_the_evaluations_round_trip_goes_through_the_pose_decoder_at_its_scale():
    from PIL import Image

    from tests.test_pipeline import STANDING
    from training.eval_common import round_trip

    halves = [Image.new("RGB", (32, 32), c) for c in ("red", "teal")]
    poses = [Pose(STANDING, 64, 64), None]
    plain = round_trip(tiny_source(), halves)
    posed = round_trip(tiny_source(), halves, decoder=tiny_pose_decoder(), poses=poses)
    assert [im.size for im in plain] == [(32, 32)] * 2 and [im.size for im in posed] == [(64, 64)] * 2
