"""Shared fixtures: the folders of real data next to the repository (tests skip when they are absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"
PHOTOS = SHARED / "photos"
KEYPOINT_FORMATS = SHARED / "keypoint_formats"
NO_PERSON_PHOTOS = frozenset({"34_hands_only.jpg", "38_no_person_giraffes.jpg", "39_no_person_coffee.jpg"})


def photo_paths() -> list[Path]:
    """The shared photos (empty when the folder is absent)."""
    return (
        sorted(p for p in PHOTOS.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")) if PHOTOS.is_dir() else []
    )


@pytest.fixture
def photos_dir() -> Path:
    """The shared photos folder; skips the test when it is absent."""
    if not PHOTOS.is_dir():
        pytest.skip("../shared/photos is absent")
    return PHOTOS


@pytest.fixture
def fork_files() -> list[Path]:
    """The keypoint-LDM fork's two example files; skips the test when they are absent."""
    files = sorted(KEYPOINT_FORMATS.glob("*.json")) if KEYPOINT_FORMATS.is_dir() else []
    if not files:
        pytest.skip("../shared/keypoint_formats is absent")
    return files


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (`pytest.mark.usefixtures`): tiny models gain nothing from two, and a shared
    CPU makes two spin."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pipe():
    """The tiny random pipeline of `tests.test_pipeline`, one per test module (a module may define its own)."""
    from tests.test_pipeline import tiny_pipeline

    return tiny_pipeline()


@pytest.fixture
def pose():
    """A standing front-view pose in a 512 x 512 frame."""
    from models.pose import Pose
    from tests.test_pipeline import STANDING

    return Pose(STANDING, 512, 512)
