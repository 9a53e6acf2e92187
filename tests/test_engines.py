"""Extraction on Ray actors and on a submitit job array writes the store one process writes."""
from __future__ import annotations

import json
import math
import os
import signal
import sys
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
from femo.features.clip import ExtractConfig
from femo.features.extract import run_extraction

CONFIG = ExtractConfig(num_frames=6, face_size=48)
SR = 16_000


def _wobble(n: int, size: int, phase: float) -> np.ndarray:
    """(n, size, size, 3) uint8: the astronaut photo turning a little."""
    small = cv2.resize(astronaut(), (size, size))
    out = []
    for i in range(n):
        m = cv2.getRotationMatrix2D((size / 2, size / 2), 3 * math.sin(i / 3 + phase), 1.0)
        out.append(cv2.warpAffine(small, m, (size, size)))
    return np.stack(out)


def build_dataset(folder: Path) -> Path:
    """Five clips: three faces with audio (different lengths), a corrupt file, an audio-only wav."""
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(SR) / SR
    voice = (0.3 * np.sin(2 * np.pi * 170 * t)).astype(np.float32)
    for k, n in enumerate((12, 20, 16)):
        write_video(folder / f"face{k}.mp4", _wobble(n, 160, k), fps=12, audio=voice[: n * SR // 12])
    (folder / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    write_wav(folder / "voice.wav", voice, SR)
    ids = ["face0", "face1", "face2", "corrupt", "voice"]
    df = pd.DataFrame({"clip_id": ids, "path": [f"{c}.mp4" for c in ids[:4]] + ["voice.wav"],
                       "label": ["happy", "sad", "happy", "sad", "happy"], "subject": ["a", "b", "c", "d", "e"]})
    df.to_csv(folder / "manifest.csv", index=False)
    (folder / "manifest.meta.json").write_text(json.dumps({"dataset": "unit", "classes": ["happy", "sad"]}))
    return folder / "manifest.csv"


def extract(manifest: Path, store: Path, **kw) -> pd.DataFrame:
    df, meta = read_manifest(manifest)
    return run_extraction(df, store, classes=meta.classes, dataset=meta.dataset, config=CONFIG,
                          manifest_path=str(manifest), progress=False, **kw)


def assert_same_store(a: Path, b: Path) -> None:
    """Same index text, same clip files, every array equal (dtype, shape and bytes)."""
    assert (a / "index.csv").read_text() == (b / "index.csv").read_text()
    names = sorted(p.name for p in (a / "clips").glob("*.npz"))
    assert names == sorted(p.name for p in (b / "clips").glob("*.npz")) and names
    for name in names:
        za, zb = fs.read_clip(a, name[:-4]), fs.read_clip(b, name[:-4])
        for key in fs.CLIP_KEYS:
            assert za[key].dtype == zb[key].dtype and za[key].shape == zb[key].shape, f"{name}:{key}"
            assert za[key].tobytes() == zb[key].tobytes(), f"{name}:{key}"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return build_dataset(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="module")
def single(dataset, tmp_path_factory) -> Path:
    """The reference: one process, ``workers=1``."""
    out = tmp_path_factory.mktemp("single") / "store"
    index = extract(dataset, out)
    assert list(index["status"]) == ["failed", "ok", "ok", "ok", "ok"]  # sorted by clip_id: corrupt first
    return out


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance with 2 CPUs for the module (starting Ray takes ~20 s here)."""
    ray = pytest.importorskip("ray")
    from femo.features.engines import _init_ray
    from femo.features.clip import ExtractError

    try:
        _init_ray(ray, 2, None, attempts=1)  # as `--engine ray` starts it (which retries twice more)
    except ExtractError as exc:  # Ray's own deadline, missed on an overloaded machine: not femo's code
        pytest.skip(f"local Ray did not start: {exc}")
    yield ray
    ray.shutdown()


def test_ray_two_workers_equal_one_process(local_ray, dataset, single, tmp_path):
    from femo.features.engines import ray_runner

    pids = set()
    index = extract(dataset, tmp_path / "ray", runner=ray_runner(workers=2), on_clip=lambda r: pids.add(r["pid"]))
    assert index.attrs["processed"] == 5
    assert len(pids) == 2 and os.getpid() not in pids  # both actors worked, the driver extracted nothing
    assert_same_store(single, tmp_path / "ray")


@pytest.mark.slow  # ~70 s: Ray restarts the killed actor, then a second run starts two more
def test_dead_ray_worker_loses_only_its_clips_and_a_rerun_completes(local_ray, dataset, single, tmp_path):
    from femo.features.engines import ray_runner

    out, killed = tmp_path / "killed", []

    def kill_first_worker(row: dict) -> None:
        if not killed and "pid" in row:
            killed.append(row["pid"])
            os.kill(row["pid"], signal.SIGKILL)  # as if the node ran out of memory

    index = extract(dataset, out, runner=ray_runner(workers=2), on_clip=kill_first_worker)
    died = index[index["error"].fillna("").str.startswith("WorkerDied")]
    assert 1 <= len(died) <= 2  # the clips queued on the killed actor, nothing else
    rest = index[~index.index.isin(died.index) & (index["clip_id"] != "corrupt")]
    assert len(rest) == 4 - len(died) + ("corrupt" in set(died["clip_id"])) and (rest["status"] == "ok").all()
    again = extract(dataset, out, runner=ray_runner(workers=2))
    assert again.attrs["processed"] == len(set(died["clip_id"]) | {"corrupt"})  # failed clips are retried
    assert_same_store(single, out)


def test_submitit_job_array_then_merge_equals_one_process(dataset, single, tmp_path):
    pytest.importorskip("submitit")
    from femo.features.engines import slurm_extraction

    df, meta = read_manifest(dataset)
    out = tmp_path / "slurm"
    kwargs = dict(classes=meta.classes, dataset=meta.dataset, config=CONFIG, manifest_path=str(dataset))
    index = slurm_extraction(df, out, shards=2, cluster="local", progress=False, **kwargs)
    assert len(index) == 5 and sorted(p.name for p in out.glob("index.shard-*")) == [
        "index.shard-0-of-2.csv", "index.shard-1-of-2.csv"]
    assert_same_store(single, out)


@pytest.mark.slow  # ~50 s: two rounds of two task processes, each loading mediapipe
def test_submitit_rerun_completes_a_dead_tasks_clips(dataset, single, tmp_path):
    pytest.importorskip("submitit")
    from femo.features.engines import slurm_extraction

    df, meta = read_manifest(dataset)
    out = tmp_path / "slurm"
    kwargs = dict(classes=meta.classes, dataset=meta.dataset, config=CONFIG, manifest_path=str(dataset))
    slurm_extraction(df, out, shards=2, cluster="local", progress=False, **kwargs)
    fs.clip_file(out, "face1").unlink()  # as if its task died before writing it
    index = pd.read_csv(out / "index.shard-0-of-2.csv", dtype=str, keep_default_na=False)
    fs.write_index(out, index[index["clip_id"] != "voice"], "index.shard-0-of-2.csv")  # ... or its row
    slurm_extraction(df, out, shards=2, cluster="local", progress=False, **kwargs)
    assert_same_store(single, out)


def test_missing_extra_names_it(dataset, tmp_path, monkeypatch, capsys):
    for module, engine in (("ray", "ray"), ("submitit", "slurm")):
        monkeypatch.setitem(sys.modules, module, None)  # import of it raises ImportError
        assert femo(["extract", str(dataset), "--out", str(tmp_path / engine), "--engine", engine,
                     "--workers", "2", "--no-progress"]) == 2
        assert f"pip install 'femo[{engine}]'" in capsys.readouterr().err


def test_slurm_engine_without_sbatch_says_so(dataset, tmp_path, monkeypatch, capsys):
    pytest.importorskip("submitit")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch anywhere
    assert femo(["extract", str(dataset), "--out", str(tmp_path / "s"), "--engine", "slurm", "--no-progress"]) == 2
    assert "sbatch" in capsys.readouterr().err
