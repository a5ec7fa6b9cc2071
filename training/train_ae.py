"""Train the image autoencoder (`models/autoencoder.py`) on a synth data folder.

    python -m training.train_ae --data DIR --out runs/ae --preset cpu [--resume] [--steps N ...]

Writes `OUT/log.txt`, `OUT/samples/step_NNNNNNN.png` (top: originals, bottom: reconstructions),
resumable checkpoints `OUT/checkpoints/step_NNNNNNN/`, and at the end `OUT/final/autoencoder/`
(diffusers `save_pretrained`, safetensors, with the measured `scaling_factor` / `shift_factor`)
and `OUT/final/training_info.json`. The same script runs on CPU and (through accelerate) on GPUs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from diffusers import AutoencoderKL

from models.autoencoder import build_autoencoder, measure_latent_stats, psnr, reconstruction_loss
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

NUM_VAL = 16  # held-out images for the PSNR in the log and the sample grids


def random_crops(images: np.ndarray, idx: np.ndarray, crop: int, rng: np.random.Generator) -> torch.Tensor:
    """A batch of random `crop`-side crops, each mirrored with probability 1/2, as [-1, 1] tensors."""
    _, h, w, _ = images.shape
    out = np.empty((len(idx), crop, crop, 3), dtype=np.uint8)
    for j, i in enumerate(idx):
        y = rng.integers(0, h - crop + 1)
        x = rng.integers(0, w - crop + 1)
        patch = images[i, y : y + crop, x : x + crop]
        out[j] = patch[:, ::-1] if rng.random() < 0.5 else patch
    return to_tensor(out)


class AELoss(torch.nn.Module):
    """The autoencoder with its training loss as `forward`, so DDP (multi-GPU) syncs its gradients."""

    def __init__(self, vae: AutoencoderKL, cfg: AEPreset):
        super().__init__()
        self.vae, self.cfg = vae, cfg

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one batch and its parts."""
        return reconstruction_loss(
            self.vae,
            images,
            kl_weight=self.cfg.kl_weight,
            grad_weight=self.cfg.grad_weight,
            multiscale_weight=self.cfg.multiscale_weight,
        )


def save_checkpoint(
    out: Path,
    step: int,
    vae: AutoencoderKL,
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
    losses: dict,
    elapsed: float,
) -> Path:
    """Write a resumable checkpoint; `step.json` last, so a half-written folder is never resumed."""
    folder = out / "checkpoints" / f"step_{step:07d}"
    vae.save_pretrained(folder / "autoencoder", safe_serialization=True)
    torch.save({"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()}, folder / "optimizer.pt")
    state = {"step": step, "rng": rng.bit_generator.state, "losses": losses, "elapsed": elapsed}
    (folder / "step.json").write_text(json.dumps(state))
    for old in sorted((out / "checkpoints").glob("step_*"))[:-2]:  # keep the last two
        for f in sorted(old.rglob("*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
        old.rmdir()
    return folder


def main(argv: list[str] | None = None) -> Path:
    """Train, checkpoint, measure the latent scale and save `OUT/final/`; returns that folder."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--data", required=True, help="synth data folder (images/, keypoints/)")
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    parser.add_argument("--init", help="start from this trained autoencoder (a folder, or one holding autoencoder/)")
    parser.add_argument("--workers", type=int, default=0, help="processes decoding the images (0: one per CPU)")
    args, cfg = parse_with_preset(parser, AE_PRESETS, argv)
    cfg: AEPreset

    # 1. Set up: threads, accelerator, log.
    torch.set_num_threads(cfg.num_threads)
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision if torch.cuda.is_available() else "no")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = RunLog(out / "log.txt", accelerator.is_main_process)
    log(f"train_ae preset={args.preset} {json.dumps(preset_dict(cfg))}")

    # 2. Data: every image in memory as uint8; the last NUM_VAL held out for the PSNR.
    stems = list_items(args.data, cfg.max_images)
    t0 = time.time()
    images = load_images(args.data, stems, cfg.image_size, args.workers)
    num_val = min(NUM_VAL, max(len(stems) // 10, 1)) if len(stems) > 1 else 0
    train_images, val_images = images[: len(images) - num_val], images[len(images) - num_val :]
    val = to_tensor(val_images) if num_val else to_tensor(images[:1])
    log(f"data: {len(train_images)} train, {num_val} val images from {args.data} ({time.time() - t0:.1f}s)")

    # 3. Model and optimiser (fresh, or from the latest checkpoint).
    step, elapsed, losses = 0, 0.0, {}
    rng = np.random.default_rng(cfg.seed + accelerator.process_index)
    torch.manual_seed(cfg.seed + accelerator.process_index)
    ckpt = latest_checkpoint(out) if args.resume else None
    if ckpt is not None:
        vae = AutoencoderKL.from_pretrained(ckpt / "autoencoder")
    elif args.init:  # fine-tune: the architecture comes from the given model, not the preset
        init = Path(args.init) / "autoencoder" if (Path(args.init) / "autoencoder").is_dir() else Path(args.init)
        vae = AutoencoderKL.from_pretrained(init)
        log(f"initialised from {init}")
    else:
        vae = build_autoencoder(
            cfg.block_out_channels, cfg.layers_per_block, cfg.latent_channels, cfg.norm_num_groups, cfg.mid_attention
        )
    if not cfg.train_encoder:
        vae.encoder.requires_grad_(False)
        if vae.quant_conv is not None:
            vae.quant_conv.requires_grad_(False)
        log("decoder only: the encoder (and so the latent space and its scaling) stays as it is")
    trainable = [p for p in vae.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
    if ckpt is not None:
        state = torch.load(ckpt / "optimizer.pt", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        meta = json.loads((ckpt / "step.json").read_text())
        step, elapsed, losses = meta["step"], meta["elapsed"], meta["losses"]
        rng.bit_generator.state = meta["rng"]
        log(f"resumed from {ckpt} at step {step}")
    model = vae
    train_module, optimizer = accelerator.prepare(AELoss(vae, cfg), optimizer)
    log(
        f"autoencoder: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
        f"f{2 ** (len(cfg.block_out_channels) - 1)}, {cfg.latent_channels} latent channels"
    )

    # 4. Training loop.
    crop = min(cfg.crop, images.shape[1])
    window = LossWindow()
    t_start, start_step = time.time(), step
    progress = run_progress(step, cfg.steps, elapsed, cfg.minutes)
    while progress < 1.0:
        lr = cfg.lr * lr_factor(step, cfg.warmup, progress)
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx = rng.integers(0, len(train_images), cfg.batch_size)
        batch = random_crops(train_images, idx, crop, rng).to(accelerator.device)
        with accelerator.autocast():
            loss, parts = train_module(batch)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(train_module.parameters(), 1.0)
        optimizer.step()
        step += 1
        progress = run_progress(step, cfg.steps, elapsed + time.time() - t_start, cfg.minutes)
        window.add(parts)
        if step % cfg.log_every == 0 or progress >= 1.0:
            losses, line = window.flush(step, cfg.steps, lr, progress)
            log(line)
        if accelerator.is_main_process and (step % cfg.sample_every == 0 or progress >= 1.0):
            with torch.no_grad():
                model.eval()
                recon = model(val.to(accelerator.device)).sample
                model.train()
            save_grid(torch.cat([val, recon.cpu()]), out / "samples" / f"step_{step:07d}.png", nrow=len(val))
            log(f"step {step} val PSNR {psnr(recon.cpu(), val):.2f} dB")
        if accelerator.is_main_process and step % cfg.checkpoint_every == 0 and progress < 1.0:
            save_checkpoint(out, step, model, optimizer, rng, losses, elapsed + time.time() - t_start)
    seconds = elapsed + time.time() - t_start
    accelerator.wait_for_everyone()

    # 5. Measure the latent statistics on full-size training images and save the final folder.
    final = out / "final"
    if accelerator.is_main_process:
        model.eval()
        batches = (to_tensor(train_images[i : i + 32]) for i in range(0, min(len(train_images), 1600), 32))
        mean, std = measure_latent_stats(model, batches)
        if cfg.train_encoder:  # a frozen encoder keeps the scaling its UNet was trained with
            model.register_to_config(scaling_factor=1.0 / std, shift_factor=mean)
        with torch.no_grad():
            val_psnr = psnr(model(val.to(accelerator.device)).sample.cpu(), val)
        model.save_pretrained(final / "autoencoder", safe_serialization=True)
        save_checkpoint(out, step, model, optimizer, rng, losses, seconds)
        info = {
            "model": "autoencoder",
            "steps": step,
            "seconds": round(seconds, 1),
            "steps_per_second": round((step - start_step) / max(time.time() - t_start, 1e-9), 4),
            "data": str(args.data),
            "num_images": len(train_images),
            "num_val": num_val,
            "machine": machine(),
            "final_losses": losses,
            "val_psnr_db": round(val_psnr, 2),
            "latent_mean": mean,
            "latent_std": std,
            "preset": args.preset,
            "config": preset_dict(cfg),
        }
        (final / "training_info.json").write_text(json.dumps(info, indent=2))
        (final / "autoencoder" / "training_info.json").write_text(json.dumps(info, indent=2))
        log(
            f"saved {final}/autoencoder: val PSNR {val_psnr:.2f} dB, latent mean {mean:.4f} std {std:.4f}, "
            f"{step} steps in {seconds / 60:.1f} min"
        )
    return final


if __name__ == "__main__":
    main()
