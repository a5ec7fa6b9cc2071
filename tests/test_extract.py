"""models.pose_input.extract_pose on the shared real photos (mediapipe 0.10.21's bundled pose model)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from models import pose_input
from models.errors import InputError
from models.pose import NUM_KEYPOINTS
from models.pose_input import NoPersonError, extract_pose
from tests.conftest import NO_PERSON_PHOTOS, photo_paths


@pytest.mark.parametrize("path", photo_paths(), ids=lambda p: p.name)
def test_shared_photos(path, photos_dir):
    if path.name in NO_PERSON_PHOTOS:
        with pytest.raises(NoPersonError, match="No person"):
            extract_pose(path)
        return
    pose = extract_pose(path)
    with Image.open(path) as im:
        assert (pose.width, pose.height) == im.size  # the frame is the image
    assert pose.keypoints.shape == (NUM_KEYPOINTS, 3)
    assert pose.visible.sum() >= 5
    assert ((pose.visibility >= 0) & (pose.visibility <= 1)).all()


def test_no_person_is_an_input_error():
    assert issubclass(NoPersonError, InputError)
    with pytest.raises(NoPersonError):
        extract_pose(Image.new("RGB", (128, 128), (120, 120, 120)))


def test_model_is_built_once_and_thread_safe(photos_dir):
    path = photos_dir / "02_yoga_tree_pose.jpg"
    first = extract_pose(path)
    model = pose_input._MODEL._pose
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(extract_pose(path))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert pose_input._MODEL._pose is model
    assert all(r.isclose(first, atol=1e-4) for r in results)


def test_large_image_is_downscaled_but_frame_kept(photos_dir):
    im = Image.open(photos_dir / "13_pointing_arm_out.jpg").convert("RGB")
    big = im.resize((im.width * 2, im.height * 2))  # 2560 x 1440: inference runs at 1024
    small, large = extract_pose(im), extract_pose(np.asarray(big))
    assert (large.width, large.height) == big.size
    visible = small.visible & large.visible
    assert np.abs(small.xy[visible] - large.xy[visible]).max() < 0.03
