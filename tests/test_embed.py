"""Embedding cache over a tiny feature store written with femo.data.store."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from femo.data.store import StoreMeta, write_clip, write_index, write_meta
from femo.features.embed import cache_embeddings

T, S = 5, 16


class MeanColour(nn.Module):
    """A cheap encoder: per-channel mean and max of the crop -> (N, 6); counts frames seen."""

    name = "meancolour"
    out_dim = 6

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += len(x)
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


def _arrays(seed: int, found: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    faces = rng.integers(0, 256, (T, S, S, 3), dtype=np.uint8)
    faces[~found] = 0
    return {
        "times": np.arange(T, dtype=np.float32) / 10, "faces": faces, "face_found": found,
        "face_box": np.zeros((T, 4), np.float32), "landmarks": np.zeros((T, 478, 3), np.float32),
        "blendshapes": np.zeros((T, 52), np.float32), "head_pose": np.zeros((T, 3), np.float32),
        "pose": np.zeros((T, 33, 4), np.float32), "pose_found": np.zeros(T, bool),
        "logmel": np.zeros((64, 0), np.float32), "mfcc": np.zeros((20, 0), np.float32),
        "prosody": np.zeros((0, 4), np.float32), "has_audio": np.array(False),
    }


@pytest.fixture
def store(tmp_path):
    """Three ok clips (one with missing faces, one with none at all) and one failed clip."""
    root = tmp_path / "store"
    write_meta(root, StoreMeta(classes=("happy", "sad"), num_frames=T, face_size=S))
    found = {"a": np.ones(T, bool), "b": np.array([True, False, True, False, True]), "c": np.zeros(T, bool)}
    for i, (cid, mask) in enumerate(found.items()):
        write_clip(root, cid, _arrays(i, mask))
    index = pd.DataFrame({"clip_id": ["a", "b", "c", "d"], "label": ["happy", "sad", "happy", "sad"],
                          "status": ["ok", "ok", "ok", "failed"], "error": ["", "", "", "decode error"]})
    write_index(root, index)
    return root


def test_cache_writes_float16_rows_and_zeros_where_no_face(store):
    enc = MeanColour()
    out = cache_embeddings(store, encoder=enc, batch_size=4, progress=False)
    assert out == store / "embeddings" / "meancolour"
    assert sorted(p.stem for p in out.glob("*.npy")) == ["a", "b", "c"]
    emb = np.load(out / "b.npy")
    assert emb.shape == (T, 6) and emb.dtype == np.float16
    faces = _arrays(1, np.array([True, False, True, False, True]))["faces"]
    assert emb[0, :3] == pytest.approx(faces[0].reshape(-1, 3).mean(0) / 255, abs=2e-3)
    assert not emb[[1, 3]].any()
    assert not np.load(out / "c.npy").any()
    assert enc.seen == T + 3
    meta = json.loads((out / "meta.json").read_text())
    assert meta["out_dim"] == 6 and meta["n_clips"] == 3 and meta["n_failed"] == 0


def test_cache_is_resumable_and_force_recomputes(store):
    enc = MeanColour()
    out = cache_embeddings(store, encoder=enc, progress=False)
    (out / "a.npy").unlink()
    enc.seen = 0
    cache_embeddings(store, encoder=enc, progress=False)
    assert enc.seen == T  # only clip a was embedded again
    enc.seen = 0
    cache_embeddings(store, encoder=enc, force=True, progress=False)
    assert enc.seen == T + 3
    assert not list(out.glob(".*tmp"))


def test_unreadable_clip_is_skipped_and_recorded(store):
    (store / "clips" / "b.npz").write_bytes(b"broken")
    out = cache_embeddings(store, encoder=MeanColour(), progress=False)
    assert sorted(p.stem for p in out.glob("*.npy")) == ["a", "c"]
    errors = pd.read_csv(out / "errors.csv")
    assert errors["clip_id"].astype(str).tolist() == ["b"] and "b.npz" in errors["error"][0]


def test_named_encoder_builds_a_frozen_frame_encoder(store):
    out = cache_embeddings(store, encoder="resnet18", progress=False)
    assert out.name == "resnet18"
    emb = np.load(out / "a.npy")
    assert emb.shape == (T, 512) and np.isfinite(emb).all() and emb.any()


def test_identical_crops_of_a_clip_are_encoded_once(tmp_path):
    """A still's T copies (and a short clip's repeated frames) cost one crop each; rows are copies."""
    root = tmp_path / "store"
    write_meta(root, StoreMeta(classes=("happy", "sad"), num_frames=T, face_size=S))
    still = _arrays(0, np.ones(T, bool))
    still["faces"][:] = still["faces"][0]  # T copies of one crop
    short = _arrays(1, np.array([True, True, False, True, True]))
    short["faces"][1] = short["faces"][0]  # frames 0-1 repeat, frame 2 has no face, 3-4 repeat
    short["faces"][4] = short["faces"][3]
    write_clip(root, "still", still)
    write_clip(root, "short", short)
    write_index(root, pd.DataFrame({"clip_id": ["still", "short"], "label": ["happy", "sad"],
                                    "status": ["ok", "ok"], "error": ["", ""]}))
    enc = MeanColour()
    out = cache_embeddings(root, encoder=enc, batch_size=64, progress=False)
    assert enc.seen == 1 + 2
    emb = np.load(out / "still.npy")
    assert (emb == emb[0]).all() and emb[0, :3] == pytest.approx(still["faces"][0].reshape(-1, 3).mean(0) / 255, abs=2e-3)
    got = np.load(out / "short.npy")
    want = MeanColour()(torch.from_numpy(short["faces"]).permute(0, 3, 1, 2).float() / 255).numpy().astype(np.float16)
    np.testing.assert_array_equal(got[[0, 1, 3, 4]], want[[0, 1, 3, 4]])
    assert not got[2].any()
