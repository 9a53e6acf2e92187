"""Figures of the modality-ablation report (matplotlib/seaborn, colour-blind-safe palettes).

Each function returns a matplotlib Figure; saving is the caller's (``femo.reports.figures.save_figure``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

#: Okabe-Ito colours per modality (colour-blind safe), shared by every ablation figure.
MODALITY_COLOURS: dict[str, str] = {"face": "#0072B2", "landmarks": "#009E73", "audio": "#D55E00"}


def _style():
    import matplotlib.pyplot as plt

    from femo.reports.figures import set_style

    set_style()
    return plt


def plot_subset_uar(table: pd.DataFrame, *, chance: float | None = None, title: str = "UAR per modality subset"):
    """Horizontal bars of UAR per subset with interval whiskers.

    table: columns ``subset, uar, uar_low, uar_high`` (fractions). chance: drawn as a dashed line.
    """
    plt = _style()
    t = table.sort_values("uar")
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(t) + 1.2), layout="constrained")
    y = np.arange(len(t))
    err = np.vstack([t["uar"] - t["uar_low"], t["uar_high"] - t["uar"]]).clip(min=0)
    colours = ["#555555" if s == "fused" else "#56B4E9" for s in t["subset"]]
    ax.barh(y, t["uar"], xerr=err, color=colours, capsize=3, ecolor="#222222")
    ax.set_yticks(y, t["subset"])
    if chance is not None:
        ax.axvline(chance, ls="--", color="0.3", label=f"chance ({chance:.2f})")
        ax.legend(loc="lower right")
    ax.set(xlim=(0, 1), xlabel="UAR (95% subject-bootstrap interval)", title=title)
    return fig


def plot_shapley(frame: pd.DataFrame, *, value: str = "shapley", title: str = "Shapley contribution to UAR"):
    """Heatmap of modality contributions per slice: ``frame`` has ``slice, modality`` and ``value``.

    Values are UAR points (``shapley``) or fractions (``share``); a diverging colour-blind-safe map
    centred on 0 shows negative contributions. With ``n_clips`` / ``judged`` columns (from
    :func:`femo.audit.ablation_slices.slice_shapley`) each row label carries its clip count and
    rows too small to judge are greyed out with the words "too small to judge".
    """
    import seaborn as sns
    from matplotlib.patches import Rectangle

    plt = _style()
    order = list(dict.fromkeys(frame["slice"]))
    grid = frame.pivot(index="slice", columns="modality", values=value).reindex(order)
    grid = grid[[m for m in MODALITY_COLOURS if m in grid.columns]]
    firsts = frame.drop_duplicates("slice").set_index("slice").reindex(order)
    judged = firsts["judged"].astype(bool) if "judged" in firsts else pd.Series(True, index=order)
    scale = 100 if value == "shapley" else 1
    fig, ax = plt.subplots(figsize=(6.0, 0.42 * len(grid) + 1.4), layout="constrained")
    shown = grid * scale
    lim = float(np.nanmax(np.abs(shown.to_numpy()))) if shown.notna().any().any() else 1.0
    sns.heatmap(shown, annot=True, fmt=".1f" if scale == 100 else ".2f", cmap="PuOr_r", center=0,
                vmin=-(lim or 1.0), vmax=lim or 1.0, ax=ax,
                cbar_kws={"label": "UAR points" if scale == 100 else "share"})
    for i, name in enumerate(order):
        if not judged[name]:
            ax.add_patch(Rectangle((0, i), grid.shape[1], 1, color="0.88", zorder=2))
            ax.text(grid.shape[1] / 2, i + 0.5, "too small to judge", ha="center", va="center",
                    color="0.35", fontsize=9, zorder=3)
    if "n_clips" in firsts:
        ax.set_yticks(np.arange(len(order)) + 0.5,
                      [f"{s} (n={int(n)})" for s, n in zip(order, firsts["n_clips"])], rotation=0)
    ax.set(xlabel="", ylabel="", title=title)
    return fig


def plot_gains(gains: pd.DataFrame, *, title: str = "What each modality adds to the fused model"):
    """Forest plot: per slice, UAR(all) - UAR(all but modality) with its interval, in UAR points.

    gains: columns ``slice, modality, gain, low, high`` (fractions).
    """
    plt = _style()
    slices = list(dict.fromkeys(gains["slice"]))
    mods = [m for m in MODALITY_COLOURS if m in set(gains["modality"])]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(slices) + 1.4), layout="constrained")
    offsets = np.linspace(-0.25, 0.25, len(mods))
    for off, m in zip(offsets, mods):
        part = gains[gains["modality"] == m].set_index("slice").reindex(slices)
        y = np.arange(len(slices)) + off
        err = np.vstack([part["gain"] - part["low"], part["high"] - part["gain"]]).clip(min=0) * 100
        ax.errorbar(part["gain"] * 100, y, xerr=err, fmt="o", color=MODALITY_COLOURS[m], label=m, capsize=2)
    ax.axvline(0, color="0.3", lw=1)
    ax.set_yticks(np.arange(len(slices)), slices)
    ax.invert_yaxis()
    ax.set(xlabel="UAR points added (95% subject-bootstrap interval)", title=title)
    ax.legend(loc="best", fontsize=9)
    return fig
