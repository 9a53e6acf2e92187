"""Embedding cache over a tiny feature store written with femo.data.store; embedding sources (the
aligned crop, the whole frame, the crop with the whole frame where no face was found) and their
masks in training samples and in ``femo predict``."""
from __future__ import annotations

import json
from dataclasses import replace

import cv2

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from femo.data.dataset import FeatureDataset
from femo.data.store import StoreError, StoreMeta, write_clip, write_index, write_meta
from femo.features.embed import cache_embeddings, embedding_name, face_inputs_of, letterbox, mask_file, split_name

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


@pytest.fixture
def still_store(tmp_path):
    """Still images: ``found`` (face crop found, a 200-grey crop), ``missed`` (no face found) and
    ``gone`` (its image deleted after extraction); the images are 8 x 16 (letterboxed to 16 x 16)."""
    root = tmp_path / "store"
    write_meta(root, StoreMeta(classes=("happy", "sad"), num_frames=T, face_size=S))
    rows = []
    for cid, found, value in (("found", np.ones(T, bool), 90), ("missed", np.zeros(T, bool), 150),
                              ("gone", np.zeros(T, bool), 60)):
        image = tmp_path / f"{cid}.png"
        cv2.imwrite(str(image), np.full((8, 16, 3), value, np.uint8))
        write_clip(root, cid, _arrays(0, found))
        rows.append({"clip_id": cid, "path": str(image), "label": "happy", "status": "ok", "error": ""})
    write_index(root, pd.DataFrame(rows))
    (tmp_path / "gone.png").unlink()
    return root


def test_names_carry_the_source():
    assert split_name("faceapi") == ("faceapi", "crop")
    assert split_name("faceapi@frame") == ("faceapi", "frame")
    assert embedding_name("faceapi", "crop") == "faceapi"
    assert embedding_name("faceapi", "fallback") == "faceapi@fallback"
    with pytest.raises(ValueError, match="unknown source 'wide'.*crop, frame, fallback"):
        split_name("faceapi@wide")


def test_letterbox_keeps_the_whole_frame_on_black_bars():
    frame = np.full((1, 10, 20, 3), 120, np.uint8)
    out = letterbox(frame, 16)
    assert out.shape == (1, 16, 16, 3)
    assert not out[0, :4].any() and not out[0, 12:].any()  # 8 px of picture, 4 px bars above and below
    assert (out[0, 4:12] == 120).all()
    square = np.arange(3 * 8 * 8, dtype=np.uint8).reshape(1, 8, 8, 3)
    assert (letterbox(square, 8) == square).all()


def test_face_inputs_per_source():
    crops = np.full((3, S, S, 3), 7, np.uint8)
    found = np.array([True, False, True])
    frames = np.full((3, 8, 8, 3), 9, np.uint8)
    x, m = face_inputs_of("crop", crops, found, frames, S)
    assert x is crops and m.tolist() == [True, False, True]
    x, m = face_inputs_of("frame", crops, found, frames, S)
    assert (x == 9).all() and m.all()
    x, m = face_inputs_of("fallback", crops, found, frames, S)
    assert (x[[0, 2]] == 7).all() and (x[1] == 9).all() and m.all()
    x, m = face_inputs_of("fallback", crops, found, None, S)  # no video (an audio-only clip)
    assert not m.any()


def test_frame_and_fallback_embeddings(still_store):
    enc = MeanColour()
    out = cache_embeddings(still_store, encoder=enc, source="frame", progress=False)
    assert out.name == "meancolour@frame"
    # the 8 x 16 image letterboxed to 16 x 16: half picture, half black
    assert np.load(out / "missed.npy")[:, 0] == pytest.approx(np.full(T, 150 / 255 / 2), abs=2e-3)
    assert np.load(out / "found.npy")[:, 0] == pytest.approx(np.full(T, 90 / 255 / 2), abs=2e-3)
    assert np.load(mask_file(out, "missed")).tolist() == [True] * T
    assert enc.seen == 2  # one distinct input per still
    errors = pd.read_csv(out / "errors.csv")
    assert errors["clip_id"].tolist() == ["gone"] and "gone.png" in errors["error"].iloc[0]
    assert not (out / "gone.npy").exists() and not mask_file(out, "gone").exists()

    fb = cache_embeddings(still_store, encoder=MeanColour(), source="fallback", progress=False)
    crops = _arrays(0, np.ones(T, bool))["faces"]
    assert np.load(fb / "found.npy")[:, 0] == pytest.approx(crops[..., 0].mean((1, 2)) / 255, abs=2e-3)  # the crop
    assert np.load(fb / "missed.npy")[:, 0] == pytest.approx(np.full(T, 150 / 255 / 2), abs=2e-3)  # the frame
    assert (fb / "meta.json").read_text().count('"source": "fallback"') == 1

    mask_file(fb, "missed").unlink()  # a run killed between the two files is completed on resume
    again = MeanColour()
    cache_embeddings(still_store, encoder=again, source="fallback", progress=False)
    assert again.seen == 1 and mask_file(fb, "missed").is_file()


def test_samples_take_the_embeddings_mask(still_store):
    cache_embeddings(still_store, encoder=MeanColour(), progress=False)
    cache_embeddings(still_store, encoder=MeanColour(), source="fallback", progress=False)
    index = pd.read_csv(still_store / "index.csv", dtype=str, keep_default_na=False)
    index = index[index.clip_id != "gone"]
    crop = FeatureDataset(still_store, index=index, embeddings="meancolour", modalities=("face", "landmarks"))
    fb = FeatureDataset(still_store, index=index, embeddings="meancolour@fallback", modalities=("face", "landmarks"))
    missed = list(crop.index.clip_id).index("missed")
    assert not crop[missed]["face_mask"].any() and not crop[missed]["face_emb"].any()
    assert fb[missed]["face_mask"].all() and fb[missed]["face_emb"].any()
    assert not fb[missed]["landmarks_mask"].any()  # the landmarks keep the clip's face_found
    mask_file(still_store / "embeddings" / "meancolour@fallback", "missed").unlink()
    with pytest.raises(StoreError, match="missed.mask.npy: face mask of embedding 'meancolour@fallback' missing"):
        fb[missed]


def test_predict_feeds_the_run_s_source(tmp_path):
    """A run trained on ``@fallback`` embeddings gets the whole frame where no face is found, and
    those rows count as face input; a crop run gets zeros and no face there."""
    from _media import TINY_MODEL, face_then_gone_clip, make_run
    from femo.data.decode import load_clip
    from femo.inference.predictor import Predictor, load_run_model

    clip = load_clip(face_then_gone_clip(tmp_path / "gone.mp4", seconds=2.0), num_frames=8)
    model = replace(TINY_MODEL, embeddings="resnet18@fallback", embedding_dim=512)
    rows = {}
    for name, cfg in (("fallback", model), ("crop", replace(model, embeddings="resnet18"))):
        m = load_run_model(make_run(tmp_path / name, model=cfg))
        assert m.face_source == name
        with Predictor(m, reference=True) as p:
            rows[name] = p.featurizer()(clip.frames, clip.times)
    crop, fb = rows["crop"], rows["fallback"]
    gone = ~crop["face_found"]
    assert gone.any() and crop["face_found"].any()
    assert crop["emb_found"].tolist() == crop["face_found"].tolist() and not crop["emb"][gone].any()
    assert fb["emb_found"].all() and np.abs(fb["emb"][gone]).sum(1).min() > 0
    assert fb["emb"][~gone] == pytest.approx(crop["emb"][~gone], abs=1e-5)  # found frames: the same crops
    assert fb["face_found"].tolist() == crop["face_found"].tolist()
    with Predictor(load_run_model(tmp_path / "fallback")) as p:  # the fast path (ONNX frame CNN, stream trackers)
        fast = p.featurizer()
        fast.begin()
        out = fast(clip.frames, clip.times)
    assert out["emb_found"].all() and np.abs(out["emb"][~out["face_found"]]).sum(1).min() > 0


def test_train_names_the_whole_frame_when_stills_miss_faces(still_store):
    from femo.data.store import read_index
    from femo.training.defaults import crop_hint

    index = read_index(still_store)
    index["duration"], index["face_ratio"] = 0.0, [1.0, 0.0, 0.0]
    write_index(still_store, index)
    assert "found in 33% of the images" in crop_hint(still_store, "faceapi")
    assert "--embeddings faceapi@frame" in crop_hint(still_store, "faceapi")
    index["face_ratio"] = 1.0
    write_index(still_store, index)
    assert crop_hint(still_store, "faceapi") == ""  # every face found
    index["face_ratio"], index["duration"] = 0.0, [0.0, 2.5, 0.0]
    write_index(still_store, index)
    assert crop_hint(still_store, "faceapi") == ""  # not all stills: videos are not face crops
