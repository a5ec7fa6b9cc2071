"""Train the pose decoder (`models.autoencoder.PoseDecoder`): the source model's latents of a half-size render,
decoded at full size with the pose's help, against the full-size render of the same character in the same pose.

    python -m training.train_decoder --out runs/decoder --preset cpu [--resume] [--init DIR] [--minutes M ...]

The renderer draws any size from the same (seed, index), so every step renders fresh characters twice (half size
for the fixed source encoder, full size as the target). Crops are taken on the latent grid (a multiple of the
decoder's 8 pixels) and centred on the figure or the face most of the time. Writes `OUT/log.txt`,
`OUT/samples/step_NNNNNNN.png` (rows: renders, the source's own decoding enlarged, this decoder's), resumable
checkpoints, and at the end `OUT/final/decoder/` with `OUT/final/training_info.json`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.autoencoder import PoseDecoder, encode, enlarged_decode, image_loss, load_autoencoder, pose_decode, psnr
from models.condition import CONDITION_CHANNELS, condition_map
from training.data import save_grid, to_tensor
from training.presets import DECODER_PRESETS, DecoderPreset
from training.runs import Run, start_run
from training.train_ae import NUM_VAL, VAL_SEED, AdversarialTrainer, PatchDiscriminator, add_adversarial


def source_autoencoder(folder: str | Path):
    """The frozen autoencoder whose latents are decoded (a pipeline folder or an autoencoder folder)."""
    folder = Path(folder)
    folder = folder / "autoencoder" if (folder / "autoencoder").is_dir() else folder
    return load_autoencoder(folder).eval().requires_grad_(False)


def rendered_pair(seed: int, index: int, size: int, wide: bool):
    """The full-size render of sample `index` and the half-size one of the same character in the same pose."""
    from training.synth import make_sample

    big = make_sample(seed, index, size, wide=wide)["render"]
    small = make_sample(seed, index, size // 2, wide=wide)["render"]
    return big, small


class DecoderCrops:
    """Batches of (latent crop, pose-map crop, image crop) from fresh render pairs."""

    def __init__(self, cfg: DecoderPreset, vae, start: int = 0):
        self.cfg, self.vae, self.index = cfg, vae, start

    def _origin(self, rng: np.random.Generator, big) -> tuple[int, int]:
        """A crop's top-left corner in output pixels, on the latent grid."""
        size, c, f = self.cfg.image_size, self.cfg.crop, 8
        u = rng.random()
        centre = None
        if u < self.cfg.face_crops and big.pose.visible[0]:
            centre = big.pose.xy[0] * size
        elif u < self.cfg.face_crops + self.cfg.figure_crops and big.mask.any():
            ys, xs = np.nonzero(big.mask)
            k = rng.integers(len(ys))
            centre = np.array([xs[k], ys[k]], dtype=np.float64)
        if centre is None:
            return int(rng.integers(0, (size - c) // f + 1)) * f, int(rng.integers(0, (size - c) // f + 1)) * f
        centre = centre + rng.normal(0, c / 8, 2)
        x, y = (int(np.clip(round((v - c / 2) / f), 0, (size - c) // f)) * f for v in centre)
        return y, x

    @torch.no_grad()
    def batch(self, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        """`batch_size` crops, two a render pair: scaled latents (noised), pose maps (some dropped), the source's
        decoding of those latents enlarged, and the images."""
        cfg, c = self.cfg, self.cfg.crop
        pairs = []
        for _ in range((cfg.batch_size + 1) // 2):
            pairs.append(rendered_pair(cfg.seed, self.index, cfg.image_size, rng.random() < cfg.wide))
            self.index += 1
        small = to_tensor(np.stack([np.array(s.image.convert("RGB")) for _, s in pairs]))
        latents = encode(self.vae, small).float()
        latents = latents + torch.randn_like(latents) * cfg.latent_noise * torch.rand(len(pairs), 1, 1, 1)
        bases = enlarged_decode(self.vae, latents, 8).float()
        grid = cfg.image_size // 4
        lat, cond, img, base = [], [], [], []
        for k, (big, _) in enumerate(pairs):
            image = to_tensor(np.array(big.image.convert("RGB"))[None])[0]
            pose_map = torch.from_numpy(condition_map(big.pose, grid, grid))
            if rng.random() < cfg.cond_dropout:
                pose_map = torch.zeros_like(pose_map)
            for _ in range(2):
                y, x = self._origin(rng, big)
                lat.append(latents[k, :, y // 8 : (y + c) // 8, x // 8 : (x + c) // 8])
                cond.append(pose_map[:, y // 4 : (y + c) // 4, x // 4 : (x + c) // 4])
                img.append(image[:, y : y + c, x : x + c])
                base.append(bases[k, :, y : y + c, x : x + c])
        n = cfg.batch_size
        return torch.stack(lat[:n]), torch.stack(cond[:n]), torch.stack(base[:n]), torch.stack(img[:n])


def held_out(cfg: DecoderPreset, vae) -> dict[str, torch.Tensor | list]:
    """`NUM_VAL` held-out render pairs (seed VAL_SEED, half wide): latents, poses, full-size images and masks."""
    pairs = [rendered_pair(VAL_SEED, i, cfg.image_size, i % 2 == 1) for i in range(NUM_VAL)]
    small = to_tensor(np.stack([np.array(s.image.convert("RGB")) for _, s in pairs]))
    with torch.no_grad():
        latents = encode(vae, small).float()
        plain = enlarged_decode(vae, latents, 8).float()
    return {
        "latents": latents,
        "poses": [b.pose for b, _ in pairs],
        "images": to_tensor(np.stack([np.array(b.image.convert("RGB")) for b, _ in pairs])),
        "masks": torch.from_numpy(np.stack([b.mask for b, _ in pairs]))[:, None],
        "plain": plain,
    }


class DecoderLoss(nn.Module):
    """The decoder with its training loss as `forward` (so DDP syncs its gradients)."""

    def __init__(self, decoder: PoseDecoder, cfg: DecoderPreset, disc: PatchDiscriminator | None):
        super().__init__()
        self.decoder, self.cfg, self.disc = decoder, cfg, disc

    def forward(
        self, latents, cond, base, images, adversarial: bool
    ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        """The loss of one batch, its parts, and the decoded crops (for the discriminator's step)."""
        cfg = self.cfg
        recon = self.decoder(latents, cond, base)
        loss, parts = image_loss(recon, images, cfg.grad_weight, cfg.multiscale_weight, cfg.detail_weight)
        if adversarial and self.disc is not None:
            loss = add_adversarial(loss, parts, self.disc, images, recon, cfg)
        return loss, parts, recon


OPTIONS = ["--out", "--resume", ("--init", {"help": "start from this trained decoder (a folder holding decoder/)"})]


class Trainer(AdversarialTrainer):
    """The decoder, the discriminator and their optimisers, and what the training loop does with them."""

    def __init__(self, run: Run):
        """The frozen source encoder, held-out pairs, and the decoder: fresh, from `--init`, or resumed."""
        cfg, accelerator, self.run = run.cfg, run.accelerator, run
        self.vae = source_autoencoder(cfg.source)
        self.val = held_out(cfg, self.vae)
        self.curve: list[list[float]] = []
        self.rng = np.random.default_rng(cfg.seed + accelerator.process_index)
        torch.manual_seed(cfg.seed + accelerator.process_index)
        ckpt = run.latest_checkpoint()
        if ckpt is not None:
            decoder = PoseDecoder.from_pretrained(ckpt / "decoder")
        elif run.args.init:
            init = Path(run.args.init)
            decoder = PoseDecoder.from_pretrained(init / "decoder" if (init / "decoder").is_dir() else init)
            run.log(f"initialised from {init}")
        else:
            decoder = PoseDecoder(
                self.vae.config.latent_channels, CONDITION_CHANNELS, tuple(cfg.widths), tuple(cfg.blocks),
                cfg.head_width, cfg.image_size,
            )  # fmt: skip
        self.decoder = decoder
        self.setup("decoder", decoder, lambda disc: DecoderLoss(decoder, cfg, disc), ckpt)
        n_params = sum(p.numel() for p in decoder.parameters()) / 1e6
        run.log(f"pose decoder: {n_params:.2f}M parameters, source {cfg.source}")
        self.crops = DecoderCrops(cfg, self.vae, start=accelerator.process_index * 10**8 + run.step * cfg.batch_size)

    def batch(self) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Latent, pose-map and image crops: the loss module's inputs, and the real images."""
        latents, cond, base, images = (t.to(self.run.accelerator.device) for t in self.crops.batch(self.rng))
        return (latents, cond, base, images), images

    def _validate(self) -> tuple[float, float, torch.Tensor]:
        """Whole-image and figure PSNR of the held-out pairs' decodings, and the decodings."""
        val, device = self.val, self.run.accelerator.device
        self.decoder.eval()
        with torch.no_grad():
            out = (
                pose_decode(self.decoder.to(device), self.vae.to(device), val["latents"].to(device), val["poses"])
                .float()
                .cpu()
            )
        self.decoder.train()
        return psnr(out, val["images"]), psnr(out, val["images"], val["masks"]), out

    def sample(self) -> None:
        """PSNRs of the held-out decodings (logged, kept for the curve) and a grid: renders, source, decoder."""
        run, val = self.run, self.val
        whole, figure, out = self._validate()
        hours = run.seconds() / 3600
        self.curve.append([run.step, round(hours, 4), round(whole, 2), round(figure, 2)])
        grid = torch.cat([val["images"][:8], val["plain"][:8], out[:8]])
        save_grid(grid, run.out / "samples" / f"step_{run.step:07d}.png", nrow=8)
        run.log(f"step {run.step} val PSNR {whole:.2f} dB, figure {figure:.2f} dB ({hours:.2f} h)")

    def save_final(self, seconds: float) -> Path:
        """The last checkpoint, `OUT/final/decoder/` and its `training_info.json` (with the source's own decoding,
        enlarged, as the baseline)."""
        val = self.val
        whole, figure, _ = self._validate()
        plain = psnr(val["plain"], val["images"]), psnr(val["plain"], val["images"], val["masks"])
        self.run.log(f"the source's decoding enlarged: {plain[0]:.2f} dB, figure {plain[1]:.2f}")
        return self.write_final(
            seconds, (whole, figure), "fresh render pairs (training.synth.make_sample at full and half size)",
            source_enlarged_psnr_db=[round(v, 2) for v in plain],
        )  # fmt: skip


def main(argv: list[str] | None = None) -> Path:
    """Train, checkpoint and save `OUT/final/`; returns that folder."""
    run = start_run("train_decoder", __doc__, DECODER_PRESETS, argv, OPTIONS, accelerate=True)
    return run.train(Trainer(run))


if __name__ == "__main__":
    main()
