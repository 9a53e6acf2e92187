"""Per-clip face measurements for annotation: face-found rate, detector score, crops, skin tone.

Two sources of faces:

* **frames** (a manifest's image or video): :class:`femo.features.face.FaceTracker` -- the same
  mediapipe FaceLandmarker femo's extraction uses -- finds the face mesh in each sampled frame
  and cuts the aligned crop; skin tone is measured on the frame under the mesh.
* **stored crops** (a feature store's ``faces`` / ``face_found``): the crops are already there;
  the mesh is found again on each crop to locate the skin region.

The detector score is the highest confidence that BlazeFace (the short-range face detector
bundled in ``face_landmarker.task``, the landmarker's own first stage) gives any face in the
image, run with a 0.05 threshold so that weak faces still score; 0 when it finds none.
``face_score`` is its mean over the sampled frames (for a store: over its face crops, with 0
for frames without a face).
"""
from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from femo.annotate.skin import ita_category, ita_group, measure_skin
from femo.assets import asset_path
from femo.features import mediapipe_tasks, quiet_native_stderr
from femo.features.face import FaceTracker

#: Detector threshold for scoring: low, so that a weak face gets its (low) score instead of 0.
SCORE_THRESHOLD = 0.05
SKIN_COLUMNS: tuple[str, ...] = ("ita", "ita_skin_tone", "ita_skin_group", "ita_frames")
FACE_COLUMNS: tuple[str, ...] = ("face_found_rate", "face_score")


class FaceScorer:
    """Best BlazeFace score of an RGB image; a context manager (native resources)."""

    def __init__(self, *, model_path: str | Path | None = None, log_path: str | Path | None = None) -> None:
        BaseOptions, vision = mediapipe_tasks()  # imported lazily: heavy

        bundle = Path(model_path) if model_path else asset_path("face_landmarker.task")
        with zipfile.ZipFile(bundle) as zf:
            detector = zf.read("face_detector.tflite")
        self.log_path = log_path
        options = vision.FaceDetectorOptions(base_options=BaseOptions(model_asset_buffer=detector),
                                             min_detection_confidence=SCORE_THRESHOLD)
        with quiet_native_stderr(log_path):
            self._detector = vision.FaceDetector.create_from_options(options)

    def score(self, image: np.ndarray) -> float:
        """image (H, W, 3) uint8 RGB -> best detection score in [0, 1] (0 = no face)."""
        import mediapipe as mp

        with quiet_native_stderr(self.log_path):
            result = self._detector.detect(mp.Image(image_format=mp.ImageFormat.SRGB,
                                                    data=np.ascontiguousarray(image)))
        return max((d.categories[0].score for d in result.detections), default=0.0)

    def close(self) -> None:
        """Release the native detector."""
        if self._detector is not None:
            with quiet_native_stderr(self.log_path):
                self._detector.close()
            self._detector = None

    def __enter__(self) -> FaceScorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def skin_columns(images: list[np.ndarray], meshes: list[np.ndarray]) -> dict[str, object]:
    """ITA columns from face images (each (H, W, 3) uint8) and their meshes ((478, 2) pixels).

    ``ita`` is the median over frames of each frame's ITA; frames whose skin region is too
    small are skipped; no usable frame -> empty columns.
    """
    values = [m.ita for m in (measure_skin(img, mesh) for img, mesh in zip(images, meshes)) if m is not None]
    if not values:
        return {"ita": math.nan, "ita_skin_tone": "", "ita_skin_group": "", "ita_frames": 0}
    ita = float(np.median(values))
    return {"ita": ita, "ita_skin_tone": ita_category(ita), "ita_skin_group": ita_group(ita), "ita_frames": len(values)}


def spread(n: int, k: int) -> np.ndarray:
    """Up to ``k`` indices spread evenly over range(n)."""
    return np.unique(np.linspace(0, n - 1, num=min(n, k)).round().astype(int)) if n else np.zeros(0, int)


def from_frames(frames: np.ndarray, times: np.ndarray | None, tracker: FaceTracker,
                scorer: FaceScorer) -> tuple[np.ndarray, dict[str, object]]:
    """Track faces in frames (T, H, W, 3) uint8 -> (crops (K, S, S, 3) of face frames, columns).

    Columns: ``face_found_rate``, ``face_score`` and the skin columns (measured on the frames).
    """
    track = tracker.track(frames, times)
    found = np.flatnonzero(track.face_found)
    columns: dict[str, object] = {
        "face_found_rate": float(track.face_found.mean()) if len(frames) else math.nan,
        "face_score": float(np.mean([scorer.score(f) for f in frames])) if len(frames) else math.nan,
    }
    columns.update(skin_columns([frames[i] for i in found], [track.landmarks_px[i] for i in found]))
    return track.faces[found], columns


def from_crops(faces: np.ndarray, face_found: np.ndarray, tracker: FaceTracker, scorer: FaceScorer, *,
               skin_frames: int = 4) -> tuple[np.ndarray, dict[str, object]]:
    """Stored crops (T, S, S, 3) + face_found (T,) -> (crops of face frames (K, S, S, 3), columns).

    Skin tone is measured on up to ``skin_frames`` face crops spread over the clip, each with
    the mesh found again on the crop (a crop whose mesh is not found again is skipped).
    """
    found = np.flatnonzero(np.asarray(face_found, bool))
    crops = faces[found]
    scores = [scorer.score(c) for c in crops]
    columns: dict[str, object] = {
        "face_found_rate": float(np.mean(face_found)) if len(face_found) else math.nan,
        "face_score": float(np.sum(scores) / len(face_found)) if len(face_found) else math.nan,
    }
    picked = crops[spread(len(crops), skin_frames)]
    if len(picked):
        track = tracker.track(np.ascontiguousarray(picked))
        ok = np.flatnonzero(track.face_found)
        columns.update(skin_columns([picked[i] for i in ok], [track.landmarks_px[i] for i in ok]))
    else:
        columns.update(skin_columns([], []))
    return crops, columns
