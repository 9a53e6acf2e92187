"""Figures of the bias audit: a forest plot of per-group UAR, a per-group recall heatmap and a
per-modality gap plot. Each takes tables from :func:`femo.audit.fairness.audit` and returns a
matplotlib Figure, styled by :func:`femo.reports.figures.set_style` (colour-blind-safe palette)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from femo.reports.figures import CMAP, set_style

__all__ = ["forest_plot", "recall_heatmap", "modality_gap_plot"]


def _row_labels(groups: pd.DataFrame) -> list[str]:
    """"attribute: group" with a marker on groups too small to judge."""
    return [f"{a}: {g}" + ("" if ok else "  (too few subjects)")
            for a, g, ok in zip(groups["attribute"], groups["group"], groups["assessable"])]


def forest_plot(groups: pd.DataFrame, *, overall: float | None = None, title: str = "UAR per group"):
    """Per-group UAR (dot) with its interval (line), one row per (attribute, group).

    groups: the ``groups`` table of an audit (needs uar, uar_low, uar_high, assessable).
    Assessable groups are filled dots; groups too small to judge are hollow grey and marked.
    overall: a dashed reference line (e.g. the UAR on all clips).
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    set_style()
    colors = sns.color_palette()
    y = np.arange(len(groups))[::-1]
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(groups) + 1.4), layout="constrained")
    for attribute_index, attribute in enumerate(groups["attribute"].unique()):
        rows = np.flatnonzero((groups["attribute"] == attribute).to_numpy())
        color = colors[attribute_index % len(colors)]
        for i in rows:
            r = groups.iloc[i]
            ok = bool(r["assessable"])
            low, high = r.get("uar_low", np.nan), r.get("uar_high", np.nan)
            ax.plot([low, high], [y[i], y[i]], color=color if ok else "0.6", lw=2)
            ax.plot(r["uar"], y[i], "o", ms=7, mec=color if ok else "0.5",
                    mfc=color if ok else "white", mew=1.5)
        if rows[-1] < len(groups) - 1:
            ax.axhline(y[rows[-1]] - 0.5, color="0.8", lw=0.8)
    if overall is not None:
        ax.axvline(overall, color="0.3", ls="--", lw=1)
        title = f"{title} (dashed line: all clips, {overall:.2f})"
    ax.set_yticks(y, _row_labels(groups))
    ax.set(xlabel="UAR (unweighted average recall) with interval", xlim=(0, 1), title=title)
    return fig


def recall_heatmap(groups: pd.DataFrame, classes: Sequence[str], *, title: str = "Recall per group and emotion"):
    """Heatmap of per-emotion recall (true positive rate), groups as rows, emotions as columns,
    annotated; empty cells where a group has no clip of that emotion."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    set_style()
    table = groups[[f"recall_{c}" for c in classes]].to_numpy(float)
    frame = pd.DataFrame(table, index=_row_labels(groups), columns=list(classes))
    fig, ax = plt.subplots(figsize=(0.8 * len(classes) + 4.5, 0.34 * len(groups) + 1.6), layout="constrained")
    sns.heatmap(frame, annot=True, fmt=".2f", vmin=0, vmax=1, cmap=CMAP, cbar_kws={"label": "recall"}, ax=ax,
                annot_kws={"fontsize": 8})
    ax.set(xlabel="true emotion", ylabel="", title=title)
    ax.tick_params(axis="x", rotation=30)
    return fig


def modality_gap_plot(modality_gaps: pd.DataFrame, *, title: str = "UAR gap (best - worst group) per modality"):
    """UAR gap with interval per attribute (rows), one colour per modality; attributes that
    could not be tested (fewer than two assessable groups) are left out."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    set_style()
    table = modality_gaps.dropna(subset=["gap"])
    if table.empty:
        fig, ax = plt.subplots(figsize=(7.0, 1.6), layout="constrained")
        ax.axis("off")
        ax.text(0.5, 0.5, "No attribute has two assessable groups: no per-modality gap to show.",
                ha="center", va="center")
        return fig
    attributes = list(dict.fromkeys(table["attribute"]))
    modalities = list(dict.fromkeys(table["modality"]))
    colors = sns.color_palette(n_colors=max(len(modalities), 1))
    fig, ax = plt.subplots(figsize=(7.0, 0.5 * len(attributes) * max(len(modalities), 1) / 2 + 1.6),
                           layout="constrained")
    offsets = np.linspace(-0.25, 0.25, len(modalities)) if len(modalities) > 1 else np.zeros(1)
    for k, modality in enumerate(modalities):
        part = table[table["modality"] == modality].set_index("attribute").reindex(attributes)
        y = np.arange(len(attributes))[::-1] + offsets[k]
        ax.errorbar(part["gap"], y, xerr=[part["gap"] - part["gap_low"], part["gap_high"] - part["gap"]],
                    fmt="o", color=colors[k], label=modality, capsize=3)
    ax.axvline(0, color="0.3", lw=1)
    ax.set_yticks(np.arange(len(attributes))[::-1], attributes)
    ax.set(xlabel="UAR gap with interval", title=title)
    ax.legend(title="predictions", fontsize=9)
    return fig
