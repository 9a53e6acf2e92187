"""Files ``femo predict`` writes from a :class:`femo.inference.timeline.Timeline`: JSON, CSV, a PNG plot.

JSON: ``Timeline.to_json`` of one video (or a list of them). CSV: one row per window
(``Timeline.to_frame``) with a ``file`` column. Plot: stacked class probabilities above the
audio waveform.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from femo.inference.timeline import ENVELOPE_RATE, Timeline

#: Okabe-Ito colour-blind-safe palette (black last, used only beyond seven classes).
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")


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
