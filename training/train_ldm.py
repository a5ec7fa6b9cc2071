"""Train the pose-conditioned latent diffusion model (PoseUNet + StyleEncoder) on a synth data folder.

    python -m training.train_ldm --data DIR --ae runs/ae/final --out runs/ldm --preset cpu [--resume]

1. The data set's latents (and those of the mirrored images) are encoded once with the trained
   autoencoder and cached in `OUT/cache/`; condition maps are drawn per batch from the keypoints.
2. Each step: s ~ q(s | x) from the style encoder, t ~ U[timesteps) (all T; a low-noise expert: the small t),
   z_t = sqrt(a_t) z_0 + sqrt(1-a_t) eps, the pose map zeroed for `pose_dropout` of the batch (classifier-free
   guidance), and
       L = w(t) |v_theta(z_t, t, pose, s) - v|^2 + mean_i k_i KL(q(s_i|x) || N(0, 1)),
   w(t) = min(SNR, gamma) / (SNR + 1) (Min-SNR-gamma for v-prediction, Hang et al. 2023, Eq. 9; gamma = 0:
   w = 1, the plain v-loss, which keeps the high-noise steps where only s can tell the colours), and
   k_i = style_kl_weight * style_kl_ramp^(i / (D - 1)), an ordered prior cost over the D dimensions of s;
   `style_guide` gives each of the first axes of s one attribute of the renderer: "loss" asks the encoder for
   it (`training.style_guide.guide_loss`, weight `style_guide_weight`), "labels" sets those axes from the
   labels (`sample_guided`; with `free_style` "prior" the other axes are drawn from N(0, I) as the sampler
   draws them, not from the encoder); `affine_reg_weight` keeps the columns of the style affine orthogonal with
   decreasing norms (`affine_penalty`), so that SeFa and GANSpace find those axes. With `pair_weight` > 0 the data
   folder holds one-attribute pairs (`training.synth --pairs`): a batch is whole pairs, each with one t, one noise
   and one s but for the swapped axis, and the loss adds pair_weight |(v_a - v_b) - (pred_a - pred_b)|^2.
3. EMA weights, checkpoints every N steps (`--resume` continues from the latest), sample grids.
4. At the end `OUT/final/` is a complete pipeline folder (`models.pipeline.PosePipeline.from_pretrained`):
   `autoencoder/`, `unet/` (EMA PoseUNet incl. hint encoder and style affine), `style_encoder/` (EMA), `scheduler/`,
   `training_info.json`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler

from models.autoencoder import Autoencoder, autoencoder_index_entry, decode, load_autoencoder
from models.errors import InputError
from models.samplers import make_scheduler, sample_loop, training_scheduler
from models.unet import PoseUNet, StyleEncoder
from training.data import (
    condition_maps_torch,
    count_pairs,
    list_items,
    load_images,
    load_keypoints,
    save_grid,
    to_tensor,
)
from training.presets import LDM_PRESETS, LDMPreset, preset_dict
from training.runs import Run, cache_latents, ema_update, machine, start_run
from training.style_guide import (
    GUIDE_ORDER,
    GuideLayout,
    affine_penalty,
    guide_accuracy,
    guide_loss,
    make_layout,
    read_labels,
    read_layout,
    sample_guided,
    target_norms,
)

NUM_SAMPLES = 8  # poses in the sample grid


def trained_autoencoder(path: str | Path) -> Autoencoder:
    """The trained autoencoder from `path` (a folder with config.json, or one holding `autoencoder/`), frozen."""
    path = Path(path)
    if (path / "autoencoder" / "config.json").exists():
        path = path / "autoencoder"
    return load_autoencoder(path).eval().requires_grad_(False)


def transplant(src: PoseUNet, **changes) -> tuple[PoseUNet, list[str]]:
    """A PoseUNet of `src`'s config with `changes` (e.g. another autoencoder's latent channels and side, or more
    `attention_levels`), holding every weight of `src` whose shape still fits; returns it and the names of the tensors
    that start afresh (for a new autoencoder: the first and last convolutions and the hint encoder's new layers).
    New attention layers start with a zero output projection: on their residual path they add nothing until trained,
    so the new UNet first computes exactly what `src` did."""
    cfg = {k: v for k, v in src.config.items() if not k.startswith("_")}
    unet = PoseUNet(**{**cfg, **changes})
    own, theirs = unet.state_dict(), src.state_dict()
    kept = {k: v for k, v in theirs.items() if k in own and own[k].shape == v.shape}
    fresh = sorted(k for k in own if k not in kept)
    zeros = {k: torch.zeros_like(own[k]) for k in fresh if ".attentions." in k and ".to_out." in k}
    unet.load_state_dict({**kept, **zeros}, strict=False)
    return unet, fresh


class LDMLoss(torch.nn.Module):
    """UNet + style encoder with the training loss (module docstring) as `forward`, so DDP syncs both."""

    def __init__(
        self,
        unet: PoseUNet,
        style_encoder: StyleEncoder,
        noise_scheduler: DDPMScheduler,
        cfg: LDMPreset,
        layout: GuideLayout | None = None,
    ):
        super().__init__()
        self.unet, self.style_encoder, self.cfg, self.layout = unet, style_encoder, cfg, layout
        guided = len(layout.names) if layout is not None else 0
        self.register_buffer("affine_norms", target_norms(unet.config.style_dim, guided), persistent=False)
        self.register_buffer("alphas_cumprod", noise_scheduler.alphas_cumprod.clone(), persistent=False)
        dims = torch.linspace(0.0, 1.0, unet.config.style_dim)
        self.register_buffer("kl_weights", cfg.style_kl_weight * cfg.style_kl_ramp**dims, persistent=False)
        self.prediction_type = noise_scheduler.config.prediction_type
        self.paired = cfg.pair_weight > 0  # rows 2k and 2k + 1 of a batch are a pair (`synth --pairs`)

    def forward(
        self,
        z0: torch.Tensor,
        images: torch.Tensor,
        cond: torch.Tensor,
        keep_pose: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of one batch and its parts for the log."""
        b = z0.shape[0]
        mu, logvar = (x.float() for x in self.style_encoder(images))  # fp32 under bf16 autocast: the KL's exp
        s = s_encoded = StyleEncoder.sample(mu, logvar)
        kl_dims = StyleEncoder.kl_per_dim(mu, logvar)
        guided = self.layout is not None and labels is not None and self.cfg.style_guide == "labels"
        if guided:
            # The guided axes come from the labels, not the encoder: they carry their attribute and nothing else
            # (an encoded axis also packed other attributes into the position within its bin), and cost no KL.
            g = len(self.layout.names)
            free = s[:, g:]
            if self.cfg.free_style == "prior":  # as the sampler draws them: independent of the image
                free, kl_dims = torch.randn_like(free), torch.zeros_like(kl_dims)
            guided_s = sample_guided(labels, self.layout).to(s.dtype)
            if self.paired:  # a pair shares its s but on the swapped axis (same class: the same point of the bin)
                free = free[0::2].repeat_interleave(2, dim=0)
                same = labels[1::2] == labels[0::2]
                guided_s[1::2] = torch.where(same, guided_s[0::2], guided_s[1::2])
            s = torch.cat([guided_s, free], dim=1)
            kl_dims = torch.cat([torch.zeros_like(kl_dims[:g]), kl_dims[g:]])
        t = torch.randint(*self.cfg.timesteps, (b,), device=z0.device)
        eps = torch.randn_like(z0)
        if self.paired:  # common noise: the pair's targets then differ only where the two pictures do
            t, eps = t[0::2].repeat_interleave(2), eps[0::2].repeat_interleave(2, dim=0)
        a = self.alphas_cumprod[t].view(b, 1, 1, 1)
        z_t = a.sqrt() * z0 + (1 - a).sqrt() * eps  # DDPM forward process (Ho et al. 2020, Eq. 4)
        cond = cond * keep_pose.view(b, 1, 1, 1).to(cond.dtype)  # pose dropout for classifier-free guidance
        pred = self.unet(z_t, t, cond, s)
        snr = a.view(b) / (1 - a.view(b))
        if self.prediction_type == "v_prediction":
            target = a.sqrt() * eps - (1 - a).sqrt() * z0  # v (Salimans & Ho 2022, Sec. 4)
            weight = snr.clamp(max=self.cfg.min_snr_gamma) / (snr + 1) if self.cfg.min_snr_gamma > 0 else 1.0
        else:
            target = eps
            weight = snr.clamp(max=self.cfg.min_snr_gamma) / snr if self.cfg.min_snr_gamma > 0 else 1.0
        mse = ((pred.float() - target.float()) ** 2).mean(dim=(1, 2, 3))
        diffusion = (weight * mse).mean()
        loss = diffusion + (self.kl_weights * kl_dims).mean()
        parts = {}
        if self.paired:
            # |(pred_a - pred_b) - (v_a - v_b)|^2: the plain loss holds this term at half weight (|x|^2 + |y|^2 =
            # (|x - y|^2 + |x + y|^2) / 2); weighting it up asks the UNet to move with the swapped axis exactly
            # what the renderer moves, and nothing else.
            diff = (pred[0::2] - pred[1::2]).float() - (target[0::2] - target[1::2]).float()
            pair_weight = weight[0::2] if torch.is_tensor(weight) else weight
            parts["pair"] = (pair_weight * (diff**2).mean(dim=(1, 2, 3))).mean()
            loss = loss + self.cfg.pair_weight * parts["pair"]
        reads = self.cfg.style_guide == "loss" or (self.cfg.style_guide == "labels" and self.cfg.style_guide_weight > 0)
        if self.layout is not None and labels is not None and reads:
            # "loss": on the sample s, not its mean (with mu alone sigma stayed at 0.9 and the UNet could not read the
            # bins). "labels": the UNet reads the labels, so the guide trains only the encoder's mean, which a look read
            # off a picture (`PosePipeline.style_from_image`) puts there: else those outputs drift with the encoder.
            read = s_encoded if self.cfg.style_guide == "loss" else mu
            parts["guide"] = guide_loss(read, labels, self.layout)
            parts["guide_acc"] = guide_accuracy(read.detach(), labels, self.layout)
            loss = loss + self.cfg.style_guide_weight * parts["guide"]
        if self.cfg.affine_reg_weight > 0:
            parts["affine"] = affine_penalty(self.unet.style_affine.weight, self.affine_norms)
            loss = loss + self.cfg.affine_reg_weight * parts["affine"]
        parts |= {
            "loss": loss,
            "diff": diffusion,
            "kl": kl_dims.mean(),
            "active": (kl_dims > 0.1).sum(),  # dimensions carrying more than 0.1 nat
            "mu_std": mu.std(dim=0).mean(),
            "sigma": (0.5 * logvar).exp().mean(),
        }
        return loss, {k: float(v.detach()) for k, v in parts.items()}


@torch.no_grad()
def sample_grid(
    unet: PoseUNet,
    vae: Autoencoder,
    scheduler_config,
    cond: torch.Tensor,
    style_dim: int,
    steps: int = 20,
    guidance: float = 2.0,
    seed: int = 0,
) -> torch.Tensor:
    """Images for the given condition maps with s ~ N(0, I) (seeded), DDIM, CFG over the pose."""
    g = torch.Generator().manual_seed(seed)
    b = cond.shape[0]
    f = unet.downsample_factor
    z_T = torch.randn(b, vae.config.latent_channels, cond.shape[-2] // f, cond.shape[-1] // f, generator=g)
    s = torch.randn(b, style_dim, generator=g)
    z_T, s = z_T.to(cond.device), s.to(cond.device)  # drawn on the CPU: the same grid on every device
    zeros = torch.zeros_like(cond)

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = unet(torch.cat([x, x]), t, torch.cat([cond, zeros]), torch.cat([s, s]))
        c, u = out.chunk(2)
        return u + guidance * (c - u)

    z0 = sample_loop(model_fn, make_scheduler("ddim", scheduler_config), z_T, steps, g)
    return decode(vae, z0).clamp(-1, 1)


OPTIONS = [
    ("--data", {"required": True, "help": "synth data folder (images/, keypoints/)"}),
    ("--ae", {"required": True, "help": "trained autoencoder folder (runs/ae/final)"}),
    "--out",
    "--resume",
    ("--init", {"default": "", "help": "start from the (EMA) weights of this folder (a checkpoint or a final/ folder) "
                "with a fresh optimiser and schedule; ignored when --resume finds a checkpoint"}),
    "--workers",
]  # fmt: skip


@dataclass
class Data:
    """The training set on the device (a GPU then never waits for the CPU), its autoencoder, and its batches."""

    cfg: LDMPreset
    stems: list[str]
    images: torch.Tensor  # uint8 (N, H, W, 3)
    keypoints: torch.Tensor  # (N, 17, 3)
    vae: Autoencoder
    latents: torch.Tensor  # (N, 1 or 2, C, h, w): `cache_latents`
    layout: GuideLayout | None  # the style guide's axes, and the labels `(N, G)` they are drawn from
    labels: torch.Tensor | None

    def batch(self, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        """z_0, images, condition maps, whether the pose is kept (not dropped) and labels (or None) of a batch."""
        cfg, device, n = self.cfg, self.images.device, len(self.stems)
        if cfg.pair_weight > 0:  # whole pairs (2k, 2k + 1), each with one flip and one pose dropout
            first = 2 * rng.integers(0, n // 2, cfg.batch_size // 2)
            idx = torch.from_numpy(np.stack([first, first + 1], axis=1).reshape(-1)).to(device)
            flip_np = np.repeat(rng.random(len(first)) < 0.5 if cfg.flip else np.zeros(len(first), bool), 2)
            keep_np = np.repeat(rng.random(len(first)) >= cfg.pose_dropout, 2)
        else:
            idx = torch.from_numpy(rng.integers(0, n, cfg.batch_size)).to(device)
            flip_np = rng.random(cfg.batch_size) < 0.5 if cfg.flip else np.zeros(cfg.batch_size, bool)
            keep_np = rng.random(cfg.batch_size) >= cfg.pose_dropout
        flip = torch.from_numpy(flip_np).to(device)
        images = to_tensor(self.images[idx])
        images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
        cond = condition_maps_torch(self.keypoints[idx], self.images.shape[1], flip)
        labels = self.labels[idx] if self.labels is not None else None
        return self.latents[idx, flip.long()], images, cond, torch.from_numpy(keep_np).to(device), labels


def load_data(run: Run) -> Data:
    """Images and keypoints of `--data`, the autoencoder of `--ae` and the latents (cached in `OUT/cache/`)."""
    cfg, args, accelerator = run.cfg, run.args, run.accelerator
    t0 = time.time()
    stems = list_items(args.data, cfg.max_images)
    if cfg.pair_weight > 0:  # before the encoding: a folder without pairs fails at once
        if cfg.batch_size % 2:
            raise SystemExit("--pair-weight needs an even --batch-size (batches of whole pairs).")
        try:
            run.log(f"pairs: {count_pairs(args.data, stems)} pairs of one-attribute swaps")
        except InputError as err:
            raise SystemExit(f"--pair-weight: {err}") from None
    images = load_images(args.data, stems, cfg.image_size, args.workers)
    keypoints = load_keypoints(args.data, stems)
    vae = trained_autoencoder(args.ae).to(accelerator.device)
    ae_file = next(Path(args.ae).rglob("*.safetensors"), None)
    key = [str(Path(args.data).resolve()), stems[0], stems[-1], len(stems), cfg.flip, str(ae_file)]
    key = hashlib.sha256(json.dumps([*key, ae_file.stat().st_mtime if ae_file else 0]).encode()).hexdigest()
    if accelerator.is_main_process:  # the main process encodes and caches; the others then read the cache
        latents = cache_latents(vae, images, run.out / "cache", key, cfg.flip, run.log)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        latents = cache_latents(vae, images, run.out / "cache", key, cfg.flip, run.log)
    run.log(f"data: {len(stems)} images, latents {tuple(latents.shape)} ({time.time() - t0:.0f}s)")
    on_device = (torch.from_numpy(a).to(accelerator.device) for a in (images, keypoints))
    return Data(cfg, stems, *on_device, vae, latents.to(accelerator.device), *style_labels(run, stems))


def style_labels(run: Run, stems: list[str]) -> tuple[GuideLayout | None, torch.Tensor | None]:
    """The style guide's layout of the guided axes and the images' labels on the device (None without a guide)."""
    cfg, init = run.cfg, run.args.init
    if cfg.style_guide == "off":
        return None, None
    from models.attributes import ATTRIBUTES

    names = GUIDE_ORDER[: cfg.style_dim]
    labels = read_labels(run.args.data, stems, names)
    layout = make_layout(labels, ATTRIBUTES, names, cfg.style_dim)
    kept = read_layout(Path(init) / "training_info.json") if init else None
    if kept is not None and (kept.names, kept.classes) == (layout.names, layout.classes):
        layout = kept  # the bins the --init UNet learned (this data set's class shares would move them)
        run.log(f"style guide: the bins of {init}")
    run.log(f"style guide: axes {list(layout.names)}, {float((labels >= 0).mean()):.3f} of the labels seen")
    return layout, torch.from_numpy(labels).to(run.accelerator.device)


def hint_widths(cfg: LDMPreset, factor: int) -> tuple[int, ...]:
    """Widths of the hint encoder's downsamplings from the image to the latent side (`factor` times smaller)."""
    return tuple(min(cfg.hint_channels * 2**i, 64) for i in range(round(float(np.log2(factor))) - 1))


def new_models(cfg: LDMPreset, data: Data) -> tuple[PoseUNet, StyleEncoder]:
    """A fresh UNet and style encoder of the preset's sizes for the data's latents."""
    from models.condition import CONDITION_CHANNELS  # written by the pose front end; imported late

    size, latent_side = data.images.shape[1], data.latents.shape[-1]
    same = ("hint_channels", "style_dim", "block_out_channels", "layers_per_block", "attention_head_dim")
    same += ("attention_levels",)
    unet = PoseUNet(
        sample_size=latent_side, latent_channels=data.latents.shape[2], cond_channels=CONDITION_CHANNELS,
        hint_widths=hint_widths(cfg, size // latent_side), norm_num_groups=min(32, min(cfg.block_out_channels)),
        prediction_type=cfg.prediction_type, **{name: getattr(cfg, name) for name in same},  # the preset's names
    )  # fmt: skip
    style_encoder = StyleEncoder(
        widths=cfg.style_channels, style_dim=cfg.style_dim, input_size=min(cfg.style_input_size, size)
    )
    return unet, style_encoder


def init_models(run: Run, data: Data) -> tuple[PoseUNet, StyleEncoder]:
    """The UNet and style encoder of `--init` (its EMA weights where it has them)."""
    init = Path(run.args.init)
    src = init / "ema" if (init / "ema" / "unet").is_dir() else init  # the EMA weights are the better start
    if not (src / "unet").is_dir() or not (src / "style_encoder").is_dir():
        raise SystemExit(f"--init {init}: no unet/ and style_encoder/ folders there")
    unet = PoseUNet.from_pretrained(src / "unet")
    fits = {"latent_channels": data.latents.shape[2], "sample_size": data.latents.shape[-1]}
    factor = data.images.shape[1] // data.latents.shape[-1]
    if any(unet.config[k] != v for k, v in fits.items()) or unet.downsample_factor != factor:
        # Another autoencoder: keep the UNet's body, start its ends afresh (the latent grid stays 32 x 32).
        unet, fresh = transplant(unet, **fits, hint_widths=hint_widths(run.cfg, factor))
        run.log(f"--init for a new autoencoder {fits}: {len(fresh)} tensors start afresh ({', '.join(fresh[:8])} ...)")
    if run.cfg.attention_levels > unet.config.attention_levels:  # added levels, never removed (presets say 1)
        unet, fresh = transplant(unet, attention_levels=run.cfg.attention_levels)
        run.log(f"--init with attention at {run.cfg.attention_levels} levels: {len(fresh)} new tensors")
    style_encoder = StyleEncoder.from_pretrained(src / "style_encoder")
    if style_encoder.config.input_size is None:  # an encoder of the 128-px model, which saw 128-px images
        style_encoder.register_to_config(input_size=run.cfg.style_input_size)
    run.log(f"initialised from {src}")
    return unet, style_encoder


class Trainer:
    """The UNet, the style encoder, their EMA copies and the optimiser, and what the training loop does with them."""

    def __init__(self, run: Run, data: Data):
        """Fresh models, or those of `--init`, or (`--resume`) those of the latest checkpoint."""
        cfg, accelerator, self.run, self.data = run.cfg, run.accelerator, run, data
        if cfg.zero_snr and (cfg.prediction_type != "v_prediction" or cfg.min_snr_gamma > 0):
            raise SystemExit("--zero-snr needs --prediction-type v_prediction and --min-snr-gamma 0 (at SNR 0 an "
                             "epsilon model's image estimate divides by zero, and Min-SNR weighs the terminal step "
                             "by zero).")  # fmt: skip
        if len(cfg.timesteps) != 2 or not 0 <= cfg.timesteps[0] < cfg.timesteps[1] <= cfg.num_train_timesteps:
            raise SystemExit(f"--timesteps takes LO,HI (t to train on) with 0 <= LO < HI <= {cfg.num_train_timesteps}.")
        self.noise_scheduler = training_scheduler(cfg.prediction_type, cfg.num_train_timesteps, cfg.zero_snr)
        self.rng = np.random.default_rng(cfg.seed + accelerator.process_index)
        torch.manual_seed(cfg.seed + accelerator.process_index)
        ckpt = run.latest_checkpoint()
        if ckpt is not None:
            self.unet = PoseUNet.from_pretrained(ckpt / "unet")
            self.style_encoder = StyleEncoder.from_pretrained(ckpt / "style_encoder")
            self.ema_unet = PoseUNet.from_pretrained(ckpt / "ema" / "unet")
            self.ema_style = StyleEncoder.from_pretrained(ckpt / "ema" / "style_encoder")
        else:
            self.unet, self.style_encoder = init_models(run, data) if run.args.init else new_models(cfg, data)
            expert = tuple(cfg.timesteps) != (0, cfg.num_train_timesteps)  # says so, for `PoseUNet.covers`
            self.unet.register_to_config(timesteps=list(cfg.timesteps) if expert else None)
            self.ema_unet, self.ema_style = copy.deepcopy(self.unet), copy.deepcopy(self.style_encoder)
        self.ema_unet.eval().requires_grad_(False).to(accelerator.device)
        self.ema_style.eval().requires_grad_(False).to(accelerator.device)
        # The style path (encoder + `style_affine`) has its own lr multiplier: a UNet that ignores a weak s gives s
        # no gradient.
        style_params = list(self.style_encoder.parameters()) + list(self.unet.style_affine.parameters())
        style_ids = {id(p) for p in style_params}
        groups = [
            {"params": [p for p in self.unet.parameters() if id(p) not in style_ids], "lr_mult": 1.0},
            {"params": style_params, "lr_mult": cfg.style_lr_mult},
        ]
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
        if ckpt is not None:
            state, meta = run.read_checkpoint(ckpt)
            if len(state["optimizer"]["param_groups"]) == len(optimizer.param_groups):
                optimizer.load_state_dict(state["optimizer"])
            else:  # a checkpoint of the one-group optimiser: the weights resume, the moments start afresh
                run.log("optimizer state of another layout: moments start afresh")
            torch.set_rng_state(state["torch_rng"])
            self.rng.bit_generator.state = meta["rng"]
        loss = LDMLoss(self.unet, self.style_encoder, self.noise_scheduler, cfg, data.layout)
        loss = torch.compile(loss) if cfg.compile else loss  # shares the weights that EMA, checkpoints and saving read
        self.train_module, self.optimizer = accelerator.prepare(loss, optimizer)
        millions = [sum(p.numel() for p in m.parameters()) / 1e6 for m in (self.unet, self.style_encoder)]
        run.log(f"PoseUNet {millions[0]:.2f}M parameters (hint widths {self.unet.config.hint_widths}), style encoder "
                f"{millions[1]:.2f}M; latent {data.latents.shape[2]}x{data.latents.shape[-1]}^2")  # fmt: skip

    def step(self, step: int, lr: float) -> dict[str, float]:
        """One optimiser step on a batch, then the EMA update; returns the loss parts."""
        cfg, accelerator = self.run.cfg, self.run.accelerator
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_mult"]
        z0, images, cond, keep_pose, labels = self.data.batch(self.rng)
        with accelerator.autocast():
            loss, parts = self.train_module(z0, images, cond, keep_pose, labels)
        self.optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(self.train_module.parameters(), 1.0)
        self.optimizer.step()
        done = step + 1
        decay = 0.0 if done <= cfg.ema_warmup else min(cfg.ema_decay, (1 + done) / (10 + done))
        ema_update(self.ema_unet, self.unet, decay)
        ema_update(self.ema_style, self.style_encoder, decay)
        return parts

    def sample(self, real: bool = False) -> None:
        """`OUT/samples/step_NNNNNNN.png`: the EMA weights' samples for some training poses (`real`: those training
        images, `OUT/samples/real.png`)."""
        run, data = self.run, self.data
        idx = torch.from_numpy(np.linspace(0, len(data.stems) - 1, NUM_SAMPLES).astype(int)).to(data.images.device)
        if real:
            save_grid(to_tensor(data.images[idx]).cpu(), run.out / "samples" / "real.png", nrow=NUM_SAMPLES)
            return
        t0, cond = time.time(), condition_maps_torch(data.keypoints[idx], data.images.shape[1])
        grid = sample_grid(
            self.ema_unet, data.vae, self.noise_scheduler.config, cond, run.cfg.style_dim, run.cfg.sample_steps
        )
        save_grid(grid.cpu(), run.out / "samples" / f"step_{run.step:07d}.png", nrow=NUM_SAMPLES)
        run.log(f"step {run.step} sample grid in {time.time() - t0:.1f}s")

    def checkpoint(self) -> None:
        """`OUT/checkpoints/step_NNNNNNN/`: the weights and their EMA, the optimiser, both random states, the losses."""
        models = {"unet": self.unet, "style_encoder": self.style_encoder}
        models |= {"ema/unet": self.ema_unet, "ema/style_encoder": self.ema_style}
        trainer = {"optimizer": self.optimizer.state_dict(), "torch_rng": torch.get_rng_state()}
        meta = {"rng": self.rng.bit_generator.state, "losses": self.run.losses, "elapsed": self.run.seconds()}
        self.run.write_checkpoint(models, trainer, meta)

    def save_final(self, seconds: float) -> Path:
        """The last checkpoint and `OUT/final/`: a pipeline folder of the EMA weights, autoencoder and scheduler."""
        run, data, final = self.run, self.data, self.run.out / "final"
        self.checkpoint()
        self.ema_unet.save_pretrained(final / "unet", safe_serialization=True)
        self.ema_style.save_pretrained(final / "style_encoder", safe_serialization=True)
        data.vae.save_pretrained(final / "autoencoder", safe_serialization=True)
        self.noise_scheduler.save_pretrained(final / "scheduler")
        with torch.no_grad():  # posterior statistics of s on some training images (should be ~N(0, I))
            mu, logvar = self.ema_style(to_tensor(data.images[:256]))
        posterior = {
            "mu_mean": float(mu.mean()), "mu_std": float(mu.std()), "sigma_mean": float((0.5 * logvar).exp().mean()),
            "kl_per_dim": [round(float(v), 4) for v in StyleEncoder.kl_per_dim(mu, logvar)],
        }  # fmt: skip
        info = {
            "model": "pose-ldm", "steps": run.step, "seconds": round(seconds, 1),
            "steps_per_second": round(run.steps_per_second(), 4), "data": str(run.args.data),
            "num_images": len(data.stems), "machine": machine(), "final_losses": run.losses,
            "style_posterior": posterior, "style_guide": data.layout.to_json() if data.layout is not None else None,
            "autoencoder": str(run.args.ae), "preset": run.args.preset, "config": preset_dict(run.cfg),
        }  # fmt: skip
        (final / "training_info.json").write_text(json.dumps(info, indent=2))
        index = {
            "_class_name": "PosePipeline",
            "autoencoder": autoencoder_index_entry(data.vae),
            "unet": ["models.unet", "PoseUNet"],
            "scheduler": ["diffusers", "DDPMScheduler"],
            "style_encoder": ["models.unet", "StyleEncoder"],
        }
        (final / "model_index.json").write_text(json.dumps(index, indent=2))
        run.log(
            f"saved {final}: {run.step} steps in {seconds / 60:.1f} min, losses {run.losses}, s posterior {posterior}"
        )
        return final


def main(argv: list[str] | None = None) -> Path:
    """Train, checkpoint, sample and save `OUT/final/`; returns that folder."""
    run = start_run("train_ldm", __doc__, LDM_PRESETS, argv, OPTIONS, accelerate=True)
    trainer = Trainer(run, load_data(run))
    if run.main:
        trainer.sample(real=True)
    return run.train(trainer)


if __name__ == "__main__":
    main()
