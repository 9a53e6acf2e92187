"""Training: it learns what each modality carries, determinism, resume, bad checkpoints, k-fold."""
import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

import femo.training.loop as femo_train
from _synth_store import CLASSES, EMB_NAME, build_store
from femo.cli import main as femo_main
from femo.config import DataConfig, ModelConfig, TrainConfig
from femo.data.store import StoreMeta, write_meta
from femo.training.evaluate import evaluate_run
from femo.training.loop import class_weights, loss_fn, train, train_folds
from femo.training.runs import CheckpointError

DATA = DataConfig(num_frames=4, face_size=16, audio_frames=32, classes=CLASSES)
TINY_DATA = DataConfig(num_frames=4, face_size=16, audio_frames=16, classes=CLASSES)
TINY_MODEL = ModelConfig(dim=8, temporal="mean", fusion="gated", embeddings=EMB_NAME, heads=2)
TINY_TRAIN = TrainConfig(epochs=3, batch_size=8, lr=1e-2, seed=3, cache=True)


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("learn"), n=180, n_failed=2)


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("tiny"), n=36, a=16, votes=True, no_audio_every=5)


LEARN = {"face": ("face",), "landmarks": ("landmarks",), "audio": ("audio",), "fused": ("face", "landmarks", "audio")}


@pytest.fixture(scope="module")
def learned(big_store, tmp_path_factory):
    """name -> (metrics, predictions) of models trained on fold 1 of the planted-signal store."""
    out = tmp_path_factory.mktemp("runs")
    cfg = TrainConfig(epochs=10, batch_size=16, lr=1e-2, seed=0, cache=True, val_fraction=0.25)
    results = {}
    for name, mods in LEARN.items():
        model = ModelConfig(modalities=mods, dim=16, temporal="mean", fusion="gated", embeddings=EMB_NAME,
                            dropout=0.0, modality_dropout=0.3)
        m = train(big_store, out=out / name, model=model, train=cfg, fold=1, data=DATA, progress=False)
        results[name] = (m, pd.read_csv(out / name / "predictions.csv"))
    return results


def _accuracy(pred: pd.DataFrame, kinds) -> float:
    sel = pred[pred["informative"].isin(kinds)]
    return float((sel["label"] == sel["predicted"]).mean())


@pytest.mark.parametrize("name, carries, blind, floor", [
    ("face", ("face", "both"), ("audio",), 0.85),
    ("landmarks", ("face", "both"), ("audio",), 0.65),
    ("audio", ("audio", "both"), ("face",), 0.85),
])
def test_single_modality_learns_only_where_it_carries_the_label(learned, name, carries, blind, floor):
    _, pred = learned[name]
    assert _accuracy(pred, carries) >= floor
    assert _accuracy(pred, blind) <= 0.6  # chance is 1/3 on about 20 clips


def test_fusion_beats_best_single_modality(learned):
    best_single = max(learned[n][0]["uar"] for n in ("face", "landmarks", "audio"))
    assert learned["fused"][0]["uar"] >= best_single + 0.1
    assert learned["fused"][0]["uar"] >= 0.9


def test_failed_clips_excluded_and_counted(learned):
    m, pred = learned["fused"]
    assert m["n_excluded"] == 2 and not pred["clip_id"].str.startswith("bad").any()
    assert m["n_train"] + m["n_val"] + m["n_test"] == 180


def _history(run):
    return pd.read_csv(run / "history.csv").drop(columns=["seconds"])


def test_same_seed_same_result(tiny_store, tmp_path):
    a = train(tiny_store, out=tmp_path / "a", model=TINY_MODEL, train=TINY_TRAIN, fold=1, data=TINY_DATA, progress=False)
    b = train(tiny_store, out=tmp_path / "b", model=TINY_MODEL, train=TINY_TRAIN, fold=1, data=TINY_DATA, progress=False)
    assert a["uar"] == b["uar"] and a["ece"] == pytest.approx(b["ece"], abs=0)
    pd.testing.assert_frame_equal(_history(tmp_path / "a"), _history(tmp_path / "b"))
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["classes"] == list(CLASSES) and config["fold"] == 1 and config["model"]["embedding_dim"] == 16


def test_resume_after_kill_equals_uninterrupted(tiny_store, tmp_path, monkeypatch):
    cfg = TrainConfig(epochs=4, batch_size=8, lr=1e-2, seed=3, balance="sampler")
    full = train(tiny_store, out=tmp_path / "full", model=TINY_MODEL, train=cfg, fold=2, data=TINY_DATA, progress=False)
    real_save, saves = femo_train.save_checkpoint, []

    def killing_save(path, state):
        real_save(path, state)
        saves.append(path.name)
        if saves.count("checkpoint.pt") == 2:
            raise KeyboardInterrupt  # killed right after epoch 2's checkpoint

    monkeypatch.setattr(femo_train, "save_checkpoint", killing_save)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_store, out=tmp_path / "cut", model=TINY_MODEL, train=cfg, fold=2, data=TINY_DATA, progress=False)
    monkeypatch.setattr(femo_train, "save_checkpoint", real_save)
    assert len(_history(tmp_path / "cut")) == 2
    resumed = train(tiny_store, out=tmp_path / "cut", model=TINY_MODEL, train=cfg, fold=2, data=TINY_DATA,
                    progress=False, resume=True)
    pd.testing.assert_frame_equal(_history(tmp_path / "full"), _history(tmp_path / "cut"))
    assert resumed["uar"] == full["uar"] and resumed["best_epoch"] == full["best_epoch"]
    a = torch.load(tmp_path / "full" / "best.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "best.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_other_options_is_refused(tiny_store, tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=8, seed=3)
    train(tiny_store, out=tmp_path, model=TINY_MODEL, train=cfg, fold=1, data=TINY_DATA, progress=False)
    with pytest.raises(CheckpointError, match="differ"):
        train(tiny_store, out=tmp_path, model=TINY_MODEL, train=TrainConfig(epochs=1, batch_size=8, seed=4),
              fold=1, data=TINY_DATA, progress=False, resume=True)


@pytest.fixture(scope="module")
def tiny_run(tiny_store, tmp_path_factory):
    run = tmp_path_factory.mktemp("tiny_run")
    train(tiny_store, out=run, model=TINY_MODEL, train=TrainConfig(epochs=1, batch_size=8, seed=1), fold=1,
          data=TINY_DATA, progress=False)
    return run


def test_evaluate_run_reproduces_metrics(tiny_run):
    before = json.loads((tiny_run / "metrics.json").read_text())
    after = evaluate_run(tiny_run)
    assert after["uar"] == pytest.approx(before["uar"]) and after["n_test"] == before["n_test"]


def test_class_mismatch_names_both_lists(tiny_store, tiny_run, tmp_path):
    other = build_store(tmp_path / "other", n=12)
    write_meta(other, StoreMeta(classes=("angry", "sad", "happy"), num_frames=4, face_size=16))
    with pytest.raises(CheckpointError, match=r"\['happy', 'sad', 'angry'\].*\['angry', 'sad', 'happy'\]"):
        evaluate_run(tiny_run, store=other)


def test_corrupt_checkpoint_refused(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "best.pt").write_bytes((run / "best.pt").read_bytes()[:200])
    with pytest.raises(CheckpointError, match="corrupt"):
        evaluate_run(run)
    torch.save({"model": {}, "config": {}, "classes": [], "evil": CheckpointError("x")}, run / "best.pt")
    with pytest.raises(CheckpointError, match="corrupt") as caught:  # arbitrary objects are never unpickled
        evaluate_run(run)
    # femo's own reason, not torch's advice to retry with weights_only=False (unsafe for a foreign file)
    assert "weights_only" not in str(caught.value) and "Python objects" in str(caught.value)


def test_kl_loss_with_votes_runs(tiny_store, tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=8, loss="kl", label_smoothing=0.1, balance="sampler", seed=0)
    m = train(tiny_store, out=tmp_path, model=TINY_MODEL, train=cfg, fold=3, data=TINY_DATA, progress=False)
    hist = pd.read_csv(tmp_path / "history.csv")
    assert np.isfinite(hist[["train_loss", "val_loss"]].to_numpy()).all() and 0 <= m["uar"] <= 1


def test_kl_on_one_hot_votes_equals_cross_entropy():
    logits = torch.randn(6, 3)
    label = torch.tensor([0, 1, 2, 0, 1, 2])
    batch = {"label": label, "votes": torch.eye(3)[label]}
    ce = loss_fn(logits, batch, TrainConfig(loss="ce"), None)
    kl = loss_fn(logits, batch, TrainConfig(loss="kl"), None)
    assert float(kl) == pytest.approx(float(ce), rel=1e-5)
    w = class_weights(np.array([0, 0, 0, 1]), 3)
    assert w.tolist() == pytest.approx([4 / 6, 2.0, 0.0])


def test_folds_all_cli_and_evaluate(tiny_store, tmp_path, capsys):
    run = tmp_path / "kfold"
    args = ["train", str(tiny_store), "--out", str(run), "--folds", "all", "--embeddings", EMB_NAME, "--epochs", "1",
            "--dim", "8", "--temporal", "mean", "--batch-size", "8", "--quiet"]
    assert femo_main(args) == 0
    summary = json.loads((run / "metrics.json").read_text())
    per_fold = [json.loads((run / f"fold_{k}" / "metrics.json").read_text()) for k in (1, 2, 3)]
    assert summary["uar"] == pytest.approx(np.mean([m["uar"] for m in per_fold]))
    assert summary["war"] == pytest.approx(np.mean([m["war"] for m in per_fold]))
    assert set(summary["folds"]) == {"1", "2", "3"}
    pred = pd.read_csv(run / "predictions.csv")
    assert len(pred) == 36 and sorted(pred["fold"].unique()) == [1, 2, 3]
    assert femo_main(["evaluate", str(run)]) == 0
    assert json.loads((run / "metrics.json").read_text())["uar"] == pytest.approx(summary["uar"])
    with pytest.raises(SystemExit):
        femo_main(["train", str(tiny_store), "--out", str(tmp_path / "x"), "--fusion", "sum", "--fold", "1"])
    assert "invalid choice: 'sum'" in capsys.readouterr().err
    assert femo_main(["train", str(tiny_store), "--out", str(tmp_path / "x"), "--fold", "1", "-o", "layerz=2"]) == 1
    assert "-o 'layerz=2': expected KEY=VALUE with KEY one of" in capsys.readouterr().err


def test_train_folds_api_subset(tiny_store, tmp_path):
    s = train_folds(tiny_store, out=tmp_path, folds=[2], model=TINY_MODEL, train=TrainConfig(epochs=1, batch_size=8),
                    data=TINY_DATA, progress=False)
    assert list(s["folds"]) == ["2"] and (tmp_path / "fold_2" / "best.pt").is_file()


def test_folds_side_by_side_match_one_after_another(tiny_store, tmp_path):
    """fold_workers=2 trains in spawned processes with one torch thread each: the same per-fold
    scores and predictions as folds trained one after another with one thread."""
    cfg = TrainConfig(epochs=2, batch_size=8, lr=1e-2, seed=3, cache=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seq = train_folds(tiny_store, out=tmp_path / "seq", model=TINY_MODEL, train=cfg, data=TINY_DATA, progress=False)
    finally:
        torch.set_num_threads(threads)
    par = train_folds(tiny_store, out=tmp_path / "par", model=TINY_MODEL, train=replace(cfg, fold_workers=2),
                      data=TINY_DATA, progress=False)
    assert set(par["folds"]) == {"1", "2", "3"}
    for k in ("1", "2", "3"):
        assert par["folds"][k]["uar"] == pytest.approx(seq["folds"][k]["uar"], abs=1e-6)
    a, b = (pd.read_csv(tmp_path / name / "predictions.csv") for name in ("seq", "par"))
    assert a["clip_id"].tolist() == b["clip_id"].tolist() and a["predicted"].tolist() == b["predicted"].tolist()
    with pytest.raises(ValueError, match="fold_workers must be >= 1"):
        train_folds(tiny_store, out=tmp_path / "bad", model=TINY_MODEL, train=replace(cfg, fold_workers=0),
                    data=TINY_DATA, progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_mixed_precision_training(tiny_store, tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=8, lr=1e-2, seed=0, device="cuda", amp=True)
    m = train(tiny_store, out=tmp_path, model=TINY_MODEL, train=cfg, fold=1, data=TINY_DATA, progress=False)
    assert np.isfinite(pd.read_csv(tmp_path / "history.csv")["train_loss"]).all() and 0 <= m["uar"] <= 1
    ckpt = femo_train.load_checkpoint(tmp_path / "checkpoint.pt")
    assert all(v.device.type == "cpu" for v in ckpt["model"].values())
    assert evaluate_run(tmp_path, device="cuda")["uar"] == pytest.approx(m["uar"])


@pytest.mark.slow
def test_end_to_end_on_rendered_synthetic_videos(tmp_path):
    """femo synth -> extraction -> ResNet-18 (random init, last block trained) fusion model, CPU."""
    from femo.data.manifest import read_manifest
    from femo.data.synth import SynthConfig, generate
    from femo.features.clip import ExtractConfig
    from femo.features.extract import run_extraction

    manifest_path = generate(tmp_path / "synth", SynthConfig(clips=70, subjects=10, size=128, seconds=1.5, workers=1),
                             log=lambda msg: None)
    manifest, meta = read_manifest(manifest_path)
    store = tmp_path / "store"
    run_extraction(manifest, store, classes=meta.classes, dataset=meta.dataset, workers=1, progress=False,
                   config=ExtractConfig(num_frames=8, face_size=64, pose_stride=8))
    model = ModelConfig(dim=32, temporal="mean", fusion="gated", frame_encoder="resnet18", freeze="last-block")
    cfg = TrainConfig(epochs=6, batch_size=8, lr=3e-3, seed=0, cache=True)
    m = train(store, out=tmp_path / "run", model=model, train=cfg, fold=1, progress=False)
    pred = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert m["n_test"] == len(pred) > 0 and {"informative", "true_emotion"} <= set(pred.columns)
    assert m["uar"] > 1 / len(meta.classes)  # above chance on 7 classes


def test_adamw_is_fused_on_cpu_and_takes_the_same_steps():
    """The training loop's AdamW uses torch's fused kernel on the CPU; its updates equal the
    per-tensor loop's up to float rounding."""
    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 3)) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    start = nets[0][0].weight.detach().clone()
    fused = femo_train.adamw(list(nets[0].parameters()), lr=1e-2, weight_decay=0.05)
    plain = torch.optim.AdamW(nets[1].parameters(), lr=1e-2, weight_decay=0.05, foreach=False)
    assert fused.defaults["fused"] is True
    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    for _ in range(20):
        for net, opt in zip(nets, (fused, plain)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert (nets[0][0].weight - start).abs().max() > 1e-2  # the steps did move the weights
