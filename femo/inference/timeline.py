"""What a prediction over one video is: windows laid over its duration and a :class:`Timeline` of them.

* **Windows.** :func:`window_spans` lays windows of ``window`` seconds every ``hop`` seconds over
  ``[0, duration]``; the last one is moved back to end at ``duration`` so the tail is covered, and
  a video shorter than one window gets a single window over all of it.
* **Frames of a window.** A window is seen by the model as T frames at the centres of T equal
  segments (:func:`target_times`: the training sampler, :func:`femo.data.decode.sample_indices`,
  applied in time).
* **Timeline.** Per-window probabilities, face presence and box, audio presence and the waveform
  envelope; its JSON::

    {"file": str, "duration": float s, "face_id": int (only with ``--faces all``),
     "summary": {"label": str, "probabilities": {class: float}},
     "windows": [{"start": s, "end": s, "label": str, "probabilities": {class: float},
                  "face": {"found": fraction of the window's T frames with a face,
                           "box": [x0, y0, x1, y1] in [0, 1] frame coordinates (median over
                                  those frames) or null},
                  "audio": bool (the window has audio samples)}, ...]}

Summary rule: the mean of the window probabilities (every window weighs the same; windows without
a face or audio still count, through the model's missing-modality path); label = its argmax.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

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



@dataclass(frozen=True)
class Timeline:
    """Predictions over one video.

    spans (W, 2) window start/end seconds; probabilities (W, C) float (rows sum to 1); face_found
    (W,) fraction of each window's T frames with a face; face_box (W, 4) median box (NaN when no
    face); audio (W,) bool; envelope (K, 2) waveform min/max per 10 ms (None without audio);
    seconds: wall time per stage (decode, landmarks, cnn, audio, fusion).
    """

    file: str
    duration: float
    classes: tuple[str, ...]
    spans: np.ndarray
    probabilities: np.ndarray
    face_found: np.ndarray
    face_box: np.ndarray
    audio: np.ndarray
    envelope: np.ndarray | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    face_id: int | None = None

    @property
    def labels(self) -> list[str]:
        """Predicted class of each window."""
        return [self.classes[i] for i in self.probabilities.argmax(1)]

    @property
    def summary_probabilities(self) -> np.ndarray:
        """(C,) mean of the window probabilities."""
        return self.probabilities.mean(0)

    @property
    def label(self) -> str:
        """Clip-level label (argmax of :attr:`summary_probabilities`)."""
        return self.classes[int(self.summary_probabilities.argmax())]

    def to_frame(self) -> pd.DataFrame:
        """One row per window: [face_id,] start, end, label, p_<class>..., face_found, face_x0..face_y1, audio."""
        df = pd.DataFrame({"start": self.spans[:, 0], "end": self.spans[:, 1], "label": self.labels})
        if self.face_id is not None:
            df.insert(0, "face_id", self.face_id)
        for i, c in enumerate(self.classes):
            df[f"p_{c}"] = self.probabilities[:, i]
        df["face_found"] = self.face_found
        for i, k in enumerate(("face_x0", "face_y0", "face_x1", "face_y1")):
            df[k] = self.face_box[:, i]
        df["audio"] = self.audio.astype(bool)
        return df

    def to_json(self) -> dict:
        """The JSON object of the module docstring."""
        probs = lambda p: {c: round(float(v), 6) for c, v in zip(self.classes, p)}
        windows = []
        for j, (start, end) in enumerate(self.spans):
            box = self.face_box[j]
            windows.append({
                "start": round(float(start), 3), "end": round(float(end), 3), "label": self.labels[j],
                "probabilities": probs(self.probabilities[j]),
                "face": {"found": round(float(self.face_found[j]), 4),
                         "box": None if np.isnan(box).any() else [round(float(v), 4) for v in box]},
                "audio": bool(self.audio[j])})
        head = {"file": self.file, "duration": round(float(self.duration), 3)}
        if self.face_id is not None:
            head["face_id"] = self.face_id
        return {**head,
                "summary": {"label": self.label, "probabilities": probs(self.summary_probabilities)},
                "windows": windows}
