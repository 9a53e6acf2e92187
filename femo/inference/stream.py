"""The streaming loop behind :meth:`femo.inference.predictor.Predictor.timeline`.

A video is read once, front to back, and never held in memory as a whole:

* **Frames.** The video is decoded once, in a second thread a chunk ahead; only the frame
  nearest each window target time is converted and kept (:func:`femo.inference.frames.needed_times`:
  8 per second for T = 16 in 2 s windows on a 0.5 s hop), and each window
  (:mod:`femo.inference.timeline`) takes the kept frame nearest each of its T target times.
  Overlapping windows share frames.
* **Per-frame features** (:class:`femo.inference.tracking.StreamFeaturizer`): kept frames go, in
  chunks of ``chunk`` frames, through a face tracker whose VIDEO-mode state and main face carry
  over from chunk to chunk, the pose tracker (only for models using landmarks; in a second
  thread), the geometry vector, and the frame CNN (onnxruntime) on the aligned crops of frames
  with a face, batched per chunk. Only these vectors are buffered (:class:`FrameBuffer`, not
  pictures), and frames older than the next window are dropped.
* **Reference path** (``Predictor(reference=True)``, what the fast path is tested against): every
  k-th frame (k = fps x window / T), :class:`FrameFeaturizer` with the extraction trackers
  restarted at every chunk, eager PyTorch.
* **Audio** (:class:`AudioStream`): decoded and resampled chunk by chunk; a window takes its own
  samples and gets its features exactly as a training clip does (0 dB = the window's maximum);
  runs whose audio encoder reads utterance functionals (``audio_input`` ``functionals`` or
  ``both``) get the set of their width computed on the window's samples, as extraction computes
  it on a clip (openSMILE costs ~0.06-0.5 s per window on this CPU: RTF 0.1-1 for eGeMAPS).
* **Windows**: after each chunk, the windows whose T target times are all covered are assembled
  into sample dicts and sent through the head in one batch.
"""
from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import torch

from femo.data.dataset import face_inputs
from femo.data.decode import MediaError, audio_chunks, iter_frames, probe
from femo.inference.frames import needed_times
from femo.inference.timeline import ENVELOPE_RATE, Timeline, target_times, window_spans

STAGES = ("decode", "landmarks", "cnn", "audio", "fusion")


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
        self._chunks = audio_chunks(self._container, stream, sample_rate, self.path)
        self._buf, self._buf_start, self._total, self._done = np.zeros(0, np.float32), 0, 0, False
        self._env_rest = np.zeros(0, np.float32)
        self._env: list[np.ndarray] = []

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
    wall time per stage (``landmarks``, ``cnn``). face_source: what the CNN reads
    (:func:`femo.features.embed.face_inputs_of`: ``crop``, ``frame`` or ``fallback``, as the run's
    embeddings were made); the chunk's ``emb_found`` says which rows hold a face input. Use as a
    context manager.
    """

    def __init__(self, *, frame_encoder: torch.nn.Module | None, crop_size: int, model_size: int,
                 pose_stride: int | None, log_path: str | Path | None = None, face_source: str = "crop") -> None:
        from femo.features.face import FaceTracker
        from femo.features.pose import PoseTracker

        self.encoder, self.crop_size, self.model_size = frame_encoder, crop_size, model_size
        self.face_source = face_source
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
        faces, emb_found = self.face_inputs(track.faces, track.face_found, frames)
        emb = self._embed(faces, emb_found)
        self.seconds["landmarks"] += t1 - t0
        self.seconds["cnn"] += time.perf_counter() - t1
        return {"face_found": track.face_found.copy(), "face_box": track.face_box.copy(), "geo": geo,
                "landmarks_found": track.face_found | pose_found, "emb": emb, "emb_found": emb_found}

    def face_inputs(self, crops: np.ndarray, found: np.ndarray, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(CNN inputs (N, S, S, 3), which rows are face inputs (N,)) for the run's face source."""
        from femo.features.embed import face_inputs_of

        return face_inputs_of(self.face_source, crops, found, frames, self.crop_size)

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


class _Windows:
    """Assembles windows into batches and collects their outputs."""

    def __init__(self, predictor, spans: np.ndarray, audio: AudioStream | None) -> None:
        self.p, self.spans, self.audio = predictor, spans, audio
        self.data = predictor.model.data
        self.next = 0
        self.out: dict[str, list] = {"probs": [], "found": [], "box": [], "audio": []}
        self.seconds = {"audio": 0.0, "fusion": 0.0}
        from femo.features.audio import AudioConfig

        self.audio_config = AudioConfig(sample_rate=self.data.sample_rate,
                                        pitch=predictor.model.extraction.get("pitch", "yin"))
        from femo.features.functionals import set_parts
        from femo.inference.window_audio import functionals_set

        self.functionals = functionals_set(predictor.model.head.config)
        # the librosa statistics need librosa's MFCC: then the window's features are computed once, by librosa
        self.librosa_stats = self.functionals is not None and "librosa" in set_parts(self.functionals)

    def emit(self, buffer: FrameBuffer, *, final: bool) -> None:
        """Predict every pending window whose frames are all in ``buffer`` (all of them if ``final``)."""
        samples = []
        t_last = buffer.times[-1] if len(buffer.times) else -np.inf
        while self.next < len(self.spans):
            start, end = self.spans[self.next]
            targets = target_times(start, end, self.data.num_frames)
            if not final and targets[-1] > t_last:
                break
            samples.append(self._sample(buffer, buffer.nearest(targets), start, end))
            self.next += 1
        if samples:
            self._predict(samples)
        if self.next < len(self.spans):
            buffer.drop_before(self.spans[self.next][0])

    def _sample(self, buffer: FrameBuffer, idx: np.ndarray, start: float, end: float) -> dict:
        a = buffer.arrays
        found = a["face_found"][idx]
        box = np.median(a["face_box"][idx][found], axis=0) if found.any() else np.full(4, np.nan)
        self.out["found"].append(float(found.mean()))
        self.out["box"].append(box)
        emb_found = a["emb_found"][idx] if "emb_found" in a else found
        sample = {"face_emb": torch.from_numpy(a["emb"][idx]), "face_mask": torch.from_numpy(emb_found.copy()),
                  "landmarks": torch.from_numpy(a["geo"][idx]),
                  "landmarks_mask": torch.from_numpy(a["landmarks_found"][idx].copy())}
        sample.update(self._audio(start, end))
        return sample

    def _audio(self, start: float, end: float) -> dict:
        """The window's audio inputs, exactly as :class:`femo.data.dataset.FeatureDataset` builds them."""
        from femo.data.dataset import audio_inputs
        from femo.features.audio import audio_features
        from femo.inference.window_audio import window_audio_features, window_functionals

        t0 = time.perf_counter()
        frames = self.data.audio_frames
        seg = self.audio.segment(start, end) if self.audio is not None else np.zeros(0, np.float32)
        present = len(seg) > 0
        mel, pro = np.zeros((1, 64, frames), np.float32), np.zeros((frames, 4), np.float32)
        feats = None
        if present and "audio" in self.p.model.head.modalities:
            # the fast path skips librosa (same features: femo.inference.window_audio); the reference keeps it
            fast = not (self.p.reference or self.librosa_stats)
            feats = window_audio_features(seg, self.audio_config) if fast else None
            feats = feats if feats is not None else audio_features(seg, self.audio_config)
            mel, pro = audio_inputs(feats["logmel"], feats["prosody"], frames)
        self.out["audio"].append(present)
        inputs = {"audio": torch.from_numpy(mel), "prosody": torch.from_numpy(pro), "audio_mask": torch.tensor(present)}
        if self.functionals is not None:
            inputs["functionals"] = torch.from_numpy(window_functionals(seg, self.functionals, self.audio_config,
                                                                        features=feats))
        self.seconds["audio"] += time.perf_counter() - t0
        return inputs

    def _predict(self, samples: list[dict]) -> None:
        batch = {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
        self.out["probs"].append(self.p.probabilities(batch))
        self.seconds["fusion"] += self.p.last_fusion_seconds


def _frames_with_time(path: Path, every: int, max_side, seconds: dict, needed: np.ndarray | None = None):
    """(time, RGB) frames, with the time spent waiting for them added to ``seconds['decode']``:
    every ``every``-th frame, or (``needed`` times given) the frame nearest each needed time,
    decoded ahead in a second thread (:mod:`femo.inference.frames`)."""
    from femo.inference.frames import iter_needed_frames, prefetch

    it = (iter_frames(path, every=every, max_side=max_side) if needed is None
          else prefetch(iter_needed_frames(path, needed, max_side=max_side), 16))
    while True:
        t0 = time.perf_counter()
        item = next(it, None)
        seconds["decode"] += time.perf_counter() - t0
        if item is None:
            return
        yield item


def check_video(path: Path):
    """:func:`femo.data.decode.probe` of ``path``; MediaError unless it is a video (or frame folder)
    with a positive duration."""
    info = probe(path)
    if info.kind not in ("video", "frames"):
        raise MediaError(f"{path}: {info.kind} file, not a video; femo predict needs frames")
    if info.duration <= 0:
        raise MediaError(f"{path}: zero-length video (duration {info.duration} s)")
    return info


def run_timeline(predictor, path: Path, *, window: float, hop: float, progress=None) -> Timeline:
    """Stream ``path`` through ``predictor``; see the module docstring. ``progress``: called with
    the video time (s) reached after each chunk."""
    info = check_video(path)
    data = predictor.model.data
    spans = window_spans(info.duration, window, hop)
    step = min(window, info.duration) / data.num_frames
    every = max(1, int(info.fps * step + 1e-6)) if info.fps else 1
    seconds = dict.fromkeys(STAGES, 0.0)
    featurizer = predictor.featurizer()
    if not predictor.reference:
        featurizer.begin()  # one tracking state per video
    before = dict(featurizer.seconds)
    with ExitStack() as stack:
        audio = stack.enter_context(AudioStream(path, sample_rate=data.sample_rate)) if info.has_audio else None
        windows = _Windows(predictor, spans, audio)
        buffer = _stream(path, featurizer, windows, every, predictor, seconds, progress)
        if not len(buffer.times):
            raise MediaError(f"{path}: no decodable video frames")
        windows.emit(buffer, final=True)
        envelope = _finish_envelope(audio, info.duration)
    last = float(buffer.times[-1]) if len(buffer.times) else 0.0
    if last < info.duration - max(1.0, 2 * every / max(info.fps, 1e-6)):
        raise MediaError(f"{path}: video stream ends at {last:.2f} s but the file says {info.duration:.2f} s "
                         "(truncated or damaged file)")
    for k in ("landmarks", "cnn"):
        seconds[k] = featurizer.seconds[k] - before[k]
    seconds.update(windows.seconds)
    o = windows.out
    return Timeline(file=str(path), duration=float(info.duration), classes=predictor.classes, spans=spans,
                    probabilities=np.concatenate(o["probs"]), face_found=np.array(o["found"]),
                    face_box=np.array(o["box"], np.float64).reshape(-1, 4), audio=np.array(o["audio"], bool),
                    envelope=envelope, seconds=seconds)


def _stream(path: Path, featurizer, windows: _Windows, every: int, predictor, seconds: dict,
            progress=None) -> FrameBuffer:
    """Decode, featurize chunk by chunk and emit the windows that are ready; returns the buffer."""
    buffer = FrameBuffer()
    frames, times = [], []
    max_side = predictor.model.extraction.get("max_side")

    def flush() -> None:
        buffer.extend(np.array(times, np.float64), featurizer(np.stack(frames), np.array(times)))
        frames.clear()
        times.clear()
        windows.emit(buffer, final=False)
        if progress is not None:
            progress(float(buffer.times[-1]))

    needed = None if predictor.reference else needed_times(windows.spans, predictor.model.data.num_frames)
    for t, rgb in _frames_with_time(path, every, max_side, seconds, needed):
        if times and t <= times[-1]:
            continue  # non-increasing timestamps (broken files) would confuse the tracker
        frames.append(rgb)
        times.append(t)
        if len(frames) == predictor.chunk:
            flush()
    if frames:
        flush()
    return buffer


def _finish_envelope(audio: AudioStream | None, duration: float) -> np.ndarray | None:
    """Decode the audio up to ``duration`` (for the plot) and return its envelope."""
    if audio is None:
        return None
    audio.segment(duration, duration)
    return audio.envelope()
