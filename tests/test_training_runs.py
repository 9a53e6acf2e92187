"""RunFolder: what a trained run is (config, fold-aware metrics and history, checkpoint, model,
split, extraction settings), for one run and for a --folds all run."""
from __future__ import annotations

import shutil
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from _synth_store import CLASSES, EMB_NAME, build_store
from femo.config import DataConfig, ModelConfig, TrainConfig
from femo.data.dataset import FeatureDataset
from femo.data.store import read_meta, write_meta
from femo.training.evaluate import predict
from femo.training.loop import train, train_folds
from femo.training.runs import ClassMismatchError, RunError, RunFolder

DATA = DataConfig(num_frames=4, face_size=16, audio_frames=16, classes=CLASSES)
MODEL = ModelConfig(dim=8, temporal="mean", fusion="gated", embeddings=EMB_NAME, heads=2)
TRAIN = TrainConfig(epochs=2, batch_size=8, lr=1e-2, seed=5)
EXTRACTION = {"pose_stride": 3, "pitch": "pyin", "max_side": 320}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = build_store(tmp_path_factory.mktemp("store"), n=30, a=16, n_failed=1)
    meta = read_meta(root)
    write_meta(root, replace(meta, extra={"extraction": EXTRACTION}))
    return root


@pytest.fixture(scope="module")
def single(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    train(store, out=out, model=MODEL, train=TRAIN, fold=2, data=DATA, progress=False)
    return RunFolder(out)


@pytest.fixture(scope="module")
def kfold(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("kfold")
    train_folds(store, out=out, folds=[1, 3], model=MODEL, train=TRAIN, data=DATA, progress=False)
    return RunFolder(out)


def test_training_records_the_extraction_settings(single, store) -> None:
    assert single.config["extraction"] == {"num_frames": 4, "face_size": 16, **EXTRACTION}
    assert single.extraction == single.config["extraction"]


def test_split_is_the_one_training_used(single) -> None:
    split = single.split()
    metrics, pred = single.metrics(), single.predictions()
    assert (len(split.train), len(split.val), len(split.test)) == (metrics["n_train"], metrics["n_val"], metrics["n_test"])
    assert sorted(split.test["clip_id"]) == sorted(pred["clip_id"])
    assert split.n_excluded == metrics["n_excluded"] == 1
    assert set(split.test["fold"]) == {2} and not set(split.train["subject"]) & set(split.test["subject"])


def test_load_model_reproduces_the_written_predictions(single, store) -> None:
    net = single.load_model()
    assert not net.training
    ds = FeatureDataset(store, index=single.split().test, config=single.data_config(), embeddings=EMB_NAME)
    again = predict(net, ds)
    written = single.predictions().set_index("clip_id").loc[again["clip_id"]]
    cols = [f"p_{c}" for c in CLASSES]
    np.testing.assert_allclose(again[cols].to_numpy(), written[cols].to_numpy(), atol=1e-5)


def test_checkpoint_is_read_weights_only(single, monkeypatch) -> None:
    seen = {}
    real = torch.load

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    ckpt = single.checkpoint()
    assert seen["weights_only"] is True and ckpt["classes"] == list(CLASSES)


def test_history_has_a_fold_column(single, kfold) -> None:
    one = single.history()
    assert list(one["epoch"]) == [1, 2] and set(one["fold"]) == {2}
    both = kfold.history()
    assert len(both) == 4 and sorted(both["fold"].unique()) == [1, 3]


def test_kfold_layout(kfold) -> None:
    assert kfold.is_kfold and [f.path.name for f in kfold.folds] == ["fold_1", "fold_3"]
    summary = kfold.metrics()
    assert set(summary["folds"]) == {"1", "3"}
    assert summary["uar"] == pytest.approx(np.mean([f.metrics()["uar"] for f in kfold.folds]))
    assert len(kfold.predictions()) == sum(len(f.predictions()) for f in kfold.folds)
    with pytest.raises(RunError, match="k-fold run: pass one fold, e.g. .*fold_1"):
        kfold.config
    assert kfold.fold(3).load_model().config == kfold.folds[1].model_config()


def test_inference_settings_need_no_store(store, tmp_path) -> None:
    from femo.inference.predictor import load_run_model

    moved = tmp_path / "run"
    no_face = ModelConfig(modalities=("landmarks", "audio"), dim=8, temporal="mean", heads=2)
    train(store, out=moved, model=no_face, train=TrainConfig(epochs=1, batch_size=8), fold=1, data=DATA,
          progress=False)
    cfg = RunFolder(moved).config
    cfg["store"] = str(tmp_path / "gone")
    RunFolder(moved).write_config(cfg)
    model = load_run_model(moved)
    assert model.crop_size == 16 and model.extraction["pitch"] == "pyin" and model.extraction["pose_stride"] == 3


def test_errors_name_the_problem(single, tmp_path) -> None:
    with pytest.raises(RunError, match="run folder not found"):
        RunFolder(tmp_path / "nowhere").load_model()
    with pytest.raises(ClassMismatchError, match="expected"):
        single.load_model(classes=["x", "y", "z"])
    empty = tmp_path / "empty"
    shutil.copytree(single.path, empty)
    (empty / "best.pt").unlink()
    with pytest.raises(RunError, match="checkpoint missing"):
        RunFolder(empty).load_model()
    with pytest.raises(KeyError, match="unknown split"):
        single.split()["holdout"]
    assert isinstance(single.history(), pd.DataFrame)
