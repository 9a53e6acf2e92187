"""Figures of the label-quality report: suspect rate per class, the suspects x suggested-class
table, annotator agreement of suspects vs the rest, and a thumbnail strip of the top suspects
(faces under the report's privacy setting). Each returns a matplotlib Figure styled by
:func:`femo.reports.figures.set_style`."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from femo.reports.figures import CMAP, image_grid, set_style

__all__ = ["suspect_rate_plot", "suggestion_heatmap", "agreement_plot", "suspect_faces", "thumbnail_strip"]


def suspect_rate_plot(per_class: pd.DataFrame, *, title: str = "Suspected label errors per class"):
    """Bars of ``suspect_rate`` per recorded class (the ``per_class`` table of a label audit),
    annotated with ``n_suspect / n_clips``."""
    import matplotlib.pyplot as plt

    set_style()
    fig, ax = plt.subplots(figsize=(7, 3.2), layout="constrained")
    rates = per_class["suspect_rate"].fillna(0.0)
    bars = ax.bar(per_class.index.astype(str), rates)
    for bar, (n_sus, n) in zip(bars, zip(per_class["n_suspect"], per_class["n_clips"])):
        ax.annotate(f"{n_sus}/{n}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                    va="bottom", fontsize=9)
    ax.set(ylabel="share of clips suspected", xlabel="recorded label", title=title,
           ylim=(0, max(0.1, float(rates.max()) * 1.25)))
    return fig


def suggestion_heatmap(suggestions: pd.DataFrame, *, title: str = "Suspects: recorded label vs suggested class"):
    """Annotated counts of suspects, rows = recorded label, columns = the class the model suggests."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    set_style()
    fig, ax = plt.subplots(figsize=(1.0 * suggestions.shape[1] + 2.5, 0.6 * suggestions.shape[0] + 1.6),
                           layout="constrained")
    sns.heatmap(suggestions, annot=True, fmt="d", cmap=CMAP, cbar=False, ax=ax, linewidths=0.5)
    ax.set(xlabel="suggested class", ylabel="recorded label", title=title)
    return fig


def agreement_plot(clips: pd.DataFrame, *, title: str = "Annotator agreement: suspects vs the rest"):
    """Distribution of ``majority_share`` (share of annotators who chose the top class) for suspect
    and other clips (the ``clips`` table of a label audit with votes)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    set_style()
    fig, ax = plt.subplots(figsize=(7, 3.2), layout="constrained")
    frame = clips.assign(group=np.where(clips["suspect"], "suspect", "not suspect"))
    sns.histplot(frame, x="majority_share", hue="group", stat="density", common_norm=False, bins=10,
                 binrange=(0, 1), element="step", ax=ax)
    ax.set(xlabel="majority share (1 = unanimous)", title=title)
    return fig


def suspect_faces(store: str | Path, clip_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """One face crop per clip (its middle frame with a face) from the feature store:
    (faces (N, S, S, 3) uint8, found (N,) bool; a clip without any face gives a black crop)."""
    from femo.data.store import read_clip

    faces, found = [], []
    for cid in clip_ids:
        arrays = read_clip(store, cid)
        hits = np.flatnonzero(arrays["face_found"])
        found.append(len(hits) > 0)
        faces.append(arrays["faces"][hits[len(hits) // 2]] if len(hits) else np.zeros_like(arrays["faces"][0]))
    if not faces:
        return np.zeros((0, 1, 1, 3), np.uint8), np.zeros(0, bool)
    return np.stack(faces), np.asarray(found)


def thumbnail_strip(faces: np.ndarray, titles: Sequence[str], *, privacy: str, ncols: int = 6):
    """The top suspects' face crops (N, S, S, 3) uint8 in a grid, shown under ``privacy`` (``none``
    | ``blur`` | ``landmarks`` drawn without points, i.e. grey: see
    :func:`femo.audit.plots_attribution.private_faces`), each titled (e.g. "happy -> sad")."""
    from femo.audit.plots_attribution import private_faces

    shown = private_faces(faces, privacy)
    fig, panels = image_grid(len(faces), ncols=ncols, titles=titles, cell=(1.9, 2.1))
    for ax, img in zip(panels, shown):
        ax.imshow(img)
    return fig
