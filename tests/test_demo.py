"""femo.reports.demo: resolving a notebook's data/run inputs, clear errors, the build lock."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from femo.reports import demo
from femo.data.store import StoreMeta, write_index, write_meta
from femo.models.frames import CROP_CNN_SIZE


def make_store(folder: Path, manifest: Path | None = None) -> Path:
    write_meta(folder, StoreMeta(classes=("happy", "sad"), manifest=str(manifest or "")))
    write_index(folder, pd.DataFrame({"clip_id": ["a"], "label": ["happy"], "status": ["ok"]}))
    return folder


def test_manifest_with_existing_store_is_used_without_extraction(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("clip_id,path,label,subject\n")
    make_store(tmp_path / "store", manifest)
    assert demo.resolve_data(manifest) == (manifest, tmp_path / "store")
    assert demo.resolve_data(tmp_path) == (manifest, tmp_path / "store")  # folder holding manifest.csv
    assert demo.store_for(tmp_path / "dfew.csv") == tmp_path / "dfew_store"


def test_store_folder_gives_its_recorded_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("clip_id,path,label,subject\n")
    store = make_store(tmp_path / "s", manifest)
    paths = demo.resolve(data=str(store))
    assert (paths.manifest, paths.store) == (manifest, store)
    with pytest.raises(demo.DemoError, match=f"no trained run for {store}.*femo train"):
        paths.run


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing.csv", "data path not found: .*missing.csv"),
    (lambda p: p, "neither a feature store .store.json. nor a folder with manifest.csv"),
    (lambda p: (p / "notes.txt").write_text("x") and p / "notes.txt", "expected a manifest .csv"),
])
def test_bad_data_paths_are_named(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(demo.DemoError, match=message):
        demo.resolve_data(make(tmp_path))


def test_run_dir_must_be_a_run_folder(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    with pytest.raises(demo.DemoError, match="run_dir not found: .*nowhere"):
        demo.resolve(data=str(store), run_dir=str(tmp_path / "nowhere"))
    (tmp_path / "run").mkdir()
    with pytest.raises(demo.DemoError, match="not a run folder .neither config.json nor fold"):
        demo.resolve(data=str(store), run_dir=str(tmp_path / "run"))
    (tmp_path / "kfold" / "fold_2").mkdir(parents=True)
    (tmp_path / "kfold" / "fold_2" / "best.pt").write_bytes(b"")
    assert demo.resolve(data=str(store), run_dir=str(tmp_path / "kfold")).run == tmp_path / "kfold"  # a --folds all run
    (tmp_path / "run" / "config.json").write_text("{}")
    assert demo.resolve(data=str(store), run_dir=str(tmp_path / "run")).run == tmp_path / "run"


def test_pick_embeddings(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    assert demo.pick_embeddings(store) is None
    for name in ("resnet18", "faceapi"):
        (store / "embeddings" / name).mkdir(parents=True)
        (store / "embeddings" / name / "meta.json").write_text(json.dumps({"encoder": name}))
    assert demo.pick_embeddings(store) == "faceapi"
    assert demo.pick_embeddings(store, "resnet18") == "resnet18"
    assert demo.pick_embeddings(store, "none") is None
    with pytest.raises(demo.DemoError, match=r"no cached embeddings 'vit'; found \['faceapi', 'resnet18'\]"):
        demo.pick_embeddings(store, "vit")


def test_cache_keys_follow_settings_and_sources() -> None:
    base = demo.SmokeSettings()
    assert base.key == f"{base.data_key}/{base.run_key}" and base.data_key.startswith("v0.1.0-clips70-")
    assert demo.SmokeSettings(epochs=2).data_key == base.data_key  # training settings only retrain
    assert demo.SmokeSettings(epochs=2).run_key != base.run_key
    assert demo.SmokeSettings(clips=71).data_key != base.data_key
    fingerprints = {demo.source_fingerprint(p) for p in (demo.DATA_SOURCES, demo.RUN_SOURCES, ("run.py",))}
    assert len(fingerprints) == 3 and all(len(f) == 12 for f in fingerprints)


def test_lock_serialises_builders(tmp_path: Path) -> None:
    events: list[str] = []

    def hold(name: str) -> None:
        with demo._locked(tmp_path / "x.lock"):
            events.append(f"{name} in")
            time.sleep(0.2)
            events.append(f"{name} out")

    threads = [threading.Thread(target=hold, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert events == ["a in", "a out", "b in", "b out"]


def _pipeline_args(tmp_path: Path, **kw):
    import argparse

    base = {"data": "", "tag": "t", "workdir": str(tmp_path / "work"), "clips": 20, "plant_bias": "skin_tone=dark",
            "epochs": 2, "fold": 0, "workers": 1, "fold_workers": 2, "reports_dir": str(tmp_path / "reports"), "force": False,
            "annotate": False, "seed": None, "embeddings": ""}
    return argparse.Namespace(**{**base, **kw})


def test_pipeline_stage_keys_follow_settings(tmp_path: Path) -> None:
    import argparse

    from femo.commands import pipeline

    args = argparse.Namespace(data="", clips=20, plant_bias="skin_tone=dark", workers=1, epochs=2, fold=0,
                              fold_workers=1, seed=None, embeddings="")
    keys = pipeline.stage_keys(args)
    assert set(keys) == {"data", "features", "embeddings", "train"} and keys == pipeline.stage_keys(args)
    other = pipeline.stage_keys(argparse.Namespace(**{**vars(args), "epochs": 3}))
    assert other["data"] == keys["data"] and other["train"] != keys["train"]  # only training redone
    biased = pipeline.stage_keys(argparse.Namespace(**{**vars(args), "plant_bias": "none"}))
    assert all(biased[k] != keys[k] for k in keys)  # new data: everything after it is redone
    reseeded = pipeline.stage_keys(argparse.Namespace(**{**vars(args), "seed": 1}))
    assert all(reseeded[k] != keys[k] for k in keys)
    assert pipeline.stage_keys(argparse.Namespace(**{**vars(args), "seed": None})) == keys
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("clip_id,path,label,subject\n")
    real = argparse.Namespace(**{**vars(args), "data": str(manifest)})
    whole = pipeline.stage_keys(argparse.Namespace(**{**vars(real), "embeddings": "faceapi@frame"}))
    base = pipeline.stage_keys(real)
    assert whole["features"] == base["features"]  # another embedding: extraction is kept
    assert whole["embeddings"] != base["embeddings"] and whole["train"] != base["train"]


def test_pipeline_skips_unchanged_stages_and_resumes_with_the_same_key(tmp_path: Path, monkeypatch) -> None:
    from femo.commands import pipeline

    calls: list[tuple[str, bool]] = []

    def fake_stages(args, work, state):
        def make(name):
            def stage(clean):
                calls.append((name, clean))
                if name == "train" and not (work / "fail_once").exists():
                    (work / "fail_once").write_text("")
                    raise pipeline.StageError("killed")
                return {"index": str(work / "index.html")} if name == "reports" else {}
            return stage
        return {name: make(name) for name in pipeline.STAGES}

    monkeypatch.setattr(pipeline, "_stages", fake_stages)
    monkeypatch.setattr(pipeline, "_finish", lambda state, reports_dir: None)
    args = _pipeline_args(tmp_path)
    assert pipeline.run(args) == 1  # training "killed"
    assert calls == [("data", True), ("features", True), ("embeddings", True), ("train", True)]
    calls.clear()
    assert pipeline.run(args) == 0  # resumes: finished stages skipped, the killed one not cleaned
    assert calls[:1] == [("train", False)] and [n for n, _ in calls] == ["train", "reports"]
    calls.clear()
    assert pipeline.run(_pipeline_args(tmp_path, epochs=3)) == 0  # new settings: training redone from clean
    assert calls[:1] == [("train", True)] and [n for n, _ in calls] == ["train", "reports"]
    state = json.loads((tmp_path / "work" / "stages.json").read_text())
    assert all("seconds" in state[n] and state[n]["key"] for n in pipeline.STAGES[:-1])


def test_pipeline_plants_a_bias_and_trains_every_fold(tmp_path: Path, monkeypatch) -> None:
    from femo.commands import pipeline

    seen: list[list[str]] = []
    monkeypatch.setattr(pipeline, "_femo", lambda argv, ok=(0,): seen.append(argv))
    args = _pipeline_args(tmp_path)
    (tmp_path / "work" / "store").mkdir(parents=True)
    write_index(tmp_path / "work" / "store", pd.DataFrame({"clip_id": ["a"], "label": ["happy"], "status": ["ok"],
                                                            "fold": [1]}))
    stages = pipeline._stages(args, tmp_path / "work", {"embeddings": {"embeddings": "faceapi"}})
    stages["data"](True)
    stages["train"](True)
    assert seen[0][:2] == ["synth", str(tmp_path / "work" / "data")] and seen[0][-2:] == ["--plant-bias", "skin_tone=dark"]
    assert "--seed" not in seen[0]  # femo synth's own default
    assert "--folds" in seen[1] and seen[1][seen[1].index("--folds") + 1] == "all" and "--fold" not in seen[1]
    # the synthetic demo's face branch: the small crop CNN trained end to end, no cached embeddings
    assert seen[1][seen[1].index("--frame-encoder") + 1] == "crop_cnn" and "--embeddings" not in seen[1]
    assert seen[1][seen[1].index("--fold-workers") + 1] == "2"  # folds side by side
    assert seen[1][seen[1].index("--freeze") + 1] == "full"
    assert stages["embeddings"](True) == {"embeddings": ""}
    seen.clear()
    state = {"data": {"manifest": str(tmp_path / "m.csv")}}
    pipeline._stages(args, tmp_path / "work", state)["features"](False)
    # the demo's crops are stored at the side crop_cnn reads (no resize per batch), 8 frames per clip
    assert seen[0][seen[0].index("--face-size") + 1] == str(CROP_CNN_SIZE)
    assert seen[0][seen[0].index("--frames") + 1] == "8"
    seen.clear()
    pipeline._stages(_pipeline_args(tmp_path, data=str(tmp_path / "m.csv")), tmp_path / "work", state)["features"](False)
    assert "--face-size" not in seen[0] and "--frames" not in seen[0]  # real data: the extraction defaults
    seen.clear()
    pipeline._stages(_pipeline_args(tmp_path, plant_bias="none", fold=2), tmp_path / "work",
                     {"embeddings": {"embeddings": ""}})["train"](True)
    assert seen[0][seen[0].index("--fold") + 1] == "2"
    seen.clear()
    pipeline._stages(_pipeline_args(tmp_path, seed=3), tmp_path / "work", {})["data"](True)
    assert seen[0][seen[0].index("--seed") + 1] == "3"
    seen.clear()
    pipeline._stages(_pipeline_args(tmp_path, data=str(tmp_path / "m.csv")), tmp_path / "work",
                     {"embeddings": {"embeddings": "faceapi"}})["train"](True)
    assert seen[0][seen[0].index("--embeddings") + 1] == "faceapi" and "--frame-encoder" not in seen[0]  # real data


@pytest.mark.slow
def test_demo_pipeline_recovers_the_planted_truth(tmp_path: Path) -> None:
    """The bars of the default demo, on a reduced synthetic set run through the same pipeline code:
    the planted group flagged and no other attribute; the label-carrying modality first in its
    slices; the mouth first in mouth-only clips; the randomisation check passed. (About 5
    minutes on 2 cores; the fast versions of each check run on models with known behaviour in
    test_audit_ablation, test_audit_attribution, test_audit_fairness and test_reports_planted.)"""
    from femo.commands import pipeline
    from femo.reports.index import collect
    from femo.reports.planted import planted_checks

    args = _pipeline_args(tmp_path, clips=240, epochs=20, workers=2)
    assert pipeline.run(args) == 0
    index = Path(json.loads((tmp_path / "work" / "stages.json").read_text())["reports"]["index"])
    day, tag = index.parent.name[:10], index.parent.name[11:]
    checks = planted_checks(collect(Path(args.reports_dir), day=day, tag=tag))
    assert checks is not None and len(checks) == 5
    failed = [f"{c.name}: {c.measured}" for c in checks if c.passed is not True]
    assert not failed, "\n".join(failed)
    assert "Planted truth" in index.read_text()


def test_pipeline_report_settings_are_notebook_parameters() -> None:
    from femo.commands import pipeline
    from femo.reports.notebooks import default_notebooks_dir, find_notebooks, plan

    notebooks = find_notebooks(default_notebooks_dir(), None)
    plans = plan(notebooks, dict(pipeline.REPORT_SETTINGS))  # raises for a name no notebook declares
    attribution = next(p for nb, p in plans.items() if nb.stem.startswith("05"))
    assert attribution["per_emotion"] >= 5 and attribution["ig_steps"] >= 32
