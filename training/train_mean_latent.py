"""Train the sampler's start, E[z_0 | s, pose] (`models/unet.py`), for a trained pipeline, on the CPU.

    python -m training.train_mean_latent --synth 0:12000 --out runs/mean_latent --minutes 20 --publish weights
    python -m training.train_mean_latent --data data/train --model runs/ldm/final --out runs/mean --resume

The pairs are the UNet's own training pairs: for each image (and its mirror) the autoencoder's latent z_0, the
style encoder's posterior q(s | x) and the pose's condition map, as `training.train_ldm` draws them; each step
draws s from the posterior (`--style-source encoder`, the default: s as the UNet was trained to read it) and fits
the network by least squares, whose minimiser is E[z_0 | s, pose]. With `--style-source labels` (for a UNet trained
in the style guide's `labels` mode) the guided axes of s are drawn from the image's attribute labels
(`training.style_guide.sample_guided`: N(0, 1) truncated to the class's bin) and the others from the posterior, so
that along guided axis i the mean latent changes attribute i and nothing else; the others from N(0, I) instead when
the UNet was trained so (`free_style` "prior" in its training_info's config). Figures on held-out renders of
MEAN_VAL_SEED (`OUT/training_info.json`): the mean squared error against z_0 of the
network, of the data's mean latent and of zero (what the sampler started from before), on the full latent and on
its 4x4-cell means (the low frequencies that outlast the noise at t = T). `--publish FOLDER` writes the weights to
`FOLDER/mean_latent/`, where `PosePipeline.from_pretrained` finds them.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models import paths
from models.unet import MeanLatent, StyleEncoder
from training.eval_common import EVAL_SEED
from training.presets import MEAN_LATENT_PRESETS, parse_with_preset
from training.runs import Run, budget_loop, plain_run, pool_map, resume_trainer, save_final, synth_range
from training.style_guide import GUIDE_ORDER, GuideLayout, label_indices, read_labels, read_layout, sample_guided

MEAN_VAL_SEED = EVAL_SEED + 5  # data set seed of the held-out renders (+4: the part parser's)


def _render(args: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image `(H, W, 3)` uint8, keypoints `(17, 3)` and the GUIDE_ORDER labels of synth sample (seed, index)."""
    from training.synth import make_sample

    sample = make_sample(*args)
    out = sample["render"]
    return (
        np.asarray(out.image.convert("RGB")),
        out.pose.keypoints.astype(np.float32),
        label_indices(sample["attributes"], GUIDE_ORDER),
    )


def render_set(
    seed: int, start: int, n: int, size: int = 128, workers: int = 2
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images `(n, H, W, 3)` uint8, keypoints `(n, 17, 3)` and labels `(n, G)` of synth samples `start ..`."""
    out = pool_map(_render, [(seed, start + i, size) for i in range(n)], workers, chunksize=64)
    return tuple(np.stack([o[k] for o in out]) for k in range(3))


def folder_set(root: str | Path, size: int = 128, workers: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images, keypoints and labels (-1 where a folder has no attributes) of a data folder (`training.synth` or
    `training.synth` layout)."""
    from training.data import list_items, load_images, load_keypoints

    stems = list_items(root)
    return load_images(root, stems, size, workers), load_keypoints(root, stems), read_labels(root, stems, GUIDE_ORDER)


def pipeline_layout(pipeline_folder: str | Path) -> GuideLayout | None:
    """The style-guide layout the pipeline's UNet was trained with (its `training_info*.json`), or None."""
    folder = Path(pipeline_folder)
    for name in ("training_info_ldm.json", "training_info.json"):
        layout = read_layout(folder / name)
        if layout is not None:
            return layout
    return None


def _pipeline_config(pipeline_folder: str | Path) -> dict:
    """The UNet's training config from the pipeline's `training_info*.json` ({} when it has none)."""
    folder = Path(pipeline_folder)
    for name in ("training_info_ldm.json", "training_info.json"):
        try:
            return json.loads((folder / name).read_text()).get("config") or {}
        except (OSError, ValueError):
            continue
    return {}


def pipeline_free_style(pipeline_folder: str | Path) -> str:
    """Where the pipeline's UNet drew the unguided axes of s in training (`free_style` of its training_info's
    config): "posterior" (also for runs before the option) or "prior"."""
    return str(_pipeline_config(pipeline_folder).get("free_style", "posterior"))


def pipeline_style_guide(pipeline_folder: str | Path) -> str:
    """How the pipeline's UNet was given its guided axes in training (`style_guide`: "off", "loss" or "labels")."""
    return str(_pipeline_config(pipeline_folder).get("style_guide", "off"))


@torch.no_grad()
def encode_pairs(pipeline_folder: str | Path, images: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Per image and its mirror: the scaled latent `(n, 2, C, h, w)` float16 and the style posterior's mean and
    log-variance `(n, 2, 2, D)` float32, with the pipeline folder's autoencoder and style encoder."""
    from models.autoencoder import encode, load_autoencoder
    from models.errors import InputError
    from training.data import to_tensor

    folder = Path(pipeline_folder)
    if not (folder / "style_encoder").is_dir():
        raise InputError(f"{folder} has no style_encoder/: the mean latent is learnt from the style posterior.")
    vae = load_autoencoder(folder / "autoencoder").eval()
    enc = StyleEncoder.from_pretrained(folder / "style_encoder").eval()
    latents, styles = [], []
    for i in range(0, len(images), batch):
        x = to_tensor(images[i : i + batch])
        views = [x, x.flip(-1)]
        latents.append(torch.stack([encode(vae, v) for v in views], dim=1).half())
        styles.append(torch.stack([torch.stack(enc(v), dim=1) for v in views], dim=1))
    return torch.cat(latents).numpy(), torch.cat(styles).float().numpy()


def geometry(pipeline_folder: str | Path) -> tuple[int, int]:
    """The pipeline's image side and its autoencoder's downsampling factor, from the autoencoder's config."""
    cfg = json.loads((Path(pipeline_folder) / "autoencoder" / "config.json").read_text())
    return int(cfg["sample_size"]), 2 ** (len(cfg["block_out_channels"]) - 1)


@torch.no_grad()
def pooled_maps(kp: np.ndarray, size: int, cell: int, views: int = 2, batch: int = 64) -> np.ndarray:
    """`(n, views, C, size / cell, size / cell)` float16: each pose's condition map (and its mirror's), as
    `training.train_ldm` draws them, averaged over `cell`-pixel cells (`MeanLatent.pool`): drawn once, since a
    batch of full maps costs more than the network's step."""
    from training.data import condition_maps_torch

    out = []
    for i in range(0, len(kp), batch):
        k = torch.from_numpy(kp[i : i + batch])
        flips = [torch.full((len(k),), bool(v)) for v in range(views)]
        out.append(torch.stack([F.avg_pool2d(condition_maps_torch(k, size, f), cell) for f in flips], 1).half())
    return torch.cat(out).numpy()


def draw_style(
    styles: np.ndarray, labels: np.ndarray, layout: GuideLayout | None, gen: torch.Generator, free_prior: bool = False
) -> torch.Tensor:
    """s for rows of posteriors `(B, 2, D)` (mean, log-variance): drawn from the posterior, with the layout's
    guided axes set from the labels `(B, G)` when a layout is given (module docstring), and then with `free_prior`
    the other axes drawn from N(0, I), as a UNet trained with `free_style` "prior" saw them."""
    mu, logvar = torch.from_numpy(styles[:, 0]), torch.from_numpy(styles[:, 1])
    s = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen)
    if layout is None:
        return s
    g = len(layout.names)
    guided = sample_guided(torch.from_numpy(labels[:, :g]).long(), layout, gen)
    free = torch.randn(s[:, g:].shape, generator=gen) if free_prior else s[:, g:]
    return torch.cat([guided.to(s.dtype), free.to(s.dtype)], dim=1)


def _batch(
    pooled: np.ndarray,
    latents: np.ndarray,
    styles: np.ndarray,
    labels: np.ndarray,
    layout: GuideLayout | None,
    idx: np.ndarray,
    flip: np.ndarray,
    gen: torch.Generator,
    free_prior: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pooled condition maps, s (`draw_style`) and z_0 for the rows `idx` (mirrored where `flip`)."""
    view = flip.astype(np.int64)
    s = draw_style(styles[idx, view], labels[idx], layout, gen, free_prior)
    cond = torch.from_numpy(pooled[idx, view].astype(np.float32))
    return cond, s, torch.from_numpy(latents[idx, view].astype(np.float32))


def _lowpass(z: torch.Tensor) -> torch.Tensor:
    """4x4-cell means of a latent: the part of z_0 that sqrt(alpha_bar_T) lets through the noise at t = T."""
    return F.avg_pool2d(z, 4)


@torch.no_grad()
def evaluate(
    model: MeanLatent,
    pooled: np.ndarray,
    latents: np.ndarray,
    styles: np.ndarray,
    labels: np.ndarray,
    layout: GuideLayout | None,
    mean: torch.Tensor,
    free_prior: bool = False,
) -> dict:
    """Held-out mean squared errors of the network (s drawn as in training, seeded), the data's mean latent and
    zero."""
    model.eval()
    gen = torch.Generator().manual_seed(0)
    sums = {k: 0.0 for k in ("model", "data_mean", "zero", "model_low", "data_mean_low", "zero_low")}
    n = len(pooled)
    for i in range(0, n, 64):
        z0 = torch.from_numpy(latents[i : i + 64, 0].astype(np.float32))
        s = draw_style(styles[i : i + 64, 0], labels[i : i + 64], layout, gen, free_prior)
        pred = model.from_pooled(torch.from_numpy(pooled[i : i + 64, 0].astype(np.float32)), s)
        low_z0 = _lowpass(z0)
        for name, guess in (("model", pred), ("data_mean", mean.expand_as(z0)), ("zero", torch.zeros_like(z0))):
            sums[name] += F.mse_loss(guess, z0, reduction="sum").item() / z0[0].numel()
            sums[name + "_low"] += F.mse_loss(_lowpass(guess), low_z0, reduction="sum").item() / low_z0[0].numel()
    model.train()
    return {k: round(v / n, 5) for k, v in sums.items()}


def pairs(run: Run, size: int) -> tuple[np.ndarray, ...]:
    """Keypoints, latents, style posteriors and labels of the training and held-out images (cached in
    `OUT/pairs.npz` for --resume)."""
    a, cache = run.args, run.out / "pairs.npz"
    if cache.is_file():
        d = np.load(cache)
        kp, lat, sty, vkp, vlat, vsty = (d[k] for k in ("kp", "lat", "sty", "vkp", "vlat", "vsty"))
        if "lab" in d:
            return kp, lat, sty, d["lab"], vkp, vlat, vsty, d["vlab"]
        # a cache written before the labels were kept: the same samples' labels
        if a.data:
            lab = folder_set(a.data, size, workers=a.workers)[2]
        else:
            lab = render_set(a.seed, *synth_range(a.synth), size, workers=a.workers)[2]
        vlab = render_set(MEAN_VAL_SEED, 0, a.val, size, workers=a.workers)[2]
    else:
        t0 = time.time()
        if a.data:
            images, kp, lab = folder_set(a.data, size, workers=a.workers)
        else:
            start, n = synth_range(a.synth)
            images, kp, lab = render_set(a.seed, start, n, size, workers=a.workers)
        vimages, vkp, vlab = render_set(MEAN_VAL_SEED, 0, a.val, size, workers=a.workers)
        run.log(f"{len(images)} + {len(vimages)} images in {time.time() - t0:.0f}s")
        lat, sty = encode_pairs(a.model, images)
        vlat, vsty = encode_pairs(a.model, vimages)
        del images, vimages
        run.log(f"encoded with {a.model} ({time.time() - t0:.0f}s)")
    np.savez(cache, kp=kp, lat=lat, sty=sty, lab=lab, vkp=vkp, vlat=vlat, vsty=vsty, vlab=vlab)
    return kp, lat, sty, lab, vkp, vlat, vsty, vlab


def pooled_sets(run: Run, kp: np.ndarray, vkp: np.ndarray, size: int, cell: int) -> tuple[np.ndarray, np.ndarray]:
    """`pooled_maps` of the training poses (and mirrors) and of the held-out ones (cached in `OUT/pooled_CELL.npz`)."""
    maps = run.out / f"pooled_{cell}.npz"
    if maps.is_file():
        d = np.load(maps)
        return d["train"], d["val"]
    t0 = time.time()
    pooled, vpooled = pooled_maps(kp, size, cell), pooled_maps(vkp, size, cell, views=1)
    np.savez(maps, train=pooled, val=vpooled)
    run.log(f"pooled condition maps in {time.time() - t0:.0f}s")
    return pooled, vpooled


def build_parser() -> argparse.ArgumentParser:
    """The command line but for the preset's fields (`MeanLatentPreset`, which `parse_with_preset` adds)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--synth", default="0:12000", help="training renders START:END of data set --seed")
    src.add_argument("--data", default=None, help="a data folder instead of renders (training.synth layout)")
    p.add_argument("--seed", type=int, default=0, help="data set seed of the training renders (default 0)")
    p.add_argument("--val", type=int, default=512, help="held-out renders for the figures (default 512)")
    p.add_argument("--model", default=str(paths.WEIGHTS), help="pipeline folder (autoencoder, style encoder)")
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--style-source", choices=["encoder", "labels"], default="encoder",
                   help="where the guided axes of s come from (module docstring; default: %(default)s)")  # fmt: skip
    p.add_argument("--publish", default=None, help="also copy the weights to FOLDER/mean_latent/")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    a, cfg = parse_with_preset(build_parser(), MEAN_LATENT_PRESETS, argv)
    run = plain_run("train_mean_latent", a, cfg)
    size, factor = geometry(a.model)
    layout = pipeline_layout(a.model) if a.style_source == "labels" else None
    if a.style_source == "labels" and layout is None:
        raise SystemExit(f"--style-source labels: {a.model} has no style-guide layout in its training_info.")
    free_prior = layout is not None and pipeline_free_style(a.model) == "prior"  # as the UNet saw the other axes
    kp, lat, sty, lab, vkp, vlat, vsty, vlab = pairs(run, size)
    data_mean = torch.from_numpy(lat.astype(np.float32).mean(axis=(0, 1), keepdims=False))[None]
    cell = cfg.cell or 2 * factor  # default: half the latent grid (module docstring of models.unet)
    pooled, vpooled = pooled_sets(run, kp, vkp, size, cell)

    def build() -> MeanLatent:
        return MeanLatent(latent_channels=lat.shape[2], style_dim=sty.shape[-1], latent_factor=factor, cell=cell,
                          channels=cfg.channels, norm_num_groups=math.gcd(16, cfg.channels))  # fmt: skip

    model, opt, state = resume_trainer(run, MeanLatent, build, lr=cfg.lr, weight_decay=1e-4)
    if state:
        run.log(f"resumed at step {state['step']} ({state['seconds']:.0f}s)")

    # Least squares on (pose, s ~ q(s | x)) -> z_0; a cosine rate over the step or time budget.
    rng = np.random.default_rng(state.get("step", 0))
    gen = torch.Generator().manual_seed(state.get("step", 0))

    def batch_loss() -> torch.Tensor:
        idx = rng.integers(0, len(kp), cfg.batch_size)
        cond, s, z0 = _batch(pooled, lat, sty, lab, layout, idx, rng.random(cfg.batch_size) < 0.5, gen, free_prior)
        return F.mse_loss(model.from_pooled(cond, s), z0)

    def report() -> dict:
        return evaluate(model, vpooled, vlat, vsty, vlab, layout, data_mean, free_prior)

    step, seconds = budget_loop(run, model, opt, batch_loss, report, state)
    scores = report()
    save_final(run, model, "mean-latent", step, seconds, pipeline=str(a.model),
               style_source="labels" if layout is not None else "encoder",
               free_style="prior" if free_prior else "posterior",
               train={"data": a.data} if a.data else {"seed": a.seed, "samples": a.synth},
               val={"seed": MEAN_VAL_SEED, "n": len(vkp), "mse": scores})  # fmt: skip
    if a.publish:
        target = Path(a.publish) / "mean_latent"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(run.out / "final", target)
        shutil.copy(run.out / "training_info.json", target / "training_info.json")
        run.log(f"published to {target}")
    run.log(f"done: {step} steps, held-out {scores}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
