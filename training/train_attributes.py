"""Train the attribute classifier (`models/attributes.py`) on a synth data folder, on a CPU or a GPU.

    python -m training.train_attributes --data data/train --out runs/attributes --init weights/attributes \\
        --ae weights/autoencoder --train-decoded 0.7 --decoded-n 3000 --minutes 25 --lr 1e-3 --publish weights/attributes
    python -m training.train_attributes --data data/train --out runs/attributes --resume   # after a stop

Reads `images/*.png`, `attributes/*.json` and the eye points of `keypoints/*.json` (they supervise the eye
locator; `models.attributes.eye_map_loss`); the last `--holdout` share of the folder (by name) is never trained
on. The judge reads generated images, which are always an autoencoder's decodings: `--train-decoded P` (with
`--ae`) draws that share of every batch from training renders passed through it (`--decoded-n` of them, cached in
`OUT/decoded.npz`), and augmentation degrades renders the ways a small autoencoder does (blur, down-and-up
resampling, noise, mirroring, small affine moves, small brightness and contrast changes, never the hue: the colour
is the label). `--init FOLDER` continues a trained classifier (attributes it lacks get fresh heads). The run ends
at `--steps` or after `--minutes` (CPU time of this process on a CPU, wall time on a GPU), the cosine learning
rate following that progress; `OUT/checkpoint/` every `--checkpoint-every` steps lets `--resume` carry on (batch
and augmentation of step `t` depend only on `--seed` and `t`). At the end: `OUT/final/`, `OUT/accuracy.json`
(held-out accuracy, on `--eval-data` and, with `--ae`, on held-out renders through that autoencoder),
`OUT/training_info.json`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur

from models.attributes import ATTRIBUTES, AttributeClassifier, eye_map_loss, record_labels
from training import cards, runs
from training.data import autoencoder_round_trip, to_tensor
from training.presets import ATTRIBUTES_PRESETS, AttributesPreset, parse_with_preset, preset_dict

IGNORE = -100  # label of an attribute that cannot be seen (cross-entropy skips it)


# -- data -----------------------------------------------------------------------------------------
def encode_labels(record: dict[str, Any], classes: dict[str, list[str]]) -> np.ndarray:
    """One `attributes/*.json` record -> (A,) int64 class indices (IGNORE where unseen or unknown)."""
    labels = record_labels(record)
    out = np.full(len(classes), IGNORE, dtype=np.int64)
    for j, (name, names) in enumerate(classes.items()):
        value = labels.get(name)
        if value in names:
            out[j] = names.index(value)
    return out


EYES = (1, 2)  # COCO indices of the left and right eye


def load_folder(
    root: str | Path, size: int, classes: dict[str, list[str]], max_images: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """uint8 (N, S, S, 3) images, int64 (N, A) labels, float32 (N, 2, 3) eyes (x, y in [0, 1],
    1 where drawn; all 0 without a keypoint file) and the names of a synth folder's
    `images/NAME.png` + `attributes/NAME.json` pairs, sorted by name."""
    root = Path(root)
    names, images, frames = runs.labelled_images(root, "attributes", size, max_images)
    labels = np.stack(
        [encode_labels(json.loads((root / "attributes" / f"{n}.json").read_text()), classes) for n in names]
    )
    eyes = np.zeros((len(names), len(EYES), 3), dtype=np.float32)
    for i, (name, frame) in enumerate(zip(names, frames)):
        kp_file = root / "keypoints" / f"{name}.json"
        if kp_file.is_file():
            kp = json.loads(kp_file.read_text())
            flat = np.asarray(kp["keypoints"], dtype=np.float32).reshape(-1, 3)[list(EYES)]
            w, h = kp.get("width", frame[0]), kp.get("height", frame[1])
            eyes[i] = np.stack([flat[:, 0] / w, flat[:, 1] / h, (flat[:, 2] == 2).astype(np.float32)], axis=1)
    return images, labels, eyes, names


# -- augmentation ---------------------------------------------------------------------------------
def augment(
    x: torch.Tensor, rng: np.random.Generator, strength: float = 1.0, points: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Mirror, small affine moves, blur, down-up resampling, noise, small brightness and contrast
    changes of a (B, 3, S, S) batch in [-1, 1]; hue and saturation are left alone (they are labels).
    `points` (B, P, 2 or more): x, y in [0, 1], moved with the image (further columns kept)."""
    if strength <= 0:
        return x, points
    b, _, s, _ = x.shape
    dev = x.device

    def mask(p: float) -> torch.Tensor:
        return torch.from_numpy(rng.random(b) < p * min(1.0, strength)).to(dev).view(b, 1, 1, 1)

    # 1. Mirror and a small zoom / shift (no attribute depends on left and right).
    flip = np.where(rng.random(b) < 0.5, -1.0, 1.0)
    scale = np.exp(rng.uniform(-0.12, 0.12, b) * strength)
    shift = rng.uniform(-0.08, 0.08, (b, 2)) * strength
    theta = np.zeros((b, 2, 3), dtype=np.float32)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, :, 2] = flip / scale, 1.0 / scale, shift
    grid = F.affine_grid(torch.from_numpy(theta).to(dev), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if points is not None:  # the grid maps output p to input A p + t, so a point moves to A^-1 (p - t)
        a = torch.from_numpy(np.stack([flip * scale, scale], axis=1).astype(np.float32)).to(dev)[:, None, :]
        t = torch.from_numpy(shift.astype(np.float32)).to(dev)[:, None, :]
        xy = ((points[..., :2] * 2 - 1) - t) * a
        points = torch.cat([(xy + 1) / 2, points[..., 2:]], dim=-1)
    # 2. Softness of decoded images: a blur or a down-and-up resampling.
    sigma = float(rng.uniform(0.4, 1.1))
    x = torch.where(mask(0.35), gaussian_blur(x, [2 * math.ceil(2 * sigma) + 1] * 2, [sigma, sigma]), x)
    low = int(rng.integers(s // 2, s * 3 // 4 + 1))
    down_up = F.interpolate(F.interpolate(x, size=(low, low), mode="area"), size=(s, s), mode="bilinear")
    x = torch.where(mask(0.3), down_up, x)
    # 3. Brightness and contrast, the same for all three channels (the hue stays).
    gain = torch.from_numpy(rng.uniform(0.94, 1.06, b).astype(np.float32)).to(dev).view(b, 1, 1, 1)
    bias = torch.from_numpy(rng.uniform(-0.04, 0.04, b).astype(np.float32)).to(dev).view(b, 1, 1, 1)
    x = torch.where(mask(0.5), x * gain + bias, x)
    # 4. Pixel noise.
    gen = torch.Generator(device=dev).manual_seed(int(rng.integers(2**31)))
    noise = torch.randn(x.shape, generator=gen, device=dev) * float(rng.uniform(0.0, 0.04))
    x = torch.where(mask(0.3), x + noise, x)
    return x.clamp(-1.0, 1.0), points


# -- loss and accuracy ----------------------------------------------------------------------------
def classification_loss(
    logits: dict[str, torch.Tensor],
    labels: torch.Tensor,
    names: list[str],
    weights: dict[str, float] | None = None,
    class_weights: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Weighted mean over attributes of the cross-entropy (unseen labels skipped); label column j is
    `names[j]`; attributes missing from `weights` weigh 1; `class_weights[name]` weighs that head's classes."""
    weights, class_weights = weights or {}, class_weights or {}
    total, norm = 0.0, 0.0
    for j, name in enumerate(names):
        y = labels[:, j]
        if (y != IGNORE).any():
            w = weights.get(name, 1.0)
            cw = class_weights.get(name)
            cw = cw.to(logits[name].device) if cw is not None else None
            total = total + w * F.cross_entropy(logits[name].float(), y, weight=cw, ignore_index=IGNORE)
            norm += w
    return total / max(norm, 1e-8)


def balancing_weights(
    labels: np.ndarray, classes: dict[str, list[str]], balanced: list[str]
) -> dict[str, torch.Tensor]:
    """Per-class cross-entropy weights 1 / frequency (mean 1 over the classes present) of the `balanced` attributes
    in the (N, A) training labels: the loss then asks for the mean recall, not the majority class."""
    out = {}
    for j, name in enumerate(classes):
        if name in balanced:
            seen = labels[:, j][labels[:, j] != IGNORE]
            counts = np.bincount(seen, minlength=len(classes[name])).astype(np.float64)
            inv = np.where(counts > 0, 1.0 / np.maximum(counts, 1.0), 0.0)
            out[name] = torch.tensor(inv * (counts > 0).sum() / max(inv.sum(), 1e-12), dtype=torch.float32)
    return out


@torch.no_grad()
def predict_indices(model: AttributeClassifier, images: np.ndarray, batch: int = 256) -> np.ndarray:
    """(N, A) predicted class indices (columns in `model.classes` order) of uint8 images, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        preds = []
        for i in range(0, len(images), batch):
            out = model(to_tensor(images[i : i + batch], model.device))
            preds.append(torch.stack([out[k].argmax(dim=1) for k in model.classes], dim=1).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(preds)


def accuracy_report(preds: np.ndarray, labels: np.ndarray, classes: dict[str, list[str]]) -> dict[str, Any]:
    """Per-attribute accuracy over the seen labels, their mean, the balanced accuracy (mean recall over the classes
    present: a rare accessory's "with" counts as much as its "without"), counts and the top confusions."""
    acc, balanced, counts, confusions = {}, {}, {}, {}
    for j, (name, names) in enumerate(classes.items()):
        seen = labels[:, j] != IGNORE
        y, p = labels[seen, j], preds[seen, j]
        counts[name] = int(seen.sum())
        acc[name] = float((y == p).mean()) if seen.any() else float("nan")
        balanced[name] = float(np.mean([(p[y == c] == c).mean() for c in np.unique(y)])) if seen.any() else float("nan")
        wrong = Counter(f"{names[a]} -> {names[b]}" for a, b in zip(y, p) if a != b)
        confusions[name] = dict(wrong.most_common(3))
    return {
        "accuracy": acc,
        "mean_accuracy": float(np.nanmean(list(acc.values()))),
        "balanced_accuracy": balanced,
        "n": counts,
        "top_confusions": confusions,
    }


def decoded_renders(
    run: runs.Run, images: np.ndarray, val_images: np.ndarray, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """The first `--decoded-n` training images and all held-out ones through `--ae` (cached in OUT/decoded.npz,
    which a run with another data folder, count or autoencoder replaces)."""
    args, n = run.args, min(run.cfg.decoded_n, len(images))
    cache = run.out / "decoded.npz"
    key = f"{Path(args.data).resolve()}|{Path(args.ae).resolve()}|{n}|{len(val_images)}"
    if cache.is_file():
        d = np.load(cache)
        if str(d["key"]) == key:
            return d["train"], d["val"]
    both = autoencoder_round_trip(np.concatenate([images[:n], val_images]), args.ae, device)  # one load, one pass
    train, val = both[:n], both[n:]
    np.savez(cache, train=train, val=val, key=key)
    return train, val


# -- main -----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The command line but for the preset's fields (`AttributesPreset`, which `parse_with_preset` adds)."""
    out = "run folder (checkpoint/, final/, accuracy.json, log.jsonl)"
    p = runs.plain_parser("training.train_attributes", __doc__, "synth folder (images/, attributes/)", out)
    p.add_argument("--publish", metavar="DIR", help="at the end copy final/ here with a model card (README.md)")
    p.add_argument("--eval-data", help="a second synth folder (another seed) to report accuracy on, e.g. data/det")
    p.add_argument("--eval-n", type=int, default=2000, help="images of --eval-data used (default: %(default)s)")
    p.add_argument("--ae", help="also report accuracy on held-out renders passed through this autoencoder folder")
    p.add_argument("--init", metavar="FOLDER", help="start from this trained classifier (its architecture wins; "
                   "attributes it lacks get fresh heads)")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:1, ...")
    return p


def parse_attend(text: str) -> dict[str, list[int]]:
    """'eye_color=0+1,hair_style=1+2' -> {'eye_color': [0, 1], 'hair_style': [1, 2]}."""
    out: dict[str, list[int]] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, _, stages = item.partition("=")
        try:
            out[name] = [int(i) for i in stages.split("+")]
        except ValueError:
            raise SystemExit(f"--attend: '{item}' is not NAME=STAGE+STAGE") from None
    return out


def parse_weights(text: str, names: list[str]) -> dict[str, float]:
    """'eye_color=3,hair_style=2' -> {'eye_color': 3.0, 'hair_style': 2.0}, names checked."""
    out: dict[str, float] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, _, value = item.partition("=")
        if name not in names or not value:
            raise SystemExit(f"--loss-weights: '{item}' is not NAME=WEIGHT with NAME one of {', '.join(names)}")
        out[name] = float(value)
    return out


def new_classifier(cfg: AttributesPreset) -> AttributeClassifier:
    """A fresh classifier of the preset's config and the renderer's vocabulary (seeded by `--seed`)."""
    torch.manual_seed(cfg.seed)
    return AttributeClassifier(
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        channels=cfg.channels,
        depths=cfg.depths,
        pool_stages=cfg.pool_stages,
        hidden=cfg.hidden,
        eye_attention=not cfg.no_eye_attention,
        attend=parse_attend(cfg.attend),
        class_names={k: list(v) for k, v in ATTRIBUTES.items()},
    )


def grown_classifier(init: str, cfg: AttributesPreset) -> AttributeClassifier:
    """The trained classifier in `init` with a head for every attribute of today's vocabulary: the heads it has
    (same classes, same input width) keep their weights, new ones start fresh; `--attend` names the attention
    pooling of the new heads (the kept ones keep theirs)."""
    old = AttributeClassifier.from_pretrained(str(init))
    new_heads = {k: v for k, v in parse_attend(cfg.attend).items() if k not in old.classes}
    attend = {**old.config.attend, **new_heads} if old.config.eye_attention else {}
    config = {k: v for k, v in old.config.items() if not k.startswith("_")}
    torch.manual_seed(cfg.seed)
    new = AttributeClassifier(
        **{**config, "attend": attend, "class_names": {k: list(v) for k, v in ATTRIBUTES.items()}}
    )
    kept = {k: v for k, v in old.state_dict().items() if k in new.state_dict() and new.state_dict()[k].shape == v.shape}
    new.load_state_dict(kept, strict=False)
    return new


@dataclass
class Data:
    """The training split, the held-out split (the end of `--data`) and, with `--train-decoded`, `decoded_renders`."""

    images: np.ndarray  # uint8 (N, S, S, 3)
    labels: np.ndarray  # (N, A) class indices in the model's order
    eyes: np.ndarray  # (N, 2, 3)
    val_images: np.ndarray
    val_labels: np.ndarray
    held_out: str  # which images those are
    decoded: tuple[np.ndarray, np.ndarray] | None


def load_data(run: runs.Run, classes: dict[str, list[str]], device: torch.device) -> Data:
    """`--data` in memory as uint8 (17.5k images of 128 px are ~0.9 GB); the held-out split is its end."""
    args, cfg, t0 = run.args, run.cfg, time.perf_counter()
    images, labels, eyes, names = load_folder(args.data, cfg.image_size, classes, cfg.max_images)
    k = max(1, round(len(images) * cfg.holdout))
    val_images, val_labels = images[-k:], labels[-k:]
    images, labels, eyes = images[:-k], labels[:-k], eyes[:-k]
    held_out = f"{args.data} images {names[-k]}..{names[-1]} (last {k}, never trained on)"
    decoded = decoded_renders(run, images, val_images, device) if cfg.train_decoded > 0 else None
    run.record({"event": "data", "train": len(images), "val": k, "seconds": round(time.perf_counter() - t0, 1)})
    return Data(images, labels, eyes, val_images, val_labels, held_out, decoded)


def final_accuracy(run: runs.Run, model: AttributeClassifier, data: Data, device: torch.device) -> dict[str, Any]:
    """`OUT/accuracy.json`: accuracy on the held-out split, on `--eval-data` and on the split through `--ae`."""
    args, classes = run.args, model.classes
    report: dict[str, Any] = {
        "heldout": accuracy_report(predict_indices(model, data.val_images), data.val_labels, classes)
    }
    report["heldout"]["source"] = data.held_out
    if args.eval_data:
        ev_images, ev_labels, _, _ = load_folder(args.eval_data, run.cfg.image_size, classes, args.eval_n)
        report["eval_data"] = accuracy_report(predict_indices(model, ev_images), ev_labels, classes)
        report["eval_data"]["source"] = f"{args.eval_data} (first {len(ev_images)} images)"
    if args.ae:
        rt = data.decoded[1] if data.decoded is not None else autoencoder_round_trip(data.val_images, args.ae, device)
        report["heldout_autoencoder"] = accuracy_report(predict_indices(model, rt), data.val_labels, classes)
        report["heldout_autoencoder"]["source"] = f"the held-out split encoded and decoded by {args.ae}"
    (run.out / "accuracy.json").write_text(json.dumps(report, indent=2))
    return report


def finish(
    run: runs.Run, model: AttributeClassifier, data: Data, device: torch.device, step: int, elapsed: float, spent: float
) -> None:
    """`OUT/final/`, its accuracy (`final_accuracy`), `OUT/training_info.json` and, with `--publish`, the copy."""
    args, cfg, on_gpu = run.args, run.cfg, device.type == "cuda"
    model.eval()
    model.save_pretrained(run.out / "final")
    report = final_accuracy(run, model, data, device)
    machine = f"{platform.machine()} {os.cpu_count()}-core CPU, {cfg.threads} thread(s)"
    if on_gpu:
        machine = f"{torch.cuda.get_device_name(device)} (+ {os.cpu_count()}-core CPU)"
    info = {
        "steps": step,
        "batch": cfg.batch,
        "train_images": len(data.images),
        "data": str(args.data),
        "budget_minutes": cfg.minutes,
        "budget_clock": "wall" if on_gpu else "cpu",
        "train_seconds": round(elapsed, 1),
        "budget_seconds": round(spent, 1),
        "device": str(device),
        "machine": f"{machine}, torch {torch.__version__}",
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_bytes": (run.out / "final" / "diffusion_pytorch_model.safetensors").stat().st_size,
        "args": vars(args) | preset_dict(cfg),  # the command line and the preset, as one set of options
        "config": dict(model.config),
        "accuracy": report,
    }
    (run.out / "training_info.json").write_text(json.dumps(info, indent=2, default=str))
    if args.publish:
        cards.publish(run.out, args.publish, cards.attributes_card)
    run.record({"event": "done", "heldout_mean": round(report["heldout"]["mean_accuracy"], 4), "steps": step})


def main(argv: list[str] | None = None) -> int:
    """Train; return 0."""
    args, cfg = parse_with_preset(build_parser(), ATTRIBUTES_PRESETS, argv)
    if cfg.steps < 1 or cfg.batch < 1 or not 0 < cfg.holdout < 1:
        raise SystemExit("--steps and --batch must be at least 1 and --holdout between 0 and 1")
    if not 0 <= cfg.train_decoded <= 1 or (cfg.train_decoded > 0 and not args.ae):
        raise SystemExit("--train-decoded must be between 0 and 1, and above 0 it needs --ae (the autoencoder)")
    run = runs.plain_run("train_attributes", args, cfg)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    build = (lambda: grown_classifier(args.init, cfg)) if args.init else (lambda: new_classifier(cfg))
    model, opt, state = runs.resume_trainer(
        run, AttributeClassifier, build, None, device, lr=cfg.lr, weight_decay=cfg.weight_decay
    )
    classes = model.classes  # a resumed model keeps its own vocabulary (and the labels follow it)
    loss_weights = parse_weights(cfg.loss_weights, list(classes))
    balanced = [t.strip() for t in cfg.balance.split(",") if t.strip()]
    if unknown := [n for n in balanced if n not in classes]:
        raise SystemExit(f"--balance: {', '.join(unknown)} not among {', '.join(classes)}")
    data = load_data(run, classes, device)
    class_weights = balancing_weights(data.labels, classes, balanced)
    if state:
        run.record({"event": "resume", "step": int(state["step"])})

    def batch_loss(rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, float]]:
        idx = rng.integers(0, len(data.images), cfg.batch)
        batch = data.images[idx]  # a copy (fancy indexing)
        if data.decoded is not None:  # this share of the batch as the autoencoder decodes it (module docstring)
            take = rng.random(cfg.batch) < cfg.train_decoded
            idx[take] = rng.integers(0, len(data.decoded[0]), int(take.sum()))  # decoded[0][j] is images[j] decoded
            batch[take] = data.decoded[0][idx[take]]
        eyes = torch.from_numpy(data.eyes[idx]).to(device)
        x, eye_pts = augment(to_tensor(batch, device), rng, cfg.augment, eyes)
        outputs = model.forward_with_maps(x)
        loss = classification_loss(
            outputs.logits, torch.from_numpy(data.labels[idx]).to(device), list(classes), loss_weights, class_weights
        )
        if outputs.eye_map is not None and cfg.eye_weight > 0:
            loss = loss + cfg.eye_weight * eye_map_loss(outputs.eye_map, eye_pts)
        return loss, {}

    def evaluate(step: int) -> None:
        # The training-time check uses up to 1000 held-out images (the full split is measured at the end).
        rep = accuracy_report(predict_indices(model, data.val_images[:1000]), data.val_labels[:1000], classes)
        run.record(
            {"step": step, "event": "val", "mean": round(rep["mean_accuracy"], 4)}
            | {k: round(v, 4) for k, v in rep["accuracy"].items()}
        )

    clock = time.perf_counter if device.type == "cuda" else time.process_time  # what the budget counts
    keys = ("budget_s", "budget_s")
    finish(run, model, data, device, *runs.seeded_loop(run, model, opt, batch_loss, evaluate, state, 0.02, clock, keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
