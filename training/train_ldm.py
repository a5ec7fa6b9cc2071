"""Train the pose-conditioned latent diffusion model (PoseUNet + StyleEncoder) on a synth data folder.

    python -m training.train_ldm --data DIR --ae runs/ae/final --out runs/ldm --preset cpu [--resume]

1. The data set's latents (and those of the mirrored images) are encoded once with the trained
   autoencoder and cached in `OUT/cache/`; condition maps are drawn per batch from the keypoints.
2. Each step: s ~ q(s | x) from the style encoder, t ~ U{0..T-1}, z_t = sqrt(a_t) z_0 + sqrt(1-a_t) eps,
   the pose map zeroed for `pose_dropout` of the batch (classifier-free guidance), and
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
   `autoencoder/`, `unet/` (EMA PoseUNet incl. hint encoder and style affine), `style_encoder/`
   (EMA), `scheduler/`, `training_info.json`.
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
from accelerate import Accelerator
from diffusers import DDPMScheduler

from models.autoencoder import Autoencoder, autoencoder_index_entry, decode, encode, load_autoencoder
from models.errors import InputError
from models.samplers import make_scheduler, sample_loop, training_scheduler
from models.style_encoder import StyleEncoder
from models.unet import PoseUNet
from training.data import (
    condition_maps_torch,
    count_pairs,
    list_items,
    load_images,
    load_keypoints,
    save_grid,
    to_tensor,
)
from training.presets import (
    LDM_PRESETS,
    LDMPreset,
    LossWindow,
    RunLog,
    latest_checkpoint,
    lr_factor,
    machine,
    parse_with_preset,
    preset_dict,
    run_progress,
)
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
    """A PoseUNet of `src`'s config with `changes` (e.g. another autoencoder's latent channels and side), holding
    every weight of `src` whose shape still fits; returns it and the names of the tensors that start afresh (for a
    new autoencoder: the first and last convolutions and the hint encoder's new layers)."""
    cfg = {k: v for k, v in src.config.items() if not k.startswith("_")}
    unet = PoseUNet(**{**cfg, **changes})
    own, theirs = unet.state_dict(), src.state_dict()
    kept = {k: v for k, v in theirs.items() if k in own and own[k].shape == v.shape}
    unet.load_state_dict(kept, strict=False)
    return unet, sorted(k for k in own if k not in kept)


@torch.no_grad()
def cache_latents(
    vae: Autoencoder, images: np.ndarray, cache: Path, key: str, flip: bool, log: RunLog, batch_size: int = 64
) -> torch.Tensor:
    """Scaled latents `(N, 1 or 2, C, h, w)` of the images (and their mirrors), from `cache` when `key` matches."""
    file, meta = cache / "latents.npy", cache / "latents.json"
    if file.exists() and meta.exists() and json.loads(meta.read_text()).get("key") == key:
        log(f"latents from cache {file}")
        return torch.from_numpy(np.load(file))
    t0 = time.time()
    out = []
    device = vae.device
    for i in range(0, len(images), batch_size):
        x = to_tensor(images[i : i + batch_size]).to(device)
        views = [x, x.flip(-1)] if flip else [x]
        out.append(torch.stack([encode(vae, v).float().cpu() for v in views], dim=1))
        if i // batch_size % 20 == 0:
            log(f"encoding latents {i + len(x)}/{len(images)} ({time.time() - t0:.0f}s)")
    latents = torch.cat(out)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(file, latents.numpy())
    meta.write_text(json.dumps({"key": key, "shape": list(latents.shape)}))
    log(f"encoded {len(images)} images in {time.time() - t0:.0f}s; latent std {latents.std():.3f}")
    return latents


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
        mu, logvar = self.style_encoder(images)
        s = StyleEncoder.sample(mu, logvar)
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
        t = torch.randint(0, len(self.alphas_cumprod), (b,), device=z0.device)
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
        if self.layout is not None and labels is not None and self.cfg.style_guide == "loss":
            # On the sample s, not its mean: the axis must tell the class through the posterior noise the UNet
            # sees (with mu alone, sigma stayed at 0.9 and the UNet could not read the bins).
            parts["guide"] = guide_loss(s, labels, self.layout)
            parts["guide_acc"] = guide_accuracy(s.detach(), labels, self.layout)
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
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter."""
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()], 1.0 - decay)


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


def save_models(folder: Path, unet: PoseUNet, style_encoder: StyleEncoder) -> None:
    """`folder/unet/` and `folder/style_encoder/` as safetensors."""
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    style_encoder.save_pretrained(folder / "style_encoder", safe_serialization=True)


def main(argv: list[str] | None = None) -> Path:
    """Train, checkpoint, sample and save `OUT/final/`; returns that folder."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--data", required=True, help="synth data folder (images/, keypoints/)")
    parser.add_argument("--ae", required=True, help="trained autoencoder folder (runs/ae/final)")
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    parser.add_argument(
        "--init",
        default="",
        help="start from the (EMA) weights of this folder (a checkpoint or a final/ folder) with a fresh optimiser "
        "and schedule; ignored when --resume finds a checkpoint",
    )
    parser.add_argument("--workers", type=int, default=0, help="processes decoding the images (0: one per CPU)")
    args, cfg = parse_with_preset(parser, LDM_PRESETS, argv)
    cfg: LDMPreset

    # 1. Set up: threads, accelerator, log.
    torch.set_num_threads(cfg.num_threads)
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision if torch.cuda.is_available() else "no")
    device = accelerator.device
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = RunLog(out / "log.txt", accelerator.is_main_process)
    log(f"train_ldm preset={args.preset} {json.dumps(preset_dict(cfg))}")

    # 2. Data: images, keypoints, and the cached latents.
    t0 = time.time()
    stems = list_items(args.data, cfg.max_images)
    if cfg.pair_weight > 0:  # before the encoding: a folder without pairs fails at once
        if cfg.batch_size % 2:
            raise SystemExit("--pair-weight needs an even --batch-size (batches of whole pairs).")
        try:
            log(f"pairs: {count_pairs(args.data, stems)} pairs of one-attribute swaps")
        except InputError as err:
            raise SystemExit(f"--pair-weight: {err}") from None
    images = load_images(args.data, stems, cfg.image_size, args.workers)
    keypoints = load_keypoints(args.data, stems)
    size = images.shape[1]
    vae = trained_autoencoder(args.ae).to(device)
    ae_file = next(Path(args.ae).rglob("*.safetensors"), None)
    key = hashlib.sha256(
        json.dumps(
            [
                str(Path(args.data).resolve()),
                stems[0],
                stems[-1],
                len(stems),
                cfg.flip,
                str(ae_file),
                ae_file.stat().st_mtime if ae_file else 0,
            ]
        ).encode()
    ).hexdigest()
    if accelerator.is_main_process:
        latents = cache_latents(vae, images, out / "cache", key, cfg.flip, log)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        latents = cache_latents(vae, images, out / "cache", key, cfg.flip, log)
    log(f"data: {len(stems)} images, latents {tuple(latents.shape)} ({time.time() - t0:.0f}s)")
    layout, labels_t = None, None
    if cfg.style_guide != "off":
        from models.attributes import ATTRIBUTES

        names = GUIDE_ORDER[: cfg.style_dim]
        labels = read_labels(args.data, stems, names)
        layout = make_layout(labels, ATTRIBUTES, names, cfg.style_dim)
        kept = read_layout(Path(args.init) / "training_info.json") if args.init else None
        if kept is not None and (kept.names, kept.classes) == (layout.names, layout.classes):
            layout = kept  # the bins the --init UNet learned (this data set's class shares would move them)
            log(f"style guide: the bins of {args.init}")
        labels_t = torch.from_numpy(labels).to(device)
        log(f"style guide: axes {list(layout.names)}, {float((labels >= 0).mean()):.3f} of the labels seen")
    latent_channels, latent_side = latents.shape[2], latents.shape[-1]
    factor = size // latent_side

    # 3. Models, EMA, optimiser (fresh, or from the latest checkpoint).
    from models.condition import CONDITION_CHANNELS  # written by the pose front end; imported late

    if cfg.zero_snr and (cfg.prediction_type != "v_prediction" or cfg.min_snr_gamma > 0):
        raise SystemExit("--zero-snr needs --prediction-type v_prediction and --min-snr-gamma 0 (at SNR 0 an epsilon "
                         "model's image estimate divides by zero, and Min-SNR weighs the terminal step by zero).")  # fmt: skip
    noise_scheduler = training_scheduler(cfg.prediction_type, cfg.num_train_timesteps, cfg.zero_snr)
    step, elapsed, losses = 0, 0.0, {}
    rng = np.random.default_rng(cfg.seed + accelerator.process_index)
    torch.manual_seed(cfg.seed + accelerator.process_index)
    ckpt = latest_checkpoint(out) if args.resume else None
    if ckpt is not None:
        unet = PoseUNet.from_pretrained(ckpt / "unet")
        style_encoder = StyleEncoder.from_pretrained(ckpt / "style_encoder")
        ema_unet = PoseUNet.from_pretrained(ckpt / "ema" / "unet")
        ema_style = StyleEncoder.from_pretrained(ckpt / "ema" / "style_encoder")
    elif args.init:
        init = Path(args.init)
        src = init / "ema" if (init / "ema" / "unet").is_dir() else init  # the EMA weights are the better start
        if not (src / "unet").is_dir() or not (src / "style_encoder").is_dir():
            raise SystemExit(f"--init {init}: no unet/ and style_encoder/ folders there")
        unet = PoseUNet.from_pretrained(src / "unet")
        fits = {"latent_channels": latent_channels, "sample_size": latent_side}
        if any(unet.config[k] != v for k, v in fits.items()) or unet.downsample_factor != factor:
            # Another autoencoder: keep the UNet's body, start its ends afresh (the latent grid stays 32 x 32).
            hint_widths = tuple(min(cfg.hint_channels * 2**i, 64) for i in range(round(float(np.log2(factor))) - 1))
            unet, fresh = transplant(unet, **fits, hint_widths=hint_widths)
            log(f"--init for a new autoencoder {fits}: {len(fresh)} tensors start afresh ({', '.join(fresh[:8])} ...)")
        style_encoder = StyleEncoder.from_pretrained(src / "style_encoder")
        if style_encoder.config.input_size is None:  # an encoder of the 128-px model, which saw 128-px images
            style_encoder.register_to_config(input_size=cfg.style_input_size)
        ema_unet, ema_style = copy.deepcopy(unet), copy.deepcopy(style_encoder)
        log(f"initialised from {src}")
    else:
        hint_levels = round(float(np.log2(factor)))
        hint_widths = tuple(min(cfg.hint_channels * 2**i, 64) for i in range(hint_levels - 1))
        unet = PoseUNet(
            sample_size=latent_side,
            latent_channels=latent_channels,
            cond_channels=CONDITION_CHANNELS,
            hint_widths=hint_widths,
            hint_channels=cfg.hint_channels,
            style_dim=cfg.style_dim,
            block_out_channels=cfg.block_out_channels,
            layers_per_block=cfg.layers_per_block,
            attention_head_dim=cfg.attention_head_dim,
            norm_num_groups=min(32, min(cfg.block_out_channels)),
            prediction_type=cfg.prediction_type,
        )
        style_encoder = StyleEncoder(
            widths=cfg.style_channels, style_dim=cfg.style_dim, input_size=min(cfg.style_input_size, size)
        )
        ema_unet, ema_style = copy.deepcopy(unet), copy.deepcopy(style_encoder)
    ema_unet.eval().requires_grad_(False).to(device)
    ema_style.eval().requires_grad_(False).to(device)
    # The style path (encoder + `style_affine`) has its own lr multiplier: a UNet that ignores a weak s gives s no
    # gradient. (What collapsed s here was Min-SNR weighting, not the lr: see the docstring and weights/README.md.)
    style_params = list(style_encoder.parameters()) + list(unet.style_affine.parameters())
    style_ids = {id(p) for p in style_params}
    groups = [
        {"params": [p for p in unet.parameters() if id(p) not in style_ids], "lr_mult": 1.0},
        {"params": style_params, "lr_mult": cfg.style_lr_mult},
    ]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    if ckpt is not None:
        state = torch.load(ckpt / "optimizer.pt", weights_only=True)
        if len(state["optimizer"]["param_groups"]) == len(optimizer.param_groups):
            optimizer.load_state_dict(state["optimizer"])
        else:  # a checkpoint of the one-group optimiser: the weights resume, the moments start afresh
            log("optimizer state of another layout: moments start afresh")
        torch.set_rng_state(state["torch_rng"])
        meta = json.loads((ckpt / "step.json").read_text())
        step, elapsed, losses = meta["step"], meta["elapsed"], meta["losses"]
        rng.bit_generator.state = meta["rng"]
        log(f"resumed from {ckpt} at step {step}")
    train_module, optimizer = accelerator.prepare(LDMLoss(unet, style_encoder, noise_scheduler, cfg, layout), optimizer)
    log(
        f"PoseUNet {sum(p.numel() for p in unet.parameters()) / 1e6:.2f}M parameters "
        f"(hint widths {unet.config.hint_widths}), style encoder "
        f"{sum(p.numel() for p in style_encoder.parameters()) / 1e6:.2f}M; latent {latent_channels}x{latent_side}^2"
    )

    # Everything a step reads lives on the device: a GPU then never waits for the CPU.
    latents = latents.to(device)
    images_t = torch.from_numpy(images).to(device)  # uint8 (N, H, W, 3)
    keypoints_t = torch.from_numpy(keypoints).to(device)
    sample_idx = np.linspace(0, len(stems) - 1, NUM_SAMPLES).astype(int)
    sample_cond = condition_maps_torch(keypoints_t[torch.from_numpy(sample_idx).to(device)], size)
    if accelerator.is_main_process:
        save_grid(to_tensor(images[sample_idx]), out / "samples" / "real.png", nrow=NUM_SAMPLES)

    def checkpoint(folder: Path) -> None:
        save_models(folder, unet, style_encoder)
        save_models(folder / "ema", ema_unet, ema_style)
        torch.save({"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()}, folder / "optimizer.pt")
        meta = {
            "step": step,
            "rng": rng.bit_generator.state,
            "losses": losses,
            "elapsed": elapsed + time.time() - t_start,
        }
        (folder / "step.json").write_text(json.dumps(meta))  # last: marks the checkpoint complete
        for old in sorted((out / "checkpoints").glob("step_*"))[:-2]:
            shutil.rmtree(old)

    # 4. Training loop.
    window = LossWindow()
    t_start, start_step = time.time(), step
    progress = run_progress(step, cfg.steps, elapsed, cfg.minutes)
    while progress < 1.0:
        lr = cfg.lr * lr_factor(step, cfg.warmup, progress)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_mult"]
        if cfg.pair_weight > 0:  # whole pairs (2k, 2k + 1), each with one flip and one pose dropout
            first = 2 * rng.integers(0, len(stems) // 2, cfg.batch_size // 2)
            idx = torch.from_numpy(np.stack([first, first + 1], axis=1).reshape(-1)).to(device)
            flip_np = np.repeat(rng.random(len(first)) < 0.5 if cfg.flip else np.zeros(len(first), bool), 2)
            keep_np = np.repeat(rng.random(len(first)) >= cfg.pose_dropout, 2)
        else:
            idx = torch.from_numpy(rng.integers(0, len(stems), cfg.batch_size)).to(device)
            flip_np = rng.random(cfg.batch_size) < 0.5 if cfg.flip else np.zeros(cfg.batch_size, bool)
            keep_np = rng.random(cfg.batch_size) >= cfg.pose_dropout
        flip = torch.from_numpy(flip_np).to(device)
        z0 = latents[idx, flip.long()]
        batch_images = to_tensor(images_t[idx])
        batch_images = torch.where(flip.view(-1, 1, 1, 1), batch_images.flip(-1), batch_images)
        cond = condition_maps_torch(keypoints_t[idx], size, flip)
        keep_pose = torch.from_numpy(keep_np).to(device)
        with accelerator.autocast():
            loss, parts = train_module(
                z0, batch_images, cond, keep_pose, labels_t[idx] if labels_t is not None else None
            )
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(train_module.parameters(), 1.0)
        optimizer.step()
        step += 1
        decay = 0.0 if step <= cfg.ema_warmup else min(cfg.ema_decay, (1 + step) / (10 + step))
        ema_update(ema_unet, unet, decay)
        ema_update(ema_style, style_encoder, decay)
        progress = run_progress(step, cfg.steps, elapsed + time.time() - t_start, cfg.minutes)
        window.add(parts)
        if step % cfg.log_every == 0 or progress >= 1.0:
            losses, line = window.flush(step, cfg.steps, lr, progress)
            log(line)
        if accelerator.is_main_process and (step % cfg.sample_every == 0 or progress >= 1.0):
            t_sample = time.time()
            grid = sample_grid(ema_unet, vae, noise_scheduler.config, sample_cond, cfg.style_dim, cfg.sample_steps)
            save_grid(grid.cpu(), out / "samples" / f"step_{step:07d}.png", nrow=NUM_SAMPLES)
            log(f"step {step} sample grid in {time.time() - t_sample:.1f}s")
        if accelerator.is_main_process and step % cfg.checkpoint_every == 0 and progress < 1.0:
            checkpoint(out / "checkpoints" / f"step_{step:07d}")
    seconds = elapsed + time.time() - t_start
    accelerator.wait_for_everyone()

    # 5. The final pipeline folder: EMA weights, the autoencoder, the scheduler.
    final = out / "final"
    if accelerator.is_main_process:
        checkpoint(out / "checkpoints" / f"step_{step:07d}")
        save_models(final, ema_unet, ema_style)
        vae.save_pretrained(final / "autoencoder", safe_serialization=True)
        noise_scheduler.save_pretrained(final / "scheduler")
        with torch.no_grad():  # posterior statistics of s on some training images (should be ~N(0, I))
            mu, logvar = ema_style(to_tensor(images_t[: min(len(images), 256)]))
        info = {
            "model": "pose-ldm",
            "steps": step,
            "seconds": round(seconds, 1),
            "steps_per_second": round((step - start_step) / max(time.time() - t_start, 1e-9), 4),
            "data": str(args.data),
            "num_images": len(stems),
            "machine": machine(),
            "final_losses": losses,
            "style_posterior": {
                "mu_mean": float(mu.mean()),
                "mu_std": float(mu.std()),
                "sigma_mean": float((0.5 * logvar).exp().mean()),
                "kl_per_dim": [round(float(v), 4) for v in StyleEncoder.kl_per_dim(mu, logvar)],
            },
            "style_guide": layout.to_json() if layout is not None else None,
            "autoencoder": str(args.ae),
            "preset": args.preset,
            "config": preset_dict(cfg),
        }
        (final / "training_info.json").write_text(json.dumps(info, indent=2))
        (final / "model_index.json").write_text(
            json.dumps(
                {
                    "_class_name": "PosePipeline",
                    "autoencoder": autoencoder_index_entry(vae),
                    "unet": ["models.unet", "PoseUNet"],
                    "scheduler": ["diffusers", "DDPMScheduler"],
                    "style_encoder": ["models.style_encoder", "StyleEncoder"],
                },
                indent=2,
            )
        )
        log(
            f"saved {final}: {step} steps in {seconds / 60:.1f} min, losses {losses}, s posterior "
            f"{info['style_posterior']}"
        )
    return final


if __name__ == "__main__":
    main()
