"""femo.demo: resolving a notebook's data/run inputs, clear errors, the build lock."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from femo import demo
from femo.data.store import StoreMeta, write_index, write_meta


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
    with pytest.raises(demo.DemoError, match="not a run folder .config.json missing"):
        demo.resolve(data=str(store), run_dir=str(tmp_path / "run"))
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
