"""What ``femo predict`` returns: :class:`Timeline` (per-window probabilities) and its JSON/CSV/plot.

JSON of one video (``Timeline.to_json``)::

    {"file": str, "duration": float s,
     "summary": {"label": str, "probabilities": {class: float}},
     "windows": [{"start": s, "end": s, "label": str, "probabilities": {class: float},
                  "face": {"found": fraction of the window's T frames with a face,
                           "box": [x0, y0, x1, y1] in [0, 1] frame coordinates (median over
                                  those frames) or null},
                  "audio": bool (the window has audio samples)}, ...]}

Summary rule: the mean of the window probabilities (every window weighs the same; windows without
a face or audio still count, through the model's missing-modality path); label = its argmax.
CSV: one row per window (``Timeline.to_frame``) with a ``file`` column.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

#: Okabe-Ito colour-blind-safe palette (black last, used only beyond seven classes).
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")


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
        """One row per window: start, end, label, p_<class>..., face_found, face_x0..face_y1, audio."""
        df = pd.DataFrame({"start": self.spans[:, 0], "end": self.spans[:, 1], "label": self.labels})
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
        return {"file": self.file, "duration": round(float(self.duration), 3),
                "summary": {"label": self.label, "probabilities": probs(self.summary_probabilities)},
                "windows": windows}


def write_results(timelines: list[Timeline], out: str | Path, *, as_list: bool | None = None) -> Path:
    """Write ``.json`` or ``.csv`` (one row per window, with a ``file`` column).

    JSON holds one object, or a list of them when ``as_list`` (default: more than one timeline).
    """
    import json

    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".json", ".csv"):
        raise ValueError(f"{out}: --out must end in .json or .csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".json":
        data = [t.to_json() for t in timelines]
        as_list = len(data) != 1 if as_list is None else as_list
        out.write_text(json.dumps(data if as_list else data[0], indent=2))
    else:
        frames = [t.to_frame().assign(file=t.file) for t in timelines]
        table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["file", "start", "end"])
        cols = ["file"] + [c for c in table.columns if c != "file"]
        table[cols].to_csv(out, index=False)
    return out


def plot_timeline(timeline: Timeline, out: str | Path) -> Path:
    """Stacked class probabilities over time (window centres) above the audio waveform; PNG to ``out``.

    Windows where less than half of the frames had a face are marked by a grey bar under the
    probabilities; without an audio track the lower panel says so.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = list(OKABE_ITO) if len(timeline.classes) <= len(OKABE_ITO) else None
    if colours is None:
        import seaborn as sns

        colours = sns.color_palette("colorblind", len(timeline.classes))
    centres = timeline.spans.mean(1)
    # window centres, stretched to the first start and the last end so the whole clip is covered
    x = np.concatenate([timeline.spans[:1, 0], centres, timeline.spans[-1:, 1]])
    y = np.concatenate([timeline.probabilities[:1], timeline.probabilities, timeline.probabilities[-1:]])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 5), sharex=True, height_ratios=[3, 1],
                                      constrained_layout=True)
    top.stackplot(x, y.T, labels=timeline.classes, colors=colours[: len(timeline.classes)], step="mid")
    no_face = timeline.face_found < 0.5
    if no_face.any():
        top.scatter(centres[no_face], np.full(no_face.sum(), -0.04), marker="s", s=12, color="0.5",
                    clip_on=False, label="no face")
    top.set(ylim=(0, 1), ylabel="probability", xlim=(0, max(timeline.duration, 1e-3)),
            title=f"{Path(timeline.file).name}: {timeline.label}")
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    if timeline.envelope is not None and len(timeline.envelope):
        from femo.timeline import ENVELOPE_RATE

        t = np.arange(len(timeline.envelope)) / ENVELOPE_RATE
        bottom.fill_between(t, timeline.envelope[:, 0], timeline.envelope[:, 1], color="0.3", linewidth=0)
    else:
        bottom.text(0.5, 0.5, "no audio track", ha="center", va="center", transform=bottom.transAxes)
    bottom.set(xlabel="time (s)", ylabel="audio", yticks=[])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
