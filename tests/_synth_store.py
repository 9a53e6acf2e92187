"""A synthetic feature store with a planted label signal, written with femo.data.store.write_clip.

Each clip's ``informative`` column says which modality carries its label:

- ``face``: the face carries it -- a class prototype direction in the cached embeddings
  (``embeddings/proto``), a class colour channel in the face crops, and a class blendshape
  channel (so the landmark modality sees it too);
- ``audio``: a class-specific mel band is raised in the log-mel;
- ``both``: face and audio.

Where a modality does not carry the label it holds only noise (no class pattern), so a model using
only that modality is at chance on those clips and a fused model can tell which modality to trust.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from femo.data.store import StoreMeta, write_clip, write_index, write_meta

CLASSES = ("happy", "sad", "angry")
EMB_DIM = 16
EMB_NAME = "proto"


_TEMPLATE = np.random.default_rng(1234).random((478 + 33, 3)).astype(np.float32)


def _clip_arrays(rng, label_face: int | None, label_audio: int | None, *, t: int, s: int, a: int, has_audio: bool) -> dict:
    face_found = rng.random(t) > 0.1
    face_found[0] = True
    faces = rng.integers(0, 60, size=(t, s, s, 3)).astype(np.uint8)
    if label_face is not None:
        faces[..., label_face] += 150
    faces[~face_found] = 0
    blend = (rng.random((t, 52)) * 0.3).astype(np.float32)
    if label_face is not None:
        blend[:, 10 + label_face] += 0.6
    logmel = (-60 + 5 * rng.standard_normal((64, a))).astype(np.float32)
    if label_audio is not None:
        logmel[8 + 16 * label_audio: 16 + 16 * label_audio] += 40
    n_audio = a if has_audio else 0
    return {
        "times": np.arange(t, dtype=np.float32) / 4, "faces": faces, "face_found": face_found,
        "face_box": np.tile(np.array([0.3, 0.2, 0.7, 0.8], np.float32), (t, 1)),
        "landmarks": (_TEMPLATE[:478] + 0.005 * rng.standard_normal((t, 478, 3))).astype(np.float32), "blendshapes": blend,
        "head_pose": (3 * rng.standard_normal((t, 3))).astype(np.float32),
        "pose": np.concatenate([_TEMPLATE[478:] + 0.01 * rng.standard_normal((t, 33, 3)),
                                rng.random((t, 33, 1))], axis=2).astype(np.float32), "pose_found": rng.random(t) > 0.5,
        "logmel": logmel[:, :n_audio], "mfcc": rng.standard_normal((20, n_audio)).astype(np.float32),
        "prosody": rng.random((n_audio, 4)).astype(np.float32), "has_audio": np.array(has_audio),
    }


def _embedding(rng, label: int | None, t: int, protos: np.ndarray) -> np.ndarray:
    signal = 0.0 if label is None else 2.5 * protos[label]
    return (rng.standard_normal((t, EMB_DIM)) + signal).astype(np.float16)


def build_store(root: str | Path, *, n: int = 120, t: int = 4, s: int = 16, a: int = 32, folds: int = 3,
                seed: int = 0, n_failed: int = 0, votes: bool = False, no_audio_every: int = 0,
                informative: tuple[str, ...] = ("face", "audio", "both")) -> Path:
    """Write a store of ``n`` ok clips (+ ``n_failed`` failed rows) under ``root``; returns its path."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    protos = rng.standard_normal((len(CLASSES), EMB_DIM))
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    rows = []
    for i in range(n):
        label, kind = int(rng.integers(len(CLASSES))), informative[int(rng.integers(len(informative)))]
        lf = label if kind in ("face", "both") else None
        la = label if kind in ("audio", "both") else None
        has_audio = not (no_audio_every and i % no_audio_every == 0)
        cid = f"c{i:04d}"
        write_clip(root, cid, _clip_arrays(rng, lf, la, t=t, s=s, a=a, has_audio=has_audio))
        emb_dir = root / "embeddings" / EMB_NAME
        emb_dir.mkdir(parents=True, exist_ok=True)
        np.save(emb_dir / f"{cid}.npy", _embedding(rng, lf, t, protos))
        subject = f"s{i // 2:03d}"
        row = {"clip_id": cid, "path": f"{cid}.mp4", "label": CLASSES[label], "subject": subject,
               "fold": 1 + (i // 2) % folds, "informative": kind, "age_group": ["young", "old"][i % 2],
               "status": "ok", "error": "", "file": f"clips/{cid}.npz", "has_audio": has_audio}
        if votes:
            counts = rng.integers(0, 3, len(CLASSES))
            counts[label] += 6
            row.update({f"vote_{c}": int(v) for c, v in zip(CLASSES, counts)})
        rows.append(row)
    for j in range(n_failed):
        rows.append({"clip_id": f"bad{j}", "path": f"bad{j}.mp4", "label": CLASSES[0], "subject": f"b{j}",
                     "fold": 1, "informative": "face", "age_group": "young", "status": "failed",
                     "error": "MediaError: unreadable", "file": "", "has_audio": False})
    write_index(root, pd.DataFrame(rows))
    write_meta(root, StoreMeta(classes=CLASSES, dataset="synthetic-test", num_frames=t, face_size=s))
    return root
