"""Train the domain CLIP (open_clip `CLIP`, config `PoseStudio-CLIP`) on renders and their captions.

    python -m training.train_clip --data data/train --data data/det --out runs/clip --minutes 6 \
        [--synth SEED:N] [--device auto] [--batch-size 1024] [--loss multi|clip] [--resume] [--publish weights/clip]
        [--init weights/clip] [--focus eye_color,hair_style]

Contrastive loss on (image, text) pairs (CLIP, Radford et al. 2021). The text of an image is, at random, its
sentence (caption line 2), its tag list (line 1, in order or shuffled) or a random subset of its tags in random
order, so that short prompts ("pink hair") land where the images are; `--focus` makes every short text name
one tag of the given attributes (the ones zero-shot reads worst), so that they get more of the gradient.
`--loss clip` is open_clip's `ClipLoss` (one positive per row); `--loss multi` (default) also counts as
positives the other images of the batch that have every tag a text names, since "pink hair" describes all
pink-haired images equally. Images: random horizontal flips (captions never say left or right) and a mild
random crop; no colour jitter, since colours are what the prompts name. The schedule is by wall time: linear warm-up, then cosine to zero at
`--minutes`. All images are decoded once (processes) into one uint8 tensor, kept on the GPU when there is one.
Writes `OUT/last.pt` (resumable), `OUT/final/` (open_clip layout) and, with `--publish DIR`, DIR with a card.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from models.errors import InputError
from training.cards import clip_card
from training.data import load_clip_data

VAL_N = 512  # images held back (from the end of the last --data folder) for the zero-shot check while training


# -- augmentation and loss ---------------------------------------------------------------------------
def augment(images_u8: torch.Tensor, out_size: int, gen: torch.Generator, min_scale: float = 0.8) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, S, S) in [-1, 1]: random flip and a random square crop (side >= min_scale);
    `gen` is a generator on the images' device."""
    x = images_u8.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    b, dev = x.shape[0], x.device
    # the whole image is shrunk with antialiasing first, so the crops sample at about the output's pixel size
    x = F.interpolate(x, size=(out_size, out_size), mode="bilinear", antialias=True, align_corners=False)
    u = torch.rand(b, 4, generator=gen, device=dev)
    scale = min_scale + (1 - min_scale) * u[:, 0]  # crop side / image side
    flip = torch.where(u[:, 3] < 0.5, -1.0, 1.0)
    zero = torch.zeros_like(scale)
    theta = torch.stack(
        [
            torch.stack([scale * flip, zero, (1 - scale) * (2 * u[:, 1] - 1)], dim=-1),  # crop stays inside
            torch.stack([zero, scale, (1 - scale) * (2 * u[:, 2] - 1)], dim=-1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, [b, 3, out_size, out_size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class MultiPositiveClipLoss(torch.nn.Module):
    """open_clip's ClipLoss with more than one positive per row: text j is a positive of image i when every tag it
    names is one of image i's tags (so "red hair" matches every red-haired image in the batch, not just its own).
    Targets are uniform over the positives (soft-target cross-entropy, as in UniCL, Yang et al. 2022, Eq. 3);
    with only the diagonal positive it is exactly CLIP's symmetric InfoNCE (Radford et al. 2021, Fig. 3)."""

    def forward(self, image_features, text_features, logit_scale, positives) -> torch.Tensor:
        """positives: (B_images, B_texts) 0/1 float with a positive diagonal."""
        logits = logit_scale * image_features @ text_features.T
        t_img = positives / positives.sum(1, keepdim=True)
        t_txt = positives.T / positives.T.sum(1, keepdim=True)
        return (F.cross_entropy(logits, t_img) + F.cross_entropy(logits.T, t_txt)) / 2


def batch_positives(tag_rows: torch.Tensor, text_masks: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(B, B) positives from each image's tag indices (B, data.MAX_TAGS; padding = vocab_size) and each text's bit mask
    over its own image's tags (B,): P[i, j] = 1 when text j's tags are a subset of image i's."""
    b, t = tag_rows.shape
    bits = ((text_masks.unsqueeze(1) >> torch.arange(t, device=tag_rows.device)) & 1).float()
    img = torch.zeros(b, vocab_size + 1, device=tag_rows.device).scatter_add_(1, tag_rows, torch.ones_like(bits))
    txt = torch.zeros(b, vocab_size + 1, device=tag_rows.device).scatter_add_(1, tag_rows, bits)
    img, txt = img[:, :vocab_size].clamp_(max=1), txt[:, :vocab_size].clamp_(max=1)
    missing = txt @ (1.0 - img).T  # (B_texts, B_images): how many of text j's tags image i lacks
    return (missing.T < 0.5).float()


# -- optimisation -------------------------------------------------------------------------------------
def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """open_clip's split: no weight decay on gains, biases, embeddings and the logit scale."""
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exclude = p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n or "embedding" in n
        (no_decay if exclude else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def lr_at(step: int, progress: float, base_lr: float, warmup: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay by the share of the time budget used."""
    w = min(1.0, (step + 1) / max(1, warmup))
    return base_lr * w * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when present, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda was asked for but no CUDA device is present.")
    return torch.device(name)


@torch.no_grad()
def val_zero_shot(scorer, images: torch.Tensor, attrs: list[dict]) -> dict[str, float]:
    """Zero-shot accuracy per attribute on held-back training-set images (a quick check; eval_clip is the measure)."""
    from training.eval_clip import attribute_prompts, zero_shot_accuracy

    was_training = scorer.model.training
    scorer.model.eval()
    x = images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    embs = torch.cat([scorer.encode_image(x[i : i + 256]) for i in range(0, len(x), 256)])
    out = zero_shot_accuracy(scorer, embs, attrs, attribute_prompts())
    scorer.model.train(was_training)
    return out


# -- the run ------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """Command line: train (resumable, time-budgeted), then save and optionally publish."""
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    ap.add_argument("--data", action="append", default=[], help="synth folder (repeatable)")
    ap.add_argument("--synth", action="append", default=[], help="SEED:N: render N training samples in memory")
    ap.add_argument("--out", default="runs/clip")
    ap.add_argument("--minutes", type=float, default=30.0, help="wall-time budget of the training loop")
    ap.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: by time only)")
    ap.add_argument("--model", default="PoseStudio-CLIP", help="config in models/clip_configs/ (-tiny for tests)")
    ap.add_argument(
        "--loss",
        choices=("multi", "clip"),
        default="multi",
        help="multi: a text is a positive of every image that has all its tags; clip: open_clip's ClipLoss",
    )
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int, default=0, help="0: 1024 on cuda, 128 on cpu")
    ap.add_argument("--lr", type=float, default=0.0, help="0: 1e-3 x batch/1024 (at least 2e-4)")
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=0, help="warm-up steps (0: 150 on cuda, 50 on cpu)")
    ap.add_argument("--max-images", type=int, default=0, help="per data folder, 0 for all")
    ap.add_argument("--image-size", type=int, default=128, help="size the images are held at in memory")
    ap.add_argument("--workers", type=int, default=0, help="decoding processes (0: up to 16)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-every", type=float, default=2.0, help="minutes between checkpoints")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    ap.add_argument(
        "--init", default="", help="start from the weights of this CLIP folder (e.g. weights/clip), fresh schedule"
    )
    ap.add_argument(
        "--focus",
        default="",
        help="comma-separated attributes (eye_color, hair_style, ...) that every short text names (weak ones)",
    )
    ap.add_argument("--publish", default="", help="also write the final model with a card to this folder")
    a = ap.parse_args(argv)
    try:
        return run(a)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def settings(a: argparse.Namespace) -> tuple[dict, torch.device, int, float, int]:
    """Check the command line; the CLIP config, the device, and the batch size, peak learning rate and warm-up steps
    (the device's defaults where the command line gives 0)."""
    from models.clip import CONFIG_DIR

    if not a.data and not a.synth:
        raise InputError("Give training data: --data FOLDER and/or --synth SEED:N.")
    cfg_path = CONFIG_DIR / f"{a.model}.json"
    if not cfg_path.is_file():
        names = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.json")))
        raise InputError(f"No CLIP config {a.model!r} in {CONFIG_DIR} (there: {names}).")
    if a.minutes <= 0 and a.max_steps <= 0:
        raise InputError("Give a positive --minutes or --max-steps.")
    if a.threads:
        torch.set_num_threads(a.threads)
    device = resolve_device(a.device)
    cuda = device.type == "cuda"
    bs = a.batch_size or (1024 if cuda else 128)
    lr, warmup = a.lr or max(2e-4, 1e-3 * bs / 1024), a.warmup or (150 if cuda else 50)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    torch.manual_seed(a.seed)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return json.loads(cfg_path.read_text()), device, bs, lr, warmup


class Trainer:
    """The data on the device, the model and its optimiser, the training loop, and the saved and published model."""

    def __init__(self, a: argparse.Namespace):
        """Every image decoded once and held as one uint8 tensor (on the GPU when training there); the model, fresh,
        from `--init` or (`--resume`) from `OUT/last.pt`."""
        from models.clip import DOMAIN_PREPROCESS_CFG, build_clip

        self.a, self.out = a, Path(a.out)
        self.model_cfg, device, self.bs, self.lr, self.warmup = settings(a)
        t0 = time.time()
        ctx = int(self.model_cfg["text_cfg"]["context_length"])
        self.focus = [f.strip() for f in a.focus.split(",") if f.strip()]
        data = load_clip_data(a.data, a.synth, a.image_size, a.max_images, a.workers, ctx, a.seed, self.focus)
        n_total = len(data.images)
        self.n_val = min(VAL_N, n_total // 10) if n_total >= 50 else 0  # the last items (of the last source)
        self.val_attrs, self.n_train = data.attrs[n_total - self.n_val :], n_total - self.n_val
        tag_table, vocab = data.tag_table()
        self.vocab_size = len(vocab)
        self.images, self.texts, self.masks, self.tags = (
            torch.from_numpy(x).to(device) for x in (data.images, data.texts, data.masks, tag_table)
        )
        del data
        print(f"data: {self.n_train} training + {self.n_val} held-back images from {a.data + a.synth} in "
              f"{time.time() - t0:.1f} s, {(self.images.numel() + 4 * self.texts.numel()) / 2**20:.0f} MiB on {device}",
              flush=True)  # fmt: skip
        self.scorer = build_clip(self.model_cfg, DOMAIN_PREPROCESS_CFG, seed=a.seed)
        self.model = self.scorer.model.to(device).train()
        self.opt = torch.optim.AdamW(param_groups(self.model, a.weight_decay), lr=self.lr, betas=(0.9, 0.98), eps=1e-6)
        self.step, self.elapsed = 0, 0.0
        if a.resume:
            self.resume()
        elif a.init:
            self.init()
        n_params = sum(p.numel() for p in self.model.parameters())
        print(
            f"model: {n_params / 1e6:.2f} M parameters, batch {self.bs}, lr {self.lr:.2e}, {a.minutes} min", flush=True
        )

    def resume(self) -> None:
        """The model, optimiser, step and time of `OUT/last.pt`."""
        ckpt = self.out / "last.pt"
        if not ckpt.is_file():
            raise InputError(f"--resume: no checkpoint at {ckpt}.")
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.step, self.elapsed = int(state["step"]), float(state["elapsed"])
        print(f"resumed from {ckpt}: step {self.step}, {self.elapsed / 60:.1f} min done", flush=True)

    def init(self) -> None:
        """The weights of the CLIP folder `--init` (its config must be `--model`'s)."""
        from safetensors.torch import load_file

        from models.clip import WEIGHTS_NAME

        weights = Path(self.a.init) / WEIGHTS_NAME
        if not weights.is_file():
            raise InputError(f"--init: no {WEIGHTS_NAME} in {self.a.init}.")
        state = {k: v.float() for k, v in load_file(str(weights)).items()}
        try:
            self.model.load_state_dict(state)
        except RuntimeError as err:
            raise InputError(
                f"--init {self.a.init} does not fit the config {self.a.model!r}: {str(err)[:200]}"
            ) from err
        print(f"initialised from {weights}", flush=True)

    def save(self) -> None:
        """`OUT/last.pt`, written aside and renamed (a kill never leaves half a checkpoint)."""
        torch.save({"model": self.model.state_dict(), "opt": self.opt.state_dict(), "step": self.step,
                    "elapsed": self.elapsed, "model_cfg": json.dumps(self.model_cfg)}, self.out / "last.tmp")  # fmt: skip
        os.replace(self.out / "last.tmp", self.out / "last.pt")

    def train(self) -> float:
        """Train by wall time (cosine schedule, bf16 autocast on cuda), checkpointing every `--save-every` minutes;
        returns the mean loss since the last log line."""
        from open_clip import ClipLoss

        a, model, opt, device = self.a, self.model, self.opt, self.images.device
        loss_fn = MultiPositiveClipLoss() if a.loss == "multi" else ClipLoss()
        gen = torch.Generator(device=device).manual_seed(a.seed * 1_000_003 + self.step)
        budget = a.minutes * 60.0
        t_start, last_save, losses, last_loss = time.time() - self.elapsed, time.time(), [], float("nan")
        while True:
            self.elapsed = time.time() - t_start
            if (a.minutes > 0 and self.elapsed >= budget) or (a.max_steps and self.step >= a.max_steps):
                break
            progress = self.elapsed / budget if a.minutes > 0 else self.step / a.max_steps
            for g in opt.param_groups:
                g["lr"] = lr_at(self.step, progress, self.lr, self.warmup)
            # the batch is drawn on the device: images, one of each image's N_TEXTS texts, the augmentation
            idx = torch.randint(0, self.n_train, (self.bs,), device=device, generator=gen)
            which = torch.randint(0, self.texts.shape[1], (self.bs,), device=device, generator=gen)
            tokens = self.texts[idx, which].long()
            x = augment(self.images[idx], self.scorer.image_size, gen)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                img_f, txt_f, logit_scale = model(x, tokens)
            # the logits and the loss in fp32, outside autocast (bf16 logits at scale 100 would be off by ~0.4)
            img_f, txt_f, logit_scale = img_f.float(), txt_f.float(), logit_scale.float()
            if a.loss == "multi":
                positives = batch_positives(self.tags[idx], self.masks[idx, which], self.vocab_size)
                loss = loss_fn(img_f, txt_f, logit_scale, positives)
            else:
                loss = loss_fn(img_f, txt_f, logit_scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            with torch.no_grad():  # CLIP's clamp of the learned temperature at 100 (Radford et al. 2021, Sec. 2.5)
                model.logit_scale.clamp_(0, math.log(100))
            losses.append(loss.detach())
            self.step += 1
            if self.step % a.log_every == 0:
                mean = last_loss = torch.stack(losses).mean().item()  # one sync per log line, not per step
                losses = []
                print(f"step {self.step} loss {mean:.4f} lr {opt.param_groups[0]['lr']:.2e} scale "
                      f"{logit_scale.item():.1f} {self.elapsed / 60:.2f} min", flush=True)  # fmt: skip
            if time.time() - last_save > a.save_every * 60:
                self.save()
                last_save = time.time()
        self.elapsed = time.time() - t_start
        self.save()
        return float(torch.stack(losses).mean().item()) if losses else last_loss

    def finish(self, final_loss: float) -> int:
        """Save in open_clip's layout, check zero-shot on the held-back images, publish."""
        from models.clip import save_clip

        a, scorer, cuda = self.a, self.scorer, self.images.device.type == "cuda"
        self.model.eval()
        scorer.to("cpu")
        final = save_clip(scorer.model, self.model_cfg, self.out / "final", preprocess_cfg=scorer.preprocess_cfg)
        val = val_zero_shot(scorer, self.images[self.n_train :].cpu(), self.val_attrs) if self.n_val else {}
        info = {
            "model": a.model, "loss": a.loss, "val_images": self.n_val, "steps": self.step, "minutes": round(self.elapsed / 60, 2), "batch_size": self.bs, "lr": self.lr, "images": self.n_train,
            "data": a.data + [f"synth {x}" for x in a.synth], "device": torch.cuda.get_device_name(self.images.device) if cuda else platform.processor() or "cpu",
            "torch": torch.__version__, "parameters": sum(p.numel() for p in self.model.parameters()), "val_zero_shot": val, "focus": self.focus,
            "final_loss": final_loss,
        }  # fmt: skip
        (final / "training_info.json").write_text(json.dumps(info, indent=2) + "\n")
        print("final:", json.dumps(info), flush=True)
        if a.publish:
            pub = Path(a.publish)
            pub.mkdir(parents=True, exist_ok=True)
            # fp16 on disk halves the size (12 MB); loading casts back to the model's fp32
            save_clip(scorer.model, self.model_cfg, pub, preprocess_cfg=scorer.preprocess_cfg, dtype=torch.float16)
            shutil.copy(final / "training_info.json", pub / "training_info.json")
            (pub / "README.md").write_text(clip_card(info, self.model_cfg))
            print(f"published to {pub}", flush=True)
        return 0


def run(a: argparse.Namespace) -> int:
    """The training run described by the parsed arguments."""
    trainer = Trainer(a)
    return trainer.finish(trainer.train())


if __name__ == "__main__":
    sys.exit(main())
