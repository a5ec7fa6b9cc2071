"""Micro-batching of generate requests: requests that share (steps, sampler, guidance, eta, size) and arrive within a
short window run as one batch through the UNet, oldest request first, on one worker thread per pipeline.

    batcher = Batcher(pipe, max_images=8, window=0.05)
    images, states = batcher(pose, seed=0, steps=8)     # as pipe(...): blocks until its batch is done
    images, state = batcher.render(edited_state)        # as pipe.render(...): an edit's re-render joins a batch too

Why: a UNet pass over 8 images costs less than 8 passes over one (larger matrix products, fewer calls; measured
on this repository's 2-core machine, one torch thread, the CPU shared with training: 1.15-1.4x the images per
second, `python -m benchmarks.speed throughput`), and one request per pass made a crowd wait in a line. Each image keeps
its own noise: z_T and s come from its seed (`PosePipeline.prepare`) and ancestral noise from its own generator
(diffusers' `randn_tensor` draws a list of generators one image at a time), so a batched image equals the
single-request one up to float rounding.

An edit's re-render (`Batcher.render`: another s, the same noise) is a request too: it joins the batch of the
generate requests that share its settings, rather than taking the cores beside it.

One worker thread runs every batch, so concurrent requests share the cores in turn rather than all at once, and
a back end without a batched path (the fork, ControlNet, the demo stand-in) still runs its requests in arrival
order, one at a time. Work waiting beyond `max_waiting` image-steps is refused with one sentence (busy, try again).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from models.backend import DEFAULT_SAMPLER, PREVIEW_EVERY
from models.errors import InputError

log = logging.getLogger("pose_studio.batching")

# the keyword arguments the batched path takes (PosePipeline.__call__'s); a request with others runs whole
BATCHABLE = frozenset({"seed", "steps", "guidance", "sampler", "style", "eta", "num_images", "size", "fast", "draft"})
IDLE_EXIT_S = 30.0  # a worker with nothing to do for this long ends (a later request starts another)


class BusyError(InputError):
    """The server has more work waiting than it takes on: refused with one sentence, try again later."""


def can_batch(pipe: Any) -> bool:
    """Whether `pipe` has the batched path (`models.pipeline.PosePipeline` and subclasses)."""
    try:
        from models.pipeline import PosePipeline
    except ImportError:  # pragma: no cover - torch and diffusers are installed wherever a model runs
        return False
    return isinstance(pipe, PosePipeline)


@torch.no_grad()
def denoise_batch(
    pipe: Any,
    states: list[Any],
    on_step: Callable[[int, int, torch.Tensor], None] | None = None,
) -> list[Any]:
    """`PosePipeline.denoise` for several states sharing steps, sampler, guidance, eta, size and `fast`, in one batch.

    `on_step(step, total, z0_estimates)` is called after every sampler step with the batch's z_0 estimates."""
    from models.backend import GenerationState
    from models.samplers import sample_loop

    cfg = states[0].settings
    keys = ("steps", "sampler", "guidance", "eta", "size", "fast")
    if any(tuple(s.settings.get(k) for k in keys) != tuple(cfg.get(k) for k in keys) for s in states):
        raise ValueError("denoise_batch: every state must share steps, sampler, guidance, eta, size and fast")
    # each image's generator advanced past its z_T and s, as `denoise` does: its ancestral noise is its own
    generators = [pipe._generator(s.seed, tuple(s.z_T.shape))[0] for s in states]
    cond = torch.cat([pipe.condition(s.pose, cfg["size"]) for s in states])
    style = np.stack([np.asarray(s.style, dtype=np.float32) for s in states])
    s = torch.as_tensor(style).to(pipe.device, pipe.dtype)
    z_T = torch.cat([s_.z_T for s_ in states]).to(pipe.device, pipe.dtype)
    denoiser, scheduler = pipe.sampler(cfg)

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return denoiser(x, t, cond, s)

    z0 = sample_loop(
        model_fn,
        scheduler,
        z_T,
        cfg["steps"],
        generator=generators,
        eta=cfg["eta"],
        callback=on_step,
        z_mean=pipe.start_mean(cond, s),
    )
    z0 = z0.float().cpu()
    return [
        GenerationState(st.pose, st.seed, st.style, st.z_T, dict(st.settings), z0[i : i + 1])
        for i, st in enumerate(states)
    ]


def render_batch(
    pipe: Any, states: list[Any], on_step: Callable[[int, int, torch.Tensor], None] | None = None
) -> tuple[list[Any], list[Any]]:
    """`PosePipeline.render` for a batch of compatible states: (images, finished states), in the states' order."""
    done = denoise_batch(pipe, states, on_step)
    decoded = decode_chunks(pipe, torch.cat([d.z_0 for d in done]))
    return [pipe.picture(d, image) for d, image in zip(done, decoded)], done


def decode_chunks(pipe: Any, latents: torch.Tensor, chunk: int = 4) -> list[Any]:
    """`pipe.decode` a few latents at a time: the decoder's 128-px activations of 8 images at once outgrow the CPU's
    caches (measured here, one torch thread: 8 at once cost 1.7x as much per image as 1, 2 or 4)."""
    return [image for i in range(0, latents.shape[0], chunk) for image in pipe.decode(latents[i : i + chunk])]


def batch_key(steps: int, settings: dict[str, Any]) -> tuple:
    """What requests must share to run in one batch: steps, sampler, guidance, eta, size and `fast`."""
    s = settings
    return (steps, s["sampler"], float(s["guidance"]), float(s["eta"]), int(s["size"]), bool(s.get("fast")))


@dataclass
class Job:
    """One request waiting for (or in) a batch."""

    pose: Any
    kwargs: dict[str, Any]
    callback: Callable | None
    states: list[Any]  # prepared before queueing (batched path); empty for a back end run whole
    key: tuple
    cost: int  # image-steps
    render_of: Any = None  # a prepared state rendered whole (`Batcher.render`), with `render_options`
    render_options: dict[str, Any] = field(default_factory=dict)
    arrived: float = field(default_factory=time.perf_counter)
    done: threading.Event = field(default_factory=threading.Event)
    result: tuple[list, list] | None = None
    error: BaseException | None = None


class Batcher:
    """Runs `pipe`'s generate calls through one worker, batching compatible requests (module docstring).

    Called like the pipeline with keywords: `batcher(pose, seed=0, steps=8, num_images=2, callback=cb) -> (images,
    states)`; `callback(step, total, preview)` as the pipeline's, except that all of a request's images advance
    together (the preview is its first image's)."""

    def __init__(
        self,
        pipe: Any,
        max_images: int = 8,
        window: float = 0.05,
        max_waiting: int | None = None,
        preview_every: int = PREVIEW_EVERY,
    ) -> None:
        self.pipe = pipe
        self.max_images = max(1, int(max_images))
        self.window = max(0.0, float(window))
        self.max_waiting = max_waiting  # image-steps queued or running; None: no limit
        self.preview_every = max(1, int(preview_every))
        self.batched = can_batch(pipe)
        self._jobs: list[Job] = []
        self._running = 0  # image-steps in the batch now running
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self.batch_sizes: list[int] = []  # images per batch run, most recent last (the last 256)

    # -- the caller's side ---------------------------------------------------------------------------
    def __call__(self, pose: Any, callback: Callable | None = None, **kwargs: Any) -> tuple[list, list]:
        """Queue one request (the pipeline's keyword arguments: seed, steps, guidance, sampler, style, eta,
        num_images, size, fast, draft) and wait for its batch: (images, states), image i from seed `seed + i`."""
        states: list[Any] = []
        steps, num_images = int(kwargs.get("steps", 8)), int(kwargs.get("num_images", 1))
        if self.batched and set(kwargs) <= BATCHABLE:
            pipe = self.pipe
            args = {"pose": pose, "seed": kwargs["seed"], "steps": steps, "guidance": kwargs.get("guidance", 2.0),
                    "sampler": kwargs.get("sampler", DEFAULT_SAMPLER), "style": kwargs.get("style"),
                    "eta": kwargs.get("eta", 0.0), "size": kwargs.get("size") or pipe.native_size}  # fmt: skip
            for flag in ("fast", "draft"):  # only when set: a pipeline without the option still takes the rest
                if kwargs.get(flag):
                    args[flag] = True
            pipe.check_inputs(num_images=num_images, **args)
            args["guidance"], args["eta"] = float(args["guidance"]), float(args["eta"])
            states = [pipe.prepare(**{**args, "seed": int(args["seed"]) + i}) for i in range(num_images)]
            key = batch_key(steps, args)
        else:
            # never shared: another back end, or an extra (a model wrapper) the batched path does not take
            key = ("whole", id(kwargs))
        job = Job(pose, kwargs, callback, states, key, cost=steps * num_images)
        self._submit(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.result is not None  # set with done
        return job.result

    def render(self, state: Any, callback: Callable | None = None, **options: Any) -> tuple[list, Any]:
        """Queue the render of a prepared state (an edit's: another s, the same noise) and wait: (images, state), as
        `pipe.render`. A plain state joins the batch of the generate requests that share its settings; one with
        render options (a per-step style schedule, a model wrapper) or on a back end without the batched path runs
        whole, in its turn."""
        cfg = state.settings
        cost = int(cfg.get("steps", 1))
        if self.batched and not options and state.z_0 is None:
            key = batch_key(cost, cfg)
            job = Job(state.pose, {}, callback, [state], key, cost=cost)
        else:
            job = Job(state.pose, {}, callback, [], ("whole", id(state)), cost, render_of=state, render_options=options)
        self._submit(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.result is not None  # set with done
        images, states = job.result
        return images, states[0]

    def _submit(self, job: Job) -> None:
        with self._cond:
            waiting = self._running + sum(j.cost for j in self._jobs)
            # an idle server takes any single request the limits allow, however large
            if self.max_waiting is not None and waiting and waiting + job.cost > self.max_waiting:
                raise BusyError(
                    "The server is busy: other people's pictures are being drawn "
                    f"({waiting} image-steps queued, the limit is {self.max_waiting}); please try again in a minute."
                )
            self._jobs.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="pose-studio-batcher", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    # -- the worker's side ---------------------------------------------------------------------------
    def _take(self) -> list[Job] | None:
        """The next batch: the oldest request and the later ones that share its key, up to max_images images.
        Waits up to `window` after the oldest arrived for company; None once idle for IDLE_EXIT_S."""
        with self._cond:
            idle_since = time.perf_counter()
            while not self._jobs:
                self._cond.wait(timeout=IDLE_EXIT_S)
                if not self._jobs and time.perf_counter() - idle_since >= IDLE_EXIT_S:
                    self._thread = None  # the next request starts another worker
                    return None
            while True:
                first = self._jobs[0]
                batch, images = self._select(first)
                left = first.arrived + self.window - time.perf_counter()
                if left <= 0 or images >= self.max_images or not first.states:
                    break
                self._cond.wait(timeout=left)
            for job in batch:
                self._jobs.remove(job)
            self._running = sum(j.cost for j in batch)
            return batch

    def _select(self, first: Job) -> tuple[list[Job], int]:
        batch, images = [first], len(first.states)
        if not first.states:  # run whole
            return batch, images
        for job in self._jobs[1:]:
            if job.key == first.key and images + len(job.states) <= self.max_images:
                batch.append(job)
                images += len(job.states)
        return batch, images

    def _work(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                job = batch[0]
                if job.states:
                    self._run_batch(batch)
                elif job.render_of is not None:
                    images, done = self.pipe.render(job.render_of, job.callback, **job.render_options)
                    job.result = (images, [done])
                else:
                    job.result = self.pipe(job.pose, callback=job.callback, **job.kwargs)
            except BaseException as err:  # noqa: BLE001 - handed to every waiting caller, which raises it
                for job in batch:
                    if job.result is None:
                        job.error = err
            finally:
                with self._cond:
                    self._running = 0
                    self.batch_sizes = [*self.batch_sizes[-255:], sum(max(len(j.states), 1) for j in batch)]
                for job in batch:
                    if job.result is None and job.error is None:
                        job.error = RuntimeError("the batch ended without a result")
                    job.done.set()

    def _run_batch(self, batch: list[Job]) -> None:
        states = [s for job in batch for s in job.states]
        starts = np.cumsum([0] + [len(job.states) for job in batch])
        watchers = [(job, int(starts[k])) for k, job in enumerate(batch) if job.callback is not None]

        def on_step(step: int, total: int, z0: torch.Tensor) -> None:
            previews: list[Any] = [None] * len(watchers)
            if watchers and step % self.preview_every == 0 and step < total:
                # the first image of every request that shows previews
                previews = decode_chunks(self.pipe, z0[[start for _, start in watchers]])
            for (job, _), preview in zip(watchers, previews):
                job.callback(step, total, preview)

        started = time.perf_counter()
        images, done = render_batch(self.pipe, states, on_step if watchers else None)
        if len(batch) > 1:
            log.info(
                "one batch: %d requests, %d images in %.2f s", len(batch), len(states), time.perf_counter() - started
            )
        for k, job in enumerate(batch):
            lo, hi = int(starts[k]), int(starts[k + 1])
            job.result = (images[lo:hi], done[lo:hi])


_BATCHERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_BATCHERS_LOCK = threading.Lock()


def batcher_for(pipe: Any, **options: Any) -> Batcher:
    """The one Batcher of `pipe` (made with `options` on first use), so every request to a pipeline shares it."""
    with _BATCHERS_LOCK:
        try:
            batcher = _BATCHERS.get(pipe)
        except TypeError:  # not weak-referenceable: a batcher of its own each time (no sharing, still correct)
            return Batcher(pipe, **options)
        if batcher is None:
            batcher = _BATCHERS[pipe] = Batcher(pipe, **options)
        return batcher
