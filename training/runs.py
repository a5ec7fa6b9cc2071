"""What the trainers share besides their presets: the run folder and its log, the training loops, checkpoints,
and the publishing of the plain trainers' weights."""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.presets import lr_factor, parse_with_preset, preset_dict, run_progress


def synth_range(text: str) -> tuple[int, int]:
    """`--synth START:END` -> (START, END - START): samples of a `training.synth` data set, rendered in memory."""
    try:
        a, b = (int(v) for v in text.split(":"))
    except ValueError:
        raise SystemExit(f"--synth takes START:END (e.g. 0:3000), not {text!r}.") from None
    if b <= a:
        raise SystemExit("--synth: END must be greater than START.")
    return a, b - a


def pool_map(fn: Callable[[Any], Any], jobs: list[Any], workers: int = 2, chunksize: int = 16) -> list[Any]:
    """`[fn(j) for j in jobs]`, in `workers` processes when more than one (`fn` must be a module-level function)."""
    if workers <= 1:
        return [fn(j) for j in jobs]
    from multiprocessing import Pool

    with Pool(workers) as pool:
        return pool.map(fn, jobs, chunksize=chunksize)


# The options that every trainer of `start_run` spells alike: it takes their flags alone.
COMMON_OPTIONS = {
    "--out": {"required": True, "help": "run folder"},
    "--resume": {"action": "store_true", "help": "continue from the latest checkpoint in --out"},
    "--workers": {"type": int, "default": 0, "help": "processes decoding the images (0: one per CPU)"},
}


@dataclass
class Run:
    """A trainer's run: its command line and preset, `--out`, logs and Accelerator; for the trainers of `start_run`
    also where training stands, the loop and the checkpoints `OUT/checkpoints/step_NNNNNNN/`."""

    args: argparse.Namespace
    cfg: Any
    out: Path
    log: RunLog
    accelerator: Any = None  # accelerate's, in the trainers that scale to several GPUs
    step: int = 0
    elapsed: float = 0.0  # wall seconds trained before this process's loop
    losses: dict[str, float] = field(default_factory=dict)  # the mean losses of the last log line
    t_start: float = field(default_factory=time.time)  # when this process's loop started
    start_step: int = 0

    @property
    def main(self) -> bool:
        """Whether this is the process that samples, saves and logs."""
        return self.accelerator is None or self.accelerator.is_main_process

    def seconds(self) -> float:
        """Wall seconds trained, over all resumed runs."""
        return self.elapsed + time.time() - self.t_start

    def record(self, record: dict[str, Any]) -> None:
        """Print one JSON log line and append it to `OUT/log.jsonl`."""
        text = json.dumps(record)
        print(text, flush=True)
        with open(self.out / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(text + "\n")

    def steps_per_second(self) -> float:
        """This process's training speed."""
        return (self.step - self.start_step) / max(time.time() - self.t_start, 1e-9)

    def train(self, trainer: Any) -> Path:
        """Call `trainer.step(step, lr)`, which returns the step's loss parts, until `cfg.steps` steps or
        `cfg.minutes` of wall time (warm-up, then a cosine rate over whichever ends first); a log line every
        `log_every` steps and, on the main process, `trainer.sample()` every `sample_every` steps and at the end,
        `trainer.checkpoint()` every `checkpoint_every` but at the end. Then, on the main process,
        `trainer.save_final(seconds)` (the seconds trained, over all resumed runs). Returns `OUT/final`."""
        cfg, window = self.cfg, LossWindow()
        self.t_start, self.start_step = time.time(), self.step
        progress = run_progress(self.step, cfg.steps, self.elapsed, cfg.minutes)
        while progress < 1.0:
            lr = cfg.lr * lr_factor(self.step, cfg.warmup, progress)
            parts = trainer.step(self.step, lr)
            self.step += 1
            progress = run_progress(self.step, cfg.steps, self.seconds(), cfg.minutes)
            window.add(parts)
            if self.step % cfg.log_every == 0 or progress >= 1.0:
                self.losses, line = window.flush(self.step, cfg.steps, lr, progress)
                self.log(line)
            if self.main and (self.step % cfg.sample_every == 0 or progress >= 1.0):
                trainer.sample()
            if self.main and self.step % cfg.checkpoint_every == 0 and progress < 1.0:
                trainer.checkpoint()
        seconds = self.seconds()
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()
        return trainer.save_final(seconds) if self.main else self.out / "final"

    def latest_checkpoint(self) -> Path | None:
        """With `--resume`, the newest checkpoint that finished saving (has `step.json`); else None."""
        if not self.args.resume:
            return None
        done = [f for f in checkpoints_by_age(self.out) if (f / "step.json").exists()]
        return done[-1] if done else None

    def read_checkpoint(self, ckpt: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        """A checkpoint's `optimizer.pt` and `step.json`; the run takes its step, seconds and losses from the latter."""
        trainer = torch.load(ckpt / "optimizer.pt", weights_only=True)
        meta = json.loads((ckpt / "step.json").read_text())
        self.step, self.elapsed, self.losses = meta["step"], meta["elapsed"], meta.get("losses", {})
        self.log(f"resumed from {ckpt} at step {self.step}")
        return trainer, meta

    def write_checkpoint(self, models: dict[str, Any], trainer: dict[str, Any], meta: dict[str, Any]) -> None:
        """A checkpoint: each model in its sub-folder (safetensors), `optimizer.pt` (`trainer`) and, last, `step.json`
        (the step and `meta`), which marks it complete; only the newest two checkpoints stay."""
        folder = self.out / "checkpoints" / f"step_{self.step:07d}"
        for name, model in models.items():
            model.save_pretrained(folder / name, safe_serialization=True)
        torch.save(trainer, folder / "optimizer.pt")
        (folder / "step.json").write_text(json.dumps({"step": self.step, **meta}))
        for old in checkpoints_by_age(self.out)[:-2]:
            shutil.rmtree(old)


def checkpoints_by_age(out: Path) -> list[Path]:
    """`OUT/checkpoints/step_*`, oldest first by the time each was written, not by its step: a run started afresh
    (`--init`) in a folder that holds an earlier run's checkpoints counts from 0 again, and its checkpoints are the
    newest."""
    return sorted((out / "checkpoints").glob("step_*"), key=lambda f: (f.stat().st_mtime, f.name))


def device_precision(wanted: str) -> str:
    """The mixed precision accelerate can run here: fp16 and bf16 on a GPU; bf16 on a CPU whose oneDNN has bf16
    kernels (AVX-512 BF16 or AMX: about 1.8x faster UNet steps on the 2-core EPYC, docs/EXPERIMENTS.md); else "no"."""
    if torch.cuda.is_available() or wanted == "no":
        return wanted
    cpu_bf16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return "bf16" if wanted == "bf16" and cpu_bf16 else "no"


def start_run(
    name: str, doc: str, presets: dict[str, Any], argv: list[str] | None, options: list, accelerate: bool = False
) -> Run:
    """Parse a trainer's command line (`options`: (flag, argparse keywords), or a flag of COMMON_OPTIONS; then
    the preset's fields), set torch's threads, make `--out` and its log, whose first line is the preset; with
    `accelerate` also the Accelerator (its main process logs)."""
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    for option in options:
        flag, keywords = (option, COMMON_OPTIONS[option]) if isinstance(option, str) else option
        parser.add_argument(flag, **keywords)
    args, cfg = parse_with_preset(parser, presets, argv)
    torch.set_num_threads(cfg.num_threads)
    accelerator = None
    if accelerate:
        from accelerate import Accelerator

        accelerator = Accelerator(mixed_precision=device_precision(cfg.mixed_precision))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = Run(args, cfg, out, RunLog(out / "log.txt", accelerator is None or accelerator.is_main_process), accelerator)
    run.log(f"{name} preset={args.preset} {json.dumps(preset_dict(cfg))}")
    if accelerator is not None:
        run.log(f"device {accelerator.device}, mixed precision {accelerator.mixed_precision}")
    return run


# -- what the diffusion trainers share ------------------------------------------------------------
@torch.no_grad()
def cache_latents(
    vae: torch.nn.Module, images: np.ndarray, cache: Path, key: str, flip: bool, log: RunLog, batch_size: int = 64
) -> torch.Tensor:
    """Scaled latents `(N, 1 or 2, C, h, w)` of the images (and their mirrors), from `cache` when `key` matches."""
    from models.autoencoder import encode
    from training.data import to_tensor

    file, meta = cache / "latents.npy", cache / "latents.json"
    if file.exists() and meta.exists() and json.loads(meta.read_text()).get("key") == key:
        log(f"latents from cache {file}")
        return torch.from_numpy(np.load(file))
    t0 = time.time()
    out = []
    device = vae.device
    for i in range(0, len(images), batch_size):
        x = to_tensor(images[i : i + batch_size]).to(device)
        views = [x, x.flip(-1)] if flip else [x]
        out.append(torch.stack([encode(vae, v).float().cpu() for v in views], dim=1))
        if i // batch_size % 20 == 0:
            log(f"encoding latents {i + len(x)}/{len(images)} ({time.time() - t0:.0f}s)")
    latents = torch.cat(out)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(file, latents.numpy())
    meta.write_text(json.dumps({"key": key, "shape": list(latents.shape)}))
    log(f"encoded {len(images)} images in {time.time() - t0:.0f}s; latent std {latents.std():.3f}")
    return latents


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter."""
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1.0 - decay)


# -- the plain trainers (no Accelerator), whose resumable state is `OUT/checkpoint/` ---------------
def plain_run(name: str, args: argparse.Namespace, cfg: Any) -> Run:
    """The run of a plain trainer (`parse_with_preset`'s `args` and `cfg`): torch's threads (`cfg.threads`), `--out`
    and its logs, whose first line is the preset."""
    torch.set_num_threads(cfg.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = Run(args, cfg, out, RunLog(out / "log.txt"))
    run.log(f"{name} preset={args.preset} {json.dumps(preset_dict(cfg))}")
    return run


def plain_parser(module: str, doc: str, data_help: str, out_help: str) -> argparse.ArgumentParser:
    """The command line of a JSON-logging trainer, which starts with `--data`, `--out` and `--resume` (its preset's
    fields follow, from `parse_with_preset`)."""
    p = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n")[0])
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--out", required=True, help=out_help)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint when it exists")
    return p


def labelled_images(
    root: str | Path, labels: str, size: int, max_images: int = 0
) -> tuple[list[str], np.ndarray, list[tuple[int, int]]]:
    """The sorted names of a synth folder's `images/NAME.png` + `LABELS/NAME.json` pairs (at most `max_images`), the
    images as uint8 `(N, size, size, 3)` (resized bilinearly where needed) and each image's own size."""
    from PIL import Image

    root = Path(root)
    names = sorted(p.stem for p in (root / labels).glob("*.json"))
    names = [n for n in names if (root / "images" / f"{n}.png").is_file()]
    if max_images:
        names = names[:max_images]
    if not names:
        raise SystemExit(f"no images/NAME.png + {labels}/NAME.json pairs under {root}")
    images, frames = np.empty((len(names), size, size, 3), dtype=np.uint8), []
    for i, name in enumerate(names):
        with Image.open(root / "images" / f"{name}.png") as im:
            im = im.convert("RGB")
            frames.append(im.size)
            images[i] = np.asarray(im if im.size == (size, size) else im.resize((size, size), Image.BILINEAR))
    return names, images, frames


def save_trainer_checkpoint(out: Any, model: Any, optimizer: Any, state: dict[str, Any]) -> None:
    """Write OUT/checkpoint atomically: the model (`save_pretrained`) and `trainer_state.pt` (optimiser + `state`)
    go to a folder written aside, which is then renamed over the old one, so a kill never leaves half a checkpoint."""
    out = Path(out)
    tmp, final, old = out / "checkpoint.tmp", out / "checkpoint", out / "checkpoint.old"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    torch.save({"optimizer": optimizer.state_dict(), **state}, tmp / "trainer_state.pt")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def resume_trainer(
    run: Run,
    cls: Any,
    build: Callable[[], Any],
    init: str | None = None,
    device: Any = None,
    **adamw: Any,
) -> tuple[Any, torch.optim.AdamW, dict[str, Any]]:
    """The model of `OUT/checkpoint` when `--resume` finds one, else the trained one in `init`, else `build()`, on
    `device` in training mode; its AdamW optimiser (`adamw` options); the checkpoint's state ({} for a new run)."""
    ckpt = run.out / "checkpoint"
    if run.args.resume and (ckpt / "config.json").is_file():
        model = cls.from_pretrained(str(ckpt))
    else:
        model = cls.from_pretrained(str(init)) if init else build()
    model = (model if device is None else model.to(device)).train()
    optimizer = torch.optim.AdamW(model.parameters(), **adamw)
    state: dict[str, Any] = {}
    if run.args.resume and (ckpt / "trainer_state.pt").is_file():
        state = torch.load(ckpt / "trainer_state.pt", weights_only=True, map_location=device)
        optimizer.load_state_dict(state["optimizer"])
    return model, optimizer, state


def budget_loop(
    run: Run,
    model: Any,
    optimizer: Any,
    batch_loss: Callable[[], Any],
    report: Callable[[], Any],
    state: dict[str, Any],
) -> tuple[int, float]:
    """Optimise `batch_loss()` until `--steps` or `--minutes` of wall time (0: no time budget), a 50-step warm-up then
    a cosine rate (peak `--lr`) over whichever ends first; a log line every 50 steps, `OUT/checkpoint` and `report()`
    every `--checkpoint-every`. `state`: the resumed checkpoint's ({} for a new run). Returns (step, seconds)."""
    a, step = run.cfg, state.get("step", 0)
    t_start = time.time() - state.get("seconds", 0.0)
    while step < a.steps and (not a.minutes or time.time() - t_start < a.minutes * 60):
        progress = run_progress(step, a.steps, time.time() - t_start, a.minutes)
        for g in optimizer.param_groups:
            g["lr"] = a.lr * lr_factor(step, 50, progress, floor=0.0)
        loss = batch_loss()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        if step % 50 == 0:
            run.log(f"step {step} loss {loss.item():.4f} lr {optimizer.param_groups[0]['lr']:.2e}")
        if step % a.checkpoint_every == 0:
            save_trainer_checkpoint(run.out, model, optimizer, {"step": step, "seconds": time.time() - t_start})
            run.log(f"step {step} held-out {report()}")
    return step, time.time() - t_start


def seeded_loop(
    run: Run,
    model: Any,
    optimizer: Any,
    batch_loss: Callable[[Any], tuple[Any, dict[str, float]]],
    evaluate: Callable[[int], None],
    state: dict[str, Any],
    floor: float,
    clock: Callable[[], float],
    keys: tuple[str, str],
) -> tuple[int, float, float]:
    """Optimise `batch_loss(rng)` (the loss and more log fields), the batch of step t drawn with
    `default_rng([--seed, t])` so that a resumed run draws the same, until `--steps` steps or `--minutes` of `clock`
    (warm-up, then a cosine rate to `floor` over whichever ends first); JSON log lines every `--log-every` steps,
    `evaluate(step)` every `--eval-every` and `OUT/checkpoint` every `--checkpoint-every`, all three also at the end.
    `state`: the resumed checkpoint's ({} for a new run); `keys`: the budget seconds' names in it and in the log.
    Returns the step, the wall seconds and the budget seconds."""
    a, (spent_key, log_key) = run.cfg, keys
    step, elapsed0, spent0 = int(state.get("step", 0)), float(state.get("elapsed", 0)), float(state.get(spent_key, 0))
    start, clock_start, elapsed, spent, losses = time.perf_counter(), clock(), elapsed0, spent0, []
    done = run_progress(step, a.steps, spent, a.minutes) >= 1.0
    while not done:
        loss, fields = batch_loss(np.random.default_rng([a.seed, step]))
        progress = run_progress(step, a.steps, spent, a.minutes)
        # the warm-up multiplied out in this order: to the bit the rates of the checkpoints these runs resume from
        lr = a.lr * (step + 1) / a.warmup if step < a.warmup else a.lr * lr_factor(step, a.warmup, progress, floor)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        losses.append(loss.item())
        elapsed, spent = elapsed0 + time.perf_counter() - start, spent0 + clock() - clock_start
        progress = run_progress(step, a.steps, spent, a.minutes)
        done = progress >= 1.0
        if step % a.log_every == 0 or done:
            record = {"step": step, "loss": round(float(np.mean(losses)), 4), **fields, "lr": round(lr, 6)}
            run.record(
                record | {"elapsed_s": round(elapsed, 1), log_key: round(spent, 1), "progress": round(progress, 3)}
            )
            losses = []
        if step % a.eval_every == 0 or done:
            evaluate(step)
        if step % a.checkpoint_every == 0 or done:
            save_trainer_checkpoint(run.out, model, optimizer, {"step": step, "elapsed": elapsed, spent_key: spent})
    return step, elapsed, spent


def save_final(run: Run, model: Any, name: str, step: int, seconds: float, **fields: Any) -> None:
    """`OUT/final/` (the model, in eval mode) and `OUT/training_info.json` (the run's figures, preset and `fields`)."""
    model.eval().save_pretrained(run.out / "final")
    info = {"model": name, "steps": step, "seconds": round(seconds, 1), "machine": machine(), **fields}
    info["preset"] = preset_dict(run.cfg)
    (run.out / "training_info.json").write_text(json.dumps(info, indent=1))


def publish_weights(run: str | Path, dest: str | Path) -> dict[str, Any]:
    """Copy `RUN/final/` (config.json, safetensors) to `dest`, readable by all and without the training machine's
    path, and `RUN/training_info.json`, which it returns (for the model card)."""
    run, dest = Path(run), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "diffusion_pytorch_model.safetensors", "training_info.json"):
        shutil.copy2(run / ("" if name == "training_info.json" else "final") / name, dest / name)
        (dest / name).chmod(0o644)  # save_pretrained may write 0600; shipped files are for everyone
    config = json.loads((dest / "config.json").read_text())
    config.pop("_name_or_path", None)  # a path on the training machine (set when a run was resumed)
    (dest / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return json.loads((run / "training_info.json").read_text())


def machine() -> str:
    """A short description of the machine (for training_info.json)."""
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"


class RunLog:
    """Print a line and append it to `OUT/log.txt` (main process only)."""

    def __init__(self, path: Any, enabled: bool = True):
        self.path, self.enabled = path, enabled

    def __call__(self, text: str) -> None:
        """Log one line with a timestamp."""
        if not self.enabled:
            return
        line = f"[{time.strftime('%H:%M:%S')}] {text}"
        print(line, flush=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


class LossWindow:
    """Running means of the loss parts since the last log line, and the steps per second over it."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0
        self.t0 = time.time()

    def add(self, parts: dict[str, float]) -> None:
        """Count one step's loss parts."""
        for k, v in parts.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1

    def flush(self, step: int, total: int, lr: float, progress: float) -> tuple[dict[str, float], str]:
        """The window's mean losses and its log line; starts a new window."""
        n = max(self.count, 1)
        losses = {k: v / n for k, v in self.sums.items()}
        rate = n / max(time.time() - self.t0, 1e-9)
        line = (
            f"step {step}/{total} "
            + " ".join(f"{k}={v:.4f}" for k, v in losses.items())
            + f" lr={lr:.2e} {rate:.3f} steps/s progress {100 * progress:.1f}%"
        )
        self.__init__()
        return losses, line
