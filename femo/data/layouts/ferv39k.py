"""FERV39k: 38,935 face-crop clips from 22 scenes, 7 classes, one official train/test split.

Layout under ROOT (or ROOT/FERV39k), as the dataset ships it::

    4_setups/All_scenes/train_All.csv     # one clip per line, no header:
    4_setups/All_scenes/test_All.csv      #   "<Scene>/<Emotion>/<clip> <Emotion>", e.g. "Action/Sad/0010 Sad"
    2_ClipsforFaceCrop/<Scene>/<Emotion>/<clip>/*.jpg   # face-crop frames

Labels Happy Sad Neutral Angry Surprise Disgust Fear map to the canonical lowercase names.
``split`` is train/test from the list the clip is in (no folds: FERV39k's protocol is one
split). ``clip_id`` is the relative clip path with ``/`` replaced by ``_``
(``Action_Sad_0010``), ``scene`` the first path part. Clips are face crops without audio; the
dataset publishes no subject ids, so ``subject`` is the clip id.

Options: ``setup`` (folder under 4_setups holding one ``train_*.csv`` and one ``test_*.csv``,
default ``"All_scenes"``) and ``clips_dir`` (default ``"2_ClipsforFaceCrop"``).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from femo.config import CLASSES
from femo.data.layouts import first_existing, ordered
from femo.data.manifest import ManifestError, ManifestMeta, canonical_label


def read_split_list(path: Path, split: str) -> pd.DataFrame:
    """``clip_id, rel, label, split`` from one FERV39k list; ManifestError names bad lines."""
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[0].count("/") != 2:
            raise ManifestError(f"{path}:{n}: expected '<Scene>/<Emotion>/<clip> <Emotion>', got {line!r}")
        rel = fields[0].strip("/")
        rows.append({"clip_id": rel.replace("/", "_"), "rel": rel, "label": canonical_label(fields[1]),
                     "split": split, "scene": rel.split("/")[0]})
    return pd.DataFrame(rows, columns=["clip_id", "rel", "label", "split", "scene"])


def _one(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        raise ManifestError(f"{folder}: expected exactly one {pattern} split list, found {[p.name for p in found]}")
    return found[0]


def build(root: Path, *, setup: str = "All_scenes",
          clips_dir: str = "2_ClipsforFaceCrop") -> tuple[pd.DataFrame, ManifestMeta]:
    """Manifest rows of a FERV39k tree at ``root``; see the module docstring."""
    root = Path(root).absolute()
    setups = first_existing(root, (f"4_setups/{setup}", f"FERV39k/4_setups/{setup}"), f"FERV39k setup {setup!r}")
    base = setups.parent.parent
    df = pd.concat([read_split_list(_one(setups, "train_*.csv"), "train"),
                    read_split_list(_one(setups, "test_*.csv"), "test")], ignore_index=True)
    df["path"] = [str(base / clips_dir / rel) for rel in df["rel"]]
    df["subject"] = df["clip_id"]
    extra = {"root": str(root), "setup": setup, "clips_dir": clips_dir,
             "protocol": f"official train/test split ({setup})"}
    return ordered(df.drop(columns="rel")), ManifestMeta(dataset="ferv39k", classes=CLASSES, extra=extra)
