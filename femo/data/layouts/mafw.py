"""MAFW: 10,045 multimodal clips in the wild, 11 single-expression classes, 5-fold protocol.

Layout under ROOT, as the dataset ships it::

    Train & Test Set/single/no_caption/set_1/train.txt, test.txt .. set_5/...
        # one clip per line: "<clip>.mp4 <label>", e.g. "00025.mp4 anger"
    data/clips/<clip>.mp4        # video with audio
    data/frames/<clip>/          # optional extracted frames
    Labels/annotation.xlsx       # optional: clip, invalid, one column per class

The split folder is also found under ``train_test_set/`` (how the archive unpacks) and as
``single/no_caption`` directly under ROOT. ``fold`` = the set whose test list holds the clip
(clip in set_k/test.txt -> fold k). MAFW's 11 classes are anger, disgust, fear, happiness,
neutral, sadness, surprise, contempt, anxiety, helplessness, disappointment; the 7 shared ones
get femo's canonical names (angry, disgust, fear, happy, neutral, sad, surprise) and the other
4 keep theirs. The class list is the canonical 7 in ``femo.config.CLASSES`` order followed by
contempt, anxiety, helplessness, disappointment, so shared classes keep their indices across
datasets. MAFW publishes no subject ids: ``subject`` is the clip id.

Votes: when ``Labels/annotation.xlsx`` exists, its class columns become ``vote_<class>`` (as
given in the workbook) via :func:`femo.data.layouts.read_votes`.

Options: ``source`` ``"clips"`` (default, path = data/clips/<clip>.mp4) or ``"frames"``
(path = data/frames/<clip>/, ``audio_path`` = the clip's mp4 when present).
"""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from femo.config import CLASSES
from femo.data.layouts import first_existing, ordered, read_votes
from femo.data.manifest import ManifestError, ManifestMeta, canonical_label

MAFW_NAMES: tuple[str, ...] = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise",
                               "contempt", "anxiety", "helplessness", "disappointment")
MAFW_CLASSES: tuple[str, ...] = CLASSES + ("contempt", "anxiety", "helplessness", "disappointment")
SPLIT_DIRS = ("Train & Test Set/single/no_caption", "train_test_set/Train & Test Set/single/no_caption",
              "single/no_caption")


def clip_name(value: object) -> str:
    """MAFW clip id: the file stem, zero-padded to 5 digits when numeric (``25`` -> ``00025``)."""
    text = str(value).strip()
    stem = text.rsplit(".", 1)[0] if text.lower().endswith((".mp4", ".avi")) else text
    if stem.replace(".0", "").isdigit():
        return f"{int(float(stem)):05d}"
    return stem


def read_split_list(path: Path) -> pd.DataFrame:
    """``clip_id, file, label`` from one ``<clip>.mp4 <label>`` list; ManifestError names bad lines."""
    if not path.is_file():
        raise ManifestError(f"{path}: MAFW split list not found (expected set_1..set_5 with train.txt/test.txt)")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise ManifestError(f"{path}:{n}: expected '<clip>.mp4 <label>', got {line!r}")
        rows.append({"clip_id": clip_name(fields[0]), "file": fields[0], "label": canonical_label(fields[1])})
    return pd.DataFrame(rows, columns=["clip_id", "file", "label"])


def build(root: Path, *, source: str = "clips") -> tuple[pd.DataFrame, ManifestMeta]:
    """Manifest rows of a MAFW tree at ``root``; see the module docstring."""
    if source not in ("clips", "frames"):
        raise ValueError(f"mafw: unknown source={source!r}; known: ['clips', 'frames']")
    root = Path(root).absolute()
    split_dir = first_existing(root, SPLIT_DIRS, "MAFW single/no_caption split folder")
    df = pd.concat([read_split_list(split_dir / f"set_{k}" / "test.txt").assign(fold=k) for k in range(1, 6)],
                   ignore_index=True)
    clips = root / "data" / "clips"
    if source == "clips":
        df["path"] = [str(clips / f) for f in df["file"]]
    else:
        df["path"] = [str(root / "data" / "frames" / c) for c in df["clip_id"]]
        have = set(os.listdir(clips)) if clips.is_dir() else set()
        df["audio_path"] = [str(clips / f) if f in have else None for f in df["file"]]
    df["subject"] = df["clip_id"]
    annotation = root / "Labels" / "annotation.xlsx"
    if annotation.is_file():
        votes = read_votes(annotation, MAFW_CLASSES, clip_name=clip_name)
        df = df.merge(votes, on="clip_id", how="left")
    extra = {"root": str(root), "source": source, "split_dir": str(split_dir), "votes": annotation.is_file(),
             "original_names": dict(zip(MAFW_NAMES, map(canonical_label, MAFW_NAMES))),
             "protocol": "5-fold (official MAFW single/no_caption sets; fold k = test set k)"}
    return ordered(df.drop(columns="file")), ManifestMeta(dataset="mafw", classes=MAFW_CLASSES, extra=extra)
