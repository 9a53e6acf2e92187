"""`femo train` defaults and refusals: no silent overwrite, CLI flags in errors, a trustworthy face path."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from _synth_store import EMB_NAME, build_store
from femo.cli import main as femo_main
from femo.config import ModelConfig, TrainConfig
from femo.data.store import read_index, write_index
from femo.training import defaults
from femo.training.loop import train, train_folds
from femo.training.runs import RunExistsError, RunFolder, RunError

QUICK = ["--embeddings", EMB_NAME, "--epochs", "1", "--dim", "8", "--temporal", "mean", "--batch-size", "8", "--quiet"]
TINY_MODEL = ModelConfig(dim=8, temporal="mean", fusion="gated", embeddings=EMB_NAME, heads=2)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return build_store(tmp_path_factory.mktemp("cli_store"), n=36, a=16)


def test_training_into_a_finished_run_is_refused(store: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert femo_main(["train", str(store), "--out", str(run), "--fold", "1", *QUICK]) == 0
    before = (run / "best.pt").stat().st_mtime_ns, (run / "metrics.json").read_text()
    capsys.readouterr()
    assert femo_main(["train", str(store), "--out", str(run), "--fold", "2", *QUICK]) == 1
    err = capsys.readouterr().err
    assert "holds a finished run" in err and "--overwrite" in err and "--resume" in err
    assert "overwrite=True" not in err  # the CLI names its flags, not the Python arguments
    assert ((run / "best.pt").stat().st_mtime_ns, (run / "metrics.json").read_text()) == before
    (run / "notes.txt").write_text("mine")
    assert femo_main(["train", str(store), "--out", str(run), "--fold", "2", "--overwrite", *QUICK]) == 0
    assert json.loads((run / "config.json").read_text())["fold"] == 2
    assert (run / "notes.txt").read_text() == "mine"  # only the run's own files are replaced


def test_library_train_refuses_unless_overwrite_or_resume(store: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(epochs=1, batch_size=8, seed=0)
    train(store, out=tmp_path, model=TINY_MODEL, train=cfg, fold=1, progress=False)
    with pytest.raises(RunExistsError, match="finished run"):
        train(store, out=tmp_path, model=TINY_MODEL, train=cfg, fold=1, progress=False)
    (tmp_path / "metrics.json").unlink()  # as if killed before the test: an interrupted run
    with pytest.raises(RunExistsError, match="interrupted run"):
        train(store, out=tmp_path, model=TINY_MODEL, train=cfg, fold=1, progress=False)
    train(store, out=tmp_path, model=TINY_MODEL, train=cfg, fold=1, progress=False, overwrite=True)
    assert (tmp_path / "metrics.json").is_file()
    kfold = tmp_path / "kfold"
    train_folds(store, out=kfold, folds=[1], model=TINY_MODEL, train=cfg, progress=False)
    with pytest.raises(RunExistsError):
        train_folds(store, out=kfold, folds=[2], model=TINY_MODEL, train=cfg, progress=False)
    train_folds(store, out=kfold, folds=[2], model=TINY_MODEL, train=cfg, progress=False, overwrite=True)
    assert [f.path.name for f in RunFolder(kfold).folds] == ["fold_2"]


def test_protocol_errors_name_cli_flags(store: Path, tmp_path: Path, capsys) -> None:
    assert femo_main(["train", str(store), "--out", str(tmp_path / "a"), "--fold", "7", *QUICK]) == 1
    assert "--fold 7:" in capsys.readouterr().err and not (tmp_path / "a").exists()
    split_store = tmp_path / "split_store"
    build_store(split_store, n=12)
    index = read_index(split_store).drop(columns=["fold"])
    write_index(split_store, index.assign(split=["train"] * 8 + ["test"] * 4))
    assert femo_main(["train", str(split_store), "--out", str(tmp_path / "b"), "--folds", "all", *QUICK]) == 1
    err = capsys.readouterr().err
    assert "--folds all:" in err and "fold=" not in err
    write_index(split_store, index)
    assert femo_main(["train", str(split_store), "--out", str(tmp_path / "c"), *QUICK]) == 1
    assert "neither a 'split' nor a 'fold' column" in capsys.readouterr().err


def test_no_split_column_defaults_to_the_first_fold_and_says_so(store: Path, tmp_path: Path, capsys) -> None:
    assert femo_main(["train", str(store), "--out", str(tmp_path / "run"), *QUICK]) == 0
    assert "testing on fold 1 of [1, 2, 3]" in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["fold"] == 1


def test_frozen_encoder_without_weights_is_refused(store: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(defaults, "FACE_ENCODERS", ())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache: no ImageNet weights
    assert femo_main(["train", str(store), "--out", str(tmp_path / "run"), "--fold", "1", "--epochs", "1"]) == 1
    err = capsys.readouterr().err
    assert "no pretrained weights" in err and "random" in err and "--embeddings" in err
    assert not (tmp_path / "run").exists()
    # an ImageNet file in the hub cache is used (its content is not read here: no model is built)
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "resnet18-f37072fd.pth").write_bytes(b"")
    model = defaults.resolve_face_path(store, ModelConfig(), auto=True, log=lambda m: None)
    assert model.frame_weights == "IMAGENET1K_V1" and model.embeddings is None


def _with_faces(store: Path) -> Path:
    """The synthetic store with face_ratio recorded (so the run keeps its face branch)."""
    index = read_index(store)
    write_index(store, index.assign(face_ratio=0.9))
    return store


@pytest.mark.slow
def test_bare_train_is_well_above_chance(tmp_path: Path, capsys) -> None:
    store = _with_faces(build_store(tmp_path / "store", n=150))
    installed = defaults.installed_face_encoder()
    rc = femo_main(["train", str(store), "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    if installed is None:  # no face weights on this machine: the default refuses, it never trains on noise
        assert rc == 1 and "no pretrained weights" in err
        return
    assert rc == 0, err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"]["embeddings"] == installed and config["fold"] == 1
    assert (store / "embeddings" / installed / "meta.json").is_file()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["uar"] > 0.6, metrics  # 3 classes: chance is 0.33


def test_not_a_run_folder_suggests_the_run_inside(tmp_path: Path) -> None:
    (tmp_path / "demo" / "run").mkdir(parents=True)
    (tmp_path / "demo" / "run" / "config.json").write_text("{}")
    with pytest.raises(RunError, match=r"did you mean .*demo/run\?"):
        RunFolder(tmp_path / "demo").config
