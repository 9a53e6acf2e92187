"""Face-pipeline audit: per-group face-found rate / detector score, intervals and gap tests."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from femo.audit.pipeline import pipeline_audit, with_face_columns


def _table(*, planted: float, subjects: int = 24, clips: int = 6, seed: int = 0) -> pd.DataFrame:
    """Clips of ``subjects`` people in two skin-tone groups; the 'darker' group's faces are
    found ``planted`` less often (per-clip found rate ~ subject level + noise)."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(subjects):
        tone = "darker" if s % 2 else "lighter"
        level = 0.9 - (planted if tone == "darker" else 0.0) + rng.normal(0, 0.03)
        for c in range(clips):
            rate = float(np.clip(level + rng.normal(0, 0.05), 0, 1))
            rows.append({"clip_id": f"s{s}c{c}", "subject": f"s{s}", "ita_skin_group": tone,
                         "sex": "female" if s % 4 < 2 else "male", "face_found_rate": rate,
                         "face_score": 0.5 + 0.4 * rate})
    return pd.DataFrame(rows)


def test_planted_detection_gap_is_found_and_sized():
    table = _table(planted=0.3)
    result = pipeline_audit(table, attributes=["ita_skin_group", "sex"], n_boot=300, n_perm=300)
    gap = result.gaps.set_index(["measure", "attribute"]).loc[("face_found_rate", "ita_skin_group")]
    means = table.groupby("ita_skin_group")["face_found_rate"].mean()
    assert gap["worst"] == "darker" and gap["best"] == "lighter"
    assert gap["gap"] == pytest.approx(means["lighter"] - means["darker"])
    assert gap["gap_low"] > 0.15 and gap["p_adjusted"] < 0.01 and bool(gap["flagged"])
    # sex was not planted: its gap is not flagged
    assert not result.gaps.set_index(["measure", "attribute"]).loc[("face_found_rate", "sex"), "flagged"]
    row = result.groups.query("measure == 'face_found_rate' and group == 'darker'").iloc[0]
    assert row["mean"] == pytest.approx(means["darker"])
    assert row["low"] < row["mean"] < row["high"] and row["n_subjects"] == 12 and row["n_clips"] == 72


def test_no_gap_without_planting_and_metrics_schema():
    result = pipeline_audit(_table(planted=0.0, seed=3), attributes=["ita_skin_group"], n_boot=200, n_perm=200)
    assert result.flagged == []
    assert "No face-pipeline gap" in result.summary()
    m = result.to_metrics()
    assert set(m) >= {"groups", "gaps", "flagged", "measures", "clustered", "n_clips"}
    assert m["clustered"] is True and m["measures"] == ["face_found_rate", "face_score"]
    cell = m["groups"]["face_found_rate"]["ita_skin_group"]["lighter"]
    assert set(cell) == {"n_clips", "n_subjects", "mean", "low", "high", "assessable"}


def test_subject_clusters_widen_intervals():
    """Clips of one person are correlated: treating them as independent narrows the interval."""
    table = _table(planted=0.1, subjects=12, clips=10)
    clustered = pipeline_audit(table, attributes=["ita_skin_group"], measures=["face_found_rate"], n_boot=400,
                               n_perm=50)
    rows = pipeline_audit(table, attributes=["ita_skin_group"], measures=["face_found_rate"], cluster=None,
                          n_boot=400, n_perm=50, min_subjects=1)
    width = lambda r: (r.groups["high"] - r.groups["low"]).mean()  # noqa: E731
    assert width(clustered) > 1.3 * width(rows)
    assert not rows.clustered


def test_face_derived_unknown_group_is_never_ranked_and_missing_measure_noted():
    table = _table(planted=0.0)
    table.loc[table.index[:30], "ita_skin_group"] = np.nan  # clips without a face have no skin tone
    table.loc[table.index[:30], "face_found_rate"] = 0.0
    result = pipeline_audit(table.drop(columns="face_score"), attributes=["ita_skin_group"], n_boot=100, n_perm=100)
    unknown = result.groups.query("group == 'unknown'").iloc[0]
    assert unknown["mean"] == pytest.approx(0.0) and not unknown["assessable"]
    assert "unknown" not in set(result.gaps[["worst", "best"]].stack())
    assert any("face_score" in n for n in result.notes)
    with pytest.raises(ValueError, match="none of the measures"):
        pipeline_audit(table[["clip_id", "ita_skin_group"]], attributes=["ita_skin_group"])


def test_face_columns_join_store_index_and_annotation():
    pred = pd.DataFrame({"clip_id": ["b", "a"], "label": ["sad", "happy"], "perceived_sex": ["x", "y"]})
    index = pd.DataFrame({"clip_id": ["a", "b", "c"], "face_ratio": [1.0, 0.25, 0.0]})
    annotated = pd.DataFrame({"clip_id": ["a", "b"], "face_score": [0.9, 0.2], "perceived_sex": ["female", ""],
                              "ita_skin_group": ["lighter", ""], "annotate_reason": ["", "no face"]})
    out = with_face_columns(pred, index, annotated)
    assert out["clip_id"].tolist() == ["b", "a"] and out["face_found_rate"].tolist() == [0.25, 1.0]
    assert out["face_score"].tolist() == [0.2, 0.9]
    assert out["perceived_sex"].iloc[1] == "female" and pd.isna(out["perceived_sex"].iloc[0])  # "" -> missing
    assert "annotate_reason" not in out.columns
    assert "face_score" not in with_face_columns(pred, index).columns
    unknown = with_face_columns(pred.assign(clip_id=["a", "zz"]), index)
    assert unknown["face_found_rate"].iloc[0] == 1.0 and pd.isna(unknown["face_found_rate"].iloc[1])


def test_pipeline_plot_draws_every_group_and_refuses_unaudited_measures():
    from femo.audit.pipeline_plots import pipeline_plot

    result = pipeline_audit(_table(planted=0.2), attributes=["ita_skin_group", "sex"], n_boot=50, n_perm=50)
    fig = pipeline_plot(result, "face_found_rate", overall=0.8)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(labels) == 4 and any("ita_skin_group: darker" in t for t in labels)
    assert "share of sampled frames" in fig.axes[0].get_xlabel()
    with pytest.raises(ValueError, match="not audited"):
        pipeline_plot(result, "blur")
