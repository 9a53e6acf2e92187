"""femo.audit.attribution_sanity and the report's choice of clips: cascading model randomisation
(per layer, on the maps' model factor), IG convergence, stratified choice, the result object."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from audit_doubles import mouth_batch
from audit_doubles import cnn, held_out  # noqa: F401 (module-scoped fixtures shared with the attribution tests)
from femo.audit import attribution as at
from femo.audit import attribution_regions as ar




# --- sanity checks: cascading randomisation, convergence, stratified choice, the result object -------

def test_path_modules_follow_the_face_only(cnn, held_out):
    from femo.audit import attribution_sanity as san

    assert san.path_modules(cnn, held_out, "face") == ["cnn.0", "cnn.4"]  # not the landmarks / audio heads
    assert san.path_modules(cnn, held_out, "audio") == ["audio"]
    assert all(p.requires_grad for p in cnn.parameters())  # restored


@pytest.mark.parametrize("n,steps,sizes", [(10, 4, [3, 3, 2, 2]), (2, 4, [1, 1]), (0, 4, [])])
def test_cascade_steps_top_first(n, steps, sizes):
    from femo.audit import attribution_sanity as san

    names = [f"layer{i}" for i in range(n)]  # bottom first
    out = san.cascade_steps(names, steps)
    assert [len(s) for s in out] == sizes
    assert [m for s in out for m in s] == names[::-1]


def test_cascade_steps_take_whole_layers_top_first():
    from femo.audit import attribution_sanity as san

    names = ["a.0", "a.1", "b", "c.0", "c.1", "c.2"]  # bottom first
    labels = ["a", "a", "b", "c", "c", "c"]
    assert san.cascade_steps(names, 0, labels) == [["c.2", "c.1", "c.0"], ["b"], ["a.1", "a.0"]]
    assert san.cascade_steps(names, 2, labels) == [["c.2", "c.1", "c.0", "b"], ["a.1", "a.0"]]


def test_layer_labels_of_a_crop_cnn_face_path():
    from femo.audit import attribution_sanity as san
    from femo.config import ModelConfig
    from femo.models.net import FemoNet

    torch.manual_seed(0)
    net = FemoNet(ModelConfig(frame_encoder="crop_cnn", freeze="full", landmark_dim=6, dim=16, heads=2), 3).eval()
    b, t = 2, 2
    batch = {"face": torch.rand(b, t, 3, 32, 32), "face_mask": torch.ones(b, t, dtype=torch.bool),
             "landmarks": torch.rand(b, t, 6), "landmarks_mask": torch.ones(b, t, dtype=torch.bool),
             "audio": torch.rand(b, 1, 64, 32), "prosody": torch.rand(b, 32, 4), "audio_mask": torch.ones(b, dtype=torch.bool)}
    names = san.path_modules(net, batch, "face")
    layers = list(dict.fromkeys(reversed(san.layer_labels(net, names))))  # top first
    cnn = "branches.face.encoder.frames.backbone"
    assert layers == ["heads + fusion", "branches.face.temporal", "branches.face.encoder.proj",
                      *[f"{cnn} stage {k}" for k in (4, 3, 2, 1)]]
    steps = san.cascade_steps(names, 0, san.layer_labels(net, names))
    assert len(steps) == 7 and sorted(m for s in steps for m in s) == sorted(names)


def test_randomise_touches_only_the_named_modules(cnn):
    from femo.audit import attribution_sanity as san

    clone = san.randomise(cnn, ["cnn.4"], seed=1)
    assert torch.equal(clone.cnn[0].weight, cnn.cnn[0].weight)
    assert not torch.equal(clone.cnn[4].weight, cnn.cnn[4].weight)
    assert torch.equal(clone.audio.weight, cnn.audio.weight)


class TemplateDouble(torch.nn.Module):
    """Face evidence through a fixed pixel template (a buffer, never learned) and one learned gain:
    its attributions are set by the template, whatever its parameters hold."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.register_buffer("template", torch.rand(3, size, size, generator=torch.Generator().manual_seed(7)))
        self.gain = torch.nn.Linear(1, 3)

    def forward(self, batch: dict) -> dict:
        fm = batch["face_mask"].float()  # (B, T)
        evidence = (batch["face"] * self.template).flatten(2).sum(-1)  # (B, T)
        pooled = (evidence * fm).sum(1, keepdim=True) / fm.sum(1, keepdim=True).clamp(min=1)  # (B, 1)
        logits = self.gain(pooled)
        return {"logits": logits, "modality_logits": {"face": logits}}


def test_cascading_randomisation_passes_a_learned_model_and_fails_a_fixed_template(cnn):
    from femo.audit import attribution_sanity as san

    batch = mouth_batch(6, t=2, seed=5)
    trained = san.cascading_randomisation(cnn, batch, n_steps=16)
    assert list(trained.table["step"]) == [1, 2] and list(trained.table["n_modules"]) == [1, 2]
    assert trained.passed and trained.final < san.RANDOMISATION_THRESHOLD
    assert trained.verdict().startswith("Model randomisation passed")
    # the whole |IG| maps keep the input's difference from the blurred baseline, whatever the model
    assert trained.table["spearman_maps"].iloc[-1] > trained.final + 0.2
    # maps fixed by something the parameters do not hold: randomising every layer changes nothing
    fixed = san.cascading_randomisation(TemplateDouble(batch["face"].shape[-1]).eval(), batch, n_steps=16)
    assert not fixed.passed and fixed.final > 0.95 and list(fixed.table["randomised"]) == ["gain"]
    assert "cannot be told from a randomised model's" in fixed.verdict()
    metrics = fixed.to_metrics()
    assert metrics["passed"] is False and len(metrics["steps"]) == 1


def test_model_factor_divides_out_the_input_difference():
    from femo.audit import attribution_sanity as san

    difference = np.array([[[0.0, 1.0, 2.0, 4.0]]])  # (B=1, T=1, 4)
    maps = difference * np.array([[[9.0, 3.0, 2.0, 1.0]]])
    factor = san.model_factor(maps, difference)
    assert np.isnan(factor[0, 0, 0]) and factor[0, 0, 1:] == pytest.approx([3.0, 2.0, 1.0])
    rho = san.clip_spearman(factor, factor[:, :, ::-1].copy())
    assert np.isnan(rho[0])  # two elements left in common: no correlation is computed


def test_convergence_verdict_follows_ig_steps(cnn, held_out):
    from femo.audit import attribution_sanity as san

    few = san.ConvergenceCheck(at.attribute(cnn, held_out, n_steps=2).relative_delta(), n_steps=2)
    many = san.ConvergenceCheck(at.attribute(cnn, held_out, n_steps=64).relative_delta(), n_steps=64)
    assert many.median < few.median
    assert many.passed and many.verdict().startswith("IG convergence passed")
    assert not san.ConvergenceCheck(np.array([0.2, 0.3])).passed
    assert "raise the number of IG steps" in san.ConvergenceCheck(np.array([0.2, 0.3])).verdict()


def test_choose_clips_stratified():
    from femo.audit.attribution_report import choose_clips

    table = pd.DataFrame({"predicted": ["a"] * 10 + ["b"] * 3 + ["c"] * 7,
                          "expression_region": ["full"] * 18 + ["mouth"] * 2})
    rows = choose_clips(table, {"predicted": 5})
    assert table.iloc[rows]["predicted"].value_counts().to_dict() == {"a": 5, "c": 5, "b": 3}
    both = choose_clips(table, {"predicted": 5, "expression_region": 5})
    assert (table.iloc[both]["expression_region"] == "mouth").sum() == 2  # every mouth-only clip is added
    assert set(rows) <= set(range(20)) and list(both) == sorted(both)
    assert list(choose_clips(table, {"predicted": 5}, seed=0)) == list(rows)  # seeded


def test_planted_region_check():
    from femo.audit.attribution_report import planted_region_check

    regions = ("brows", "mouth", ar.OTHER)
    table = pd.DataFrame({"expression_region": ["mouth"] * 6 + ["full"] * 2, "brows": 0.2, "mouth": 0.3,
                          ar.OTHER: 0.5})
    out = planted_region_check(table, regions)
    assert out["top"] == "mouth" and out["passed"] and out["n_clips"] == 6  # "other" is not ranked
    assert not planted_region_check(table.assign(brows=0.4, mouth=0.1), regions)["passed"]
    assert not planted_region_check(table, regions, min_clips=7)["judged"]
    assert planted_region_check(table.drop(columns="expression_region"), regions) is None


def test_planted_region_check_counts_only_clips_whose_face_shows_their_emotion():
    from femo.audit.attribution_report import (PLANTED, choose_clips, planted_region_check,
                                               with_planted_expression)

    regions = ("brows", "mouth", ar.OTHER)
    # 4 mouth-only clips whose face shows their emotion (mouth first); 3 that the check must leave out,
    # where brows came first: audio-informative (the face shows another emotion) and neutral ones
    table = pd.DataFrame({"expression_region": ["mouth"] * 7 + ["full"],
                          "true_emotion": ["happy", "sad", "fear", "angry", "happy", "sad", "neutral", "happy"],
                          "face_emotion": ["happy", "sad", "fear", "angry", "angry", "fear", "neutral", "happy"],
                          "brows": [0.1] * 4 + [0.9] * 3 + [0.1], "mouth": [0.3] * 4 + [0.0] * 3 + [0.3],
                          ar.OTHER: 0.0})
    out = planted_region_check(table, regions, min_clips=4)
    assert out["n_clips"] == 4 and out["top"] == "mouth" and out["passed"]
    assert out["values"]["brows"] == pytest.approx(0.1)
    assert not planted_region_check(table, regions, min_clips=5)["judged"]
    marked = with_planted_expression(table)
    assert marked[PLANTED].iloc[:4].eq("mouth").all() and marked[PLANTED].iloc[4:7].isna().all()
    assert marked[PLANTED].iloc[-1] == "full"
    # choose_clips draws the planted mouth-only clips only; rows without a value are no stratum
    rows = choose_clips(marked, {PLANTED: 10})
    assert sorted(rows) == [0, 1, 2, 3, 7]
    # without the emotion columns (an older synthetic set) every mouth-only clip counts
    assert planted_region_check(table.drop(columns=["true_emotion", "face_emotion"]), regions)["n_clips"] == 7


def test_attribution_result_says_a_failed_check_first(cnn, held_out, tmp_path):
    import json

    from femo.audit import attribution_sanity as san
    from femo.audit.attribution_report import ClipAttributions
    from femo.audit.attribution_result import AttributionResult

    table = pd.DataFrame({"clip_id": ["c0", "c1"], "target": ["a", "b"], "delta": [0.01, 0.02],
                          "relative_delta": [0.01, 0.02], "mouth": [0.6, 0.5], "brows": [0.1, 0.2], ar.OTHER: [0.3, 0.3]})
    clips = ClipAttributions(table, np.zeros((2, 2)), None, ("brows", "mouth", ar.OTHER))
    failed = san.RandomisationCheck(pd.DataFrame({"step": [1], "randomised": ["head"], "n_modules": [1],
                                                  "spearman": [0.8], "spearman_min": [0.7], "spearman_max": [0.9]}),
                                    0.5, "face", 2)
    result = AttributionResult(clips, "integrated_gradients", san.ConvergenceCheck(table["relative_delta"].to_numpy()),
                               failed, n_candidates=40, predicted_counts={"a": 1, "b": 1})
    verdicts = result.verdicts()
    assert verdicts[0].startswith("Model randomisation FAILED") and "cannot be told" in verdicts[0]
    assert verdicts[1].startswith("IG convergence passed")
    assert "Explained 2 of 40 clips" in result.summary() and "sits most on the mouth" in result.summary()
    metrics = json.loads(json.dumps(result.to_metrics(), allow_nan=False))
    assert metrics["randomisation_passed"] is False and metrics["randomisation_similarity"] == pytest.approx(0.8)
    assert metrics["region_share"]["mouth"] == pytest.approx(0.55)


def test_randomisation_plot_draws_the_checked_and_the_whole_map_curves():
    import matplotlib.pyplot as plt

    from femo.audit import plots_attribution as pa

    table = pd.DataFrame({"step": [1, 2], "randomised": ["heads + fusion", "cnn stage 1"], "n_modules": [3, 5],
                          "spearman": [0.4, 0.1], "spearman_min": [0.3, 0.0], "spearman_max": [0.5, 0.2],
                          "spearman_maps": [0.8, 0.7]})
    fig = pa.plot_randomisation(table, threshold=0.5)
    lines = {line.get_label(): list(line.get_ydata()) for line in fig.axes[0].lines}
    assert lines["mean (model factor: checked)"] == pytest.approx([0.4, 0.1])
    assert lines["whole |attribution| maps"] == pytest.approx([0.8, 0.7])
    plt.close(fig)


def test_layer_labels_read_the_frame_encoders_stages_only():
    """A port's inner net may have a ``stages()`` of its own (modules, or names): only the frame
    encoder's backbone stages count."""
    from torch import nn

    from femo.audit import attribution_sanity as san
    from femo.models.frames import FrameEncoder

    class Inner(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)

        def stages(self) -> list[nn.Module]:
            return [self.a, self.b]

    class Trunk(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = Inner()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net.b(self.net.a(x)).mean((2, 3))

        def stages(self) -> list[list[nn.Module]]:
            return [[g] for g in self.net.stages()]

    enc = FrameEncoder(name="t", backbone=Trunk(), preprocess=nn.Identity(), out_dim=4, freeze="full")
    assert san.layer_labels(enc, ["backbone.net.a", "backbone.net.b"]) == ["backbone stage 1", "backbone stage 2"]


def test_cascading_randomisation_of_the_audio_input(cnn, held_out):
    """An audio-only store checks the log-mel input: the model factor is taken against its mean-spectrum baseline."""
    from femo.audit import attribution_sanity as san

    check = san.cascading_randomisation(cnn, held_out, key="audio", n_steps=8)
    assert list(check.table["randomised"]) == ["audio"] and check.key == "audio"
    assert np.isfinite(check.table[["spearman", "spearman_maps"]].to_numpy()).all()
    assert -1 <= check.final <= 1
