"""femo.reports.figures: JSON writers, figure helpers, progress lines, headline metrics and the index page."""
from __future__ import annotations

import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from femo.reports import figures  # noqa: E402

CLASSES = ["happy", "sad", "neutral", "angry", "surprise", "disgust", "fear"]


def test_write_metrics_is_numpy_safe(tmp_path: Path) -> None:
    metrics = {"uar": np.float32(0.25), "n": np.int64(3), "ok": np.bool_(True), "ece": float("nan"),
               "confusion": np.eye(2, dtype=np.int64), "per_class": pd.Series([0.5, 1.0], index=["a", "b"]),
               "path": tmp_path}
    figures.write_metrics(tmp_path / "out", metrics)
    data = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert data == {"uar": pytest.approx(0.25), "n": 3, "ok": True, "ece": None, "confusion": [[1, 0], [0, 1]],
                    "per_class": [0.5, 1.0], "path": str(tmp_path)}
    assert figures.read_metrics(tmp_path / "out")["n"] == 3
    with pytest.raises(TypeError, match="cannot write object"):
        figures.write_metrics(tmp_path, {"bad": object()})


def test_write_config_records_parameters_and_versions(tmp_path: Path) -> None:
    path = figures.write_config(tmp_path, {"epochs": 2, "fusion": "gated"}, notebook="02_train.ipynb")
    data = json.loads(path.read_text())
    assert data["parameters"] == {"epochs": 2, "fusion": "gated"}
    assert data["notebook"] == "02_train.ipynb"
    assert data["versions"]["femo"] == "0.1.0"
    assert data["versions"]["torch"].startswith("2.")
    assert set(data["versions"]) >= {"mediapipe", "python"}
    assert "git_commit" in data


def test_progress_writes_few_whole_lines() -> None:
    out = io.StringIO()
    items = list(figures.progress(range(100), desc="clips", every=0.25, file=out))
    assert items == list(range(100))
    lines = out.getvalue().splitlines()
    assert len(lines) == 4
    assert lines[-1].startswith("clips: 100%") and "100/100" in lines[-1]
    assert "\r" not in out.getvalue()


def test_group_columns_prefers_demographics_then_skips_manifest_and_flag_columns() -> None:
    frame = pd.DataFrame({"clip_id": list("abcd"), "label": ["happy", "sad"] * 2, "subject": list("aabb"),
                          "culture": ["x", "y", "z", "x"], "sex": ["f", "m", "f", "m"], "age_group": ["young"] * 4,
                          "brightness": [0.1] * 4, "occluder": ["none", "mouth"] * 2, "age": [20.5, 31.0, 40.2, 50.1]})
    assert figures.group_columns(frame) == ["sex", "culture"]
    assert figures.group_columns(frame.drop(columns=["sex", "culture"])) == ["occluder"]


def _texts(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes for t in ax.get_xticklabels() + ax.get_yticklabels()]


def test_confusion_and_recall_figures_are_labelled() -> None:
    confusion = np.diag(np.arange(1, 8)) + 1
    fig = figures.plot_confusion(confusion, CLASSES)
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted class", "true class")
    assert set(CLASSES) <= set(_texts(fig)) and "happy (n=8)" in _texts(fig)
    annotations = [t.get_text() for t in ax.texts]
    assert len(annotations) == 49 and annotations[0] == f"{2 / 8:.2f}"
    confusion[2] = 0  # a class absent from the test set: an empty row, not a row of zeros
    fig = figures.plot_confusion(confusion, CLASSES)
    assert "neutral (n=0)" in _texts(fig) and len(fig.axes[0].texts) == 42
    recall = dict(zip(CLASSES, np.linspace(0, 1, 7)))
    recall["fear"] = None
    fig = figures.plot_recall(recall, chance=1 / 7)
    assert fig.axes[0].get_xlabel() == "recall" and set(CLASSES) <= set(_texts(fig))
    bar_texts = [t.get_text() for t in fig.axes[0].texts]
    assert bar_texts[0] == "0.00" and bar_texts[-1] == "not in test set"


def test_learning_balance_composition_spectrogram_faces(tmp_path: Path) -> None:
    history = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [2.0, 1.5, 1.2], "val_loss": [2.1, 1.8, 1.7],
                            "val_uar": [0.2, 0.3, 0.35], "val_war": [0.25, 0.3, 0.4]})
    fig = figures.plot_learning_curves(history)
    # training objective (with auxiliary heads) and validation loss never share an axis
    assert [ax.get_ylabel() for ax in fig.axes] == ["training objective", "cross-entropy (fused head)", "score"]
    assert [len(ax.lines) for ax in fig.axes] == [1, 1, 2]
    labels = pd.Series(["happy", "sad", "happy", "fear"], name="label")
    fig = figures.plot_class_balance(labels, classes=CLASSES, by=pd.Series(["a", "b", "a", "a"], name="split"))
    assert fig.axes[0].get_xlabel() == "emotion class" and "fear" in _texts(fig)
    frame = pd.DataFrame({"label": labels, "sex": ["f", "m", None, "f"]})
    fig = figures.plot_composition(frame, "sex", order=CLASSES)
    assert fig.axes[0].get_ylabel() == "sex"
    fig = figures.plot_spectrogram(np.random.default_rng(0).normal(size=(64, 200)))
    assert fig.axes[0].get_xlabel() == "time (s)"
    assert fig.axes[0].images[0].get_extent()[1] == pytest.approx(2.0)
    faces = np.zeros((3, 32, 32, 3), np.uint8)
    marks = np.full((3, 478, 2), 16.0, np.float32)
    fig = figures.plot_faces(faces, points=marks, found=np.array([True, False, True]), titles=["a", "b", "c"])
    assert "no face" in [t.get_text() for ax in fig.axes for t in ax.texts]
    figures.save_figure(fig, tmp_path, "faces")
    assert (tmp_path / "figures" / "faces.png").stat().st_size > 1000
    fig = figures.plot_flags(pd.DataFrame({"brightness": [0.1, 0.5, 0.9], "snr_db": [1.0, 2.0, None]}),
                             ["brightness", "snr_db", "missing"])
    assert [ax.get_xlabel() for ax in fig.axes if ax.get_visible()] == ["brightness", "snr_db"]


def test_each_class_keeps_its_colour_across_figures() -> None:
    from matplotlib.colors import to_hex

    colours = figures.class_colours(["sad", "happy", "calm", "boredom"])
    assert colours == figures.class_colours(["boredom", "calm", "happy", "sad"]) | {} and colours["sad"] != colours["happy"]
    assert figures.class_colours(["boredom"])["boredom"] == colours["boredom"]  # not a function of the other classes
    fig = figures.plot_recall({"sad": 0.5, "happy": 0.7})
    bars = {t.get_text(): to_hex(p.get_facecolor()) for t, p in zip(fig.axes[0].get_yticklabels(), fig.axes[0].patches)}
    assert bars == {"sad": colours["sad"], "happy": colours["happy"]}
    fig = figures.plot_class_balance(pd.Series(["happy", "sad", "sad"]), classes=["sad", "happy"])
    assert [to_hex(p.get_facecolor()) for p in fig.axes[0].patches][:2] == [colours["sad"], colours["happy"]]


def test_demographic_columns_recognised_names_and_sidecar() -> None:
    frame = pd.DataFrame({"clip_id": list("abcd"), "sex": ["f", "m", "f", "m"], "perceived_age_group": ["a", "b", "a", "a"],
                          "dialect": ["x", "y", "x", "y"], "race": ["r"] * 4, "statement": ["k", "d", "k", "d"]})
    assert figures.demographic_columns(frame) == ["sex", "perceived_age_group"]  # race: one value, nothing to compare
    assert figures.demographic_columns(frame, extra={"demographics": ["dialect"]}) == ["sex", "perceived_age_group", "dialect"]
    assert figures.demographic_columns(frame[["clip_id", "statement"]]) == []
