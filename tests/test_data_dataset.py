"""FeatureDataset sample dicts and subject-disjoint splits."""
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from _synth_store import CLASSES, EMB_DIM, EMB_NAME, build_store
from femo.config import DataConfig
from femo.data.dataset import FeatureDataset, audio_inputs, subject_split
from femo.data.store import StoreError, read_index, write_index
from femo.features.geometry import GEOMETRY_DIM

DATA = DataConfig(num_frames=4, face_size=16, audio_frames=24, classes=CLASSES)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("store"), n=12, n_failed=2, votes=True, no_audio_every=4)


def test_sample_dict_shapes_and_types(store):
    ds = FeatureDataset(store, config=DATA)
    assert len(ds) == 12 and ds.n_excluded == 2 and ds.classes == CLASSES
    s = ds[1]
    assert s["face"].shape == (4, 3, 16, 16) and s["face"].dtype == torch.float32
    assert 0.0 <= float(s["face"].min()) and float(s["face"].max()) <= 1.0
    assert s["face_mask"].shape == (4,) and s["face_mask"].dtype == torch.bool
    assert s["landmarks"].shape == (4, GEOMETRY_DIM) and s["landmarks_mask"].dtype == torch.bool
    assert s["audio"].shape == (1, 64, 24) and s["prosody"].shape == (24, 4)
    assert s["audio_mask"].shape == () and bool(s["audio_mask"])
    assert s["label"].dtype == torch.int64 and int(s["index"]) == 1
    assert float(s["votes"].sum()) == pytest.approx(1.0) and int(s["votes"].argmax()) == int(s["label"])
    assert "face_emb" not in s


def test_clip_without_audio_is_masked_zeros(store):
    ds = FeatureDataset(store, config=DATA)
    s = ds[0]  # no_audio_every=4 -> clip 0 has no audio track
    assert not bool(s["audio_mask"])
    assert float(s["audio"].abs().sum()) == 0.0 and float(s["prosody"].abs().sum()) == 0.0


def test_resampling_frames_and_faces(store):
    ds = FeatureDataset(store, config=DataConfig(num_frames=8, face_size=32, audio_frames=16))
    s = ds[2]
    assert s["face"].shape == (8, 3, 32, 32) and s["landmarks"].shape == (8, GEOMETRY_DIM)
    assert s["audio"].shape == (1, 64, 16)


def test_embeddings_replace_faces_and_batch(store):
    ds = FeatureDataset(store, config=DATA, embeddings=EMB_NAME, cache=True)
    batch = next(iter(DataLoader(ds, batch_size=5)))
    assert batch["face_emb"].shape == (5, 4, EMB_DIM) and "face" not in batch
    assert ds.embedding_dim() == EMB_DIM
    assert torch.equal(ds[3]["face_emb"], ds[3]["face_emb"])  # served from the cache


def test_missing_embedding_file_is_named(store):
    ds = FeatureDataset(store, config=DATA, embeddings="nope")
    with pytest.raises(StoreError, match="nope.*cache_embeddings"):
        ds[0]


def test_votes_one_hot_without_vote_columns(tmp_path):
    root = build_store(tmp_path, n=4)
    ds = FeatureDataset(root, config=DATA)
    np.testing.assert_array_equal(ds.votes, np.eye(3, dtype=np.float32)[ds.labels])
    assert not ds.has_votes


def test_unknown_label_is_refused(tmp_path):
    root = build_store(tmp_path, n=3)
    index = read_index(root)
    index.loc[0, "label"] = "contempt"
    write_index(root, index)
    with pytest.raises(StoreError, match="contempt"):
        FeatureDataset(root, config=DATA)


def test_augment_changes_faces_reproducibly(store):
    ds = FeatureDataset(store, config=DATA, augment=True)
    torch.manual_seed(0)
    a = ds[1]["face"]
    torch.manual_seed(0)
    b = ds[1]["face"]
    assert torch.equal(a, b) and not torch.equal(a, FeatureDataset(store, config=DATA)[1]["face"])


def test_audio_inputs_normalisation():
    mel = np.full((64, 10), -40.0, np.float32)
    mel[:, 5:] = 0.0
    pro = np.array([[200.0, 0.9, 2.0, 1.0]] * 5 + [[0.0, 0.1, 1.0, 0.0]] * 5, np.float32)
    m, p = audio_inputs(mel, pro, 10)
    assert m.shape == (1, 64, 10) and m[0, 0, 0] == pytest.approx(0.0) and m[0, 0, 9] == pytest.approx(1.0)
    assert p[0].tolist() == pytest.approx([0.0, 0.9, 1.0, 1.0]) and p[9].tolist() == pytest.approx([0.0, 0.1, 0.5, 0.0])


def _index(n_subjects=20, per=3):
    rows = [{"clip_id": f"{s}_{i}", "subject": f"p{s}", "fold": 1 + s % 4, "split": "test" if s < 4 else "train"}
            for s in range(n_subjects) for i in range(per)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("fold", [1, 3, None])
def test_subject_split_is_disjoint_and_keeps_test_out(fold):
    idx = _index()
    train, val, test = subject_split(idx, fold=fold, val_fraction=0.2, seed=1)
    expected_test = idx[idx["fold"] == fold] if fold else idx[idx["split"] == "test"]
    assert sorted(test["clip_id"]) == sorted(expected_test["clip_id"])
    assert not set(train["subject"]) & set(val["subject"])
    assert not set(val["clip_id"]) & set(test["clip_id"])
    assert len(train) + len(val) + len(test) == len(idx)
    assert len(val) == pytest.approx(0.2 * (len(idx) - len(test)), abs=3)


def test_subject_split_seeded_and_errors():
    idx = _index()
    assert subject_split(idx, fold=2, seed=5)[1].equals(subject_split(idx, fold=2, seed=5)[1])
    assert not subject_split(idx, fold=2, seed=5)[1].equals(subject_split(idx, fold=2, seed=6)[1])
    with pytest.raises(ValueError, match="no test rows"):
        subject_split(idx, fold=9)
    with pytest.raises(ValueError, match="split"):
        subject_split(idx.drop(columns=["split"]))


def test_damaged_clip_file_is_named(tmp_path):
    root = build_store(tmp_path, n=2)
    (root / "clips" / "c0001.npz").write_bytes(b"not a zip")
    ds = FeatureDataset(root, config=DATA)
    with pytest.raises(StoreError, match="c0001.npz: unreadable"):
        ds[1]
