"""A style code whose first axes are the renderer's attributes, and an affine layer that keeps them apart.

Why: with the plain (ordered-KL) VAE code, every active axis of s changed 6 attributes at once (hair, background,
outfit, ... move together at +-2 sigma), so no GANSpace or SeFa direction could carry a single-attribute label.
The renderer knows every attribute exactly, so training can give each of the first axes one job (a guided VAE,
Ding et al. 2020), and the directions are still found afterwards without labels, by SeFa and GANSpace alone.

* `GuideLayout`: axis i <- attribute `names[i]`; its classes split N(0, 1) into bins by their frequency in the
  training data (class k owns [Phi^-1(c_k), Phi^-1(c_k+1)), c the cumulative shares), so s ~ N(0, I) draws each
  class as often as the data does and +-2 sigma crosses a bin edge from almost anywhere.
* `guide_loss`: cross-entropy of a 1-D nearest-centre classifier on the sampled s_i = mu_i + sigma_i n,
  logits_k = -(s_i - centre_k)^2 / (2 tau_i^2), tau_i half the smallest gap between centres: s_i lands in its
  class's bin, noise included.
* `sample_guided` (the "labels" mode): the guided axes set from the labels, N(0, 1) truncated to each class's bin,
  so an axis holds its attribute and nothing else (with "loss" the encoder also packs other attributes into the
  position within a bin).
* `affine_penalty`: the Jacobian of A(s) = W s + b is W; as OroJaR (Wei et al. 2021) penalises the
  non-orthogonal part of a generator's Jacobian, this pulls W^T W to diag(g^2) with g decreasing over the axes
  (distinct norms: an eigen-decomposition of a matrix with equal eigenvalues may return any rotation of them),
  and the off-diagonal of SeFa's row-normalised A_n^T A_n to 0. Then SeFa's eigenvectors and GANSpace's principal
  axes of A(s) are the attribute axes, ordered by g.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
import torch
import torch.nn.functional as F

# The guided attributes, most visible first (axis 0 = the largest share of the frame), so that the first
# directions SeFa and GANSpace list are the ones a user sees most.
GUIDE_ORDER: tuple[str, ...] = (
    "background_color",
    "hair_color",
    "outfit_color",
    "background",
    "outfit",
    "hair_style",
    "outfit_color2",
    "skin",
    "gender",
    "eye_color",
)
GUIDED_NORMS = (1.5, 1.05)  # target column norms |W e_i| of the guided axes: first, last (linear in between)
FREE_NORM = 0.25  # target column norm of the other axes (below every guided one: they rank after them)


@dataclass(frozen=True)
class GuideLayout:
    """Which attribute each of the first axes of s carries, and where each class sits on its axis."""

    names: tuple[str, ...]  # attribute of axis i
    classes: tuple[tuple[str, ...], ...]  # class names per axis, in bin order
    centres: tuple[tuple[float, ...], ...]  # bin centres per axis (the N(0, 1) quantile of each class's middle)
    shares: tuple[tuple[float, ...], ...]  # cumulative class shares per axis, 0 ... 1: class k owns [c_k, c_k+1)
    taus: tuple[float, ...]  # logit width per axis (half the smallest gap between two centres)

    def to_json(self) -> dict:
        """A JSON-able dict (kept in training_info.json beside the weights)."""
        return asdict(self)


def read_layout(path: str | Path) -> GuideLayout | None:
    """The layout a training run saved (`training_info.json`'s `style_guide`), or None when it has none."""
    try:
        data = json.loads(Path(path).read_text()).get("style_guide")
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    if "shares" not in data:  # written before the labels mode: the bins follow from the centres (`make_layout`)
        data = {**data, "shares": [_shares_of(c) for c in data["centres"]]}
    nested = {k: tuple(tuple(v) for v in data[k]) for k in ("classes", "centres", "shares")}
    return GuideLayout(tuple(data["names"]), taus=tuple(data["taus"]), **nested)


def _shares_of(centres: Sequence[float]) -> tuple[float, ...]:
    """Cumulative shares 0 ... 1 from bin centres: Phi(centre_k) is the middle of [c_k, c_k+1), so
    c_k+1 = 2 Phi(centre_k) - c_k from c_0 = 0 (the last is rescaled to 1 against the centres' rounding)."""
    normal = NormalDist()
    cum = [0.0]
    for c in centres:
        cum.append(min(max(2 * normal.cdf(c) - cum[-1], cum[-1]), 1.0))
    return tuple(round(v / cum[-1], 6) for v in cum)


def make_layout(
    labels: np.ndarray, classes: Mapping[str, Sequence[str]], names: Sequence[str], style_dim: int
) -> GuideLayout:
    """The layout of `names` (at most `style_dim` of them) from integer labels (N, len(names)), -1 = unseen."""
    names = tuple(names)[:style_dim]
    normal = NormalDist()
    centres, taus, shares = [], [], []
    for j, name in enumerate(names):
        k = len(classes[name])
        seen = labels[:, j][labels[:, j] >= 0]
        counts = np.bincount(seen, minlength=k).astype(np.float64) + 1.0  # +1: no class gets an empty bin
        cum = np.concatenate([[0.0], np.cumsum(counts / counts.sum())])
        mids = (cum[:-1] + cum[1:]) / 2
        c = [normal.inv_cdf(float(m)) for m in mids]
        centres.append(tuple(round(v, 5) for v in c))
        shares.append(tuple(round(float(v), 6) for v in cum))
        taus.append(round(float(0.5 * np.diff(c).min()) if k > 1 else 1.0, 5))
    return GuideLayout(names, tuple(tuple(classes[n]) for n in names), tuple(centres), tuple(shares), tuple(taus))


def label_indices(record: Mapping, names: Sequence[str]) -> np.ndarray:
    """Integer class labels `(len(names),)` of one attribute record (`models.attributes.record_labels`), -1 where
    unseen."""
    from models.attributes import ATTRIBUTES, record_labels

    values = record_labels(record)
    return np.array([ATTRIBUTES[n].index(values[n]) if values.get(n) in ATTRIBUTES[n] else -1 for n in names])


def read_labels(root: str | Path, stems: Sequence[str], names: Sequence[str]) -> np.ndarray:
    """Integer class labels (N, len(names)) of a synth folder's `attributes/*.json`, -1 where unseen or missing."""
    out = np.full((len(stems), len(names)), -1, dtype=np.int64)
    folder = Path(root) / "attributes"
    for i, stem in enumerate(stems):
        path = folder / f"{stem}.json"
        if path.exists():
            out[i] = label_indices(json.loads(path.read_text()), names)
    return out


def guide_loss(mu: torch.Tensor, labels: torch.Tensor, layout: GuideLayout) -> torch.Tensor:
    """Mean cross-entropy of the nearest-centre classifier on each guided axis of mu (labels -1 are skipped)."""
    losses = []
    for j in range(len(layout.names)):
        centres = torch.tensor(layout.centres[j], device=mu.device, dtype=torch.float32)
        logits = -((mu[:, j : j + 1].float() - centres) ** 2) / (2 * layout.taus[j] ** 2)
        y = labels[:, j]
        if bool((y >= 0).any()):
            losses.append(F.cross_entropy(logits[y >= 0], y[y >= 0]))
    return torch.stack(losses).mean() if losses else mu.sum() * 0.0


def sample_guided(labels: torch.Tensor, layout: GuideLayout, generator: torch.Generator | None = None) -> torch.Tensor:
    """s on the guided axes set from the labels: N(0, 1) truncated to each class's bin (an unseen label: all of
    N(0, 1)), so the axis carries its attribute and nothing else, and over the data it is exactly N(0, 1)."""
    b, g = labels.shape[0], len(layout.names)
    u = torch.rand((b, g), generator=generator, device=labels.device)
    for j in range(g):
        cum = torch.tensor(layout.shares[j], device=labels.device, dtype=torch.float32)
        y = labels[:, j]
        seen = y >= 0
        lo = torch.where(seen, cum[y.clamp(min=0)], torch.zeros_like(u[:, j]))
        hi = torch.where(seen, cum[(y + 1).clamp(min=0, max=len(cum) - 1)], torch.ones_like(u[:, j]))
        u[:, j] = lo + (hi - lo) * u[:, j]
    u = u.clamp(1e-6, 1 - 1e-6)
    return math.sqrt(2.0) * torch.erfinv(2 * u - 1)  # the N(0, 1) quantile


def classes_of(style: torch.Tensor, layout: GuideLayout) -> torch.Tensor:
    """The class index each guided axis of s (B, D) falls in (its bin), (B, len(layout.names))."""
    cols = []
    for j in range(len(layout.names)):
        cum = torch.tensor(layout.shares[j][1:-1], device=style.device, dtype=torch.float64)
        u = 0.5 * (1 + torch.erf(style[:, j].double() / math.sqrt(2.0)))  # the N(0, 1) cdf
        cols.append(torch.bucketize(u, cum, right=True))
    return torch.stack(cols, dim=1)


def target_norms(style_dim: int, guided: int) -> torch.Tensor:
    """The column norms g the affine penalty asks for: decreasing over the guided axes, FREE_NORM after them."""
    g = torch.full((style_dim,), FREE_NORM)
    if guided:
        g[:guided] = torch.linspace(GUIDED_NORMS[0], GUIDED_NORMS[1], guided)
    return g


def affine_penalty(weight: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """|W^T W - diag(g^2)|^2 / d^2 + |offdiag(A_n^T A_n)|^2 / d^2, A_n = W with unit rows (SeFa's matrix)."""
    w = weight.float()
    d = w.shape[1]
    gram = w.T @ w
    first = ((gram - torch.diag(norms.to(w) ** 2)) ** 2).sum() / d**2
    a_n = w / w.norm(dim=1, keepdim=True).clamp_min(1e-8)
    sefa = a_n.T @ a_n
    off = sefa - torch.diag(torch.diagonal(sefa))
    # SeFa's matrix has trace D (rows), so its entries scale with D/d: normalise to the same footing.
    scale = d / w.shape[0]
    return first + ((off * scale) ** 2).sum() / d**2


def guide_accuracy(mu: torch.Tensor, labels: torch.Tensor, layout: GuideLayout) -> torch.Tensor:
    """Share of seen labels whose nearest centre on their axis is the right class (the log's `guide_acc`)."""
    hits, seen = mu.new_zeros(()), 0
    for j in range(len(layout.names)):
        centres = torch.tensor(layout.centres[j], device=mu.device, dtype=torch.float32)
        pred = (mu[:, j : j + 1].float() - centres).abs().argmin(dim=1)
        y = labels[:, j]
        hits = hits + ((pred == y) & (y >= 0)).sum()
        seen += int((y >= 0).sum())
    return hits / max(seen, 1)
