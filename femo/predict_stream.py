"""The streaming loop behind :meth:`femo.predict.Predictor.timeline` (layout in :mod:`femo.timeline`).

Frames are decoded once; every ``chunk`` kept frames are featurized, the windows whose T target
times are all covered are assembled into sample dicts and sent through the head in one batch,
and buffered frame features older than the next window are released.
"""
from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch

from femo.data.decode import MediaError, iter_frames, probe
from femo.predict_output import Timeline
from femo.timeline import AudioStream, FrameBuffer, target_times, window_spans

STAGES = ("decode", "landmarks", "cnn", "audio", "fusion")


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
        sample = {"face_emb": torch.from_numpy(a["emb"][idx]), "face_mask": torch.from_numpy(found.copy()),
                  "landmarks": torch.from_numpy(a["geo"][idx]),
                  "landmarks_mask": torch.from_numpy(a["landmarks_found"][idx].copy())}
        sample.update(self._audio(start, end))
        return sample

    def _audio(self, start: float, end: float) -> dict:
        """The window's audio inputs, exactly as :class:`femo.data.dataset.FeatureDataset` builds them."""
        from femo.data.dataset import audio_inputs
        from femo.features.audio import audio_features

        t0 = time.perf_counter()
        frames = self.data.audio_frames
        seg = self.audio.segment(start, end) if self.audio is not None else np.zeros(0, np.float32)
        present = len(seg) > 0
        mel, pro = np.zeros((1, 64, frames), np.float32), np.zeros((frames, 4), np.float32)
        if present and "audio" in self.p.model.head.modalities:
            feats = audio_features(seg, self.audio_config)
            mel, pro = audio_inputs(feats["logmel"], feats["prosody"], frames)
        self.out["audio"].append(present)
        self.seconds["audio"] += time.perf_counter() - t0
        return {"audio": torch.from_numpy(mel), "prosody": torch.from_numpy(pro),
                "audio_mask": torch.tensor(present)}

    def _predict(self, samples: list[dict]) -> None:
        batch = {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
        self.out["probs"].append(self.p.probabilities(batch))
        self.seconds["fusion"] += self.p.last_fusion_seconds


def _frames_with_time(path: Path, every: int, max_side, seconds: dict):
    """iter_frames, with the time spent decoding added to ``seconds['decode']``."""
    it = iter_frames(path, every=every, max_side=max_side)
    while True:
        t0 = time.perf_counter()
        item = next(it, None)
        seconds["decode"] += time.perf_counter() - t0
        if item is None:
            return
        yield item


def run_timeline(predictor, path: Path, *, window: float, hop: float) -> Timeline:
    """Stream ``path`` through ``predictor``; see the module docstring."""
    info = probe(path)
    if info.kind not in ("video", "frames"):
        raise MediaError(f"{path}: {info.kind} file, not a video; femo predict needs frames")
    if info.duration <= 0:
        raise MediaError(f"{path}: zero-length video (duration {info.duration} s)")
    data = predictor.model.data
    spans = window_spans(info.duration, window, hop)
    step = min(window, info.duration) / data.num_frames
    every = max(1, int(info.fps * step + 1e-6)) if info.fps else 1
    seconds = dict.fromkeys(STAGES, 0.0)
    featurizer = predictor.featurizer()
    before = dict(featurizer.seconds)
    with ExitStack() as stack:
        audio = stack.enter_context(AudioStream(path, sample_rate=data.sample_rate)) if info.has_audio else None
        windows = _Windows(predictor, spans, audio)
        buffer = _stream(path, featurizer, windows, every, predictor, seconds)
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


def _stream(path: Path, featurizer, windows: _Windows, every: int, predictor, seconds: dict) -> FrameBuffer:
    """Decode, featurize chunk by chunk and emit the windows that are ready; returns the buffer."""
    buffer = FrameBuffer()
    frames, times = [], []
    max_side = predictor.model.extraction.get("max_side")

    def flush() -> None:
        buffer.extend(np.array(times, np.float64), featurizer(np.stack(frames), np.array(times)))
        frames.clear()
        times.clear()
        windows.emit(buffer, final=False)

    for t, rgb in _frames_with_time(path, every, max_side, seconds):
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
