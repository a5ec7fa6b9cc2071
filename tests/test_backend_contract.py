"""The back-end contract (`models.backend`) on the three back ends, with tiny random models: PosePipeline, the
keypoint-LDM fork's pipeline and Stable Diffusion + ControlNet.

Each answers check_inputs / prepare / render by keyword with the same names, renders a state to the same pixels,
lets a model wrapper wrap its denoiser, and its Capabilities agree with what it does: every app endpoint
(generate, refine, edit, explore) and every extra (style code, directions, refinement, prompt, CLIP guidance)
either works or is refused with our own one sentence, never an unexpected error.
"""

from __future__ import annotations

import ast
import inspect
import json
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch

from models.backend import Backend, Capabilities
from models.backends import capabilities, load_backend
from models.errors import InputError
from tests.test_pipeline import tiny_pipeline
from tests.test_public_weights import FakeClip, build_sd_folders, fork_state_dict
from ui import app_explore, app_generate, app_refine, common, settings

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py

KINDS = ("ours", "fork", "sd")
# The names every back end takes, in this order (check_inputs has num_images before size, prepare has none).
CHECK_NAMES = ("pose", "seed", "steps", "guidance", "sampler", "style", "eta", "num_images", "size")
PREPARE_NAMES = ("pose", "seed", "steps", "guidance", "sampler", "style", "eta", "size")
FEATURES = (
    "guidance",
    "style",
    "sefa",
    "ganspace",
    "refine_style",
    "refine_latent",
    "prompt",
    "clip_guidance",
    "fast",
    "upscale",
)


@pytest.fixture(scope="module")
def backends(tmp_path_factory) -> dict[str, object]:
    """The three back ends, tiny and random: ours (32 px), the fork (128 px) and SD + ControlNet (64 px)."""
    from models.compvis import ForkPipeline

    pytest.importorskip("transformers", reason="Stable Diffusion's text encoder and tokenizer need transformers")
    base, cn = build_sd_folders(tmp_path_factory.mktemp("sd"))
    return {
        "ours": tiny_pipeline(),
        "fork": ForkPipeline.from_state_dict(fork_state_dict(), device="cpu"),
        "sd": load_backend(str(base), str(cn), device="cpu"),
    }


@pytest.fixture(scope="module")
def clip():
    """A tiny random open_clip model behind the ClipScorer interface (for the refine endpoint)."""
    from models.clip import TINY_MODEL_CFG, build_clip

    return build_clip(TINY_MODEL_CFG, seed=0).requires_grad_(False)


@pytest.fixture(autouse=True)
def served_files(tmp_path, monkeypatch):
    """The endpoints' files go to a temporary folder."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    monkeypatch.setattr(settings, "_FOLDER", None)


def size_of(backend) -> int:
    """A small size the back end draws (the fork at half its native 128 px)."""
    return min(backend.native_size, 64)


def inputs(backend, pose, **changes) -> dict:
    """Every common input by name, valid for `backend`."""
    base = {
        "pose": pose, "seed": 3, "steps": 2, "guidance": 2.0, "sampler": "ddim", "style": None, "eta": 0.0,
        "num_images": 1, "size": size_of(backend),
    }  # fmt: skip
    return {**base, **changes}


def by_name(fn, values: dict) -> dict:
    """The entries of `values` that `fn` takes."""
    return {k: v for k, v in values.items() if k in inspect.signature(fn).parameters}


def state_of(backend, pose, **changes):
    """A checked, prepared state of `backend` (by keyword)."""
    values = inputs(backend, pose, **changes)
    backend.check_inputs(**by_name(backend.check_inputs, values))
    return backend.prepare(**by_name(backend.prepare, values))


def refusal(run) -> str:
    """The one sentence `run()` is refused with (an InputError, or the endpoint's gr.Error carrying it)."""
    try:
        out = run()
        if inspect.isgenerator(out):
            list(out)
    except (InputError, gr.Error) as err:
        message = err.message if isinstance(err, gr.Error) else str(err)
        assert message != common.UNEXPECTED and "\n" not in message and message.endswith("."), message
        return message
    raise AssertionError("expected a refusal")


def last(generator):
    """The last value an endpoint's generator yields."""
    *_, final = generator
    return final


def pixels(images) -> np.ndarray:
    return np.asarray(images[0])


# -- the calls ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_each_back_end_takes_the_same_names_in_the_same_order(backends, kind):
    """Same names and order for check_inputs and prepare (positional callers agree too); extras are keyword-only."""
    backend = backends[kind]
    assert isinstance(backend, Backend) and isinstance(backend.CAPABILITIES, Capabilities)
    assert capabilities(backend) == backend.CAPABILITIES.names <= set(FEATURES)
    for fn, names in ((backend.check_inputs, CHECK_NAMES), (backend.prepare, PREPARE_NAMES)):
        params = inspect.signature(fn).parameters
        assert tuple(params)[: len(names)] == names
        assert all(p.kind is p.KEYWORD_ONLY for p in list(params.values())[len(names) :])
    for fn in (backend.render, backend.__call__):
        assert "wrap" in inspect.signature(fn).parameters


@pytest.mark.parametrize("kind", KINDS)
def test_check_prepare_render_by_keyword_and_the_same_state_gives_the_same_pixels(backends, kind, pose):
    backend = backends[kind]
    state = state_of(backend, pose)
    assert state.seed == 3 and state.settings["steps"] == 2 and state.settings["size"] == size_of(backend)
    images, done = backend.render(state)
    assert images[0].size == (size_of(backend),) * 2 and done.z_0 is not None
    assert np.array_equal(pixels(backend.render(state)[0]), pixels(images))
    values = inputs(backend, pose)
    positional = backend.prepare(*[values[k] for k in PREPARE_NAMES])  # PosePipeline's order works on every one
    assert torch.equal(positional.z_T, state.z_T) and positional.settings == state.settings


@pytest.mark.parametrize("kind", KINDS)
def test_a_model_wrapper_wraps_every_step(backends, kind, pose):
    """`render(wrap=...)`, as k-diffusion's model wrappers: called once per render, its model_fn once per step; an
    identity wrapper leaves the pixels as they were, a scaling one changes them."""
    backend = backends[kind]
    state = state_of(backend, pose)
    plain, _ = backend.render(state)
    calls = {"wrap": 0, "steps": 0}

    def wrap(wrapped_state, model_fn, scale=1.0):
        calls["wrap"] += 1
        assert wrapped_state is state or wrapped_state.seed == state.seed

        def wrapped(x, t):
            calls["steps"] += 1
            return scale * model_fn(x, t)

        return wrapped

    same, _ = backend.render(state, wrap=wrap)
    assert calls == {"wrap": 1, "steps": 2} and np.array_equal(pixels(same), pixels(plain))
    moved, _ = backend.render(state, wrap=lambda s, fn: wrap(s, fn, scale=0.0))
    assert not np.array_equal(pixels(moved), pixels(plain))
    called, states = backend(pose, seed=3, steps=2, guidance=2.0, sampler="ddim", size=size_of(backend), wrap=wrap)
    assert np.array_equal(pixels(called), pixels(plain)) and states[0].settings == state.settings


@pytest.mark.parametrize("kind", KINDS)
def test_inputs_a_back_end_cannot_honour_are_one_sentence(backends, kind, pose):
    backend = backends[kind]
    caps = backend.CAPABILITIES
    checks = [
        {"steps": caps.max_steps + 1},
        {"size": backend.size_multiple + 1},
        {"sampler": "plms"},
        {"seed": -1},
        {"num_images": 0},
        {"style": np.full(3, np.nan)},
    ]
    if caps.max_guidance is not None:
        checks.append({"guidance": caps.max_guidance + 1})
    for change in checks:
        values = inputs(backend, pose, **change)
        refusal(lambda values=values: backend.check_inputs(**by_name(backend.check_inputs, values)))


# -- capabilities as data agree with behaviour ------------------------------------------------------------
def _feature(backend, name: str, pose, clip) -> None:
    """Use the feature `name` of `backend` once; an InputError says it is not offered."""
    from models.clip_guidance import generate_guided

    state = state_of(backend, pose)
    loader = lambda: backend
    text = json.dumps(common.state_dict(state))
    if name == "guidance":  # a back end without it ignores the scale and records 1.0
        assert state.settings["guidance"] == 2.0
    elif name == "style":
        dim = int(getattr(backend, "style_dim", 8))
        s = np.linspace(-1, 1, dim).astype(np.float32)
        styled = state_of(backend, pose, style=s)
        assert np.array_equal(styled.style, s)
    elif name in ("sefa", "ganspace"):
        last(app_explore.edit_api_handler(loader)(text, f"{name}:0=1.5", 0, 0))
    elif name.startswith("refine_"):
        mode = name.removeprefix("refine_")
        *_, notes = last(app_refine.refine_api_handler(loader, clip)(text, "pink hair", "", mode, 1, 1.0, 0.0))
        assert f"{mode} mode" in notes
    elif name == "prompt":
        if "prompt" not in inspect.signature(backend.prepare).parameters:
            raise InputError("This model takes no prompt.")
        assert state_of(backend, pose, prompt="red dress").settings["prompt"] == "red dress"
    elif name == "fast":
        if "fast" not in inspect.signature(backend.prepare).parameters:
            raise InputError("This model has no fast generator.")
        _, (done,) = backend(pose, seed=3, steps=2, fast=True)
        assert done.settings["fast"] is True
    elif name == "upscale":
        if getattr(backend, "upscaler", None) is None:
            raise InputError("This model has no upscale pass.")
        images, _ = backend(pose, seed=3, steps=2)
        drafts, (draft,) = backend(pose, seed=3, steps=2, draft=True)
        assert images[0].width > drafts[0].width and draft.settings["draft"] is True
    elif name == "clip_guidance":
        _, (done,) = generate_guided(
            backend, pose, 3, FakeClip(), "red hair", cutouts=1, steps=2, size=size_of(backend)
        )
        assert done.settings["clip_guidance"]["prompt"] == "red hair"


@pytest.mark.parametrize("kind", KINDS)
def test_every_feature_works_when_offered_and_is_refused_in_one_sentence_otherwise(backends, kind, pose, clip):
    backend = backends[kind]
    offered = capabilities(backend)
    for name in FEATURES:
        if name in offered:
            _feature(backend, name, pose, clip)
        elif name == "guidance":
            assert state_of(backend, pose, guidance=5.0).settings["guidance"] == 1.0
        else:
            refusal(lambda name=name: _feature(backend, name, pose, clip))


# -- the app's endpoints ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_every_endpoint_works_or_says_plainly_what_the_back_end_lacks(backends, kind, pose, clip):
    """generate, then refine / edit / explore from its state: each works or is one sentence of ours."""
    backend = backends[kind]
    loader = lambda: backend
    offered = capabilities(backend)
    _, gallery, files, seed, states = last(
        app_generate.generate_handler(loader, api=True)(json.dumps(pose.to_dict()), 5, 2, "ddim", 2.0, 1)
    )
    assert seed == 5 and len(gallery) == 1 and states[0]["seed"] == 5 and files
    text = json.dumps(states[0])
    # the state round trip: the same JSON re-renders the same pixels
    state = common.state_from_json(backend, text)
    assert np.array_equal(pixels(backend.render(state)[0]), np.asarray(gallery[0][0]))
    for mode in ("style", "latent", "both"):
        refine = app_refine.refine_api_handler(loader, clip)
        run = lambda mode=mode, refine=refine: refine(text, "pink hair", "", mode, 1, 1.0, 0.0)
        needs = {"refine_style", "refine_latent"} if mode == "both" else {f"refine_{mode}"}
        if needs <= offered:
            image, _, refined, _ = last(run())
            assert image is not None and refined["seed"] == 5
        else:
            assert "does not offer" in refusal(run)
    edit = app_explore.edit_api_handler(loader)
    for edits, start, end in (("sefa:0=2", 0, 0), ("ganspace:1=-1", 0, 0), ("", 0, 1)):
        run = lambda edits=edits, start=start, end=end: edit(text, edits, start, end)
        if "style" in offered:
            image, _, edited, _ = run()
            assert image is not None and edited["seed"] == 5
        else:
            assert "style" in refusal(run).lower() or "does not offer" in refusal(run)
    current = common.Result(gallery[0][0], state, {})
    status = app_explore.explore_setup_handler(loader)(current, "sefa")[0]
    if "sefa" in offered:
        assert "SeFa" in status
    else:
        assert status == "This model has no style code, so it offers no SeFa or GANSpace directions."


# -- no import loops ----------------------------------------------------------------------------------------
def import_graph(folder: Path, package: str) -> dict[str, set[str]]:
    """Every import, at module level or inside a function, between the modules of one package folder."""
    modules = {f"{package}.{p.stem}": p for p in folder.glob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def test_models_have_no_import_loops():
    """No module of models/ reaches itself through the others' imports (function-level imports count)."""
    graph = import_graph(Path(__file__).resolve().parents[1] / "models", "models")

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    assert [m for m in graph if m in reach(m)] == []
