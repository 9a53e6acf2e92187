"""Tests of the bias audit (femo.audit.fairness and its parts) on hand-made and simulated
predictions with known truth."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from femo.audit import composition as comp
from femo.audit import fairness_plots
from femo.audit.disparity import gap_test, group_counts
from femo.audit.fairness import audit, confusion_matrices, disparities, group_metrics, modality_gaps
from femo.audit.groups import add_group_columns, cluster_keys, parse_intersections
from femo.audit.simulate import simulate_predictions
from femo.audit.stats import permutation_test, uar
from femo.config import CLASSES as ALL_CLASSES

CLASSES = ("happy", "sad", "angry")
ATTRS = ["sex", "age_group", "skin_tone", "culture"]


def small_frame() -> pd.DataFrame:
    """8 clips, 4 subjects, two sexes; hand-checkable metrics."""
    return pd.DataFrame({
        "clip_id": [f"c{i}" for i in range(8)],
        "subject": ["a", "a", "b", "b", "c", "c", "d", "d"],
        "sex": ["f", "f", "f", "f", "m", "m", "m", "m"],
        "label": ["happy", "sad", "happy", "angry", "happy", "sad", "sad", "angry"],
        "predicted": ["happy", "sad", "sad", "angry", "happy", "happy", "sad", "happy"],
    })


@pytest.fixture(scope="module")
def planted():
    pred = simulate_predictions(n_subjects=40, clips_per_subject=15, bias={"skin_tone": ("dark", -1.5)}, seed=1)
    return pred, audit(pred, attributes=ATTRS, classes=ALL_CLASSES, intersections="sex*age_group",
                       n_boot=300, seed=0)


def test_group_metrics_hand_computed():
    table = group_metrics(small_frame(), attributes=["sex"], classes=CLASSES, min_subjects=2).set_index("group")
    f, m = table.loc["f"], table.loc["m"]
    # f: happy 1/2, sad 1/1, angry 1/1 -> UAR 5/6; WAR 3/4
    assert f["uar"] == pytest.approx(5 / 6) and f["war"] == pytest.approx(0.75)
    # m: happy 1/1, sad 1/2, angry 0/1 -> UAR 1/2; WAR 2/4
    assert m["uar"] == pytest.approx(0.5) and m["war"] == pytest.approx(0.5)
    # m false positive rate for happy: non-happy clips (sad, sad, angry) predicted happy: 2 of 3
    assert m["fpr_happy"] == pytest.approx(2 / 3) and m["rate_happy"] == pytest.approx(3 / 4)
    assert f["recall_happy"] == pytest.approx(0.5) and f["fpr_sad"] == pytest.approx(1 / 3)
    assert (table["n_clips"] == 4).all() and (table["n_subjects"] == 2).all() and table["assessable"].all()
    assert np.isnan(f["ece"])  # no p_<class> columns
    strict = group_metrics(small_frame(), attributes=["sex"], classes=CLASSES, min_subjects=3)
    assert not strict["assessable"].any()


def test_confusion_matrices_per_group():
    mats = confusion_matrices(small_frame(), attribute="sex", classes=CLASSES)
    assert set(mats) == {"f", "m"}
    assert mats["m"].loc["angry", "happy"] == 1 and mats["m"].to_numpy().sum() == 4
    assert np.trace(mats["f"].to_numpy()) == 3


def test_bad_inputs_are_named():
    frame = small_frame()
    with pytest.raises(ValueError, match="do not exist"):
        group_metrics(frame, attributes=["race"], classes=CLASSES)
    with pytest.raises(ValueError, match="single value"):
        group_metrics(frame.assign(sex="f"), attributes=["sex"], classes=CLASSES)
    with pytest.raises(ValueError, match="not in classes"):
        group_metrics(frame.assign(label="joy"), attributes=["sex"], classes=CLASSES)
    with pytest.raises(ValueError, match="missing column"):
        group_metrics(frame.drop(columns="predicted"), attributes=["sex"], classes=CLASSES)
    with pytest.raises(ValueError, match="distinct values"):
        add_group_columns(pd.DataFrame({"age": np.arange(40) + 0.5}), attributes=["age"])
    with pytest.raises(ValueError, match="at least two columns"):
        parse_intersections("sex*")


def test_missing_values_become_an_unknown_group():
    frame = small_frame()
    frame.loc[[6, 7], "sex"] = None
    table = group_metrics(frame, attributes=["sex"], classes=CLASSES, min_subjects=1).set_index("group")
    assert list(table.index) == ["f", "m", "unknown"]
    assert table.loc["unknown", "n_clips"] == 2 and table["n_clips"].sum() == 8


def test_intersections_and_cluster_keys():
    frame = small_frame().assign(age_group=["y", "y", "o", "o", "y", "y", "o", "o"])
    groups, columns = add_group_columns(frame, attributes=["sex"], intersections=parse_intersections("sex*age_group"))
    assert columns == ["sex", "sex*age_group"]
    assert sorted(groups["sex*age_group"].unique()) == ["f / o", "f / y", "m / o", "m / y"]
    keys, clustered = cluster_keys(frame.assign(subject=[None] + ["a"] * 7), "subject")
    assert clustered and keys.iloc[0] == "clip:c0" and keys.iloc[1] == "subject:a"
    assert not cluster_keys(frame, None)[1]


def test_planted_bias_is_flagged(planted):
    _, result = planted
    assert [f["attribute"] for f in result.flagged] == ["skin_tone"]
    flag = result.flagged[0]
    assert flag["group"] == "dark" and flag["metric"] == "uar_gap"
    assert flag["p_value"] < 0.05 and flag["ci_low"] > 0
    assert "skin_tone" in result.summary and "'dark'" in result.summary
    row = result.disparities.set_index("attribute").loc["skin_tone"]
    assert row["ratio_high"] < 1 and row["p_adjusted"] >= row["p_value"]


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_no_planted_bias_flags_nothing(seed):
    pred = simulate_predictions(n_subjects=40, clips_per_subject=10, seed=seed)
    result = audit(pred, attributes=ATTRS, classes=ALL_CLASSES, n_boot=200, seed=seed)
    assert result.flagged == []
    assert "No UAR gap is significant" in result.summary


def test_small_group_is_shown_not_ranked(planted):
    _, result = planted
    south = result.groups.set_index(["attribute", "group"]).loc[("culture", "south")]
    assert south["n_subjects"] == 2 and not south["assessable"]
    culture = result.disparities.set_index("attribute").loc["culture"]
    assert "south" not in (culture["worst"], culture["best"]) and culture["n_assessable"] == 2
    assert "culture='south' (2)" in result.summary
    assert "south" not in set(result.emotion_gaps.query("attribute == 'culture'")[["low_group", "high_group"]].stack())


def test_results_ignore_row_order(planted):
    pred, result = planted
    shuffled = pred.sample(frac=1.0, random_state=3)
    again = audit(shuffled, attributes=ATTRS, classes=ALL_CLASSES, intersections="sex*age_group",
                  n_boot=300, seed=0)
    cols = ["uar", "uar_low", "uar_high", "n_clips", "n_subjects", "ece"]
    pd.testing.assert_frame_equal(again.groups[cols], result.groups[cols], check_exact=False, atol=1e-9)
    pd.testing.assert_frame_equal(again.disparities, result.disparities, check_exact=False, atol=1e-9)


def test_clustered_intervals_are_wider_when_subjects_correlate():
    pred = simulate_predictions(n_subjects=30, clips_per_subject=20, subject_sd=1.2, seed=4)
    kw = dict(attributes=["sex"], classes=ALL_CLASSES, n_boot=300)
    by_subject = group_metrics(pred, **kw)
    by_clip = group_metrics(pred, cluster=None, **kw)
    width = lambda t: (t["uar_high"] - t["uar_low"]).to_numpy()
    assert (width(by_subject) > 1.3 * width(by_clip)).all()


def test_without_subjects_falls_back_to_clips_and_says_so():
    pred = simulate_predictions(n_subjects=20, clips_per_subject=10, seed=2).drop(columns="subject")
    result = audit(pred, attributes=["sex"], classes=ALL_CLASSES, n_boot=100)
    assert not result.clustered and np.isnan(result.groups["n_subjects"]).all()
    assert "no subject column" in result.summary
    assert result.to_metrics()["groups"]["sex"]["female"]["n_subjects"] is None


def test_vectorised_permutation_agrees_with_generic_test():
    pred = simulate_predictions(n_subjects=24, clips_per_subject=8, seed=5, rare_subjects=0)
    groups, _ = add_group_columns(pred, attributes=["age_group"])
    clusters, _ = cluster_keys(groups, "subject")
    classes = ALL_CLASSES
    fast = gap_test(group_counts(groups, "age_group", classes, clusters), n_boot=50, n_perm=400, ci=0.95, seed=0)

    def max_min(frame):
        values = [uar(g["label"], g["predicted"], classes) for _, g in frame.groupby("age_group")]
        return max(values) - min(values)

    slow = permutation_test(groups, max_min, group="age_group", n_perm=400, cluster="subject")
    assert fast.gap == pytest.approx(max_min(groups))
    assert fast.p_value == pytest.approx(slow, abs=0.08)


def test_disparities_emotion_gaps_hand_computed():
    table, emotions = disparities(small_frame(), attributes=["sex"], classes=CLASSES, min_subjects=2, n_boot=20,
                                  n_perm=20)
    row = table.iloc[0]
    assert row["worst"] == "m" and row["best"] == "f" and row["gap"] == pytest.approx(5 / 6 - 1 / 2)
    assert row["ratio"] == pytest.approx(0.5 / (5 / 6))
    recall = emotions.query("metric == 'recall'").set_index("emotion")
    assert recall.loc["angry", "gap"] == pytest.approx(1.0) and recall.loc["angry", "low_group"] == "m"
    rate = emotions.query("metric == 'rate'").set_index("emotion")
    assert rate.loc["happy", "gap"] == pytest.approx(3 / 4 - 1 / 4)


def test_composition_and_planted_association():
    rng = np.random.default_rng(0)
    n = 400
    group = np.where(np.arange(n) < 100, "x", "y")
    label = np.where((group == "x") & (rng.random(n) < 0.7), "happy", rng.choice(list(CLASSES), n))
    frame = pd.DataFrame({"g": group, "label": label, "split": np.where(np.arange(n) % 4, "train", "test")})
    tables = comp.composition(frame, attributes=["g"])
    assert set(tables) == {"g x label", "g x split"}
    assert tables["g x split"].loc["All", "All"] == n and tables["g x split"].loc["x", "test"] == 25
    assoc = comp.associations(frame, attributes=["g"], classes=CLASSES).set_index(["group", "emotion"])
    x_happy = assoc.loc[("x", "happy")]
    p_given = (label[group == "x"] == "happy").mean()
    assert x_happy["lift"] == pytest.approx(p_given / (label == "happy").mean())
    assert x_happy["flagged"] and x_happy["direction"] == "over"


def test_modality_breakdown_shows_which_modality_carries_the_gap(planted):
    pred, _ = planted
    fair = pred.assign(predicted=pred["label"])  # a perfect modality has no gap
    table = modality_gaps(pred, {"face": pred, "audio": fair}, attributes=["skin_tone"], classes=ALL_CLASSES,
                          n_boot=100, n_perm=100).set_index("modality")
    assert table.loc["face", "gap"] > 0.2 and table.loc["face", "p_value"] < 0.05
    assert table.loc["audio", "gap"] == pytest.approx(0.0) and table.loc["audio", "uar"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="clip_ids differ"):
        modality_gaps(pred, {"face": pred.iloc[1:]}, attributes=["skin_tone"], classes=ALL_CLASSES, n_boot=5)


def test_to_metrics_schema_is_json(planted):
    _, result = planted
    metrics = result.to_metrics()
    text = json.dumps(metrics, allow_nan=False)
    assert set(metrics["flagged"][0]) >= {"attribute", "group", "metric", "gap", "ci_low", "ci_high", "p_value"}
    dark = metrics["groups"]["skin_tone"]["dark"]
    assert set(dark) == {"n_clips", "n_subjects", "uar", "uar_low", "uar_high", "assessable"}
    assert dark["uar_low"] <= dark["uar"] <= dark["uar_high"] and dark["assessable"] is True
    assert "sex*age_group" in metrics["groups"] and len(text) > 100


def test_manifest_composition_uses_all_splits(planted):
    pred, _ = planted
    manifest = pd.concat([pred.assign(split="test"), pred.assign(clip_id=pred["clip_id"] + "t", split="train")])
    result = audit(pred, attributes=["sex", "culture"], classes=ALL_CLASSES, manifest=manifest, n_boot=50)
    assert result.composition["sex x split"].loc["All", "All"] == 2 * len(pred)
    assert result.composition_source == "manifest"


def test_single_valued_attribute_is_skipped_with_a_note():
    pred = simulate_predictions(n_subjects=20, clips_per_subject=5, seed=3).assign(culture="east")
    result = audit(pred, attributes=["sex", "culture"], intersections="sex*culture", classes=ALL_CLASSES, n_boot=50)
    assert list(result.disparities["attribute"]) == ["sex"]
    assert "'culture' has a single value ('east')" in result.summary
    with pytest.raises(ValueError, match="no attribute with at least two values"):
        audit(pred, attributes=["culture"], classes=ALL_CLASSES, n_boot=10)


def write_fake_run(root, pred):
    """A run folder with predictions but no model (config.json, predictions.csv, a stray
    predictions_audio.csv that is ignored) and a data folder whose manifest.csv has a
    store/index.csv beside it, as femo.reports.demo.resolve expects."""
    (root / "data" / "store").mkdir(parents=True)
    manifest = pred.drop(columns=["predicted", *[f"p_{c}" for c in ALL_CLASSES]]).assign(path="x.mp4")
    manifest.to_csv(root / "data" / "manifest.csv", index=False)
    manifest.assign(status="ok").to_csv(root / "data" / "store" / "index.csv", index=False)  # as extraction copies it
    run = root / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"classes": list(ALL_CLASSES)}))
    pred.to_csv(run / "predictions.csv", index=False)
    pred.assign(predicted=pred["label"]).to_csv(run / "predictions_audio.csv", index=False)
    return run


def test_read_run_predictions(tmp_path):
    from femo.audit.report import read_run_predictions

    pred = simulate_predictions(n_subjects=6, clips_per_subject=3, seed=0)
    pred["subject"] = pred["subject"].str.replace("s", "0")  # ids that look like numbers stay strings
    run = write_fake_run(tmp_path, pred)
    loaded = read_run_predictions(run)
    assert loaded.classes == tuple(ALL_CLASSES) and len(loaded.pred) == 18
    assert loaded.modalities == {} and loaded.skipped == []  # files in the run folder are never read as modalities
    assert loaded.pred["subject"].iloc[0] == "0000"
    with pytest.raises(FileNotFoundError, match="predictions.csv"):
        read_run_predictions(tmp_path)


def test_notebook_flags_the_planted_group(tmp_path):
    papermill = pytest.importorskip("papermill")
    from pathlib import Path

    pred = simulate_predictions(n_subjects=40, clips_per_subject=10, bias={"skin_tone": ("dark", -1.5)}, seed=1)
    run = write_fake_run(tmp_path, pred)
    notebook = Path(__file__).resolve().parent.parent / "notebooks" / "04_bias_audit.ipynb"
    out = tmp_path / "report"
    papermill.execute_notebook(
        str(notebook), str(tmp_path / "executed.ipynb"), kernel_name="python3", cwd=str(tmp_path), progress_bar=False,
        parameters={"run_dir": str(run), "data": str(tmp_path / "data"), "output_dir": str(out), "n_boot": 200})
    metrics = json.loads((out / "metrics.json").read_text())
    assert [(f["attribute"], f["group"]) for f in metrics["flagged"]] == [("skin_tone", "dark")]
    assert metrics["groups"]["culture"]["south"]["assessable"] is False
    assert metrics["groups"]["skin_tone"]["dark"]["n_subjects"] >= 5
    assert {p.name for p in (out / "figures").iterdir()} == {"uar_forest.png", "recall_heatmap.png"}  # no model: no modality gaps


def test_nothing_assessable_says_nothing_was_tested():
    pred = simulate_predictions(n_subjects=6, clips_per_subject=4, seed=0)
    result = audit(pred, attributes=["sex", "skin_tone"], classes=ALL_CLASSES, n_boot=20)
    assert result.flagged == [] and result.disparities["p_value"].isna().all()
    assert "no UAR gap could be tested" in result.summary
    assert not result.groups["assessable"].any()


def test_modality_gaps_keep_their_columns_when_nothing_is_assessable():
    pred = simulate_predictions(n_subjects=6, clips_per_subject=4, seed=0)
    other = pred.assign(predicted=pred["label"])
    result = audit(pred, attributes=["sex", "skin_tone"], classes=ALL_CLASSES, n_boot=20,
                   modality_predictions={"audio": other})
    gaps = result.modality_gaps
    assert {"gap", "gap_low", "gap_high", "p_value"} <= set(gaps.columns)
    assert gaps["gap"].isna().all()
    assert gaps["uar"].tolist() == pytest.approx([1.0] * len(gaps))
    fig = fairness_plots.modality_gap_plot(gaps)
    assert "no per-modality gap" in fig.axes[0].texts[0].get_text()
