"""Every notebook under notebooks/: follows the conventions, and runs through papermill (femo.reports.execute) with
tiny parameters into a temporary folder, writing a metrics.json with the expected keys and ranges.

The cached demo set (femo.reports.demo) is built once for all of them (the first run takes a few minutes on
2 cores; later runs reuse it). ``pytest --nbval-lax notebooks/`` runs the same notebooks as stored.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from femo.reports import demo, execute
from femo.reports import notebooks as nb_checks

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))

#: Smallest settings per notebook (each must be a parameter the notebook declares).
TINY: dict[str, dict] = {
    "01_data": {"n_examples": 2},
    "02_train": {"epochs": 1},
    "03_modality_ablation": {"n_boot": 20, "retrain": False},
    "04_bias_audit": {"n_boot": 20},
    "06_label_quality": {"top_k": 4},
    "05_attribution": {"n_examples": 2, "per_emotion": 1, "planted_clips": 1, "ig_steps": 4, "randomisation_clips": 1,
                       "randomisation_steps": 2},
}

#: Keys each notebook's metrics.json must hold.
EXPECTED_KEYS: dict[str, set[str]] = {
    "01_data": {"n_clips", "n_ok", "n_excluded", "n_subjects", "n_classes", "class_counts", "imbalance_ratio"},
    "02_train": {"uar", "war", "macro_f1", "per_class_recall", "confusion", "protocol", "fold", "n_test"},
    "03_modality_ablation": {"subset_uar", "shapley_uar", "slices"},
    "04_bias_audit": {"flagged", "groups", "pipeline"},
    "06_label_quality": {"n_clips", "n_suspect", "suspect_rate_per_class", "agreement", "method", "drop_suspects",
                         "planted_truth"},
    "05_attribution": {"region_share", "randomisation_similarity", "occlusion", "planted_region", "planted_region_pixels"},
}


def _numbers(obj, path: str = ""):
    """Yield (path, value) for every number inside a JSON value."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, obj


def check_ranges(name: str, metrics: dict) -> None:
    """Value ranges every report must respect (scores in [0, 1], counts >= 0, all finite)."""
    for where, value in _numbers(metrics):
        assert math.isfinite(value), f"{name}: {where} = {value}"
        leaf = where.rsplit(".", 1)[-1].split("[")[0]
        if leaf in {"uar", "war", "macro_f1", "ece", "face_found_rate", "audio_rate"} or "recall" in where:
            assert 0.0 <= value <= 1.0, f"{name}: {where} = {value} outside [0, 1]"
        if leaf.startswith("n_"):
            assert value >= 0, f"{name}: {where} = {value} negative"
    if name == "01_data":
        assert metrics["n_ok"] + metrics["n_excluded"] == metrics["n_clips"]
        assert sum(metrics["class_counts"].values()) == metrics["n_ok"]
        assert metrics["imbalance_ratio"] >= 1.0
    if name == "02_train":
        k = len(metrics["per_class_recall"])
        assert len(metrics["confusion"]) == k and sum(map(sum, metrics["confusion"])) == metrics["n_test"]
        present = [r for r in metrics["per_class_recall"].values() if r is not None]  # None: class not in test
        assert metrics["uar"] == pytest.approx(sum(present) / len(present), abs=1e-6)
        assert "subject" in metrics["protocol"]
    if name == "06_label_quality":
        check_label_quality(metrics)


def check_label_quality(metrics: dict) -> None:
    """metrics.json of 06_label_quality on the smoke set (which has votes and planted label errors)."""
    assert 0 <= metrics["n_suspect"] <= metrics["n_clips"]
    assert set(metrics["suspect_rate_per_class"]) == set(metrics["n_suspect_per_class"])
    assert sum(metrics["n_suspect_per_class"].values()) == metrics["n_suspect"]
    assert all(r is None or 0.0 <= r <= 1.0 for r in metrics["suspect_rate_per_class"].values())
    agreement = metrics["agreement"]
    assert 0.0 < agreement["mean_majority_share"] <= 1.0 and 0.0 <= agreement["mean_vote_entropy"] <= 1.0
    assert set(agreement["per_class"]) == set(metrics["suspect_rate_per_class"])
    test = agreement["suspect_vs_rest"]
    assert test["n_suspect"] == metrics["n_suspect"] and (test["auroc"] is None or 0.0 <= test["auroc"] <= 1.0)
    truth = metrics["planted_truth"]
    assert truth["n_clips"] == metrics["n_clips"] and truth["n_hits"] <= min(truth["n_flipped"], truth["n_suspect"])
    drop = metrics["drop_suspects"]
    assert drop["difference"] == pytest.approx(drop["uar_dropped"] - drop["uar_base"], abs=1e-9)


def test_notebooks_exist() -> None:
    assert [p.stem for p in NOTEBOOKS][:2] == ["01_data", "02_train"]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_follows_conventions(notebook: Path) -> None:
    assert nb_checks.check_notebook(notebook) == []


def test_a_cell_without_an_id_is_named(tmp_path: Path) -> None:
    nb = json.loads(NOTEBOOKS[0].read_text(encoding="utf-8"))
    del nb["cells"][2]["id"]
    copy = tmp_path / NOTEBOOKS[0].name
    copy.write_text(json.dumps(nb, indent=1), encoding="utf-8")
    assert nb_checks.check_notebook(copy) == ["cell(s) [2] have no id (nbformat 4.5: one per cell)"]


@pytest.fixture(scope="module")
def demo_set() -> demo.DemoPaths:
    """The cached smoke set, built here (not inside a kernel) so a build error surfaces clearly."""
    from femo.reports.demo_kfold import build_kfold_demo

    build_kfold_demo()  # the label-quality report's k-fold set
    return demo.build_demo()


@pytest.mark.timeout(900)
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_with_tiny_parameters(notebook: Path, demo_set: demo.DemoPaths, tmp_path: Path) -> None:
    declared = nb_checks.notebook_parameters(notebook)
    tiny = TINY.get(notebook.stem, {})
    assert set(tiny) <= set(declared), f"{notebook.name}: TINY sets undeclared {sorted(set(tiny) - set(declared))}"
    report = execute.execute(notebook, tmp_path / notebook.stem, nb_checks.resolve_parameters(notebook, tiny),
                             log_progress=False)
    metrics = json.loads((tmp_path / notebook.stem / "metrics.json").read_text())
    parameters = json.loads((tmp_path / notebook.stem / "config.json").read_text())["parameters"]
    assert {k: parameters[k] for k in tiny} == tiny, "the tiny settings did not reach the notebook"
    assert report.error == "" and json.loads((tmp_path / notebook.stem / "report.json").read_text())["error"] == ""
    missing = EXPECTED_KEYS.get(notebook.stem, set()) - set(metrics)
    assert not missing, f"{notebook.name}: metrics.json lacks {sorted(missing)}"
    check_ranges(notebook.stem, metrics)
    html = (tmp_path / notebook.stem / f"{notebook.stem}.html").read_text()
    assert "Sanity checks" in html and "demo.resolve(" not in html  # code cells are not exported
