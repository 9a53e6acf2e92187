"""Cross-corpus evaluation (femo.training.cross, `femo evaluate --classes`) on tiny synthetic stores
whose class lists differ from the run's."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from _synth_store import CLASSES, build_store
from femo.data.store import StoreMeta, read_index, read_meta, write_index, write_meta
from femo.training import cross

# The other corpus: the run's "angry" clips are called "neutral" there, "fear" has no clip, and the
# class order differs, so every index mapping is exercised.
OTHER = ("neutral", "sad", "fear", "happy")


@pytest.fixture(scope="module")
def kfold_run(tmp_path_factory):
    """(run folder, its store) of a 3-fold face-only run on cached embeddings."""
    from femo.config import DataConfig, ModelConfig, TrainConfig
    from femo.training.loop import train_folds

    root = tmp_path_factory.mktemp("cross")
    store = build_store(root / "store", n=36, t=4, s=16, a=32, folds=3, informative=("face",))
    write_index(store, read_index(store).assign(face_ratio=1.0))  # every clip has a face: the branch is trained
    train_folds(store, out=root / "run", model=ModelConfig(modalities=("face",), embeddings="proto", dim=16,
                                                             temporal="mean", fusion="late"),
                train=TrainConfig(epochs=3, batch_size=8), data=DataConfig(num_frames=4, face_size=16,
                                                                            audio_frames=32, classes=CLASSES),
                progress=False)
    return root / "run", store


def _other_store(store, dest):
    """A copy of ``store`` with the classes of OTHER ("angry" renamed "neutral")."""
    shutil.copytree(store, dest)
    index = read_index(dest)
    index["label"] = index["label"].replace({"angry": "neutral"})
    write_index(dest, index)
    meta = read_meta(dest)
    write_meta(dest, StoreMeta(classes=OTHER, dataset="other", num_frames=meta.num_frames, face_size=meta.face_size))
    return dest


def _fold_mean(run, store):
    """Mean softmax of the fold models over every clip of ``store``, computed apart from cross.py."""
    import torch
    from torch.utils.data import DataLoader

    from femo.data.dataset import FeatureDataset
    from femo.training.evaluate import collect_logits
    from femo.training.runs import RunFolder

    total = 0.0
    for sub in RunFolder(run).folds:
        ds = FeatureDataset(store, config=sub.data_config(), embeddings="proto", modalities=("face",))
        out = collect_logits(sub.load_model(), DataLoader(ds, batch_size=5))
        total = total + torch.softmax(out["logits"], 1).numpy()[np.argsort(out["index"].numpy())]
    return pd.DataFrame(total / 3, index=ds.index["clip_id"].astype(str), columns=[f"p_{c}" for c in CLASSES])


def test_resolve_class_map_intersection_and_file(tmp_path):
    assert cross.resolve_class_map("intersection", CLASSES, OTHER) == {"happy": "happy", "sad": "sad", "angry": None}
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"happy": "happy", "sad": "happy", "angry": "neutral"}))
    mapping = cross.resolve_class_map(path, CLASSES, OTHER)
    assert cross.shared_classes(mapping, OTHER) == ["neutral", "happy"]  # the store's order


@pytest.mark.parametrize("bad, match", [({"happy": "happy", "sad": "sad"}, "not mapped"),
                                        ({"happy": "happy", "sad": "sad", "angry": None, "calm": None}, "unknown"),
                                        ({"happy": "joy", "sad": "sad", "angry": None}, "not store classes"),
                                        ({"happy": None, "sad": None, "angry": None}, "no run class")])
def test_resolve_class_map_refuses_bad_maps(bad, match):
    with pytest.raises(cross.ClassMapError, match=match):
        cross.resolve_class_map(bad, CLASSES, OTHER)


def test_merge_probabilities_sums_and_renormalises():
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    merged = cross.merge_probabilities(probs, CLASSES, {"happy": "happy", "sad": "happy", "angry": None},
                                       ["happy"])
    assert merged == pytest.approx(np.ones((2, 1)))
    merged = cross.merge_probabilities(probs, CLASSES, {"happy": "happy", "sad": "sad", "angry": None},
                                       ["sad", "happy"])
    assert merged == pytest.approx(np.array([[0.3 / 0.8, 0.5 / 0.8], [0.5, 0.5]]))


def test_clustered_intervals_resample_whole_subjects():
    y = np.array([0, 0, 1, 1])
    perfect = cross.clustered_intervals(y, y, np.array(["a", "a", "b", "b"]), 2, draws=200)
    assert perfect["uar_ci"] == pytest.approx([1.0, 1.0]) and perfect["war_ci"] == pytest.approx([1.0, 1.0])
    # subject a always right, b always wrong: a resample holds 0, 1 or 2 copies of each subject
    half = cross.clustered_intervals(y, np.array([0, 0, 0, 0]), np.array(["a", "a", "b", "b"]), 2, draws=400)
    assert half["war_ci"][0] == pytest.approx(0.0) and half["war_ci"][1] == pytest.approx(1.0)


def test_cross_evaluate_kfold_run_with_a_merging_map(kfold_run, tmp_path):
    run, store = kfold_run
    other = _other_store(store, tmp_path / "other")
    own = (run / "metrics.json").read_bytes(), (run / "predictions.csv").read_bytes()
    result = cross.cross_evaluate(run, store=other, classes={"happy": "happy", "sad": "sad", "angry": "neutral"},
                                  out=tmp_path / "out", draws=200)
    assert ((run / "metrics.json").read_bytes(), (run / "predictions.csv").read_bytes()) == own
    assert result["classes"] == ["neutral", "sad", "happy"] and result["dropped_store_classes"] == ["fear"]
    assert result["folds_averaged"] == [1, 2, 3] and result["n_test"] == 36
    pred = pd.read_csv(tmp_path / "out" / "predictions.csv", dtype={"clip_id": str}).set_index("clip_id")
    mean = _fold_mean(run, other).loc[pred.index]
    expected = mean.to_numpy().argmax(1)  # run class order happy, sad, angry -> happy, sad, neutral
    assert pred["predicted"].tolist() == [("happy", "sad", "neutral")[i] for i in expected]
    assert pred["p_neutral"].to_numpy() == pytest.approx(mean["p_angry"].to_numpy(), abs=1e-6)
    assert set(pred.loc[pred["label"] == "neutral", "label_from"]) == {"angry"}
    y = pred["label"].map(result["classes"].index).to_numpy()
    hits = pred["predicted"] == pred["label"]
    assert result["war"] == pytest.approx(hits.mean())
    assert result["uar"] == pytest.approx(np.mean([hits[y == k].mean() for k in range(3)]))
    assert result["uar_ci"][0] <= result["uar"] <= result["uar_ci"][1]
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["class_map"] == {"happy": "happy", "sad": "sad", "angry": "neutral"}
    assert np.asarray(saved["confusion"]).sum() == 36


def test_cross_evaluate_intersection_drops_unshared_clips(kfold_run, tmp_path):
    run, store = kfold_run
    other = _other_store(store, tmp_path / "other")
    n_neutral = int((read_index(other)["label"] == "neutral").sum())
    result = cross.cross_evaluate(run, store=other, classes="intersection", out=tmp_path / "out", draws=100)
    assert result["classes"] == ["sad", "happy"] and result["dropped_run_classes"] == ["angry"]
    assert result["n_dropped_clips"] == {"neutral": n_neutral} and result["n_test"] == 36 - n_neutral
    assert set(result["per_class_recall"]) == {"sad", "happy"}


def test_cross_evaluate_refuses_an_output_inside_the_run(kfold_run, tmp_path):
    run, store = kfold_run
    with pytest.raises(cross.RunError, match="inside the run"):
        cross.cross_evaluate(run, store=store, out=run / "cross")
    with pytest.raises(cross.RunError, match="inside the run"):
        cross.cross_evaluate(run / "fold_1", store=store, out=run / "fold_1")


def test_cli_evaluate_cross_and_its_errors(kfold_run, tmp_path, capsys):
    from femo.cli import main

    run, store = kfold_run
    other = _other_store(store, tmp_path / "other")
    (tmp_path / "map.json").write_text(json.dumps({"happy": "happy", "sad": "sad", "angry": "neutral"}))
    assert main(["evaluate", str(run), "--store", str(other), "--classes", str(tmp_path / "map.json"),
                 "--out", str(tmp_path / "out")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["classes"] == ["neutral", "sad", "happy"] and "class_map" in printed
    assert main(["evaluate", str(run), "--classes", "intersection", "--out", str(tmp_path / "o2")]) == 1
    assert "--store" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--store", str(other), "--classes", str(tmp_path / "nope.json"),
                 "--out", str(tmp_path / "o3")]) == 1
    assert "nope.json" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--out", str(tmp_path / "o4")]) == 2
