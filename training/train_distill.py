"""Distil the pose LDM into a few-step student for live previews (latent consistency distillation: Luo et al. 2023,
"Latent Consistency Models", Algorithm 1), with the teacher's pose guidance folded in.

    python -m training.train_distill --teacher weights --data data/train256 --out runs/lcm [--resume] [--minutes 60]

1. The data set's latents (the teacher's autoencoder, cached in `OUT/cache/`), the condition maps from the keypoints,
   and s from the teacher's style encoder (its posterior mean of each image).
2. Each step: n ~ U{0..N-1} on the skipping schedule t_n (`models.samplers.skip_timesteps`, N = 50),
   z_{t_n} = sqrt(a) z_0 + sqrt(1 - a) eps; one DDIM step of the guided teacher, u + g (c - u), from t_n to
   t_{n-1} gives z'; the student's consistency function f(z, t) = c_skip(t) z + c_out(t) z_0(z, t)
   (`consistency_scalings`) must agree with the target network's (an EMA of the student) at z':
       L = pseudo-Huber(f_student(z_{t_n}, t_n) - f_target(z', t_{n-1})).
   The student starts as the teacher's UNet and is called once a step (no unconditional branch: half the cost).
3. Checkpoints (`--resume`), sample grids at 1, 2 and 4 steps of `models.samplers.make_fast_scheduler`.
4. `OUT/final/` is the teacher's pipeline folder plus `fast_unet/` (float16): `pipe(pose, seed, steps=2, fast=True)`.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from models.autoencoder import decode
from models.pipeline import PosePipeline
from models.samplers import consistency_scalings, make_fast_scheduler, sample_loop, skip_timesteps, split_output
from models.unet import PoseUNet
from training.data import condition_maps_torch, list_items, load_images, load_keypoints, save_grid, to_tensor
from training.presets import (
    DISTILL_PRESETS,
    DistillPreset,
    LossWindow,
    RunLog,
    latest_checkpoint,
    lr_factor,
    machine,
    parse_with_preset,
    preset_dict,
    run_progress,
)
from training.train_ldm import cache_latents, ema_update

NUM_SAMPLES = 8  # poses in the sample grid
SAMPLE_STEPS = (1, 2, 4)  # one grid row per step count


def consistency(
    unet: PoseUNet,
    z_t: torch.Tensor,
    t: torch.Tensor,
    cond: torch.Tensor,
    s: torch.Tensor,
    alphas: torch.Tensor,
    prediction_type: str,
) -> torch.Tensor:
    """f(z_t, t) = c_skip(t) z_t + c_out(t) z_0(z_t, t) of a UNet (the boundary condition f(z, 0) = z built in)."""
    z0 = split_output(prediction_type, unet(z_t, t, cond, s), z_t, alphas[t].view(-1, 1, 1, 1))[0]
    c_skip, c_out = (c.view(-1, 1, 1, 1) for c in consistency_scalings(t))
    return c_skip * z_t + c_out * z0


class DistillLoss(torch.nn.Module):
    """The consistency distillation loss (module docstring) of a student against a frozen teacher pipeline."""

    def __init__(self, student: PoseUNet, target: PoseUNet, teacher: PosePipeline, cfg: DistillPreset):
        super().__init__()
        self.student, self.target, self.teacher, self.cfg = student, target, teacher, cfg
        sched = teacher.scheduler
        self.prediction_type = sched.config.prediction_type
        self.register_buffer("alphas", sched.alphas_cumprod.float().clone(), persistent=False)
        self.register_buffer("skip", skip_timesteps(sched.config.num_train_timesteps), persistent=False)
        self.skip_step = sched.config.num_train_timesteps // len(self.skip)  # t_n - t_{n-1}

    def forward(
        self, z0: torch.Tensor, cond: torch.Tensor, s: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """The mean pseudo-Huber distance for one batch of latents, condition maps and style codes."""
        b, dev = z0.shape[0], z0.device
        n = torch.randint(0, len(self.skip), (b,), generator=generator).to(dev)
        t = self.skip[n]
        t_prev = (t - self.skip_step).clamp(min=0)
        eps = torch.randn(z0.shape, generator=generator).to(dev)
        a = self.alphas[t].view(-1, 1, 1, 1)
        z_t = a.sqrt() * z0 + (1 - a).sqrt() * eps
        with torch.no_grad():
            # one DDIM step of the guided teacher (Song et al. 2021, Eq. 12 with sigma = 0)
            out = self.teacher.predict(z_t, t, cond, s, self.cfg.guidance)
            x0, e = split_output(self.prediction_type, out, z_t, a)
            a_prev = self.alphas[t_prev].view(-1, 1, 1, 1)
            z_prev = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * e
            target = consistency(self.target, z_prev, t_prev, cond, s, self.alphas, self.prediction_type)
        pred = consistency(self.student, z_t, t, cond, s, self.alphas, self.prediction_type)
        c = self.cfg.huber_c
        return (((pred.float() - target.float()) ** 2 + c * c).sqrt() - c).mean()


@torch.no_grad()
def style_codes(teacher: PosePipeline, images: np.ndarray, batch_size: int = 64) -> torch.Tensor:
    """`(N, style_dim)`: the teacher's style encoder's posterior mean of s for each uint8 image."""
    enc = teacher.style_encoder
    out = [
        enc(to_tensor(images[i : i + batch_size]).to(enc.device, enc.dtype))[0]
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out).float()


@torch.no_grad()
def sample_grid(student: PoseUNet, teacher: PosePipeline, cond: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Images for the condition maps with s ~ N(0, I) (seeded), one row per step count of SAMPLE_STEPS."""
    g = torch.Generator().manual_seed(seed)
    b, f = cond.shape[0], student.downsample_factor
    z_T = torch.randn(b, teacher.vae.config.latent_channels, cond.shape[-2] // f, cond.shape[-1] // f, generator=g)
    s = torch.randn(b, teacher.style_dim, generator=g).to(cond.device)
    rows = []
    for steps in SAMPLE_STEPS:
        scheduler = make_fast_scheduler(teacher.scheduler_config)
        gen = torch.Generator().manual_seed(seed + 1)
        z0 = sample_loop(lambda x, t: student(x, t, cond, s), scheduler, z_T.to(cond.device), steps, gen)
        rows.append(decode(teacher.vae, z0).clamp(-1, 1))
    return torch.cat(rows)


def main(argv: list[str] | None = None) -> Path:
    """Distil, checkpoint, sample and save `OUT/final/`; returns that folder."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--teacher", required=True, help="pipeline folder of the model to distil (e.g. weights)")
    parser.add_argument("--data", required=True, help="synth data folder (images/, keypoints/) at the model's size")
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    parser.add_argument("--workers", type=int, default=0, help="processes decoding the images (0: one per CPU)")
    args, cfg = parse_with_preset(parser, DISTILL_PRESETS, argv)
    cfg: DistillPreset

    # 1. Set up: threads, the teacher, the data.
    torch.set_num_threads(cfg.num_threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = RunLog(out / "log.txt")
    log(f"train_distill preset={args.preset} {json.dumps(preset_dict(cfg))}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    teacher = PosePipeline.from_pretrained(args.teacher, device=device, dtype=torch.float32)
    if teacher.style_encoder is None:
        raise SystemExit(f"--teacher {args.teacher}: no style_encoder/ (the student learns the look from s)")
    if teacher.mean_latent is not None and not teacher.scheduler.config.get("rescale_betas_zero_snr"):
        raise SystemExit("--teacher: a model that starts from a mean latent is not supported; use a zero-SNR model")
    teacher.style_encoder.to(device)
    size = teacher.native_size
    stems = list_items(args.data, cfg.max_images)
    images = load_images(args.data, stems, size, args.workers)
    keypoints = torch.from_numpy(load_keypoints(args.data, stems)).to(device)
    ae_file = next((Path(args.teacher) / "autoencoder").rglob("*.safetensors"), None)
    ae_hash = hashlib.sha256(ae_file.read_bytes()).hexdigest() if ae_file else ""  # the cache follows the weights
    key = json.dumps([str(Path(args.data).resolve()), stems[0], stems[-1], len(stems), ae_hash])
    latents = cache_latents(teacher.vae, images, out / "cache", key, False, log)[:, 0].to(device)
    styles = style_codes(teacher, images).to(device)
    log(f"data: {len(stems)} images, latents {tuple(latents.shape)}, s std {styles.std():.3f}")

    # 2. Student (the teacher's UNet to start), target network, optimiser (fresh, or from the latest checkpoint).
    step, elapsed = 0, 0.0
    rng = torch.Generator().manual_seed(cfg.seed)
    ckpt = latest_checkpoint(out) if args.resume else None
    if ckpt is not None:
        student = PoseUNet.from_pretrained(ckpt / "unet").to(device)
        target = PoseUNet.from_pretrained(ckpt / "target").to(device)
    else:
        student, target = copy.deepcopy(teacher.unet), copy.deepcopy(teacher.unet)
    student.train().requires_grad_(True)
    target.eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(student.parameters(), lr=cfg.lr, betas=(0.9, 0.999), weight_decay=0.0)
    if ckpt is not None:
        state = torch.load(ckpt / "optimizer.pt", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        rng.set_state(state["rng"])
        meta = json.loads((ckpt / "step.json").read_text())
        step, elapsed = meta["step"], meta["elapsed"]
        log(f"resumed from {ckpt} at step {step}")
    loss_fn = DistillLoss(student, target, teacher, cfg).to(device)
    sample_idx = torch.from_numpy(np.linspace(0, len(stems) - 1, NUM_SAMPLES).astype(int)).to(device)
    sample_cond = condition_maps_torch(keypoints[sample_idx], size)

    def checkpoint(folder: Path) -> None:
        student.save_pretrained(folder / "unet", safe_serialization=True)
        target.save_pretrained(folder / "target", safe_serialization=True)
        torch.save({"optimizer": optimizer.state_dict(), "rng": rng.get_state()}, folder / "optimizer.pt")
        meta = {"step": step, "elapsed": elapsed + time.time() - t_start}
        (folder / "step.json").write_text(json.dumps(meta))  # last: marks the checkpoint complete
        for old in sorted((out / "checkpoints").glob("step_*"))[:-2]:
            shutil.rmtree(old)

    # 3. Training loop.
    window = LossWindow()
    t_start = time.time()
    progress = run_progress(step, cfg.steps, elapsed, cfg.minutes)
    while progress < 1.0:
        lr = cfg.lr * lr_factor(step, cfg.warmup, progress)
        for group in optimizer.param_groups:
            group["lr"] = lr
        idx = torch.randint(0, len(stems), (cfg.batch_size,), generator=rng).to(device)
        cond = condition_maps_torch(keypoints[idx], size)
        loss = loss_fn(latents[idx], cond, styles[idx], rng)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        step += 1
        ema_update(target, student, cfg.target_decay)
        progress = run_progress(step, cfg.steps, elapsed + time.time() - t_start, cfg.minutes)
        window.add({"loss": loss.item()})
        if step % cfg.log_every == 0 or progress >= 1.0:
            log(window.flush(step, cfg.steps, lr, progress)[1])
        if step % cfg.sample_every == 0 or progress >= 1.0:
            student.eval()
            grid = sample_grid(student, teacher, sample_cond)
            student.train()
            save_grid(grid.cpu(), out / "samples" / f"step_{step:07d}.png", nrow=NUM_SAMPLES)
        if step % cfg.checkpoint_every == 0 and progress < 1.0:
            checkpoint(out / "checkpoints" / f"step_{step:07d}")
    seconds = elapsed + time.time() - t_start

    # 4. The pipeline folder: the teacher's, plus the student (from the target network, the smoother of the two).
    final = out / "final"
    shutil.rmtree(final, ignore_errors=True)
    teacher.fast_unet = target
    teacher.save_pretrained(final)
    info = {
        "teacher": str(args.teacher),
        "data": str(args.data),
        "images": len(stems),
        "steps": step,
        "seconds": round(seconds, 1),
        "machine": machine(),
        "preset": preset_dict(cfg),
    }
    (final / "fast_unet" / "training_info.json").write_text(json.dumps(info, indent=2))
    for name in ("model_index.json", "README.md"):
        if (Path(args.teacher) / name).is_file():
            shutil.copy(Path(args.teacher) / name, final / name)
    log(f"saved {final}: {step} steps in {seconds / 60:.1f} min")
    return final


if __name__ == "__main__":
    main()
