"""Train the image autoencoder (`models/autoencoder.py`) on fresh renders streamed from the renderer.

    python -m training.train_ae --out runs/ae256 --preset cpu [--resume] [--steps N ...]
    python -m training.train_ae --out runs/ae --data DIR        # a folder of images (images/*.png) instead

Every step draws new characters in new poses (`training.synth.make_sample`, ~4 ms a 256-px render), so the model
never sees an image twice; crops are centred on the figure most of the time (its eyes and outlines are a few
percent of the pixels). Writes `OUT/log.txt`, `OUT/samples/step_NNNNNNN.png` (top: held-out renders, bottom:
round trips), resumable checkpoints `OUT/checkpoints/step_NNNNNNN/`, and at the end `OUT/final/autoencoder/`
(`save_pretrained`, safetensors, with the measured `scaling_factor` / `shift_factor`) and
`OUT/final/training_info.json`. The same script runs on CPU and (through accelerate) on GPUs.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch import nn

from models.autoencoder import (
    Autoencoder,
    ShuffleAutoencoder,
    build_autoencoder,
    load_autoencoder,
    measure_latent_stats,
    psnr,
    reconstruction_loss,
)
from training.data import list_items, load_images, save_grid, to_tensor
from training.presets import (
    AE_PRESETS,
    AEPreset,
    LossWindow,
    RunLog,
    latest_checkpoint,
    lr_factor,
    machine,
    parse_with_preset,
    preset_dict,
    run_progress,
)

NUM_VAL = 16  # held-out renders for the PSNR in the log and the sample grids
VAL_SEED = 90_001  # renderer seed of the held-out renders (training streams seed `cfg.seed`)


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017) without normalisation: real/fake logits per ~46-px patch, and its features."""

    def __init__(self, width: int = 64, layers: int = 3):
        super().__init__()
        chans = [3] + [width * 2**i for i in range(layers)]
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, b, 4, stride=2, padding=1), nn.LeakyReLU(0.2))
            for a, b in itertools.pairwise(chans)
        )
        self.head = nn.Conv2d(chans[-1], 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Patch logits and the feature map of every block."""
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return self.head(x), feats


def adversarial_terms(
    disc: PatchDiscriminator, real: torch.Tensor, fake: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The generator's hinge loss -D(fake) and the L1 feature matching of D's layers (real features held fixed)."""
    logits_fake, feats_fake = disc(fake)
    with torch.no_grad():
        _, feats_real = disc(real)
    matching = sum((a - b).abs().mean() for a, b in zip(feats_fake, feats_real)) / len(feats_fake)
    return -logits_fake.mean(), matching


def discriminator_loss(disc: PatchDiscriminator, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the discriminator (Lim & Ye 2017): relu(1 - D(real)) + relu(1 + D(fake))."""
    return F.relu(1 - disc(real)[0]).mean() + F.relu(1 + disc(fake.detach())[0]).mean()


class RenderCrops:
    """Batches of random crops of fresh renders (or of a folder's images), as [-1, 1] tensors."""

    def __init__(self, cfg: AEPreset, start: int = 0):
        self.cfg, self.index = cfg, start
        self.images: np.ndarray | None = None
        if cfg.data:
            stems = list_items(cfg.data, cfg.max_images)
            self.images = load_images(cfg.data, stems, cfg.image_size, 0)

    def _draw(self) -> tuple[np.ndarray, np.ndarray | None]:
        """One image (H, W, 3) uint8 and its figure mask (None for a folder's images)."""
        if self.images is not None:
            self.index += 1
            return self.images[self.index % len(self.images)], None
        from training.synth import make_sample

        sample = make_sample(self.cfg.seed, self.index, self.cfg.image_size)["render"]
        self.index += 1
        return np.asarray(sample.image.convert("RGB")), sample.mask

    def batch(self, rng: np.random.Generator) -> torch.Tensor:
        """`batch_size` crops, two a render, centred on a figure pixel with probability `figure_crops`."""
        c, out = self.cfg.crop, []
        while len(out) < self.cfg.batch_size:
            image, mask = self._draw()
            h, w, _ = image.shape
            for _ in range(2):
                if mask is not None and mask.any() and rng.random() < self.cfg.figure_crops:
                    ys, xs = np.nonzero(mask)
                    k = rng.integers(len(ys))
                    y = int(np.clip(ys[k] - c // 2, 0, h - c))
                    x = int(np.clip(xs[k] - c // 2, 0, w - c))
                else:
                    y, x = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
                patch = image[y : y + c, x : x + c]
                out.append(patch[:, ::-1] if rng.random() < 0.5 else patch)
        return to_tensor(np.stack(out[: self.cfg.batch_size]))


def held_out(size: int, n: int = NUM_VAL) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` held-out renders (seed VAL_SEED) as [-1, 1] tensors and their figure masks `(n, 1, H, W)`."""
    from training.synth import make_sample

    renders = [make_sample(VAL_SEED, i, size)["render"] for i in range(n)]
    images = to_tensor(np.stack([np.asarray(r.image.convert("RGB")) for r in renders]))
    masks = torch.from_numpy(np.stack([r.mask for r in renders]))[:, None]
    return images, masks


def build(cfg: AEPreset) -> Autoencoder:
    """A fresh autoencoder of the preset's architecture."""
    if cfg.arch == "shuffle":
        return ShuffleAutoencoder(cfg.latent_channels, tuple(cfg.widths), tuple(cfg.blocks), cfg.head_width)
    return build_autoencoder(
        cfg.block_out_channels, cfg.layers_per_block, cfg.latent_channels, cfg.norm_num_groups, cfg.mid_attention
    )


class AELoss(nn.Module):
    """The autoencoder with its training loss as `forward`, so DDP (multi-GPU) syncs its gradients."""

    def __init__(self, vae: Autoencoder, cfg: AEPreset, disc: PatchDiscriminator | None):
        super().__init__()
        self.vae, self.cfg, self.disc = vae, cfg, disc

    def forward(self, images: torch.Tensor, adversarial: bool) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        """The loss of one batch, its parts, and the reconstructions (for the discriminator's step)."""
        cfg = self.cfg
        loss, parts, recon = reconstruction_loss(
            self.vae, images, kl_weight=cfg.kl_weight, grad_weight=cfg.grad_weight,
            multiscale_weight=cfg.multiscale_weight, return_recon=True,
        )  # fmt: skip
        if adversarial and self.disc is not None:
            self.disc.requires_grad_(False)
            g, fm = adversarial_terms(self.disc, images, recon)
            self.disc.requires_grad_(True)
            loss = loss + cfg.gan_weight * (g + cfg.feature_weight * fm)
            parts.update(g=float(g.detach()), fm=float(fm.detach()))
        return loss, parts, recon


def save_checkpoint(
    out: Path, step: int, vae: Autoencoder, disc: PatchDiscriminator | None, optimizers: dict, rng, state: dict
) -> Path:
    """Write a resumable checkpoint; `step.json` last, so a half-written folder is never resumed."""
    folder = out / "checkpoints" / f"step_{step:07d}"
    vae.save_pretrained(folder / "autoencoder", safe_serialization=True)
    torch.save(
        {
            **{k: o.state_dict() for k, o in optimizers.items()},
            "disc": disc.state_dict() if disc is not None else None,
            "torch_rng": torch.get_rng_state(),
        },
        folder / "optimizer.pt",
    )
    (folder / "step.json").write_text(json.dumps({"step": step, "rng": rng.bit_generator.state, **state}))
    for old in sorted((out / "checkpoints").glob("step_*"))[:-2]:  # keep the last two
        for f in sorted(old.rglob("*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
        old.rmdir()
    return folder


def _validate(vae: Autoencoder, val: torch.Tensor, masks: torch.Tensor, device) -> tuple[float, float, torch.Tensor]:
    """Whole-image and figure PSNR of the held-out renders' round trips, and the round trips."""
    vae.eval()
    with torch.no_grad():
        recon = torch.cat([vae(val[i : i + 4].to(device)).sample.cpu() for i in range(0, len(val), 4)])
    vae.train()
    return psnr(recon, val), psnr(recon, val, masks), recon


def main(argv: list[str] | None = None) -> Path:
    """Train, checkpoint, measure the latent scale and save `OUT/final/`; returns that folder."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    parser.add_argument("--init", help="start from this trained autoencoder (a folder, or one holding autoencoder/)")
    args, cfg = parse_with_preset(parser, AE_PRESETS, argv)
    cfg: AEPreset

    # 1. Set up: threads, accelerator, log, held-out renders.
    torch.set_num_threads(cfg.num_threads)
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision if torch.cuda.is_available() else "no")
    device = accelerator.device
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = RunLog(out / "log.txt", accelerator.is_main_process)
    log(f"train_ae preset={args.preset} {json.dumps(preset_dict(cfg))}")
    val, val_masks = held_out(cfg.image_size)

    # 2. Model, discriminator and optimisers (fresh, or from the latest checkpoint).
    step, state = 0, {"elapsed": 0.0, "losses": {}, "curve": []}
    rng = np.random.default_rng(cfg.seed + accelerator.process_index)
    torch.manual_seed(cfg.seed + accelerator.process_index)
    ckpt = latest_checkpoint(out) if args.resume else None
    if ckpt is not None:
        vae = load_autoencoder(ckpt / "autoencoder")
    elif args.init:  # fine-tune: the architecture comes from the given model, not the preset
        init = Path(args.init) / "autoencoder" if (Path(args.init) / "autoencoder").is_dir() else Path(args.init)
        vae = load_autoencoder(init)
        log(f"initialised from {init}")
    else:
        vae = build(cfg)
    if not cfg.train_encoder:
        for name, p in vae.named_parameters():
            p.requires_grad_(not name.startswith(("encoder", "quant_conv")))
        log("decoder only: the encoder (and so the latent space and its scaling) stays as it is")
    disc = PatchDiscriminator() if cfg.gan_weight > 0 else None
    optimizers = {"optimizer": torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=cfg.lr,
                                                 betas=(0.9, 0.99), weight_decay=0.0)}  # fmt: skip
    if disc is not None:
        optimizers["disc_optimizer"] = torch.optim.AdamW(disc.parameters(), lr=cfg.lr, betas=(0.5, 0.9))
    if ckpt is not None:
        saved = torch.load(ckpt / "optimizer.pt", weights_only=True)
        for k, o in optimizers.items():
            if saved.get(k) is not None:
                o.load_state_dict(saved[k])
        if disc is not None and saved.get("disc") is not None:
            disc.load_state_dict(saved["disc"])
        torch.set_rng_state(saved["torch_rng"])
        meta = json.loads((ckpt / "step.json").read_text())
        step, rng.bit_generator.state = meta.pop("step"), meta.pop("rng")
        state.update(meta)
        log(f"resumed from {ckpt} at step {step}")
    model = vae
    train_module = AELoss(vae, cfg, disc)
    train_module, *opts = accelerator.prepare(train_module, *optimizers.values())
    optimizers = dict(zip(optimizers, opts))
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    log(f"autoencoder: {type(model).__name__}, {n_params:.2f}M parameters, {cfg.latent_channels} latent channels")

    # 3. Training loop; the stream continues where the run left off (each step renders `batch_size / 2` images).
    crops = RenderCrops(cfg, start=accelerator.process_index * 10**8 + step * cfg.batch_size // 2)
    window = LossWindow()
    t_start, start_step, elapsed0 = time.time(), step, state["elapsed"]
    progress = run_progress(step, cfg.steps, elapsed0, cfg.minutes)
    while progress < 1.0:
        lr = cfg.lr * lr_factor(step, cfg.warmup, progress)
        for o in optimizers.values():
            for group in o.param_groups:
                group["lr"] = lr
        batch = crops.batch(rng).to(device)
        adversarial = disc is not None and step >= cfg.gan_start
        with accelerator.autocast():
            loss, parts, recon = train_module(batch, adversarial)
        optimizers["optimizer"].zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizers["optimizer"].step()
        if adversarial:
            with accelerator.autocast():
                d_loss = discriminator_loss(disc, batch, recon)
            optimizers["disc_optimizer"].zero_grad(set_to_none=True)
            accelerator.backward(d_loss)
            optimizers["disc_optimizer"].step()
            parts["d"] = float(d_loss.detach())
        step += 1
        state["elapsed"] = elapsed0 + time.time() - t_start
        progress = run_progress(step, cfg.steps, state["elapsed"], cfg.minutes)
        window.add(parts)
        if step % cfg.log_every == 0 or progress >= 1.0:
            state["losses"], line = window.flush(step, cfg.steps, lr, progress)
            log(line)
        if accelerator.is_main_process and (step % cfg.sample_every == 0 or progress >= 1.0):
            whole, figure, recon_val = _validate(model, val, val_masks, device)
            state["curve"].append([step, round(state["elapsed"] / 3600, 4), round(whole, 2), round(figure, 2)])
            save_grid(torch.cat([val[:8], recon_val[:8]]), out / "samples" / f"step_{step:07d}.png", nrow=8)
            log(f"step {step} val PSNR {whole:.2f} dB, figure {figure:.2f} dB ({state['elapsed'] / 3600:.2f} h)")
        if accelerator.is_main_process and step % cfg.checkpoint_every == 0 and progress < 1.0:
            save_checkpoint(out, step, model, disc, optimizers, rng, state)
    accelerator.wait_for_everyone()

    # 4. Measure the latent statistics on full-size renders and save the final folder.
    final = out / "final"
    if accelerator.is_main_process:
        model.eval()
        if cfg.train_encoder:  # a frozen encoder keeps the scaling its UNet was trained with
            whole = dataclasses.replace(cfg, crop=cfg.image_size, batch_size=16, figure_crops=0.0)
            stats = RenderCrops(whole, start=10**9)
            mean, std = measure_latent_stats(model, (stats.batch(rng) for _ in range(25)))
            model.register_to_config(scaling_factor=1.0 / std, shift_factor=mean)
        whole, figure, _ = _validate(model, val, val_masks, device)
        model.save_pretrained(final / "autoencoder", safe_serialization=True)
        save_checkpoint(out, step, model, disc, optimizers, rng, state)
        info = {
            "model": "autoencoder",
            "steps": step,
            "seconds": round(state["elapsed"], 1),
            "steps_per_second": round((step - start_step) / max(time.time() - t_start, 1e-9), 4),
            "data": cfg.data or "fresh renders (training.synth.make_sample)",
            "machine": machine(),
            "final_losses": state["losses"],
            "val_psnr_db": round(whole, 2),
            "val_psnr_figure_db": round(figure, 2),
            "curve": {"columns": ["step", "hours", "psnr_db", "psnr_figure_db"], "rows": state["curve"]},
            "latent_mean": float(model.config.shift_factor),
            "latent_std": 1.0 / float(model.config.scaling_factor),
            "preset": args.preset,
            "config": preset_dict(cfg),
        }
        (final / "training_info.json").write_text(json.dumps(info, indent=2))
        log(f"saved {final}/autoencoder: val PSNR {whole:.2f} dB (figure {figure:.2f}), {step} steps in "
            f"{state['elapsed'] / 60:.1f} min")  # fmt: skip
    return final


if __name__ == "__main__":
    main()
