"""Figures, JSON writers and progress for the report notebooks.

Every notebook ends with :func:`write_metrics` (``metrics.json``); the report driver
(:mod:`femo.reports.execute`) writes ``config.json`` with :func:`write_config`; both go through
:func:`femo.training.metrics.write_json`. Figures use seaborn's
colour-blind-safe ``"colorblind"`` palette (sequential maps: ``"viridis"``), label every axis,
and return the ``matplotlib`` Figure so a notebook can show it and :func:`save_figure` can
store it next to the report.
"""
from __future__ import annotations

import json
import math
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from femo.training.metrics import write_json

#: Categorical palette used by every figure (distinguishable with the common colour-vision deficiencies).
PALETTE = "colorblind"
#: Sequential colour map for heatmaps (perceptually uniform, colour-blind safe).
CMAP = "viridis"
#: Recognised demographic metadata columns, in this order (the bias audit's default attributes);
#: any ``perceived_*`` column (``femo annotate``) and the names listed under the manifest sidecar's
#: ``extra.demographics`` count too (see :func:`demographic_columns`).
DEMOGRAPHIC_COLUMNS: tuple[str, ...] = ("sex", "gender", "age", "age_group", "race", "ethnicity", "culture",
                                        "skin_tone")
#: Columns of a manifest/index that are never treated as subgroup attributes.
NON_GROUP_COLUMNS = frozenset({
    "clip_id", "path", "label", "subject", "fold", "split", "audio_path", "status", "error", "file",
})


def set_style() -> None:
    """Apply the report style: seaborn ``whitegrid``, readable fonts, the colour-blind palette."""
    import matplotlib as mpl
    import seaborn as sns

    sns.set_theme(style="whitegrid", palette=PALETTE, context="notebook")
    mpl.rcParams.update({"figure.dpi": 90, "savefig.dpi": 110, "savefig.bbox": "tight",
                         "axes.titlesize": 12, "axes.labelsize": 11, "figure.autolayout": False})


def write_metrics(output_dir: str | Path, metrics: Mapping[str, Any]) -> None:
    """Write ``output_dir/metrics.json`` (numpy-safe, NaN -> null).

    Returns nothing, so a notebook's last line shows no value in the report.
    """
    write_json(Path(output_dir) / "metrics.json", dict(metrics), sort_keys=True)


def read_metrics(output_dir: str | Path) -> dict[str, Any]:
    """Read ``output_dir/metrics.json`` ({} when the file is absent)."""
    path = Path(output_dir) / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def versions() -> dict[str, str]:
    """Versions of python, femo and the libraries a report depends on ("absent" if not installed)."""
    out = {"python": platform.python_version()}
    for name in ("femo", "torch", "torchvision", "mediapipe", "numpy", "pandas", "papermill"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def git_commit(path: str | Path = ".") -> str:
    """The git commit of the checkout holding ``path`` (``+dirty`` when modified), or "" if unknown."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True,
                             timeout=10)
        if sha.returncode != 0:
            return ""
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=path,
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def write_config(output_dir: str | Path, params: Mapping[str, Any], **extra: Any) -> Path:
    """Write ``output_dir/config.json``: every parameter, library versions, git commit, ``extra``."""
    source = Path(__file__).resolve().parent
    config = {"parameters": dict(params), "versions": versions(), "git_commit": git_commit(source),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}
    return write_json(Path(output_dir) / "config.json", config)


def save_figure(fig, output_dir: str | Path, name: str) -> None:
    """Save ``fig`` as ``output_dir/figures/<name>.png`` (returns nothing: no stray value in a report)."""
    path = Path(output_dir) / "figures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def progress(items: Iterable, *, total: int | None = None, desc: str = "", every: float = 0.25,
             file=None) -> Iterator:
    """Yield ``items``, printing a tqdm-formatted status line at most every ``every`` of the total.

    Unlike a live bar this writes a handful of whole lines (to stderr), so a papermill log shows
    progress while the saved notebook stays small.
    """
    from tqdm import tqdm

    stream = file or sys.stderr
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    step = max(1, math.ceil((total or 0) * every)) if total else 1
    start = time.monotonic()
    count = 0
    for item in items:
        yield item
        count += 1
        if count % step == 0 or count == total:
            line = tqdm.format_meter(count, total, time.monotonic() - start, prefix=desc, ncols=80,
                                     ascii=True)
            print(line, file=stream, flush=True)


#: One colour per emotion, the same in every figure and run (Okabe-Ito, colour-blind safe); other
#: classes get a colour of seaborn's "colorblind" palette chosen by their name.
CLASS_COLOURS: dict[str, str] = {
    "happy": "#e69f00", "sad": "#0072b2", "neutral": "#999999", "angry": "#d55e00", "surprise": "#f0e442",
    "disgust": "#009e73", "fear": "#cc79a7", "calm": "#56b4e9", "contempt": "#8c564b",
}


def class_colours(classes: Iterable[str]) -> dict[str, str]:
    """{class: hex colour}: :data:`CLASS_COLOURS`, else a colour picked by a hash of the name, so
    that a class's colour never depends on which other classes a figure shows."""
    import hashlib

    import seaborn as sns

    spare = sns.color_palette(PALETTE, 10).as_hex()
    return {c: CLASS_COLOURS.get(c) or spare[int(hashlib.sha1(c.encode()).hexdigest(), 16) % len(spare)]
            for c in classes}


def demographic_columns(frame: pd.DataFrame, *, extra: Mapping[str, Any] | None = None,
                        max_levels: int = 12) -> list[str]:
    """Demographic columns of ``frame`` with 2..max_levels values: :data:`DEMOGRAPHIC_COLUMNS`,
    ``perceived_*`` columns and the sidecar's ``extra["demographics"]`` names, in that order (float
    columns left out)."""
    named = [*DEMOGRAPHIC_COLUMNS, *sorted(c for c in frame.columns if str(c).startswith("perceived_")),
             *[str(c) for c in (extra or {}).get("demographics", [])]]
    # a float column (e.g. age in years) is a measurement, not a group: bin it first (age_group)
    return [c for c in dict.fromkeys(named) if c in frame.columns and not pd.api.types.is_float_dtype(frame[c])
            and 2 <= frame[c].nunique(dropna=True) <= max_levels]


def group_columns(frame: pd.DataFrame, *, max_levels: int = 12) -> list[str]:
    """Subgroup columns with 2..max_levels values: the :data:`DEMOGRAPHIC_COLUMNS` present, else any
    non-float metadata column that is not a manifest/store column."""
    from femo.data.store import FLAG_COLUMNS

    known = demographic_columns(frame, max_levels=max_levels)
    if known:
        return known
    skip = NON_GROUP_COLUMNS | set(FLAG_COLUMNS)
    out = []
    for name in frame.columns:
        if name in skip or name.startswith(("vote_", "p_")):
            continue
        levels = frame[name].nunique(dropna=True)
        if 2 <= levels <= max_levels and not pd.api.types.is_float_dtype(frame[name]):
            out.append(name)
    return out


def _figure(width: float, height: float):
    import matplotlib.pyplot as plt

    set_style()
    return plt.subplots(figsize=(width, height), layout="constrained")


def plot_class_balance(labels: pd.Series, *, classes: Iterable[str] | None = None,
                       by: pd.Series | None = None, title: str = "Clips per class"):
    """Bar chart of clip counts per class (bars split by ``by``, e.g. the split, when given)."""
    import seaborn as sns

    order = list(classes) if classes is not None else sorted(labels.unique())
    frame = pd.DataFrame({"label": labels.values})
    hue = None
    if by is not None:
        hue = by.name or "group"
        frame[hue] = by.values
    fig, ax = _figure(max(6.0, 0.8 * len(order) + 2), 3.6)
    if hue:  # bars split by fold/split: colours name the fold
        sns.countplot(data=frame, x="label", order=order, hue=hue, ax=ax, palette=PALETTE,
                      hue_order=sorted(frame[hue].unique()))
    else:  # one bar per class, in the class's own colour
        sns.countplot(data=frame, x="label", order=order, hue="label", hue_order=order, legend=False, ax=ax,
                      palette=class_colours(order), saturation=1)
    for container in ax.containers:
        ax.bar_label(container, fontsize=7)
    if hue:
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1), title=hue, frameon=False)
    ax.set(xlabel="emotion class", ylabel="clips", title=title)
    ax.tick_params(axis="x", rotation=30)
    return fig


def plot_composition(frame: pd.DataFrame, column: str, *, by: str = "label",
                     order: Iterable[str] | None = None):
    """Heatmap of clip counts, ``column`` groups (rows) x ``by`` values (columns), annotated."""
    import seaborn as sns

    table = pd.crosstab(frame[column].astype(str).fillna("unknown"), frame[by])
    if order is not None:
        table = table.reindex(columns=[c for c in order if c in table.columns])
    fig, ax = _figure(max(6.0, 0.9 * table.shape[1] + 2.5), max(2.4, 0.45 * table.shape[0] + 1.4))
    sns.heatmap(table, annot=True, fmt="d", cmap=CMAP, cbar_kws={"label": "clips"}, ax=ax)
    ax.collections[0].colorbar.ax.yaxis.get_major_locator().set_params(integer=True)  # counts: no 12.5 ticks
    ax.grid(False)
    ax.set(xlabel="emotion class" if by == "label" else by, ylabel=column,
           title=f"Clips by {column} and {'class' if by == 'label' else by}")
    ax.tick_params(axis="x", rotation=30)
    ax.tick_params(axis="y", rotation=0)
    return fig


def plot_flags(index: pd.DataFrame, columns: Iterable[str]):
    """Small-multiple histograms of the per-clip condition flags (one panel per column)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    columns = [c for c in columns if c in index.columns and index[c].notna().any()]
    ncols = 4
    nrows = max(1, math.ceil(len(columns) / ncols))
    set_style()
    fig, axes = plt.subplots(nrows, ncols, figsize=(12, 2.6 * nrows), layout="constrained", squeeze=False)
    for ax, name in zip(axes.flat, columns):
        values = pd.to_numeric(index[name], errors="coerce").dropna()
        sns.histplot(values, bins=15, ax=ax, color=sns.color_palette(PALETTE)[0])
        ax.set(xlabel=name, ylabel="clips")
        ax.yaxis.get_major_locator().set_params(integer=True)
    for ax in list(axes.flat)[len(columns):]:
        ax.set_visible(False)
    fig.suptitle("Recording-condition flags per clip")
    return fig


def plot_faces(faces: np.ndarray, *, points: np.ndarray | None = None, found: np.ndarray | None = None,
               titles: Iterable[str] | None = None, ncols: int = 4):
    """Face crops with landmarks drawn.

    faces: (N, S, S, 3) uint8 RGB; points: (N, P, 2) pixel x, y on each crop (see
    :func:`femo.features.face.crop_landmarks`); found: (N,) bool, False panels say "no face"; titles: N strings.
    """
    fig, panels = image_grid(len(faces), ncols=ncols, titles=titles, cell=(2.3, 2.5))
    for i, ax in enumerate(panels):
        ax.imshow(faces[i])
        if found is not None and not bool(found[i]):
            ax.text(0.5, 0.5, "no face", ha="center", va="center", transform=ax.transAxes, color="white")
        elif points is not None:
            # Bright cyan stands out against every skin tone; the mesh is dense, so the dots stay small.
            ax.scatter(points[i][:, 0], points[i][:, 1], s=1.5, c="#00E5FF", alpha=0.9, linewidths=0)
    return fig


def image_grid(n: int, *, ncols: int = 4, titles: Iterable[str] | None = None,
               cell: tuple[float, float] = (2.3, 2.5)):
    """A figure of ``n`` image panels in rows of ``ncols`` (axes off, titled; spare cells hidden);
    returns ``(fig, panels)`` with the ``n`` axes to draw into. ``cell``: inches per panel."""
    import matplotlib.pyplot as plt

    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    set_style()
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell[0] * ncols, cell[1] * nrows), layout="constrained",
                             squeeze=False)
    titles = list(titles) if titles is not None else [""] * n
    for ax in axes.flat:
        ax.axis("off")
    panels = list(axes.flat)[:n]
    for ax, title in zip(panels, titles):
        ax.set_title(title, fontsize=9)
    return fig, panels


def plot_spectrogram(logmel: np.ndarray, *, hop_s: float = 0.01, title: str = "Log-mel spectrogram"):
    """Log-mel image: ``logmel`` (n_mels, A) in dB, frames ``hop_s`` seconds apart."""
    fig, ax = _figure(8.0, 3.0)
    extent = (0.0, logmel.shape[1] * hop_s, 0, logmel.shape[0])
    image = ax.imshow(logmel, origin="lower", aspect="auto", cmap=CMAP, extent=extent)
    fig.colorbar(image, ax=ax, label="dB (0 = max)")
    ax.set(xlabel="time (s)", ylabel="mel band", title=title)
    ax.grid(False)
    return fig


def plot_learning_curves(history: pd.DataFrame, *, objective: str = "training objective"):
    """Three panels from a run's ``history.csv`` (one row per epoch).

    The training objective (class-weighted cross-entropy of the fused head plus ``aux_weight`` x
    the per-modality heads' losses) and the validation loss (plain cross-entropy of the fused
    head) measure different things, so they get separate panels and are never drawn on one
    axis. Right: validation UAR / WAR. ``objective``: the left panel's y label.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    set_style()
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained")
    colours = iter(sns.color_palette(PALETTE, 4))
    for ax, column, title in ((left, "train_loss", "Training objective"), (middle, "val_loss", "Validation loss")):
        if column in history:
            ax.plot(history["epoch"], history[column], marker="o", color=next(colours))
        ax.set(xlabel="epoch", title=title,
               ylabel=objective if column == "train_loss" else "cross-entropy (fused head)")
    for column in ("val_uar", "val_war"):
        if column in history:
            right.plot(history["epoch"], history[column], marker="o", color=next(colours),
                       label=column.replace("val_", "validation ").replace("uar", "UAR").replace("war", "WAR"))
    right.set(xlabel="epoch", ylabel="score", title="Validation UAR / WAR", ylim=(0, 1))
    right.legend(loc="best")
    for ax in (left, middle, right):
        ax.xaxis.get_major_locator().set_params(integer=True)
    return fig


def plot_confusion(confusion: np.ndarray | list, classes: Iterable[str], *, normalize: bool = True,
                   title: str = "Confusion matrix"):
    """Confusion heatmap, true class rows (labelled with their clip count n) x predicted columns;
    ``normalize`` divides each row by its total (rows of classes absent from the test set stay empty)."""
    import seaborn as sns

    counts = np.asarray(confusion, dtype=float)
    classes = list(classes)
    totals = counts.sum(axis=1, keepdims=True)
    matrix = counts
    if normalize:
        matrix = np.divide(counts, totals, out=np.full_like(counts, np.nan), where=totals > 0)
    rows = [f"{c} (n={int(n)})" for c, n in zip(classes, totals[:, 0])]
    size = max(4.5, 0.75 * len(classes) + 2)
    fig, ax = _figure(size + 1.6, size)
    sns.heatmap(matrix, annot=True, fmt=".2f" if normalize else ".0f", cmap=CMAP, vmin=0,
                vmax=1 if normalize else None, xticklabels=classes, yticklabels=rows, square=True,
                cbar_kws={"label": "fraction of the true class" if normalize else "clips"}, ax=ax,
                annot_kws={"size": 9})
    ax.set(xlabel="predicted class", ylabel="true class", title=title)
    ax.grid(False)
    ax.tick_params(axis="x", rotation=35)
    ax.tick_params(axis="y", rotation=0)
    return fig


def plot_recall(recall: Mapping[str, float], *, chance: float | None = None,
                title: str = "Recall per class"):
    """Horizontal bars of per-class recall in [0, 1] (None = class absent from the test set, marked so),
    with a dashed chance line when given."""
    import seaborn as sns

    names = list(recall)
    values = [float(recall[n]) if recall[n] is not None else 0.0 for n in names]
    fig, ax = _figure(8.0, max(2.5, 0.42 * len(names) + 1.2))
    sns.barplot(x=values, y=names, hue=names, palette=class_colours(names), ax=ax, legend=False, orient="h",
                saturation=1)
    for container, name in zip(ax.containers, names):
        absent = recall[name] is None
        ax.bar_label(container, labels=["not in test set" if absent else f"{float(recall[name]):.2f}"],
                     fontsize=8, padding=2, color="0.45" if absent else "0.1", style="italic" if absent else "normal")
    if chance is not None:
        ax.axvline(chance, ls="--", color="0.3", label=f"chance ({chance:.2f})")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)  # outside: never hides a bar
    ax.set(xlim=(0, 1.08), xlabel="recall", ylabel="emotion class", title=title)
    return fig
