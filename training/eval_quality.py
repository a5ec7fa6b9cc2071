"""What a person sees: samples against renders of the same held-out poses, at the model's output size.

    python -m training.eval quality --json [--n 256] [--model weights] [--steps 8] [--fast] [--guidance G] \\
        [--sheet docs/quality.png]

Three sets of the reserved split (`training.eval_common.EVAL_SEED`): renders A of poses `[0, n)`, the autoencoder's
round trips of A, samples of the model in the same poses (seed `EVAL_SEED + i`), and renders B of poses
`[n, 2n)` (the reference for distribution figures, so no figure rewards copying A). Reported:

* `sharpness_ratio` / `hf_ratio`: Laplacian variance / power above half the Nyquist frequency of the samples over
  that of renders A, on the whole image and on the figure's pixels (`_figure`: the render's mask, dilated);
  `ae_` the same for the round trips. Blur drives both toward 0; 1 is the renders' own detail.
* `fd_clip_ratio`: Frechet distance (Heusel et al. 2017) in the domain CLIP's image features between samples and
  renders B, over the floor between renders A and B; only at n >= `FD_MIN_N` (below it the estimator's bias is
  most of the figure: 1.3 at n = 64 read 3.1 at n = 256), else null and the small sample's value as
  `fd_clip_ratio_biased`, for comparing runs at one n only; `fd_clip_ratio_se`: its bootstrap standard error (two
  models differ when their figures are several of these apart).
* `c2st`: held-out accuracy of a small CNN trained to tell samples from renders B (Lopez-Paz & Oquab 2017): 0.5 is
  indistinguishable, 1.0 always told apart; `c2st_ae` the same for round trips, `c2st_floor` renders against renders.
* `face`: the share of samples with two eyes where the pose puts them, by `training.eval_face`'s check (trained at
  evaluation time on renders against the same renders without eyes and hard negatives), among the faces the renderer
  drew with eyes (`face_n`); `face_ae` the same on round trips, and the check's own control on the held-out renders
  and their eyeless twins: `face_renders` (1 when it works) and `face_eyeless` (0 when it works).
* `flat_colours_ratio`: how many colours (bins of 24 levels a channel) cover 90% of the figure's flat pixels (all four
  neighbours within `FLAT_STEP` levels) in a sample, over that in its render: 1 is the renderer's flat fills,
  patchwork (a garment in two or three colours) reads 1.8; a Gaussian blur of 1 px leaves it at 1.0, but one of 2 px
  lets smooth ramps count as flat and reads 2.5, so read it beside the sharpness. `ae_` the same for round trips.
* `ae_psnr`, `ae_psnr_figure`: the round trip's PSNR on the whole image and on the figure's pixels.
* `ae_eye_colour_ratio`: the attribute judge's eye-colour accuracy on round trips over that on renders.
* `pck` (synthetic poses) and `pck_real` (poses read from photos, the presets and the fork's keypoint files;
  `pck_photo` the photos' alone), each with the detector's ceiling on renders of those poses (`pck_renders`,
  `pck_real_renders`, `pck_photo_renders`); `pck_ae` on the round trips (the part of the gap due to decoding).
  PCK@0.1 (`training.eval_common.pck_counts`): a visible point counts when it lies within 0.1 of the longer side of
  the target's visible box, both poses in the output's frame.
* `look_follows_s`: with one s and eight noises per pose (`look_n` poses), how often the judge reads the same hair
  colour, hair style, outfit, outfit colour and background colour (`training.eval_style.look_agreement`); the share
  of an s read off a render that gives back the render's attributes is `python -m training.eval style`'s `look_from_s`.
* `seconds_per_image`: median wall time of one image at the given steps; `fd_detector` (secondary, with its n).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from models import paths
from models.autoencoder import from_pil
from models.backend import SAMPLER_NAMES
from models.detector import load_detector
from models.errors import InputError
from models.pose import COCO_NAMES as KEYPOINT_NAMES
from models.pose import Pose
from training.eval_clip import clip_features
from training.eval_common import (
    DEFAULT_DETECTOR,
    DEFAULT_MODEL,
    EVAL_SEED,
    frechet_bootstrap_se,
    frechet_distance,
    generate,
    image_grid,
    pck,
    pck_counts,
    report,
    round_trip,
)
from training.eval_face import face_figures, train_face_check

PHOTOS = paths.ROOT.parent / "shared" / "photos"  # real photos (tests and this figure skip them when absent)
KEYPOINT_FILES = paths.ROOT.parent / "shared" / "keypoint_formats"
CLIP_BATCH = 64  # images a CLIP call
FD_MIN_N = 256  # the fewest images per set for which fd_clip_ratio is reported as the figure


# -- image statistics (pure) ----------------------------------------------------------------------
def gray(images: list[Image.Image]) -> np.ndarray:
    """(N, H, W) float64 luminance in [0, 255] (ITU-R BT.601 weights, as PIL's "L")."""
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float64) for im in images])
    return arr @ np.array([0.299, 0.587, 0.114])


def laplacian(g: np.ndarray) -> np.ndarray:
    """The 4-neighbour Laplacian of (N, H, W) images, on the interior (N, H - 2, W - 2)."""
    return g[:, :-2, 1:-1] + g[:, 2:, 1:-1] + g[:, 1:-1, :-2] + g[:, 1:-1, 2:] - 4 * g[:, 1:-1, 1:-1]


def high_pass(g: np.ndarray) -> np.ndarray:
    """The part of (N, H, W) images above half the Nyquist frequency (an ideal radial filter in the FFT)."""
    h, w = g.shape[-2:]
    fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")
    keep = np.sqrt(fx**2 + fy**2) > 0.25  # Nyquist is 0.5 cycles a pixel
    return np.fft.ifft2(np.fft.fft2(g) * keep).real


def masked_mean(values: np.ndarray, masks: np.ndarray | None) -> np.ndarray:
    """Per-image mean of (N, H, W) values, over the mask's pixels where a mask is given."""
    if masks is None:
        return values.mean(axis=(1, 2))
    return (values * masks).sum(axis=(1, 2)) / np.maximum(masks.sum(axis=(1, 2)), 1)


def detail(images: list[Image.Image], masks: np.ndarray | None = None) -> dict[str, float]:
    """Mean Laplacian variance and high-frequency power of images (over `masks`' pixels if given)."""
    g = gray(images)
    lap = laplacian(g)
    inner = masks[:, 1:-1, 1:-1] if masks is not None else None
    mean = masked_mean(lap, inner)
    lap_var = masked_mean((lap - mean[:, None, None]) ** 2, inner)
    hf = masked_mean(high_pass(g) ** 2, masks)
    return {"laplacian_var": float(lap_var.mean()), "hf_power": float(hf.mean())}


FLAT_STEP = 10  # a pixel is flat when its four neighbours differ from it by less than this in every channel
COLOUR_BIN = 24  # levels a channel per colour bin
COLOUR_SHARE = 0.9  # the share of the flat pixels the counted colours cover


def flat_colours(images: list[Image.Image], masks: np.ndarray) -> np.ndarray:
    """Per image, the fewest colour bins that cover COLOUR_SHARE of its flat pixels inside its mask (0 with none)."""
    counts = []
    for im, m in zip(images, masks):
        a = np.asarray(im.convert("RGB"), dtype=np.int16)
        step = np.zeros(a.shape[:2], np.int16)
        for axis in (0, 1):
            diff = np.abs(np.diff(a, axis=axis)).max(-1)
            for pad in ((0, 1), (1, 0)):  # the step to the next and to the previous pixel along the axis
                step = np.maximum(step, np.pad(diff, [pad if ax == axis else (0, 0) for ax in (0, 1)]))
        q = (a // COLOUR_BIN).astype(np.int32)
        codes = (q[..., 0] * 256 + q[..., 1]) * 256 + q[..., 2]
        _, n = np.unique(codes[(step < FLAT_STEP) & m], return_counts=True)
        cover = np.cumsum(np.sort(n)[::-1]) / max(1, n.sum())
        counts.append(int(np.searchsorted(cover, COLOUR_SHARE) + 1) if n.size else 0)
    return np.asarray(counts, dtype=np.float64)


def psnr_images(a: list[Image.Image], b: list[Image.Image], masks: np.ndarray | None = None) -> float:
    """PSNR in dB of two lists of 8-bit images (over the masks' pixels if given; `models.autoencoder.psnr`)."""
    from models.autoencoder import psnr

    m = torch.from_numpy(np.asarray(masks, dtype=np.float32))[:, None] if masks is not None else None
    return psnr(from_pil(a), from_pil(b), m)


# -- classifier two-sample test -------------------------------------------------------------------
_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).expand(3, 1, 3, 3)


class _TwoSampleNet(torch.nn.Module):
    """A small fully convolutional classifier on pixels (global average pool, one logit)."""

    def __init__(self, width: int = 32):
        super().__init__()
        layers, c = [], 6
        # The first layer keeps full resolution: blur and ringing live in the top octave.
        for w, stride in ((width, 1), (width, 2), (2 * width, 2), (4 * width, 2)):
            layers += [torch.nn.Conv2d(c, w, 3, stride=stride, padding=1), torch.nn.SiLU()]
            c = w
        self.body = torch.nn.Sequential(*layers)
        self.head = torch.nn.Linear(c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One logit per image, from its pixels and their Laplacian (where blur and missing lines show)."""
        lap = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), _LAPLACIAN.to(x.dtype), groups=3)
        return self.head(self.body(torch.cat([x, 4 * lap], dim=1)).mean(dim=(2, 3)))[:, 0]


def c2st(a: list[Image.Image], b: list[Image.Image], steps: int = 300, crop: int = 64, seed: int = 0) -> float:
    """Held-out accuracy of a CNN told to separate `a` from `b` (2-fold: train on one half, test on the other).

    It trains on random `crop`-side crops (cheap at any image size) and tests on whole images: after the global
    average pool the logit of a whole image is the mean of its crops' logits."""
    if min(len(a), len(b)) < 4:
        raise InputError("The two-sample test needs at least 4 images a set.")
    x = torch.cat([from_pil(a), from_pil(b)])
    y = torch.cat([torch.zeros(len(a)), torch.ones(len(b))])
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=g)
    folds = (order[: len(x) // 2], order[len(x) // 2 :])
    correct = 0
    for k in range(2):
        train, test = folds[k], folds[1 - k]
        torch.manual_seed(seed + k)
        net = _TwoSampleNet()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        for _ in range(steps):
            idx = train[torch.randint(len(train), (32,), generator=g)]
            top, left = (int(v) for v in torch.randint(0, x.shape[-1] - crop + 1, (2,), generator=g))
            xb = x[idx, :, top : top + crop, left : left + crop]
            flip = torch.rand(len(idx), generator=g) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            loss = F.binary_cross_entropy_with_logits(net(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            pred = torch.cat([net(x[test[i : i + 64]]) for i in range(0, len(test), 64)]) > 0
        correct += int((pred.float() == y[test]).sum())
    return correct / len(x)


# -- the poses ------------------------------------------------------------------------------------
def real_poses() -> list[tuple[str, Pose]]:
    """Poses people make: read by mediapipe from `../shared/photos` (when present), the presets, and the
    fork's keypoint files (when present); (name, pose) pairs."""
    from models.pose_input import list_presets, read_pose_input

    specs = (
        [p for p in sorted(PHOTOS.glob("*")) if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
        if PHOTOS.is_dir()
        else []
    )
    specs += sorted(KEYPOINT_FILES.glob("*.json")) if KEYPOINT_FILES.is_dir() else []
    out = []
    for spec in [str(s) for s in specs] + list_presets():
        try:
            out.append((Path(spec).name, read_pose_input(spec).pose))
        except InputError:  # photos with nobody in them
            continue
    return out


# -- the evaluation -------------------------------------------------------------------------------
def _dilate(masks: np.ndarray, px: int) -> np.ndarray:
    """Masks (N, H, W) grown by `px` pixels (the sample's figure sits near the render's, not on it)."""
    t = torch.from_numpy(masks.astype(np.float32))[:, None]
    return (F.max_pool2d(t, 2 * px + 1, stride=1, padding=px)[:, 0] > 0).numpy()


def _ratio(a: float, b: float) -> float:
    """a / b, nan when b is 0."""
    return float(a / b) if b else float("nan")


def detail_figures(
    renders: list[Image.Image], masks: np.ndarray, sets: dict[str, tuple[list[Image.Image], Any]]
) -> dict[str, float]:
    """`<set>sharpness_ratio[_figure]`, `<set>hf_ratio[_figure]` and `<set>flat_colours_ratio` of each set against
    `renders`."""
    out = {}
    for region, m in (("", None), ("_figure", masks)):
        ref = detail(renders, m)
        for name, (images, _) in sets.items():
            d = detail(images, m)
            out[f"{name}sharpness_ratio{region}"] = _ratio(d["laplacian_var"], ref["laplacian_var"])
            out[f"{name}hf_ratio{region}"] = _ratio(d["hf_power"], ref["hf_power"])
    ref_colours = flat_colours(renders, masks).mean()
    for name, (images, _) in sets.items():
        out[f"{name}flat_colours_ratio"] = _ratio(flat_colours(images, masks).mean(), ref_colours)
    return out


def fd_clip_figure(fd: float, floor: float, n: int, suffix: str = "") -> dict[str, float | None]:
    """`fd_clip_ratio<suffix>`: fd over the renders' floor when n >= FD_MIN_N, else None beside `..._biased`."""
    ratio = _ratio(fd, floor)
    if n >= FD_MIN_N:
        return {f"fd_clip_ratio{suffix}": ratio}
    return {f"fd_clip_ratio{suffix}": None, f"fd_clip_ratio{suffix}_biased": ratio}


def distribution_figures(
    scorer: Any, renders_a: list[Image.Image], renders_b: list[Image.Image], sets: dict[str, tuple[list, Any]]
) -> dict[str, float]:
    """FD in the domain CLIP's features over the renders' floor (A against B), and the two-sample tests, of each
    set against renders B (`_ae` for the round trips)."""
    fb = clip_features(renders_b, scorer, CLIP_BATCH)
    out = {"fd_clip_floor": frechet_distance(clip_features(renders_a, scorer, CLIP_BATCH), fb)}
    out["c2st_floor"] = c2st(renders_a, renders_b)
    for name, (images, _) in sets.items():
        suffix = "_ae" if name else ""
        fa = clip_features(images, scorer, CLIP_BATCH)
        out.update(fd_clip_figure(frechet_distance(fa, fb), out["fd_clip_floor"], len(images), suffix))
        out[f"fd_clip_ratio{suffix}_se"] = _ratio(frechet_bootstrap_se(fa, fb), out["fd_clip_floor"])
        out[f"c2st{suffix}"] = c2st(images, renders_b)
    return out


def evaluate_quality(
    model: str | Path | None = DEFAULT_MODEL,
    detector: str | Path = DEFAULT_DETECTOR,
    judge: str | Path | None = paths.ATTRIBUTES,
    clip: str | Path = paths.CLIP,
    n: int = 256,
    steps: int = 8,
    sheet: str | Path | None = None,
    real: bool = True,
    ae: str | Path | None = None,
    look_n: int = 16,
    fast: bool = False,
    guidance: float | None = None,
    sampler: str | None = None,
) -> dict[str, Any]:
    """Every figure of the module docstring, as one dict; with `ae` (an autoencoder folder) and no `model`, only
    the round trip's figures, at the autoencoder's own size; `fast`: the samples of the few-step student;
    `guidance`, `sampler`: the pose guidance scale and sampler of every sample (default: the pipeline's)."""
    # 1. Check inputs and load the models.
    if n < 8:
        raise InputError("--n must be at least 8.")
    if steps < 1:
        raise InputError("--steps must be at least 1.")
    from models.autoencoder import load_autoencoder
    from models.clip import load_clip
    from models.pipeline import PosePipeline
    from training.synth import make_sample

    given = {"fast": True if fast else None, "guidance": guidance, "sampler": sampler}  # else the pipeline's own
    sampling = {k: v for k, v in given.items() if v is not None}
    pipe = PosePipeline.from_pretrained(str(model)) if model else None
    drawer = getattr(pipe, "upscaler", None) or pipe  # the model whose decoder draws the pictures (`models.upscale`)
    vae = load_autoencoder(ae).eval() if ae else drawer.vae
    det = load_detector(detector)
    size = int(pipe.output_size) if pipe else int(vae.config.sample_size)

    # 2. Renders A (the poses to draw), B (the reference), the round trips of A, the samples.
    first = [make_sample(EVAL_SEED, i, size) for i in range(n)]
    renders_a = [s["render"].image.convert("RGB") for s in first]
    renders_b = [make_sample(EVAL_SEED, n + i, size)["render"].image.convert("RGB") for i in range(n)]
    poses = [s["render"].pose for s in first]
    masks = _dilate(np.stack([s["render"].mask for s in first]), max(1, size // 64))
    trips = round_trip(vae, renders_a)
    sets = {"ae_": (trips, poses)}
    if pipe is not None:
        samples, targets, _, seconds = generate(pipe, poses, steps, EVAL_SEED, **sampling)
        sets[""] = (samples, targets)

    # 3. Detail against renders A (whole image and figure), the round trip's PSNR, the distributions against B.
    result: dict[str, Any] = {"n": n, "size": size, "steps": steps if pipe else None}
    result.update(detail_figures(renders_a, masks, sets))
    result["ae_psnr"] = psnr_images(trips, renders_a)
    result["ae_psnr_figure"] = psnr_images(trips, renders_a, masks)
    result.update(distribution_figures(load_clip(str(clip)), renders_a, renders_b, sets))

    # 4. Faces, the judge's eye colour through the round trip, and whether the look follows s.
    eyeless = [make_sample(EVAL_SEED, i, size, eyes=False)["render"].image.convert("RGB") for i in range(n)]
    result.update(face_figures(train_face_check(size), renders_a, eyeless, poses, sets))
    clf = _load_judge(judge)
    if clf is not None:
        result["ae_eye_colour_ratio"] = _eye_colour_ratio(clf, first, renders_a, trips)
        if pipe is not None:
            result.update(_look(pipe, clf, poses, steps, look_n, sampling))

    # 5. Pose fidelity on synthetic and on real poses, and the old detector-feature FD (secondary).
    result["pck_renders"] = pck(det.detect(renders_a), poses)
    result["pck_ae"] = pck(det.detect(trips), poses)  # what decoding alone costs the pose
    if real:
        result.update(_real_pck(pipe, det, steps, size, sampling))
    if pipe is not None:
        result.update(_sample_figures(det, sets[""], seconds, renders_a, renders_b))
    result["machine"] = f"{torch.get_num_threads()} torch threads"
    result["model"] = str(model) if model else None
    result["fast"] = fast
    result |= {"guidance": guidance, "sampler": sampler}
    result["autoencoder"] = str(ae) if ae else "the model's"
    if sheet:
        rows = [(renders_a, poses)] + [sets[k] for k in ("ae_", "") if k in sets]
        save_sheet(sheet, [r[:8] for r, _ in rows], [p[:8] for _, p in rows])
    return result


def _load_judge(judge: str | Path | None) -> Any:
    """The attribute judge of a folder, or None when no folder is given or there is none."""
    if judge is None or not Path(judge).is_dir():
        return None
    from models.attributes import load_attribute_classifier

    return load_attribute_classifier(judge)


def _look(pipe: Any, clf: Any, poses: list[Pose], steps: int, look_n: int, sampling: dict) -> dict[str, Any]:
    """The look from s on the first `look_n` poses: one s, eight noises a pose (`training.eval_style.look_agreement`)."""
    from training.eval_style import look_agreement

    look = look_agreement(pipe, clf, poses[:look_n], steps=steps, sampling=sampling)
    return {"look_follows_s": look.pop("look_follows_s"), "look_follows_s_by_attribute": look, "look_n": look_n}


def _sample_figures(det: Any, generated: tuple[list, list], seconds: list[float], a: list, b: list) -> dict[str, Any]:
    """The samples' PCK, seconds per image, and FD in the detector's features against renders `b` (with the floor,
    renders `a` against `b`)."""
    (samples, targets), fb = generated, det.embed(b)
    hits, total = pck_counts(det.detect(samples), targets)
    return {
        "pck": hits / total,
        "seconds_per_image": statistics.median(seconds),
        "fd_detector": frechet_distance(det.embed(samples), fb),
        "fd_detector_floor": frechet_distance(det.embed(a), fb),
        "fd_detector_n": len(samples),
    }


def _eye_colour_ratio(clf: Any, first: list[dict], renders: list[Image.Image], trips: list[Image.Image]) -> float:
    """The judge's eye-colour accuracy on round trips over its accuracy on renders (faces that show eyes)."""
    from models.attributes import attribute_index, record_labels

    keep = [i for i, s in enumerate(first) if record_labels(s["attributes"]).get("eye_color")]
    if not keep:
        return float("nan")
    truth = torch.tensor(
        [attribute_index("eye_color", record_labels(first[i]["attributes"])["eye_color"]) for i in keep]
    )
    acc = [
        float((clf.predict([images[i] for i in keep])["eye_color"].argmax(1) == truth).float().mean())
        for images in (renders, trips)
    ]
    return _ratio(acc[1], acc[0])


def _real_pck(pipe: Any | None, det: Any, steps: int, size: int, sampling: dict) -> dict[str, Any]:
    """PCK on poses people make: the detector's ceiling on renders of them and (with a pipeline) the samples'."""
    from models.pipeline import frame_pose
    from training.synth import make_sample

    named = real_poses()
    if not named:
        return {}
    poses = [p for _, p in named]
    photo = [Path(name).suffix.lower() in (".jpg", ".jpeg", ".png") for name, _ in named]
    # Rendered with the reserved split's characters (data set seed EVAL_SEED + 2), in the output's frame.
    renders = [make_sample(EVAL_SEED + 2, i, size, pose=frame_pose(p, size))["render"] for i, p in enumerate(poses)]
    found = det.detect([r.image for r in renders])
    out: dict[str, Any] = {"real_n": len(poses), "photo_n": sum(photo)}
    arms = {"pck_real_renders": (found, [r.pose for r in renders])}
    if pipe is not None:
        samples, targets, _, _ = generate(pipe, poses, steps, EVAL_SEED + 10_000, **sampling)
        arms["pck_real"] = (det.detect(samples), targets)
    for name, (pred, target) in arms.items():  # every real pose, then the photos' alone (the hardest)
        hits, total = pck_counts(pred, target)
        out[name] = hits / max(total, 1)
        hits, total = pck_counts([p for p, f in zip(pred, photo) if f], [t for t, f in zip(target, photo) if f])
        out[name.replace("real", "photo")] = hits / total if total else float("nan")
    return out


def save_sheet(path: str | Path, rows: list[list[Image.Image]], poses: list[list[Pose]]) -> None:
    """Rows of images (renders, round trips, samples), then their heads at 5x (nearest, around each row's own
    pose: the sampler frames the pose, the renderer does not), so blur and missing eyes show."""
    size = rows[0][0].width
    head = max(16, size // 5)
    heads = []
    for images, row_poses in zip(rows, poses):
        crops = []
        for im, p in zip(images, row_poses):
            c = p.xy[KEYPOINT_NAMES.index("nose")] * size
            box = (int(c[0]) - head // 2, int(c[1]) - head // 2, int(c[0]) + head // 2, int(c[1]) + head // 2)
            crops.append(im.crop(box).resize((size, size), Image.NEAREST))
        heads.append(crops)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    image_grid(rows + heads).save(path)


def blurred(images: list[Image.Image], radius: float) -> list[Image.Image]:
    """The images under a Gaussian blur (a control for the detail and face figures)."""
    return [im.filter(ImageFilter.GaussianBlur(radius)) for im in images]


def main(argv: list[str] | None = None) -> int:
    """`python -m training.eval quality`: print the figures (one JSON object with --json)."""
    parser = argparse.ArgumentParser(prog="python -m training.eval quality", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--model", default=None, help=f"pipeline folder (default: {DEFAULT_MODEL}, or none with --ae)")
    parser.add_argument("--ae", metavar="DIR", help="an autoencoder folder: its round trips (alone, without --model)")
    parser.add_argument("--detector", default=str(DEFAULT_DETECTOR), help="detector folder (default: %(default)s)")
    parser.add_argument("--n", type=int, default=256, help="held-out poses (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default: 8, with --fast 2)")
    parser.add_argument("--fast", action="store_true", help="the model's few-step student (its live previews)")
    parser.add_argument("--guidance", type=float, default=None, help="pose guidance scale (default: the pipeline's)")
    parser.add_argument("--sampler", choices=SAMPLER_NAMES, help="sampler (default: the pipeline's)")
    parser.add_argument("--sheet", metavar="PNG", help="also write renders, round trips and samples side by side")
    parser.add_argument("--no-real", action="store_true", help="skip the real-photo poses")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: %(default)s)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = args.model or (None if args.ae else str(DEFAULT_MODEL))
    steps = args.steps if args.steps is not None else 2 if args.fast else 8
    return report(
        lambda: evaluate_quality(
            model,
            args.detector,
            n=args.n,
            steps=steps,
            sheet=args.sheet,
            real=not args.no_real,
            ae=args.ae,
            fast=args.fast,
            guidance=args.guidance,
            sampler=args.sampler,
        ),
        args.json,
    )


if __name__ == "__main__":
    sys.exit(main())
