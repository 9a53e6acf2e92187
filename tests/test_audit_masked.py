"""femo.audit.masked: per-modality predictions of a trained run, cached by content outside the run."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from _synth_store import CLASSES, build_store
from femo.audit import masked
from femo.config import DataConfig, ModelConfig, TrainConfig


@pytest.fixture(scope="module")
def kfold_run(tmp_path_factory):
    from femo.training.loop import train_folds

    root = tmp_path_factory.mktemp("masked")
    store = build_store(root / "store", n=30, t=4, s=16, a=32, folds=3, no_audio_every=5)
    data = DataConfig(num_frames=4, face_size=16, audio_frames=32, classes=CLASSES)
    train_folds(store, out=root / "run", model=ModelConfig(embeddings="proto", dim=16, temporal="mean", fusion="late"),
                train=TrainConfig(epochs=1, batch_size=8), data=data, progress=False)
    return root / "run", store


def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_second_call_reads_the_cache_and_gives_the_same_tables(kfold_run, tmp_path):
    run, store = kfold_run
    before = _listing(run)
    first = masked.masked_predictions(run, cache_dir=tmp_path / "cache")
    again = masked.masked_predictions(run, cache_dir=tmp_path / "cache")
    assert (first.cached, again.cached) == (False, True) and first.key == again.key
    assert list((tmp_path / "cache").glob("*.npz")) == [tmp_path / "cache" / f"{first.key}.npz"]
    pd.testing.assert_frame_equal(first.long, again.long, check_dtype=False)
    pd.testing.assert_frame_equal(first.wide(), again.wide(), check_dtype=False)
    assert _listing(run) == before  # nothing is written into the run folder
    assert first.long["subset"].nunique() == 7 and len(first.wide()) == 30


def test_modality_tables_match_the_runs_own_predictions(kfold_run, tmp_path):
    run, _ = kfold_run
    tables = masked.modality_predictions(run, cache_dir=tmp_path / "cache")
    assert list(tables) == ["face", "landmarks", "audio", "fused"]
    oof = pd.read_csv(run / "predictions.csv", dtype={"clip_id": str}).set_index("clip_id")
    fused = tables["fused"].set_index("clip_id")
    assert sorted(fused.index) == sorted(oof.index)
    assert (fused["predicted"] == oof.loc[fused.index, "predicted"]).all()  # fused = the unmasked model
    assert (fused["label"] == oof.loc[fused.index, "label"]).all()
    assert set(tables["audio"]["predicted"]) <= set(CLASSES)
    with pytest.raises(ValueError, match="unknown subset"):
        masked.modality_predictions(run, cache_dir=tmp_path / "cache", modalities=("voice",))


def test_key_changes_with_the_checkpoint_and_the_clip_count(kfold_run, tmp_path):
    import dataclasses
    import shutil

    from femo.audit.pooled import load_runs

    run, _ = kfold_run
    full = masked.masked_predictions(run, cache_dir=tmp_path / "cache")
    part = masked.masked_predictions(run, cache_dir=tmp_path / "cache", max_clips=12)
    assert part.key != full.key and len(part.wide()) == 12 and not part.cached
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    assert masked.masked_predictions(copy, cache_dir=tmp_path / "cache").cached  # same content, new folder
    runs = load_runs(run)
    assert masked.cache_key(runs, split="test", n_clips=30) == full.key
    best = copy / "fold_1" / "best.pt"
    best.write_bytes(best.read_bytes() + b"retrained")  # other checkpoint bytes: another key
    moved = [dataclasses.replace(r, path=copy / r.path.name) for r in runs]
    assert masked.cache_key(moved, split="test", n_clips=30) != full.key
    assert masked.cache_key(runs, split="val", n_clips=30) != full.key


def test_run_predictions_without_a_model_has_no_modalities(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"classes": list(CLASSES)}))
    pd.DataFrame({"clip_id": ["a"], "label": [CLASSES[0]], "predicted": [CLASSES[0]]}).to_csv(
        run / "predictions.csv", index=False)
    read = masked.run_predictions(run)
    assert read.modalities == {} and "best.pt" in read.skipped[0] and len(read.pred) == 1


def test_run_predictions_with_a_model(kfold_run, tmp_path):
    run, _ = kfold_run
    read = masked.run_predictions(run, cache_dir=tmp_path / "cache")
    assert set(read.modalities) == {"face", "landmarks", "audio", "fused"} and read.skipped == []
    assert all(len(t) == len(read.pred) for t in read.modalities.values())


def test_retrain_like_takes_the_runs_settings(kfold_run, tmp_path):
    from femo.audit.ablation import retrain_like

    run, store = kfold_run
    calls = []

    def fake_train(store_arg, *, out, model, train, fold, data, progress):
        calls.append((model.modalities, model.dim, train.epochs, fold, data.num_frames, progress))
        out.mkdir(parents=True)
        (out / "metrics.json").write_text(json.dumps({"uar": 0.25 * len(model.modalities), "war": 0.5}))

    table = retrain_like(run, store, tmp_path / "retrain", epochs=3, subsets=[("face",), ("face", "audio")],
                         train_fn=fake_train)
    assert calls == [(("face",), 16, 3, 1, 4, False), (("face", "audio"), 16, 3, 1, 4, False)]
    assert table["subset"].tolist() == ["face", "face+audio"] and table["uar"].tolist() == [0.25, 0.5]
