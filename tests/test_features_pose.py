"""Pose counts as found only for a body in the frame: visible nose and shoulders inside the image."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from femo.features.pose import N_POSE, REQUIRED_POINTS, PoseTracker, body_in_frame


def _points(y_shoulder: float = 0.6, visibility: float = 0.9) -> np.ndarray:
    pts = np.zeros((N_POSE, 4), np.float32)
    pts[:, :2], pts[:, 3] = 0.5, visibility
    pts[0, 1] = 0.3
    pts[[11, 12], 1] = y_shoulder
    return pts


@pytest.mark.parametrize("y, visibility, expected", [(0.6, 0.9, True), (1.54, 0.9, False), (1.0, 0.9, True),
                                                     (1.01, 0.9, False), (-0.2, 0.9, False), (0.6, 0.3, False)])
def test_body_in_frame_needs_visible_in_frame_shoulders(y, visibility, expected) -> None:
    assert body_in_frame(_points(y, visibility)) is expected


def test_only_required_points_matter() -> None:
    pts = _points()
    others = [i for i in range(N_POSE) if i not in REQUIRED_POINTS]
    pts[others, 1], pts[others, 3] = 2.0, 0.0  # hips and legs below a half-body shot, unseen
    assert body_in_frame(pts)


def test_pose_on_a_face_crop_is_not_a_body() -> None:
    """The astronaut photo has a body; her face alone, 48x48 and upscaled (FER2013-like), has none,
    although the landmarker returns 33 points with the shoulders extrapolated below the image."""
    from skimage.data import astronaut

    photo = astronaut()
    face = cv2.resize(cv2.resize(np.ascontiguousarray(photo[40:200, 150:310]), (48, 48)), (192, 192))
    with PoseTracker(stride=1) as tracker:
        whole = tracker.track(photo[None])
        crop = tracker.track(face[None])
    assert whole.pose_found.tolist() == [True]
    assert crop.pose_found.tolist() == [False] and not crop.pose.any()
