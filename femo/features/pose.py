"""Body pose (33 landmarks with visibility) with mediapipe's PoseLandmarker (full model).

Pose costs about three times the face mesh per frame, and body posture changes slowly compared
with facial expression, so :class:`PoseTracker` runs the landmarker on every ``stride``-th sampled
frame (frames 0, stride, 2*stride, ... and always the last one) and copies each computed frame's
result to the frames nearest to it (ties go to the earlier computed frame). ``pose_found`` is
False wherever the computed frame that a frame copies from found no body. ``stride=1`` computes
every frame. IMAGE running mode is used: VIDEO mode's tracking and landmark smoothing carry
state from one clip to the next (measured: the same clip gave different arrays after another
clip), which would break the identical-store guarantee of resumed and sharded runs.

A detection counts as a body only when it is one (:func:`body_in_frame`): the nose and both
shoulders must have visibility >= :data:`MIN_VISIBILITY` and lie inside the frame. On a tight face
crop (a 48x48 still, a close-up) the landmarker still returns 33 points, with the shoulders
extrapolated below the image (y = 1.5); those frames are "no body", not a body at the image edge.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from femo.assets import asset_path
from femo.features import mediapipe_tasks, quiet_native_stderr

N_POSE = 33
#: Pose landmarks that must be seen for a frame to count as a body: nose, left and right shoulder.
REQUIRED_POINTS: tuple[int, ...] = (0, 11, 12)
#: Lowest mediapipe visibility (0-1, the model's estimate that the point is visible) of a required point.
MIN_VISIBILITY = 0.5
#: How far outside [0, 1] (in frame-size units) a required point may lie and still count as in frame.
FRAME_MARGIN = 0.0


def body_in_frame(points: np.ndarray, *, min_visibility: float = MIN_VISIBILITY,
                  margin: float = FRAME_MARGIN) -> bool:
    """Whether one detection is a body in the frame.

    points: (33, 4) x, y (frame [0, 1]), z, visibility. True when every :data:`REQUIRED_POINTS`
    point has visibility >= ``min_visibility`` and x, y within [-margin, 1 + margin].
    """
    req = np.asarray(points, np.float32)[list(REQUIRED_POINTS)]
    inside = ((req[:, :2] >= -margin) & (req[:, :2] <= 1 + margin)).all()
    return bool(inside and (req[:, 3] >= min_visibility).all())


@dataclass(frozen=True)
class PoseTrack:
    """pose (T, 33, 4) float32 x, y (frame [0, 1]), z, visibility; pose_found (T,) bool (zeros where False)."""

    pose: np.ndarray
    pose_found: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        """The store keys of this track."""
        return {"pose": self.pose, "pose_found": self.pose_found}


def empty_pose_track(num_frames: int) -> PoseTrack:
    """A track of ``num_frames`` frames with no body (zeros, ``pose_found`` all False)."""
    return PoseTrack(pose=np.zeros((num_frames, N_POSE, 4), np.float32), pose_found=np.zeros(num_frames, bool))


def computed_frames(num_frames: int, stride: int) -> np.ndarray:
    """Indices the landmarker runs on: every ``stride``-th frame plus the last one. (K,) int."""
    if stride < 1:
        raise ValueError(f"pose stride must be >= 1, got {stride}")
    if num_frames == 0:
        return np.zeros(0, int)
    return np.unique(np.append(np.arange(0, num_frames, stride), num_frames - 1))


def nearest_source(num_frames: int, computed: np.ndarray) -> np.ndarray:
    """For each of ``num_frames`` frames the computed frame it copies (nearest, earlier on ties)."""
    t = np.arange(num_frames)[:, None]
    return computed[np.argmin(np.abs(t - computed[None, :]), axis=1)]


class PoseTracker:
    """Body landmarks for the sampled frames of a clip; use as a context manager.

    ``model_path`` defaults to the cached ``pose_landmarker_full.task``
    (:class:`femo.assets.MissingModelError` names the command that provisions it).
    """

    def __init__(self, *, stride: int = 4,
                 model_path: str | Path | None = None, log_path: str | Path | None = None) -> None:
        BaseOptions, vision = mediapipe_tasks()  # imported lazily: heavy

        if stride < 1:
            raise ValueError(f"pose stride must be >= 1, got {stride}")
        self.stride = stride
        self.log_path = log_path
        model = Path(model_path) if model_path else asset_path("pose_landmarker_full.task")
        options = vision.PoseLandmarkerOptions(base_options=BaseOptions(model_asset_path=str(model)),
                                               running_mode=vision.RunningMode.IMAGE, num_poses=1)
        with quiet_native_stderr(log_path):
            self._lm = vision.PoseLandmarker.create_from_options(options)

    def close(self) -> None:
        """Release the native landmarker."""
        if self._lm is not None:
            with quiet_native_stderr(self.log_path):
                self._lm.close()
            self._lm = None

    def __enter__(self) -> PoseTracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def track(self, frames: np.ndarray) -> PoseTrack:
        """frames (T, H, W, 3) uint8 RGB -> :class:`PoseTrack`."""
        from femo.features.face import _mp_image

        t = len(frames)
        comp = computed_frames(t, self.stride)
        pose = np.zeros((t, N_POSE, 4), np.float32)
        found = np.zeros(t, bool)
        with quiet_native_stderr(self.log_path):
            for i in comp:
                result = self._lm.detect(_mp_image(frames[i]))
                if result.pose_landmarks:
                    points = np.array([[p.x, p.y, p.z, p.visibility or 0.0] for p in result.pose_landmarks[0]],
                                      np.float32)
                    if body_in_frame(points):  # else: no body (zeros, pose_found False)
                        pose[i] = points
                        found[i] = True
        src = nearest_source(t, comp)
        return PoseTrack(pose=pose[src], pose_found=found[src])
