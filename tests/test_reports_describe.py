"""What reports say about their data: privacy scrubbing, missing modalities, intervals, findings;
and the run that masks the modalities no training clip had."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from femo.features.geometry import GEOMETRY_DIM
from femo.reports import describe
from femo.reports.index import headline
from femo.reports.privacy import dataset_of, pseudonym, resolve_privacy, scrub_report, scrub_text, shown_ids
from femo.training.runs import RunFolder, seen_modalities


def test_privacy_modes_resolve_per_dataset() -> None:
    assert resolve_privacy("auto", "synthetic") == "none" and resolve_privacy("auto", "fer2013") == "blur"
    assert resolve_privacy("landmarks", "synthetic") == "landmarks"
    with pytest.raises(ValueError, match="unknown privacy mode 'fuzzy'"):
        resolve_privacy("fuzzy", "x")
    assert shown_ids(["a1"], "none") == ["a1"] and shown_ids(["a1"], "blur") == [pseudonym("a1")]


def test_scrub_text_paths_relative_and_ids_pseudonymous(tmp_path: Path) -> None:
    data, report = tmp_path / "corpus", tmp_path / "reports" / "r1"
    text = (f"store: {data}/store\nmanifest: {data}/manifest.csv\nfigure {report}/figures/a.png\n"
            "media /mnt/disk/Actor_01/03-01-05-01.flac and the id 03-01-05-01, not 03-01-05-012\n"
            'img "data:image/png;base64,iVBO+/ab/cd//ef==" ratio 1/2 https://example.org/a/b')
    out = scrub_text(text, roots={"DATA": data, ".": report}, clip_ids=["03-01-05-01"])
    assert "store: DATA/store" in out and "manifest: DATA/manifest.csv" in out and "figure figures/a.png" in out
    assert str(tmp_path) not in out and "/mnt/disk" not in out
    assert f"…/Actor_01/{pseudonym('03-01-05-01')}.flac" in out and f"the id {pseudonym('03-01-05-01')}," in out
    assert "03-01-05-012" in out  # only whole ids are replaced
    traceback = 'File \\u001b[32m/opt/site/femo/audit/x.py:81\\u001b[39m and \x1b[32m/opt/site/y.py'
    assert scrub_text(traceback, roots={}) == 'File \\u001b[32m…/audit/x.py:81\\u001b[39m and \x1b[32m…/site/y.py'
    assert "base64,iVBO+/ab/cd//ef==" in out and "ratio 1/2" in out and "https://example.org/a/b" in out


def test_dataset_of_reads_sidecar_or_store(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("clip_id\n")
    (tmp_path / "m.meta.json").write_text(json.dumps({"dataset": "ravdess_speech", "classes": []}))
    assert dataset_of(str(tmp_path / "m.csv")) == "ravdess_speech" and dataset_of("") == "synthetic"
    assert dataset_of(str(tmp_path / "nothing.csv")) == "unknown"


def _index(**columns) -> pd.DataFrame:
    n = len(next(iter(columns.values())))
    base = {"clip_id": [f"c{i}" for i in range(n)], "subject": [f"s{i % 2}" for i in range(n)], "fold": [1] * n}
    return pd.DataFrame({**base, **columns})


def test_data_lacks_and_modalities_by_store_kind() -> None:
    audio = _index(brightness=[np.nan] * 4, face_ratio=[0.0] * 4, has_audio=[True] * 4, sex=["f", "m", "f", "m"])
    assert describe.modalities_present(audio) == ["audio"] == seen_modalities(audio)
    assert [line.split(":")[0] for line in describe.data_lacks(audio)] == ["no video or images"]
    stills = _index(brightness=[0.4] * 4, face_ratio=[1.0, 0.0, 1.0, 1.0], has_audio=[False] * 4)
    stills["subject"] = stills["clip_id"]
    assert describe.modalities_present(stills) == ["face", "landmarks"] == seen_modalities(stills)
    assert {line.split(":")[0] for line in describe.data_lacks(stills)} >= {"no audio", "no subjects"}
    assert describe.face_misses(stills)["clip_id"].tolist() == ["c1"]


def test_headline_intervals_resample_subjects_and_warn_on_small_folds() -> None:
    rng = np.random.default_rng(0)
    classes = ["a", "b"]
    label = rng.choice(classes, 200)
    pred = pd.DataFrame({"clip_id": [f"c{i}" for i in range(200)], "label": label, "subject": [f"s{i % 8}" for i in range(200)],
                         "fold": [1 + (i % 8) // 4 for i in range(200)],
                         "predicted": np.where(rng.random(200) < 0.8, label, rng.choice(classes, 200))})
    out = describe.headline_intervals(pred, classes, n_boot=200)
    assert out["clustered"] and out["n_subjects"] == 8
    assert out["uar_low"] < out["uar"] < out["uar_high"] and out["war_low"] < out["war"] < out["war_high"]
    assert len(out["warnings"]) == 1 and "test fold(s) 1, 2" in out["warnings"][0]
    clips = describe.headline_intervals(pred.assign(subject=pred["clip_id"]), classes, n_boot=200)
    assert not clips["clustered"] and clips["n_subjects"] == 200 and clips["warnings"] == []
    # 200 independent clips give a narrower interval than 8 people
    assert clips["uar_high"] - clips["uar_low"] < out["uar_high"] - out["uar_low"]
    findings = describe.train_findings({"per_class_recall": {"a": 0.9, "b": 0.6}, "confusion": [[9, 1], [4, 6]]}, out,
                                       classes=classes)
    assert findings[0].startswith(f"UAR {out['uar']:.3f}") and "above chance" in findings[0]
    assert "Best recognised: a" in findings[1] and "b read as a (40% of 10 b test clips)" in findings[2]


def test_headline_on_index_page_carries_the_interval() -> None:
    shown = headline({"uar": 0.5, "uar_ci": [0.4, 0.6], "war": 0.55, "warnings": ["test fold(s) 1 hold(s) few"]})
    assert shown["UAR"] == "0.500 (95% CI 0.400-0.600)" and shown["WAR"] == "0.550" and "fold" in shown["warning"]


def test_run_masks_modalities_no_training_clip_had(tmp_path: Path) -> None:
    from _media import make_run

    from femo.config import DataConfig, ModelConfig

    model = ModelConfig(dim=16, heads=2, temporal="mean", fusion="gated", embeddings="faceapi", embedding_dim=8)
    run = make_run(tmp_path / "run", model=model, data=DataConfig(num_frames=4, audio_frames=16, classes=("a", "b", "c")),
                   classes=("a", "b", "c"))
    torch.manual_seed(0)
    batch = {"face_emb": torch.randn(2, 4, 8), "face_mask": torch.ones(2, 4, dtype=torch.bool),
             "landmarks": torch.randn(2, 4, GEOMETRY_DIM), "landmarks_mask": torch.ones(2, 4, dtype=torch.bool),
             "audio": torch.randn(2, 1, 64, 16), "prosody": torch.randn(2, 16, 4), "audio_mask": torch.ones(2, dtype=torch.bool)}
    silent = {**batch, "audio_mask": torch.zeros(2, dtype=torch.bool)}
    with torch.no_grad():
        plain = RunFolder(run).load_model()
        assert plain.absent_modalities == ()
        assert not torch.allclose(plain(batch)["logits"], plain(silent)["logits"])  # the audio branch is used
        config = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps({**config, "seen_modalities": ["face", "landmarks"]}))
        masked = RunFolder(run).load_model()
        assert masked.absent_modalities == ("audio",)
        assert torch.allclose(masked(batch)["logits"], masked(silent)["logits"])  # a track in the file changes nothing
        assert torch.allclose(masked(batch)["logits"], plain(silent)["logits"])


def test_official_validation_split_is_used_as_validation() -> None:
    """FER2013-style split: public_test rows (split == val) select the epoch, never carved training rows."""
    from femo.data.dataset import subject_split

    index = pd.DataFrame({"clip_id": [f"c{i}" for i in range(10)], "subject": [f"c{i}" for i in range(10)],
                          "split": ["train"] * 6 + ["val"] * 2 + ["test"] * 2})
    train, val, test = subject_split(index)
    assert train["split"].eq("train").all() and len(train) == 6
    assert val["clip_id"].tolist() == ["c6", "c7"] and test["clip_id"].tolist() == ["c8", "c9"]
    carved = subject_split(index[index["split"] != "val"])[1]  # without val rows: carved from training subjects
    assert len(carved) >= 1 and carved["split"].eq("train").all()


def test_scrub_report_reaches_subfolders_but_not_run_folders(tmp_path: Path) -> None:
    data = tmp_path / "corpus"
    data.mkdir()
    pd.DataFrame({"clip_id": ["actor01_take3"], "path": ["a.mp4"], "label": ["happy"]}).to_csv(
        data / "manifest.csv", index=False)
    (data / "manifest.meta.json").write_text(json.dumps({"dataset": "mine", "classes": ["happy"]}))
    report = tmp_path / "reports" / "r1"
    (report / "tables").mkdir(parents=True)
    (report / "run" / "fold_1").mkdir(parents=True)
    line = f"actor01_take3,{data}/a.mp4\n"
    for name in ("tables/per_clip.csv", "notes.txt", "run/config.json", "run/predictions.csv"):
        (report / name).write_text(line)
    (report / "figures.png").write_bytes(b"\x89PNG actor01_take3")
    scrub_report(report, {"data": str(data / "manifest.csv")}, privacy="blur")
    for name in ("tables/per_clip.csv", "notes.txt"):  # a notebook's own tables: scrubbed
        text = (report / name).read_text()
        assert "actor01_take3" not in text and str(data) not in text and pseudonym("actor01_take3") in text
    for name in ("run/config.json", "run/predictions.csv"):  # the run later reports read: as trained
        assert (report / name).read_text() == line
    assert (report / "figures.png").read_bytes() == b"\x89PNG actor01_take3"
