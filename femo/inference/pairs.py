"""Clip-level prediction of media pairs: a face (still image, video or frame folder) and a separate
audio file (``audio_path``), as in a pair manifest.

Streaming prediction (:mod:`femo.inference.stream`) needs a video with its own audio track. A face
image with a voice recorded apart (``femo predict face.jpg --audio voice.flac``, or a manifest with
``path`` and ``audio_path`` columns) is instead predicted the way training saw it: each row is
extracted by femo's extraction job into a temporary feature store with the run's recorded
extraction settings (frames, face crop side, pose stride, pitch tracker, max side) and the
openSMILE set matching the run's functionals width, face embeddings are cached with the run's
encoder when it was trained on embeddings, and the run's model (for a k-fold run: the mean of its
folds' probabilities) scores the clip. A row that cannot be extracted (missing or unreadable file)
is reported with its error and gets no probabilities; the other rows go on.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd


def _extract_config(folder):
    """ExtractConfig of the run: its recorded extraction settings plus the functional set its
    audio encoder reads (by width F: 88 = eGeMAPS, 6373 = ComParE)."""
    from femo.features.extract import ExtractConfig
    from femo.features.functionals import FUNCTIONAL_SETS

    model = folder.model_config()
    dim = model.functionals_dim if model.audio_input != "logmel" else 0
    sets = {f: name for name, f in FUNCTIONAL_SETS.items()}
    if dim and dim not in sets:
        raise ValueError(f"{folder.path}: functionals width {dim} matches no openSMILE set {FUNCTIONAL_SETS}")
    ext = folder.extraction
    return ExtractConfig(num_frames=int(ext["num_frames"]), face_size=int(ext["face_size"]),
                         pose_stride=int(ext["pose_stride"]), pitch=str(ext["pitch"]), max_side=ext["max_side"],
                         audio_functionals=sets.get(dim or 0, "none"))


def pair_table(paths, audio_paths) -> pd.DataFrame:
    """A manifest-like table (clip_id, path, audio_path) of equally long lists; audio may be None."""
    paths = [str(p) for p in paths]
    audio = [None if a is None or (isinstance(a, float) and np.isnan(a)) else str(a) for a in audio_paths]
    if len(paths) != len(audio):
        raise ValueError(f"{len(paths)} media paths but {len(audio)} audio paths")
    return pd.DataFrame({"clip_id": [f"row{i:06d}" for i in range(len(paths))], "path": paths, "audio_path": audio})


def predict_pairs(run: str | Path, rows: pd.DataFrame, *, device: str = "cpu", progress: bool = False) -> pd.DataFrame:
    """Predict every row of ``rows`` (columns ``path`` and optional ``audio_path``; absolute paths).

    Returns one row per input: path, audio_path, status (ok | failed), error, label (predicted
    class, empty when failed) and p_<class> for each of the run's classes (NaN when failed).
    """
    from femo.features.embed import cache_embeddings
    from femo.features.extract import run_extraction
    from femo.training.cross import run_probabilities
    from femo.training.runs import RunFolder

    folder = RunFolder(run)
    first = folder.folds[0] if folder.is_kfold else folder
    classes = list(first.classes)
    table = rows.reset_index(drop=True).copy()
    if "audio_path" not in table.columns:
        table["audio_path"] = None
    table["clip_id"] = [f"row{i:06d}" for i in range(len(table))]
    manifest = table[["clip_id", "path", "audio_path"]].assign(label=classes[0], subject=table["clip_id"])
    with tempfile.TemporaryDirectory(prefix="femo-pairs-") as tmp:
        store = Path(tmp) / "store"
        index = run_extraction(manifest, store, classes=classes, dataset="predict", config=_extract_config(first),
                               progress=progress)
        ok = index[index["status"] == "ok"].reset_index(drop=True)
        probs = np.full((len(table), len(classes)), np.nan)
        if len(ok):
            embeddings = first.model_config().embeddings
            if embeddings:
                cache_embeddings(store, encoder=embeddings, progress=progress)
            p, _ = run_probabilities(folder, store, ok, device=device)
            probs[ok["clip_id"].str[3:].astype(int).to_numpy()] = p
    status = index.set_index("clip_id").reindex(table["clip_id"])
    out = pd.DataFrame({"path": table["path"].astype(str), "audio_path": table["audio_path"],
                        "status": status["status"].fillna("failed").to_numpy(),
                        "error": status.get("error", pd.Series("", index=status.index)).fillna("").to_numpy()})
    out["label"] = [classes[int(np.argmax(r))] if np.isfinite(r).all() else "" for r in probs]
    return pd.concat([out, pd.DataFrame(probs, columns=[f"p_{c}" for c in classes])], axis=1)
