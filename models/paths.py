"""Where the project and its shipped weights live: the one owner of every default path."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository (app.py, weights/, data/, runs/)
WEIGHTS = ROOT / "weights"  # the shipped pipeline folder (`models.pipeline.PosePipeline.from_pretrained`)
DETECTOR = WEIGHTS / "detector"  # the anime keypoint detector (`models.detector`)
CLIP = WEIGHTS / "clip"  # the domain CLIP (`models.clip`)
ATTRIBUTES = WEIGHTS / "attributes"  # the attribute judge (`models.attributes`)
DIRECTION_LABELS = WEIGHTS / "directions.json"  # the labels of the SeFa and GANSpace directions (`models.directions`)
