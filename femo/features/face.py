"""Face mesh, blendshapes, head pose and aligned face crops with mediapipe's FaceLandmarker.

:class:`FaceTracker` runs the Tasks ``FaceLandmarker`` (``face_landmarker.task``: BlazeFace
short-range detector + 478-point mesh + 52 blendshapes + facial transformation matrix) over the T
sampled frames of one clip and returns a :class:`FaceTrack` whose arrays match the feature store's
``faces, face_found, face_box, landmarks, blendshapes, head_pose`` keys.

Rules, in order:

1. **Tracking pass.** Frames go through the landmarker in VIDEO mode (once a face is found its
   mesh seeds the next frame, so small or turned faces stay tracked). The tracker is reset at the
   start of every clip (a blank frame drops its state), so a clip's result never depends on the
   clips processed before it: a resumed or sharded run gives identical arrays.
2. **Main face.** Up to ``max_faces`` faces are scored; with no previous box in the clip the main
   face maximises ``sqrt(area) * (1 - centre_distance)``; afterwards the face whose box centre is
   nearest the previous main box is kept (stable identity across frames).
3. **Rescue of missed frames** (the short-range detector misses faces under ~15-25% of the frame
   height: measured, a 90 px head in a 640x360 frame was found in none of 8 frames without it,
   in all 8 with it; 55-70 px heads moving 40 px per sampled frame: 2-3 of 8). Each missed
   frame is retried once in IMAGE mode on a square crop of side ``RESCUE_SCALE`` x the box side
   around the face of the nearest found frame, upscaled to 256 px; nearest frames go first, so a
   rescued frame anchors its neighbours. Frames still missed are seeded by a tile search: the
   middle frame of the longest run of missed frames is searched on overlapping square tiles
   (side 0.6 x the frame's short side, stride half a tile, each upscaled to 256 px), then the crop
   retries spread from it again; at most ``rescue_frames`` tile searches per clip (a clip with no
   face costs about 3 x 15 extra landmarker calls at 640x360).
4. **Crops.** The aligned crop rotates the eye line level, centres the landmark box in that
   rotated frame and scales its longer side plus ``CROP_MARGIN`` on each side to ``face_size``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from femo.assets import asset_path
from femo.features import mediapipe_tasks, quiet_native_stderr

N_LANDMARKS = 478
BLENDSHAPE_NAMES: tuple[str, ...] = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight",
    "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft",
    "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight",
    "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen", "jawRight", "mouthClose",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight", "mouthFunnel",
    "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight",
    "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower",
    "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight",
)
#: Eye corners in the mediapipe mesh: (outer, inner) of the image-left eye, (inner, outer) of the other.
EYE_LEFT_IDX, EYE_RIGHT_IDX = (33, 133), (362, 263)
#: Fraction of the landmark box's longer side added on each side of the aligned crop.
CROP_MARGIN = 0.15
#: Rescue crop side as a multiple of the nearest found face box's longer side.
RESCUE_SCALE = 2.5
RESCUE_INPUT = 256


@dataclass(frozen=True)
class FaceFrame:
    """One detected face in frame coordinates.

    landmarks: (478, 3) float32, x/y in [0, 1] of the frame width/height, z in units of frame width.
    blendshapes: (52,) float32 in [0, 1] (order :data:`BLENDSHAPE_NAMES`).
    head_pose: (3,) float32 yaw, pitch, roll in degrees (:func:`head_pose_from_matrix`).
    """

    landmarks: np.ndarray
    blendshapes: np.ndarray
    head_pose: np.ndarray

    @property
    def box(self) -> np.ndarray:
        """(4,) float32 x0, y0, x1, y1 of the landmarks, clipped to [0, 1]."""
        lo, hi = self.landmarks[:, :2].min(0), self.landmarks[:, :2].max(0)
        return np.clip(np.concatenate([lo, hi]), 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class FaceTrack:
    """Per-clip face arrays (T sampled frames, S crop side); zeros where ``face_found`` is False.

    faces (T, S, S, 3) uint8 RGB; face_found (T,) bool; face_box (T, 4) float32 x0, y0, x1, y1 in
    [0, 1]; landmarks (T, 478, 3) float32 normalised to the face box (x, y in [0, 1] of the box,
    z divided by the box width); blendshapes (T, 52) float32; head_pose (T, 3) float32 degrees;
    landmarks_px (T, 478, 2) float32 frame pixel coordinates (not stored; used by condition flags).
    """

    faces: np.ndarray
    face_found: np.ndarray
    face_box: np.ndarray
    landmarks: np.ndarray
    blendshapes: np.ndarray
    head_pose: np.ndarray
    landmarks_px: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        """The store keys of this track."""
        return {k: getattr(self, k) for k in
                ("faces", "face_found", "face_box", "landmarks", "blendshapes", "head_pose")}


def head_pose_from_matrix(matrix: np.ndarray) -> np.ndarray:
    """Yaw, pitch, roll in degrees from mediapipe's 4x4 facial transformation matrix.

    With R = Rz(roll) @ Ry(yaw) @ Rx(pitch): yaw turns about the vertical axis, pitch nods, roll
    tilts in the image plane; a frontal upright face gives ~(0, 0, 0). Returns (3,) float32.
    """
    r = np.asarray(matrix, dtype=np.float64)[:3, :3]
    r = r / np.linalg.norm(r, axis=0, keepdims=True)  # drop the scale the matrix may carry
    yaw = math.degrees(math.asin(float(np.clip(-r[2, 0], -1.0, 1.0))))
    pitch = math.degrees(math.atan2(r[2, 1], r[2, 2]))
    roll = math.degrees(math.atan2(r[1, 0], r[0, 0]))
    return np.array([yaw, pitch, roll], dtype=np.float32)


def alignment_matrix(landmarks_px: np.ndarray, *, size: int, margin: float = CROP_MARGIN) -> np.ndarray:
    """(2, 3) float64 affine map from frame pixels to the aligned S x S face crop.

    landmarks_px: (478, 2) pixel coordinates. The eye line is levelled, the landmark box centred
    and its longer side plus ``margin`` on each side scaled to ``size``: the one alignment of femo
    (crops in :func:`align_face`, landmark positions on a stored crop in :func:`crop_landmarks`).
    """
    eye_a = landmarks_px[list(EYE_LEFT_IDX)].mean(0)
    eye_b = landmarks_px[list(EYE_RIGHT_IDX)].mean(0)
    dx, dy = eye_b - eye_a
    angle = math.atan2(dy, dx)
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, s], [-s, c]])  # rotates the eye line onto +x
    mid = (eye_a + eye_b) / 2
    q = (landmarks_px - mid) @ rot.T  # (478, 2) in the levelled frame
    lo, hi = q.min(0), q.max(0)
    side = max(float((hi - lo).max()), 1.0) * (1 + 2 * margin)
    k = size / side
    a = k * rot
    b = -a @ mid - k * (lo + hi) / 2 + size / 2
    return np.hstack([a, b[:, None]]).astype(np.float64)


def align_face(frame: np.ndarray, landmarks_px: np.ndarray, *, size: int = 112,
               margin: float = CROP_MARGIN) -> np.ndarray:
    """Aligned square face crop: eye line level, landmark box centred, (S, S, 3) uint8.

    frame: (H, W, 3) uint8 RGB; landmarks_px: (478, 2) pixel coordinates. Areas outside the frame
    are black.
    """
    m = alignment_matrix(landmarks_px, size=size, margin=margin)
    return cv2.warpAffine(np.ascontiguousarray(frame), m, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


#: Frame height in pseudo-pixels used to place stored (box-normalised) landmarks on a crop; the
#: alignment is scale-free, so any height gives the same positions.
_CROP_UNIT = 1000.0


def crop_landmarks(landmarks: np.ndarray, box: np.ndarray, *, size: int, aspect: float = 1.0,
                   margin: float = CROP_MARGIN) -> np.ndarray:
    """Pixel positions (478, 2) of stored landmarks on the stored aligned face crop.

    landmarks: (478, 3) normalised to the face box (store key ``landmarks``); box: (4,) x0, y0, x1,
    y1 in [0, 1] of the frame (``face_box``); size: crop side S; aspect: frame width / height.
    Applies :func:`alignment_matrix`, the alignment the crop was made with.
    """
    width, height = (box[2] - box[0]) * aspect, box[3] - box[1]
    points = landmarks[:, :2] * np.array([width, height]) * _CROP_UNIT  # (478, 2) pseudo-pixels
    m = alignment_matrix(points, size=size, margin=margin)
    return points @ m[:, :2].T + m[:, 2]


def box_normalise(landmarks: np.ndarray) -> np.ndarray:
    """(478, 3) frame-normalised landmarks -> x, y in [0, 1] of their own box, z / box width."""
    lo, hi = landmarks[:, :2].min(0), landmarks[:, :2].max(0)
    span = np.maximum(hi - lo, 1e-6)
    out = np.empty_like(landmarks, dtype=np.float32)
    out[:, :2] = (landmarks[:, :2] - lo) / span
    out[:, 2] = landmarks[:, 2] / span[0]
    return out


def choose_face(faces: list[FaceFrame], previous_box: np.ndarray | None) -> FaceFrame | None:
    """The main face: nearest the previous box when there is one, else large and central."""
    if not faces:
        return None
    boxes = np.stack([f.box for f in faces])
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    if previous_box is not None:
        prev_c = (previous_box[:2] + previous_box[2:]) / 2
        return faces[int(np.argmin(np.linalg.norm(centres - prev_c, axis=1)))]
    area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    central = 1.0 - np.clip(np.linalg.norm(centres - 0.5, axis=1) / 0.7071, 0.0, 1.0)
    return faces[int(np.argmax(np.sqrt(area) * central))]


class FaceTracker:
    """Face mesh + blendshapes + head pose + aligned crops for the sampled frames of a clip.

    Use as a context manager (the landmarkers hold native resources). ``model_path`` defaults to
    the cached ``face_landmarker.task`` (:class:`femo.assets.MissingModelError` names the command
    that provisions it). mediapipe's native log lines go to ``log_path`` (default: discarded).
    """

    def __init__(self, *, face_size: int = 112, max_faces: int = 3, rescue: bool = True,
                 rescue_frames: int = 3, model_path: str | Path | None = None,
                 log_path: str | Path | None = None) -> None:
        self.face_size = face_size
        self.max_faces = max_faces
        self.rescue = rescue
        self.rescue_frames = rescue_frames
        self.log_path = log_path
        self._model = Path(model_path) if model_path else asset_path("face_landmarker.task")
        self._video = self._create("VIDEO")
        self._image = self._create("IMAGE") if rescue else None
        self._clock_ms = 0

    def _create(self, mode: str):
        BaseOptions, vision = mediapipe_tasks()  # imported lazily: heavy

        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(self._model)),
            running_mode=getattr(vision.RunningMode, mode), num_faces=self.max_faces,
            output_face_blendshapes=True, output_facial_transformation_matrixes=True)
        with quiet_native_stderr(self.log_path):
            return vision.FaceLandmarker.create_from_options(options)

    def close(self) -> None:
        """Release the native landmarkers."""
        for lm in (self._video, self._image):
            if lm is not None:
                with quiet_native_stderr(self.log_path):
                    lm.close()
        self._video = self._image = None

    def __enter__(self) -> FaceTracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def track(self, frames: np.ndarray, times: np.ndarray | None = None) -> FaceTrack:
        """Run the rules of this module on frames (T, H, W, 3) uint8 RGB; times (T,) seconds."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
        t = len(frames)
        times = np.arange(t) / 25.0 if times is None else np.asarray(times, dtype=np.float64)
        found: list[FaceFrame | None] = [None] * t
        with quiet_native_stderr(self.log_path):
            self._reset()
            start, prev_box = self._clock_ms, None
            for i, frame in enumerate(frames):
                ts = max(start + int(round(times[i] * 1000)), self._clock_ms + 1)
                self._clock_ms = ts
                face = choose_face(self._faces(self._video.detect_for_video(_mp_image(frame), ts)), prev_box)
                found[i] = face
                prev_box = face.box if face is not None else prev_box
            if self.rescue and any(f is None for f in found):
                self._rescue(frames, found)
        return self._assemble(frames, found)

    def _reset(self) -> None:
        """Drop the VIDEO-mode tracking state with a blank frame (no face -> detector next time)."""
        self._clock_ms += 1000
        self._video.detect_for_video(_mp_image(np.zeros((64, 64, 3), np.uint8)), self._clock_ms)

    @staticmethod
    def _faces(result) -> list[FaceFrame]:
        """Every face of a landmarker result, in frame-normalised coordinates."""
        out = []
        for k, lms in enumerate(result.face_landmarks):
            lm = np.array([[p.x, p.y, p.z] for p in lms], dtype=np.float32)
            bs = np.array([c.score for c in result.face_blendshapes[k]], dtype=np.float32)
            hp = head_pose_from_matrix(result.facial_transformation_matrixes[k])
            out.append(FaceFrame(lm, bs, hp))
        return out

    def _rescue(self, frames: np.ndarray, found: list[FaceFrame | None]) -> None:
        """Fill missed frames in place: crop retries spread from found frames, tile searches seed them."""
        tiled: set[int] = set()
        while True:
            self._spread(frames, found)
            runs = _missing_runs(found, tiled)
            if not runs or len(tiled) >= self.rescue_frames:
                return
            start, stop = max(runs, key=lambda r: (r[1] - r[0], -r[0]))  # middle of the longest gap
            i = (start + stop - 1) // 2
            tiled.add(i)
            found[i] = self._search_tiles(frames[i])

    def _spread(self, frames: np.ndarray, found: list[FaceFrame | None]) -> None:
        """Retry each missed frame once on a crop around the nearest found face, nearest frames first,
        so that a rescued frame becomes the anchor of its neighbours."""
        tried: set[int] = set()
        while True:
            have = [j for j, f in enumerate(found) if f is not None]
            todo = [i for i, f in enumerate(found) if f is None and i not in tried]
            if not have or not todo:
                return
            i, j = min(((i, j) for i in todo for j in have), key=lambda p: (abs(p[0] - p[1]), p[0], p[1]))
            tried.add(i)
            h, w = frames[i].shape[:2]
            x0, y0, x1, y1 = found[j].box * [w, h, w, h]
            side = max(x1 - x0, y1 - y0) * RESCUE_SCALE
            found[i] = self._detect_square(frames[i], ((x0 + x1) / 2, (y0 + y1) / 2), side, found[j].box)

    def _search_tiles(self, frame: np.ndarray) -> FaceFrame | None:
        h, w = frame.shape[:2]
        side = 0.6 * min(h, w)
        step = side / 2
        xs = np.unique(np.clip(np.arange(0, w - side + step, step), 0, w - side))
        ys = np.unique(np.clip(np.arange(0, h - side + step, step), 0, h - side))
        for y in ys:
            for x in xs:
                face = self._detect_square(frame, (x + side / 2, y + side / 2), side, None)
                if face is not None:
                    return face
        return None

    def _detect_square(self, frame: np.ndarray, centre: tuple[float, float], side: float,
                       previous_box: np.ndarray | None) -> FaceFrame | None:
        """IMAGE-mode landmarks on a square crop (upscaled to RESCUE_INPUT), mapped back to the frame."""
        h, w = frame.shape[:2]
        k = RESCUE_INPUT / side
        x0, y0 = centre[0] - side / 2, centre[1] - side / 2
        m = np.array([[k, 0, -k * x0], [0, k, -k * y0]], dtype=np.float64)
        crop = cv2.warpAffine(np.ascontiguousarray(frame), m, (RESCUE_INPUT, RESCUE_INPUT),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        faces = self._faces(self._image.detect(_mp_image(crop)))
        mapped = []
        for f in faces:
            lm = f.landmarks.copy()
            lm[:, 0] = (x0 + lm[:, 0] * side) / w
            lm[:, 1] = (y0 + lm[:, 1] * side) / h
            lm[:, 2] = lm[:, 2] * side / w
            mapped.append(FaceFrame(lm, f.blendshapes, f.head_pose))
        return choose_face(mapped, previous_box)

    def _assemble(self, frames: np.ndarray, found: list[FaceFrame | None]) -> FaceTrack:
        out = empty_face_track(len(frames), self.face_size)
        for i, f in enumerate(found):
            if f is None:
                continue
            h, w = frames[i].shape[:2]
            px = f.landmarks[:, :2] * np.array([w, h], np.float32)
            out.faces[i] = align_face(frames[i], px, size=self.face_size)
            out.face_found[i] = True
            out.face_box[i] = f.box
            out.landmarks[i] = box_normalise(f.landmarks)
            out.blendshapes[i] = f.blendshapes
            out.head_pose[i] = f.head_pose
            out.landmarks_px[i] = px
        return out


def _missing_runs(found: list, skip: set[int]) -> list[tuple[int, int]]:
    """[start, stop) runs of consecutive missed frames, leaving out frames already in ``skip``."""
    runs, start = [], None
    for i, f in enumerate([*found, True]):
        gap = f is None and i not in skip
        if gap and start is None:
            start = i
        elif not gap and start is not None:
            runs.append((start, i))
            start = None
    return runs


def empty_face_track(num_frames: int, face_size: int = 112) -> FaceTrack:
    """A track of ``num_frames`` frames with no face (all zeros, ``face_found`` all False)."""
    t, s = num_frames, face_size
    return FaceTrack(
        faces=np.zeros((t, s, s, 3), np.uint8), face_found=np.zeros(t, bool),
        face_box=np.zeros((t, 4), np.float32), landmarks=np.zeros((t, N_LANDMARKS, 3), np.float32),
        blendshapes=np.zeros((t, len(BLENDSHAPE_NAMES)), np.float32),
        head_pose=np.zeros((t, 3), np.float32), landmarks_px=np.zeros((t, N_LANDMARKS, 2), np.float32))


def _mp_image(rgb: np.ndarray):
    import mediapipe as mp

    return mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
