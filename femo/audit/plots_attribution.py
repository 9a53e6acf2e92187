"""Figures of the attribution report (colour-blind-safe maps), with a privacy switch for faces.

Privacy (:data:`PRIVACY_MODES`): ``none`` shows crops as they are, ``blur`` shows them under a
strong Gaussian blur (identity unreadable, the attribution overlay still placed on a face-shaped
image), ``landmarks`` replaces each crop by its landmark drawing on grey. ``auto``
(:func:`privacy_mode`) means ``blur`` for every dataset except the synthetic one.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

PRIVACY_MODES: tuple[str, ...] = ("none", "blur", "landmarks")
GROUP_COLOURS: dict[str, str] = {"blendshape": "#0072B2", "brows": "#E69F00", "eyes": "#56B4E9", "nose": "#F0E442",
                                 "mouth": "#D55E00", "jaw": "#009E73", "head": "#CC79A7", "body": "#999999",
                                 "face": "#777777", "flag": "#BBBBBB"}


def privacy_mode(requested: str, dataset: str) -> str:
    """Resolve ``auto`` (blur unless ``dataset`` is ``synthetic``); refuse unknown modes."""
    if requested == "auto":
        return "none" if dataset == "synthetic" else "blur"
    if requested not in PRIVACY_MODES:
        raise ValueError(f"unknown privacy mode {requested!r}; choose from {['auto', *PRIVACY_MODES]}")
    return requested


def _style():
    import matplotlib.pyplot as plt

    from femo.reports.figures import set_style

    set_style()
    return plt


def private_faces(faces: np.ndarray, mode: str, points: np.ndarray | None = None) -> np.ndarray:
    """(N, S, S, 3) uint8 crops as shown under privacy ``mode`` (points: (N, 478, 2) for ``landmarks``)."""
    if mode == "none":
        return faces
    if mode == "blur":
        import torch

        from femo.audit.attribution import blur_faces

        t = torch.as_tensor(faces).permute(0, 3, 1, 2).float() / 255.0
        out = blur_faces(t[:, None], sigma=faces.shape[1] / 8)[:, 0]
        return (out.permute(0, 2, 3, 1).numpy() * 255).clip(0, 255).astype(np.uint8)
    if mode == "landmarks":
        canvas = np.full_like(faces, 200)
        if points is not None:
            s = faces.shape[1]
            for img, pts in zip(canvas, points):
                xy = np.round(pts).astype(int)
                ok = (xy >= 0).all(1) & (xy < s).all(1)
                img[xy[ok, 1], xy[ok, 0]] = 40
        return canvas
    raise ValueError(f"unknown privacy mode {mode!r}; choose from {list(PRIVACY_MODES)}")


def plot_face_maps(faces: np.ndarray, maps: np.ndarray, *, titles: Sequence[str] | None = None,
                   privacy: str = "blur", points: np.ndarray | None = None, ncols: int = 4):
    """Attribution maps overlaid on face crops.

    faces: (N, S, S, 3) uint8; maps: (N, S, S) non-negative attribution (each panel scaled to its
    99th percentile); points: (N, 478, 2) pixel landmarks (for ``privacy="landmarks"``).
    """
    from femo.reports.figures import image_grid

    shown = private_faces(faces, privacy, points)
    fig, panels = image_grid(len(faces), ncols=ncols, titles=titles, cell=(2.6, 2.8))
    for i, ax in enumerate(panels):
        ax.imshow(shown[i])
        top = np.percentile(maps[i], 99) or 1.0
        ax.imshow(np.clip(maps[i] / top, 0, 1), cmap="inferno", alpha=0.55, vmin=0, vmax=1)
    return fig


def plot_frame_curves(curves: np.ndarray, *, labels: Sequence[str] | None = None,
                      title: str = "Which frames mattered"):
    """Per-frame importance curves (N, T) (shares of each clip's face attribution)."""
    plt = _style()
    fig, ax = plt.subplots(figsize=(7, 3.2), layout="constrained")
    labels = list(labels) if labels is not None else [f"clip {i}" for i in range(len(curves))]
    for c, lab in zip(curves, labels):
        ax.plot(np.arange(len(c)), c, marker="o", ms=3, label=lab)
    ax.set(xlabel="sampled frame", ylabel="share of face attribution", title=title)
    if len(curves) <= 8:
        ax.legend(fontsize=8, ncol=2)
    return fig


def plot_region_table(table: pd.DataFrame, *, title: str = "Share of face attribution per region",
                      value_label: str = "share", centre: float | None = None):
    """Heatmap rows = groups (e.g. emotions, labelled with their ``n_clips``), columns = regions.

    Default: values are mean shares (0..1, sequential colours from 0). ``centre``: values that may
    be negative (e.g. occlusion drops), shown in diverging colours around ``centre``.
    """
    import seaborn as sns

    plt = _style()
    values = table.drop(columns=[c for c in ("n_clips",) if c in table.columns])
    if "n_clips" in table.columns:
        values.index = [f"{i} (n={int(n)})" for i, n in zip(values.index, table["n_clips"])]
    fig, ax = plt.subplots(figsize=(1.1 * values.shape[1] + 2.6, 0.45 * len(values) + 1.4), layout="constrained")
    colours = {"cmap": "cividis", "vmin": 0} if centre is None else {"cmap": "vlag", "center": centre}
    sns.heatmap(values, annot=True, fmt=".2f", ax=ax, cbar_kws={"label": value_label}, **colours)
    ax.set(xlabel="", ylabel="", title=title)
    return fig


def plot_features(table: pd.DataFrame, *, title: str = "Geometry features that mattered"):
    """Horizontal bars of feature shares (``feature, group, share``), coloured by group."""
    plt = _style()
    t = table.iloc[::-1]
    fig, ax = plt.subplots(figsize=(7.0, 0.36 * len(t) + 1.2), layout="constrained")
    ax.barh(np.arange(len(t)), t["share"], color=[GROUP_COLOURS.get(g, "#777777") for g in t["group"]])
    ax.set_yticks(np.arange(len(t)), t["feature"], fontsize=10)
    handles = [plt.Rectangle((0, 0), 1, 1, color=GROUP_COLOURS.get(g, "#777777")) for g in dict.fromkeys(t["group"])]
    ax.legend(handles, list(dict.fromkeys(t["group"])), fontsize=9, loc="lower right")
    ax.set(xlabel="share of landmark-input attribution", title=title)
    return fig


def plot_logmel_maps(logmels: np.ndarray, maps: np.ndarray, *, titles: Sequence[str] | None = None):
    """Pairs of panels per clip: the log-mel input (64, A) and its attribution (64, A)."""
    plt = _style()
    n = len(logmels)
    fig, axes = plt.subplots(n, 2, figsize=(8, 2.2 * n + 0.4), layout="constrained", squeeze=False)
    titles = list(titles) if titles is not None else [""] * n
    for (a, b), mel, m, t in zip(axes, logmels, maps, titles):
        a.grid(False)
        b.grid(False)
        a.imshow(mel, origin="lower", aspect="auto", cmap="cividis")
        a.set(title=f"log-mel {t}", ylabel="mel band")
        b.imshow(m, origin="lower", aspect="auto", cmap="inferno", vmin=0, vmax=np.percentile(m, 99) or 1.0)
        b.set(title="attribution")
    for ax in axes[-1]:
        ax.set_xlabel("time step")
    return fig


def plot_deltas(relative: np.ndarray, *, title: str = "IG convergence: |delta| / |f(x) - f(baseline)|"):
    """Histogram of relative convergence deltas per clip (log-spaced bins)."""
    plt = _style()
    fig, ax = plt.subplots(figsize=(5.5, 3), layout="constrained")
    vals = np.clip(np.asarray(relative, float), 1e-6, None)
    ax.hist(vals, bins=np.logspace(-6, 1, 22), color="#0072B2")
    ax.set_xscale("log")
    ax.axvline(np.median(vals), color="#D55E00", ls="--", label=f"median {np.median(vals):.3g}")
    ax.legend()
    ax.set(xlabel="relative delta", ylabel="clips", title=title)
    return fig


#: Okabe-Ito colours per facial region (``other`` is left transparent).
REGION_COLOURS: tuple[str, ...] = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442")


def plot_region_masks(faces: np.ndarray, labels: np.ndarray, names: Sequence[str], *, privacy: str = "blur",
                      points: np.ndarray | None = None, ncols: int = 4):
    """The facial-region masks used for region shares, drawn over the crops.

    faces: (N, S, S, 3) uint8; labels: (N, S, S) region index per pixel (``len(names) - 1`` or more
    = ``other``, not drawn); names: region names in label order, ``other`` last.
    """
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    plt = _style()
    shown = private_faces(faces, privacy, points)
    named = len(names) - 1  # the last name is "other"
    cmap = ListedColormap([REGION_COLOURS[i % len(REGION_COLOURS)] for i in range(named)])
    n = len(faces)
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.6 * nrows + 0.5), layout="constrained", squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(shown[i])
            ax.imshow(np.ma.masked_greater_equal(labels[i], named), cmap=cmap, vmin=-0.5, vmax=named - 0.5,
                      alpha=0.5, interpolation="nearest")
    fig.legend([Patch(color=cmap(i)) for i in range(named)], list(names[:named]), loc="outside lower center",
               ncol=named, fontsize=9)
    return fig


def plot_randomisation(table: pd.DataFrame, *, threshold: float, title: str = "Cascading model randomisation"):
    """Rank correlation of trained vs randomised maps per cascade step (mean with min-max band, and
    the whole maps' correlation as a dotted line when the table has ``spearman_maps``).

    table: :attr:`femo.audit.attribution_sanity.RandomisationCheck.table`; threshold: the pass line.
    """
    plt = _style()
    fig, ax = plt.subplots(figsize=(6.5, 3.2), layout="constrained")
    x = np.arange(len(table))  # positions: a step may be a name (e.g. "none"), labelled below
    # float: a step where no clip had attribution (e.g. an audio-only store) holds None, drawn as a gap
    low, high, mean = (pd.to_numeric(table[c], errors="coerce").to_numpy(float)
                       for c in ("spearman_min", "spearman_max", "spearman"))
    ax.fill_between(x, low, high, color="#56B4E9", alpha=0.3, label="min-max over clips")
    ax.plot(x, mean, marker="o", color="#0072B2", label="mean (model factor: checked)")
    if "spearman_maps" in table:  # the whole maps, which keep the input's difference from the baseline
        ax.plot(x, pd.to_numeric(table["spearman_maps"], errors="coerce").to_numpy(float), marker=".", ls=":",
                color="#777777", label="whole |attribution| maps")
    ax.axhline(threshold, ls="--", color="#D55E00", label=f"pass below {threshold:.2f}")
    ax.set_xticks(x, [f"{s}\n{n} layers" for s, n in zip(table["step"], table["n_modules"])], fontsize=9)
    ax.set(ylim=(-0.2, 1.05), xlabel="randomisation step (top layers first, cumulative)",
           ylabel="Spearman rho (trained vs randomised)", title=title)
    ax.legend(fontsize=8, loc="upper right")
    return fig
