"""Train the keypoint detector (`models/detector.py`) on a synth data folder, on one CPU thread.

    python -m training.synth --out data/det --n 20000 --seed 1
    nohup python -m training.train_detector --data data/det --out runs/detector > runs/detector.log 2>&1 &
    python -m training.train_detector --data data/det --out runs/detector --resume   # after a stop
    python -m training.synth --out data/det_wide --n 20000 --seed 12 --wide       # poses as varied as photos
    python -m training.train_detector --data data/det_wide --out runs/detector_wide --init weights/detector

The detector reads GENERATED images, so training degrades the renders the ways a small latent
autoencoder does: blur, down-and-up resampling, JPEG-like blocking, colour shifts and noise, on top
of small affine moves and mirroring (with left/right labels swapped). The run ends at `--steps` or
after `--minutes` of this process's CPU time, whichever comes first, and the cosine learning rate
follows that progress, so it always ends annealed. CPU time, not wall time: on a shared machine the
run takes longer but learns as much as on a quiet one (wall time is logged too). Every `--checkpoint-every` steps
`OUT/checkpoint/` holds the weights, optimiser state, step and training seconds; `--resume` carries
on from it (the batches and augmentations of step `t` depend only on `--seed` and `t`). PCK@0.1
is measured on held-out renders (`training.eval`'s reserved data set seed `DETECTOR_VAL_SEED`)
unless `--val-data` names a folder. At the end `OUT/final/` (config.json +
diffusion_pytorch_model.safetensors), `OUT/training_info.json` and `OUT/log.jsonl`.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from models.detector import KeypointDetector, gaussian_targets, heatmap_loss
from models.pose import FLIP_INDEX, VISIBLE, Pose, load
from training.eval import DETECTOR_VAL_SEED, heldout_renders, pck_counts
from training.presets import save_trainer_checkpoint

# Defaults sized on this machine: ~0.5-0.6 CPU seconds a step of 32 on one thread, so 2400 steps or
# the 22 CPU-minute budget (whichever comes first) is a ~22 minute run on a quiet core.
DEFAULTS = {
    "steps": 2400,
    "minutes": 22.0,
    "batch": 32,
    "lr": 2e-3,
    "warmup": 100,
    "weight_decay": 1e-4,
    "hidden_weight": 0.25,
    "vis_weight": 0.5,
    "checkpoint_every": 200,
    "eval_every": 400,
    "log_every": 25,
    "val_n": 256,
}


# -- data -----------------------------------------------------------------------------------------
def load_folder(root: str | Path, size: int, max_images: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """All `images/*.png` with their `keypoints/*.json` of a synth folder: uint8 (N, S, S, 3) and
    float32 (N, 17, 3) normalised keypoints (resized to `size` when the folder holds another size)."""
    root = Path(root)
    names = sorted(p.stem for p in (root / "keypoints").glob("*.json"))
    names = [n for n in names if (root / "images" / f"{n}.png").is_file()]
    if max_images:
        names = names[:max_images]
    if not names:
        raise SystemExit(f"no images/NAME.png + keypoints/NAME.json pairs under {root}")
    images = np.empty((len(names), size, size, 3), dtype=np.uint8)
    keypoints = np.empty((len(names), 17, 3), dtype=np.float32)
    for i, name in enumerate(names):
        with Image.open(root / "images" / f"{name}.png") as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            images[i] = np.asarray(im)
        keypoints[i] = load(root / "keypoints" / f"{name}.json").keypoints
    return images, keypoints


def renders_to_arrays(renders: list[Any], size: int) -> tuple[np.ndarray, np.ndarray]:
    """`training.render.Render`s as the arrays `load_folder` returns."""
    images = np.stack([np.asarray(r.image.convert("RGB").resize((size, size), Image.BILINEAR)) for r in renders])
    keypoints = np.stack([r.pose.keypoints for r in renders]).astype(np.float32)
    return images, keypoints


# -- augmentation ---------------------------------------------------------------------------------
def augment(
    images: np.ndarray, keypoints: np.ndarray, rng: np.random.Generator, strength: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (B, S, S, 3) + (B, 17, 3) -> float (B, 3, S, S) in [-1, 1] + moved keypoints (B, 17, 3).

    Geometry and degradations run per image in PIL (uint8, fast at 128 px); colour and noise run on
    the batch as one affine colour map and one add."""
    b = images.shape[0]
    kp = keypoints.astype(np.float32).copy()
    out = np.empty_like(images)
    for i in range(b):
        im = Image.fromarray(images[i])
        # 1. Mirror half the images; the left/right labels swap with them.
        if rng.random() < 0.5:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
            kp[i] = kp[i, list(FLIP_INDEX)]
            kp[i, :, 0] = 1.0 - kp[i, :, 0]
        if strength > 0:
            im, kp[i, :, :2] = _affine(im, kp[i, :, :2], rng, strength)
            im = _degrade(im, rng, strength)
        out[i] = np.asarray(im)
    x = torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255.0
    if strength > 0:
        x = _colour(x, rng, strength)
        # Sensor-like noise on half the batch.
        noisy = np.flatnonzero(rng.random(b) < 0.5)
        if len(noisy):
            std = torch.from_numpy(rng.uniform(0.0, 0.05 * strength, len(noisy))).float()[:, None, None, None]
            gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
            x[noisy] += torch.randn(x[noisy].shape, generator=gen) * std
    return x.clamp(0, 1) * 2 - 1, torch.from_numpy(kp)


def _affine(
    im: Image.Image, xy: np.ndarray, rng: np.random.Generator, strength: float
) -> tuple[Image.Image, np.ndarray]:
    """A small random similarity (scale, rotation about the centre, shift); the border colour fills in."""
    s = im.size[0]
    scale = rng.uniform(0.88, 1.12) ** strength
    angle = np.deg2rad(rng.uniform(-12, 12) * strength)
    shift = rng.uniform(-0.08, 0.08, 2) * strength * s / 2
    # Forward map in pixels: p_out = R(angle) scale (p_in - c) + c + shift; PIL wants the inverse.
    c = np.array([s / 2, s / 2])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) * scale
    inv = np.linalg.inv(rot)
    off = c - inv @ (c + shift)
    arr = np.asarray(im)
    edge = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]]).mean(axis=0)
    im = im.transform(
        im.size,
        Image.AFFINE,
        data=(inv[0, 0], inv[0, 1], off[0], inv[1, 0], inv[1, 1], off[1]),
        resample=Image.BILINEAR,
        fillcolor=tuple(int(v) for v in edge),
    )
    px = xy.astype(np.float64) * s
    return im, (((px - c) @ rot.T + c + shift) / s).astype(np.float32)


def _degrade(im: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    """The autoencoder's softness and artefacts: blur, down-and-up resampling, JPEG blocking."""
    s = im.size[0]
    if rng.random() < 0.5:
        im = im.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.4) * strength))
    if rng.random() < 0.3 * strength:
        small = max(8, round(s * rng.uniform(0.4, 0.8)))
        down = (Image.BILINEAR, Image.BOX, Image.BICUBIC)[int(rng.integers(3))]
        im = im.resize((small, small), down).resize((s, s), Image.BILINEAR)
    if rng.random() < 0.3 * strength:
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=int(rng.integers(20, 85)))
        buf.seek(0)
        im = Image.open(buf).convert("RGB")
    return im


def _colour(x: torch.Tensor, rng: np.random.Generator, strength: float) -> torch.Tensor:
    """Saturation, a near-identity channel mix, contrast about the mean and brightness, folded into
    one per-image affine colour map `x -> M x + o`."""
    b = x.shape[0]
    sat = rng.uniform(0.6, 1.4, b) ** strength
    contrast = rng.uniform(0.75, 1.25, b) ** strength
    bright = rng.uniform(-0.12, 0.12, b) * strength
    grey = np.full((3, 3), 1 / 3)
    m_sat = sat[:, None, None] * np.eye(3) + (1 - sat)[:, None, None] * grey
    mix = np.eye(3)[None] + rng.normal(0, 0.06 * strength, (b, 3, 3))
    m = mix @ m_sat  # (B, 3, 3)
    mean = x.mean(dim=(2, 3)).double().numpy()  # (B, 3)
    mapped_mean = np.einsum("bij,bj->bi", m, mean).mean(axis=1)  # the mean the contrast pivots on
    m = contrast[:, None, None] * m
    o = ((1 - contrast) * mapped_mean + bright)[:, None]  # same offset for every channel
    mt = torch.from_numpy(m).float()
    ot = torch.from_numpy(np.broadcast_to(o, (b, 3)).copy()).float()
    return torch.einsum("bij,bjhw->bihw", mt, x) + ot[:, :, None, None]


def targets(
    model: KeypointDetector, kp: torch.Tensor, hidden_weight: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gaussian heatmaps, per-point location weights and visibility labels for a batch (B, 17, 3)."""
    xy, v = kp[..., :2], kp[..., 2]
    inside = ((xy >= 0) & (xy <= 1)).all(dim=-1)
    visible = (v >= VISIBLE) & inside
    # Hidden points are placed by the renderer but not seen: a weak hint of where they lie.
    weight = torch.where(v >= VISIBLE, 1.0, torch.where(v > 0, hidden_weight, 0.0)) * inside.float()
    return gaussian_targets(xy, model.heatmap_size, model.config.sigma), weight, visible.float()


# -- evaluation -----------------------------------------------------------------------------------
@torch.no_grad()
def validate(model: KeypointDetector, images: np.ndarray, keypoints: np.ndarray, batch: int = 128) -> dict[str, float]:
    """PCK@0.1 (and @0.05) over visible points, and visibility accuracy, on un-augmented images."""
    from models.detector import decode_heatmaps

    model.eval()
    hits = hits05 = total = 0
    vis_right = vis_total = 0
    for i in range(0, len(images), batch):
        x = torch.from_numpy(images[i : i + batch]).permute(0, 3, 1, 2).float() / 127.5 - 1
        out = model(x)
        xy = decode_heatmaps(out.heatmaps).numpy()
        vis = torch.sigmoid(out.visibility).numpy()
        for p, v, t in zip(xy, vis, keypoints[i : i + batch]):
            target = Pose(t, images.shape[2], images.shape[1])
            pred = Pose(np.concatenate([np.clip(p, -0.5, 1.5), v[:, None]], axis=1), target.width, target.height)
            h, n = pck_counts(pred, target, 0.1)
            h05, _ = pck_counts(pred, target, 0.05)
            hits, hits05, total = hits + h, hits05 + h05, total + n
            vis_right += int(((v >= VISIBLE) == target.visible).sum())
            vis_total += 17
    model.train()
    return {"pck": hits / max(total, 1), "pck05": hits05 / max(total, 1), "vis_acc": vis_right / max(vis_total, 1)}


# -- main -----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The command line (defaults: the 1-thread CPU run)."""
    d = DEFAULTS
    p = argparse.ArgumentParser(prog="python -m training.train_detector", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="synth folder (images/, keypoints/)")
    p.add_argument("--out", required=True, help="run folder (checkpoint/, final/, log.jsonl)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint when it exists")
    p.add_argument("--init", metavar="DIR", help="start from this trained detector (its architecture, not the flags')")
    p.add_argument("--publish", metavar="DIR", help="at the end copy final/ here with a model card (README.md)")
    p.add_argument("--val-data", help="validation synth folder (default: held-out renders from training.eval's range)")
    p.add_argument(
        "--val-n", type=int, default=d["val_n"], help="held-out renders to validate on (default: %(default)s)"
    )
    p.add_argument("--steps", type=int, default=d["steps"], help="optimiser steps (default: %(default)s)")
    p.add_argument(
        "--minutes",
        type=float,
        default=d["minutes"],
        help="training budget in CPU minutes of this process; the run ends at --steps or here, whichever "
        "comes first, 0 = no limit "
        "(default: %(default)s)",
    )
    p.add_argument("--batch", type=int, default=d["batch"], help="batch size (default: %(default)s)")
    p.add_argument("--lr", type=float, default=d["lr"], help="AdamW peak learning rate (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=d["warmup"], help="linear warm-up steps (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=d["weight_decay"], help="(default: %(default)s)")
    p.add_argument(
        "--hidden-weight",
        type=float,
        default=d["hidden_weight"],
        help="location loss weight of hidden (placed, unseen) points (default: %(default)s)",
    )
    p.add_argument(
        "--vis-weight", type=float, default=d["vis_weight"], help="visibility BCE weight (default: %(default)s)"
    )
    p.add_argument("--augment", type=float, default=1.0, help="augmentation strength, 0 = none (default: %(default)s)")
    p.add_argument("--max-images", type=int, default=0, help="use at most this many images (0: all)")
    p.add_argument("--checkpoint-every", type=int, default=d["checkpoint_every"], help="(default: %(default)s)")
    p.add_argument("--eval-every", type=int, default=d["eval_every"], help="(default: %(default)s)")
    p.add_argument("--log-every", type=int, default=d["log_every"], help="(default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("model (KeypointDetector config)")
    g.add_argument("--image-size", type=int, default=128)
    g.add_argument("--channels", default="16,32,64,128", help="4 encoder widths (default: %(default)s)")
    g.add_argument("--decoder-channels", type=int, default=32)
    g.add_argument("--heatmap-stride", type=int, default=4)
    g.add_argument("--sigma", type=float, default=1.0, help="target Gaussian std in heatmap cells")
    return p


def log_line(out: Path, record: dict[str, Any]) -> None:
    """Print one JSON log line and append it to OUT/log.jsonl."""
    text = json.dumps(record)
    print(text, flush=True)
    with open(out / "log.jsonl", "a", encoding="utf-8") as f:
        f.write(text + "\n")


def main(argv: list[str] | None = None) -> int:
    """Train; return 0."""
    args = build_parser().parse_args(argv)
    # 1. Check inputs and set up
    if args.steps < 1 or args.batch < 1:
        raise SystemExit("--steps and --batch must be at least 1")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    channels = tuple(int(c) for c in args.channels.replace(",", " ").split())

    # 2. Data (all in memory as uint8: 20k images of 128 px are ~1 GB)
    t0 = time.perf_counter()
    images, keypoints = load_folder(args.data, args.image_size, args.max_images)
    val_source = args.val_data or f"{args.val_n} held-out renders (synth data set seed {DETECTOR_VAL_SEED})"
    if args.val_data:
        val_images, val_kp = load_folder(args.val_data, args.image_size)
    else:
        try:
            val_images, val_kp = renders_to_arrays(
                heldout_renders(0, args.val_n, args.image_size, seed=DETECTOR_VAL_SEED), args.image_size
            )
        except ImportError:  # no renderer here: hold out the end of the training folder instead
            k = max(1, len(images) // 20)
            val_images, val_kp, images, keypoints = images[-k:], keypoints[-k:], images[:-k], keypoints[:-k]
            val_source = f"last {k} images of {args.data} (no renderer)"
    log_line(
        out,
        {
            "event": "data",
            "train": len(images),
            "val": len(val_images),
            "val_source": val_source,
            "seconds": round(time.perf_counter() - t0, 1),
        },
    )

    # 3. Model and optimiser (or the checkpoint)
    ckpt = out / "checkpoint"
    step, elapsed_before, cpu_before = 0, 0.0, 0.0
    if args.resume and (ckpt / "config.json").is_file():
        model = KeypointDetector.from_pretrained(str(ckpt))
    elif args.init:  # fine-tune (e.g. the shipped detector on the wide sampler's poses): its architecture wins
        model = KeypointDetector.from_pretrained(str(args.init))
    else:
        torch.manual_seed(args.seed)
        model = KeypointDetector(
            image_size=args.image_size,
            channels=channels,
            decoder_channels=args.decoder_channels,
            heatmap_stride=args.heatmap_stride,
            sigma=args.sigma,
        )
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    if args.resume and (ckpt / "trainer_state.pt").is_file():
        state = torch.load(ckpt / "trainer_state.pt", weights_only=True)
        opt.load_state_dict(state["optimizer"])
        step, elapsed_before, cpu_before = int(state["step"]), float(state["elapsed"]), float(state.get("cpu", 0.0))
        log_line(out, {"event": "resume", "step": step})
    params = sum(p.numel() for p in model.parameters())

    budget = args.minutes * 60 if args.minutes > 0 else math.inf

    def progress(t: int, seconds: float) -> float:
        """Share of the run done: by steps or by the CPU-time budget, whichever is further along."""
        return min(1.0, max(t / args.steps, seconds / budget))

    def lr_at(t: int, p: float) -> float:
        """Linear warm-up over steps, then cosine decay over `progress` to 5% of the peak, so the run
        ends annealed whether the steps or the minutes run out first (a busy CPU)."""
        if t < args.warmup:
            return args.lr * (t + 1) / args.warmup
        return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))

    # 4. Training loop
    start = time.perf_counter()
    losses: list[float] = []
    metrics: dict[str, float] = {}
    cpu_start = time.process_time()
    elapsed, cpu = elapsed_before, cpu_before
    done = progress(step, cpu) >= 1.0
    while not done:
        rng = np.random.default_rng([args.seed, step])  # batch + augmentation depend only on (seed, step)
        idx = rng.integers(0, len(images), args.batch)
        x, kp = augment(images[idx], keypoints[idx], rng, args.augment)
        heat_t, weight, vis_t = targets(model, kp, args.hidden_weight)
        outputs = model(x)
        loss_heat = heatmap_loss(outputs.heatmaps, heat_t, weight)
        loss_vis = F.binary_cross_entropy_with_logits(outputs.visibility, vis_t)
        loss = loss_heat + args.vis_weight * loss_vis
        lr = lr_at(step, progress(step, cpu))
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        losses.append(loss.item())
        elapsed = elapsed_before + time.perf_counter() - start
        cpu = cpu_before + time.process_time() - cpu_start
        done = progress(step, cpu) >= 1.0
        if step % args.log_every == 0 or done:
            log_line(
                out,
                {
                    "step": step,
                    "loss": round(float(np.mean(losses)), 4),
                    "heat": round(loss_heat.item(), 4),
                    "vis": round(loss_vis.item(), 4),
                    "lr": round(lr, 6),
                    "elapsed_s": round(elapsed, 1),
                    "cpu_s": round(cpu, 1),
                    "progress": round(progress(step, cpu), 3),
                },
            )
            losses = []
        if step % args.eval_every == 0 or done:
            metrics = validate(model, val_images, val_kp)
            log_line(out, {"step": step, "event": "val", **{k: round(v, 4) for k, v in metrics.items()}})
        if step % args.checkpoint_every == 0 or done:
            save_trainer_checkpoint(out, model, opt, {"step": step, "elapsed": elapsed, "cpu": cpu})

    # 5. The final model and what it took
    if not metrics:  # resumed at the end: measure once more
        metrics = validate(model, val_images, val_kp)
    model.eval()
    model.save_pretrained(out / "final")
    info = {
        "steps": step,
        "max_steps": args.steps,
        "cpu_minutes_budget": args.minutes,
        "batch": args.batch,
        "train_images": len(images),
        "data": str(args.data),
        "validation": val_source,
        "val_images": len(val_images),
        "pck@0.1_heldout": metrics["pck"],
        "pck@0.05_heldout": metrics["pck05"],
        "visibility_accuracy": metrics["vis_acc"],
        "train_seconds": round(elapsed, 1),
        "train_cpu_seconds": round(cpu, 1),
        "threads": args.threads,
        "parameters": params,
        "weights_bytes": (out / "final" / "diffusion_pytorch_model.safetensors").stat().st_size,
        "machine": f"{platform.machine()} {os.cpu_count()}-core CPU, torch {torch.__version__}",
        "args": vars(args),
        "config": dict(model.config),
    }
    (out / "training_info.json").write_text(json.dumps(info, indent=2, default=str))
    if args.publish:
        publish(out, args.publish)
    log_line(
        out,
        {
            "event": "done",
            "pck": round(metrics["pck"], 4),
            "train_seconds": round(elapsed, 1),
            "cpu_seconds": round(cpu, 1),
        },
    )
    return 0


# -- shipping -------------------------------------------------------------------------------------
MODEL_CARD = """# Keypoint detector (pose fidelity metric)

A small heatmap CNN (`models/detector.py`, `KeypointDetector`) that reads the 17 COCO keypoints
and their visibility out of 128 px images of our rendered characters. It measures how well
generated images follow the requested pose (PCK in `python -m training.eval`), and its pooled
bottleneck is the feature space of our Frechet distance. It is not a general human pose model:
it has seen only `training.render` characters, never photos.

| | |
| --- | --- |
| files | `config.json`, `diffusion_pytorch_model.safetensors` ({weights_kb:.0f} kB, {parameters:,} parameters) |
| architecture | strided conv encoder {channels} (128 -> 8 px), FPN-style decoder ({decoder} ch) to {grid} x {grid} heatmaps (spatial softmax, local soft-argmax decoding) + per-point visibility logits |
| data | {train_images:,} renders `{data}` (`python -m training.synth --out data/det --n 20000 --seed 1`) |
| augmentation | mirroring (labels swapped), small affine moves, blur, down-up resampling, JPEG, colour jitter, noise (so it reads generated images) |
| training | {steps} steps of batch {batch}, AdamW, lr {lr} cosine; `python -m training.train_detector --data data/det --out runs/detector` |
| time | {wall_min:.1f} min wall, {cpu_min:.1f} min CPU, 1 thread |
| machine | {machine}, shared with other training jobs |
| **PCK@0.1 on held-out renders** | **{pck:.4f}** on {validation} |
| PCK@0.05 on held-out renders | {pck05:.4f} |
| visibility accuracy (v >= 0.5) | {vis_acc:.4f} |

PCK@t: share of the target's visible keypoints predicted within t x the longer side of the
visible points' bounding box. The held-out renders use the reserved synth data set seed
{val_seed} (`training.eval.DETECTOR_VAL_SEED`), never used for training.

    from models.detector import KeypointDetector
    det = KeypointDetector.from_pretrained("weights/detector")
    poses = det.detect([image])        # list[models.pose.Pose], in each image's frame
    python -m training.eval detect IMAGE... --detector weights/detector
"""


def publish(run: str | Path, dest: str | Path) -> Path:
    """Copy `RUN/final/` to `dest` and write its model card (README.md) from `RUN/training_info.json`."""
    run, dest = Path(run), Path(dest)
    info = json.loads((run / "training_info.json").read_text())
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "diffusion_pytorch_model.safetensors"):
        shutil.copy2(run / "final" / name, dest / name)
        (dest / name).chmod(0o644)  # save_pretrained may write 0600; shipped files are for everyone
    config = json.loads((dest / "config.json").read_text())
    config.pop("_name_or_path", None)  # a path on the training machine (set when a run was resumed)
    (dest / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    cfg = info["config"]
    grid = cfg["image_size"] // cfg["heatmap_stride"]
    card = MODEL_CARD.format(
        weights_kb=info["weights_bytes"] / 1024,
        parameters=info["parameters"],
        channels=tuple(cfg["channels"]),
        decoder=cfg["decoder_channels"],
        grid=grid,
        train_images=info["train_images"],
        data=info["data"],
        steps=info["steps"],
        batch=info["batch"],
        lr=info["args"]["lr"],
        wall_min=info["train_seconds"] / 60,
        cpu_min=info.get("train_cpu_seconds", info["train_seconds"]) / 60,
        machine=info["machine"],
        pck=info["pck@0.1_heldout"],
        validation=info["validation"],
        pck05=info["pck@0.05_heldout"],
        vis_acc=info["visibility_accuracy"],
        val_seed=DETECTOR_VAL_SEED,
    )
    (dest / "README.md").write_text(card)
    shutil.copy2(run / "training_info.json", dest / "training_info.json")
    return dest


if __name__ == "__main__":
    sys.exit(main())
