"""Metrics against hand-computed values; predictions table; k-fold aggregation."""
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from _synth_store import CLASSES, build_store
from femo.config import DataConfig
from femo.data.dataset import FeatureDataset
from femo.training.evaluate import aggregate_folds, predict
from femo.training.metrics import expected_calibration_error, metrics


def _onehot_probs(y_pred, c):
    return np.eye(c)[y_pred]


def test_metrics_hand_computed():
    y_true, y_pred = [0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 0, 2]
    m = metrics(y_true, y_pred, _onehot_probs(y_pred, 3), ["a", "b", "c"])
    assert m["uar"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["war"] == pytest.approx(4 / 6)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["per_class_recall"] == pytest.approx({"a": 2 / 3, "b": 0.5, "c": 1.0})
    assert m["confusion"] == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert m["ece"] == pytest.approx(2 / 6)  # confidence 1 everywhere, accuracy 4/6
    assert m["n"] == 6


def test_uar_only_over_classes_present_in_truth():
    m = metrics([0, 0, 1], [0, 2, 1], _onehot_probs([0, 2, 1], 3), ["a", "b", "c"])
    assert m["uar"] == pytest.approx((0.5 + 1.0) / 2)
    assert m["per_class_recall"]["c"] is None
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1.0) / 2)  # a: P=1, R=.5; b: 1


def test_ece_hand_computed():
    probs = np.array([[0.9, 0.1], [0.62, 0.38], [0.3, 0.7]])
    assert expected_calibration_error(np.array([0, 1, 1]), probs) == pytest.approx((0.1 + 0.62 + 0.3) / 3)
    same_bin = np.array([[0.8, 0.2], [0.8, 0.2]])
    assert expected_calibration_error(np.array([0, 1]), same_bin) == pytest.approx(0.3)


def test_metrics_refuse_empty():
    with pytest.raises(ValueError, match="no samples"):
        metrics([], [], np.zeros((0, 2)), ["a", "b"])


class _Constant(nn.Module):
    """Predicts from the mean cached embedding through a fixed linear map."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(16, 3)

    def forward(self, batch):
        return {"logits": self.lin(batch["face_emb"].mean(1))}


def test_predict_carries_metadata(tmp_path):
    store = build_store(tmp_path, n=7, n_failed=1)
    ds = FeatureDataset(store, config=DataConfig(num_frames=4, face_size=16, audio_frames=16), embeddings="proto")
    torch.manual_seed(0)
    pred = predict(_Constant(), ds, batch_size=3)
    assert list(pred.columns[:6]) == ["clip_id", "label", "predicted", "p_happy", "p_sad", "p_angry"]
    assert {"subject", "fold", "informative", "age_group", "status"} <= set(pred.columns)
    assert len(pred) == 7 and "bad0" not in set(pred["clip_id"])
    pd.testing.assert_series_equal(pred["age_group"], ds.index["age_group"], check_names=False)
    assert pred[[f"p_{c}" for c in CLASSES]].sum(axis=1).to_numpy() == pytest.approx(np.ones(7), abs=1e-5)
    probs = pred[[f"p_{c}" for c in CLASSES]].to_numpy()
    assert pred["predicted"].tolist() == [CLASSES[i] for i in probs.argmax(1)]


def test_aggregate_folds_means_per_fold_scores():
    f1 = metrics([0, 0, 1, 1], [0, 0, 1, 0], _onehot_probs([0, 0, 1, 0], 2), ["a", "b"])
    f2 = metrics([0, 1], [1, 1], _onehot_probs([1, 1], 2), ["a", "b"])
    s = aggregate_folds({1: {**f1, "n_test": 4}, 2: {**f2, "n_test": 2}}, ["a", "b"])
    assert s["uar"] == pytest.approx((0.75 + 0.5) / 2)
    assert s["war"] == pytest.approx((0.75 + 0.5) / 2)  # mean of per-fold WAR, not pooled accuracy (4/6)
    assert s["per_class_recall"] == pytest.approx({"a": 0.5, "b": 0.75})
    assert s["confusion"] == [[2, 1], [1, 2]] and s["n_test"] == 6
    assert set(s["folds"]) == {"1", "2"} and s["folds"]["2"]["uar"] == pytest.approx(0.5)
