"""Evidence that femo learns, on a reduced synthetic set through the real pipeline (slow, opt-in).

Runs benchmarks/evidence.py's stages (femo synth -> femo extract -> face-api embeddings -> train)
on 140 clips with all five subject-independent folds, so every clip is tested once and each
``informative`` slice holds about 47 clips. A modality's accuracy where it does not carry the label
is at or below chance because it then shows a different emotion. With so few clips the fused
model's gain is within noise, so the test only asks that it does not fall behind the best single
modality by more than 2 points (benchmarks/evidence.py reports the full-size numbers).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("mediapipe")

CHANCE = 1 / 7


def _evidence_module():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "evidence.py"
    spec = importlib.util.spec_from_file_location("femo_bench_evidence", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def evidence(tmp_path_factory):
    from femo.assets import asset_path

    try:
        asset_path("face_expression_model.bin")
        asset_path("face_landmarker.task")
    except Exception as exc:  # missing model files: the message says which command provisions them
        pytest.skip(f"model files missing ({exc}); run `femo models fetch --face-weights`")
    return _evidence_module().run_evidence(tmp_path_factory.mktemp("evidence"), clips=140, epochs=40,
                                           folds="all", fusions=("gated",), log=lambda msg: None)


@pytest.mark.slow
def test_each_modality_learns_only_where_it_carries_the_label_and_fusion_helps(evidence):
    scores = evidence["scores"]
    assert evidence["stages"]["extract"]["ok"] >= 133  # at most 5% of clips may fail extraction
    for name, own, other in (("face", ("face", "both"), "audio"), ("landmarks", ("face", "both"), "audio"),
                             ("audio", ("audio", "both"), "face")):
        for value in own:
            assert scores[name][f"informative={value}"]["acc"] >= CHANCE + 0.15, (name, value, scores[name])
        assert scores[name][f"informative={other}"]["acc"] <= CHANCE + 0.08, (name, other, scores[name])
        assert scores[name]["war"] >= CHANCE + 0.08
    best_single = max(scores[n]["war"] for n in ("face", "landmarks", "audio"))
    assert scores["fused_gated"]["war"] >= best_single - 0.02, scores["fused_gated"]
    assert scores["fused_gated"]["informative=both"]["acc"] >= CHANCE + 0.25
