"""Train the part parser (`models/edit_regions.py`) on renders whose every pixel's part is known, on the CPU.

    python -m training.train_parser --synth 0:3000 --out runs/parser --minutes 15 --threads 1
    python -m training.train_parser --synth 0:3000 --out runs/parser --resume        # after a stop

Labels: each character is rendered three more times without its backdrop, with its hair, then its clothes, in
another colour; the pixels that change are the hair's, then the clothes' (`part_labels`); the render's own figure
mask gives the backdrop; the rest of the figure is skin. Inputs: the render passed through the autoencoder
(`--ae`, default the shipped one), since the parser reads the generator's images, soft as the decoder draws them;
horizontal flips. Cross-entropy, AdamW, a cosine rate that follows the time budget (`--minutes` of wall time, or
`--steps`), a checkpoint every `--checkpoint-every` steps for `--resume`. Per-part IoU on held-out renders of
`PARSER_VAL_SEED` (reconstructed the same way) is logged and saved in `OUT/training_info.json`; the weights in
`OUT/final/` (`PartParser.from_pretrained`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from models import paths
from models.edit_regions import PARTS, PartParser
from training.data import to_tensor
from training.eval_common import EVAL_SEED
from training.presets import PARSER_PRESETS, parse_with_preset
from training.runs import Run, budget_loop, plain_run, pool_map, resume_trainer, save_final, synth_range

PARSER_VAL_SEED = EVAL_SEED + 4  # data set seed of the parser's validation renders (+3: the style evaluation)
CHANGED = 24  # a pixel whose R, G or B moves by more than this when a part's colour changes belongs to that part


def _far(colours: dict[str, tuple[int, int, int]], name: str) -> str:
    """The colour of the table farthest from `name`'s (so every pixel drawn from it changes)."""
    ref = np.array(colours[name], dtype=np.float64)
    return max(colours, key=lambda k: float(np.abs(np.array(colours[k]) - ref).sum()))


def part_labels(seed: int, index: int, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Sample `index` of data set `seed` as `training.synth` draws it: the image `(H, W, 3)` uint8 and its part
    labels `(H, W)` uint8, indices into `PARTS`."""
    from training import character as ch
    from training.character import sample_character
    from training.render import render
    from training.skeleton import sample_rig

    rng = np.random.default_rng([seed, index])
    rig = sample_rig(rng)
    c = sample_character(rng)
    shown = render(rig.pose, c, size, rig=rig)

    def bare(character: ch.Character) -> np.ndarray:
        return np.asarray(render(rig.pose, character, size, background=False, rig=rig).image, dtype=np.int16)

    plain = bare(c)
    hair = bare(dataclasses.replace(c, hair_color=_far(ch.HAIR_COLORS, c.hair_color)))
    outfit = tuple(_far(ch.CLOTH_COLORS, k) for k in c.outfit_colors)
    clothes = bare(dataclasses.replace(c, outfit_colors=outfit))
    labels = np.full((size, size), PARTS.index("skin"), np.uint8)
    labels[np.abs(clothes - plain).max(axis=-1) > CHANGED] = PARTS.index("clothes")
    labels[np.abs(hair - plain).max(axis=-1) > CHANGED] = PARTS.index("hair")
    labels[~shown.mask] = PARTS.index("background")
    return np.asarray(shown.image.convert("RGB")), labels


def _job(args: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """`part_labels` for a worker process."""
    return part_labels(*args)


def make_set(seed: int, start: int, n: int, size: int = 128, workers: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Images `(n, H, W, 3)` uint8 and labels `(n, H, W)` uint8 of samples `start .. start + n - 1`."""
    out = pool_map(_job, [(seed, start + i, size) for i in range(n)], workers)
    return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])


def iou(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Intersection over union of the argmax parts against the labels, per part."""
    pred = logits.argmax(dim=1)
    out = {}
    for k, name in enumerate(PARTS):
        inter = ((pred == k) & (labels == k)).sum().item()
        union = ((pred == k) | (labels == k)).sum().item()
        out[name] = round(inter / union, 4) if union else float("nan")
    return out


def evaluate(model: PartParser, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Per-part IoU over a held-out set."""
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(to_tensor(images[i : i + 64])) for i in range(0, len(images), 64)])
    model.train()
    return iou(logits, torch.from_numpy(labels).long())


def labelled_sets(run: Run) -> tuple[np.ndarray, ...]:
    """Training and held-out renders (through `--ae`) and their part labels, cached in `OUT/data.npz` for --resume."""
    a, cache = run.args, run.out / "data.npz"
    if cache.is_file():
        d = np.load(cache)
        return d["x"], d["y"], d["vx"], d["vy"]
    t0 = time.time()
    start, n = synth_range(a.synth)
    x, y = make_set(a.seed, start, n, workers=a.workers)
    vx, vy = make_set(PARSER_VAL_SEED, 0, a.val, workers=a.workers)
    run.log(f"rendered {n} + {a.val} labelled images in {time.time() - t0:.0f}s")
    if a.ae:
        from training.data import autoencoder_round_trip

        x, vx = (autoencoder_round_trip(v, a.ae, "cpu", batch=32) for v in (x, vx))
        run.log(f"reconstructed them with {a.ae} ({time.time() - t0:.0f}s)")
    np.savez(cache, x=x, y=y, vx=vx, vy=vy)
    return x, y, vx, vy


def build_parser() -> argparse.ArgumentParser:
    """The command line but for the preset's fields (`ParserPreset`, which `parse_with_preset` adds)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--synth", default="0:3000", help="training samples START:END of data set --seed (default 0:3000)")
    p.add_argument("--seed", type=int, default=0, help="data set seed of the training renders (default 0)")
    p.add_argument("--val", type=int, default=200, help="held-out renders for the IoU (default 200)")
    p.add_argument("--ae", default=str(paths.WEIGHTS / "autoencoder"), help="autoencoder folder ('' : raw renders)")
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--workers", type=int, default=2)
    return p


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    a, cfg = parse_with_preset(build_parser(), PARSER_PRESETS, argv)
    run = plain_run("train_parser", a, cfg)
    x, y, vx, vy = labelled_sets(run)
    share = np.bincount(y.ravel(), minlength=len(PARTS)) / y.size
    run.log("pixel shares " + ", ".join(f"{k} {v:.3f}" for k, v in zip(PARTS, share)))

    model, opt, state = resume_trainer(
        run, PartParser, lambda: PartParser(channels=cfg.channels, num_parts=len(PARTS)), lr=cfg.lr, weight_decay=1e-4
    )
    if state:
        run.log(f"resumed at step {state['step']} ({state['seconds']:.0f}s)")
    # rare parts weigh more: the hair is a few percent of the pixels and the point of the model
    weight = torch.tensor(np.clip(share.mean() / np.maximum(share, 1e-6), 0.5, 8.0), dtype=torch.float32) ** 0.5
    gen = np.random.default_rng(state.get("step", 0))

    def batch_loss() -> torch.Tensor:
        idx = gen.integers(0, len(x), cfg.batch_size)
        xb, yb = to_tensor(x[idx]), torch.from_numpy(y[idx]).long()
        flip = torch.from_numpy(gen.random(cfg.batch_size) < 0.5)
        xb[flip], yb[flip] = xb[flip].flip(-1), yb[flip].flip(-1)
        return F.cross_entropy(model(xb), yb, weight=weight)

    step, seconds = budget_loop(run, model, opt, batch_loss, lambda: f"IoU {evaluate(model, vx, vy)}", state)
    scores = evaluate(model, vx, vy)
    val = {"seed": PARSER_VAL_SEED, "n": len(vx), "iou": scores}
    train = {"seed": a.seed, "samples": a.synth, "autoencoder": a.ae or None}
    save_final(run, model, "part-parser", step, seconds, train=train, val=val)
    run.log(f"done: {step} steps, val IoU {scores}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
