"""The clip manifest: one CSV row per clip plus a JSON sidecar carrying the class list.

Columns (see docs/ARCHITECTURE.md, "The manifest"):

============ ========= ==================================================================
column       required  meaning
============ ========= ==================================================================
clip_id      yes       unique str, a safe file name (:func:`femo.data.store.clip_id_problem`)
path         yes       video file, audio-only file, still image, or folder of frames
label        yes       canonical lowercase class name, one of the sidecar's ``classes``
subject      yes       person id, or the clip id when the dataset has none
fold         no        int 1..k for k-fold protocols (official or subject-hashed)
split        no        train / val / test where the dataset defines it
vote_<class> no        annotator vote counts
audio_path   no        separate audio file (e.g. the original mp4 of a frame folder)
...          no        any metadata (age, sex, race, ...), carried through untouched
============ ========= ==================================================================

Relative ``path``/``audio_path`` values are relative to the manifest's folder. The sidecar
``<stem>.meta.json`` holds ``{"dataset": str, "classes": [...], "extra": {...}}``.

Layout builders may add a ``build_error`` column (non-empty = the builder could not make a
valid row, e.g. an unparsable file name); :func:`validate_manifest` turns it into an exclusion
reason, so nothing a builder saw is silently dropped.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd

from femo.config import CLASSES
from femo.data.store import atomic_write_text, clip_id_problem

REQUIRED_COLUMNS: tuple[str, ...] = ("clip_id", "path", "label", "subject")
PATH_COLUMNS: tuple[str, ...] = ("path", "audio_path")
EXCLUDED_COLUMNS: tuple[str, ...] = ("clip_id", "path", "check", "reason")
BUILD_ERROR = "build_error"

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".flv", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv"})
AUDIO_SUFFIXES = frozenset({".wav", ".mp3", ".flac", ".m4a", ".aac", ".ogg", ".opus"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
MEDIA_SUFFIXES = VIDEO_SUFFIXES | AUDIO_SUFFIXES | IMAGE_SUFFIXES

#: Dataset-specific spellings of the canonical classes.
LABEL_ALIASES: dict[str, str] = {
    "anger": "angry", "happiness": "happy", "joy": "happy", "sadness": "sad", "fearful": "fear",
    "scared": "fear", "surprised": "surprise", "disgusted": "disgust",
}

_LFS_MAGIC = b"version https://git-lfs"
_LFS_MAX_BYTES = 1024


class ManifestError(ValueError):
    """A manifest, sidecar or dataset index file is missing or malformed; the message names the file."""


class ManifestWarning(UserWarning):
    """Something worth knowing that excludes no clip (e.g. a class with no clips)."""


@dataclass(frozen=True)
class ManifestMeta:
    """The sidecar: dataset name, ordered class list (label index = position), free-form extras."""

    dataset: str = "unknown"
    classes: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict ``{"dataset", "classes", "extra"}``."""
        return {"dataset": self.dataset, "classes": list(self.classes), "extra": dict(self.extra)}


def canonical_label(name: Any) -> str:
    """Lowercase, stripped class name with dataset spellings mapped (``Anger`` -> ``angry``)."""
    text = str(name).strip().lower()
    return LABEL_ALIASES.get(text, text)


def order_classes(labels: Iterable[str]) -> tuple[str, ...]:
    """Distinct labels, canonical classes first in ``femo.config.CLASSES`` order, others sorted."""
    present = {str(x) for x in labels if isinstance(x, str) and x}
    return tuple(c for c in CLASSES if c in present) + tuple(sorted(present - set(CLASSES)))


def subject_folds(subjects: pd.Series, k: int = 5) -> pd.Series:
    """Deterministic subject-independent folds 1..k for datasets without official ones.

    Subjects are ordered by the sha1 of their id and dealt round-robin, so every subject's clips
    share one fold, fold sizes differ by at most one subject, and the result depends only on the
    set of subject ids (not on row order or Python's hash seed). Returns int folds aligned to
    ``subjects``.
    """
    ids = sorted({str(s) for s in subjects}, key=lambda s: hashlib.sha1(s.encode()).hexdigest())
    fold = {s: i % k + 1 for i, s in enumerate(ids)}
    return subjects.astype(str).map(fold).astype("int64")


def meta_path(path: str | Path) -> Path:
    """Sidecar path of a manifest: ``<folder>/<stem>.meta.json``."""
    path = Path(path)
    return path.with_name(path.stem + ".meta.json")


def excluded_path(path: str | Path) -> Path:
    """Exclusion report of a manifest (clip_id, path, check, reason): ``<folder>/<stem>.excluded.csv``."""
    path = Path(path)
    return path.with_name(path.stem + ".excluded.csv")


def _require_columns(columns: Iterable[str], source: str) -> None:
    columns = list(columns)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ManifestError(f"{source}: missing required column(s) {missing}; header is {columns}; "
                            f"required: {list(REQUIRED_COLUMNS)}")


def _read_meta(path: Path, df: pd.DataFrame) -> ManifestMeta:
    side = meta_path(path)
    if not side.is_file():
        return ManifestMeta(dataset="unknown", classes=order_classes(df["label"]))
    try:
        data = json.loads(side.read_text())
        classes = tuple(str(c) for c in data["classes"])
        return ManifestMeta(dataset=str(data.get("dataset", "unknown")), classes=classes,
                            extra=dict(data.get("extra") or {}))
    except (ValueError, KeyError, TypeError) as exc:
        raise ManifestError(f"{side}: malformed manifest sidecar ({type(exc).__name__}: {exc}); "
                            'expected {"dataset": str, "classes": [...], "extra": {...}}') from exc


def read_manifest(path: str | Path) -> tuple[pd.DataFrame, ManifestMeta]:
    """Read ``manifest.csv`` and its sidecar; ``path``/``audio_path`` come back absolute.

    Without a sidecar, classes are the labels present (canonical order first). ``clip_id``,
    ``subject``, ``label`` and path columns are str; ``fold`` is nullable Int64. Raises
    ManifestError naming the file when it is missing, empty, or lacks a required column.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    text_cols = {c: str for c in (*REQUIRED_COLUMNS, "audio_path", "split")}
    try:
        # only an empty cell is missing: ids and labels such as "nan", "NA" or "null" stay text
        df = pd.read_csv(path, dtype=text_cols, keep_default_na=False, na_values=[""])
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: not a readable CSV manifest ({exc})") from exc
    _require_columns(df.columns, str(path))
    if "fold" in df.columns:
        try:
            df["fold"] = pd.to_numeric(df["fold"]).astype("Int64")
        except (ValueError, TypeError) as exc:
            raise ManifestError(f"{path}: column 'fold' must hold integers ({exc})") from exc
    folder = path.parent.absolute()
    for col in PATH_COLUMNS:
        if col in df.columns:
            df[col] = df[col].map(lambda v: v if pd.isna(v) or v == "" else os.path.normpath(folder / v))
    df.attrs["source"] = str(path)
    return df, _read_meta(path, df)


def _relative(value: Any, folder: Path) -> Any:
    if pd.isna(value) or value == "" or not os.path.isabs(str(value)):
        return value
    absolute = os.path.normpath(str(value))
    if os.path.commonpath([absolute, str(folder)]) != str(folder):
        return absolute
    return Path(os.path.relpath(absolute, folder)).as_posix()


def write_manifest(df: pd.DataFrame, path: str | Path, meta: ManifestMeta) -> Path:
    """Write ``df`` as CSV and ``meta`` as the sidecar (atomically); returns the CSV path.

    Paths inside the manifest's folder are written relative to it (posix separators), others
    absolute, so a dataset folder holding its manifest can be moved as a whole.
    """
    path = Path(path)
    _require_columns(df.columns, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = path.parent.absolute()
    out = df.copy()
    for col in PATH_COLUMNS:
        if col in out.columns:
            out[col] = out[col].map(lambda v: _relative(v, folder))
    atomic_write_text(path, out.to_csv(index=False))
    atomic_write_text(meta_path(path), json.dumps(meta.to_json(), indent=2) + "\n")
    return path


def empty_classes(df: pd.DataFrame, classes: Iterable[str]) -> list[str]:
    """Classes of the list with no row in ``df``."""
    present = set(df["label"]) if len(df) else set()
    return [c for c in classes if c not in present]


def is_lfs_pointer(path: str | Path) -> bool:
    """True when ``path`` is a small text file starting like a Git LFS pointer."""
    try:
        if os.path.getsize(path) > _LFS_MAX_BYTES:
            return False
        with open(path, "rb") as fh:
            return fh.read(len(_LFS_MAGIC)) == _LFS_MAGIC
    except OSError:
        return False


def _has_image(folder: Path) -> bool:
    with os.scandir(folder) as entries:
        return any(e.is_file() and Path(e.name).suffix.lower() in IMAGE_SUFFIXES for e in entries)


def check_media(path: str | Path, probe: Callable[[Path], Any] | None = None) -> tuple[str, str] | None:
    """Check one clip path; returns ``(check, reason)`` or None when it is usable.

    Checks, in order: missing, empty frame folder, Git LFS pointer, empty file, then ``probe``
    (normally ``femo.data.decode.probe``, whose MediaError names the file and the problem:
    unreadable, truncated, no streams). Without ``probe`` the media are not opened.
    """
    p = Path(path)
    if not p.exists():
        return "missing_file", f"{p}: file not found"
    if p.is_dir():
        if not _has_image(p):
            return "empty_folder", f"{p}: frame folder holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})"
    elif is_lfs_pointer(p):
        return "lfs_pointer", f"{p}: Git LFS pointer file, not media (fetch the data with `git lfs pull`)"
    elif p.stat().st_size == 0:
        return "unreadable", f"{p}: empty file (0 bytes)"
    if probe is None:
        return None
    try:
        probe(p)
    except Exception as exc:  # any decoder failure is a per-clip exclusion, never a crash
        detail = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        return "unreadable", detail if str(p) in detail else f"{p}: {detail}"
    return None


def _load_probe():
    try:
        from femo.data.decode import probe
    except ImportError as exc:
        raise ManifestError("checking media needs femo.data.decode.probe, which failed to import "
                            f"({exc}); pass check_media=False (--no-check-media) to skip") from exc
    return probe


def _blank(value: Any) -> bool:
    return value is None or (not isinstance(value, str) and pd.isna(value)) or str(value) == ""


def _row_problem(row: dict[str, Any], classes: tuple[str, ...], first: dict[str, int],
                 paths: pd.Series) -> tuple[str, str] | None:
    """The first structural problem of one row (see validate_manifest), or None."""
    cid, path, label = row["clip_id"], row["path"], row["label"]
    if not _blank(row.get(BUILD_ERROR)):
        return "build", str(row[BUILD_ERROR])
    empty = [c for c in REQUIRED_COLUMNS if _blank(row[c])]
    if empty:
        return "missing_value", f"clip {cid!r} ({path}): empty {empty}"
    unsafe = clip_id_problem(cid)
    if unsafe is not None:  # the id becomes STORE/clips/<clip_id>.npz
        return "bad_clip_id", f"row {row['_row'] + 1}: clip id {cid!r} ({path}) {unsafe}"
    if first[str(cid)] != row["_row"]:
        j = first[str(cid)]
        return "duplicate_id", f"clip id {cid!r} ({path}) duplicates row {j} ({paths.iat[j]})"
    if label not in classes:
        return "unknown_label", f"clip {cid!r} ({path}): label {label!r} not in classes {list(classes)}"
    return None


def _row_checks(df: pd.DataFrame, meta: ManifestMeta) -> dict[int, tuple[str, str]]:
    """Per-row structural problems by position: builder errors, empty values, ids, labels."""
    first: dict[str, int] = {}
    for i, cid in enumerate(df["clip_id"]):
        first.setdefault(str(cid), i)
    records = df.assign(_row=range(len(df))).to_dict("records")
    found = {r["_row"]: _row_problem(r, meta.classes, first, df["path"]) for r in records}
    return {i: p for i, p in found.items() if p is not None}


def _media_checks(df: pd.DataFrame, rows: list[int], workers: int | None) -> dict[int, tuple[str, str]]:
    probe = _load_probe()
    audio = df["audio_path"] if "audio_path" in df.columns else pd.Series([None] * len(df))

    def one(i: int) -> tuple[str, str] | None:
        bad = check_media(df["path"].iat[i], probe)
        if bad is None and isinstance(audio.iat[i], str) and audio.iat[i]:
            bad = check_media(audio.iat[i], probe)
            if bad is not None:
                bad = (f"audio_{bad[0]}", f"audio_path: {bad[1]}")
        return bad

    workers = workers or min(8, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(one, rows))
    return {i: r for i, r in zip(rows, results) if r is not None}


def validate_manifest(df: pd.DataFrame, meta: ManifestMeta, *, check_media: bool = True,
                      workers: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``df`` into usable rows and excluded rows with the reason for each.

    Per-clip checks: builder errors, empty required values, clip ids with path separators,
    duplicate ids (the first occurrence is kept), labels outside ``meta.classes``; with
    ``check_media``: missing files, empty frame folders, Git LFS pointers, unreadable or
    truncated media (``femo.data.decode.probe``, run in a thread pool of ``workers``), for
    ``path`` and ``audio_path``. Classes left without any clip raise a ManifestWarning (see
    :func:`empty_classes`). Returns ``(good, excluded)``: ``good`` keeps every column but
    ``build_error``; ``excluded`` has ``clip_id, path, check, reason``.
    Raises ManifestError when a required column is missing.
    """
    _require_columns(df.columns, df.attrs.get("source", f"manifest of {meta.dataset}"))
    df = df.reset_index(drop=True)
    found = _row_checks(df, meta)
    if check_media:
        found.update(_media_checks(df, [i for i in range(len(df)) if i not in found], workers))
    bad = sorted(found)
    excluded = pd.DataFrame({
        "clip_id": [df["clip_id"].iat[i] for i in bad], "path": [df["path"].iat[i] for i in bad],
        "check": [found[i][0] for i in bad], "reason": [found[i][1] for i in bad],
    }, columns=list(EXCLUDED_COLUMNS))
    good = df.drop(index=bad).drop(columns=[BUILD_ERROR], errors="ignore").reset_index(drop=True)
    good.attrs = dict(df.attrs)
    empty = empty_classes(good, meta.classes)
    if empty:
        warnings.warn(f"{meta.dataset}: class(es) {empty} have no usable clip", ManifestWarning, stacklevel=2)
    return good, excluded
