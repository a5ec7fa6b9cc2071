"""The micro-batcher (`models.batching`) on a tiny random pipeline: a batch gives each request what it would get
alone, concurrent requests share a batch, other settings wait their turn oldest first, a busy server refuses
with one sentence, and the app's generate endpoint really batches concurrent callers."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import torch

from models.batching import Batcher, BusyError, batcher_for, denoise_batch, render_batch
from models.errors import InputError
from models.pose import mirror
from tests.test_pipeline import tiny_pipeline
from ui import app_generate, common, settings

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def run_threads(fns: list, stagger: float = 0.0) -> list:
    """Call each fn in its own thread (started `stagger` s apart); their results (or exceptions) in order."""
    out: list = [None] * len(fns)

    def one(k: int) -> None:
        try:
            out[k] = fns[k]()
        except Exception as err:  # noqa: BLE001 - returned to the test
            out[k] = err

    threads = [threading.Thread(target=one, args=(k,)) for k in range(len(fns))]
    for t in threads:
        t.start()
        time.sleep(stagger)
    for t in threads:
        t.join(60)
    return out


@pytest.mark.parametrize(("sampler", "eta"), [("dpmpp_2m", 0.0), ("ddim", 0.0), ("ddim", 0.7), ("euler_a", 0.0)])
def test_batch_equals_each_state_alone(pipe, pose, sampler, eta):
    """Different poses and seeds in one batch; ancestral noise (euler_a, ddim with eta) stays each image's own."""
    poses = [pose, mirror(pose), pose]
    states = [pipe.prepare(p, seed, 4, 2.0, sampler, None, eta) for p, seed in zip(poses, (3, 11, 12))]
    batched = denoise_batch(pipe, states)
    for state, done in zip(states, batched):
        alone = pipe.denoise(state)
        assert done.seed == state.seed and done.z_0.shape == alone.z_0.shape
        torch.testing.assert_close(done.z_0, alone.z_0, atol=1e-5, rtol=1e-4)


def test_batched_images_match_the_pipeline_call(pipe, pose):
    images, states = pipe(pose, seed=5, steps=3, num_images=2)
    batch_images, done = render_batch(pipe, [pipe.prepare(pose, seed, 3) for seed in (5, 6)])
    assert [d.seed for d in done] == [s.seed for s in states]
    for a, b in zip(images, batch_images):
        assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() <= 1


def test_mixed_settings_are_refused_by_denoise_batch(pipe, pose):
    with pytest.raises(ValueError, match="share"):
        denoise_batch(pipe, [pipe.prepare(pose, 0, 3), pipe.prepare(pose, 1, 4)])


def test_concurrent_requests_share_one_batch_and_get_their_own_images(pipe, pose):
    batcher = Batcher(pipe, max_images=5, window=5.0)  # the batch runs once 5 images are in, long before 5 s
    seeds, counts = [0, 20, 40], [1, 2, 2]
    calls = [lambda s=s, n=n: batcher(pose, seed=s, steps=3, num_images=n) for s, n in zip(seeds, counts)]
    started = time.perf_counter()
    results = run_threads(calls)
    assert time.perf_counter() - started < 4.0  # did not sit out the window
    assert batcher.batch_sizes == [5]
    for (images, states), seed, n in zip(results, seeds, counts):
        _, alone = pipe(pose, seed=seed, steps=3, num_images=n)
        assert [s.seed for s in states] == [seed + i for i in range(n)] and len(images) == n
        for a, b in zip(states, alone):
            torch.testing.assert_close(a.z_0, b.z_0, atol=1e-5, rtol=1e-4)


def test_an_edits_render_joins_a_generate_batch_and_a_step_range_runs_whole(pipe, pose):
    """`Batcher.render`: a plain edited state shares the batch of a generate request with its settings; a per-step
    style schedule (an edit's step range) runs whole; both give what `pipe.render` gives."""
    from models.directions import style_schedule

    _, (source,) = pipe(pose, seed=7, steps=3)
    edited = source.with_style(np.asarray(source.style) + 1.0)
    batcher = Batcher(pipe, max_images=2, window=5.0)  # runs once both are in
    (_, (generated,)), (images, done) = run_threads(
        [lambda: batcher(pose, seed=3, steps=3), lambda: batcher.render(edited)]
    )
    assert batcher.batch_sizes == [2] and done.seed == 7 and len(images) == 1
    torch.testing.assert_close(done.z_0, pipe.render(edited)[1].z_0, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(generated.z_0, pipe(pose, seed=3, steps=3)[1][0].z_0, atol=1e-5, rtol=1e-4)
    schedule = style_schedule(np.asarray(source.style), np.asarray(edited.style), (1, 2))
    _, whole = batcher.render(edited, style_at=schedule)
    assert batcher.batch_sizes[-1] == 1
    torch.testing.assert_close(whole.z_0, pipe.render(edited, style_at=schedule)[1].z_0)


def test_other_settings_wait_for_their_own_batch_oldest_first(pipe, pose):
    batcher = Batcher(pipe, max_images=8, window=0.6)
    finished: list[str] = []

    def ask(name: str, steps: int):
        out = batcher(pose, seed=1, steps=steps)
        finished.append(name)
        return out

    run_threads([lambda: ask("a", 3), lambda: ask("b", 4), lambda: ask("c", 3)], stagger=0.1)
    assert batcher.batch_sizes == [2, 1]  # a and c together (same settings), then b
    assert finished[-1] == "b"


def test_each_request_hears_every_step_and_its_own_previews(pipe, pose):
    batcher = Batcher(pipe, max_images=2, window=5.0, preview_every=2)
    heard: dict[int, list] = {0: [], 1: []}

    def ask(k: int):
        return batcher(pose, seed=k, steps=3, callback=lambda step, total, image: heard[k].append((step, total, image)))

    run_threads([lambda: ask(0), lambda: ask(1)])
    assert batcher.batch_sizes == [2]
    for events in heard.values():
        assert [(s, t) for s, t, _ in events] == [(1, 3), (2, 3), (3, 3)]
        assert [im is not None for *_, im in events] == [False, True, False]
    assert not np.array_equal(np.asarray(heard[0][1][2]), np.asarray(heard[1][1][2]))  # each its own image


def test_bad_input_is_refused_in_its_caller_and_the_batcher_still_serves(pipe, pose):
    batcher = Batcher(pipe, window=0.0)
    with pytest.raises(InputError):
        batcher(pose, seed=0, steps=3, sampler="no-such-sampler")
    images, states = batcher(pose, seed=0, steps=2)
    assert len(images) == 1 and states[0].z_0 is not None


class Gate:
    """A back end without a batched path whose calls wait for `open`; records how many run at once and in what order."""

    def __init__(self) -> None:
        self.open, self.running, self.most, self.order = threading.Event(), 0, 0, []
        self.lock = threading.Lock()

    def __call__(self, pose, callback=None, **kwargs):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.order.append(kwargs["seed"])
        self.open.wait(10)
        with self.lock:
            self.running -= 1
        return ["image"], [kwargs["seed"]]


def test_busy_refusal_names_the_limit_then_serves_again(pose):
    gate = Gate()
    batcher = Batcher(gate, max_waiting=20)
    first = threading.Thread(target=batcher, args=(pose,), kwargs={"seed": 1, "steps": 8})
    first.start()
    time.sleep(0.2)
    batcher_second = threading.Thread(target=batcher, args=(pose,), kwargs={"seed": 2, "steps": 8})
    batcher_second.start()  # 8 + 8 waiting: still under 20
    time.sleep(0.2)
    with pytest.raises(BusyError, match=r"busy.*16 image-steps queued, the limit is 20.*try again"):
        batcher(pose, seed=3, steps=8)
    gate.open.set()
    first.join(10)
    batcher_second.join(10)
    assert batcher(pose, seed=4, steps=8) == (["image"], [4])


def test_a_backend_without_batches_runs_one_request_at_a_time_in_arrival_order(pose):
    gate = Gate()
    batcher = Batcher(gate)
    threading.Timer(0.8, gate.open.set).start()
    results = run_threads([lambda k=k: batcher(pose, seed=k, steps=2) for k in range(4)], stagger=0.1)
    assert results == [(["image"], [k]) for k in range(4)]
    assert gate.most == 1 and gate.order == [0, 1, 2, 3]


def test_cost_cap_names_the_limit():
    limit = settings.MAX_IMAGE_STEPS
    steps = limit // 2 + 1
    with pytest.raises(InputError, match=rf"{steps} x 2 = {2 * steps}; the limit is {limit}"):
        settings.check_generation(0, steps, 2.0, "ddim", 2)
    assert settings.check_generation(0, limit // 2, 2.0, "ddim", 2)["steps"] == limit // 2


def test_cost_cap_through_the_api_handler(pose):
    import gradio as gr

    from ui.fake import FakePipeline

    run = app_generate.generate_handler(lambda: FakePipeline(size=64), api=True)
    with pytest.raises(gr.Error, match=f"the limit is {settings.MAX_IMAGE_STEPS}"):
        list(run(json.dumps(common.default_value()), 0, settings.MAX_STEPS, "ddim", 2.0, settings.MAX_NUM_IMAGES))


def test_the_app_batches_concurrent_generate_calls(pipe, monkeypatch):
    """Four API users at once: the generate event lets them all in, and the model's batcher runs them together."""
    gradio_client = pytest.importorskip("gradio_client")
    from ui.server import build_demo, launch_local

    monkeypatch.setattr(settings, "BATCH_WINDOW_S", 3.0)  # a loaded machine may spread the arrivals
    monkeypatch.setattr(settings, "BATCH_IMAGES", 4)  # ... but four in runs the batch at once
    app_pipe = tiny_pipeline(seed=1)  # a pipeline of its own: a fresh batcher with these settings
    demo = launch_local(build_demo(lambda: app_pipe, model_status=""))
    try:
        clients = [gradio_client.Client(demo.local_url, verbose=False) for _ in range(4)]
        text = json.dumps(common.default_value())
        calls = [
            lambda c=c, k=k: c.predict(text, 100 * k, 3, "dpmpp_2m", 2.0, 1, api_name="/generate")
            for k, c in enumerate(clients)
        ]
        results = run_threads(calls)
    finally:
        demo.close()
    assert all(not isinstance(r, Exception) for r in results), results
    assert [r[3] for r in results] == [0, 100, 200, 300]  # the seed used is the seed given
    sizes = batcher_for(app_pipe).batch_sizes
    assert sum(sizes) == 4 and max(sizes) > 1, sizes
