"""DistributedDataParallel, exercised: torchrun with 2 CPU ranks (gloo) equals one process at twice the batch.

The comparison is exact up to float rounding because the loop deals one permutation per (seed,
epoch) round-robin to the ranks (N ranks at batch B see the batches one process sees at N x B)
and the settings remove what legitimately differs: ``balance="none"`` (the ``weights`` balance
normalises the loss per rank), no dropout, no augmentation. Tolerance: 1e-4 on validation losses
and test probabilities (gradients are summed in another order by the all-reduce).

Run as a script (``python -m torch.distributed.run --nproc_per_node N tests/test_ddp.py ARGS``)
this file is the launched entry point: it trains with :func:`femo.training.loop.train` and
records, per rank, the backend and every file the rank opened for writing.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from _synth_store import CLASSES, EMB_NAME, build_store

BATCH = 4  # per rank; the single-process reference uses 2 x BATCH


def configs(batch: int, device: str):
    from femo.config import DataConfig, ModelConfig, TrainConfig

    data = DataConfig(num_frames=4, face_size=16, audio_frames=16, classes=CLASSES)
    model = ModelConfig(modalities=("face", "audio"), dim=8, temporal="mean", fusion="gated", embeddings=EMB_NAME,
                        heads=2, dropout=0.0, modality_dropout=0.0)
    train = TrainConfig(epochs=3, batch_size=batch, lr=1e-2, seed=3, balance="none", augment=False, cache=True,
                        device=device)
    return data, model, train


def _launched(store: str, out: str, batch: int, device: str, record: str) -> None:
    """The torchrun entry point: train, and write RECORD.rank<r>.json (backend, files written)."""
    import torch.distributed as dist

    from femo.training.loop import train

    run, written = Path(out).resolve(), []

    def audit(event: str, args: tuple) -> None:  # every open-for-write or rename inside the run folder
        if event == "open" and isinstance(args[0], (str, Path)) and str(args[1] or "r")[:1] in "wax":
            path = Path(args[0]).resolve()
        elif event == "os.rename":
            path = Path(args[1]).resolve()
        else:
            return
        if run in path.parents:
            written.append(str(path.relative_to(run)))

    sys.addaudithook(audit)
    data, model, cfg = configs(batch, device)
    train(store, out=out, model=model, train=cfg, fold=1, data=data, progress=False)
    rank, backend = dist.get_rank(), dist.get_backend()
    Path(f"{record}.rank{rank}.json").write_text(json.dumps({"backend": backend, "written": written,
                                                              "world": dist.get_world_size()}))


def torchrun(store: Path, out: Path, *, nproc: int, device: str) -> list[dict]:
    """Launch this file on ``nproc`` ranks; returns each rank's record."""
    record = out.parent / f"{out.name}.record"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           __file__, str(store), str(out), str(BATCH), device, str(record)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(Path(f"{record}.rank{r}.json").read_text()) for r in range(nproc)]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return build_store(tmp_path_factory.mktemp("ddp"), n=60, a=16)


@pytest.fixture(scope="module")
def single(store, tmp_path_factory) -> Path:
    """The reference: this process alone, batch 2 x BATCH."""
    from femo.training.loop import train

    out = tmp_path_factory.mktemp("single") / "run"
    data, model, cfg = configs(2 * BATCH, "cpu")
    train(store, out=out, model=model, train=cfg, fold=1, data=data, progress=False)
    return out


def assert_same_training(a: Path, b: Path, tol: float = 1e-4) -> None:
    ha, hb = pd.read_csv(a / "history.csv"), pd.read_csv(b / "history.csv")
    assert len(ha) == len(hb) == 3
    np.testing.assert_allclose(ha["val_loss"], hb["val_loss"], atol=tol)
    np.testing.assert_allclose(ha["lr"], hb["lr"], rtol=1e-6)  # same number of steps per epoch
    ma, mb = (json.loads((p / "metrics.json").read_text()) for p in (a, b))
    assert ma["uar"] == pytest.approx(mb["uar"], abs=1e-9) and ma["best_epoch"] == mb["best_epoch"]
    pa, pb = pd.read_csv(a / "predictions.csv"), pd.read_csv(b / "predictions.csv")
    probs = [c for c in pa.columns if c.startswith("p_")]
    assert probs and list(pa["clip_id"]) == list(pb["clip_id"])
    np.testing.assert_allclose(pa[probs].to_numpy(), pb[probs].to_numpy(), atol=tol)


def test_two_cpu_ranks_equal_one_process_at_twice_the_batch(store, single, tmp_path):
    n_train = json.loads((single / "metrics.json").read_text())["n_train"]
    assert n_train // (2 * BATCH) == math.ceil(n_train / 2) // BATCH, "pick n so both take the same steps"
    records = torchrun(store, tmp_path / "ddp", nproc=2, device="cpu")
    assert [r["backend"] for r in records] == ["gloo", "gloo"] and records[0]["world"] == 2
    assert records[1]["written"] == []  # only rank 0 writes
    assert {"config.json", "history.csv", "metrics.json", "predictions.csv"} <= set(records[0]["written"])
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == sorted(p.name for p in single.iterdir())
    assert_same_training(single, tmp_path / "ddp")
    history = pd.read_csv(single / "history.csv")
    assert history["val_loss"].iloc[-1] < history["val_loss"].iloc[0]  # it trains


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_ranks_use_nccl(store, tmp_path):
    nproc = min(2, torch.cuda.device_count())  # NCCL wants one GPU per rank
    records = torchrun(store, tmp_path / "cuda", nproc=nproc, device="cuda")
    assert {r["backend"] for r in records} == {"nccl"} and records[0]["world"] == nproc
    assert all(r["written"] == [] for r in records[1:]) and "metrics.json" in records[0]["written"]
    history = pd.read_csv(tmp_path / "cuda" / "history.csv")
    assert history["val_loss"].iloc[-1] < history["val_loss"].iloc[0]  # it trains (bf16 autocast: not compared)


if __name__ == "__main__":
    _launched(*sys.argv[1:3], int(sys.argv[3]), *sys.argv[4:6])
