"""The extraction job under bad input, kills, crashes and concurrent runs.

Real media through the real extractor where the checks are about media (a hand-written
manifest mixing good and bad rows, a huge still image); the stand-in extractor of
``_extract_doubles`` where the checks are about the job itself (workers that crash or outlive
their parent, a kill mid-run, changed rows, the store lock), so those run in seconds.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
from PIL import Image
from scipy.io import wavfile

from _extract_doubles import FakeExtractor, attempts
from _media import lfs_pointer, mp4, tone, wav
from femo.cli import main as femo
from femo.data import store as fs
from femo.data.manifest import read_manifest
from femo.data.media import write_wav
from femo.features.clip import ClipExtractor, ExtractConfig, ExtractError
from femo.features.extract import run_extraction

TESTS = Path(__file__).parent
SMALL = ExtractConfig(num_frames=4, face_size=32)


def _manifest(folder: Path, rows: list[dict], classes=("happy", "sad")) -> Path:
    path = folder / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    (folder / "manifest.meta.json").write_text(json.dumps({"dataset": "unit", "classes": list(classes)}))
    return path


def _row(clip_id, path, label="happy", **extra) -> dict:
    return {"clip_id": clip_id, "path": str(path), "label": label, "subject": "s1", **extra}


def _fake_run(manifest: Path, store: Path, **kw) -> pd.DataFrame:
    df, meta = read_manifest(manifest)
    return run_extraction(df, store, classes=meta.classes, config=SMALL, progress=False,
                          extractor=FakeExtractor, **kw)


def _npz_outside(root: Path, store: Path) -> list[Path]:
    return [p for p in root.rglob("*.npz") if store not in p.parents]


def test_store_refuses_ids_that_leave_it(tmp_path):
    store = tmp_path / "store"
    arrays = {k: np.zeros(1) for k in fs.CLIP_KEYS}
    for bad in ["../../x", str(tmp_path / "abs" / "x"), "..", ".x", "a\x00b", ""]:
        with pytest.raises(fs.StoreError, match="clip id"):
            fs.write_clip(store, bad, arrays)
    assert not any(tmp_path.rglob("*.npz")) and not (tmp_path / "abs").exists()
    assert fs.write_clip(store, "a..b", arrays) == store / "clips" / "a..b.npz"


def test_library_run_records_unsafe_ids_and_writes_nothing_outside(tmp_path):
    data = tmp_path / "data"
    target = tmp_path / "abs_target" / "x"
    rows = [_row("good", wav(data / "a.wav")), _row("../../escape", data / "a.wav"), _row(str(target), data / "a.wav"),
            _row("good2", data / "a.wav", "sad")]
    index = _fake_run(_manifest(data, rows), tmp_path / "store")
    by_id = index.set_index("clip_id")
    assert by_id.loc[["good", "good2"], "status"].tolist() == ["ok", "ok"]
    assert by_id.loc[["../../escape", str(target)], "status"].tolist() == ["failed", "failed"]
    assert "path separator" in by_id.loc["../../escape", "error"]
    assert _npz_outside(tmp_path, tmp_path / "store") == [] and not target.parent.exists()


def _float_wav(path: Path, samples: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(path, 16_000, samples.astype(np.float32))
    return path


@pytest.fixture
def mixed_manifest(tmp_path) -> Path:
    """A hand-written manifest: 3 good rows and one row per kind of bad row."""
    d = tmp_path / "data"
    nan = tone(0.5)
    nan[100:200] = np.nan
    rows = [
        _row("voice", wav(d / "voice.wav")),
        _row("video", mp4(d / "video.mp4"), "sad"),
        _row("../../escape", d / "voice.wav"),
        _row(str(tmp_path / "abs_target" / "x"), d / "voice.wav"),
        _row(".hidden", d / "voice.wav"),
        _row("alien", d / "voice.wav", "contempt"),
        _row("voice", d / "video.mp4", "sad"),  # duplicate id: the first row wins
        _row("missing", d / "missing.wav"),
        _row("lfs", lfs_pointer(d / "lfs.mp4")),
        _row("zero", write_wav(d / "zero.wav", np.zeros(0, np.float32))),
        _row("silent", write_wav(d / "silent.wav", np.zeros(8000, np.float32))),
        _row("nan", _float_wav(d / "nan.wav", nan)),
        _row("voice2", wav(d / "voice2.wav"), "sad"),
    ]
    return _manifest(d, rows)


def test_hand_written_manifest_keeps_every_good_row(mixed_manifest, tmp_path, capsys):
    store = tmp_path / "store"
    assert femo(["extract", str(mixed_manifest), "--out", str(store), "--frames", "4", "--face-size", "32",
                 "--no-progress"]) == 1
    captured = capsys.readouterr()
    index = fs.read_index(store).set_index("clip_id")
    assert index.loc[["voice", "video", "voice2"], "status"].tolist() == ["ok"] * 3
    assert index.loc["voice", "path"].endswith("voice.wav")  # the first of the duplicate rows
    errors = index.loc[index["status"] == "failed", "error"].to_dict()
    expect = {"../../escape": "path separator", str(tmp_path / "abs_target" / "x"): "path separator",
              ".hidden": "starts with a dot", "alien": "'contempt'", "missing": "file not found",
              "lfs": "Git LFS pointer", "zero": "no audio samples", "silent": "digital silence", "nan": "NaN"}
    assert set(errors) == set(expect)
    for cid, words in expect.items():
        assert words in errors[cid], (cid, errors[cid])
    excluded = pd.read_csv(store / "excluded.csv", dtype=str)
    assert ("voice", "duplicate_id") in set(zip(excluded["clip_id"], excluded["check"]))
    assert "excluded before extraction" in captured.out and "duplicate_id" in captured.out
    assert _npz_outside(tmp_path, store) == [] and not (tmp_path / "abs_target").exists()
    assert fs.read_clip(store, "voice")["logmel"].shape[1] > 0
    # an audio-only clip of digital silence has nothing to analyse: failed with the reason, never a bare "ok"
    assert index.loc["silent", "status"] == "failed"


def test_strict_refuses_before_writing(mixed_manifest, tmp_path, capsys):
    store = tmp_path / "strict"
    assert femo(["extract", str(mixed_manifest), "--out", str(store), "--strict", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "--strict" in err and "'contempt'" in err and "duplicate" in err and "Git LFS pointer" in err
    assert not store.exists()


def test_changed_rows_are_refreshed_or_re_extracted(tmp_path):
    data = tmp_path / "data"
    rows = [_row(c, wav(data / f"{c}.wav"), age=30) for c in "abcd"]
    store = tmp_path / "store"
    assert _fake_run(_manifest(data, rows), store).attrs["processed"] == 4
    before = fs.read_clip(store, "d")["times"][0]
    rows[1]["label"], rows[2]["age"] = "sad", 41  # metadata only: the row is refreshed, not re-extracted
    write_wav(data / "d.wav", 0.2 * tone(0.7))  # new content: re-extracted
    again = _fake_run(_manifest(data, rows), store)
    assert again.attrs["processed"] == 1
    index = fs.read_index(store).set_index("clip_id")
    assert index.loc["b", "label"] == "sad" and index.loc["c", "age"] == 41
    assert fs.read_clip(store, "d")["times"][0] != before
    assert _fake_run(_manifest(data, rows), store).attrs["processed"] == 0


def _script(body: str) -> list[str]:
    head = f"import sys; sys.path.insert(0, {str(TESTS)!r})\n"
    return [sys.executable, "-c", head + textwrap.dedent(body)]


_RUN = """
    from pathlib import Path
    from _extract_doubles import FakeExtractor
    from femo.data.manifest import read_manifest
    from femo.features.clip import ExtractConfig
    from femo.features.extract import run_extraction
    df, meta = read_manifest({manifest!r})
    run_extraction(df, {store!r}, classes=meta.classes, config=ExtractConfig(num_frames=4, face_size=32),
                   progress=False, extractor=FakeExtractor, workers={workers}, on_clip={on_clip})
"""


def test_a_kill_loses_at_most_the_clip_in_hand(tmp_path):
    data = tmp_path / "data"
    manifest = _manifest(data, [_row(f"c{i}", wav(data / f"c{i}.wav")) for i in range(8)])
    store = tmp_path / "store"
    kill_at_fourth = ("lambda row, n=[]: n.append(1) or "
                      "(len(n) == 4 and __import__('os').kill(__import__('os').getpid(), 9))")
    proc = subprocess.run(_script(_RUN.format(manifest=str(manifest), store=str(store), workers=1,
                                              on_clip=kill_at_fourth)), capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert _fake_run(manifest, store).attrs["processed"] <= 8 - 3


def _children(pid: int, want: int, timeout: float = 60.0) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = [k for k in psutil.Process(pid).children(recursive=True)
                if "resource_tracker" not in " ".join(k.cmdline())]
        if len(kids) >= want:
            return kids
        time.sleep(0.1)
    raise AssertionError(f"pid {pid} did not start {want} worker(s) in {timeout} s")


def test_workers_exit_when_the_parent_is_killed(tmp_path):
    data = tmp_path / "data"
    clips = [wav(data / f"slow{i}.wav") for i in range(4)]
    manifest = _manifest(data, [_row(p.stem, p) for p in clips])
    proc = subprocess.Popen(_script(_RUN.format(manifest=str(manifest), store=str(tmp_path / "store"), workers=2,
                                                on_clip=None)), stderr=subprocess.DEVNULL)
    workers = []
    try:
        workers += _children(proc.pid, 2)
        deadline = time.monotonic() + 60
        while sum(attempts(p) for p in clips) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # both workers are inside a 30 s clip
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        gone, alive = psutil.wait_procs(workers, timeout=5)
        assert alive == [], f"workers outlived their killed parent: {[p.pid for p in alive]}"
    finally:  # never leave a worker behind, whatever failed above
        for p in [*workers, *psutil.Process().children(recursive=True)]:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass


def test_a_crashing_worker_costs_only_its_clip(tmp_path):
    data = tmp_path / "data"
    paths = [wav(data / f"c{i}.wav") for i in range(5)] + [wav(data / "crash.wav")]
    manifest = _manifest(data, [_row(p.stem, p) for p in paths])
    index = _fake_run(manifest, tmp_path / "store", workers=2).set_index("clip_id")
    assert (index.drop("crash")["status"] == "ok").all() and len(index) == 6
    assert index.loc["crash", "status"] == "failed"
    assert "worker process died" in index.loc["crash", "error"] and "crash.wav" in index.loc["crash", "error"]
    assert attempts(data / "crash.wav") == 2  # retried once, in a fresh worker


def test_a_second_run_on_the_same_store_refuses_then_takes_over_a_dead_lock(tmp_path, capsys):
    data = tmp_path / "data"
    manifest = _manifest(data, [_row("slow", wav(data / "slow.wav")), _row("a", wav(data / "a.wav"))])
    store = tmp_path / "store"
    holder = subprocess.Popen(_script(_RUN.format(manifest=str(manifest), store=str(store), workers=1,
                                                  on_clip=None)), stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while attempts(data / "slow.wav") == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        with pytest.raises(ExtractError) as err:
            _fake_run(manifest, store)
        assert f"pid {holder.pid}" in str(err.value) and os.uname().nodename in str(err.value)
        assert str(store / ".lock") in str(err.value)
    finally:
        holder.kill()
        holder.wait()
    (data / "slow.wav").rename(data / "quick.wav")
    manifest = _manifest(data, [_row("slow", data / "quick.wav"), _row("a", data / "a.wav")])
    capsys.readouterr()
    assert (_fake_run(manifest, store)["status"] == "ok").all()
    assert f"pid {holder.pid}" in capsys.readouterr().err  # the stale lock's owner is named


def test_huge_still_image_is_downscaled_before_landmarking(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("RGB", (4000, 4000), (120, 90, 60)).save(path)
    with ClipExtractor(SMALL) as extractor:
        seen, track = [], extractor.face.track
        extractor.face.track = lambda frames, times: seen.append(frames.shape) or track(frames, times)
        extractor.extract(str(path))
    assert len(seen) == 1 and seen[0][0] == 1  # a still is one distinct frame for the trackers
    assert max(seen[0][1:3]) <= SMALL.image_max_side <= 1920
