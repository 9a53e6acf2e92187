"""Several people in one video (``femo predict --faces all``): faces with stable ids, frame after frame.

* **Detection.** The face landmarker runs in VIDEO mode with ``num_faces = max_faces`` (its state
  carries over from chunk to chunk, as in :mod:`femo.inference.tracking`). At most ``max_faces``
  faces are kept per frame, the largest first. A face tracked in the last ``RETRY_SECONDS`` that the
  landmarker misses in a frame is retried once on a crop around its last box (the extraction crop
  rule); a frame with no face at all gets at most one tile search per ``search_seconds`` of video.
* **Identities** (:class:`FaceIdentities`). Each face of a frame is matched, greedily by overlap,
  to a face id seen in the last ``RETRY_SECONDS`` whose last box overlaps it (IoU >= ``IOU_MIN``);
  a face left unmatched is then compared with the ids that are not in the frame by appearance
  (:func:`appearance`: colour histogram of the aligned crop, kept as a running mean per id;
  histogram intersection >= ``REID_MIN`` re-identifies it, the most similar first), so a person
  who leaves the frame or is hidden keeps their id when they come back anywhere in the frame. A
  face still unmatched gets a new id while fewer than ``max_faces`` ids exist; after that it goes
  to the most similar id absent from the frame (the video holds at most ``max_faces`` people).
  Ids count from 0 in order of first appearance; within a frame the main-face rule of the default
  mode (large and central, :func:`femo.features.face.choose_face`) goes first, so face 0 is the
  face the default mode would start with.
* **Features per face** (:class:`MultiFaceFeaturizer`): the same arrays as the one-face path
  (:class:`femo.inference.tracking.StreamFeaturizer`) for every id, the frame CNN batched over all
  faces of a chunk. The body landmarker finds one body: its pose goes to the face whose box holds
  the body's nose, and counts as absent for the others.

Limitation: re-identification compares colours, not faces; two people with the same skin and hair
colours who swap places while out of view can swap ids.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from femo.data.dataset import face_inputs
from femo.features import quiet_native_stderr
from femo.features.face import FaceFrame, _mp_image, align_face, box_normalise, choose_face
from femo.features.pose import N_POSE
from femo.inference.tracking import StreamFaceTracker, StreamFeaturizer

#: Overlap (intersection over union) above which a face continues a recently seen id.
IOU_MIN = 0.3
#: Histogram intersection above which a face re-identifies an absent id.
REID_MIN = 0.6
#: Seconds an id counts as recently seen (overlap matching, crop retries).
RETRY_SECONDS = 1.0
#: Bins per colour channel of the appearance histogram.
HIST_BINS = 4


def appearance(crop: np.ndarray) -> np.ndarray:
    """(S, S, 3) uint8 aligned face crop -> (HIST_BINS**3,) float32 colour histogram summing to 1."""
    q = (crop.reshape(-1, 3).astype(np.int64) * HIST_BINS) // 256  # (S*S, 3) bin per channel
    hist = np.bincount((q[:, 0] * HIST_BINS + q[:, 1]) * HIST_BINS + q[:, 2], minlength=HIST_BINS ** 3)
    return (hist / max(1, hist.sum())).astype(np.float32)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(K, 4) and (M, 4) x0, y0, x1, y1 boxes -> (K, M) intersection over union."""
    lo, hi = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


@dataclass
class _Identity:
    box: np.ndarray
    look: np.ndarray
    seen: float


class FaceIdentities:
    """Stable face ids over one video (rules in the module docstring). :meth:`assign` the faces of
    each frame in time order."""

    def __init__(self, max_faces: int) -> None:
        if max_faces < 1:
            raise ValueError(f"max_faces must be >= 1, got {max_faces}")
        self.max_faces = max_faces
        self.ids: list[_Identity] = []

    def recent(self, t: float) -> list[int]:
        """Ids seen in the last RETRY_SECONDS before ``t`` seconds."""
        return [i for i, d in enumerate(self.ids) if t - d.seen <= RETRY_SECONDS]

    def assign(self, boxes: np.ndarray, looks: np.ndarray, t: float) -> list[int | None]:
        """boxes (K, 4) in [0, 1], looks (K, D) :func:`appearance`, t seconds -> the id of each face
        (None for a face beyond the id budget with no absent id left), ordered as given."""
        out: list[int | None] = [None] * len(boxes)
        taken: set[int] = set()
        recent = self.recent(t)
        if recent and len(boxes):
            overlap = iou(boxes, np.stack([self.ids[i].box for i in recent]))
            for k, j in zip(*np.unravel_index(np.argsort(-overlap, axis=None), overlap.shape)):
                if overlap[k, j] < IOU_MIN:
                    break
                if out[k] is None and recent[j] not in taken:
                    out[k] = recent[j]
                    taken.add(recent[j])
        self._reidentify(looks, out, taken, REID_MIN)
        for k in range(len(boxes)):
            if out[k] is None and len(self.ids) < self.max_faces:
                self.ids.append(_Identity(boxes[k], looks[k], t))
                out[k] = len(self.ids) - 1
                taken.add(out[k])
        self._reidentify(looks, out, taken, -1.0)  # over budget: the most similar absent id
        for k, i in enumerate(out):
            if i is not None:
                d = self.ids[i]
                d.box, d.look, d.seen = boxes[k], 0.9 * d.look + 0.1 * looks[k], t
        return out

    def _reidentify(self, looks: np.ndarray, out: list, taken: set[int], threshold: float) -> None:
        """Give unmatched faces the most similar absent id above ``threshold`` (greedy, in place)."""
        faces = [k for k, i in enumerate(out) if i is None]
        absent = [i for i in range(len(self.ids)) if i not in taken]
        if not faces or not absent:
            return
        sim = np.array([[np.minimum(looks[k], self.ids[i].look).sum() for i in absent] for k in faces])
        for a, b in zip(*np.unravel_index(np.argsort(-sim, axis=None), sim.shape)):
            if sim[a, b] < threshold:
                break
            if out[faces[a]] is None and absent[b] not in taken:
                out[faces[a]] = absent[b]
                taken.add(absent[b])


class MultiFaceTracker(StreamFaceTracker):
    """Every face of each frame with its id (module docstring); :meth:`begin` before each video."""

    def __init__(self, *, max_faces: int, **kwargs) -> None:
        super().__init__(max_faces=max_faces, **kwargs)

    def begin(self) -> None:
        """Forget the previous video: tracking state, ids, search clock."""
        super().begin()
        self.identities = FaceIdentities(self.max_faces)

    def track_all(self, frames: np.ndarray, times: np.ndarray) -> list[dict[int, tuple[FaceFrame, np.ndarray]]]:
        """frames (N, H, W, 3) uint8 RGB, times (N,) s -> per frame {face id: (face, (S, S, 3) aligned crop)}."""
        out = []
        with quiet_native_stderr(self.log_path):
            for frame, t in zip(frames, times):
                self._clock_ms = max(self._t0 + int(round(t * 1000)), self._clock_ms + 1)
                faces = self._faces(self._video.detect_for_video(_mp_image(frame), self._clock_ms))
                faces = self._retry(frame, float(t), faces)
                out.append(self._identify(frame, float(t), faces))
        return out

    def _retry(self, frame: np.ndarray, t: float, faces: list[FaceFrame]) -> list[FaceFrame]:
        """Add faces the landmarker missed: crop retries around recently seen ids, then a tile search."""
        if not self.rescue:
            return faces
        boxes = np.stack([f.box for f in faces]) if faces else np.zeros((0, 4))
        h, w = frame.shape[:2]
        for i in self.identities.recent(t):
            last = self.identities.ids[i].box
            if len(boxes) and iou(last[None], boxes).max() >= IOU_MIN:
                continue
            x0, y0, x1, y1 = last * [w, h, w, h]
            face = self._detect_square(frame, ((x0 + x1) / 2, (y0 + y1) / 2), max(x1 - x0, y1 - y0) * 2.5, last)
            if face is not None and (not len(boxes) or iou(face.box[None], boxes).max() < 0.5):
                faces, boxes = [*faces, face], np.vstack([boxes, face.box[None]])
        if not faces and t - self._last_search >= self.search_seconds:
            self._last_search = t
            face = self._search_tiles(frame)
            faces = [] if face is None else [face]
        return faces

    def _identify(self, frame: np.ndarray, t: float, faces: list[FaceFrame]) -> dict:
        """Keep the largest ``max_faces`` faces, main face first, and give them ids."""
        first = choose_face(faces, None)
        rest = sorted((f for f in faces if f is not first), key=lambda f: -float(np.prod(f.box[2:] - f.box[:2])))
        faces = ([first] if first is not None else []) + rest
        faces = faces[: self.max_faces]
        h, w = frame.shape[:2]
        crops = [align_face(frame, f.landmarks[:, :2] * np.array([w, h], np.float32), size=self.face_size)
                 for f in faces]
        boxes = np.stack([f.box for f in faces]) if faces else np.zeros((0, 4), np.float32)
        looks = np.stack([appearance(c) for c in crops]) if crops else np.zeros((0, HIST_BINS ** 3), np.float32)
        ids = self.identities.assign(boxes, looks, t)
        return {i: (f, c) for i, f, c in zip(ids, faces, crops) if i is not None}


class MultiFaceFeaturizer(StreamFeaturizer):
    """Per-face :class:`~femo.inference.stream.FrameBuffer` arrays of each chunk, keyed by face id."""

    def __init__(self, *, max_faces: int, **kwargs) -> None:
        self.max_faces = max_faces
        super().__init__(**kwargs)

    def _face_tracker(self, crop_size: int, log_path) -> MultiFaceTracker:
        return MultiFaceTracker(max_faces=self.max_faces, face_size=crop_size, log_path=log_path)

    def __call__(self, frames: np.ndarray, times: np.ndarray) -> dict[int, dict[str, np.ndarray]]:
        """frames (N, H, W, 3) uint8 RGB, times (N,) s -> {face id: arrays of the N frames} for the
        ids present in the chunk (``face_found`` False in the frames where that face is not)."""
        t0 = time.perf_counter()
        n = len(frames)
        pose = self._start_pose(frames)
        per_frame = self.face.track_all(frames, times)
        t1 = time.perf_counter()
        pairs = [(j, i, face, crop) for j, fr in enumerate(per_frame) for i, (face, crop) in fr.items()]
        emb = self._embed_all([p[3] for p in pairs])
        t2 = time.perf_counter()
        body = pose.result() if pose is not None else None
        out = self._arrays(n, pairs, emb, body)
        self.seconds["landmarks"] += (t1 - t0) + (time.perf_counter() - t2)
        self.seconds["cnn"] += t2 - t1
        return out

    def _embed_all(self, crops: list[np.ndarray]) -> np.ndarray:
        """(K,) aligned crops -> (K, D) float32 frame-CNN features in one batch."""
        if self.fast is None or not crops:
            return np.zeros((len(crops), 0 if self.fast is None else self.fast.out_dim), np.float32)
        return self.fast(face_inputs(np.stack(crops), self.model_size))

    def _arrays(self, n: int, pairs: list, emb: np.ndarray, body) -> dict[int, dict[str, np.ndarray]]:
        """Assemble each id's (N, ...) arrays, giving the body to the face that holds its nose."""
        from femo.features.geometry import geometry_vector

        out = {}
        for i in sorted({p[1] for p in pairs}):
            rows = [(k, p) for k, p in enumerate(pairs) if p[1] == i]
            found, box = np.zeros(n, bool), np.zeros((n, 4), np.float32)
            lm, bs, hp = np.zeros((n, 478, 3), np.float32), np.zeros((n, 52), np.float32), np.zeros((n, 3), np.float32)
            e = np.zeros((n, emb.shape[1]), np.float32)
            for k, (j, _, face, _) in rows:
                found[j], box[j], lm[j] = True, face.box, box_normalise(face.landmarks)
                bs[j], hp[j], e[j] = face.blendshapes, face.head_pose, emb[k]
            pose, pose_found = np.zeros((n, N_POSE, 4), np.float32), np.zeros(n, bool)
            if body is not None:
                nose = body.pose[:, 0, :2]  # (N, 2) frame [0, 1]
                mine = body.pose_found & found & np.all((nose >= box[:, :2]) & (nose <= box[:, 2:]), axis=1)
                pose[mine], pose_found[mine] = body.pose[mine], True
            geo = geometry_vector(lm, bs, hp, pose, pose_found, found)
            out[i] = {"face_found": found, "face_box": box, "geo": geo, "landmarks_found": found | pose_found, "emb": e}
        return out
