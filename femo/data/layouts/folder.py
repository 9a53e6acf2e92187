"""Your own clips sorted into one folder per label: ``ROOT/<label>/<clip>``.

A clip is a video file, an audio-only file, a still image (see the suffix sets in
:mod:`femo.data.manifest`) or a folder of frames. Label folder names are lowercased and mapped
to the canonical names where one fits (``Anger`` -> angry, ``happiness`` -> happy); other names
(``contempt``, ``calm``...) are kept as classes, listed after the canonical ones. Hidden names
(starting with ``.``) are ignored; files directly under ROOT and files of other types inside a
label folder are reported through ``build_error`` instead of being dropped.

``clip_id`` is ``<label folder>_<clip name without suffix>``. ``subject`` is the clip id unless
``subject_pattern`` (a regular expression searched in the clip's file name; group 1, or the whole
match without groups) names the person, e.g. ``subject_pattern="^(s\\d+)_"`` for
``s03_take2.mp4``; a name it does not match is reported through ``build_error``. ``fold`` is
subject-independent and deterministic (:func:`femo.data.manifest.subject_folds`).

Options: ``subject_pattern`` (default ``""`` = none), ``folds`` (default 5).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from femo.data.layouts import ordered
from femo.data.manifest import MEDIA_SUFFIXES, ManifestMeta, canonical_label, order_classes, subject_folds


def _visible(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as entries:
        return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def _clip_row(entry: os.DirEntry, label_dir: str, pattern: re.Pattern | None) -> dict[str, object]:
    path = Path(entry.path)
    name = entry.name if entry.is_dir() else path.stem
    clip_id = f"{label_dir}_{name}"
    row: dict[str, object] = {"clip_id": clip_id, "path": str(path), "label": canonical_label(label_dir),
                              "subject": clip_id}
    if not entry.is_dir() and path.suffix.lower() not in MEDIA_SUFFIXES:
        row["build_error"] = f"{path}: unsupported file type {path.suffix or '(none)'!r} in a label folder"
    elif pattern is not None:
        match = pattern.search(entry.name)
        if match is None:
            row["build_error"] = f"{path}: file name does not match subject_pattern {pattern.pattern!r}"
        else:
            row["subject"] = match.group(1) if match.groups() else match.group(0)
    return row


def build(root: Path, *, subject_pattern: str = "", folds: int = 5) -> tuple[pd.DataFrame, ManifestMeta]:
    """Manifest rows of a ``ROOT/<label>/<clip>`` tree; see the module docstring."""
    root = Path(root).absolute()
    pattern = re.compile(subject_pattern) if subject_pattern else None
    rows = []
    for top in _visible(root):
        if not top.is_dir():
            rows.append({"clip_id": Path(top.name).stem, "path": top.path, "label": None, "subject": top.name,
                         "build_error": f"{top.path}: file directly under the root; put clips in ROOT/<label>/"})
            continue
        rows += [_clip_row(entry, top.name, pattern) for entry in _visible(Path(top.path))]
    df = pd.DataFrame(rows, columns=["clip_id", "path", "label", "subject", "build_error"])
    df["fold"] = subject_folds(df["subject"], folds) if len(df) else pd.Series(dtype="int64")
    classes = order_classes(df.loc[df["build_error"].isna(), "label"])
    if not df["build_error"].notna().any():
        df = df.drop(columns="build_error")
    extra = {"root": str(root), "subject_pattern": subject_pattern,
             "protocol": f"{folds}-fold subject-independent (sha1-ordered subjects, round-robin)"}
    return ordered(df), ManifestMeta(dataset=f"folder:{root.name}", classes=classes, extra=extra)
