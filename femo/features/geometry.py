"""Per-frame geometry vectors: blendshapes, a normalised landmark subset, head pose and upper body.

``geometry_vector`` turns the mediapipe arrays of one clip into a (T, G) float32 matrix with
``G = GEOMETRY_DIM``, laid out as::

    [0:52)      blendshape scores in [0, 1]                      (zeros where no face)
    [52:176)    62 face-mesh points (GEOMETRY_POINTS), x and y,   (zeros where no face)
                centred on the mid-point of the outer eye corners and divided by their distance
    [176:179)   head yaw, pitch, roll in degrees / 90             (zeros where no face)
    [179:200)   7 upper-body keypoints (nose, shoulders, elbows, wrists): x and y relative to the
                shoulder mid-point divided by the shoulder width, then visibility (zeros where no body)
    [200:202)   face_found, pose_found flags (1.0 = present)

No velocity channels: the temporal blocks see the whole sequence and difference it themselves,
and frames next to a missing one would otherwise get meaningless velocities. Depth (z) is left out
because mediapipe's z for a single camera is noisy.

``FACE_REGIONS`` lists mediapipe face-mesh indices (of the 478 points) per facial region; the
attribution report aggregates spatial maps with it.
"""
from __future__ import annotations

import numpy as np

#: Face-mesh landmark indices per region (mediapipe canonical face mesh, 478 points).
FACE_REGIONS: dict[str, tuple[int, ...]] = {
    "brows": (46, 53, 52, 65, 55, 70, 63, 105, 66, 107,
              276, 283, 282, 295, 285, 300, 293, 334, 296, 336),
    "eyes": (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173,
             263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398),
    "nose": (1, 2, 4, 5, 6, 19, 94, 98, 129, 168, 195, 197, 327, 358),
    "mouth": (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185,
              78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191),
    "jaw": (234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288,
            361, 323, 454),
}

#: The landmark subset used in the geometry vector (brows 20, eyes 16, nose 5, mouth 12, jaw 9).
GEOMETRY_POINTS: tuple[int, ...] = (
    *FACE_REGIONS["brows"],
    33, 133, 159, 145, 160, 144, 158, 153, 263, 362, 386, 374, 387, 373, 385, 380,
    1, 4, 98, 327, 168,
    61, 291, 0, 17, 13, 14, 37, 267, 84, 314, 78, 308,
    234, 454, 132, 361, 172, 397, 150, 379, 152,
)
#: Upper-body pose landmarks: nose, left/right shoulder, elbow, wrist (mediapipe pose indices).
BODY_POINTS: tuple[int, ...] = (0, 11, 12, 13, 14, 15, 16)
_EYE_OUTER = (33, 263)
_SHOULDERS = (11, 12)

N_BLENDSHAPES = 52
GEOMETRY_DIM: int = N_BLENDSHAPES + 2 * len(GEOMETRY_POINTS) + 3 + 3 * len(BODY_POINTS) + 2


def _face_points(landmarks: np.ndarray) -> np.ndarray:
    """(T, 478, 3) -> (T, 2 * len(GEOMETRY_POINTS)) centred, scale-free x/y."""
    xy = landmarks[:, :, :2].astype(np.float32)
    centre = xy[:, list(_EYE_OUTER)].mean(axis=1, keepdims=True)  # (T, 1, 2)
    scale = np.linalg.norm(xy[:, _EYE_OUTER[0]] - xy[:, _EYE_OUTER[1]], axis=-1)  # (T,)
    scale = np.where(scale > 1e-6, scale, 1.0)[:, None, None]
    pts = (xy[:, list(GEOMETRY_POINTS)] - centre) / scale  # (T, P, 2)
    return pts.reshape(len(xy), -1)


def _body_points(pose: np.ndarray) -> np.ndarray:
    """(T, 33, 4) -> (T, 3 * len(BODY_POINTS)): x, y relative to the shoulders, then visibility."""
    xy = pose[:, :, :2].astype(np.float32)
    centre = xy[:, list(_SHOULDERS)].mean(axis=1, keepdims=True)
    scale = np.linalg.norm(xy[:, _SHOULDERS[0]] - xy[:, _SHOULDERS[1]], axis=-1)
    scale = np.where(scale > 1e-6, scale, 1.0)[:, None, None]
    rel = (xy[:, list(BODY_POINTS)] - centre) / scale  # (T, K, 2)
    vis = pose[:, list(BODY_POINTS), 3:4].astype(np.float32)  # (T, K, 1)
    return np.concatenate([rel.reshape(len(xy), -1), vis[:, :, 0]], axis=1)


def geometry_vector(landmarks: np.ndarray, blendshapes: np.ndarray, head_pose: np.ndarray,
                    pose: np.ndarray, pose_found: np.ndarray, face_found: np.ndarray) -> np.ndarray:
    """Geometry features of one clip, (T, GEOMETRY_DIM) float32; layout in the module docstring.

    landmarks: (T, 478, 3) face mesh; blendshapes: (T, 52) in [0, 1]; head_pose: (T, 3) degrees;
    pose: (T, 33, 4) x, y, z, visibility; pose_found, face_found: (T,) bool. Blocks of frames
    without a face (or body) are zeros and their flag is 0; the output never holds NaN or inf.
    """
    t = len(face_found)
    shapes = {"landmarks": (landmarks, (t, 478, 3)), "blendshapes": (blendshapes, (t, N_BLENDSHAPES)),
              "head_pose": (head_pose, (t, 3)), "pose": (pose, (t, 33, 4)), "pose_found": (pose_found, (t,))}
    for name, (arr, shape) in shapes.items():
        if np.shape(arr) != shape:
            raise ValueError(f"geometry_vector: {name} has shape {np.shape(arr)}, expected {shape}")
    face = np.asarray(face_found, bool)[:, None]
    body = np.asarray(pose_found, bool)[:, None]
    out = np.concatenate([
        np.where(face, blendshapes, 0.0),
        np.where(face, _face_points(np.asarray(landmarks)), 0.0),
        np.where(face, np.asarray(head_pose, np.float32) / 90.0, 0.0),
        np.where(body, _body_points(np.asarray(pose)), 0.0),
        face.astype(np.float32), body.astype(np.float32),
    ], axis=1).astype(np.float32)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
