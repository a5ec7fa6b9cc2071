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

import copy
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from models.autoencoder import decode
from models.pipeline import PosePipeline
from models.samplers import consistency_scalings, make_fast_scheduler, sample_loop, skip_timesteps, split_output
from models.unet import PoseUNet
from training.data import condition_maps_torch, list_items, load_images, load_keypoints, save_grid, to_tensor
from training.presets import DISTILL_PRESETS, DistillPreset, preset_dict
from training.runs import Run, cache_latents, ema_update, machine, start_run

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
        z0 = sample_loop(
            lambda x, t: student(x, t, cond, s),
            scheduler,
            z_T.to(cond.device),
            steps,
            gen,
            z_mean=teacher.start_mean(cond, s),
        )
        rows.append(decode(teacher.vae, z0).clamp(-1, 1))
    return torch.cat(rows)


OPTIONS = [
    ("--teacher", {"required": True, "help": "pipeline folder of the model to distil (e.g. weights)"}),
    ("--data", {"required": True, "help": "synth data folder (images/, keypoints/) at the model's size"}),
    "--out",
    "--resume",
    "--workers",
]


def load_teacher(run: Run) -> PosePipeline:
    """The pipeline of `--teacher`, on the GPU when there is one; it must have a style encoder (a mean latent is fine:
    `sample_loop` moves the student's start as it moves the teacher's)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    teacher = PosePipeline.from_pretrained(run.args.teacher, device=device, dtype=torch.float32)
    if teacher.style_encoder is None:
        raise SystemExit(f"--teacher {run.args.teacher}: no style_encoder/ (the student learns the look from s)")
    teacher.style_encoder.to(device)
    return teacher


class Trainer:
    """The data, the student and its target network and optimiser, and what the training loop does with them."""

    def __init__(self, run: Run, teacher: PosePipeline):
        """The data's latents (cached), condition maps and style codes; the student (the teacher's UNet to start) and
        target network, fresh or (`--resume`) from the latest checkpoint."""
        cfg, args, self.run, self.teacher = run.cfg, run.args, run, teacher
        device, self.size = teacher.device, teacher.native_size
        self.stems = list_items(args.data, cfg.max_images)
        images = load_images(args.data, self.stems, self.size, args.workers)
        self.keypoints = torch.from_numpy(load_keypoints(args.data, self.stems)).to(device)
        ae_file = next((Path(args.teacher) / "autoencoder").rglob("*.safetensors"), None)
        ae_hash = hashlib.sha256(ae_file.read_bytes()).hexdigest() if ae_file else ""  # the cache follows the weights
        key = json.dumps([str(Path(args.data).resolve()), self.stems[0], self.stems[-1], len(self.stems), ae_hash])
        self.latents = cache_latents(teacher.vae, images, run.out / "cache", key, False, run.log)[:, 0].to(device)
        self.styles = style_codes(teacher, images).to(device)
        run.log(f"data: {len(self.stems)} images, latents {tuple(self.latents.shape)}, s std {self.styles.std():.3f}")
        self.rng = torch.Generator().manual_seed(cfg.seed)
        ckpt = run.latest_checkpoint()
        if ckpt is not None:
            self.student = PoseUNet.from_pretrained(ckpt / "unet").to(device)
            self.target = PoseUNet.from_pretrained(ckpt / "target").to(device)
        else:
            self.student, self.target = copy.deepcopy(teacher.unet), copy.deepcopy(teacher.unet)
        self.student.train().requires_grad_(True)
        self.target.eval().requires_grad_(False)
        self.optimizer = torch.optim.AdamW(self.student.parameters(), lr=cfg.lr, betas=(0.9, 0.999), weight_decay=0.0)
        if ckpt is not None:
            state, _ = run.read_checkpoint(ckpt)
            self.optimizer.load_state_dict(state["optimizer"])
            self.rng.set_state(state["rng"])
        self.loss_fn = DistillLoss(self.student, self.target, teacher, cfg).to(device)
        sample_idx = torch.from_numpy(np.linspace(0, len(self.stems) - 1, NUM_SAMPLES).astype(int)).to(device)
        self.sample_cond = condition_maps_torch(self.keypoints[sample_idx], self.size)

    def step(self, step: int, lr: float) -> dict[str, float]:
        """One optimiser step of the student on a batch, then the target network's EMA update; returns the loss."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        idx = torch.randint(0, len(self.stems), (self.run.cfg.batch_size,), generator=self.rng).to(self.latents.device)
        cond = condition_maps_torch(self.keypoints[idx], self.size)
        loss = self.loss_fn(self.latents[idx], cond, self.styles[idx], self.rng)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.student.parameters(), 1.0)
        self.optimizer.step()
        ema_update(self.target, self.student, self.run.cfg.target_decay)
        return {"loss": loss.item()}

    def sample(self) -> None:
        """`OUT/samples/step_NNNNNNN.png`: the student's images at each step count of SAMPLE_STEPS."""
        self.student.eval()
        grid = sample_grid(self.student, self.teacher, self.sample_cond)
        self.student.train()
        save_grid(grid.cpu(), self.run.out / "samples" / f"step_{self.run.step:07d}.png", nrow=NUM_SAMPLES)

    def checkpoint(self) -> None:
        """A resumable checkpoint: the student, the target network, the optimiser and the batch generator."""
        trainer = {"optimizer": self.optimizer.state_dict(), "rng": self.rng.get_state()}
        self.run.write_checkpoint(
            {"unet": self.student, "target": self.target}, trainer, {"elapsed": self.run.seconds()}
        )

    def save_final(self, seconds: float) -> Path:
        """`OUT/final/`: the teacher's pipeline folder plus the student (the target network: the smoother of them)."""
        run, args, final = self.run, self.run.args, self.run.out / "final"
        shutil.rmtree(final, ignore_errors=True)
        self.teacher.fast_unet = self.target
        self.teacher.save_pretrained(final)
        info = {
            "teacher": str(args.teacher),
            "data": str(args.data),
            "images": len(self.stems),
            "steps": run.step,
            "seconds": round(seconds, 1),
            "machine": machine(),
            "preset": preset_dict(run.cfg),
        }
        (final / "fast_unet" / "training_info.json").write_text(json.dumps(info, indent=2))
        for name in ("model_index.json", "README.md"):
            if (Path(args.teacher) / name).is_file():
                shutil.copy(Path(args.teacher) / name, final / name)
        run.log(f"saved {final}: {run.step} steps in {seconds / 60:.1f} min")
        return final


def main(argv: list[str] | None = None) -> Path:
    """Distil, checkpoint, sample and save `OUT/final/`; returns that folder."""
    run = start_run("train_distill", __doc__, DISTILL_PRESETS, argv, OPTIONS)
    return run.train(Trainer(run, load_teacher(run)))


if __name__ == "__main__":
    main()
