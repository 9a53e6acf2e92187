"""What a report may show of the people in the data: faces, local paths and clip ids.

One ``privacy`` parameter per report (:data:`PRIVACY_CHOICES`): ``none`` shows face crops, paths
and clip ids as they are; ``blur`` blurs every face crop; ``landmarks`` replaces each crop by its
landmark drawing on grey; ``auto`` (the default) is ``blur`` for every dataset except femo's
synthetic one. With privacy on (anything but ``none``):

* face crops go through :func:`femo.audit.plots_attribution.private_faces`;
* the report driver (:mod:`femo.reports.execute`) scrubs the executed notebook, its HTML,
  ``config.json``, ``metrics.json`` and every other text file the notebook wrote in its folder or
  a subfolder (tables, records; :func:`report_text_files`; a trained run folder made there is left
  as trained, since later reports read it) with :func:`scrub_text`: known folders (data root, store,
  run, report folder, working directory, home) become short names (``DATA/...``, ``STORE``,
  ``RUN``, ``.``, ``~``), any other absolute path keeps only its last two parts, and clip ids
  become stable pseudonyms (``clip-<8 hex>``, the same in every report of one dataset) unless
  ``show_clip_ids`` is asked for, since clip ids are often the file name of a person's recording.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

#: Values of the ``privacy`` report parameter.
PRIVACY_CHOICES: tuple[str, ...] = ("auto", "none", "blur", "landmarks")
#: Dataset name (store.json / manifest sidecar) for which ``auto`` shows faces as they are.
SYNTHETIC = "synthetic"
# An absolute POSIX path: "/" then at least two name parts (so "1/2" ratios and "/" alone are not paths).
# Not preceded by a name character, "+", "/" or "=": keeps base64 images and URLs intact.
_ABS_PATH = re.compile(r"(?<![\w.~+/=-])/(?:[\w.@+-]+/)+[\w.@+-]*")
# An absolute path right after a terminal colour code (tracebacks in a saved notebook).
_ANSI_PATH = re.compile(r"((?:\\u001b|\x1b)\[[0-9;]*m)(/(?:[\w.@+-]+/)+[\w.@+-]*)")
_TOKEN = re.compile(r"[\w.@+-]+")


def resolve_privacy(requested: str, dataset: str) -> str:
    """``auto`` -> ``none`` for the synthetic set, else ``blur``; other values checked and returned."""
    if requested not in PRIVACY_CHOICES:
        raise ValueError(f"unknown privacy mode {requested!r}; choose from {list(PRIVACY_CHOICES)}")
    if requested == "auto":
        return "none" if dataset == SYNTHETIC else "blur"
    return requested


def dataset_of(data: str) -> str:
    """Dataset name of a report's ``data`` parameter without extracting anything: ``synthetic``
    for "" (the demo set), the store's or manifest sidecar's ``dataset``, else ``unknown``."""
    if not data:
        return SYNTHETIC
    path = Path(data).expanduser()
    candidates = [path / "store.json", path / "manifest.meta.json",
                  path.with_name(path.stem + ".meta.json")]
    for candidate in candidates:
        if candidate.is_file():
            try:
                return str(json.loads(candidate.read_text()).get("dataset", "unknown"))
            except (ValueError, AttributeError):
                return "unknown"
    return "unknown"


def pseudonym(clip_id: str) -> str:
    """Stable stand-in for a clip id: ``clip-`` + 8 hex digits of its sha1."""
    return "clip-" + hashlib.sha1(str(clip_id).encode()).hexdigest()[:8]


def shown_ids(ids: Iterable[str], privacy: str) -> list[str]:
    """Clip ids as a report under resolved ``privacy`` shows them (pseudonyms unless ``none``)."""
    return [str(i) if privacy == "none" else pseudonym(i) for i in ids]


def data_root(data: str) -> Path | None:
    """The folder a report's paths are shown relative to: the manifest's or store's folder."""
    if not data:
        return None
    path = Path(data).expanduser().absolute()
    return path if path.is_dir() else path.parent


def _roots(roots: Mapping[str, str | Path | None]) -> list[tuple[str, str]]:
    """(absolute prefix, replacement) pairs, longest prefix first, resolved and as given."""
    pairs = {}
    for name, folder in roots.items():
        if not folder:
            continue
        for form in {str(Path(folder).expanduser().absolute()), os.path.realpath(Path(folder).expanduser())}:
            if len(form) > 1:
                pairs[form.rstrip("/")] = name
    return sorted(pairs.items(), key=lambda kv: -len(kv[0]))


def scrub_text(text: str, *, roots: Mapping[str, str | Path | None], clip_ids: Iterable[str] = ()) -> str:
    """``text`` with absolute paths made relative and clip ids replaced by pseudonyms.

    roots: {replacement: folder}, e.g. ``{"DATA": manifest_folder, ".": report_folder}``; a path
    under a folder becomes ``replacement/rest`` (``rest`` alone for "."), any other absolute
    path its last two parts. clip_ids: ids to replace wherever they appear as a whole token.
    """
    for prefix, name in _roots(roots):
        # the folder itself -> NAME; a path under it -> NAME/rest ("rest" alone for ".")
        text = re.sub(re.escape(prefix) + r"(/|(?![\w.@+-]))",
                      lambda m, n=name: ("" if n == "." else n + "/") if m.group(1) else n, text)
    text = _ABS_PATH.sub(lambda m: _short(m.group(0)), text)
    text = _ANSI_PATH.sub(lambda m: m.group(1) + _short(m.group(2)), text)
    ids = {str(i) for i in clip_ids if len(str(i)) >= 3}
    if ids:
        text = _TOKEN.sub(lambda m: _pseudonymize(m.group(0), ids), text)
    return text


def _short(path: str) -> str:
    """An absolute path outside the known folders: its last two parts only."""
    return "…/" + "/".join(path.rstrip("/").split("/")[-2:])


def _pseudonymize(token: str, ids: set[str]) -> str:
    """``token``, or its pseudonym when it is a clip id or a clip id's file name (suffix kept)."""
    if token in ids:
        return pseudonym(token)
    stem, dot, suffix = token.rpartition(".")
    return pseudonym(stem) + dot + suffix if dot and stem in ids else token


def scrub_file(path: Path, *, roots: Mapping[str, str | Path | None], clip_ids: Iterable[str] = ()) -> None:
    """Rewrite a text file (notebook, HTML, JSON) in place with :func:`scrub_text`."""
    if path.is_file():
        path.write_text(scrub_text(path.read_text(encoding="utf-8"), roots=roots, clip_ids=clip_ids),
                        encoding="utf-8")


def _clip_ids(data: str) -> list[str]:
    """Clip ids of a report's data (store index and manifest; [] when neither is readable)."""
    import pandas as pd

    if not data:
        return []
    path = Path(data).expanduser()
    tables = [path / "index.csv", path / "manifest.csv"] if path.is_dir() else [
        path, path.parent / ("store" if path.name == "manifest.csv" else f"{path.stem}_store") / "index.csv"]
    ids: set[str] = set()
    for table in tables:
        if table.is_file() and table.suffix == ".csv":
            try:
                ids |= set(pd.read_csv(table, usecols=["clip_id"], dtype=str)["clip_id"].dropna())
            except (ValueError, OSError):
                continue
    return sorted(ids)


def scrub_report(folder: Path, parameters: Mapping[str, object], *, privacy: str = "auto") -> str:
    """Scrub one report folder's notebook, HTML, config.json, metrics.json and report.json under ``privacy``
    (resolved against the dataset of ``parameters["data"]``); returns the resolved mode."""
    data = str(parameters.get("data", "") or "")
    mode = resolve_privacy(privacy, dataset_of(data))
    if mode == "none":
        return mode
    roots = {"DATA": data_root(data), "RUN": parameters.get("run_dir") or None, ".": folder, "~": Path.home()}
    if data and (Path(data) / "store.json").is_file():
        roots["STORE"] = data
    ids = _clip_ids(data)
    for path in report_text_files(folder):
        scrub_file(path, roots=roots, clip_ids=ids)
    return mode


#: Suffixes of the text files a report folder may hold (the notebook, its HTML, tables, records).
TEXT_SUFFIXES: frozenset[str] = frozenset({".ipynb", ".html", ".json", ".csv", ".tsv", ".txt", ".md", ".log"})
#: Text files larger than this (bytes) are left as they are (no report writes one).
MAX_SCRUB_BYTES = 200 * 2**20


def _is_run_folder(path: Path) -> bool:
    """A trained run folder (``config.json`` beside checkpoints or ``fold_K`` folders): later reports
    read it by clip id, so it stays as trained (it is the model, not a page of the report)."""
    return (path / "config.json").is_file() and (any(path.glob("*.pt")) or any(path.glob("fold_*")))


def report_text_files(folder: Path) -> list[Path]:
    """Every text file (:data:`TEXT_SUFFIXES`) under ``folder``, its subfolders included (tables and
    records a notebook writes there), except inside trained run folders (:func:`_is_run_folder`)."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not _is_run_folder(here / d))
        found += [here / f for f in sorted(files) if Path(f).suffix.lower() in TEXT_SUFFIXES
                  and (here / f).stat().st_size <= MAX_SCRUB_BYTES]
    return found
