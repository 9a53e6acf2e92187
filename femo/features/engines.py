"""Extraction beyond one process pool: clips as Ray actor tasks, or shards as a SLURM job array.

Both engines write exactly the store :func:`femo.features.extract.run_extraction` writes alone
(same clip files, same index), because they reuse its per-clip work (:func:`process_clip`, one
:class:`ClipExtractor` per worker) and its index/resume logic:

* ``ray`` (``pip install femo[ray]``): :func:`ray_runner` plugs into ``run_extraction(runner=...)``.
  ``workers`` Ray actors each own one face and one pose landmarker and extract whole clips, two
  queued per actor so none waits for the driver; each actor writes its clip files itself (the
  store must sit on a filesystem every node sees) and the driver writes the index, flushed as
  usual. Local Ray by default (``num_cpus = workers``); ``address="ray://host:10001"`` or
  ``"auto"`` joins a running cluster, whose nodes need femo installed. A worker process that dies
  loses only the clips it held: they are recorded ``failed`` with ``error="WorkerDied: ..."``, the
  actor is restarted (up to :data:`ACTOR_RESTARTS` times) and the run goes on; a rerun retries them.
* ``slurm`` (``pip install femo[slurm]``): :func:`slurm_extraction` submits shard i of n
  (``run_extraction(shard=(i, n))``, see ``femo extract --shard``) as task i of a job array through
  ``submitit``, waits, and merges the shard indexes into ``index.csv``. A task that dies keeps the
  clips its shard index flushed; rerunning the same command resubmits every shard, each resumes,
  then merges. ``cluster="local"`` runs the same tasks as local processes (used by the tests).

Pick ``--workers N`` on one machine, ``ray`` for a Ray cluster or to balance clips of very
different lengths over several machines, ``slurm`` on an HPC login node without Ray.
"""
from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from femo.data import store as fs
from femo.features.clip import ClipExtractor, ExtractConfig, ExtractError, process_clip
from femo.features.extract import merge_shards, run_extraction

ENGINES = ("local", "ray", "slurm")
#: How often a dead Ray actor is restarted before its remaining clips are recorded as failed.
ACTOR_RESTARTS = 3
#: Clips queued per Ray actor (one running, one waiting).
QUEUE_PER_ACTOR = 2
#: A job is (store, clip_id, video path, audio path or None), as ``process_clip`` takes it.
Job = tuple[str, str, str, "str | None"]
Runner = Callable[[list[Job], ExtractConfig, str], Iterator[dict]]


def missing_extra(module: str, extra: str) -> ExtractError:
    """The error for an engine whose optional dependency is not installed."""
    return ExtractError(f"--engine {extra} needs the {module!r} package, which is not installed: "
                        f"pip install 'femo[{extra}]'")


def _import(module: str, extra: str):
    try:
        return __import__(module)
    except ImportError as exc:
        raise missing_extra(module, extra) from exc


class ClipWorker:
    """One Ray actor's state: a :class:`ClipExtractor` (face + pose landmarker) for its lifetime."""

    def __init__(self, config: ExtractConfig, log_path: str) -> None:
        self.extractor = ClipExtractor(config, log_path=log_path)

    def run(self, store: str, clip_id: str, path: str, audio_path: str | None) -> dict[str, Any]:
        """:func:`process_clip` on this actor's extractor; the row also names the worker's ``pid``."""
        row = process_clip(store, clip_id, path, audio_path, extractor=self.extractor)
        row["pid"] = os.getpid()
        return row


def ray_runner(*, workers: int, address: str | None = None) -> Runner:
    """A ``runner`` for ``run_extraction`` that extracts clips on ``workers`` Ray actors.

    address: None starts a local Ray instance with ``workers`` CPUs (stopped again at the end);
    otherwise ``ray.init(address=...)`` joins that cluster. An already initialised Ray is reused.
    """
    if workers < 1:
        raise ExtractError(f"workers must be >= 1, got {workers}")
    ray = _import("ray", "ray")

    def run(jobs: list[Job], config: ExtractConfig, log_path: str) -> Iterator[dict]:
        started = not ray.is_initialized()
        if started:
            _init_ray(ray, workers, address)
        try:
            actor = ray.remote(num_cpus=1, max_restarts=ACTOR_RESTARTS)(ClipWorker)
            actors = [actor.remote(config, str(Path(log_path).absolute())) for _ in range(workers)]
            yield from _dispatch(ray, actors, [(str(Path(j[0]).absolute()), *j[1:]) for j in jobs])
        finally:
            if started:
                ray.shutdown()

    return run


def _init_ray(ray, workers: int, address: str | None, attempts: int = 3) -> None:
    """Start (or join) Ray quietly; the actors' output stays in Ray's own log folder.

    A local start is tried ``attempts`` times: Ray gives its node 30 s to come up, which an
    overloaded machine can miss."""
    import logging

    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    kwargs: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    if address is None:
        kwargs.update(num_cpus=workers, include_dashboard=False, object_store_memory=100 * 2**20)
    for _ in range(1 if address else attempts):
        try:
            ray.init(address=address, **kwargs)
            return
        except Exception as exc:  # Ray raises a bare Exception when its node misses the start-up deadline
            ray.shutdown()
            error = exc
    where = f"the Ray cluster at {address!r}" if address else f"a local Ray instance ({attempts} attempts)"
    raise ExtractError(f"--engine ray: could not start or join {where} ({type(error).__name__}: {error})") from error


def _dispatch(ray, actors: list, jobs: list[Job]) -> Iterator[dict]:
    """Keep :data:`QUEUE_PER_ACTOR` clips queued on every actor; yield rows as clips finish.

    A clip whose actor died (``RayActorError``: killed, out of memory, crashed in native code)
    comes back as a ``failed`` row with ``WorkerDied`` so the index records it and a rerun retries it.
    """
    pending: dict[Any, tuple[int, Job]] = {}
    todo = list(reversed(jobs))
    lost = [0] * len(actors)  # clips lost per actor; past its restarts it gets no more

    def submit(slot: int) -> None:
        if todo and lost[slot] <= ACTOR_RESTARTS * QUEUE_PER_ACTOR:
            job = todo.pop()
            pending[actors[slot].run.remote(*job)] = (slot, job)

    for slot in range(len(actors)):
        for _ in range(QUEUE_PER_ACTOR):
            submit(slot)
    while pending:
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        slot, job = pending.pop(ref)
        try:
            row = ray.get(ref)
        except ray.exceptions.RayError as exc:
            lost[slot] += 1
            row = _died(job, f"the Ray worker extracting this clip died ({type(exc).__name__})")
        submit(slot)
        yield row
    for job in reversed(todo):  # every actor is past its restarts
        yield _died(job, "no Ray worker left to extract this clip")


def _died(job: Job, why: str) -> dict:
    return {"clip_id": job[1], "status": fs.STATUS_FAILED, "file": "", "seconds": {},
            "error": f"WorkerDied: {why}; re-run to retry it"}


def slurm_extraction(manifest: pd.DataFrame, store: str | Path, *, shards: int, cluster: str | None = "slurm",
                     parameters: dict[str, Any] | None = None, progress: bool = True,
                     **extract_kwargs) -> pd.DataFrame:
    """Run shard i of ``shards`` as task i of a job array, wait, merge; returns the merged index.

    cluster: ``"slurm"`` (needs ``sbatch``), ``"local"`` (local processes, for tests) or None
    (submitit picks SLURM when available). parameters: submitit executor options such as
    ``{"slurm_partition": "cpu", "timeout_min": 240, "cpus_per_task": 2}``. extract_kwargs go to
    :func:`run_extraction` (classes, dataset, config, force, ...; not workers/shard). Task logs
    and pickles go to ``STORE/logs/slurm/``.
    """
    submitit = _import("submitit", "slurm")
    if shards < 1:
        raise ExtractError(f"shards must be >= 1, got {shards}")
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise ExtractError("--engine slurm: `sbatch` is not on PATH; run it on a SLURM login node "
                           "(or use --engine ray / --workers N on this machine)")
    store = Path(store).absolute()
    store.mkdir(parents=True, exist_ok=True)
    executor = submitit.AutoExecutor(folder=store / "logs" / "slurm", cluster=cluster)
    executor.update_parameters(**{"name": "femo-extract", "timeout_min": 240, "cpus_per_task": 1,
                                  "slurm_array_parallelism": shards, **(parameters or {})})
    args = [(manifest, str(store), (i, shards), extract_kwargs) for i in range(shards)]
    jobs = executor.map_array(_extract_shard, *zip(*args))
    failed = _wait(submitit, jobs, progress)
    if failed:
        raise ExtractError(f"{store}: shard task(s) {', '.join(failed)} did not finish; the shard indexes keep "
                           "every clip done: re-run the same command to complete and merge them")
    return merge_shards(store)


def _extract_shard(manifest: pd.DataFrame, store: str, shard: tuple[int, int], kwargs: dict) -> dict:
    """One array task: extract one shard in this process; returns its counts."""
    index = run_extraction(manifest, store, shard=shard, workers=1, progress=False, **kwargs)
    return {"shard": shard, "clips": len(index), "ok": int((index["status"] == fs.STATUS_OK).sum()),
            "processed": index.attrs["processed"]}


def _wait(submitit, jobs: list, progress: bool) -> list[str]:
    """Wait for every task; the ``i: reason`` of those that failed."""
    from tqdm import tqdm

    failed = []
    shard_of = {job.job_id: i for i, job in enumerate(jobs)}
    with tqdm(total=len(jobs), unit="shard", desc="slurm", file=sys.stderr, disable=not progress) as bar:
        for job in submitit.helpers.as_completed(jobs):
            try:
                job.result()
            except Exception as exc:  # a dead or failed task: its clips stay for the rerun
                failed.append(f"{shard_of[job.job_id]} ({type(exc).__name__}: {str(exc)[:200]})")
            bar.update()
    return failed
