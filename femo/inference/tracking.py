"""Face and body tracking over one long video, chunk after chunk, for ``femo predict``.

The extraction trackers (:class:`femo.features.face.FaceTracker`, :class:`femo.features.pose.PoseTracker`)
restart on every clip so that a clip's arrays never depend on the clips before it. A video
streamed in chunks has no such need, and restarting there costs: the face detector runs again at
every chunk start and a chunk whose first frames miss the face pays up to three tile searches.
Here the state lives for the whole video (:meth:`StreamFaceTracker.begin` starts a new one):

* **VIDEO mode throughout.** One timestamp clock per video; the landmarker keeps tracking from
  chunk to chunk instead of starting again. Its settings are extraction's (up to ``max_faces``
  faces, blendshapes, transform), so the features match those the model was trained on: with
  one face instead, VIDEO mode kept the face in more frames and needed fewer crop retries, but
  the landmarks then came from another mix of tracked and re-detected frames and window
  probabilities moved by up to 0.07 (against 0.007 with extraction's settings).
* **Rescue anchored across chunks.** A missed frame is retried on a crop around the nearest found
  face, the last face of the previous chunks counting as found when it is under
  ``search_seconds`` old (same crop rule as extraction).
* **Tile search rate-limited.** Only when a whole chunk has no face after the crop retries, and at
  most once per ``search_seconds`` of video (extraction: up to 3 per clip), so a video with nobody
  on screen costs a few landmarker calls per second instead of ~45 per chunk.
* **Pose** (:class:`StreamPoseTracker`): the body landmarker (IMAGE mode, as extraction) runs on
  the middle frame of each group of ``stride`` consecutive kept frames, which the group copies:
  every frame's pose comes from at most ``stride // 2`` kept frames away; a detection counts as a
  body only under extraction's rule (:func:`femo.features.pose.body_in_frame`).

The main-face rule is extraction's (:func:`femo.features.face.choose_face`): large and central
first, then the face nearest the previous box, now followed across chunks.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from femo.data.dataset import face_inputs
from femo.features import quiet_native_stderr
from femo.features.face import FaceFrame, FaceTrack, FaceTracker, _mp_image, choose_face
from femo.features.pose import N_POSE, PoseTrack, PoseTracker, body_in_frame
from femo.inference.stream import FrameFeaturizer

#: Video seconds between two tile searches while no face is found.
SEARCH_SECONDS = 2.0


class StreamFaceTracker(FaceTracker):
    """:class:`FaceTracker` whose state spans the chunks of one video (see module docstring).

    Call :meth:`begin` before each video, then :meth:`track` on its chunks in order, with times
    (seconds from the start of the video) increasing across chunks.
    """

    def __init__(self, *, search_seconds: float = SEARCH_SECONDS, **kwargs) -> None:
        super().__init__(**kwargs)
        self.search_seconds = search_seconds
        self.begin()

    def begin(self) -> None:
        """Forget the previous video: tracking state, main face, search clock."""
        with quiet_native_stderr(self.log_path):
            self._reset()
        self._t0 = self._clock_ms
        self._last: FaceFrame | None = None
        self._last_time = self._last_search = -np.inf

    def track(self, frames: np.ndarray, times: np.ndarray | None = None) -> FaceTrack:
        """frames (N, H, W, 3) uint8 RGB of the next chunk, times (N,) s -> its :class:`FaceTrack`."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be (N, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
        times = np.arange(len(frames)) / 25.0 if times is None else np.asarray(times, np.float64)
        found: list[FaceFrame | None] = []
        with quiet_native_stderr(self.log_path):
            prev = None if self._last is None else self._last.box
            for frame, t in zip(frames, times):
                self._clock_ms = max(self._t0 + int(round(t * 1000)), self._clock_ms + 1)
                face = choose_face(self._faces(self._video.detect_for_video(_mp_image(frame), self._clock_ms)), prev)
                found.append(face)
                prev = face.box if face is not None else prev
            if self.rescue and any(f is None for f in found):
                self._rescue_stream(frames, times, found)
        hits = [i for i, f in enumerate(found) if f is not None]
        if hits:
            self._last, self._last_time = found[hits[-1]], float(times[hits[-1]])
        return self._assemble(frames, found)

    def _rescue_stream(self, frames: np.ndarray, times: np.ndarray, found: list) -> None:
        """Crop retries anchored on the chunk's faces and the previous chunks' last face; then at
        most one tile search when the chunk is still empty and the last search is old enough."""
        if times[0] - self._last_time <= self.search_seconds:  # a recent face: retry around it
            anchored = [self._last, *found]  # position 0: the last face seen before this chunk
            self._spread([frames[0], *frames], anchored)
            found[:] = anchored[1:]
        else:
            self._spread(frames, found)
        if any(f is not None for f in found) or times[len(times) // 2] - self._last_search < self.search_seconds:
            return
        i = len(frames) // 2
        self._last_search = float(times[i])
        found[i] = self._search_tiles(frames[i])
        if found[i] is not None:
            self._spread(frames, found)


class StreamPoseTracker(PoseTracker):
    """:class:`PoseTracker` for consecutive chunks: the landmarker runs on the middle frame of each
    group of ``stride`` kept frames (counted from the start of the video) and the group copies it."""

    def begin(self) -> None:
        """Start counting kept frames for a new video."""
        self._count = 0

    def track(self, frames: np.ndarray) -> PoseTrack:
        """frames (N, H, W, 3) uint8 RGB of the next chunk -> its :class:`PoseTrack`."""
        if not hasattr(self, "_count"):
            self.begin()
        n = len(frames)
        pose, found = np.zeros((n, N_POSE, 4), np.float32), np.zeros(n, bool)
        index = self._count + np.arange(n)  # kept-frame numbers in the video
        groups = index // self.stride
        with quiet_native_stderr(self.log_path):
            for g in np.unique(groups):
                members = np.flatnonzero(groups == g)
                # the group's middle frame, or the chunk's part of it when a chunk splits a group
                i = members[min(len(members) - 1, max(0, g * self.stride + self.stride // 2 - index[members[0]]))]
                result = self._lm.detect(_mp_image(frames[i]))
                if result.pose_landmarks:
                    points = np.array([[p.x, p.y, p.z, p.visibility or 0.0] for p in result.pose_landmarks[0]],
                                      np.float32)
                    if body_in_frame(points):  # extraction's rule: else no body
                        pose[members] = points
                        found[members] = True
        self._count += n
        return PoseTrack(pose=pose, pose_found=found)



class StreamFeaturizer(FrameFeaturizer):
    """:class:`~femo.inference.stream.FrameFeaturizer` with this module's trackers and the
    :class:`~femo.inference.frames.FastFrameEncoder`; call :meth:`begin` before each video."""

    def __init__(self, *, frame_encoder: torch.nn.Module | None, crop_size: int, model_size: int,
                 pose_stride: int | None, log_path: str | Path | None = None, face_source: str = "crop") -> None:
        from femo.inference.frames import FastFrameEncoder

        # the parent's __init__ would build the per-clip trackers: set the same attributes instead
        self.encoder, self.crop_size, self.model_size = frame_encoder, crop_size, model_size
        self.face_source = face_source
        self.fast = None if frame_encoder is None else FastFrameEncoder(frame_encoder, size=model_size)
        self.face = self._face_tracker(crop_size, log_path)
        self.pose = StreamPoseTracker(stride=pose_stride, log_path=log_path) if pose_stride else None
        self.seconds = {"landmarks": 0.0, "cnn": 0.0}
        self._pool = None

    def _face_tracker(self, crop_size: int, log_path) -> StreamFaceTracker:
        return StreamFaceTracker(face_size=crop_size, log_path=log_path)

    def begin(self) -> None:
        """Start a new video: tracking state and pose group count."""
        self.face.begin()
        if self.pose is not None:
            self.pose.begin()

    def close(self) -> None:
        """Release the landmarkers and the pose thread."""
        super().close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _start_pose(self, frames: np.ndarray):
        """Submit the body landmarker on ``frames`` to the pose thread (created on first use);
        returns its future, or None without a pose model."""
        from concurrent.futures import ThreadPoolExecutor

        if self.pose is None:
            return None
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="femo-pose")
        return self._pool.submit(self.pose.track, frames)

    def __call__(self, frames: np.ndarray, times: np.ndarray) -> dict[str, np.ndarray]:
        """frames (N, H, W, 3) uint8 RGB, times (N,) s -> the chunk's :class:`~femo.inference.stream.FrameBuffer`
        arrays. The body landmarker runs in a second thread while the face mesh and the CNN run
        here (mediapipe and onnxruntime release the GIL), so the two cores share the work."""
        from femo.features.geometry import geometry_vector

        t0 = time.perf_counter()
        n = len(frames)
        pose = self._start_pose(frames)
        track = self.face.track(frames, times)
        t1 = time.perf_counter()
        faces, emb_found = self.face_inputs(track.faces, track.face_found, frames)
        emb = self._embed(faces, emb_found)
        t2 = time.perf_counter()
        body = pose.result() if pose is not None else PoseTrack(np.zeros((n, N_POSE, 4), np.float32), np.zeros(n, bool))
        geo = geometry_vector(track.landmarks, track.blendshapes, track.head_pose, body.pose, body.pose_found,
                              track.face_found)
        # landmarks = face mesh + whatever of the pose thread outlasted the CNN + geometry
        self.seconds["landmarks"] += (t1 - t0) + (time.perf_counter() - t2)
        self.seconds["cnn"] += t2 - t1
        return {"face_found": track.face_found.copy(), "face_box": track.face_box.copy(), "geo": geo,
                "landmarks_found": track.face_found | body.pose_found, "emb": emb, "emb_found": emb_found}

    def _embed(self, faces: np.ndarray, found: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 crops -> (N, D) float32 CNN features; zero rows where no face."""
        if self.fast is None:
            return np.zeros((len(faces), 0), np.float32)
        out = np.zeros((len(faces), self.fast.out_dim), np.float32)
        if found.any():
            out[found] = self.fast(face_inputs(faces[found], self.model_size))
        return out
