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
import os
import platform
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
from training import cards, runs
from training.eval_common import DETECTOR_VAL_SEED, heldout_renders, pck_counts
from training.presets import DETECTOR_PRESETS, DetectorPreset, parse_with_preset, preset_dict


# -- data -----------------------------------------------------------------------------------------
def load_folder(root: str | Path, size: int, max_images: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """All `images/*.png` with their `keypoints/*.json` of a synth folder: uint8 (N, S, S, 3) and
    float32 (N, 17, 3) normalised keypoints (resized to `size` when the folder holds another size)."""
    names, images, _ = runs.labelled_images(root, "keypoints", size, max_images)
    return images, np.stack([load(Path(root) / "keypoints" / f"{n}.json").keypoints for n in names]).astype(np.float32)


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
    """The command line but for the preset's fields (`DetectorPreset`, which `parse_with_preset` adds)."""
    out = "run folder (checkpoint/, final/, log.jsonl)"
    p = runs.plain_parser("training.train_detector", __doc__, "synth folder (images/, keypoints/)", out)
    p.add_argument("--init", metavar="DIR", help="start from this trained detector (its architecture, not the flags')")
    p.add_argument("--publish", metavar="DIR", help="at the end copy final/ here with a model card (README.md)")
    p.add_argument("--val-data", help="validation synth folder (default: held-out renders from training.eval's range)")
    p.add_argument("--val-n", type=int, default=256, help="held-out renders to validate on (default: %(default)s)")
    return p


def load_data(run: runs.Run) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """Training images and keypoints (all in memory as uint8: 20k images of 128 px are ~1 GB), the validation ones,
    and where those come from."""
    args, size, t0 = run.args, run.cfg.image_size, time.perf_counter()
    images, keypoints = load_folder(args.data, size, run.cfg.max_images)
    val_source = args.val_data or f"{args.val_n} held-out renders (synth data set seed {DETECTOR_VAL_SEED})"
    if args.val_data:
        val_images, val_kp = load_folder(args.val_data, size)
    else:
        try:
            val_images, val_kp = renders_to_arrays(heldout_renders(0, args.val_n, size, seed=DETECTOR_VAL_SEED), size)
        except ImportError:  # no renderer here: hold out the end of the training folder instead
            k = max(1, len(images) // 20)
            val_images, val_kp, images, keypoints = images[-k:], keypoints[-k:], images[:-k], keypoints[:-k]
            val_source = f"last {k} images of {args.data} (no renderer)"
    seconds = round(time.perf_counter() - t0, 1)
    run.record(
        {"event": "data", "train": len(images), "val": len(val_images), "val_source": val_source, "seconds": seconds}
    )
    return images, keypoints, val_images, val_kp, val_source


def new_detector(cfg: DetectorPreset) -> KeypointDetector:
    """A fresh detector of the preset's config (seeded by `--seed`)."""
    torch.manual_seed(cfg.seed)
    config = ("image_size", "channels", "decoder_channels", "heatmap_stride", "sigma")  # the preset's names
    return KeypointDetector(**{name: getattr(cfg, name) for name in config})


def main(argv: list[str] | None = None) -> int:
    """Train; return 0."""
    args, cfg = parse_with_preset(build_parser(), DETECTOR_PRESETS, argv)
    if cfg.steps < 1 or cfg.batch < 1:
        raise SystemExit("--steps and --batch must be at least 1")
    run = runs.plain_run("train_detector", args, cfg)
    images, keypoints, val_images, val_kp, val_source = load_data(run)
    # fine-tuning (e.g. the shipped detector on the wide sampler's poses): the --init model's architecture wins
    model, opt, state = runs.resume_trainer(
        run, KeypointDetector, lambda: new_detector(cfg), args.init, lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    if state:
        run.record({"event": "resume", "step": int(state["step"])})
    metrics: dict[str, float] = {}

    def batch_loss(rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        idx = rng.integers(0, len(images), cfg.batch)
        x, kp = augment(images[idx], keypoints[idx], rng, cfg.augment)
        heat_t, weight, vis_t = targets(model, kp, cfg.hidden_weight)
        outputs = model(x)
        loss_heat = heatmap_loss(outputs.heatmaps, heat_t, weight)
        loss_vis = F.binary_cross_entropy_with_logits(outputs.visibility, vis_t)
        parts = {"heat": round(loss_heat.item(), 4), "vis": round(loss_vis.item(), 4)}
        return loss_heat + cfg.vis_weight * loss_vis, parts

    def evaluate(step: int) -> None:
        metrics.update(validate(model, val_images, val_kp))
        run.record({"step": step, "event": "val", **{k: round(v, 4) for k, v in metrics.items()}})

    clock = time.process_time  # CPU time: a shared machine learns as much as a quiet one
    trained = runs.seeded_loop(run, model, opt, batch_loss, evaluate, state, 0.05, clock, ("cpu", "cpu_s"))
    metrics = metrics or validate(model, val_images, val_kp)  # resumed at the end: measure once more
    finish(run, model, metrics, (len(images), len(val_images), val_source), trained)
    return 0


def finish(run: runs.Run, model: KeypointDetector, metrics: dict[str, float], data: tuple, trained: tuple) -> None:
    """`OUT/final/`, `OUT/training_info.json` and, with `--publish`, the copy (`data`: the numbers of training and
    validation images, where the latter come from; `trained`: `seeded_loop`'s step and seconds)."""
    args, cfg, (n_train, n_val, val_source), (step, elapsed, cpu) = run.args, run.cfg, data, trained
    model.eval()
    model.save_pretrained(run.out / "final")
    info = {
        "steps": step,
        "max_steps": cfg.steps,
        "cpu_minutes_budget": cfg.minutes,
        "batch": cfg.batch,
        "train_images": n_train,
        "data": str(args.data),
        "validation": val_source,
        "val_images": n_val,
        "pck@0.1_heldout": metrics["pck"],
        "pck@0.05_heldout": metrics["pck05"],
        "visibility_accuracy": metrics["vis_acc"],
        "train_seconds": round(elapsed, 1),
        "train_cpu_seconds": round(cpu, 1),
        "threads": cfg.threads,
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_bytes": (run.out / "final" / "diffusion_pytorch_model.safetensors").stat().st_size,
        "machine": f"{platform.machine()} {os.cpu_count()}-core CPU, torch {torch.__version__}",
        "args": vars(args) | preset_dict(cfg),  # the command line and the preset, as one set of options
        "config": dict(model.config),
    }
    (run.out / "training_info.json").write_text(json.dumps(info, indent=2, default=str))
    if args.publish:
        cards.publish(run.out, args.publish, cards.detector_card)
    record = {"event": "done", "pck": round(metrics["pck"], 4), "train_seconds": round(elapsed, 1)}
    run.record(record | {"cpu_seconds": round(cpu, 1)})


if __name__ == "__main__":
    sys.exit(main())
