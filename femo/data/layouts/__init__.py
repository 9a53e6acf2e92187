"""One manifest builder per dataset layout, chosen by name with :func:`build_manifest`.

Every layout module exposes ``build(root, **options) -> (DataFrame, ManifestMeta)`` returning
the raw rows (not yet validated: run :func:`femo.data.manifest.validate_manifest`). Options are
keyword-only and documented in each module's docstring.
"""
from __future__ import annotations

import importlib
import inspect
import os
import re
import textwrap
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from femo.data.manifest import ManifestError, ManifestMeta, canonical_label

#: Layout name -> module under femo.data.layouts.
LAYOUTS: tuple[str, ...] = ("dfew", "mafw", "ferv39k", "ravdess", "cremad", "folder")


def layout_builder(layout: str) -> Callable[..., tuple[pd.DataFrame, ManifestMeta]]:
    """The ``build`` function of ``layout``; refuses unknown names listing the known ones."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown manifest layout {layout!r}; known layouts: {', '.join(LAYOUTS)}")
    return importlib.import_module(f"femo.data.layouts.{layout}").build


def layout_options(layout: str) -> dict[str, Any]:
    """Option name -> default value of a layout's builder."""
    params = inspect.signature(layout_builder(layout)).parameters
    return {n: p.default for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def build_manifest(layout: str, root: str | Path, **options: Any) -> tuple[pd.DataFrame, ManifestMeta]:
    """Rows and sidecar of the dataset at ``root`` in ``layout``; refuses unknown options.

    String option values (from the command line) are converted to the type of the option's
    default (int, float, bool). Raises ManifestError when ``root`` is not a folder or holds no
    clip of the layout (the message says what the layout expects, see :func:`layout_expects`).
    """
    known = layout_options(layout)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"layout {layout!r}: unknown option(s) {unknown}; known: {sorted(known) or 'none'}")
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"{root}: dataset root is not a folder")
    converted = {k: _convert(k, v, known[k]) for k, v in options.items()}
    df, meta = layout_builder(layout)(root, **converted)
    if not len(df):
        raise ManifestError(f"{root}: no clip found for layout {layout!r}; expected {layout_expects(layout)}")
    return df, meta


def layout_expects(layout: str) -> str:
    """What a dataset root of ``layout`` holds, in words: the layout module's docstring title
    and its tree sketch (the first ``::`` block), else its first paragraph after the title."""
    doc = inspect.getdoc(importlib.import_module(f"femo.data.layouts.{layout}")) or layout
    paragraphs = doc.split("\n\n")
    title = " ".join(paragraphs[0].split())
    for i, text in enumerate(paragraphs[1:-1], start=1):
        if text.rstrip().endswith("::"):
            return f"{title}\n{text.rstrip()[:-1]}\n{textwrap.indent(textwrap.dedent(paragraphs[i + 1]), '  ')}"
    return f"{title}\n{paragraphs[1]}" if len(paragraphs) > 1 else title


def _convert(name: str, value: Any, default: Any) -> Any:
    if not isinstance(value, str) or isinstance(default, str) or default is None:
        return value
    if isinstance(default, bool):
        if value.lower() in {"1", "true", "yes", "on"}:
            return True
        if value.lower() in {"0", "false", "no", "off"}:
            return False
        raise ValueError(f"option {name}: expected true/false, got {value!r}")
    try:
        return type(default)(value)
    except ValueError as exc:
        raise ValueError(f"option {name}: expected {type(default).__name__}, got {value!r}") from exc


def read_index(path: Path, columns: tuple[str, ...], **read_csv: Any) -> pd.DataFrame:
    """Read a dataset's index CSV, checking its header; ManifestError names file and header."""
    try:
        df = pd.read_csv(path, dtype=str, **read_csv)
    except (OSError, pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read index file ({exc})") from exc
    header = [str(c).strip() for c in df.columns]
    missing = [c for c in columns if c not in header]
    if missing:
        raise ManifestError(f"{path}: wrong header {header}; expected columns {list(columns)} (missing {missing})")
    df.columns = header
    return df


def first_existing(root: Path, candidates: tuple[str, ...], what: str) -> Path:
    """The first ``root/<candidate>`` that exists; ManifestError listing all tried paths otherwise."""
    for rel in candidates:
        if (root / rel).exists():
            return root / rel
    tried = ", ".join(str(root / c) for c in candidates)
    raise ManifestError(f"{root}: no {what} found (looked for {tried})")


def ordered(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the required columns first, then fold/split, then the rest in their order."""
    head = [c for c in ("clip_id", "path", "label", "subject", "fold", "split") if c in df.columns]
    return df[head + [c for c in df.columns if c not in head]].reset_index(drop=True)


def media_files(root: Path, suffixes: frozenset[str]) -> list[Path]:
    """Files under ``root`` (recursively, sorted, hidden names skipped) whose suffix is in ``suffixes``."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(folder) / f for f in sorted(files)
                  if not f.startswith(".") and Path(f).suffix.lower() in suffixes]
    return found


_CLIP_COLUMNS = ("order", "video_name", "clip", "clip_id", "name", "id", "video")


def read_votes(path: Path, classes: tuple[str, ...], *, clip_name: Callable[[Any], str] = str) -> pd.DataFrame:
    """``clip_id`` + ``vote_<class>`` columns from an annotation workbook (xlsx, via openpyxl).

    The clip column is the one named order / video_name / clip / clip_id / name / id / video
    (any case), else the first column; ``clip_name`` normalises its values. A class column is
    recognised by its name in any case, after an optional leading number and separator
    (``Happy``, ``1happy``, ``1_Happy``) and through :data:`femo.data.manifest.LABEL_ALIASES`
    (``anger`` -> angry). Every class needs a column, else ManifestError naming file and header.
    """
    try:
        sheet = pd.read_excel(path)
    except Exception as exc:  # openpyxl raises several unrelated types for damaged workbooks
        raise ManifestError(f"{path}: cannot read annotation workbook ({type(exc).__name__}: {exc})") from exc
    header = [str(c) for c in sheet.columns]
    lowered = [h.strip().lower() for h in header]
    clip_col = next((header[lowered.index(c)] for c in _CLIP_COLUMNS if c in lowered), header[0])
    by_class: dict[str, str] = {}
    for h in header:
        name = canonical_label(re.sub(r"^[\d\s_.\-]+", "", h))
        if name in classes and h != clip_col:
            by_class.setdefault(name, h)
    missing = [c for c in classes if c not in by_class]
    if missing:
        raise ManifestError(f"{path}: wrong header {header}; expected a clip column and one column per class "
                            f"{list(classes)} (missing {missing})")
    votes = pd.DataFrame({"clip_id": sheet[clip_col].map(clip_name)})
    for c in classes:
        votes[f"vote_{c}"] = pd.to_numeric(sheet[by_class[c]], errors="coerce")
    return votes.drop_duplicates("clip_id")
