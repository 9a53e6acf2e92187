"""Label quality: `femo synth --label-noise`, cleanlab suspects from out-of-fold predictions,
annotator agreement, refusals of bad input, `femo train --drop-suspects`, and planted truth."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from _synth_store import CLASSES, EMB_NAME, build_store
from femo.audit.labels import OutOfFoldError, agreement, audit_labels, has_oof, read_oof, vote_matrix
from femo.audit.labels_drop import compare_uar, retrain_folds, suspect_ids
from femo.audit.labels_truth import planted_truth
from femo.cli import main as femo_main
from femo.config import CLASSES as SYNTH_CLASSES, ModelConfig, TrainConfig
from femo.data.store import read_index, write_index
from femo.data.synth import SynthConfig, generate, plan_clips
from femo.training.runs import RunFolder

SMALL = dict(clips=8, subjects=5, size=64, seconds=0.5, fps=8.0, workers=1)


# ---------------------------------------------------------------- femo synth --label-noise

@pytest.mark.parametrize("fraction", [0.1, 0.25])
def test_label_noise_flips_an_exact_fraction_and_leaves_the_rest(fraction):
    clean = plan_clips(SynthConfig(clips=400, seed=5))[0]
    noisy = plan_clips(SynthConfig(clips=400, seed=5, label_noise=fraction))[0]
    flipped = noisy["label_flipped"].to_numpy()
    assert flipped.sum() == round(fraction * 400)
    assert ((noisy["label"] != noisy["true_emotion"]).to_numpy() == flipped).all()
    assert (noisy["true_emotion"] == clean["label"]).all()  # the original label is kept
    kept = [c for c in clean.columns if c not in ("label", "label_flipped", "noise_flipped")
            and not c.startswith("vote_")]
    for column in kept:  # every rendering choice is that of the noise-free set
        assert noisy[column].equals(clean[column]), column
    votes = [f"vote_{c}" for c in SYNTH_CLASSES]
    assert (noisy[votes].sum(axis=1) == 10).all()
    assert noisy.loc[~flipped, votes].equals(clean.loc[~flipped, votes])
    share = noisy[votes].max(axis=1) / 10
    assert share[flipped].mean() < share[~flipped].mean() - 0.15  # annotators split on flipped clips


def test_label_noise_on_top_of_a_planted_bias_counts_both():
    cfg = SynthConfig(clips=400, seed=2, plant_bias=("skin_tone", "dark"))
    biased = plan_clips(cfg)[0]
    both = plan_clips(SynthConfig(clips=400, seed=2, plant_bias=("skin_tone", "dark"), label_noise=0.1))[0]
    assert both["noise_flipped"].sum() == 40
    assert both["label_flipped"].sum() == biased["label_flipped"].sum() + 40
    assert not (both["noise_flipped"] & biased["label_flipped"]).any()


def test_label_noise_cli_is_byte_identical_and_recorded(tmp_path, capsys):
    args = ["--clips", "8", "--subjects", "5", "--size", "64", "--seconds", "0.5", "--fps", "8", "--workers", "1"]
    for name in ("a", "b"):
        assert femo_main(["synth", str(tmp_path / name), *args, "--label-noise", "0.25", "--seed", "3"]) == 0
    for rel in ("manifest.csv", "manifest.meta.json", "clips/synth_00000.mp4"):
        assert (tmp_path / "a" / rel).read_bytes().replace(b"/a/", b"/b/") == (tmp_path / "b" / rel).read_bytes()
    manifest = pd.read_csv(tmp_path / "a" / "manifest.csv")
    assert manifest["label_flipped"].sum() == 2
    extra = json.loads((tmp_path / "a" / "manifest.meta.json").read_text())["extra"]
    assert extra["label_noise"]["fraction"] == 0.25 and extra["label_noise"]["n_flipped"] == 2
    assert extra["config"]["label_noise"] == 0.25
    assert femo_main(["synth", str(tmp_path / "bad"), "--label-noise", "1.5"]) == 2
    assert "label_noise must be a fraction" in capsys.readouterr().err


def test_noise_free_settings_record_is_unchanged(tmp_path):
    generate(tmp_path, SynthConfig(seed=1, **SMALL), log=lambda _: None, progress=False)
    assert "label_noise" not in json.loads((tmp_path / "synth_config.json").read_text())
    assert "label_noise" not in json.loads((tmp_path / "manifest.meta.json").read_text())["extra"]
    with pytest.raises(ValueError, match="other settings"):
        generate(tmp_path, SynthConfig(seed=1, label_noise=0.2, **SMALL), log=lambda _: None, progress=False)


# ---------------------------------------------------------------- the audit on a known table

def _table(n=300, noise=0.1, seed=0, votes=True, signal=2.5):
    """Out-of-fold-like predictions: probabilities follow the true class, labels are flipped on
    a ``noise`` fraction; votes split on flipped clips."""
    rng = np.random.default_rng(seed)
    classes = ("a", "b", "c", "d")
    true = rng.integers(0, 4, n)
    flip = rng.random(n) < noise
    label = np.where(flip, (true + rng.integers(1, 4, n)) % 4, true)
    logits = rng.normal(0, 1, (n, 4))
    logits[np.arange(n), true] += signal
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    frame = pd.DataFrame({"clip_id": [f"c{i:03d}" for i in range(n)], "label": np.array(classes)[label],
                          "predicted": np.array(classes)[probs.argmax(1)], "subject": [f"s{i % 40}" for i in range(n)],
                          "sex": np.where(np.arange(n) % 2, "f", "m"), "label_flipped": flip, "oof_fold": 1 + np.arange(n) % 3})
    for j, c in enumerate(classes):
        frame[f"p_{c}"] = probs[:, j]
    if votes:
        agree = np.where(flip, 0.45, 0.85)
        counts = np.array([rng.multinomial(10, a * np.eye(4)[lab] + (1 - a) / 4) for a, lab in zip(agree, label)])
        for j, c in enumerate(classes):
            frame[f"vote_{c}"] = counts[:, j]
    return frame, classes


def test_audit_finds_flipped_labels_and_tables_add_up():
    frame, classes = _table()
    result = audit_labels(frame, classes=classes)
    clips = result.clips
    truth = planted_truth(clips, n_boot=200, n_random=500)
    assert truth["precision"] > truth["random_precision_high"] + 0.2
    assert truth["recall"] > truth["random_recall_high"] + 0.2
    assert truth["precision_low"] <= truth["precision"] <= truth["precision_high"]
    assert truth["k"] == truth["n_flipped"] and truth["precision_at_k"] > truth["random_precision"] + 0.3
    m = result.to_metrics()
    assert m["n_suspect"] == clips["suspect"].sum() == result.per_class["n_suspect"].sum()
    assert result.suggestions.to_numpy().sum() == m["n_suspect"]
    assert np.diag(result.suggestions.to_numpy()).sum() == 0  # never suggests the recorded label
    for c in classes:
        n_c = (clips["label"] == c).sum()
        assert m["suspect_rate_per_class"][c] == pytest.approx(clips.loc[clips["label"] == c, "suspect"].sum() / n_c)
    suspects = result.suspects
    assert list(suspects["rank"]) == list(range(1, len(suspects) + 1))
    assert suspects["quality"].is_monotonic_increasing
    assert suspects["quality"].tolist() == pytest.approx(suspects["p_label"].tolist())  # self-confidence = p(label)
    assert set(result.groups["attribute"]) == {"sex"} and result.groups["n_clips"].sum() == len(frame)


def test_agreement_is_lower_on_suspects_and_reported():
    frame, classes = _table()
    result = audit_labels(frame, classes=classes)
    test = result.to_metrics()["agreement"]["suspect_vs_rest"]
    assert test["auroc"] > 0.75 and test["p_value"] < 1e-4
    assert test["median_share_suspect"] < test["median_share_rest"]
    per_class = result.agreement_per_class
    assert list(per_class.index) == list(classes) and per_class["n_clips"].sum() == len(frame)
    assert {"majority_share", "vote_entropy"} <= set(result.groups.columns)
    assert "agreement is lower on suspects" in result.summary()


def test_agreement_values():
    votes = np.array([[10, 0, 0], [5, 5, 0], [4, 3, 3]], float)
    table = agreement(votes)
    assert table["majority_share"].tolist() == pytest.approx([1.0, 0.5, 0.4])
    assert table["vote_entropy"].tolist() == pytest.approx([0.0, np.log(2) / np.log(3), 0.9911], abs=1e-3)


def test_without_votes_agreement_is_none_and_normalized_margin_ranks():
    frame, classes = _table(votes=False)
    result = audit_labels(frame, classes=classes, rank_by="normalized_margin")
    m = result.to_metrics()
    assert m["agreement"] is None and result.agreement_test is None and result.agreement_per_class.empty
    assert m["method"]["rank_by"] == "normalized_margin"
    assert "no vote_<class> columns" in result.summary()


@pytest.mark.parametrize("bad", [{"vote_a": 0, "vote_b": 0, "vote_c": 0, "vote_d": 0}, {"vote_b": -1}, {"vote_c": np.nan}])
def test_votes_that_do_not_sum_to_a_positive_count_are_refused(bad):
    frame, classes = _table(n=40)
    for column, value in bad.items():
        frame.loc[[3, 17], column] = value
    with pytest.raises(ValueError, match=r"rows \[3, 17\], clip_id \['c003', 'c017'\]"):
        audit_labels(frame, classes=classes)
    with pytest.raises(ValueError, match="vote columns incomplete"):
        vote_matrix(frame.drop(columns=["vote_a"]), classes)


def test_bad_labels_and_options_are_refused():
    frame, classes = _table(n=40, votes=False)
    with pytest.raises(ValueError, match="unknown rank_by"):
        audit_labels(frame, classes=classes, rank_by="entropy")
    with pytest.raises(ValueError, match="unknown filter_by"):
        audit_labels(frame, classes=classes, filter_by="guess")
    with pytest.raises(ValueError, match="not columns"):
        audit_labels(frame, classes=classes, attributes=["race"])
    frame.loc[5, "label"] = "joy"
    with pytest.raises(ValueError, match=r"\['joy'\] \(rows \[5\]\)"):
        audit_labels(frame, classes=classes)


# ---------------------------------------------------------------- runs: out-of-fold, drop, planted truth

def _noisy_store(root, *, n=150, fraction=0.15, seed=0):
    """build_store's store with ``fraction`` of labels flipped in its index, as --label-noise does:
    true_emotion keeps the original label, label_flipped marks the clip."""
    store = build_store(root, n=n, seed=seed, votes=True, informative=("face", "both"))
    index = read_index(store)
    rng = np.random.default_rng(seed + 1)
    flip = np.zeros(len(index), bool)
    flip[rng.choice(len(index), size=round(fraction * len(index)), replace=False)] = True
    index["true_emotion"] = index["label"]
    if "face_ratio" not in index.columns:  # as an extracted store records it (share of frames with a face)
        index["face_ratio"] = 0.9
    index["label_flipped"] = flip
    index.loc[flip, "label"] = [rng.choice([c for c in CLASSES if c != lab]) for lab in index.loc[flip, "label"]]
    write_index(store, index)
    return store


MODEL = ModelConfig(modalities=("face",), dim=16, temporal="mean", fusion="gated", embeddings=EMB_NAME)
TRAIN = TrainConfig(epochs=6, batch_size=16, lr=1e-2, seed=0, cache=True)


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory):
    from femo.training.loop import train_folds

    root = tmp_path_factory.mktemp("labels")
    store = _noisy_store(root / "store")
    train_folds(store, out=root / "run", model=MODEL, train=TRAIN, progress=False)
    return store, root / "run"


def test_planted_truth_beats_random_flagging(noisy_run):
    store, run = noisy_run
    oof = read_oof(run)
    assert len(oof.pred) == len(read_index(store)) and oof.folds == (1, 2, 3)
    result = audit_labels(oof.pred, classes=oof.classes)
    truth = planted_truth(result.clips, n_boot=200, n_random=500)
    assert truth["n_flipped"] == round(0.15 * 150)
    assert truth["precision"] > max(2 * truth["random_precision"], truth["random_precision_high"] + 0.1)
    assert truth["recall"] > truth["random_recall_high"] + 0.1


def test_single_fold_run_is_refused_with_folds_all_hint(noisy_run, tmp_path, capsys):
    store, run = noisy_run
    single = tmp_path / "single"
    single.mkdir()
    (single / "predictions.csv").write_bytes((run / "fold_1" / "predictions.csv").read_bytes())
    with pytest.raises(OutOfFoldError, match="not out-of-fold.*--folds all"):
        read_oof(single)
    twice = tmp_path / "twice"
    for k in (1, 2):
        (twice / f"fold_{k}").mkdir(parents=True)
        (twice / f"fold_{k}" / "predictions.csv").write_bytes((run / "fold_1" / "predictions.csv").read_bytes())
    with pytest.raises(OutOfFoldError, match="more than one fold"):
        read_oof(twice)
    assert femo_main(["train", str(store), "--out", str(tmp_path / "x"), "--fold", "1", "--embeddings", EMB_NAME,
                      "--epochs", "1", "--quiet", "--drop-suspects", str(single)]) == 1
    assert "not out-of-fold probabilities" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_drop_suspects_leaves_training_only_and_compares_on_the_same_folds(noisy_run, tmp_path, capsys):
    store, run = noisy_run
    ids = suspect_ids(run)
    assert ids and len(set(ids)) == len(ids)
    csv = tmp_path / "suspects.csv"
    pd.DataFrame({"clip_id": ids[:5] + ["c0000"], "suspect": [True] * 5 + [False]}).to_csv(csv, index=False)
    assert suspect_ids(csv) == ids[:5]
    out = tmp_path / "dropped"
    assert femo_main(["train", str(store), "--out", str(out), "--folds", "all", "--modalities", "face", "--dim", "16",
                      "--fusion", "gated", "--temporal", "mean", "--embeddings", EMB_NAME, "--epochs", "1",
                      "--batch-size", "16", "--quiet", "--drop-suspects", str(csv)]) == 0
    assert "5 suspect clip(s)" in capsys.readouterr().err
    index = read_index(store)
    for k in (1, 2, 3):
        config = json.loads((out / f"fold_{k}" / "config.json").read_text())
        fold_of = index.set_index("clip_id").loc[ids[:5], "fold"]
        assert sorted(config["dropped_from_training"]) == sorted(fold_of.index[fold_of != k])
        test = pd.read_csv(out / f"fold_{k}" / "predictions.csv", dtype={"clip_id": str})
        assert set(fold_of.index[fold_of == k]) <= set(test["clip_id"])  # test folds keep suspects
        split = RunFolder(out / f"fold_{k}").split()  # a re-evaluation sees the training split training saw
        assert not set(split.train["clip_id"]) & set(config["dropped_from_training"])
        assert len(split.train) == json.loads((out / f"fold_{k}" / "metrics.json").read_text())["n_train"]
    table = compare_uar(read_oof(run).pred, read_oof(out).pred, CLASSES, truth="true_emotion")
    assert list(table["fold"]) == ["1", "2", "3", "mean"] and table["n_test"].iloc[-1] == len(index)
    assert table["difference"].iloc[:3].tolist() == pytest.approx(
        (table["uar_dropped"] - table["uar_base"]).iloc[:3].tolist())
    with pytest.raises(ValueError, match="no clip_id column"):
        suspect_ids(pd.DataFrame({"id": [1]}).to_csv(tmp_path / "bad.csv") or tmp_path / "bad.csv")


def test_retrain_folds_gives_a_single_fold_run_out_of_fold_predictions(noisy_run, tmp_path):
    from dataclasses import replace

    from femo.training.loop import train

    store, _ = noisy_run
    single = tmp_path / "single"
    train(store, out=single, model=MODEL, train=replace(TRAIN, epochs=1), fold=2, progress=False)
    assert not has_oof(single)
    out = tmp_path / "folds"
    retrain_folds(single, out=out, exclude=["c0001"], keep_checkpoints=False)
    assert has_oof(out) and read_oof(out).folds == (1, 2, 3) and not list(out.glob("fold_*/*.pt"))
    assert len(read_oof(out).pred) == len(read_index(store))
    config = json.loads((out / "fold_2" / "config.json").read_text())
    assert config["train"]["epochs"] == 1 and config["model"]["modalities"] == ["face"]
    with pytest.raises(ValueError, match="another run or exclusion list"):
        retrain_folds(single, out=out, exclude=["c0002"])


def test_figures_and_thumbnails(noisy_run):
    import matplotlib

    matplotlib.use("Agg")
    from femo.audit import labels_plots

    store, run = noisy_run
    oof = read_oof(run)
    result = audit_labels(oof.pred, classes=oof.classes)
    ids = result.suspects["clip_id"].tolist()[:3]
    faces, found = labels_plots.suspect_faces(store, ids)
    assert faces.shape == (3, 16, 16, 3) and faces.dtype == np.uint8 and found.all()
    shown = labels_plots.thumbnail_strip(faces, ["a", "b", "c"], privacy="none")
    blurred = labels_plots.thumbnail_strip(faces, ["a", "b", "c"], privacy="blur")
    raw = shown.axes[0].images[0].get_array()
    assert np.array_equal(raw, faces[0]) and not np.array_equal(blurred.axes[0].images[0].get_array(), raw)
    assert len(labels_plots.suspect_rate_plot(result.per_class).axes[0].patches) == len(CLASSES)
    assert labels_plots.suggestion_heatmap(result.suggestions).axes and labels_plots.agreement_plot(result.clips).axes


def test_cached_retrain_is_reused_for_the_same_run_and_suspects(noisy_run, tmp_path):
    from dataclasses import replace

    from femo.audit.labels_drop import cached_retrain, retrain_key
    from femo.training.loop import train_folds

    store, _ = noisy_run
    run = tmp_path / "run"
    train_folds(store, out=run, model=MODEL, train=replace(TRAIN, epochs=1), progress=False)
    cache = tmp_path / "cache"
    first, reused = cached_retrain(run, exclude=["c0003", "c0001"], cache_dir=cache)
    assert not reused and first.parent == cache and has_oof(first) and not list(first.glob("fold_*/*.pt"))
    again, reused = cached_retrain(run, exclude=["c0001", "c0003"], cache_dir=cache)  # order does not matter
    assert reused and again == first
    other, reused = cached_retrain(run, exclude=["c0001"], cache_dir=cache)
    assert not reused and other != first
    assert retrain_key(run, ["c0001"]) == other.name
    (run / "fold_1" / "best.pt").write_bytes(b"retrained")  # another base run: another key
    assert retrain_key(run, ["c0001"]) != other.name
