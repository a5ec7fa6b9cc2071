"""Train the image autoencoder (`models/autoencoder.py`) on fresh renders streamed from the renderer.

    python -m training.train_ae --out runs/ae256 --preset cpu [--resume] [--steps N ...]
    python -m training.train_ae --out runs/ae --data DIR        # a folder of images (images/*.png) instead

Every step draws new characters in new poses (`training.synth.make_sample`, ~4 ms a 256-px render), so the model
never sees an image twice; crops are centred on the figure most of the time (its eyes and outlines are a few
percent of the pixels). Writes `OUT/log.txt`, `OUT/samples/step_NNNNNNN.png` (top: held-out renders, bottom:
round trips), resumable checkpoints `OUT/checkpoints/step_NNNNNNN/`, and at the end `OUT/final/autoencoder/`
(`save_pretrained`, safetensors, with the measured `scaling_factor` / `shift_factor`) and
`OUT/final/training_info.json`. The same script runs on CPU and (through accelerate) on GPUs.

    python -m training.train_ae --out runs/dd --init checkpoints/autoencoder_256 --denoiser runs/ldm256/final

trains the decoder alone to draw renders from the latents that a pipeline's UNet denoises them back to (`--denoiser`,
`DenoisedCrops`), and writes that pipeline with the new decoder to `OUT/final/pipeline/`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.autoencoder import (
    Autoencoder,
    ShuffleAutoencoder,
    build_autoencoder,
    decode,
    downsample_factor,
    encode,
    load_autoencoder,
    measure_latent_stats,
    psnr,
    reconstruction_loss,
)
from training.data import list_items, load_images, save_grid, to_tensor
from training.presets import AE_PRESETS, AEPreset, preset_dict
from training.runs import Run, machine, start_run

NUM_VAL = 16  # held-out renders for the PSNR in the log and the sample grids
VAL_SEED = 90_001  # renderer seed of the held-out renders (training streams seed `cfg.seed`)
# the validation curve's columns: round trips, then (a denoising decoder) decodings of the denoised latents
CURVE_COLUMNS = ["step", "hours", "psnr_db", "psnr_figure_db", "denoised_psnr_db", "denoised_psnr_figure_db"]


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


def crop_corner(
    mask: np.ndarray | None,
    rng: np.random.Generator,
    crop: int,
    shape: tuple[int, int],
    figure_share: float,
    grid: int = 1,
) -> tuple[int, int]:
    """The top-left corner of a `crop`-cell crop of an image of `shape` cells of `grid` pixels: centred on a random
    figure pixel of `mask` with probability `figure_share` (faces are rare pixels), else anywhere."""
    h, w = shape
    if mask is not None and mask.any() and rng.random() < figure_share:
        ys, xs = np.nonzero(mask)
        k = rng.integers(len(ys))
        return int(np.clip(ys[k] // grid - crop // 2, 0, h - crop)), int(
            np.clip(xs[k] // grid - crop // 2, 0, w - crop)
        )
    return int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))


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
                y, x = crop_corner(mask, rng, c, (h, w), self.cfg.figure_crops)
                patch = image[y : y + c, x : x + c]
                out.append(patch[:, ::-1] if rng.random() < 0.5 else patch)
        return to_tensor(np.stack(out[: self.cfg.batch_size]))


class DenoisedCrops(RenderCrops):
    """Crops of the latents that a pipeline's UNet denoises fresh renders back to, with the renders' crops: the
    render's latent noised to a step of the sampler's schedule (t <= `denoise_max_t`), then DDIM to t = 0 with the
    render's pose and style code (SDEdit, Meng et al. 2021), so the errors are the sampler's own on a known layout."""

    def __init__(self, cfg: AEPreset, start: int = 0):
        from models.pipeline import PosePipeline
        from models.samplers import make_scheduler

        super().__init__(cfg, start)
        self.pipe = PosePipeline.from_pretrained(cfg.denoiser)
        self.scheduler = make_scheduler("ddim", self.pipe.scheduler_config)
        self.scheduler.set_timesteps(cfg.denoise_steps)
        self.starts = [k for k, t in enumerate(self.scheduler.timesteps) if int(t) <= cfg.denoise_max_t]

    @torch.no_grad()
    def denoised(
        self,
        renders: list,
        start: int | None,
        generator: torch.Generator | None = None,
        images: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scaled latents `(B, C, h, w)` (on the CPU) of the renders (`images`: theirs as a [-1, 1] tensor, when
        already made) after noising to sampler step `start` and DDIM to t = 0 (`start` None: the encoder's own)."""
        from training.data import condition_maps_torch

        pipe, size = self.pipe, self.cfg.image_size
        images = (_images(renders) if images is None else images).to(pipe.device)
        z = encode(pipe.vae, images)
        if start is None:
            return z.float().cpu()
        keypoints = torch.from_numpy(np.stack([r.pose.keypoints for r in renders])).to(pipe.device)
        cond = condition_maps_torch(keypoints, size)
        with torch.autocast(pipe.device.type, torch.bfloat16, enabled=self.cfg.mixed_precision == "bf16"):
            # the posterior mean, as the UNet was trained to read; the prior's mean for a pipeline without an encoder
            s = pipe.style_encoder(images)[0].float() if pipe.style_encoder else torch.zeros(len(z), pipe.style_dim)
            timesteps = self.scheduler.timesteps[start:]
            a = self.scheduler.alphas_cumprod[int(timesteps[0])].to(z)
            z = a.sqrt() * z + (1 - a).sqrt() * torch.randn(z.shape, generator=generator).to(z)
            for t in timesteps:
                out = pipe.predict(z, t, cond, s.to(z), self.cfg.denoise_guidance)
                z = self.scheduler.step(out.float(), t, z).prev_sample
        return z.float().cpu()

    def batch(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        """`batch_size` crops (two a render, centred on a figure pixel with probability `figure_crops`) of the
        denoised latents and of the renders, aligned on the latent grid."""
        from training.synth import make_sample

        cfg, f = self.cfg, downsample_factor(self.pipe.vae)
        renders = [make_sample(cfg.seed, self.index + i, cfg.image_size, wide=True)["render"]
                   for i in range(cfg.batch_size // 2)]  # fmt: skip
        self.index += len(renders)
        images = _images(renders)
        clean = rng.random() < cfg.denoise_clean
        z = self.denoised(renders, None if clean else int(rng.choice(self.starts)), images=images)
        c, side = cfg.crop // f, cfg.image_size // f
        latents, crops = [], []
        for r, image, zi in zip(renders, images, z):
            for _ in range(2):
                y, x = crop_corner(r.mask, rng, c, (side, side), cfg.figure_crops, grid=f)
                latents.append(zi[:, y : y + c, x : x + c])
                crops.append(image[:, y * f : (y + c) * f, x * f : (x + c) * f])
        return torch.stack(latents), torch.stack(crops)


def _images(renders: list) -> torch.Tensor:
    """The renders' images as one [-1, 1] tensor `(B, 3, H, W)`."""
    return to_tensor(np.stack([np.asarray(r.image.convert("RGB")) for r in renders]))


def held_out(size: int, n: int = NUM_VAL) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` held-out renders (seed VAL_SEED) as [-1, 1] tensors and their figure masks `(n, 1, H, W)`."""
    from training.synth import make_sample

    renders = [make_sample(VAL_SEED, i, size)["render"] for i in range(n)]
    images = _images(renders)
    masks = torch.from_numpy(np.stack([r.mask for r in renders]))[:, None]
    return images, masks


def encoder_trains(cfg: AEPreset) -> bool:
    """Whether the run trains the encoder (a denoising decoder keeps it, and so the latent space, as it is)."""
    return cfg.train_encoder and not cfg.denoiser


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

    def forward(
        self, images: torch.Tensor, adversarial: bool, latents: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        """The loss of one batch (decoded from `latents` when given), its parts, and the reconstructions (for the
        discriminator's step)."""
        cfg = self.cfg
        loss, parts, recon = reconstruction_loss(
            self.vae, images, kl_weight=cfg.kl_weight, grad_weight=cfg.grad_weight,
            multiscale_weight=cfg.multiscale_weight, return_recon=True, latents=latents,
        )  # fmt: skip
        if adversarial and self.disc is not None:
            self.disc.requires_grad_(False)
            g, fm = adversarial_terms(self.disc, images, recon)
            self.disc.requires_grad_(True)
            loss = loss + cfg.gan_weight * (g + cfg.feature_weight * fm)
            parts.update(g=float(g.detach()), fm=float(fm.detach()))
        return loss, parts, recon


def _validate(vae: Autoencoder, val: torch.Tensor, masks: torch.Tensor, device) -> tuple[float, float, torch.Tensor]:
    """Whole-image and figure PSNR of the held-out renders' round trips, and the round trips."""
    vae.eval()
    with torch.no_grad():
        recon = torch.cat([vae(val[i : i + 4].to(device)).sample.cpu() for i in range(0, len(val), 4)])
    vae.train()
    return psnr(recon, val), psnr(recon, val, masks), recon


OPTIONS = [
    "--out",
    "--resume",
    ("--init", {"help": "start from this trained autoencoder (a folder, or one holding autoencoder/)"}),
]


class Trainer:
    """The autoencoder, the discriminator and their optimisers, and what the training loop does with them."""

    def __init__(self, run: Run):
        """Held-out renders; the models: fresh, from `--init`, or (`--resume`) from the latest checkpoint."""
        cfg, accelerator, self.run = run.cfg, run.accelerator, run
        self.val, self.val_masks = held_out(cfg.image_size)
        self.curve: list[list[float]] = []  # step, hours, PSNR, figure PSNR at each validation
        self.rng = np.random.default_rng(cfg.seed + accelerator.process_index)
        torch.manual_seed(cfg.seed + accelerator.process_index)
        ckpt = run.latest_checkpoint()
        if ckpt is not None:
            vae = load_autoencoder(ckpt / "autoencoder")
        elif run.args.init:  # fine-tune: the architecture comes from the given model, not the preset
            init = Path(run.args.init)
            init = init / "autoencoder" if (init / "autoencoder").is_dir() else init
            vae = load_autoencoder(init)
            run.log(f"initialised from {init}")
        else:
            vae = build(cfg)
        if not encoder_trains(cfg):
            for name, p in vae.named_parameters():
                p.requires_grad_(not name.startswith(("encoder", "quant_conv")))
            run.log("decoder only: the encoder (and so the latent space and its scaling) stays as it is")
        self.vae, self.disc = vae, PatchDiscriminator() if cfg.gan_weight > 0 else None
        optimizers = {"optimizer": torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=cfg.lr,
                                                     betas=(0.9, 0.99), weight_decay=0.0)}  # fmt: skip
        if self.disc is not None:
            optimizers["disc_optimizer"] = torch.optim.AdamW(self.disc.parameters(), lr=cfg.lr, betas=(0.5, 0.9))
        if ckpt is not None:
            saved, meta = run.read_checkpoint(ckpt)
            for k, o in optimizers.items():
                if saved.get(k) is not None:
                    o.load_state_dict(saved[k])
            if self.disc is not None and saved.get("disc") is not None:
                self.disc.load_state_dict(saved["disc"])
            torch.set_rng_state(saved["torch_rng"])
            self.rng.bit_generator.state, self.curve = meta["rng"], meta["curve"]
        self.train_module, *opts = accelerator.prepare(AELoss(vae, cfg, self.disc), *optimizers.values())
        self.optimizers = dict(zip(optimizers, opts))
        n_params = sum(p.numel() for p in vae.parameters()) / 1e6
        run.log(f"autoencoder: {type(vae).__name__}, {n_params:.2f}M parameters, {cfg.latent_channels} latent channels")
        # The stream continues where the run left off (each step renders `batch_size / 2` images).
        start = accelerator.process_index * 10**8 + run.step * cfg.batch_size // 2
        self.crops = DenoisedCrops(cfg, start) if cfg.denoiser else RenderCrops(cfg, start)
        self.val_denoised = self._denoised_val() if cfg.denoiser else None

    def step(self, step: int, lr: float) -> dict[str, float]:
        """One step of the autoencoder (and, from `gan_start`, of the discriminator); returns the loss parts."""
        cfg, accelerator, optimizers = self.run.cfg, self.run.accelerator, self.optimizers
        for o in optimizers.values():
            for group in o.param_groups:
                group["lr"] = lr
        batch, latents = self.crops.batch(self.rng), None
        if isinstance(batch, tuple):  # a denoising decoder: latents and the images to draw from them
            latents, batch = (x.to(accelerator.device) for x in batch)
        batch = batch.to(accelerator.device)
        adversarial = self.disc is not None and step >= cfg.gan_start
        with accelerator.autocast():
            loss, parts, recon = self.train_module(batch, adversarial, latents)
        optimizers["optimizer"].zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(self.vae.parameters(), 1.0)
        optimizers["optimizer"].step()
        if adversarial:
            with accelerator.autocast():
                d_loss = discriminator_loss(self.disc, batch, recon)
            optimizers["disc_optimizer"].zero_grad(set_to_none=True)
            accelerator.backward(d_loss)
            optimizers["disc_optimizer"].step()
            parts["d"] = float(d_loss.detach())
        return parts

    def _denoised_val(self) -> torch.Tensor:
        """The held-out renders' latents as the denoiser leaves them from each start step in turn (fixed noise)."""
        from training.synth import make_sample

        crops, g = self.crops, torch.Generator().manual_seed(VAL_SEED)
        renders = [make_sample(VAL_SEED, i, self.run.cfg.image_size)["render"] for i in range(NUM_VAL)]
        starts = [crops.starts[i % len(crops.starts)] for i in range(NUM_VAL)]
        return torch.cat([crops.denoised([r], k, g) for r, k in zip(renders, starts)])

    def sample(self) -> None:
        """PSNRs of the held-out renders' round trips (and, for a denoising decoder, of their denoised latents'
        decodings), logged and kept for the curve, and a grid of them."""
        run = self.run
        whole, figure, recon = _validate(self.vae, self.val, self.val_masks, run.accelerator.device)
        hours = run.seconds() / 3600
        row = [run.step, round(hours, 4), round(whole, 2), round(figure, 2)]
        rows = [self.val[:8], recon[:8]]
        text = f"step {run.step} val PSNR {whole:.2f} dB, figure {figure:.2f} dB"
        if self.val_denoised is not None:
            with torch.no_grad():
                drawn = decode(self.vae, self.val_denoised.to(run.accelerator.device)).float().cpu().clamp(-1, 1)
            d, d_fig = psnr(drawn, self.val), psnr(drawn, self.val, self.val_masks)
            row += [round(d, 2), round(d_fig, 2)]
            rows.append(drawn[:8])
            text += f"; from denoised latents {d:.2f} dB, figure {d_fig:.2f} dB"
        self.curve.append(row)
        save_grid(torch.cat(rows), run.out / "samples" / f"step_{run.step:07d}.png", nrow=8)
        run.log(f"{text} ({hours:.2f} h)")

    def checkpoint(self, seconds: float | None = None) -> None:
        """A resumable checkpoint: the autoencoder, the optimisers, the discriminator and both random states."""
        trainer = {k: o.state_dict() for k, o in self.optimizers.items()}
        trainer |= {
            "disc": self.disc.state_dict() if self.disc is not None else None,
            "torch_rng": torch.get_rng_state(),
        }
        seconds = self.run.seconds() if seconds is None else seconds
        meta = {"rng": self.rng.bit_generator.state, "elapsed": seconds, "losses": self.run.losses, "curve": self.curve}
        self.run.write_checkpoint({"autoencoder": self.vae}, trainer, meta)

    def save_final(self, seconds: float) -> Path:
        """Measure the latent statistics on full-size renders; the last checkpoint and `OUT/final/`."""
        run, cfg, vae, final = self.run, self.run.cfg, self.vae, self.run.out / "final"
        vae.eval()
        if encoder_trains(cfg):  # a frozen encoder keeps the scaling its UNet was trained with
            whole = dataclasses.replace(cfg, crop=cfg.image_size, batch_size=16, figure_crops=0.0)
            stats = RenderCrops(whole, start=10**9)
            per_channel = cfg.latent_norm == "channel"
            mean, std = measure_latent_stats(vae, (stats.batch(self.rng) for _ in range(25)), per_channel=per_channel)
            scale = [1.0 / v for v in std] if per_channel else 1.0 / std
            vae.register_to_config(scaling_factor=scale, shift_factor=mean)
        whole, figure, _ = _validate(vae, self.val, self.val_masks, run.accelerator.device)
        vae.save_pretrained(final / "autoencoder", safe_serialization=True)
        if cfg.denoiser:  # the denoiser's pipeline drawing through this decoder: what to evaluate, and to ship
            pipe = self.crops.pipe
            pipe.vae = vae
            pipe.save_pretrained(final / "pipeline")
        self.checkpoint(seconds)
        info = {
            "model": "autoencoder",
            "steps": run.step,
            "seconds": round(seconds, 1),
            "steps_per_second": round(run.steps_per_second(), 4),
            "data": cfg.data or "fresh renders (training.synth.make_sample)",
            "machine": machine(),
            "final_losses": run.losses,
            "val_psnr_db": round(whole, 2),
            "val_psnr_figure_db": round(figure, 2),
            "curve": {"columns": CURVE_COLUMNS[: len(self.curve[-1]) if self.curve else 4], "rows": self.curve},
            "latent_mean": vae.config.shift_factor,
            "latent_std": np.round(1.0 / np.asarray(vae.config.scaling_factor), 6).tolist(),
            "preset": run.args.preset,
            "config": preset_dict(cfg),
        }
        (final / "training_info.json").write_text(json.dumps(info, indent=2))
        run.log(f"saved {final}/autoencoder: val PSNR {whole:.2f} dB (figure {figure:.2f}), {run.step} steps in "
                f"{seconds / 60:.1f} min")  # fmt: skip
        return final


def main(argv: list[str] | None = None) -> Path:
    """Train, checkpoint, measure the latent scale and save `OUT/final/`; returns that folder."""
    run = start_run("train_ae", __doc__, AE_PRESETS, argv, OPTIONS, accelerate=True)
    return run.train(Trainer(run))


if __name__ == "__main__":
    main()
