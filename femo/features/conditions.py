"""Per-clip condition flags that drive the condition-sliced reports (the store's FLAG_COLUMNS).

All flags but ``has_audio`` are floats; a flag that cannot be measured (no face, no audio) is
NaN, never a made-up zero.

* ``brightness``: mean luma (BT.601: 0.299 R + 0.587 G + 0.114 B) of the sampled frames, in [0, 1]
  (NaN for audio-only clips).
* ``face_ratio``: fraction of sampled frames with a face.
* ``yaw``, ``pitch``, ``roll``: median absolute head angle in degrees over frames with a face.
* ``occlusion``: skin-colour consistency proxy in [0, 1]. For each frame with a face, the median
  colour (CIE Lab, 8-bit OpenCV scale) at the forehead probe landmarks is the skin reference; the
  flag is the fraction of lower-face probe landmarks (chin and lower cheeks, away from the lips)
  whose colour differs from that reference by more than ``OCCLUSION_DELTA`` (distance on a, b plus
  half the L difference, so shading counts less than a change of colour). A hand, a mask or an
  object over the lower face raises it; mediapipe still places a mesh under such occluders, so
  the mesh itself cannot tell. Averaged over frames with a face.
* ``motion``: mean absolute difference between consecutive aligned face crops with a face,
  in [0, 1] of the 8-bit range (NaN with fewer than two such frames).
* ``snr_db``: 10 log10 of the 95th over the 10th percentile of frame energy (RMS squared) --
  a speech-over-background proxy; NaN without audio.
* ``duration``: clip duration in seconds; ``has_audio``: bool.
"""
from __future__ import annotations

import cv2
import numpy as np

#: Forehead landmarks (skin reference) and lower-face landmarks (chin, lower cheeks) of the mesh.
FOREHEAD_IDX: tuple[int, ...] = (9, 107, 108, 151, 336, 337)
LOWER_FACE_IDX: tuple[int, ...] = (171, 199, 200, 201, 208, 262, 369, 396, 400, 421, 428)
OCCLUSION_DELTA = 30.0


def brightness(frames: np.ndarray) -> float:
    """Mean BT.601 luma of (T, H, W, 3) uint8 RGB frames, in [0, 1]; NaN without pixels."""
    frames = np.asarray(frames)
    if frames.size == 0:
        return float("nan")
    # OpenCV's RGB->gray uses the BT.601 weights, in integer arithmetic (10x faster than float numpy)
    return float(np.mean([cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY).mean() for f in frames]) / 255.0)


def occlusion_score(frame: np.ndarray, landmarks_px: np.ndarray) -> float:
    """Fraction of lower-face probes whose colour departs from the forehead's. frame (H, W, 3) uint8."""
    h, w = frame.shape[:2]
    idx = list(FOREHEAD_IDX) + list(LOWER_FACE_IDX)
    pts = np.round(landmarks_px[idx]).astype(int)
    pts[:, 0] = np.clip(pts[:, 0], 0, w - 1)
    pts[:, 1] = np.clip(pts[:, 1], 0, h - 1)
    off = np.arange(-1, 2)
    ys = np.clip(pts[:, 1, None, None] + off[None, :, None], 0, h - 1)  # (P, 3, 1)
    xs = np.clip(pts[:, 0, None, None] + off[None, None, :], 0, w - 1)  # (P, 1, 3)
    patch = frame[ys, xs].reshape(len(pts), 9, 3).mean(1)  # (P, 3): 3x3 mean around each probe
    lab = cv2.cvtColor(np.round(patch).astype(np.uint8)[None], cv2.COLOR_RGB2LAB)[0].astype(np.float32)
    ref = np.median(lab[: len(FOREHEAD_IDX)], axis=0)
    low = lab[len(FOREHEAD_IDX):]
    dist = np.linalg.norm(low[:, 1:] - ref[1:], axis=1) + 0.5 * np.abs(low[:, 0] - ref[0])
    return float((dist > OCCLUSION_DELTA).mean())


def motion_energy(faces: np.ndarray, found: np.ndarray) -> float:
    """Mean |difference| of consecutive found face crops (T, S, S, 3) uint8, in [0, 1]; NaN if < 2."""
    crops = np.asarray(faces)[np.asarray(found, bool)].astype(np.float32)
    if len(crops) < 2:
        return float("nan")
    return float(np.abs(np.diff(crops, axis=0)).mean() / 255.0)


def snr_db(rms: np.ndarray | None) -> float:
    """Energy-percentile SNR proxy in dB from per-frame RMS (A,); NaN when None or empty."""
    if rms is None or len(rms) == 0:
        return float("nan")
    energy = np.asarray(rms, dtype=np.float64) ** 2 + 1e-12
    return float(10 * np.log10(np.percentile(energy, 95) / np.percentile(energy, 10)))


def condition_flags(*, frames: np.ndarray, face_found: np.ndarray, head_pose: np.ndarray,
                    faces: np.ndarray, landmarks_px: np.ndarray, rms: np.ndarray | None,
                    duration: float, has_audio: bool) -> dict[str, float | bool]:
    """All FLAG_COLUMNS for one clip (floats, NaN where unmeasurable; ``has_audio`` bool).

    frames (T, H, W, 3) uint8; face_found (T,) bool; head_pose (T, 3) degrees; faces (T, S, S, 3)
    uint8 aligned crops; landmarks_px (T, 478, 2) frame pixels; rms (A,) or None; duration s.
    """
    found = np.asarray(face_found, bool)
    nan = float("nan")
    angles = np.median(np.abs(head_pose[found]), axis=0) if found.any() else np.full(3, nan)
    occl = [occlusion_score(frames[i], landmarks_px[i]) for i in np.flatnonzero(found)]
    return {
        "brightness": brightness(frames),
        "face_ratio": float(found.mean()) if len(found) else 0.0,
        "yaw": float(angles[0]), "pitch": float(angles[1]), "roll": float(angles[2]),
        "occlusion": float(np.mean(occl)) if occl else nan,
        "motion": motion_energy(faces, found),
        "snr_db": snr_db(rms) if has_audio else nan,
        "duration": float(duration),
        "has_audio": bool(has_audio),
    }
