"""PosePipeline with a tiny random model built on the fly: save/load, determinism, samplers, input checks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from models.autoencoder import build_autoencoder
from models.backend import SAMPLER_NAMES, GenerationState
from models.errors import InputError
from models.pipeline import PosePipeline
from models.pose import Pose
from models.samplers import training_scheduler
from models.unet import PoseUNet, StyleEncoder
from models.upscale import UpscaleSettings

SIZE = 32  # the tiny model draws 32 px images (f2 autoencoder, 16 x 16 latent)
STANDING = np.array([
    [0.50, 0.15, 1], [0.47, 0.13, 1], [0.53, 0.13, 1], [0.44, 0.15, 1], [0.56, 0.15, 1],
    [0.40, 0.28, 1], [0.60, 0.28, 1], [0.36, 0.42, 1], [0.64, 0.42, 1], [0.35, 0.55, 1],
    [0.65, 0.55, 1], [0.44, 0.55, 1], [0.56, 0.55, 1], [0.44, 0.72, 1], [0.56, 0.72, 1],
    [0.44, 0.90, 1], [0.56, 0.90, 0.2],
], dtype=np.float32)  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def tiny_pipeline(seed: int = 0, size: int = SIZE, style_encoder: StyleEncoder | None = None) -> PosePipeline:
    """A seeded random pipeline small enough to sample in milliseconds on a CPU."""
    from models.condition import CONDITION_CHANNELS

    torch.manual_seed(seed)
    vae = build_autoencoder((8, 16), 1, 4, 4, sample_size=size)
    vae.register_to_config(scaling_factor=2.0, shift_factor=0.1)
    unet = PoseUNet(
        sample_size=size // 2,
        latent_channels=4,
        cond_channels=CONDITION_CHANNELS,
        hint_widths=(),
        hint_channels=4,
        style_dim=8,
        block_out_channels=(8, 16),
        attention_head_dim=4,
        norm_num_groups=4,
    )
    return PosePipeline(vae, unet, training_scheduler(), style_encoder, device="cpu")


def _arrays(images) -> list[np.ndarray]:
    return [np.asarray(im) for im in images]


def test_output_shape_and_states(pipe, pose):
    images, states = pipe(pose, seed=3, steps=3, num_images=2)
    assert [im.size for im in images] == [(SIZE, SIZE)] * 2 and images[0].mode == "RGB"
    assert [s.seed for s in states] == [3, 4]
    assert states[0].style.shape == (8,) and states[0].z_0.shape == (1, 4, SIZE // 2, SIZE // 2)
    data = json.loads(states[0].to_json())
    assert data["settings"] == {"steps": 3, "guidance": 2.0, "sampler": "dpmpp_2m", "eta": 0.0, "size": SIZE}
    assert len(data["style"]) == 8 and data["pose"]["format"] == "coco17"


def test_same_seed_same_pixels_other_seed_other_pixels(pipe, pose):
    a, _ = pipe(pose, seed=7, steps=4, sampler="euler_a")
    b, _ = pipe(pose, seed=7, steps=4, sampler="euler_a")
    c, _ = pipe(pose, seed=8, steps=4, sampler="euler_a")
    assert np.array_equal(_arrays(a)[0], _arrays(b)[0])
    assert not np.array_equal(_arrays(a)[0], _arrays(c)[0])


def test_image_i_equals_single_call_with_seed_plus_i(pipe, pose):
    batch, _ = pipe(pose, seed=10, steps=3, num_images=2)
    single, _ = pipe(pose, seed=11, steps=3)
    assert np.array_equal(np.asarray(batch[1]), np.asarray(single[0]))


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_every_sampler_runs(pipe, pose, sampler):
    images, states = pipe(pose, seed=1, steps=4, sampler=sampler, eta=0.5 if sampler == "ddim" else 0.0)
    assert np.isfinite(states[0].z_0.numpy()).all() and images[0].size == (SIZE, SIZE)


def test_rerender_with_style(pipe, pose):
    _, (state,) = pipe(pose, seed=5, steps=3)
    same, _ = pipe.render(state.with_style(state.style))
    other, moved = pipe.render(state.with_style(state.style + 3.0))
    first = pipe.decode(state.z_0)
    assert np.array_equal(np.asarray(same[0]), np.asarray(first[0]))
    assert not np.array_equal(np.asarray(other[0]), np.asarray(first[0]))
    assert torch.equal(moved.z_T, state.z_T)


def test_given_style_is_used(pipe, pose):
    s = np.linspace(-1, 1, 8).astype(np.float32)
    _, (state,) = pipe(pose, seed=5, steps=2, style=s)
    assert np.array_equal(state.style, s)


def test_callback_streams_previews(pipe, pose):
    calls = []
    pipe(pose, seed=0, steps=10, num_images=2, callback=lambda i, n, im: calls.append((i, n, im is not None)))
    assert [c[0] for c in calls] == list(range(1, 21)) and all(c[1] == 20 for c in calls)
    assert sum(c[2] for c in calls) >= 2


def test_save_and_load_give_identical_output(pipe, pose, tmp_path):
    pipe.save_pretrained(tmp_path / "model")
    loaded = PosePipeline.from_pretrained(tmp_path / "model", device="cpu")
    a, _ = pipe(pose, seed=2, steps=3)
    b, _ = loaded(pose, seed=2, steps=3)
    assert np.array_equal(np.asarray(a[0]), np.asarray(b[0]))
    assert loaded.vae.config.scaling_factor == 2.0
    assert loaded.palette == {} and not (tmp_path / "model" / "palette.json").exists()


def test_palette_travels_with_the_pipeline_folder(pipe, tmp_path, monkeypatch):
    colours = np.float32([[1.0, -1.0, -1.0], [0.0, 0.2, 1.0]])
    monkeypatch.setattr(pipe, "palette", {"body": colours})
    pipe.save_pretrained(tmp_path / "model")
    loaded = PosePipeline.from_pretrained(tmp_path / "model", device="cpu")
    assert set(loaded.palette) == {"body"} and np.allclose(loaded.palette["body"], colours, atol=1 / 127.5)


def test_missing_folder_is_an_input_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError):
        PosePipeline.from_pretrained(tmp_path / "nothing")
    (tmp_path / "half").mkdir()
    with pytest.raises(InputError, match="lacks"):
        PosePipeline.from_pretrained(tmp_path / "half")


@pytest.mark.parametrize("kwargs", [
    {"steps": 0}, {"steps": 10**6}, {"steps": 2.5}, {"guidance": math.nan}, {"guidance": -1.0}, {"guidance": 1e9},
    {"sampler": "plms"}, {"num_images": 0}, {"num_images": 9}, {"seed": -1}, {"eta": 2.0}, {"size": 33},
    {"style": [0.0, 1.0]}, {"style": [math.inf] * 8},
])  # fmt: skip
def test_bad_inputs_raise_input_error(pipe, pose, kwargs):
    with pytest.raises(InputError):
        pipe(pose, **{"seed": 0, **kwargs})


def test_pose_without_visible_point_is_rejected(pipe):
    kp = STANDING.copy()
    kp[:, 2] = 0.0
    with pytest.raises(InputError, match="no visible"):
        pipe(Pose(kp, 512, 512), seed=0)


def test_state_is_plain_json(pipe, pose):
    _, (state,) = pipe(pose, seed=0, steps=2)
    assert isinstance(state, GenerationState)
    json.dumps(state.to_dict())  # no tensors in the JSON part


class _Detector:
    """Stands in for the keypoint detector: a fixed figure confidence."""

    def __init__(self, confidence: float):
        self.confidence = confidence

    def figure_confidence(self, images):
        return np.full(len(images), self.confidence)


def test_style_from_image_reads_the_encoders_mean_and_any_frame(pipe, monkeypatch):
    from PIL import Image

    from models import detector as detector_module
    from models.unet import StyleEncoder

    torch.manual_seed(0)
    pipe.style_encoder = StyleEncoder(widths=(4, 8), style_dim=8, norm_num_groups=4).eval()
    monkeypatch.setattr(detector_module, "load_detector", lambda d=None: d if d is not None else _Detector(0.6))
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8))
    s = pipe.style_from_image(picture)
    with torch.no_grad():
        mu, _ = pipe.style_encoder(torch.from_numpy(np.asarray(picture, np.float32)).permute(2, 0, 1)[None] / 127.5 - 1)
    np.testing.assert_allclose(s, mu[0].numpy(), atol=1e-5)
    assert pipe.style_from_image(picture.resize((3 * SIZE, 2 * SIZE))).shape == (8,)  # any frame: padded, resized
    _, states = pipe(Pose(STANDING, 512, 512), seed=0, steps=2, style=s)
    np.testing.assert_allclose(states[0].style, s)


def test_style_from_image_refuses_a_picture_without_a_figure(pipe, monkeypatch):
    from PIL import Image

    from models import detector as detector_module
    from models.errors import NO_FIGURE
    from models.unet import StyleEncoder

    pipe.style_encoder = StyleEncoder(widths=(4, 8), style_dim=8, norm_num_groups=4).eval()
    monkeypatch.setattr(detector_module, "load_detector", lambda d=None: _Detector(0.05))
    with pytest.raises(InputError, match="No character was found") as err:
        pipe.style_from_image(Image.new("RGB", (SIZE, SIZE), "white"))
    assert str(err.value) == NO_FIGURE
    pipe.style_encoder = None
    with pytest.raises(InputError, match="no style encoder"):
        pipe.style_from_image(Image.new("RGB", (SIZE, SIZE), "white"))


def test_the_low_noise_expert_takes_the_steps_it_covers_and_travels_with_the_folder(pose, tmp_path):
    base = tiny_pipeline()
    expert = tiny_pipeline(seed=1)
    expert.unet.register_to_config(timesteps=[0, 300])
    pipe = PosePipeline(base.vae, base.unet, base.scheduler, device="cpu", detail_unet=expert.unet)
    z, cond, s = torch.randn(2, 4, 16, 16), torch.randn(2, 33, 32, 32), torch.randn(2, 8)
    with torch.no_grad():
        for t, owner in ((299, expert), (300, base), (999, base), ([100, 500], base), ([0, 299], expert)):
            t = torch.tensor(t)  # a batch of timesteps goes to the expert only when it covers all of them
            assert torch.equal(pipe.predict(z, t, cond, s, 2.0), owner.predict(z, t, cond, s, 2.0))
    images, _ = pipe(pose, seed=3, steps=4)
    assert not np.array_equal(_arrays(images)[0], _arrays(base(pose, seed=3, steps=4)[0])[0])  # the expert drew some
    pipe.save_pretrained(tmp_path)
    again = PosePipeline.from_pretrained(tmp_path, device="cpu")
    assert again.detail_unet.config.timesteps == [0, 300] and again.unet.config.timesteps is None
    assert np.array_equal(_arrays(again(pose, seed=3, steps=4)[0])[0], _arrays(images)[0])
    # stored in float16 (as checkpoints keep it), it computes in the pipeline's float32
    expert.unet.half().save_pretrained(tmp_path / "detail_unet")
    assert PosePipeline.from_pretrained(tmp_path, device="cpu").detail_unet.dtype == torch.float32


def test_the_upscale_pass_draws_finished_pictures_at_its_size_and_travels_with_the_folder(pose, tmp_path):
    import dataclasses

    from models.batching import Batcher

    base = tiny_pipeline()
    upscaler = tiny_pipeline(seed=1, size=2 * SIZE, style_encoder=StyleEncoder(widths=(8, 8), style_dim=8))
    settings = UpscaleSettings(strength=0.5, steps=2)
    pipe = PosePipeline(base.vae, base.unet, base.scheduler, device="cpu", upscaler=upscaler, upscale_settings=settings)
    assert (pipe.native_size, pipe.output_size) == (SIZE, 2 * SIZE)
    images, states = pipe(pose, seed=3, steps=3)
    assert images[0].size == (2 * SIZE, 2 * SIZE) and states[0].settings["size"] == SIZE  # the state is the base's
    plain = base(pose, seed=3, steps=3)[0][0]
    assert np.array_equal(_arrays(pipe.decode(states[0].z_0))[0], np.asarray(plain))  # the base drew the same z_0
    assert np.array_equal(_arrays(pipe.render(states[0])[0])[0], _arrays(images)[0])  # one state, one picture
    assert np.array_equal(
        _arrays(Batcher(pipe, max_images=2, window=0.0)(pose, seed=3, steps=3)[0])[0], _arrays(images)[0]
    )
    preview = dataclasses.replace(states[0], settings={**states[0].settings, "fast": True})
    assert pipe.picture(preview).size == (SIZE, SIZE)  # a student's preview stays as decoded
    pipe.save_pretrained(tmp_path)
    again = PosePipeline.from_pretrained(tmp_path, device="cpu")
    assert again.upscale_settings == settings and again.output_size == 2 * SIZE
    assert np.array_equal(_arrays(again(pose, seed=3, steps=3)[0])[0], _arrays(images)[0])
    for bad in ({"strength": 0.0}, {"steps": "8"}, {"guidance": None}, {"sampler": "heun"}):
        with pytest.raises(InputError, match="upscale.json"):
            UpscaleSettings(**bad)
    (tmp_path / "upscaler" / "upscale.json").write_text("[0.5")
    with pytest.raises(InputError, match="not a JSON object"):
        PosePipeline.from_pretrained(tmp_path, device="cpu")
