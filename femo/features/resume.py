"""What keeps re-running the extraction job honest: row screening, row fingerprints, the
per-clip journal and the store lock.

* **Screening.** Before any work, every manifest row goes through the same structural checks
  as the layout builders (:func:`femo.data.manifest.validate_manifest`: unsafe or duplicate
  ids, unknown labels, empty values). A bad row costs only itself: it is recorded in the index
  as ``failed`` with its reason (duplicates and id-less rows, which cannot have an index row of
  their own, only in ``STORE/excluded.csv``). Media problems (missing, LFS pointer, unreadable,
  an audio-only clip without samples, NaN/inf samples) are found while extracting, where the clip
  is decoded anyway (a separate pass would decode everything twice), and recorded the same way.
* **Fingerprints.** Each row's fingerprint hashes what its features depend on: ``path`` and
  ``audio_path`` with their size and modification time (a frame folder: its files' count, total
  size and newest mtime) and the extraction settings. A clip is kept on a re-run when its
  fingerprint is unchanged; the manifest's other columns (label, subject, metadata) are always
  taken from the current manifest, so editing them refreshes the index without re-extracting.
  Each extracted row also records ``content``, a hash of its media's bytes and the settings
  (:func:`content_fingerprints`): when the fingerprint changed but the bytes did not (a fresh
  copy of the data, a moved dataset: new paths or modification times), the clip is kept and its
  fingerprint refreshed, at the cost of reading those files once instead of extracting them again.
* **Journal.** Each finished clip is appended to ``<index stem>.journal.jsonl`` at once, so a
  kill (SIGKILL included) loses at most the clips in hand; the index table itself is rewritten
  every few seconds and at the end, which empties the journal.
* **Lock.** ``STORE/.lock`` (``STORE/.lock.shard-i-of-n`` for a shard) is held with ``flock``
  while a job runs and names its pid and host; a second job on the same store and index refuses.
  The kernel releases the lock when its holder dies, so a lock left by a killed job is taken
  over, and the output says whose it was.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from femo.data import store as fs
from femo.data.manifest import EXCLUDED_COLUMNS, ManifestMeta, ManifestWarning, validate_manifest

#: Name of the exclusion report written into the store.
EXCLUDED_NAME = "excluded.csv"
#: Checks whose rows cannot have an index row (no usable unique id).
_NO_INDEX_ROW = frozenset({"duplicate_id", "missing_value"})


class LockedError(RuntimeError):
    """Another live job holds the store's lock; the message names its pid, host and lock file."""


def screen_rows(manifest: pd.DataFrame, classes, *, check_media: bool = False,
                workers: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(good, excluded)`` rows of ``manifest`` (see :func:`femo.data.manifest.validate_manifest`).

    ``excluded`` has ``clip_id, path, check, reason``. ``classes`` are the sidecar's classes.
    """
    meta = ManifestMeta(classes=tuple(classes))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ManifestWarning)  # an empty class is the trainer's business
        return validate_manifest(manifest, meta, check_media=check_media, workers=workers)


def failed_rows(manifest: pd.DataFrame, excluded: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """Manifest rows of the excluded clips that can carry an index row, and clip_id -> error text.

    Duplicates (the first row keeps the id) and rows without an id are left out: they are
    reported in ``STORE/excluded.csv`` only.
    """
    own = excluded[~excluded["check"].isin(_NO_INDEX_ROW)]
    ids = manifest["clip_id"].astype(str)
    rows = manifest[~ids.duplicated() & ids.isin(own["clip_id"].astype(str))]
    return rows.assign(clip_id=rows["clip_id"].astype(str)), dict(
        zip(own["clip_id"].astype(str), own["check"].astype(str) + ": " + own["reason"].astype(str)))


def write_excluded(store: Path, excluded: pd.DataFrame) -> Path | None:
    """Write ``STORE/excluded.csv`` (or remove a stale one when nothing is excluded)."""
    from femo.data.store import atomic_write_text

    path = store / EXCLUDED_NAME
    if not len(excluded):
        path.unlink(missing_ok=True)
        return None
    atomic_write_text(path, excluded[list(EXCLUDED_COLUMNS)].to_csv(index=False))
    return path


def _media_signature(value: Any) -> list:
    """[path, size, mtime_ns] of a file; a frame folder adds up its files; [path] if absent."""
    if value is None or (isinstance(value, float) and value != value) or value == "":
        return []
    path = str(value)
    try:
        st = os.stat(path)
        if not os.path.isdir(path):
            return [path, st.st_size, st.st_mtime_ns]
        with os.scandir(path) as entries:
            stats = [e.stat() for e in entries if e.is_file()]
        return [path, len(stats), sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)]
    except OSError:
        return [path]


def row_fingerprints(rows: pd.DataFrame, config) -> pd.Series:
    """One ``"sha1:<hex>"`` string per row over its media signatures and the extraction
    ``config`` (a dataclass), aligned to ``rows``."""
    settings = json.dumps(asdict(config), sort_keys=True, default=str)
    audio = rows["audio_path"] if "audio_path" in rows.columns else pd.Series([None] * len(rows), index=rows.index)

    def one(path: Any, audio_path: Any) -> str:
        parts = [_media_signature(path), _media_signature(audio_path), settings]
        # the prefix keeps CSV readers from ever taking an all-digit digest for a number
        return "sha1:" + hashlib.sha1(json.dumps(parts, default=str).encode()).hexdigest()

    return pd.Series([one(p, a) for p, a in zip(rows["path"], audio)], index=rows.index, dtype=object)


def _media_digest(value: Any) -> str:
    """sha1 of a file's bytes; a frame folder: of its files' names and bytes in name order;
    "" for no path, "missing" when it cannot be read."""
    if value is None or (isinstance(value, float) and value != value) or value == "":
        return ""
    path = Path(str(value))
    digest = hashlib.sha1()
    try:
        files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
        for file in files:
            digest.update(file.name.encode() + b"\0" if path.is_dir() else b"")
            with open(file, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    except OSError:
        return "missing"
    return digest.hexdigest()


def content_fingerprints(rows: pd.DataFrame, config) -> pd.Series:
    """One ``"sha1:<hex>"`` per row over its media's bytes (``path``, ``audio_path``) and the
    extraction ``config``: what a clip's features depend on, wherever the files sit and whatever
    their modification times (reads every file once)."""
    settings = json.dumps(asdict(config), sort_keys=True, default=str)
    audio = rows["audio_path"] if "audio_path" in rows.columns else pd.Series([None] * len(rows), index=rows.index)
    return pd.Series(["sha1:" + hashlib.sha1(json.dumps([_media_digest(p), _media_digest(a), settings]).encode())
                      .hexdigest() for p, a in zip(rows["path"], audio)], index=rows.index, dtype=object)


#: Index columns a clip's extraction adds to its manifest row.
RESULT_COLUMNS: tuple[str, ...] = ("status", "error", "file", *fs.FLAG_COLUMNS, *fs.AUDIO_COLUMNS, "fingerprint",
                                   "content")


def kept_results(store: Path, name: str, fingerprints: dict[str, str], journal: Journal,
                 contents=None) -> tuple[dict[str, dict], list[str]]:
    """(clip_id -> result columns of the clips a re-run can keep, ids kept by content).

    Kept: ok in the index ``name`` or its journal, clip file present, and the fingerprint
    unchanged, or (with ``contents``, a callable mapping a list of clip ids to their current
    :func:`content_fingerprints`) the recorded ``content`` unchanged; those get the new
    fingerprint (see :mod:`femo.features.resume`)."""
    rows: dict[str, dict] = {}
    if (store / name).is_file():
        old = fs.read_index(store) if name == "index.csv" else read_index_file(store / name)
        rows = {str(r["clip_id"]): r for r in old.to_dict("records")}
    rows.update({str(r["clip_id"]): r for r in journal.rows()})
    ok = {cid: row for cid, row in rows.items() if row.get("status") == fs.STATUS_OK and cid in fingerprints
          and fs.clip_id_problem(cid) is None and fs.clip_file(store, cid).is_file()}
    changed = [cid for cid, row in ok.items() if row.get("fingerprint") != fingerprints[cid]
               and str(row.get("content") or "").startswith("sha1:")]
    now = contents(changed) if contents is not None and changed else {}
    moved = [cid for cid in changed if now.get(cid) == ok[cid]["content"]]
    same_bytes = set(moved)
    keep = {cid: {"clip_id": cid, **{k: row.get(k) for k in RESULT_COLUMNS}, "fingerprint": fingerprints[cid]}
            for cid, row in ok.items() if row.get("fingerprint") == fingerprints[cid] or cid in same_bytes}
    return keep, moved


def read_index_file(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"clip_id": str, "subject": str, "error": str}, keep_default_na=False,
                       na_values=[""])


def index_table(clips: pd.DataFrame, rows: list[dict]) -> pd.DataFrame:
    """Current manifest columns + RESULT_COLUMNS for every clip with a result ``row``, in clip_id order."""
    added = list(RESULT_COLUMNS)
    # a manifest column named like a store column keeps its values as `<name>_manifest`
    clips = clips.rename(columns={c: f"{c}_manifest" for c in clips.columns if c in added})
    results = pd.DataFrame(rows, columns=["clip_id", *added]).drop_duplicates("clip_id", keep="last")
    index = clips.merge(results, on="clip_id", how="inner")
    return index.sort_values("clip_id", kind="stable").reset_index(drop=True)


class Journal:
    """Append-only record of finished clips next to an index: one JSON object per line."""

    def __init__(self, store: Path, index_name: str) -> None:
        self.path = store / f"{Path(index_name).stem}.journal.jsonl"
        self._fh = None

    def rows(self) -> list[dict]:
        """Rows recorded so far (a line cut short by a kill is skipped)."""
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def append(self, row: dict) -> None:
        """Record one finished clip; written through to the OS before returning."""
        if self._fh is None:
            self._fh = open(self.path, "a", encoding="utf-8")
        self._fh.write(json.dumps(row, default=_plain) + "\n")
        self._fh.flush()

    def clear(self) -> None:
        """Forget the recorded rows (after they reached the index table)."""
        self.close()
        self.path.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the file handle."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else str(value)


def lock_name(index_name: str) -> str:
    """``.lock`` for ``index.csv``; ``.lock.shard-i-of-n`` for a shard's index."""
    stem = Path(index_name).stem
    return ".lock" if stem == "index" else f".lock.{stem.removeprefix('index.')}"


class StoreLock:
    """Exclusive, kernel-held lock on ``STORE/<lock_name>`` for the duration of a ``with`` block.

    Raises :class:`LockedError` when a live process holds it. The file holds
    ``{"pid", "host", "since"}`` while held and is emptied on release.
    """

    def __init__(self, store: Path, index_name: str = "index.csv") -> None:
        self.path = store / lock_name(index_name)
        self._fd: int | None = None

    def __enter__(self) -> StoreLock:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd)
            os.close(fd)
            raise LockedError(f"{self.path}: another `femo extract` is writing this store "
                              f"({_describe(holder)}); wait for it to finish, or stop it first") from None
        previous = _read_holder(fd)
        if previous.get("pid"):
            print(f"{self.path}: taking over the lock left by {_describe(previous)}, which is no longer running",
                  file=sys.stderr)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # an empty lock file = released cleanly
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def _read_holder(fd: int) -> dict:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not holder.get("pid"):
        return "holder unknown"
    return f"pid {holder['pid']} on host {holder.get('host', '?')} since {holder.get('since', '?')}"
