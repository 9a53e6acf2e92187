"""The extraction job on real media: masks, failures, resume, shards + merge, CLI."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from skimage.data import astronaut

from femo.cli import main as femo
from femo.data import store as fs
from femo.data.manifest import read_manifest
from femo.data.media import write_video, write_wav
from femo.features.clip import ExtractConfig, ExtractError
from femo.features.extract import merge_shards, parse_shard, run_extraction

SR = 16_000
CONFIG = ExtractConfig(num_frames=8, face_size=64)


def astronaut_frames(n: int = 30, size: int = 256) -> np.ndarray:
    """(n, size, size, 3) uint8: the astronaut photo under a small affine wobble."""
    small = cv2.resize(astronaut(), (size, size))
    out = []
    for i in range(n):
        m = cv2.getRotationMatrix2D((size / 2, size / 2), 3 * math.sin(i / 3), 1 + 0.02 * math.sin(i / 5))
        m[:, 2] += [4 * math.sin(i / 4), 3 * math.cos(i / 4)]
        out.append(cv2.warpAffine(small, m, (size, size)))
    return np.stack(out)


def build_dataset(folder: Path) -> Path:
    """Six clips: face+audio, face without audio, no face, corrupt, audio-only wav, a second face clip."""
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(1.2 * SR)) / SR
    voice = (0.3 * np.sin(2 * np.pi * 180 * t) * (t < 0.8)).astype(np.float32)
    frames = astronaut_frames()
    write_video(folder / "face_audio.mp4", frames, fps=25, audio=voice)
    write_video(folder / "face_mute.mp4", frames[::-1].copy(), fps=25)
    gradient = np.broadcast_to(np.linspace(0, 255, 128, dtype=np.uint8)[None, None, :, None], (30, 96, 128, 3))
    write_video(folder / "no_face.mp4", np.ascontiguousarray(gradient), fps=25, audio=voice)
    (folder / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    write_wav(folder / "voice.wav", voice, SR)
    write_video(folder / "face_small.mp4", astronaut_frames(20, 192), fps=20, audio=0.5 * voice)
    ids = ["face_audio", "face_mute", "no_face", "corrupt", "voice", "face_small"]
    paths = ["face_audio.mp4", "face_mute.mp4", "no_face.mp4", "corrupt.mp4", "voice.wav", "face_small.mp4"]
    df = pd.DataFrame({"clip_id": ids, "path": paths, "label": ["happy", "sad"] * 3,
                       "subject": ["s1", "s1", "s2", "s2", "s3", "s3"], "age_group": ["a", "b"] * 3})
    df.to_csv(folder / "manifest.csv", index=False)
    meta = {"dataset": "unit", "classes": ["happy", "sad"], "extra": {"note": "test"}}
    (folder / "manifest.meta.json").write_text(json.dumps(meta))
    return folder / "manifest.csv"


def extract(manifest: Path, store: Path, **kw) -> pd.DataFrame:
    df, meta = read_manifest(manifest)
    kw.setdefault("config", CONFIG)
    return run_extraction(df, store, classes=meta.classes, dataset=meta.dataset, manifest_extra=meta.extra,
                          progress=False, **kw)


def assert_same_store(a: Path, b: Path, index_name: str = "index.csv") -> None:
    assert (a / "index.csv").read_text() == (b / index_name).read_text()
    files_a = sorted(p.name for p in (a / "clips").glob("*.npz"))
    assert files_a == sorted(p.name for p in (b / "clips").glob("*.npz"))
    for name in files_a:
        za, zb = fs.read_clip(a, name[:-4]), fs.read_clip(b, name[:-4])
        for key in fs.CLIP_KEYS:
            np.testing.assert_array_equal(za[key], zb[key], err_msg=f"{name}:{key}")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return build_dataset(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="module")
def store(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("store") / "store"
    index = extract(dataset, out)
    assert index.attrs["processed"] == 6
    return out


def test_face_clip_with_audio(store):
    z = fs.read_clip(store, "face_audio")
    assert z["face_found"].sum() >= 7 and z["faces"].shape == (8, 64, 64, 3)
    assert z["landmarks"].shape == (8, 478, 3) and z["blendshapes"].shape == (8, 52)
    assert z["pose"].shape == (8, 33, 4) and z["pose_found"].all()
    assert bool(z["has_audio"]) and z["logmel"].shape == (64, 1 + len(np.arange(int(1.2 * SR))) // 160)
    assert z["prosody"].shape == (z["logmel"].shape[1], 4)
    assert np.median(z["prosody"][10:70, 0]) == pytest.approx(180, rel=0.03)
    assert np.all(np.diff(z["times"]) > 0)


def test_index_carries_manifest_columns_and_flags(store):
    index = fs.read_index(store)
    assert list(index["clip_id"]) == sorted(index["clip_id"])
    for col in ["path", "label", "subject", "age_group", "status", "error", "file", *fs.FLAG_COLUMNS]:
        assert col in index.columns
    row = index.set_index("clip_id").loc["face_audio"]
    assert row["status"] == "ok" and row["file"] == "clips/face_audio.npz"
    assert row["face_ratio"] >= 7 / 8 and bool(row["has_audio"])
    assert row["duration"] == pytest.approx(1.2, abs=0.05) and 0.2 < row["brightness"] < 0.8
    meta = fs.read_meta(store)
    assert meta.classes == ("happy", "sad") and meta.dataset == "unit" and meta.num_frames == 8
    assert meta.extra["note"] == "test"


def test_clip_without_audio_stream(store):
    z = fs.read_clip(store, "face_mute")
    assert not bool(z["has_audio"]) and z["logmel"].shape == (64, 0) and z["prosody"].shape == (0, 4)
    row = fs.read_index(store).set_index("clip_id").loc["face_mute"]
    assert not bool(row["has_audio"]) and math.isnan(row["snr_db"])


def test_clip_without_face_has_false_masks(store):
    z = fs.read_clip(store, "no_face")
    assert not z["face_found"].any() and not z["faces"].any() and not z["pose_found"].any()
    row = fs.read_index(store).set_index("clip_id").loc["no_face"]
    assert row["status"] == "ok" and row["face_ratio"] == 0.0 and math.isnan(row["yaw"])


def test_audio_only_clip_has_frame_masks_false(store):
    z = fs.read_clip(store, "voice")
    assert z["face_found"].shape == (8,) and not z["face_found"].any() and bool(z["has_audio"])
    assert z["faces"].shape == (8, 64, 64, 3) and not z["pose_found"].any()
    row = fs.read_index(store).set_index("clip_id").loc["voice"]
    assert math.isnan(row["brightness"]) and row["face_ratio"] == 0.0 and row["snr_db"] > 20


def test_corrupt_clip_recorded_and_run_goes_on(store):
    index = fs.read_index(store).set_index("clip_id")
    assert index.loc["corrupt", "status"] == "failed"
    assert "MediaError" in index.loc["corrupt", "error"] and "corrupt.mp4" in index.loc["corrupt", "error"]
    assert (index.drop("corrupt")["status"] == "ok").all()
    assert not fs.clip_file(store, "corrupt").exists()


def test_resume_after_losing_half_the_work_is_identical(store, dataset, tmp_path):
    copy = tmp_path / "resumed"
    shutil.copytree(store, copy)
    index = fs.read_index(copy)
    for cid in ["face_audio", "no_face"]:
        fs.clip_file(copy, cid).unlink()  # as if killed before these were written
    fs.write_index(copy, index[index["clip_id"] != "face_mute"])  # ... or before its row was flushed
    (copy / "clips" / ".face_audio.partial.npz.tmp").write_bytes(b"half")  # a killed writer's temp file
    again = extract(dataset, copy)
    assert again.attrs["processed"] == 4  # 3 lost + the failed clip retried; 2 skipped
    assert_same_store(store, copy)


def test_interrupted_run_resumes_from_its_flushed_index(store, dataset, tmp_path):
    out, seen = tmp_path / "interrupted", []

    def stop_after_two(row):
        seen.append(row["clip_id"])
        if len(seen) == 3:
            raise KeyboardInterrupt  # as if Ctrl-C arrived while the third clip was being recorded

    with pytest.raises(KeyboardInterrupt):
        extract(dataset, out, flush_seconds=0, on_clip=stop_after_two)
    assert list(fs.read_index(out)["clip_id"]) == sorted(seen[:2])
    again = extract(dataset, out)
    assert again.attrs["processed"] == 5  # all but face_audio ("corrupt", done first, failed: retried)
    assert_same_store(store, out)


def test_shards_then_merge_equal_a_single_run(store, dataset, tmp_path):
    out = tmp_path / "sharded"
    assert femo(["extract", str(dataset), "--out", str(out), "--shard", "0/2", "--frames", "8",
                 "--face-size", "64", "--no-progress"]) == 1  # the corrupt clip fails
    extract(dataset, out, shard=(1, 2))
    assert sorted(p.name for p in out.glob("index.*")) == ["index.shard-0-of-2.csv", "index.shard-1-of-2.csv"]
    assert femo(["extract", "--merge", str(out)]) == 0
    assert_same_store(store, out)


@pytest.mark.slow
def test_two_worker_processes_write_the_same_store(store, dataset, tmp_path):
    out = tmp_path / "pool"
    index = extract(dataset, out, workers=2)
    assert index.attrs["processed"] == 6
    assert_same_store(store, out)


def test_settings_clash_and_bad_shard(store, dataset):
    with pytest.raises(ExtractError, match="num_frames=8"):
        extract(dataset, store, config=ExtractConfig(num_frames=4, face_size=64))
    for bad in ["2/2", "a/b", "1"]:
        with pytest.raises(ExtractError, match="i/n"):
            parse_shard(bad)
    assert parse_shard("3/8") == (3, 8)
    with pytest.raises(ExtractError, match="num_frames=0"):
        ExtractConfig(num_frames=0)
    with pytest.raises(ExtractError, match="workers"):
        extract(dataset, store, workers=0)


def test_merge_without_shards_fails_clearly(tmp_path, capsys):
    assert femo(["extract", "--merge", str(tmp_path)]) == 2
    assert "no index.shard" in capsys.readouterr().err
    with pytest.raises(ExtractError, match="no index.shard"):
        merge_shards(tmp_path)


def test_embed_flag_with_unknown_encoder_fails_before_work(dataset, tmp_path, capsys):
    assert femo(["extract", str(dataset), "--out", str(tmp_path / "s"), "--embed", "no-such-net"]) == 2
    assert "unknown frame encoder 'no-such-net'" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_models_cli(tmp_path, monkeypatch, capsys):
    from femo.assets import ASSETS, asset_path
    from femo.commands.models import selected

    sources = [asset_path(n) for n in ("face_landmarker.task", "pose_landmarker_full.task")]

    assert set(selected(False)) == {"face_landmarker.task", "pose_landmarker_full.task"}
    assert set(selected(True)) == set(ASSETS)
    monkeypatch.setenv("FEMO_CACHE", str(tmp_path))
    assert femo(["models", "list"]) == 1
    out = capsys.readouterr().out
    assert "face_landmarker.task" in out and "missing" in out and str(tmp_path) in out
    for src in sources:
        shutil.copy(src, tmp_path / src.name)
    assert femo(["models", "fetch"]) == 0  # already valid: verified, nothing downloaded
    assert "ok       face_landmarker.task" in capsys.readouterr().out
    assert femo(["models", "list"]) == 0


def test_synthetic_clips_yield_faces(tmp_path):
    out = tmp_path / "synth"
    assert femo(["synth", str(out), "--clips", "6", "--seed", "0"]) == 0
    manifest = next(out.rglob("manifest.csv"))
    index = extract(manifest, tmp_path / "store", config=ExtractConfig(num_frames=16, face_size=64))
    ok = index[index["status"] == "ok"]
    assert len(ok) == len(index)
    found = np.concatenate([fs.read_clip(tmp_path / "store", c)["face_found"] for c in ok["clip_id"]])
    assert found.mean() >= 0.95


@pytest.mark.slow
def test_resume_after_a_killed_process_is_identical(store, dataset, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "femo", "extract", str(dataset), "--out", str(out), "--frames", "8",
           "--face-size", "64", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((out / "clips").glob("*.npz")) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert len(list((out / "clips").glob("*.npz"))) < 5, "the run finished before it could be killed"
    assert subprocess.run(cmd, capture_output=True).returncode == 1  # the corrupt clip fails
    assert_same_store(store, out)


def test_a_fresh_copy_of_the_data_keeps_its_clips(store, dataset, tmp_path):
    """New paths and modification times with the same bytes: nothing is extracted again, the index
    takes the new paths and fingerprints; a file whose bytes changed is extracted again."""
    out, media = tmp_path / "store", tmp_path / "copy"
    shutil.copytree(store, out)
    shutil.copytree(dataset.parent, media, copy_function=shutil.copyfile)  # new mtimes, same bytes
    again = extract(media / "manifest.csv", out)
    assert again.attrs["processed"] == 1  # only the corrupt clip, failed before: retried
    index, before = fs.read_index(out), fs.read_index(store)
    assert index["path"].str.startswith(str(media)).all()
    ok = index["status"] == "ok"
    assert (index.loc[ok, "fingerprint"] != before.loc[ok, "fingerprint"]).all()
    assert (index.loc[ok, "content"] == before.loc[ok, "content"]).all() and index.loc[ok, "content"].str.startswith("sha1:").all()
    for cid in index.loc[ok, "clip_id"]:
        za, zb = fs.read_clip(store, cid), fs.read_clip(out, cid)
        assert all(np.array_equal(za[k], zb[k]) for k in fs.CLIP_KEYS)
    with open(media / "face_small.mp4", "ab") as fh:
        fh.write(b"\0")  # other bytes: its features may differ
    third = extract(media / "manifest.csv", out)
    assert third.attrs["processed"] == 2  # face_small and the corrupt clip
