"""Geometry vectors: layout, normalisation, missing face/body handling."""
import numpy as np
import pytest

from femo.features.geometry import BODY_POINTS, FACE_REGIONS, GEOMETRY_DIM, GEOMETRY_POINTS, geometry_vector


def _inputs(t=3, seed=0):
    rng = np.random.default_rng(seed)
    return dict(landmarks=rng.random((t, 478, 3)).astype(np.float32), blendshapes=rng.random((t, 52)).astype(np.float32),
                head_pose=np.tile(np.array([45.0, -9.0, 90.0], np.float32), (t, 1)),
                pose=rng.random((t, 33, 4)).astype(np.float32), pose_found=np.ones(t, bool), face_found=np.ones(t, bool))


def test_layout_and_dim():
    x = _inputs()
    g = geometry_vector(**x)
    assert g.shape == (3, GEOMETRY_DIM) and g.dtype == np.float32
    assert GEOMETRY_DIM == 52 + 2 * len(GEOMETRY_POINTS) + 3 + 3 * len(BODY_POINTS) + 2 == 202
    np.testing.assert_allclose(g[:, :52], x["blendshapes"])
    assert g[0, 176:179] == pytest.approx([0.5, -0.1, 1.0])
    assert g[:, -2:].tolist() == [[1.0, 1.0]] * 3


def test_face_points_are_centred_and_scale_free():
    x = _inputs(t=1)
    g1 = geometry_vector(**x)[0, 52:176]
    x2 = dict(x, landmarks=x["landmarks"] * 3.0 + 0.25)  # same face, scaled and moved
    g2 = geometry_vector(**x2)[0, 52:176]
    np.testing.assert_allclose(g1, g2, atol=1e-5)
    pts = g1.reshape(-1, 2)
    left, right = GEOMETRY_POINTS.index(33), GEOMETRY_POINTS.index(263)
    assert np.linalg.norm(pts[left] - pts[right]) == pytest.approx(1.0, abs=1e-5)
    assert (pts[left] + pts[right]) / 2 == pytest.approx([0.0, 0.0], abs=1e-6)


def test_body_relative_to_shoulders_with_visibility():
    x = _inputs(t=1)
    pose = np.zeros((1, 33, 4), np.float32)
    pose[0, 11, :2], pose[0, 12, :2] = [0.6, 0.5], [0.4, 0.5]  # shoulders 0.2 apart
    pose[0, 0, :2], pose[0, 0, 3] = [0.5, 0.3], 0.9  # nose above their mid-point
    g = geometry_vector(**dict(x, pose=pose))[0, 179:200]
    assert g[:2] == pytest.approx([0.0, -1.0])  # nose: (0, -0.2) / 0.2
    assert g[14] == pytest.approx(0.9)  # visibility of the nose


@pytest.mark.parametrize("missing", ["face", "pose", "both"])
def test_missing_blocks_are_zero_with_flags(missing):
    x = _inputs()
    x["landmarks"][1] = np.nan  # what a broken extraction might leave behind
    if missing in ("face", "both"):
        x["face_found"][1] = False
    if missing in ("pose", "both"):
        x["pose_found"][1] = False
    g = geometry_vector(**x)
    assert np.isfinite(g).all()
    face_zero = missing in ("face", "both")
    assert (g[1, :179] == 0).all() == face_zero
    assert (g[1, 179:200] == 0).all() == (missing in ("pose", "both"))
    assert g[1, -2:].tolist() == [float(not face_zero), float(missing == "face")]


def test_regions_are_valid_mesh_indices():
    assert set(FACE_REGIONS) == {"brows", "eyes", "nose", "mouth", "jaw"}
    for name, idx in FACE_REGIONS.items():
        assert len(idx) == len(set(idx)) > 0 and all(0 <= i < 478 for i in idx), name
    assert len(GEOMETRY_POINTS) == len(set(GEOMETRY_POINTS)) == 62


def test_shape_mismatch_is_named():
    x = _inputs()
    x["blendshapes"] = x["blendshapes"][:, :50]
    with pytest.raises(ValueError, match="blendshapes"):
        geometry_vector(**x)
