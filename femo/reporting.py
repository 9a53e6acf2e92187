"""Figures, JSON writers and progress for the report notebooks.

Every notebook ends with :func:`write_metrics` (``metrics.json``); the report driver
(:mod:`femo.run`) writes ``config.json`` with :func:`write_config`. Figures use seaborn's
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

#: Categorical palette used by every figure (distinguishable with the common colour-vision deficiencies).
PALETTE = "colorblind"
#: Sequential colour map for heatmaps (perceptually uniform, colour-blind safe).
CMAP = "viridis"
#: Columns of a manifest/index that are never treated as subgroup attributes.
#: Metadata columns treated as subgroup attributes first (demographics, in this order).
DEMOGRAPHIC_COLUMNS: tuple[str, ...] = ("sex", "gender", "age_group", "race", "ethnicity", "culture", "skin_tone")
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


def to_jsonable(obj: Any) -> Any:
    """``obj`` with numpy/pandas scalars and arrays turned into JSON types; NaN/inf become None."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (pd.Series, pd.Index)):
        return to_jsonable(obj.tolist())
    if isinstance(obj, pd.DataFrame):
        return to_jsonable(obj.to_dict(orient="records"))
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer, int)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, str):
        return obj
    raise TypeError(f"cannot write {type(obj).__name__} value {obj!r} to JSON")


def write_metrics(output_dir: str | Path, metrics: Mapping[str, Any]) -> None:
    """Write ``output_dir/metrics.json`` (numpy-safe, NaN -> null).

    Returns nothing, so a notebook's last line shows no value in the report.
    """
    path = Path(output_dir) / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_jsonable(dict(metrics)), indent=2, sort_keys=True) + "\n")


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
    path = Path(output_dir) / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_jsonable(config), indent=2) + "\n")
    return path


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


def group_columns(frame: pd.DataFrame, *, max_levels: int = 12) -> list[str]:
    """Subgroup columns with 2..max_levels values: the :data:`DEMOGRAPHIC_COLUMNS` present, else any
    non-float metadata column that is not a manifest/store column."""
    from femo.data.store import FLAG_COLUMNS

    known = [c for c in DEMOGRAPHIC_COLUMNS if c in frame and 2 <= frame[c].nunique(dropna=True) <= max_levels]
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
    sns.countplot(data=frame, x="label", order=order, hue=hue, ax=ax, palette=PALETTE if hue else None,
                  hue_order=sorted(frame[hue].unique()) if hue else None)
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
    :func:`crop_landmarks`); found: (N,) bool, False panels say "no face"; titles: N strings.
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


def plot_learning_curves(history: pd.DataFrame):
    """Two panels from a run's ``history.csv``: train/val loss and validation UAR/WAR per epoch."""
    import matplotlib.pyplot as plt

    set_style()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
    for column in ("train_loss", "val_loss"):
        if column in history:
            left.plot(history["epoch"], history[column], marker="o", label=column.replace("_", " "))
    left.set(xlabel="epoch", ylabel="loss", title="Loss")
    for column in ("val_uar", "val_war"):
        if column in history:
            right.plot(history["epoch"], history[column], marker="o", label=column.replace("_", " ").upper()
                       .replace("VAL ", "validation "))
    right.set(xlabel="epoch", ylabel="score", title="Validation UAR / WAR", ylim=(0, 1))
    for ax in (left, right):
        ax.legend(loc="best")
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
    sns.barplot(x=values, y=names, hue=names, palette=PALETTE, ax=ax, legend=False, orient="h")
    for container, name in zip(ax.containers, names):
        absent = recall[name] is None
        ax.bar_label(container, labels=["not in test set" if absent else f"{float(recall[name]):.2f}"],
                     fontsize=8, padding=2, color="0.45" if absent else "0.1", style="italic" if absent else "normal")
    if chance is not None:
        ax.axvline(chance, ls="--", color="0.3", label=f"chance ({chance:.2f})")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)  # outside: never hides a bar
    ax.set(xlim=(0, 1.08), xlabel="recall", ylabel="emotion class", title=title)
    return fig



def crop_landmarks(landmarks: np.ndarray, box: np.ndarray, *, size: int, aspect: float = 1.0,
                   margin: float | None = None) -> np.ndarray:
    """Pixel positions (478, 2) of stored landmarks on the stored aligned face crop.

    landmarks: (478, 3) normalised to the face box (store key ``landmarks``); box: (4,) x0, y0, x1,
    y1 in [0, 1] of the frame (``face_box``); size: crop side S; aspect: frame width / height.
    Repeats the alignment of :func:`femo.features.face.align_face` (eye line levelled, landmark box
    centred, longer side plus margin scaled to S).
    """
    from femo.features.face import CROP_MARGIN, EYE_LEFT_IDX, EYE_RIGHT_IDX

    margin = CROP_MARGIN if margin is None else margin
    width, height = (box[2] - box[0]) * aspect, box[3] - box[1]
    points = landmarks[:, :2] * np.array([width, height])  # (478, 2) in frame-height units
    eye_a, eye_b = points[list(EYE_LEFT_IDX)].mean(0), points[list(EYE_RIGHT_IDX)].mean(0)
    angle = math.atan2(*(eye_b - eye_a)[::-1])
    rot = np.array([[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]])
    levelled = (points - (eye_a + eye_b) / 2) @ rot.T
    lo, hi = levelled.min(0), levelled.max(0)
    scale = size / (max(float((hi - lo).max()), 1e-6) * (1 + 2 * margin))
    return scale * (levelled - (lo + hi) / 2) + size / 2
