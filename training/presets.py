"""Training presets: typed dataclasses (`cpu` for 2 cores in about an hour, `gpu` larger, `tiny` for tests).

Every field becomes a command-line option whose default is the chosen preset's value:
`python -m training.train_ae --preset cpu --steps 500 --help` shows them.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any, Literal


@dataclass
class AEPreset:
    """Hyperparameters of the autoencoder run (`training/train_ae.py`)."""

    image_size: int = 256  # renders are drawn (or images read) at this side
    # "shuffle": models.autoencoder.ShuffleAutoencoder (f8 by pixel shuffles); "kl": diffusers' AutoencoderKL
    arch: Literal["shuffle", "kl"] = "shuffle"
    latent_channels: int = 16  # channels of the latent the UNet denoises (32 x 32 at 256 px for f8)
    widths: tuple[int, ...] = (96, 192)  # shuffle: channels at 1/4 and 1/8 of the side
    blocks: tuple[int, ...] = (2, 3)  # shuffle: residual blocks at 1/4 and 1/8
    head_width: int = 32  # shuffle: channels at 1/2 of the side
    block_out_channels: tuple[int, ...] = (32, 64, 128, 128)  # kl: widths per level (len - 1 downsamples)
    layers_per_block: int = 1  # kl: resnet blocks per level
    norm_num_groups: int = 8  # kl: GroupNorm groups
    mid_attention: bool = False  # kl: self-attention in the mid block
    crop: int = 64  # train on random crops of this side: the AE is fully convolutional, crops cost 16x less
    figure_crops: float = 0.75  # share of crops centred on a figure pixel (the rest anywhere): faces are rare pixels
    batch_size: int = 16
    steps: int = 40000  # at most this many steps
    minutes: float = 150.0  # and at most this many minutes: the schedule follows whichever ends first (0: steps only)
    lr: float = 1e-3  # AdamW learning rate (cosine decay to 10% after warm-up)
    warmup: int = 200  # linear warm-up steps
    kl_weight: float = 1e-6  # KL(q(z|x) || N(0, I)) per latent element: keeps the latent bounded, no more
    # "channel": every latent channel scaled to unit variance on its own (the detail channels of a 16-channel latent
    # have a quarter of the colour channels' spread, so noise drowns them first); "global": one scale for all
    latent_norm: Literal["global", "channel"] = "channel"
    # False: fine-tune the decoder only, so the latent space (and any UNet trained on it) stays valid
    train_encoder: bool = True
    grad_weight: float = 0.5  # L1 on image gradients (edge sharpness)
    multiscale_weight: float = 0.5  # L1 on 2x and 4x average-pooled images (colour blocks)
    # Patch discriminator (hinge loss) and L1 feature matching on its layers, from step gan_start: the decoder then
    # draws crisp edges rather than their mean (Esser et al. 2021; Rombach et al. 2022). 0: no discriminator.
    gan_weight: float = 0.0
    feature_weight: float = 1.0  # feature matching, relative to gan_weight
    gan_start: int = 0
    data: str = ""  # a folder of images (images/*.png) instead of fresh renders; "" streams the renderer
    max_images: int = 0  # with `data`: use at most this many images (0: all)
    # A pipeline folder: the decoder (only) learns to draw fresh renders from the latents that this pipeline's UNet
    # denoises them back to, so that it draws through the UNet's own errors (a denoising decoder, as DALL-E 3's
    # consistency decoder, Betker et al. 2023). "": plain round trips.
    denoiser: str = ""
    denoise_steps: int = 8  # the sampler's schedule: renders are noised to one of its steps, then DDIM to t = 0
    denoise_max_t: int = 374  # ... a step with t at most this (SDEdit, Meng et al. 2021): the layout stays the render's
    denoise_clean: float = 0.25  # share of batches decoded from the encoder's own latents, so round trips stay sharp
    denoise_guidance: float = 2.0  # pose guidance of the denoiser (the pipeline's default)
    checkpoint_every: int = 500  # steps between resumable checkpoints
    sample_every: int = 1000  # steps between validation PSNRs and reconstruction grids (PNG)
    log_every: int = 50  # steps between log lines
    seed: int = 0
    num_threads: int = 2  # torch CPU threads
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"  # accelerate's setting (`runs.device_precision`)


@dataclass
class LDMPreset:
    """Hyperparameters of the latent diffusion run (`training/train_ldm.py`)."""

    image_size: int = 128  # must match the autoencoder's training images
    # UNet widths (32, 16, 8 latent px for f4; ~9.4 GFLOP fwd+bwd a sample)
    block_out_channels: tuple[int, ...] = (64, 128, 256)
    layers_per_block: int = 1
    attention_head_dim: int = 32  # channels per attention head
    # Levels with self-attention, counted from the lowest resolution up (2: also at 16 x 16 for a 32 x 32 latent, where
    # one garment spans several cells). `--init` from a UNet with fewer adds them, their outputs starting at zero.
    attention_levels: int = 1
    hint_channels: int = 32  # channels of the encoded pose condition concatenated with the latent
    style_dim: int = 64  # dimension of the style code s (prior N(0, I))
    prediction_type: Literal["v_prediction", "epsilon"] = "v_prediction"  # v is steadier at few steps
    num_train_timesteps: int = 1000
    # Train on t in [lo, hi) only: (0, 300) makes a low-noise expert (Balaji et al. 2022, eDiff-I) that spends every
    # sample on the fine detail a small UNet learns last; started from the base (`--init`) with its style path frozen
    # (`--style-lr-mult 0`), it goes into the base's folder as `detail_unet/`, which then draws the steps it covers.
    timesteps: tuple[int, ...] = (0, 1000)
    batch_size: int = 16
    steps: int = 6000  # at most this many steps
    minutes: float = 60.0  # and at most this many minutes: the schedule follows whichever ends first (0: steps only)
    lr: float = 3e-4
    warmup: int = 200
    weight_decay: float = 0.01
    ema_decay: float = 0.999  # EMA of the UNet + style encoder weights; the EMA is what ships
    ema_warmup: int = 200  # the EMA copies the weights outright before this step
    pose_dropout: float = 0.1  # share of steps with the condition map zeroed (classifier-free guidance)
    style_kl_weight: float = 3e-3  # KL(q(s|x) || N(0, I)) per dimension (mean over dims)
    # KL weight of the last dimension over the first's, geometric in between (1: uniform). An ordered prior cost
    # makes the code put the appearance the UNet needs most into the first, cheapest dimensions, as PCA would,
    # instead of spreading it thinly over all 64 (where no single GANSpace / SeFa direction shows much).
    style_kl_ramp: float = 1.0
    style_lr_mult: float = 1.0  # lr multiplier of the style path (style encoder + `style_affine`); >1 fights collapse
    # Guided axes (`training.style_guide`): "off" (a plain VAE code), "loss" (a 1-D classifier loss on the first
    # axes of the encoder's s, weight `style_guide_weight`) or "labels" (the first axes set from the labels, each
    # class a bin of N(0, 1)); and the weight of the penalty that keeps the style affine's columns orthogonal
    # with decreasing norms (0: none).
    style_guide: Literal["off", "loss", "labels"] = "off"
    style_guide_weight: float = 0.0
    affine_reg_weight: float = 0.0
    # In "labels" mode, where the other axes of s come from: the encoder's posterior, or the prior N(0, I) as at
    # sampling time. From the posterior they fill up with the guided attributes again, so a UNet trained on them
    # meets guided and free axes that disagree when it samples.
    free_style: Literal["posterior", "prior"] = "posterior"
    # With a `synth --pairs` data folder (images 2k, 2k+1 differ in one attribute): batches of whole pairs, each
    # pair with one t, one noise, one pose dropout and one flip (and in "labels" mode one s but for the swapped
    # axis), and this weight on the loss of the pair's difference (0: no pairs).
    pair_weight: float = 0.0
    min_snr_gamma: float = 5.0  # Min-SNR loss weighting (Hang et al. 2023); 0 turns it off
    # Rescale the noise schedule to zero terminal SNR (Lin et al. 2024, Sec. 3.1): at t = T the model then sees no
    # trace of the image, whose low frequencies (the colours) the standard schedule leaves readable at SNR 0.005, so
    # the colours must come from the pose and s instead of the starting noise. v-prediction and the
    # plain v-loss only (Min-SNR gives the terminal step, SNR 0, no weight).
    zero_snr: bool = False
    flip: bool = False  # also train on mirrored images (latents of both precomputed: 2x the encoding time)
    max_images: int = 8000  # use at most this many images (0: all); encoding costs ~2.3 GFLOP (~40 ms) each on CPU
    checkpoint_every: int = 500
    sample_every: int = 1000  # steps between sample grids (PNG, EMA weights, DDIM)
    sample_steps: int = 20  # DDIM steps of the sample grids
    log_every: int = 25
    seed: int = 0
    num_threads: int = 2
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    # torch.compile the loss (UNet, style encoder and all): fused kernels, 1.0 -> 1.16 CPU steps/s after ~3 min
    compile: bool = False
    style_channels: tuple[int, ...] = (32, 64, 128, 128)  # style encoder CNN widths (128 -> 8 px)
    style_input_size: int = 128  # the style encoder sees the images resized to this side (models.unet)


# What the test presets share: two steps of two images, each step logged, saved and drawn.
TINY_RUN: dict[str, Any] = {
    "batch_size": 2,
    "steps": 2,
    "minutes": 0,
    "warmup": 1,
    "checkpoint_every": 1,
    "sample_every": 1,
    "log_every": 1,
    "num_threads": 1,
}

AE_PRESETS: dict[str, AEPreset] = {
    "cpu": AEPreset(),
    # One GPU: wider, whole-figure crops, the discriminator from the start of the second half.
    "gpu": AEPreset(
        widths=(128, 256),
        blocks=(3, 4),
        head_width=48,
        crop=128,
        batch_size=64,
        steps=30000,
        minutes=0,
        lr=5e-4,
        warmup=500,
        gan_weight=0.1,
        gan_start=15000,
        checkpoint_every=2000,
        sample_every=2000,
        log_every=200,
        num_threads=8,
        mixed_precision="bf16",
    ),
    "tiny": AEPreset(
        image_size=32,
        widths=(8, 16),
        blocks=(1, 1),
        head_width=8,
        latent_channels=4,
        crop=16,
        **TINY_RUN,
    ),
}

# What both GPU presets share: the loss settings found on the CPU and GPU runs (weights/README.md): the plain
# v-loss keeps s in use, the ordered KL ramp gathers the code in its first dimensions, the guide gives the first ten
# axes one attribute each and the affine penalty keeps them apart for SeFa and GANSpace.
GPU_LDM: dict[str, Any] = {
    "steps": 100000,
    "flip": True,
    "max_images": 0,
    "num_threads": 8,
    "mixed_precision": "bf16",
    "min_snr_gamma": 0.0,
    "style_kl_weight": 1e-3,
    "style_kl_ramp": 100.0,
    "style_guide": "loss",
    "style_guide_weight": 0.05,
    "affine_reg_weight": 10.0,
}

LDM_PRESETS: dict[str, LDMPreset] = {
    "cpu": LDMPreset(),
    "gpu": LDMPreset(
        block_out_channels=(192, 384, 512),
        layers_per_block=2,
        attention_head_dim=64,
        batch_size=128,
        minutes=0,
        lr=2e-4,
        warmup=1000,
        ema_decay=0.9999,
        ema_warmup=2000,
        checkpoint_every=5000,
        sample_every=5000,
        **GPU_LDM,
        style_channels=(64, 128, 256, 256),
    ),
    # The shipped UNet (7.6M parameters: ~1 s an image on 2 CPU cores), trained on one GPU in minutes.
    "gpu_small": LDMPreset(
        block_out_channels=(64, 128, 192),
        batch_size=256,
        minutes=4.5,
        lr=4e-4,
        warmup=300,
        ema_warmup=300,
        checkpoint_every=1500,
        sample_every=1500,
        log_every=100,
        **GPU_LDM,
    ),
    "tiny": LDMPreset(
        image_size=32,
        block_out_channels=(8, 16),
        attention_head_dim=4,
        hint_channels=4,
        style_dim=8,
        ema_warmup=1,
        style_channels=(8, 8),
        sample_steps=2,
        **TINY_RUN,
    ),
}


@dataclass
class DistillPreset:
    """Hyperparameters of the few-step distillation (`training/train_distill.py`)."""

    batch_size: int = 8
    steps: int = 4000
    minutes: float = 60.0  # wall-clock budget (0: steps only); the lr schedule anneals over whichever ends first
    lr: float = 5e-5
    warmup: int = 100
    target_decay: float = 0.95  # EMA of the student that gives the targets (LCM's "target network")
    huber_c: float = 0.001  # pseudo-Huber loss sqrt(d^2 + c^2) - c (LCM's default)
    guidance: float = 2.0  # the teacher's pose guidance, folded into the student
    max_images: int = 12000  # 0: all
    checkpoint_every: int = 250
    sample_every: int = 500
    log_every: int = 25
    seed: int = 0
    num_threads: int = 2


DISTILL_PRESETS: dict[str, DistillPreset] = {
    "cpu": DistillPreset(),
    "gpu": DistillPreset(
        batch_size=128,
        steps=20000,
        minutes=0,
        lr=1e-4,
        warmup=500,
        max_images=0,
        num_threads=8,
        checkpoint_every=2000,
        sample_every=2000,
        log_every=100,
    ),
    "tiny": DistillPreset(**{**TINY_RUN, "max_images": 0, "sample_every": 2}),
}


def _opt(default: Any, help: str) -> Any:
    """A preset field with its `--help` text (`parse_with_preset` shows it before the default)."""
    return dataclasses.field(default=default, metadata={"help": help})


# -- the plain trainers (no Accelerator; resumable state in OUT/checkpoint/) -----------------------
@dataclass
class ClassifierRunPreset:
    """The run options that the detector's and the attribute judge's trainers share (defaults: the detector's)."""

    # Sized on this machine: ~0.5-0.6 CPU seconds a detector step of 32 on one thread, so 2400 steps or the 22
    # CPU-minute budget (whichever comes first) is a ~22 minute run on a quiet core.
    steps: int = _opt(2400, "optimiser steps")
    minutes: float = _opt(22.0, "budget in CPU minutes of this process (wall minutes on a GPU); the run ends here "
                          "or at --steps, whichever comes first, 0 = no limit")  # fmt: skip
    batch: int = _opt(32, "batch size")
    lr: float = _opt(2e-3, "AdamW peak learning rate")
    warmup: int = _opt(100, "linear warm-up steps")
    weight_decay: float = 1e-4
    augment: float = _opt(1.0, "augmentation strength, 0 = none")
    max_images: int = _opt(0, "use at most this many images of --data (0: all)")
    checkpoint_every: int = 200
    eval_every: int = 400
    log_every: int = 25
    threads: int = _opt(1, "torch CPU threads")
    seed: int = 0


@dataclass
class DetectorPreset(ClassifierRunPreset):
    """Hyperparameters of the keypoint detector run (`training/train_detector.py`)."""

    hidden_weight: float = _opt(0.25, "location loss weight of hidden (placed, unseen) points")
    vis_weight: float = _opt(0.5, "visibility BCE weight")
    # the KeypointDetector config (`--init` brings its own)
    image_size: int = _opt(128, "model: side the images are resized to")
    channels: tuple[int, ...] = _opt((16, 32, 64, 128), "model: 4 encoder widths")
    decoder_channels: int = _opt(32, "model: width of the upsampling path")
    heatmap_stride: int = _opt(4, "model: input pixels per heatmap cell (2, 4 or 8)")
    sigma: float = _opt(1.0, "model: target Gaussian std in heatmap cells")


DETECTOR_PRESETS: dict[str, DetectorPreset] = {"cpu": DetectorPreset()}


@dataclass
class AttributesPreset(ClassifierRunPreset):
    """Hyperparameters of the attribute classifier run (`training/train_attributes.py`; its run options' defaults
    are in `ATTRIBUTES_PRESETS`)."""

    holdout: float = _opt(0.05, "share held out, from the end")
    train_decoded: float = _opt(0.0, "share of each batch drawn from training renders passed through --ae (module "
                                "docstring)")  # fmt: skip
    decoded_n: int = _opt(4000, "training renders passed through --ae")
    eye_weight: float = _opt(0.3, "weight of the eye locator's loss against the eye keypoints")
    # Small or subtle attributes (2-5 px eyes, the hair's silhouette) learn last; more weight brings them in within
    # a CPU budget.
    loss_weights: str = _opt("eye_color=3,hair_style=2,glasses=2,cat_ears=2,beret=2,hair_ribbon=2",
                             "NAME=W,... cross-entropy weight per attribute, others 1")  # fmt: skip
    # One character in seven or fewer wears each accessory (models.attributes.ACCESSORIES): unweighted, its head
    # learns "without" (balanced accuracy 0.50 in docs/EXPERIMENTS.md); weighing each class by its inverse
    # frequency asks for both.
    balance: str = _opt("glasses,cat_ears,beret,hair_ribbon", "NAME,...: attributes whose classes weigh 1 / frequency")
    # the AttributeClassifier config (`--init` brings its own)
    image_size: int = _opt(128, "model: side every input is resized to")
    patch_size: int = _opt(4, "model: stem kernel and stride")
    channels: tuple[int, ...] = _opt((32, 64, 128), "model: stem and stage widths")
    depths: tuple[int, ...] = _opt((1, 1, 2), "model: extra 3x3 convs per stage")
    pool_stages: int = _opt(3, "model: last stages pooled")
    hidden: int = _opt(256, "model: width of the shared layer before the heads")
    no_eye_attention: bool = _opt(False, "model: no eye locator: every head reads the pooled features")
    # The face is where the eyes are: its skin, the glasses and the hair around it are read there too (the hair and
    # what sits on it from the coarser stages, whose cells see the whole head).
    attend: str = _opt("eye_color=0+1,skin=0+1,hair_style=1+2,gender=1+2,glasses=0+1,cat_ears=1+2,beret=1+2,"
                       "hair_ribbon=1+2", "model: NAME=STAGE+STAGE,...: heads that also read those stages pooled "
                       "under the eye map")  # fmt: skip


ATTRIBUTES_PRESETS: dict[str, AttributesPreset] = {
    "cpu": AttributesPreset(steps=100_000, minutes=15.0, batch=64, weight_decay=0.01, eval_every=300),
}


@dataclass
class BudgetRunPreset:
    """The run options of the small CPU trainers on a wall-time budget (defaults: the part parser's)."""

    batch_size: int = 32
    lr: float = 2e-3
    steps: int = 3000
    minutes: float = _opt(15.0, "wall-time budget; the cosine rate follows it")
    checkpoint_every: int = 200
    threads: int = 1


@dataclass
class ParserPreset(BudgetRunPreset):
    """Hyperparameters of the part parser run (`training/train_parser.py`)."""

    channels: tuple[int, ...] = _opt((16, 32, 64, 96), "model: widths at 1/2, 1/4, 1/8 and 1/16 of the input")


PARSER_PRESETS: dict[str, ParserPreset] = {"cpu": ParserPreset()}


@dataclass
class MeanLatentPreset(BudgetRunPreset):
    """Hyperparameters of the mean latent run (`training/train_mean_latent.py`; its run options' defaults are in
    `MEAN_LATENT_PRESETS`)."""

    channels: int = _opt(64, "model: width of the residual blocks")
    cell: int = _opt(0, "pixels per working cell (0: two latent cells)")


MEAN_LATENT_PRESETS: dict[str, MeanLatentPreset] = {
    "cpu": MeanLatentPreset(batch_size=64, steps=4000, minutes=20.0, checkpoint_every=250),
}


def _parse_value(kind: Any, text: str) -> Any:
    """Parse one command-line value for a field of type `kind` (as written in the dataclass)."""
    kind = str(kind)
    if kind.startswith("tuple"):
        return tuple(int(v) for v in text.replace(",", " ").split())
    if kind == "bool":
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    return text


def parse_with_preset(
    parser: argparse.ArgumentParser, presets: dict[str, Any], argv: list[str] | None = None
) -> tuple[argparse.Namespace, Any]:
    """Add `--preset` and one option per preset field (default = the chosen preset's value, help = the field's
    `metadata["help"]`); parse."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", choices=sorted(presets), default="cpu")
    known, _ = pre.parse_known_args(argv)
    base = presets[known.preset]
    parser.add_argument("--preset", choices=sorted(presets), default="cpu", help="hyperparameter preset")
    group = parser.add_argument_group(f"preset fields (defaults from --preset {known.preset})")
    for f in dataclasses.fields(base):
        default = getattr(base, f.name)
        shown = ",".join(str(v) for v in default) if isinstance(default, tuple) else default
        choices = None
        if str(f.type).startswith("Literal"):
            choices = [c.strip().strip("'\"") for c in str(f.type)[8:-1].split(",")]
        switch = {"nargs": "?", "const": True} if str(f.type) == "bool" else {}  # a bare `--flag` is true
        group.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f.name,
            default=argparse.SUPPRESS,
            metavar="V",
            choices=choices,
            type=lambda t, k=f.type: _parse_value(k, t),
            help=f"{f.metadata.get('help', '')} (default: {shown})".lstrip(),
            **switch,
        )
    args = parser.parse_args(argv)
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(base) if hasattr(args, f.name)}
    preset = dataclasses.replace(base, **overrides)
    return args, preset


def preset_dict(preset: Any) -> dict[str, Any]:
    """The preset as a JSON-able dict (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(preset).items()}


# -- the schedule of every trainer that has a time budget -----------------------------------------
def run_progress(step: int, total_steps: int, seconds: float, minutes: float) -> float:
    """How far the run is, in [0, 1]: steps done or time used, whichever is further (`minutes` 0: steps only).

    With a time budget the schedule anneals fully even when a shared CPU runs slower than measured.
    """
    progress = step / max(total_steps, 1)
    if minutes > 0:
        progress = max(progress, seconds / (60 * minutes))
    return min(progress, 1.0)


def lr_factor(step: int, warmup: int, progress: float, floor: float = 0.1) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to `floor` of the peak rate as `progress` -> 1."""
    import math

    if step < warmup:
        return (step + 1) / max(warmup, 1)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
