"""Content fingerprints of a data source (a manifest CSV, a folder holding one, or a dataset root),
so that a cached result is reused only for the same data, never for the same folder name alone.

* a manifest CSV: its bytes, its sidecar ``<stem>.meta.json``, and the size and modification time
  of every media file it lists (``path`` and ``audio_path``, relative to the manifest's folder);
* a folder with ``manifest.csv``: that manifest as above;
* any other folder (a dataset root): the relative path, size and modification time of every file.

Reading media bytes would cost minutes on a large corpus; size + mtime change whenever a file is
replaced or edited, which is what a rerun must notice.
"""
from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path


def _stat_line(path: Path, name: str) -> str:
    try:
        st = path.stat()
    except OSError:
        return f"{name}\tmissing\n"
    return f"{name}\t{st.st_size}\t{st.st_mtime_ns}\n"


def _manifest(path: Path, digest) -> None:
    digest.update(path.read_bytes())
    meta = path.with_name(path.stem + ".meta.json")
    if meta.is_file():
        digest.update(meta.read_bytes())
    with path.open(newline="", encoding="utf-8", errors="replace") as fh:
        for row in csv.DictReader(fh):
            for column in ("path", "audio_path"):
                value = (row.get(column) or "").strip()
                if value:
                    digest.update(_stat_line(path.parent / value, value).encode())


def _tree(root: Path, digest) -> None:
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            full = Path(folder) / name
            digest.update(_stat_line(full, str(full.relative_to(root))).encode())


def data_fingerprint(source: str | Path) -> str:
    """16 hex digits identifying the content of ``source`` (see the module docstring); "" for ""."""
    if not str(source):
        return ""
    path = Path(source).expanduser().resolve()
    digest = hashlib.sha256()
    if path.is_file():
        _manifest(path, digest)
    elif (path / "manifest.csv").is_file():
        _manifest(path / "manifest.csv", digest)
    elif path.is_dir():
        _tree(path, digest)
    else:
        digest.update(b"missing:" + str(path).encode())
    return digest.hexdigest()[:16]
