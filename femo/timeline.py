"""Streaming building blocks of ``femo predict``: window layout, audio stream, per-frame features.

A video is read once, front to back, and never held in memory as a whole:

* **Windows.** :func:`window_spans` lays windows of ``window`` seconds every ``hop`` seconds over
  ``[0, duration]``; the last one is moved back to end at ``duration`` so the tail is covered, and
  a video shorter than one window gets a single window over all of it.
* **Frames.** A window is seen by the model as T frames at the centres of T equal segments (the
  training sampler, :func:`femo.data.decode.sample_indices`, applied in time). The video is
  decoded once; every k-th frame (k = fps x window / T, at least 1) is converted and kept, and each
  window takes the kept frame nearest each of its T target times. Overlapping windows share frames.
* **Per-frame features** (:class:`FrameFeaturizer`): kept frames go through the face tracker in
  chunks of ``chunk`` frames (the tracker's VIDEO-mode state and main-face choice restart at each
  chunk, see :mod:`femo.features.face`), the pose tracker (only for models using landmarks), the
  geometry vector, and the frame CNN on the aligned crops of frames with a face. Only these
  vectors are buffered (not pictures), and frames older than the next window are dropped.
* **Audio** (:class:`AudioStream`): decoded and resampled chunk by chunk; a window takes its own
  samples and gets its features exactly as a training clip does (0 dB = the window's maximum).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import torch

from femo.data.dataset import face_inputs
from femo.data.decode import MediaError

#: Bins per second of the waveform envelope kept for the timeline plot.
ENVELOPE_RATE = 100


def window_spans(duration: float, window: float, hop: float) -> np.ndarray:
    """(W, 2) float64 window [start, end] seconds covering ``[0, duration]``; see module docstring."""
    if window <= 0 or hop <= 0:
        raise ValueError(f"window and hop must be > 0 seconds, got window={window}, hop={hop}")
    if duration <= 0:
        raise ValueError(f"duration must be > 0 seconds, got {duration}")
    if duration <= window:
        return np.array([[0.0, duration]])
    starts = list(np.arange(0.0, duration - window + 1e-9, hop))
    if duration - (starts[-1] + window) > 1e-6:
        starts.append(duration - window)
    starts = np.array(starts)
    return np.stack([starts, starts + window], axis=1)


def target_times(start: float, end: float, num_frames: int) -> np.ndarray:
    """(T,) seconds: centres of ``num_frames`` equal segments of ``[start, end]``."""
    return start + (np.arange(num_frames) + 0.5) * (end - start) / num_frames


class AudioStream:
    """Mono float32 audio of ``path`` at ``sample_rate`` Hz, decoded chunk by chunk on demand.

    :meth:`segment` must be called with non-decreasing starts: samples before the last start are
    released. A waveform envelope (min/max per 1/ENVELOPE_RATE s) of everything decoded is kept
    for plotting. Use as a context manager.
    """

    def __init__(self, path: str | Path, *, sample_rate: int) -> None:
        self.path, self.sample_rate = Path(path), sample_rate
        try:
            self._container = av.open(str(self.path))
        except av.FFmpegError as exc:
            raise MediaError(f"{self.path}: corrupt or truncated container ({exc})") from exc
        stream = self._container.streams.audio[0]
        limit = stream.duration * stream.time_base if stream.duration and stream.time_base else None
        self._limit = int(round(float(limit) * sample_rate)) if limit else None
        self._chunks = self._decode(stream)
        self._buf, self._buf_start, self._total, self._done = np.zeros(0, np.float32), 0, 0, False
        self._env_rest = np.zeros(0, np.float32)
        self._env: list[np.ndarray] = []

    def _decode(self, stream):
        resampler = av.AudioResampler(format="flt", layout="mono", rate=self.sample_rate)
        try:
            for frame in self._container.decode(stream):
                frame.pts = None  # let the resampler count samples itself
                for out in resampler.resample(frame):
                    yield out.to_ndarray().reshape(-1)
        except av.FFmpegError as exc:
            raise MediaError(f"{self.path}: corrupt or truncated audio stream ({exc})") from exc
        for out in resampler.resample(None):
            yield out.to_ndarray().reshape(-1)

    def _pull(self) -> bool:
        """Append the next decoded chunk to the buffer; False when the stream is exhausted."""
        chunk = next(self._chunks, None) if not self._done else None
        if chunk is None:
            self._done = True
            return False
        if self._limit is not None:  # drop the encoder's tail padding
            chunk = chunk[: max(0, self._limit - self._total)]
        self._total += len(chunk)
        self._buf = np.concatenate([self._buf, chunk.astype(np.float32)])
        self._envelope(chunk)
        return True

    def _envelope(self, chunk: np.ndarray) -> None:
        size = self.sample_rate // ENVELOPE_RATE
        data = np.concatenate([self._env_rest, chunk])
        n = len(data) // size * size
        if n:
            bins = data[:n].reshape(-1, size)
            self._env.append(np.stack([bins.min(1), bins.max(1)], axis=1))
        self._env_rest = data[n:]

    def segment(self, start: float, end: float) -> np.ndarray:
        """(N,) float32 samples of ``[start, end]`` seconds (shorter at the end of the track)."""
        a, b = int(round(start * self.sample_rate)), int(round(end * self.sample_rate))
        while self._buf_start + len(self._buf) < b and self._pull():
            pass
        drop = max(0, min(a - self._buf_start, len(self._buf)))
        self._buf, self._buf_start = self._buf[drop:], self._buf_start + drop
        return self._buf[max(0, a - self._buf_start): max(0, b - self._buf_start)].copy()

    def envelope(self) -> np.ndarray:
        """(K, 2) float32 min/max of each 1/ENVELOPE_RATE s bin decoded so far."""
        return np.concatenate(self._env) if self._env else np.zeros((0, 2), np.float32)

    def close(self) -> None:
        """Release the container."""
        self._chunks.close()
        self._container.close()

    def __enter__(self) -> AudioStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class FrameBuffer:
    """Per-frame features of the kept frames still needed by upcoming windows.

    times (N,) s; face_found (N,) bool; face_box (N, 4) x0, y0, x1, y1 in [0, 1]; emb (N, D) frame-CNN
    features (zeros where no face); geo (N, G) geometry vectors; landmarks_found (N,) bool.
    """

    times: np.ndarray = field(default_factory=lambda: np.zeros(0))
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def extend(self, times: np.ndarray, arrays: dict[str, np.ndarray]) -> None:
        """Append one chunk's arrays (same keys every time)."""
        self.times = np.concatenate([self.times, times])
        self.arrays = {k: np.concatenate([self.arrays[k], v]) if k in self.arrays else v for k, v in arrays.items()}

    def drop_before(self, t: float) -> None:
        """Forget frames earlier than ``t`` seconds, keeping the one just before it."""
        keep = max(0, int(np.searchsorted(self.times, t)) - 1)
        self.times = self.times[keep:]
        self.arrays = {k: v[keep:] for k, v in self.arrays.items()}

    def nearest(self, targets: np.ndarray) -> np.ndarray:
        """(T,) int positions of the buffered frames nearest ``targets`` seconds."""
        pos = np.clip(np.searchsorted(self.times, targets), 1, max(1, len(self.times) - 1))
        left = np.clip(pos - 1, 0, len(self.times) - 1)
        right = np.clip(pos, 0, len(self.times) - 1)
        return np.where(np.abs(self.times[left] - targets) <= np.abs(self.times[right] - targets), left, right)


class FrameFeaturizer:
    """Face tracking, pose, geometry and frame-CNN features of kept frames; owns the trackers.

    frame_encoder: (N, 3, S, S) float in [0, 1] -> (N, D), or None when the model has no face
    modality. crop_size: side the tracker crops at (the store's); model_size: the model's face
    side (crops are resized to it bilinearly, as :class:`femo.data.dataset.FeatureDataset` does).
    pose_stride: None skips the pose tracker (models without landmarks). ``seconds`` accumulates
    wall time per stage (``landmarks``, ``cnn``). Use as a context manager.
    """

    def __init__(self, *, frame_encoder: torch.nn.Module | None, crop_size: int, model_size: int,
                 pose_stride: int | None, log_path: str | Path | None = None) -> None:
        from femo.features.face import FaceTracker
        from femo.features.pose import PoseTracker

        self.encoder, self.crop_size, self.model_size = frame_encoder, crop_size, model_size
        self.face = FaceTracker(face_size=crop_size, log_path=log_path)
        self.pose = PoseTracker(stride=pose_stride, log_path=log_path) if pose_stride else None
        self.seconds = {"landmarks": 0.0, "cnn": 0.0}

    def close(self) -> None:
        """Release the landmarkers."""
        self.face.close()
        if self.pose is not None:
            self.pose.close()

    def __enter__(self) -> FrameFeaturizer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __call__(self, frames: np.ndarray, times: np.ndarray) -> dict[str, np.ndarray]:
        """frames (N, H, W, 3) uint8 RGB, times (N,) s -> the :class:`FrameBuffer` arrays of the chunk."""
        from femo.features.geometry import geometry_vector

        t0 = time.perf_counter()
        track = self.face.track(frames, times)
        n = len(frames)
        if self.pose is not None:
            pose = self.pose.track(frames)
            pose_arr, pose_found = pose.pose, pose.pose_found
        else:
            pose_arr, pose_found = np.zeros((n, 33, 4), np.float32), np.zeros(n, bool)
        geo = geometry_vector(track.landmarks, track.blendshapes, track.head_pose, pose_arr, pose_found,
                              track.face_found)
        t1 = time.perf_counter()
        emb = self._embed(track.faces, track.face_found)
        self.seconds["landmarks"] += t1 - t0
        self.seconds["cnn"] += time.perf_counter() - t1
        return {"face_found": track.face_found.copy(), "face_box": track.face_box.copy(), "geo": geo,
                "landmarks_found": track.face_found | pose_found, "emb": emb}

    @torch.inference_mode()
    def _embed(self, faces: np.ndarray, found: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 crops -> (N, D) float32 CNN features; zero rows where no face."""
        if self.encoder is None:
            return np.zeros((len(faces), 0), np.float32)
        out = np.zeros((len(faces), int(self.encoder.out_dim)), np.float32)
        if found.any():
            x = face_inputs(faces[found], self.model_size)
            device = next(self.encoder.parameters()).device
            out[found] = self.encoder(x.to(device)).float().cpu().numpy()
        return out
