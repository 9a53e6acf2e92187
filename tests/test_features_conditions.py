"""Condition flags: brightness, occlusion proxy, motion, SNR proxy, NaN where unmeasurable."""
from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.data import astronaut

from femo.data.store import FLAG_COLUMNS
from femo.features.conditions import brightness, condition_flags, motion_energy, occlusion_score, snr_db
from femo.features.face import FaceTracker


@pytest.fixture(scope="module")
def faces():
    """The astronaut and copies with her lower face covered by a hand-sized patch."""
    img = astronaut()
    with FaceTracker() as ft:
        clean = ft.track(img[None])
        px = clean.landmarks_px[0]
        x0, x1 = int(px[:, 0].min()) - 5, int(px[:, 0].max()) + 5
        y0, y1 = int(px[1, 1]), int(px[:, 1].max()) + 10  # from the nose tip down
        covered = []
        for colour in [(40, 90, 200), (235, 235, 235)]:
            occ = img.copy()
            occ[y0:y1, x0:x1] = colour
            covered.append((occ, ft.track(occ[None])))
    return img, clean, covered


def test_occlusion_rises_when_lower_face_is_covered(faces):
    img, clean, covered = faces
    base = occlusion_score(img, clean.landmarks_px[0])
    assert base < 0.3
    for occ, track in covered:
        assert track.face_found[0]  # mediapipe still places a mesh under the occluder
        assert occlusion_score(occ, track.landmarks_px[0]) > base + 0.5


def test_brightness_and_motion():
    frames = np.full((2, 4, 4, 3), 255, np.uint8)
    assert brightness(frames) == pytest.approx(1.0)
    assert brightness(np.zeros((1, 4, 4, 3), np.uint8)) == pytest.approx(0.0)
    crops = np.zeros((3, 8, 8, 3), np.uint8)
    crops[1] = 51
    assert motion_energy(crops, np.array([True, True, True])) == pytest.approx(0.2)
    assert math.isnan(motion_energy(crops, np.array([True, False, False])))


def test_snr_proxy_separates_speechlike_from_flat():
    bursts = np.concatenate([np.full(50, 0.3), np.full(50, 0.003)])
    assert snr_db(bursts) == pytest.approx(40.0, abs=0.1)
    assert snr_db(np.full(100, 0.1)) == pytest.approx(0.0, abs=1e-6)
    assert math.isnan(snr_db(None))


def test_flags_without_face_or_audio_are_nan(faces):
    img, clean, _ = faces
    t = 3
    flags = condition_flags(frames=np.zeros((t, 8, 8, 3), np.uint8), face_found=np.zeros(t, bool),
                            head_pose=np.zeros((t, 3), np.float32), faces=np.zeros((t, 4, 4, 3), np.uint8),
                            landmarks_px=np.zeros((t, 478, 2), np.float32), rms=None, duration=1.5,
                            has_audio=False)
    assert set(flags) == set(FLAG_COLUMNS)
    assert flags["face_ratio"] == 0.0 and flags["duration"] == 1.5 and flags["has_audio"] is False
    assert all(math.isnan(flags[k]) for k in ("yaw", "pitch", "roll", "occlusion", "motion", "snr_db"))
    with_face = condition_flags(frames=img[None], face_found=clean.face_found, head_pose=clean.head_pose,
                                faces=clean.faces, landmarks_px=clean.landmarks_px,
                                rms=np.full(10, 0.1), duration=0.04, has_audio=True)
    assert with_face["face_ratio"] == 1.0
    assert with_face["yaw"] == pytest.approx(abs(float(clean.head_pose[0, 0])))
