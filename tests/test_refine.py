"""CLIP refinement with a tiny random pipeline and a tiny random open_clip model: prompts, modes, determinism."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from models.clip_guidance import make_cutouts, prompt_loss, spherical_dist
from models.errors import InputError
from models.pose import Pose
from models.refine import (
    DEFAULTS,
    REFINE_MODES,
    RefineSettings,
    _optimise,
    refine,
    style_sample,
)
from models.refine_settings import MAX_TERMS, parse_prompts, prompt_terms
from tests.test_pipeline import STANDING

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def clip():
    """A tiny random open_clip model behind the ClipScorer interface."""
    from models.clip import TINY_MODEL_CFG, build_clip

    return build_clip(TINY_MODEL_CFG, seed=0).requires_grad_(False)


@pytest.fixture(scope="module")
def detector():
    """A tiny random keypoint detector for the pose term."""
    from models.detector import KeypointDetector

    torch.manual_seed(0)
    return KeypointDetector(image_size=32, channels=(4, 8, 8, 8), decoder_channels=8).eval()


@pytest.fixture(scope="module")
def state(pipe):
    _, (st,) = pipe(Pose(STANDING, 512, 512), seed=3, steps=3, sampler="ddim")
    return st


def _pixels(result) -> np.ndarray:
    return np.asarray(result.images[-1])


# -- prompts ----------------------------------------------------------------------------------------
def test_parse_weighted_prompts():
    assert parse_prompts("pink hair:1 | sailor uniform:0.5 | hat:-0.5") == [
        ("pink hair", 1.0), ("sailor uniform", 0.5), ("hat", -0.5),
    ]  # fmt: skip
    assert parse_prompts("  blue   eyes ") == [("blue eyes", 1.0)]
    assert parse_prompts("a || b |") == [("a", 1.0), ("b", 1.0)]
    assert parse_prompts("cat ears 🐱 | xqzzyv") == [("cat ears 🐱", 1.0), ("xqzzyv", 1.0)]


@pytest.mark.parametrize("prompt", ["", "   ", None, " | | "])
def test_empty_prompt_means_no_refinement(prompt):
    assert parse_prompts(prompt) == [] and prompt_terms(prompt, "hat") == []


def test_negative_prompt_terms_have_negated_weights():
    assert prompt_terms("pink hair", "hat | glasses:0.5") == [("pink hair", 1.0), ("hat", -1.0), ("glasses", -0.5)]


@pytest.mark.parametrize("prompt", ["pink hair:abc", "pink hair:", "a:nan", "a:inf", "a:1e9", ":0.5", 42])
def test_bad_prompts_are_one_sentence_input_errors(prompt):
    with pytest.raises(InputError) as err:
        parse_prompts(prompt)
    assert str(err.value).count(". ") == 0 and "\n" not in str(err.value)


def test_too_many_terms_are_cut_with_a_message():
    notes: list[str] = []
    terms = parse_prompts(" | ".join(f"word{i}" for i in range(40)), notes)
    assert len(terms) == MAX_TERMS and notes


# -- losses and the differentiable sampler ------------------------------------------------------------
def test_spherical_distance_and_weighted_loss():
    a = torch.nn.functional.normalize(torch.randn(3, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    assert torch.allclose(spherical_dist(a, a), torch.zeros(3), atol=1e-6)
    assert math.isclose(float(spherical_dist(a[0], -a[0])), 2 * (math.pi / 2) ** 2, rel_tol=1e-3)
    w = torch.tensor([1.0, -0.5])
    loss = prompt_loss(a, a[:2], w)
    expected = (spherical_dist(a[:, None], a[None, :2]).mean(0) * w).sum()
    assert torch.allclose(loss, expected)


def test_cutouts_are_seeded():
    img = torch.rand(1, 3, 32, 32) * 2 - 1
    a = make_cutouts(img, 4, 16, torch.Generator().manual_seed(1))
    b = make_cutouts(img, 4, 16, torch.Generator().manual_seed(1))
    assert a.shape == (4, 3, 16, 16) and torch.equal(a, b)


def test_style_path_matches_the_pipeline_sampler_and_checkpointing_keeps_gradients(pipe, state):
    cond = pipe.condition(state.pose, state.settings["size"])
    done = pipe.denoise(pipe.prepare(state.pose, state.seed, steps=3, sampler="ddim"))

    def fn(z, t, s):
        return pipe.predict(z, t, cond, s, state.settings["guidance"])

    grads = []
    for ck in (False, True):
        s = torch.as_tensor(state.style)[None].clone().requires_grad_(True)
        with torch.enable_grad():
            z0 = style_sample(fn, pipe, state.z_T, s, pipe.start_mean(cond, s), steps=3, checkpointing=ck)
            z0.square().mean().backward()
        assert torch.allclose(z0.detach(), done.z_0, atol=1e-5)
        grads.append(s.grad)
    assert grads[0].abs().sum() > 0 and torch.allclose(grads[0], grads[1], atol=1e-6)


# -- refine ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", REFINE_MODES)
def test_each_mode_changes_the_state_and_streams_images(pipe, state, clip, detector, mode):
    seen = []
    result = refine(pipe, state, "pink hair | hat:-0.5", mode=mode, steps=2, clip=clip, detector=detector,
                    callback=lambda i, n, im: seen.append((i, n)))  # fmt: skip
    stages = 2 if mode == "both" else 1
    assert len(result.images) == 2 * stages + 1 and result.images[-1].size == (32, 32)
    assert seen == [(i + 1, 2 * stages) for i in range(2 * stages)]
    assert result.state.z_0 is not None and not torch.equal(result.state.z_0, state.z_0)
    assert torch.equal(result.state.z_T, state.z_T) and result.state.seed == state.seed
    moved_style = not np.array_equal(result.state.style, state.style)
    assert moved_style == (mode != "latent")
    assert result.record["mode"] == mode and result.record["prompt"] == "pink hair | hat:-0.5"
    assert result.seconds > 0 and result.messages == []
    if mode == "style":  # an ordinary state: re-rendering it gives the same pixels
        assert np.array_equal(np.asarray(pipe.render(result.state)[0][0]), _pixels(result))


@pytest.mark.parametrize("search", [0, 2])
def test_latent_regions_move_each_named_region_by_its_own_change(pipe, state, clip, monkeypatch, search):
    from models.recolour import latent_masks, region_pixel_masks

    settings = RefineSettings(steps=2, lr=0.5, pose_weight=0.0, cutouts=2, tether=0.0, offset_grid=4, contrast=3.0,
                              colour_search=search, keep_outside=10.0)  # fmt: skip
    monkeypatch.setitem(DEFAULTS, "latent", settings)
    image = pipe.decode(state.z_0)[0]
    masks = latent_masks(
        region_pixel_masks(state, [("pink hair", 1.0), ("red dress", 1.0)], image), state.z_0.shape[-1]
    )
    assert masks.shape == (2, 1, *state.z_0.shape[-2:])  # hair, then body
    result = refine(pipe, state, "pink hair | red dress", mode="latent", clip=clip)
    delta = result.state.z_0 - state.z_0
    assert delta.abs().max() > 0 and "contrast" in result.losses[0] and "keep" in result.losses[0]
    touched = (masks.sum(dim=0, keepdim=True) > 0).float()
    if search:  # the search's projection sets the region's cells grown by one (`models.recolour.region_cells`)
        touched = torch.nn.functional.max_pool2d(touched, 3, stride=1, padding=1)
    outside = (touched[0] == 0).expand_as(delta[0])
    assert outside.any() and delta[0][outside].abs().max() == 0  # nothing moves outside the named regions
    # a prompt that names no region moves on the offset grid, everywhere
    assert region_pixel_masks(state, [("cute", 1.0)], image) is None
    free = refine(pipe, state, "cute", mode="latent", clip=clip)
    assert (free.state.z_0 - state.z_0).abs().flatten().gt(0).float().mean() > 0.9


def test_same_inputs_same_pixels(pipe, state, clip, detector):
    a = refine(pipe, state, "blue eyes", mode="both", steps=1, clip=clip, detector=detector)
    b = refine(pipe, state, "blue eyes", mode="both", steps=1, clip=clip, detector=detector)
    assert np.array_equal(_pixels(a), _pixels(b)) and np.array_equal(a.state.style, b.state.style)


def test_empty_prompt_returns_the_state_unchanged(pipe, state, clip):
    result = refine(pipe, state, "  ", negative_prompt="hat", clip=clip)
    assert result.state is state and result.images == [] and result.messages


def test_long_prompt_is_cut_and_said(pipe, state, clip):
    result = refine(pipe, state, "pink hair " * 1000, mode="latent", steps=1, clip=clip, pose_weight=0.0)
    assert any("cut" in m for m in result.messages) and result.state.z_0 is not None


def test_gradient_reaches_s_and_the_pose_term_runs(pipe, state, clip, detector, monkeypatch):
    import models.refine as refine_module

    monkeypatch.setitem(DEFAULTS, "style", RefineSettings(steps=1, lr=0.3, pose_weight=1.0, cutouts=2, tether=0.0))
    seen = {}
    real_step = refine_module.ngd_step

    def spy_step(x, lr):
        seen["grad"] = x.grad.clone()
        real_step(x, lr)

    monkeypatch.setattr(refine_module, "ngd_step", spy_step)
    result = refine(pipe, state, "red hair", mode="style", clip=clip, detector=detector)
    assert seen["grad"].shape == (state.style.shape[0],) and seen["grad"].abs().sum() > 0
    assert "pose" in result.losses[0] and math.isfinite(result.losses[0]["pose"])


@pytest.mark.parametrize("kwargs", [
    {"mode": "pixels"}, {"steps": 0}, {"steps": 10**4}, {"steps": 2.5}, {"lr": 0.0}, {"lr": math.nan},
    {"lr": 5.0}, {"pose_weight": -1.0}, {"pose_weight": math.inf}, {"pose_weight": "1"},
])  # fmt: skip
def test_bad_settings_are_input_errors(pipe, state, clip, kwargs):
    with pytest.raises(InputError):
        refine(pipe, state, "pink hair", clip=clip, **kwargs)


def test_command_line_records_the_refinement(pipe, clip, tmp_path, capsys):
    import json

    import app
    from models.pose_input import read_png_record

    pipe.save_pretrained(tmp_path / "model")
    clip.save_pretrained(tmp_path / "clip")
    out = tmp_path / "x.png"
    argv = ["generate", "--pose", "waving", "--seed", "1", "--out", str(out), "--steps", "2", "--model",
            str(tmp_path / "model"), "--device", "cpu", "--clip", str(tmp_path / "clip"), "--prompt",
            "pink hair, " + "pink, " * 47, "--refine-mode", "latent", "--refine-steps", "1"]  # fmt: skip
    assert app.main(argv) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["refine"]["mode"] == "latent" and line["refine"]["steps"] == 1
    assert any("cut" in m for m in line["refine"]["messages"])
    record = read_png_record(out)
    assert record["refine"]["prompt"].startswith("pink hair") and record["refine"]["messages"]
    assert app.main(argv[:-4] + ["--refine-mode", "latent", "--refine-steps", "0"]) == 1
    assert "refine steps" in json.loads(capsys.readouterr().out.strip())["error"]


def test_optimise_returns_the_best_iterate_not_the_last():
    # NGD with step 1 on (x - 0.8)^2 from 0 oscillates 0 -> 1 -> 0: the iterate after step 1 (loss 0.04)
    # beats the last one (back at 0, loss 0.64); the start itself is never returned.
    settings = RefineSettings(steps=2, lr=1.0, pose_weight=0.0, cutouts=1, tether=0.0)
    seen, messages = [], []
    out = _optimise(torch.zeros(1), lambda x: ((x - 0.8).pow(2).sum(), x), settings, seen.append, messages)
    assert torch.allclose(out, torch.ones(1)) and len(seen) == 2 and messages == []
    one = _optimise(torch.zeros(1), lambda x: ((x - 0.8).pow(2).sum(), x), replace(settings, steps=1), seen.append, [])
    assert torch.allclose(one, torch.ones(1))  # one step: moved, whatever its loss


def test_keep_outside_holds_the_pixels_outside_the_named_region(pipe, state, clip, monkeypatch):
    from models.recolour import region_pixel_masks

    image = pipe.decode(state.z_0)[0]
    keyed = region_pixel_masks(state, [("pink hair", 1.0)], image)
    outside = (np.max(list(keyed.values()), axis=0) < 0.01)[..., None]
    change = {}
    for keep in (0.0, 1e4):
        # lr 0.1, the mode's default: NGD's fixed step of 0.5 overshot the keep term on this random model
        settings = RefineSettings(steps=3, lr=0.1, pose_weight=0.0, cutouts=2, tether=0.0, contrast=3.0,
                                  keep_outside=keep)  # fmt: skip
        monkeypatch.setitem(DEFAULTS, "latent", settings)
        result = refine(pipe, state, "pink hair", mode="latent", clip=clip)
        diff = np.abs(_pixels(result).astype(float) - np.asarray(image, dtype=float))
        change[keep] = (diff * outside).sum() / outside.sum()
    assert change[1e4] < change[0.0]


def test_optimise_with_a_score_ranks_the_start_too():
    # with a deterministic score (the colour search's), a start that already scores best is kept
    settings = RefineSettings(steps=3, lr=0.5, pose_weight=0.0, cutouts=1, tether=0.0)
    out = _optimise(torch.zeros(1), lambda x: ((x - 0.8).pow(2).sum(), x), settings, lambda _: None, [],
                    score=lambda image: float(image.abs().sum()))  # fmt: skip
    assert torch.equal(out, torch.zeros(1))
    # and the best-scored iterate otherwise, whatever the loss says
    out = _optimise(torch.zeros(1), lambda x: ((x - 0.8).pow(2).sum(), x), settings, lambda _: None, [],
                    score=lambda image: float((image - 0.5).abs().sum()))  # fmt: skip
    assert torch.allclose(out, torch.full((1,), 0.5))


def test_search_uses_the_pipeline_palette_for_its_part(pipe, state, clip, monkeypatch):
    from models import recolour

    seen = []
    real = recolour.colour_search

    def spy(vae, clip_model, z, image, mask, classes, colours, top=4, **kw):
        seen.append(colours)
        return real(vae, clip_model, z, image, mask, classes, colours, top, **kw)

    monkeypatch.setattr(recolour, "colour_search", spy)
    settings = replace(DEFAULTS["latent"], steps=1, colour_search=2)
    monkeypatch.setitem(DEFAULTS, "latent", settings)
    palette = np.float32([[0.9, -0.9, -0.9], [-0.9, 0.9, -0.9]])
    monkeypatch.setattr(pipe, "palette", {"background": palette})
    refine(pipe, state, "red background | pink hair", mode="latent", clip=clip)
    assert len(seen) == 2
    from models.recolour import decoder_gamut

    by_palette = {np.array_equal(c.numpy(), palette): c for c in seen}
    assert set(by_palette) == {True, False}  # the background's candidates: the palette
    assert torch.equal(by_palette[False], decoder_gamut(pipe.vae)[1])  # the hair (no palette): the decoder's gamut


def test_a_refinement_no_step_improves_keeps_the_image_and_says_so(pipe, state, clip, monkeypatch):
    from models import recolour

    monkeypatch.setattr(recolour, "colour_search", lambda vae, clip_model, z, *args, **kw: z)
    calls = []

    def first_is_best(clip_model, contrasts):
        def score(image):  # the start (the first image scored) beats every step
            calls.append(image)
            return -1.0 if len(calls) == 1 else 0.0

        return score

    monkeypatch.setattr(recolour, "search_score", first_is_best)
    monkeypatch.setitem(DEFAULTS, "latent", replace(DEFAULTS["latent"], steps=2, colour_search=2))
    result = refine(pipe, state, "pink hair", mode="latent", clip=clip)
    assert torch.equal(result.state.z_0, state.z_0)
    assert any("kept unchanged" in m for m in result.messages)
