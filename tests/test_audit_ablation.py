"""Modality ablation: subset masking, exact and per-clip Shapley values, condition slices, and the
planted-truth check (the modality carrying the label gets the largest share)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from audit_doubles import C, LateFusionDouble, planted_data, split_batches, train_double
from femo.audit import ablation as ab
from femo.audit import ablation_slices as sl


@pytest.fixture(scope="module")
def planted():
    model = train_double(planted_data(480, seed=1)[0], steps=300)
    batch, index = planted_data(480, seed=0)
    long = ab.evaluate_subsets(model, split_batches(batch, 96), classes=("a", "b", "c"))
    return batch, index, model, long, ab.wide_predictions(long, index)


def test_subset_names_and_order():
    subsets = ab.all_subsets()
    assert len(subsets) == 7
    assert ab.subset_name(("audio", "face")) == "face+audio"
    with pytest.raises(ValueError, match="unknown modality"):
        ab.subset_name(("face", "pose"))


@pytest.mark.parametrize("mask_shape", ["per_frame", "partly_missing"])
def test_mask_batch_keeps_shapes_and_only_switches_off(mask_shape):
    batch, _ = planted_data(8)
    if mask_shape == "partly_missing":
        batch["face_mask"][:, 0] = False
    out = ab.mask_batch(batch, ["face"])
    assert out["face_mask"].equal(batch["face_mask"])
    assert out["landmarks_mask"].shape == (8, 4) and not out["landmarks_mask"].any()
    assert out["audio_mask"].shape == (8,) and not out["audio_mask"].any()
    assert batch["audio_mask"].all()  # the input is untouched


def test_evaluate_subsets_rows_and_fused_equals_unmasked(planted):
    batch, _, model, long, wide = planted
    assert set(long["subset"]) == {"face", "landmarks", "audio", "face+landmarks", "face+audio",
                                   "landmarks+audio", "fused"}
    assert len(long) == 7 * 480
    fused = long[long["subset"] == "fused"].sort_values("index")
    with torch.no_grad():
        probs = torch.softmax(model(batch)["logits"], -1).numpy()
    assert fused[["p_a", "p_b", "p_c"]].to_numpy() == pytest.approx(probs, abs=1e-5)
    assert list(wide.columns[:2]) == ["index", "label"] and "pred_face+audio" in wide.columns
    assert "informative" in wide.columns and len(wide) == 480


def test_write_subset_predictions(planted, tmp_path):
    _, index, _, long, _ = planted
    files = ab.write_subset_predictions(long, tmp_path, meta=index, classes=("a", "b", "c"))
    assert {p.name for p in files} >= {"predictions_face.csv", "predictions_audio.csv", "predictions_fused.csv"}
    frame = pd.read_csv(tmp_path / "predictions_audio.csv")
    assert frame.columns[0] == "clip_id" and len(frame) == 480
    assert set(frame["label"]) <= {"a", "b", "c"} and "subject" in frame.columns


def test_shapley_values_exact_on_known_games():
    additive = {"face": 0.3, "landmarks": 0.1, "audio": 0.2}
    phi = ab.shapley_values(lambda s: sum(additive[m] for m in s))
    assert phi == pytest.approx(additive)
    # only face and audio together create value: they split it, landmarks gets nothing
    phi = ab.shapley_values(lambda s: 1.0 if {"face", "audio"} <= s else 0.0)
    assert phi == pytest.approx({"face": 0.5, "landmarks": 0.0, "audio": 0.5})


def test_shapley_uar_efficiency(planted):
    wide = planted[4]
    table = ab.shapley_uar(wide, C)
    uar_fused = ab.subset_value_table(wide, C)[frozenset(ab.all_subsets()[-1])]
    assert table["shapley"].sum() == pytest.approx(uar_fused - 1 / C)  # every class present
    assert ab.chance_uar([0, 0, 2]) == pytest.approx(0.5) and np.isnan(ab.chance_uar([]))
    assert table["share"].sum() == pytest.approx(1.0)


@pytest.mark.parametrize("informative,expected", [("face", "face"), ("landmarks", "landmarks"), ("audio", "audio")])
def test_planted_modality_gets_largest_shapley_share(planted, informative, expected):
    wide = planted[4]
    table = ab.shapley_uar(wide[wide["informative"] == informative], C).set_index("modality")
    assert table["share"].idxmax() == expected
    assert table.loc[expected, "share"] > 0.6


def test_value_slices_give_the_same_answer_per_planted_subset(planted):
    wide = planted[4]
    rules = sl.value_slices(wide, "informative")
    assert [r.name for r in rules] == ["informative=audio", "informative=both", "informative=face",
                                       "informative=landmarks"]
    shap = sl.slice_shapley(wide, C, rules=rules)
    top = shap.loc[shap.groupby("slice")["shapley"].idxmax()].set_index("slice")["modality"]
    assert top["informative=face"] == "face" and top["informative=audio"] == "audio"
    assert top["informative=landmarks"] == "landmarks"
    assert sl.value_slices(wide, "no_such_column") == []


def test_audio_contribution_rises_in_low_light(planted):
    wide = planted[4]
    part = wide[wide["informative"] == "both"]
    shap = sl.slice_shapley(part, C, rules=[sl.SliceRule("dark", "low_light", "true"),
                                            sl.SliceRule("lit", "low_light", "false")]).set_index(["slice", "modality"])
    assert shap.loc[("dark", "audio"), "shapley"] > shap.loc[("lit", "audio"), "shapley"] + 0.05
    assert shap.loc[("dark", "audio"), "share"] > shap.loc[("dark", "face"), "share"]


def test_clip_shapley_sums_to_full_minus_empty(planted):
    batch, _, model, _, _ = planted
    small = {k: v[:12] for k, v in batch.items()}
    phi = ab.clip_shapley(model, [small])
    with torch.no_grad():
        full = torch.softmax(model(small)["logits"], -1)
        empty = torch.softmax(model(ab.mask_batch(small, []))["logits"], -1)
    idx = small["label"]
    expected = (full[range(12), idx] - empty[range(12), idx]).numpy()
    got = phi[["phi_face", "phi_landmarks", "phi_audio"]].sum(axis=1).to_numpy()
    assert got == pytest.approx(expected, abs=1e-5)
    assert (phi["p_all"] - phi["p_none"]).to_numpy() == pytest.approx(expected, abs=1e-5)
    shares = ab.clip_shares(phi)
    assert shares.sum() == pytest.approx(1.0)


def test_clip_shapley_planted_audio_clips():
    model = train_double(planted_data(240, seed=1)[0], steps=200)
    batch, index = planted_data(240, seed=2)
    audio_rows = np.flatnonzero(index["informative"] == "audio")[:24]
    sub = {k: v[audio_rows] for k, v in batch.items()}
    shares = ab.clip_shares(ab.clip_shapley(model, [sub]))
    assert shares.idxmax() == "audio"


def test_slice_masks_thresholds():
    frame = pd.DataFrame({"brightness": np.linspace(0, 1, 101), "yaw": np.linspace(-50, 50, 101),
                          "snr_db": np.linspace(0, 40, 101), "has_audio": ["True"] * 100 + ["False"]})
    masks = sl.slice_masks(frame)
    assert masks["low_light"][0].sum() == 25  # strictly below the 25% quantile (0.25)
    assert masks["head_turned"][0].sum() == 40  # |yaw| > 30
    assert masks["noisy_audio"][0].sum() == 25  # snr < 10 dB
    assert masks["no_audio"][0].sum() == 1
    assert "occluded" not in masks and "all" in masks
    assert "brightness < 0.25" in masks["low_light"][1]
    with pytest.raises(ValueError, match="unknown op"):
        sl.slice_masks(frame, [sl.SliceRule("x", "yaw", ">=", 1.0)])


def test_slice_table_and_findings(planted):
    wide = planted[4]
    rules = [sl.SliceRule("dark", "low_light", "true", description="rendered dark")]
    table = sl.slice_table(wide, C, rules=rules, n_boot=100)
    assert set(table["slice"]) == {"all", "dark"} and len(table) == 14
    assert (table["uar_low"] <= table["uar"] + 1e-9).all() and (table["uar"] <= table["uar_high"] + 1e-9).all()
    assert table["n_clusters"].max() == 40
    both = wide[wide["informative"] == "both"]  # label in face and audio: in the dark only audio tells
    gains = sl.modality_gains(both, C, rules=rules, n_boot=100)
    lines = sl.findings(gains)
    significant = gains[(gains["low"] > 0) | (gains["high"] < 0)]
    assert len(lines) == len(significant) > 0
    assert any(line.startswith("In dark clips (rendered dark): audio adds") for line in lines)
    # same seed, same intervals
    again = sl.modality_gains(both, C, rules=rules, n_boot=100)
    assert again["low"].to_numpy() == pytest.approx(gains["low"].to_numpy())


def test_findings_skip_intervals_covering_zero():
    gains = pd.DataFrame([{"slice": "all", "description": "every clip", "modality": "audio", "gain": 0.02,
                           "low": -0.01, "high": 0.05, "n_clips": 20, "n_clusters": 5},
                          {"slice": "all", "description": "every clip", "modality": "face", "gain": -0.1,
                           "low": -0.2, "high": -0.03, "n_clips": 20, "n_clusters": 5}])
    assert sl.findings(gains) == ["All clips: face costs 10.0 UAR points (95% CI -20.0 to -3.0; 20 clips, 5 subjects)."]
    assert sl.findings(gains.assign(n_clusters=2)) == []  # too few subjects to say anything


def test_subset_intervals_keys(planted):
    out = sl.subset_intervals(planted[4], C, n_boot=50)
    assert set(out) == {"face", "landmarks", "audio", "face+landmarks", "face+audio", "landmarks+audio", "fused"}
    assert out["fused"]["uar_low"] <= out["fused"]["uar"] <= out["fused"]["uar_high"]


def test_retrain_subsets_calls_train_per_subset(tmp_path):
    import dataclasses
    import json

    @dataclasses.dataclass(frozen=True)
    class Cfg:
        modalities: tuple = ("face", "landmarks", "audio")

    seen = []

    def fake_train(store, *, out, model, epochs):
        seen.append((model.modalities, epochs))
        out.mkdir(parents=True)
        (out / "metrics.json").write_text(json.dumps({"uar": 0.1 * len(model.modalities), "war": 0.5}))

    table = ab.retrain_subsets("STORE", tmp_path, model_config=Cfg(), subsets=[("face",), ("face", "audio")],
                               train_fn=fake_train, epochs=2)
    assert seen == [(("face",), 2), (("face", "audio"), 2)]
    assert table["uar"].tolist() == pytest.approx([0.1, 0.2])
    assert table["subset"].tolist() == ["face", "face+audio"]


def test_evaluate_subsets_rejects_wrong_class_names():
    batch, _ = planted_data(8)
    with pytest.raises(ValueError, match="class names"):
        ab.evaluate_subsets(LateFusionDouble(), [batch], classes=("a", "b"))


def test_load_run_and_ablation_on_a_trained_femonet(tmp_path):
    from _synth_store import CLASSES, build_store

    from femo.audit import trained
    from femo.config import DataConfig, ModelConfig, TrainConfig
    from femo.training.loop import train

    store = build_store(tmp_path / "store", n=36, t=4, s=16, a=32, no_audio_every=5)
    data = DataConfig(num_frames=4, face_size=16, audio_frames=32, classes=CLASSES)
    train(store, out=tmp_path / "run", model=ModelConfig(embeddings="proto", dim=16, temporal="mean", fusion="late"),
          train=TrainConfig(epochs=1, batch_size=8), fold=1, data=data, progress=False)
    run = trained.load_run(tmp_path / "run")
    assert run.classes == CLASSES and len(run.dataset) == len(run.splits["test"])
    long = ab.evaluate_subsets(run.model, run.batches(batch_size=4), classes=run.classes)
    wide = ab.wide_predictions(long, run.index)
    assert len(wide) == len(run.dataset) and "clip_id" in wide.columns
    preds = pd.read_csv(tmp_path / "run" / "predictions.csv")  # what femo.training.loop wrote for the same model
    fused = wide.set_index("clip_id")["pred_fused"].map(dict(enumerate(CLASSES)))
    assert (preds.set_index("clip_id")["predicted"].loc[fused.index] == fused).all()
    with pytest.raises(ValueError, match="split"):
        trained.load_run(tmp_path / "run", split="dev")


def test_kfold_run_is_pooled_out_of_fold(tmp_path):
    from _synth_store import CLASSES, build_store

    from femo.audit import pooled
    from femo.config import DataConfig, ModelConfig, TrainConfig
    from femo.training.loop import train_folds

    store = build_store(tmp_path / "store", n=36, t=4, s=16, a=32, folds=3, no_audio_every=5)
    data = DataConfig(num_frames=4, face_size=16, audio_frames=32, classes=CLASSES)
    train_folds(store, out=tmp_path / "run", model=ModelConfig(embeddings="proto", dim=16, temporal="mean", fusion="late"),
                train=TrainConfig(epochs=1, batch_size=8), data=data, progress=False)
    runs = pooled.load_runs(tmp_path / "run")
    assert [r.config["fold"] for r in runs] == [1, 2, 3]
    long, meta = pooled.pooled_subsets(runs, batch_size=8)
    wide = ab.wide_predictions(long, meta)
    assert len(wide) == 36 and wide["clip_id"].is_unique  # every clip once, by the model that did not train on it
    assert sorted(wide["index"]) == list(range(36)) and set(wide["run_fold"]) == {1, 2, 3}
    oof = pd.read_csv(tmp_path / "run" / "predictions.csv", dtype={"clip_id": str}).set_index("clip_id")["predicted"]
    fused = wide.set_index("clip_id")["pred_fused"].map(dict(enumerate(CLASSES)))
    assert (oof.loc[fused.index] == fused).all()
    assert wide.loc[~wide["has_audio"].astype(bool), "present_audio"].eq(False).all()
    assert len(pooled.pooled_subsets(runs, max_clips=15)[1]) == 15
    phi = pooled.pooled_clip_shapley(runs, n_clips=14, batch_size=8)
    assert len(phi) == 14 and phi["index"].is_unique
    assert len(pooled.load_runs(tmp_path / "run" / "fold_2")) == 1


def test_ablation_figures_draw(planted):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from femo.audit import plots_ablation as pa

    wide = planted[4]
    table = pd.DataFrame(sl.subset_intervals(wide, C, n_boot=20)).T.rename_axis("subset").reset_index()
    rules = [sl.SliceRule("dark", "low_light", "true")]
    figs = [pa.plot_subset_uar(table, chance=1 / C), pa.plot_shapley(sl.slice_shapley(wide, C, rules=rules)),
            pa.plot_gains(sl.modality_gains(wide, C, rules=rules, n_boot=20))]
    assert [len(f.axes[0].get_yticklabels()) for f in figs] == [7, 2, 2]
    plt.close("all")


def _hand_wide(n: int, *, audio_present: bool, prior: int = 2) -> pd.DataFrame:
    """A wide frame by hand: face and landmarks predict the label, anything without them predicts
    ``prior`` (a class absent from the labels), over ``n`` clips of ``n // 2`` subjects."""
    labels = np.arange(n) % 2  # classes 0 and 1 only
    frame = pd.DataFrame({"index": np.arange(n), "label": labels, "subject": [f"s{i // 2}" for i in range(n)],
                          "has_audio": audio_present, "present_face": True, "present_landmarks": True,
                          "present_audio": audio_present})
    for subset in ab.all_subsets():
        name = "fused" if len(subset) == 3 else ab.subset_name(subset)
        frame[f"pred_{name}"] = labels if {"face", "landmarks"} & set(subset) else prior
    return frame


def test_absent_modality_gets_exactly_zero_shapley():
    wide = _hand_wide(40, audio_present=False)
    shap = sl.slice_shapley(wide, C, rules=[sl.SliceRule("no_audio", "has_audio", "false")]).set_index(["slice", "modality"])
    assert shap.loc[("no_audio", "audio"), "shapley"] == 0.0 and bool(shap.loc[("no_audio", "audio"), "absent"])
    assert shap.loc[("no_audio", "face"), "shapley"] == pytest.approx(0.25)  # (1 - chance 0.5) / 2
    # without the presence flags, audio alone (the prior, UAR 0) sits below chance: a spurious -0.17-like value
    bare = sl.slice_shapley(wide.drop(columns="present_audio"), C).set_index(["slice", "modality"])
    assert bare.loc[("all", "audio"), "shapley"] < -0.1


def test_absent_modality_zero_end_to_end(planted):
    _, index, model, _, _ = planted
    batch, index = planted_data(160, seed=3)
    batch["audio_mask"][::2] = False
    index["has_audio"] = batch["audio_mask"].numpy()
    wide = ab.wide_predictions(ab.evaluate_subsets(model, split_batches(batch, 40)), index)
    assert wide["present_audio"].tolist() == index["has_audio"].tolist()
    shap = sl.slice_shapley(wide, C).set_index(["slice", "modality"])
    assert shap.loc[("no_audio", "audio"), "shapley"] == 0.0
    assert shap.loc[("all", "audio"), "shapley"] != 0.0


@pytest.mark.parametrize("n,min_clips,judged", [(12, 20, False), (12, 10, True), (40, 20, True)])
def test_small_slices_get_no_shapley_values(n, min_clips, judged):
    wide = _hand_wide(n, audio_present=True)
    shap = sl.slice_shapley(wide, C, rules=[], min_clips=min_clips, min_subjects=5)
    assert shap["judged"].all() == judged and shap["n_clips"].iloc[0] == n
    assert shap["shapley"].notna().all() == judged
    few_subjects = wide.assign(subject=[f"s{i % 3}" for i in range(n)])
    assert not sl.slice_shapley(few_subjects, C, rules=[], min_clips=min_clips)["judged"].any()


def test_findings_need_enough_clips():
    gains = pd.DataFrame([{"slice": "all", "description": "every clip", "modality": "face", "gain": -0.1,
                           "low": -0.2, "high": -0.03, "n_clips": 10, "n_clusters": 5}])
    assert sl.findings(gains, min_clips=20) == [] and len(sl.findings(gains, min_clips=10)) == 1


def test_ablate_result_verdicts_and_metrics(planted):
    import json

    from femo.audit.ablation_result import ablate

    wide = planted[4].assign(low_light=lambda f: f["index"] < 15)  # a 15-clip slice: too small to judge
    result = ablate(wide, C, rules=[sl.SliceRule("planted_low_light", "low_light", "true")], n_boot=30)
    checks = result.planted.set_index("slice")
    assert checks.loc["informative=face", "passed"] and checks.loc["informative=audio", "passed"]
    assert checks.loc["informative=audio", "top"] == "audio"
    assert list(result.too_small()["slice"]) == ["planted_low_light"]
    text = result.summary()
    assert "too small to judge" in text.lower() and "planted_low_light (15 clips" in text
    assert "Planted truth, informative=audio: the largest contribution is audio" in text
    neg = sl.slice_shapley(_hand_wide(40, audio_present=True).assign(pred_fused=2), C, rules=[])
    assert neg["share"].isna().all()  # fused below chance: no gain to share out
    metrics = json.loads(json.dumps(result.to_metrics(), allow_nan=False))
    assert metrics["slice_shapley"]["planted_low_light"]["judged"] is False
    assert metrics["slice_shapley"]["planted_low_light"]["shapley"]["face"] is None
    assert metrics["planted_top_modality"]["informative=audio"] == "audio"
    assert sum(metrics["shapley_uar"].values()) == pytest.approx(result.fused["uar"] - result.chance)


def test_ablate_planted_check_fails_when_the_wrong_modality_wins():
    from femo.audit.ablation_result import planted_checks

    frame = pd.DataFrame({"slice": ["informative=audio"] * 3, "modality": ["face", "landmarks", "audio"],
                          "shapley": [0.3, 0.0, 0.1], "share": [0.75, 0.0, 0.25], "judged": True})
    row = planted_checks(frame).iloc[0]
    assert row["top"] == "face" and not row["passed"]
    assert not planted_checks(frame.assign(judged=False, shapley=np.nan)).iloc[0]["passed"]


def test_shapley_heatmap_marks_small_slices(planted):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from femo.audit import plots_ablation as pa

    wide = planted[4].assign(low_light=lambda f: f["index"] < 15)
    shap = sl.slice_shapley(wide, C, rules=[sl.SliceRule("dark", "low_light", "true")])
    ax = pa.plot_shapley(shap).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["all (n=480)", "dark (n=15)"]
    assert [t.get_text() for t in ax.texts].count("too small to judge") == 1
    plt.close("all")
