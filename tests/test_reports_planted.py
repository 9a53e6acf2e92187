"""The index page's planted-truth panel: reads what the synthetic generator planted from the store,
checks each report's measured figure against it, and is absent on real data."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from femo.data.store import StoreMeta, write_meta
from femo.reports import planted
from femo.reports.index import Report, write_index

CLASSES = ("happy", "sad")


def make_store(folder: Path, *, generator: str = "femo.data.synth", bias: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    extra = {"generator": generator, "planted_bias": bias} if generator else {}
    write_meta(folder, StoreMeta(classes=CLASSES, dataset="synthetic" if generator else "real", extra=extra))
    return folder


ABLATION = {"planted": [
    {"slice": "informative=face", "expected": ["face", "landmarks"], "top": "landmarks", "top_shapley": 0.12,
     "judged": True, "passed": True},
    {"slice": "informative=audio", "expected": ["audio"], "top": "audio", "top_shapley": 0.2, "judged": True,
     "passed": True}]}
AUDIT = {"flagged": [{"attribute": "skin_tone", "group": "dark", "reference": "light", "gap": 0.21, "p_value": 0.003}]}
ATTRIBUTION = {"planted_region": {"column": "expression_region", "value": "mouth", "expected": "mouth", "n_clips": 9,
                                  "measure": "drop of the target logit with the region hidden from crops and landmarks",
                                  "values": {"mouth": 0.41, "eyes": 0.2, "other": 0.3}, "top": "mouth",
                                  "judged": True, "passed": True},
               "planted_region_pixels": {"column": "expression_region", "value": "mouth", "expected": "mouth",
                                         "n_clips": 9, "values": {"mouth": 0.05, "jaw": 0.23}, "top": "jaw",
                                         "judged": True, "passed": False},
               "randomisation": {"spearman_final": 0.21, "passed": True, "threshold": 0.5}}


def reports(tmp_path: Path, store: Path, *, audit=AUDIT, ablation=ABLATION, attribution=ATTRIBUTION) -> list[Report]:
    out = []
    for name, metrics in (("03_modality_ablation", ablation), ("04_bias_audit", audit), ("05_attribution", attribution)):
        out.append(Report(tmp_path / f"{name}.ipynb", tmp_path / name, {}, {**metrics, "store": str(store)}))
    return out


def test_every_planted_effect_recovered(tmp_path):
    store = make_store(tmp_path / "store", bias={"column": "skin_tone", "value": "dark"})
    checks = planted.planted_checks(reports(tmp_path, store))
    assert [c.passed for c in checks] == [True, True, True, True, True]
    assert checks[0].planted == "skin_tone=dark" and "UAR gap 0.21" in checks[0].measured
    assert checks[1].measured == "landmarks first (+12.0 UAR points)"
    assert "mouth first (0.41" in checks[3].measured and "0.21" in checks[4].measured
    # the crops' IG shares are shown next to the judged occlusion measure, and do not decide it
    assert "hidden from crops and landmarks" in checks[3].measured and "put the jaw first" in checks[3].measured
    html = planted.panel_html(checks)
    assert "Planted truth" in html and "5 of 5 are recovered" in html


@pytest.mark.parametrize("flagged,passed", [
    ([], False),  # the planted group is missed
    ([AUDIT["flagged"][0], {"attribute": "sex", "group": "f", "gap": 0.1, "p_value": 0.01}], False),  # and more
    ([{"attribute": "skin_tone*sex", "group": "dark / f", "gap": 0.3, "p_value": 0.02}], True),  # via the planted group
    ([{"attribute": "skin_tone", "group": "light", "gap": 0.2, "p_value": 0.01}], False),  # the wrong group
])
def test_bias_check(flagged, passed):
    assert planted.bias_check({"column": "skin_tone", "value": "dark"}, {"flagged": flagged}).passed is passed


def test_without_a_planted_bias_nothing_may_be_flagged():
    assert planted.bias_check(None, {"flagged": []}).passed is True
    assert planted.bias_check(None, AUDIT).passed is False


def test_failed_and_missing_reports(tmp_path):
    store = make_store(tmp_path / "store", bias={"column": "skin_tone", "value": "dark"})
    wrong = {"planted": [{**ABLATION["planted"][1], "top": "face", "passed": False}]}
    small = {**ATTRIBUTION, "planted_region": {**ATTRIBUTION["planted_region"], "judged": False, "passed": False}}
    checks = planted.planted_checks(reports(tmp_path, store, ablation=wrong, attribution=small))
    assert [c.passed for c in checks] == [True, False, False, True]
    assert checks[2].measured.startswith("too few mouth-only clips")
    gone = [r for r in reports(tmp_path, store) if not r.name.startswith("04")]
    assert planted.planted_checks(gone)[0].passed is None  # "not measured", never a pass


def test_panel_absent_on_real_data(tmp_path):
    assert planted.planted_checks(reports(tmp_path, make_store(tmp_path / "real", generator=""))) is None
    assert planted.panel_html(None) == ""


def test_index_page_shows_the_panel_and_stage_times(tmp_path):
    store = make_store(tmp_path / "store", bias={"column": "skin_tone", "value": "dark"})
    day, tag = "2026-12-01", "demo"
    for rep in reports(tmp_path, store):
        folder = tmp_path / "reports" / f"{day}_{rep.name}_{tag}"
        folder.mkdir(parents=True)
        (folder / "report.json").write_text(json.dumps({"notebook": rep.name, "ipynb": f"{rep.name}.ipynb",
                                                        "error": "", "seconds": 3.0}))
        (folder / "metrics.json").write_text(json.dumps(rep.metrics))
    page = write_index(tmp_path / "reports", day=day, tag=tag, stages={"data": 30.0, "reports": 90.0}).read_text()
    assert "Planted truth" in page and page.count("class='ok'>pass") == 5
    assert "Pipeline time: 2.0 minutes (data 30 s, reports 90 s)" in page
