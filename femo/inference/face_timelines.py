"""One timeline per face id over one video: the streaming loop of ``femo predict --faces all``.

The video is decoded once as in :mod:`femo.inference.stream` (the frames the windows need, in a
second thread), and :class:`femo.inference.faces.MultiFaceFeaturizer` gives each chunk's arrays
per face id. Every id has its own :class:`~femo.inference.stream.FrameBuffer` (frames before the
id first appeared, and frames where it is absent, count as frames without a face) and its own
window emitter (its ready windows go through the head in one batch); a window's audio features
are computed once and shared by every face (the audio track is the same for all).

A face's timeline keeps the windows in which it was found in at least one of the T frames
(``Timeline.face_id`` set, ``face_found`` its fraction of the window's frames); a video where no
face is ever found gives no timeline.
"""
from __future__ import annotations

import dataclasses
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from femo.inference.frames import needed_times
from femo.inference.stream import STAGES, AudioStream, FrameBuffer, _frames_with_time, _Windows, check_video
from femo.inference.timeline import Timeline, target_times, window_spans


class _SharedAudioWindows(_Windows):
    """:class:`~femo.inference.stream._Windows` whose audio inputs come from a cache shared by all faces."""

    def __init__(self, predictor, spans: np.ndarray, audio, cache: dict, first: int) -> None:
        super().__init__(predictor, spans, audio)
        self.cache, self.next, self.first = cache, first, first

    def _audio(self, start: float, end: float) -> dict:
        key = (round(float(start), 6), round(float(end), 6))
        if key not in self.cache:
            self.cache[key] = (super()._audio(start, end), self.out["audio"].pop())
        inputs, present = self.cache[key]
        self.out["audio"].append(present)
        return inputs


class _Faces:
    """The per-id buffers and emitters of one video."""

    def __init__(self, predictor, spans: np.ndarray, audio: AudioStream | None) -> None:
        self.p, self.spans, self.audio = predictor, spans, audio
        self.shared = FrameBuffer()  # times of the kept frames still needed, for ids appearing later
        self.buffers: dict[int, FrameBuffer] = {}
        self.windows: dict[int, _SharedAudioWindows] = {}
        self.cache: dict = {}
        self.done = 0  # windows already emitted (the same for every id)
        self.last = self.spans[:, 1].copy()  # each window's last target time
        for w, (s, e) in enumerate(spans):
            self.last[w] = target_times(s, e, predictor.model.data.num_frames)[-1]

    def add(self, times: np.ndarray, per_id: dict[int, dict[str, np.ndarray]]) -> None:
        """Append one chunk (times (N,) s, arrays per id present) and emit the windows now complete."""
        n = len(times)
        for i, arrays in per_id.items():
            if i not in self.buffers:
                back = len(self.shared.times)
                self.buffers[i] = FrameBuffer(self.shared.times.copy(), {k: _absent(v, back) for k, v in arrays.items()})
                self.windows[i] = _SharedAudioWindows(self.p, self.spans, self.audio, self.cache, self.done)
        template = next(iter(self.buffers.values())).arrays if self.buffers else {}
        for i, buf in self.buffers.items():
            buf.extend(times, per_id[i] if i in per_id else {k: _absent(v, n) for k, v in template.items()})
        self.shared.extend(times, {})
        self._emit(final=False)

    def _emit(self, *, final: bool) -> None:
        t_last = self.shared.times[-1] if len(self.shared.times) else -np.inf
        for i, w in self.windows.items():
            w.emit(self.buffers[i], final=final)
        self.done = len(self.spans) if final else int(np.sum(self.last <= t_last))
        if self.done < len(self.spans):
            start = self.spans[self.done][0]
            self.shared.drop_before(start)
            self.cache = {k: v for k, v in self.cache.items() if k[0] >= start - 1e-6}
            for w in self.windows.values():
                w.cache = self.cache

    def finish(self, path: Path, duration: float, seconds: dict) -> list[Timeline]:
        """Emit what is left and build one timeline per id (windows where the face was found)."""
        self._emit(final=True)
        out = []
        for i in sorted(self.windows):
            w = self.windows[i]
            o, sl = w.out, slice(w.first, w.first + len(w.out["found"]))
            found = np.array(o["found"])
            keep = found > 0
            if not keep.any():
                continue
            out.append(Timeline(
                file=str(path), duration=duration, classes=self.p.classes, spans=self.spans[sl][keep],
                probabilities=np.concatenate(o["probs"])[keep], face_found=found[keep],
                face_box=np.array(o["box"], np.float64).reshape(-1, 4)[keep], audio=np.array(o["audio"], bool)[keep],
                seconds=seconds, face_id=i))
        return out


def _absent(like: np.ndarray, n: int) -> np.ndarray:
    """``n`` rows of zeros (False) shaped like the rows of ``like``: frames without this face."""
    return np.zeros((n, *like.shape[1:]), like.dtype)


def run_face_timelines(predictor, path: Path, *, window: float, hop: float, max_faces: int) -> list[Timeline]:
    """Stream ``path`` and return one :class:`Timeline` per face id, ids in order; see the module docstring."""
    info = check_video(path)
    data = predictor.model.data
    spans = window_spans(info.duration, window, hop)
    seconds = dict.fromkeys(STAGES, 0.0)
    featurizer = predictor.face_featurizer(max_faces)
    featurizer.begin()
    before = dict(featurizer.seconds)
    max_side = predictor.model.extraction.get("max_side")
    last = -np.inf
    with ExitStack() as stack:
        audio = stack.enter_context(AudioStream(path, sample_rate=data.sample_rate)) if info.has_audio else None
        faces = _Faces(predictor, spans, audio)
        frames, times = [], []
        for t, rgb in _frames_with_time(path, 1, max_side, seconds, needed_times(spans, data.num_frames)):
            if times and t <= times[-1]:
                continue
            frames.append(rgb)
            times.append(t)
            if len(frames) == predictor.chunk:
                faces.add(np.array(times), featurizer(np.stack(frames), np.array(times)))
                last = times[-1]
                frames, times = [], []
        if frames:
            faces.add(np.array(times), featurizer(np.stack(frames), np.array(times)))
            last = times[-1]
        if last == -np.inf:
            from femo.data.decode import MediaError

            raise MediaError(f"{path}: no decodable video frames")
        for k in ("landmarks", "cnn"):
            seconds[k] = featurizer.seconds[k] - before[k]
        timelines = faces.finish(path, float(info.duration), seconds)
        if audio is not None:  # the rest of the track, for the plot: after the last windows took theirs
            audio.segment(info.duration, info.duration)
            timelines = [dataclasses.replace(t, envelope=audio.envelope()) for t in timelines]
    for w in faces.windows.values():
        for k in ("audio", "fusion"):
            seconds[k] += w.seconds[k]
    return timelines
