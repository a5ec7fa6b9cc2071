"""The model cards (README.md) of the weights the trainers publish: the attribute classifier, the keypoint detector
and the domain CLIP, each written from its run's info dict (`training_info.json`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from training import runs
from training.eval_common import DETECTOR_VAL_SEED


def publish(run: str | Path, dest: str | Path, card: Callable[[dict[str, Any]], str]) -> Path:
    """Copy `RUN/final/` to `dest` and write its model card (README.md), `card` of `RUN/training_info.json`."""
    info = runs.publish_weights(run, dest)
    (Path(dest) / "README.md").write_text(card(info))
    return Path(dest)


# -- the attribute classifier (training.train_attributes) -----------------------------------------
ATTRIBUTES_CARD = """# Attribute classifier (the judge of refinement and direction labels)

A small CNN (`models/attributes.py`, `AttributeClassifier`) that names what a rendered character
looks like: one softmax head per attribute of the renderer's vocabulary (`training/character.py`; each accessory
is a with/without head of its own).
It is the independent judge of the CLIP refinement (`success`: does the refined image show the
asked attribute?) and names the GANSpace / SeFa directions (which attribute's score moves most).
It was trained on `training.render` characters{decoded_intro}, never on CLIP outputs or photos.

| | |
| --- | --- |
| files | `config.json` (architecture and class names), `diffusion_pytorch_model.safetensors` ({weights_kb:.0f} kB, {info[parameters]:,} parameters) |
| architecture | {cfg[patch_size]}x{cfg[patch_size]} patch stem, 3x3 conv stages {channels} (extra convs {depths}), global average + max pooling of the last {cfg[pool_stages]} stages, a {cfg[hidden]}-wide shared layer, one linear head per attribute; an eye locator (trained on the renders' eye keypoints) whose map also pools stage features for {attend}; input resized to {cfg[image_size]} px |
| data | {info[train_images]:,} renders of `{info[data]}` (`python -m training.synth --out data/train --n 17556 --seed 0`), the last {val_n:,} held out{decoded} |
| augmentation | mirroring, small zoom and shift, blur, down-up resampling, noise, small brightness and contrast changes; no hue or saturation change (colour is the label) |
| training | {info[steps]:,} steps of batch {info[batch]}{init}, AdamW lr {args[lr]} (cosine), cross-entropy over the heads weighted {weights}{balance} (eye colour and glasses skipped on back views, where no face is drawn) |
| time | {minutes:.1f} min wall ({budget_min:.1f} {clock} minutes budgeted), device `{info[device]}` |
| machine | {info[machine]} |
| command | `{command}` |

## Accuracy

{table}

Held-out: {rep[heldout][source]}. {eval_src}{ae_src}Eye colour is scored only where the eyes are drawn
(all views but the back), the outfit's second colour not on dresses (there it is a 1 px belt line).
Chance is 1 / (number of classes). Two-class attributes (gender, each accessory) show the balanced accuracy
in parentheses, the mean of each class's recall: an accessory is worn in 7-20 % of renders, so answering "without"
always scores 0.8-0.93 accuracy but 0.5 balanced.

    from models.attributes import load_attribute_classifier
    clf = load_attribute_classifier("weights/attributes")
    clf.predict(images)          # {{"hair_color": (B, 12) probabilities, ...}}; images: PIL list or (B, 3, H, W) in [-1, 1]
    clf.top_labels(images)       # [{{"hair_color": "pink", ...}}, ...]
"""


def accuracy_table(report: dict[str, Any], classes: dict[str, list[str]]) -> str:
    """Markdown table: attribute, classes, and one accuracy column per evaluated set."""
    sets = [(k, t) for k, t in (("heldout", "held-out renders"), ("eval_data", "data/det renders"),
                                 ("heldout_autoencoder", "held-out through the autoencoder")) if k in report]  # fmt: skip
    rows = ["| attribute | classes | " + " | ".join(t for _, t in sets) + " |", "| --- | --- |" + " --- |" * len(sets)]

    def cell(rep: dict[str, Any], name: str, n_classes: int) -> str:
        balanced = rep.get("balanced_accuracy", {}).get(name)
        extra = f" ({balanced:.3f})" if n_classes == 2 and balanced is not None else ""
        return f"{rep['accuracy'][name]:.3f}{extra}"

    for name, names in classes.items():
        cells = " | ".join(cell(report[k], name, len(names)) for k, _ in sets)
        rows.append(f"| {name} | {len(names)} | {cells} |")
    rows.append("| **mean** | | " + " | ".join(f"**{report[k]['mean_accuracy']:.3f}**" for k, _ in sets) + " |")
    return "\n".join(rows)


def attributes_command(args: dict[str, Any]) -> str:
    """The training command of a run, from its saved arguments (the options that shape the model card)."""
    words = ["python -m training.train_attributes", f"--data {args['data']}", "--out runs/attributes"]
    if args.get("init"):
        words.append(f"--init {args['init']}")
    if args.get("train_decoded"):
        words += [
            f"--ae {args['ae']}",
            f"--train-decoded {args['train_decoded']:g}",
            f"--decoded-n {args['decoded_n']}",
        ]
    words += [f"--minutes {args['minutes']:g}", f"--lr {args['lr']:g}"]
    if args.get("eval_data"):
        words.append(f"--eval-data {args['eval_data']}")
    return " ".join([*words, "--publish weights/attributes"])


def attributes_card(info: dict[str, Any]) -> str:
    """The README.md of a published attribute classifier: what it judges, how it was trained, its accuracy."""
    cfg, rep, args = info["config"], info["accuracy"], info["args"]
    decoded = args.get("train_decoded")
    return ATTRIBUTES_CARD.format(
        info=info,
        cfg=cfg,
        args=args,
        rep=rep,
        weights_kb=info["weights_bytes"] / 1024,
        channels=tuple(cfg["channels"]),
        depths=tuple(cfg["depths"]),
        attend=", ".join(f"{k} (stages {'+'.join(map(str, v))})" for k, v in (cfg.get("attend") or {}).items())
        or "no head",
        val_n=rep["heldout"]["n"]["hair_color"],
        weights=args["loss_weights"] or "equally",
        balance=f", the classes of {args['balance']} weighed by inverse frequency" if args.get("balance") else "",
        minutes=info["train_seconds"] / 60,
        budget_min=info["budget_seconds"] / 60,
        command=attributes_command(args),
        init=f", continuing the classifier then in `{args['init']}`" if args.get("init") else "",
        decoded=f"; {decoded:.0%} of each batch drawn from {min(args['decoded_n'], info['train_images']):,} of them "
        f"encoded and decoded by `{args['ae']}`" if decoded else "",
        decoded_intro=" and on those renders as its autoencoder decodes them (the look of every generated image)"
        if decoded else "",
        clock=info["budget_clock"].upper() if info["budget_clock"] == "cpu" else "wall",
        table=accuracy_table(rep, cfg["class_names"]),
        eval_src=f"data/det: {rep['eval_data']['source']}, another synth seed. " if "eval_data" in rep else "",
        ae_src=f"Autoencoder column: {rep['heldout_autoencoder']['source']}; it counts the autoencoder's own colour "
        "errors too, so it says as much about that autoencoder as about this classifier. "
        if "heldout_autoencoder" in rep else "",
    )  # fmt: skip


# -- the keypoint detector (training.train_detector) ----------------------------------------------
DETECTOR_CARD = """# Keypoint detector (pose fidelity metric)

A small heatmap CNN (`models/detector.py`, `KeypointDetector`) that reads the 17 COCO keypoints
and their visibility out of 128 px images of our rendered characters. It measures how well
generated images follow the requested pose (PCK in `python -m training.eval quality`), and its pooled
bottleneck is the feature space of our Frechet distance. It is not a general human pose model:
it has seen only `training.render` characters, never photos.

| | |
| --- | --- |
| files | `config.json`, `diffusion_pytorch_model.safetensors` ({weights_kb:.0f} kB, {info[parameters]:,} parameters) |
| architecture | strided conv encoder {channels} (128 -> 8 px), FPN-style decoder ({cfg[decoder_channels]} ch) to {grid} x {grid} heatmaps (spatial softmax, local soft-argmax decoding) + per-point visibility logits |
| data | {info[train_images]:,} renders `{info[data]}` (`python -m training.synth --out data/det --n 20000 --seed 1`) |
| augmentation | mirroring (labels swapped), small affine moves, blur, down-up resampling, JPEG, colour jitter, noise (so it reads generated images) |
| training | {info[steps]} steps of batch {info[batch]}, AdamW, lr {info[args][lr]} cosine; `python -m training.train_detector --data data/det --out runs/detector` |
| time | {wall_min:.1f} min wall, {cpu_min:.1f} min CPU, 1 thread |
| machine | {info[machine]}, shared with other training jobs |
| **PCK@0.1 on held-out renders** | **{info[pck@0.1_heldout]:.4f}** on {info[validation]} |
| PCK@0.05 on held-out renders | {info[pck@0.05_heldout]:.4f} |
| visibility accuracy (v >= 0.5) | {info[visibility_accuracy]:.4f} |

PCK@t: share of the target's visible keypoints predicted within t x the longer side of the
visible points' bounding box. The held-out renders use the reserved synth data set seed
{val_seed} (`training.eval_common.DETECTOR_VAL_SEED`), never used for training.

    from models.detector import KeypointDetector
    det = KeypointDetector.from_pretrained("weights/detector")
    poses = det.detect([image])        # list[models.pose.Pose], in each image's frame
    python -m training.eval detect IMAGE... --detector weights/detector
"""


def detector_card(info: dict[str, Any]) -> str:
    """The README.md of a published keypoint detector: what it measures, how it was trained, its PCK."""
    cfg = info["config"]
    return DETECTOR_CARD.format(
        info=info,
        cfg=cfg,
        weights_kb=info["weights_bytes"] / 1024,
        channels=tuple(cfg["channels"]),
        grid=cfg["image_size"] // cfg["heatmap_stride"],
        wall_min=info["train_seconds"] / 60,
        cpu_min=info.get("train_cpu_seconds", info["train_seconds"]) / 60,
        val_seed=DETECTOR_VAL_SEED,
    )


# -- the domain CLIP (training.train_clip) --------------------------------------------------------
def clip_card(info: dict[str, Any], model_cfg: dict[str, Any]) -> str:
    """The README.md of the published CLIP (`model_cfg`: its open_clip config): what it is, its training, its scores."""
    val = info.get("val_zero_shot") or {}
    rows = "\n".join(f"| {k} | {v:.3f} |" for k, v in val.items())
    v, t = model_cfg["vision_cfg"], model_cfg["text_cfg"]
    if isinstance(v["layers"], (list, tuple)):  # open_clip's ModifiedResNet (layers per stage)
        tower = f"ModifiedResNet, stages {list(v['layers'])}, width {v['width']}"
    else:
        tower = f"ViT, patch {v['patch_size']}, width {v['width']}, {v['layers']} layers"
    return f"""# Pose Studio domain CLIP

A small CLIP (open_clip's `CLIP` class and its standard BPE tokenizer, config `{info.get("model", "PoseStudio-CLIP")}` in
`models/clip_configs/`) trained contrastively on the renderer's images and captions. It scores how well a
prompt ("pink hair, sailor uniform") matches one of our renders; it knows nothing beyond the renderer's
vocabulary (`docs/ATTRIBUTES.md`).

Load: `models.clip.load_clip("weights/clip")`, or with open_clip alone:
`open_clip.create_model("local-dir:weights/clip")` + `open_clip.get_tokenizer("local-dir:weights/clip")`.
Inputs: {v["image_size"]} px RGB, mean and std 0.5 (i.e. images in [-1, 1]); text context {t["context_length"]} tokens.

* Image tower: {tower}; text tower: width
  {t["width"]}, {t["layers"]} layers; embedding {model_cfg["embed_dim"]}; {info["parameters"] / 1e6:.2f} M parameters (stored in fp16, run in fp32).
* Data: {info["images"]} renders from {", ".join(info["data"])} (`python -m training.synth`), 128 px held in memory,
  shrunk to {v["image_size"]} px; text = the caption sentence, the tag list (shuffled or not) or a random tag subset.
  Augmentation: horizontal flips and a mild random crop; no colour jitter.
* Training: `python -m training.train_clip`, loss `{info.get("loss", "clip")}` (see its docstring), AdamW, batch {info["batch_size"]},
  peak lr {info["lr"]:.1e}, cosine by wall time; {info["steps"]} steps in {info["minutes"]} min on {info["device"]}
  (torch {info["torch"]}).

Zero-shot accuracy after training, on {info["val_images"]} held-back images of the last data folder (prompts such as
"red hair", "twintails", "blue eyes", "sailor uniform", "yellow background"):

| attribute | accuracy |
| --- | --- |
{rows}

The held-out measure (fresh renders of a seed never trained on) is `python -m training.eval_clip --json`.
"""
