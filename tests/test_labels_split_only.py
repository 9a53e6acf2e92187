"""Label quality on a store with a single train/val/test split (no ``fold`` column, as FER2013's
train / public_test / private_test): no out-of-fold probabilities can exist, so the audit gives a
verdict in words and empty tables instead of failing, and the report runs through to its metrics."""
from __future__ import annotations

import json

import pytest

from femo.audit import labels, labels_drop, labels_plots
from femo.config import ModelConfig, TrainConfig
from femo.data.store import read_index, write_index
from femo.training.loop import train

MODEL = ModelConfig(modalities=("audio",), temporal="mean", fusion="late", dim=16, modality_dropout=0.0)
CFG = TrainConfig(epochs=1, batch_size=16, augment=False, aux_weight=0.0)


def _split_only(store):
    """Replace the store's fold column by a split column (train / val / test by subject)."""
    index = read_index(store)
    subject = index["subject"].str[1:].astype(int)
    index["split"] = ["test" if s % 5 == 0 else "val" if s % 5 == 1 else "train" for s in subject]
    write_index(store, index.drop(columns=["fold"]))
    return store


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(single-split run, single-fold run of a k-fold store), each one epoch on 40 synthetic clips."""
    from _synth_store import build_store

    root = tmp_path_factory.mktemp("labels_split")
    split_store = _split_only(build_store(root / "split", n=40, folds=3))
    fold_store = build_store(root / "folds", n=40, folds=3)
    train(split_store, out=root / "run_split", model=MODEL, train=CFG, progress=False)
    train(fold_store, out=root / "run_fold", model=MODEL, train=CFG, fold=1, progress=False)
    return root / "run_split", root / "run_fold"


def test_single_split_run_gets_a_verdict_not_an_error(runs):
    split_run, fold_run = runs
    assert labels_drop.oof_problem(split_run) == labels_drop.SINGLE_SPLIT_VERDICT
    assert "fold" in labels_drop.SINGLE_SPLIT_VERDICT and "--folds all" in labels_drop.SINGLE_SPLIT_VERDICT
    assert labels_drop.oof_problem(fold_run) is None  # its store has folds: it can be retrained on each
    with pytest.raises(labels.OutOfFoldError, match="--folds all"):
        labels.read_oof(split_run)


def test_not_assessed_result_is_empty_and_says_why(runs):
    classes = ("neutral", "happy", "sad")
    result = labels.not_assessed(classes, labels_drop.SINGLE_SPLIT_VERDICT)
    assert not result.assessed and result.summary() == labels_drop.SINGLE_SPLIT_VERDICT
    metrics = result.to_metrics()
    assert metrics["assessed"] is False and metrics["verdict"] == labels_drop.SINGLE_SPLIT_VERDICT
    assert metrics["n_clips"] == 0 and metrics["n_suspect"] == 0 and metrics["oof_accuracy"] is None
    assert metrics["suspect_rate_per_class"] == {c: None for c in classes}
    assert list(result.per_class.index) == list(classes) and result.suggestions.to_numpy().sum() == 0
    assert result.suspects.empty and result.groups.empty
    json.dumps(metrics)  # JSON-ready: no NaN, no numpy scalars that json refuses
    labels_plots.suspect_rate_plot(result.per_class)  # the report's figures draw on empty tables
    labels_plots.suggestion_heatmap(result.suggestions)
    with pytest.raises(ValueError, match="verdict"):
        labels.not_assessed(classes, "")
    oof = labels.empty_oof(classes)
    assert oof.pred.empty and oof.folds == () and f"p_{classes[0]}" in oof.pred.columns


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_label_report_runs_on_a_single_split_run(runs, tmp_path):
    """06_label_quality with run_dir = the single-split run: no error, the verdict in metrics.json."""
    from pathlib import Path

    from femo.reports import execute
    from femo.reports import notebooks as nb_checks

    notebook = Path(__file__).resolve().parents[1] / "notebooks" / "06_label_quality.ipynb"
    params = nb_checks.resolve_parameters(notebook, {"run_dir": str(runs[0]), "top_k": 2})
    report = execute.execute(notebook, tmp_path / "rep", params, log_progress=False)
    assert report.error == ""
    metrics = json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert metrics["assessed"] is False and metrics["n_clips"] == 0
    assert metrics["verdict"] == labels_drop.SINGLE_SPLIT_VERDICT
