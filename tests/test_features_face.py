"""Face tracker and pose tracker on a real photo (skimage's astronaut) and on faceless frames."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from skimage.data import astronaut

from femo.assets import MissingModelError
from femo.features.face import (BLENDSHAPE_NAMES, FaceFrame, FaceTracker, align_face, box_normalise,
                                choose_face, head_pose_from_matrix)
from femo.features.pose import PoseTracker, computed_frames, nearest_source

SMILE = [BLENDSHAPE_NAMES.index("mouthSmileLeft"), BLENDSHAPE_NAMES.index("mouthSmileRight")]


def wobble(img: np.ndarray, n: int = 8, shift: float = 0.0) -> np.ndarray:
    """(n, H, W, 3) frames of ``img`` under a small rotation/scale/translation wobble."""
    h, w = img.shape[:2]
    out = []
    for i in range(n):
        m = cv2.getRotationMatrix2D((w / 2, h / 2), 3 * math.sin(i / 3), 1 + 0.02 * math.sin(i / 5))
        m[:, 2] += [4 * math.sin(i / 4) + shift, 3 * math.cos(i / 4)]
        out.append(cv2.warpAffine(img, m, (w, h)))
    return np.stack(out)


@pytest.fixture(scope="module")
def tracker():
    with FaceTracker(face_size=112) as ft:
        yield ft


@pytest.fixture(scope="module")
def photo():
    return astronaut()


def test_astronaut_face_mesh_blendshapes_and_smile(tracker, photo):
    track = tracker.track(photo[None])
    assert track.face_found.tolist() == [True]
    assert track.landmarks.shape == (1, 478, 3)
    assert track.blendshapes.shape == (1, 52)
    assert track.blendshapes[0, SMILE].min() > 0.5  # measured ~0.9: she smiles broadly
    x0, y0, x1, y1 = track.face_box[0]
    assert 0.3 < x0 < x1 < 0.6 and 0.1 < y0 < y1 < 0.4  # her face, upper middle of the photo
    lm = track.landmarks[0]
    assert lm[:, :2].min() == pytest.approx(0.0, abs=1e-5) and lm[:, :2].max() == pytest.approx(1.0, abs=1e-5)
    assert np.abs(track.head_pose[0]).max() < 30  # roughly frontal
    assert track.faces.shape == (1, 112, 112, 3) and track.faces.dtype == np.uint8
    assert track.faces[0].mean() > 60  # a crop of the face, not a black square


def test_crop_levels_a_tilted_face(tracker, photo):
    h, w = photo.shape[:2]
    tilted = cv2.warpAffine(photo, cv2.getRotationMatrix2D((w / 2, h / 2), 20, 1.0), (w, h))
    straight, turned = tracker.track(photo[None]), tracker.track(tilted[None])
    assert turned.face_found[0]
    assert abs(turned.head_pose[0, 2] - straight.head_pose[0, 2]) == pytest.approx(20, abs=6)
    diff = np.abs(straight.faces[0].astype(float) - turned.faces[0].astype(float)).mean()
    assert diff < 30  # aligned crops of the same face agree despite the 20 degree tilt


def test_no_face_gives_false_masks_and_zeros(tracker):
    noise = np.random.default_rng(0).integers(0, 255, (4, 96, 128, 3), dtype=np.uint8)
    track = tracker.track(noise)
    assert not track.face_found.any()
    assert not track.faces.any() and not track.landmarks.any() and not track.blendshapes.any()


def test_small_moving_face_in_wide_frame_is_rescued(tracker, photo):
    wide = np.full((8, 360, 640, 3), 90, np.uint8)
    head = cv2.resize(photo[30:250, 150:370], (90, 90))
    for i in range(8):
        wide[i, 150:240, 100 + 40 * i:190 + 40 * i] = head
    with FaceTracker(rescue=False) as plain:
        assert plain.track(wide).face_found.sum() <= 2  # measured 0: too small for the detector
    track = tracker.track(wide)
    assert track.face_found.all()
    centres = (track.face_box[:, 0] + track.face_box[:, 2]) / 2 * 640
    np.testing.assert_allclose(np.diff(centres), 40, atol=4)  # the box follows the moving head


def test_result_does_not_depend_on_previous_clips(tracker, photo):
    clip = wobble(photo[:, ::-1].copy(), shift=10)
    tracker.track(wobble(photo))
    after = tracker.track(clip).arrays()
    with FaceTracker() as fresh:
        alone = fresh.track(clip).arrays()
    for key in alone:
        np.testing.assert_array_equal(after[key], alone[key], err_msg=key)


def test_head_pose_from_known_rotation():
    yaw, pitch, roll = np.radians([25.0, -10.0, 5.0])
    rz = np.array([[np.cos(roll), -np.sin(roll), 0], [np.sin(roll), np.cos(roll), 0], [0, 0, 1]])
    ry = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    m = np.eye(4)
    m[:3, :3] = 1.7 * rz @ ry @ rx  # with a scale, as mediapipe's matrix may carry
    assert head_pose_from_matrix(m) == pytest.approx([25.0, -10.0, 5.0], abs=1e-3)


def _face(cx: float, cy: float, half: float) -> FaceFrame:
    lm = np.zeros((478, 3), np.float32)
    lm[0, :2], lm[1, :2] = (cx - half, cy - half), (cx + half, cy + half)
    lm[2:, :2] = (cx, cy)
    return FaceFrame(lm, np.zeros(52, np.float32), np.zeros(3, np.float32))


def test_choose_face_prefers_large_central_then_stays_with_previous():
    big_centre, small_corner = _face(0.5, 0.5, 0.2), _face(0.1, 0.1, 0.05)
    assert choose_face([small_corner, big_centre], None) is big_centre
    assert choose_face([big_centre, small_corner], np.array([0.05, 0.05, 0.15, 0.15])) is small_corner
    assert choose_face([], None) is None


def test_box_normalise_and_align_shapes():
    lm = np.random.default_rng(1).uniform(0.2, 0.6, (478, 3)).astype(np.float32)
    n = box_normalise(lm)
    assert n[:, :2].min() == pytest.approx(0.0) and n[:, :2].max() == pytest.approx(1.0)
    crop = align_face(np.zeros((100, 100, 3), np.uint8), lm[:, :2] * 100, size=64)
    assert crop.shape == (64, 64, 3)


def test_pose_on_astronaut_and_strided_fill(photo):
    with PoseTracker(stride=4) as pose:
        track = pose.track(np.repeat(photo[None], 6, axis=0))
    assert track.pose.shape == (6, 33, 4) and track.pose_found.all()
    assert track.pose[0, 0, 3] > 0.9  # nose visibility (measured 0.999)
    np.testing.assert_array_equal(track.pose[1], track.pose[0])  # frame 1 copies computed frame 0


def test_pose_absent_on_noise():
    noise = np.random.default_rng(2).integers(0, 255, (3, 128, 128, 3), dtype=np.uint8)
    with PoseTracker(stride=1) as pose:
        track = pose.track(noise)
    assert not track.pose_found.any() and not track.pose.any()


def test_pose_frame_plan():
    assert computed_frames(16, 4).tolist() == [0, 4, 8, 12, 15]
    assert nearest_source(6, np.array([0, 4, 5])).tolist() == [0, 0, 0, 4, 4, 5]
    with pytest.raises(ValueError, match="stride"):
        computed_frames(4, 0)


def test_missing_model_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("FEMO_CACHE", str(tmp_path))
    with pytest.raises(MissingModelError, match="femo models fetch"):
        FaceTracker()
    with pytest.raises(MissingModelError, match="pose_landmarker_full.task"):
        PoseTracker()


def test_crop_landmarks_repeat_the_alignment() -> None:
    from femo.features.face import align_face, box_normalise, crop_landmarks

    rng = np.random.default_rng(0)
    frame_px = np.column_stack([rng.uniform(60, 140, 478), rng.uniform(40, 160, 478)]).astype(np.float32)
    frame_px[[33, 133]] = [[80, 90], [90, 92]]  # eyes slightly tilted
    frame_px[[362, 263]] = [[110, 96], [120, 98]]
    width, height = 320, 200
    norm = np.column_stack([frame_px / [width, height], np.zeros(478)]).astype(np.float32)
    box = np.concatenate([norm[:, :2].min(0), norm[:, :2].max(0)])
    # Mark a single bright pixel at landmark 0 and find where alignment puts it.
    frame = np.zeros((height, width, 3), np.uint8)
    x, y = np.round(frame_px[0]).astype(int)
    frame_px[0] = [x, y]
    norm[0, :2] = frame_px[0] / [width, height]
    frame[y - 1:y + 2, x - 1:x + 2] = 255
    crop = align_face(frame, frame_px, size=112)
    peak = np.unravel_index(crop[..., 0].argmax(), crop.shape[:2])
    points = crop_landmarks(box_normalise(norm), box, size=112, aspect=width / height)
    assert points.shape == (478, 2)
    assert points[0] == pytest.approx([peak[1], peak[0]], abs=2.0)
