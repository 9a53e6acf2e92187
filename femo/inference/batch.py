"""Many videos: ``femo predict DIR_OR_GLOB --out-dir OUT [--workers N]``.

* **Inputs** (:func:`expand_inputs`): a video file, a frame folder, a folder of videos (its video
  files, sorted, not recursive) or a glob pattern (``"calls/*.mp4"``, ``"**"`` recursive).
* **Outputs**: ``OUT/<name>.json`` per video (``Timeline.to_json`` plus a ``predicted_with``
  record: run folder, checkpoint size and modification time, window, hop) and ``OUT/summary.csv``,
  one row per video: file, status (``ok`` | ``skipped`` | ``failed``), error, label, p_<class>,
  duration, windows, face_found, audio, seconds. ``<name>`` is the file's path relative to the
  inputs' common folder with ``/`` as ``__``, so two ``clip.mp4`` in different folders stay apart.
* **Resume**: a video whose JSON exists with the same ``predicted_with`` is skipped (status
  ``skipped``, its summary row rebuilt from the JSON); anything else is predicted again.
* **Workers**: ``workers > 1`` runs that many processes (spawned), each with its own
  :class:`~femo.inference.predictor.Predictor`. A file that fails (unreadable, no frames) is
  listed with its reason and the others go on.
* **Progress** (:class:`Bars`, tqdm on stderr): one bar per active worker (the file it is on, in
  seconds of video) and a total bar over the seconds of video still to do, whose rate gives the
  overall ETA (durations from the containers' headers; files done or skipped count in full).
  Workers report after each chunk through a queue. No bars when stderr is not a terminal or with
  ``progress=False`` (``femo predict --quiet``).
"""
from __future__ import annotations

import glob
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import pandas as pd

from femo.data.decode import IMAGE_EXTS, VIDEO_EXTS


def expand_inputs(items: list[str | Path]) -> list[Path]:
    """Videos and frame folders named by ``items`` (files, folders of videos, glob patterns), in order, once each."""
    out: list[Path] = []
    for item in map(str, items):
        matches = sorted(glob.glob(item, recursive=True)) if glob.has_magic(item) else [item]
        for m in map(Path, matches):
            if m.is_dir() and not _is_frame_folder(m):
                out += sorted(p for p in m.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTS)
            elif m.is_dir() or m.suffix.lower() in VIDEO_EXTS or not glob.has_magic(item):
                out.append(m)
    seen: set[Path] = set()
    return [p for p in out if not (p.resolve() in seen or seen.add(p.resolve()))]


def _is_frame_folder(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_EXTS for p in folder.iterdir() if p.is_file())


def output_names(videos: list[Path]) -> list[str]:
    """``<name>.json`` for each video: its path below the common folder, ``/`` -> ``__``."""
    if not videos:
        return []
    absolute = [v.absolute() for v in videos]
    root = Path(os.path.commonpath([str(a.parent) for a in absolute]))
    return [str(a.relative_to(root)).replace(os.sep, "__") + ".json" for a in absolute]


def run_signature(run: Path, window: float, hop: float) -> dict[str, Any]:
    """What a stored result must match to be reused: run folder, checkpoint size/mtime, window, hop."""
    from femo.training.runs import RunError

    best = Path(run) / "best.pt"
    if not best.is_file():
        raise RunError(f"{best}: checkpoint not found; is {run} a run folder from `femo train`?")
    stat = best.stat()
    return {"run": str(Path(run).resolve()), "checkpoint_bytes": stat.st_size,
            "checkpoint_mtime": round(stat.st_mtime, 3), "window": window, "hop": hop}


def predict_many(videos: list[Path], run: Path, out_dir: Path, *, window: float, hop: float, workers: int = 1,
                 classes=None, progress: bool = True) -> pd.DataFrame:
    """Predict ``videos`` into ``out_dir`` (see module docstring); returns the summary table."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sig = run_signature(run, window, hop)
    names = output_names(videos)
    rows: dict[int, dict] = {}
    todo = []
    for i, (video, name) in enumerate(zip(videos, names)):
        done = _reuse(out_dir / name, sig)
        if done is not None:
            rows[i] = {**done, "file": str(video), "status": "skipped"}
        else:
            todo.append((i, str(video), str(out_dir / name)))
    bars = Bars({video: _duration(video) for _, video, _ in todo}, skipped=len(rows),
                disable=None if progress else True)
    args = (str(run), window, hop, sig, classes)
    try:
        for i, row in _results(todo, args, workers, bars):
            rows[i] = row
            bars.finished(row)
    finally:
        bars.close()
        summary = pd.DataFrame([rows[i] for i in sorted(rows)])
        if len(summary):
            summary.to_csv(out_dir / "summary.csv", index=False)
    return summary


def _duration(video: str) -> float:
    """Seconds of ``video`` by its header (0 when it cannot be read: it will fail and be listed)."""
    from femo.data.decode import probe

    try:
        return max(0.0, float(probe(Path(video)).duration or 0.0))
    except Exception:  # the prediction itself reports why
        return 0.0


class Bars:
    """The batch's progress bars: a total over seconds of video, one bar per active worker.

    durations: {video: seconds} still to predict; skipped: videos already done; disable: tqdm's
    (None = only on a terminal). Events: :meth:`event` ``("start", worker, video)``,
    ``("at", worker, seconds)``, ``("end", worker)``; :meth:`finished` with each summary row.
    """

    def __init__(self, durations: dict[str, float], *, skipped: int = 0, disable=None, file=None) -> None:
        from tqdm import tqdm

        self._tqdm, self.durations, self.disable = tqdm, durations, disable
        self.file = file or sys.stderr
        self.total = tqdm(total=round(sum(durations.values()), 1), unit="s", desc=f"{len(durations)} videos",
                          file=self.file, disable=disable, dynamic_ncols=True, position=0,
                          postfix={"skipped": skipped, "failed": 0})
        self.failed, self.skipped = 0, skipped
        self.workers: dict = {}  # worker -> [bar, video, seconds reached, screen line]
        self.credited: dict[str, float] = {}  # video -> seconds added to the total so far

    def event(self, kind: str, worker, value=None) -> None:
        """One worker's report (see the class docstring)."""
        if kind == "start":
            self._end(worker)
            used = {entry[3] for entry in self.workers.values()}
            slot = min(set(range(1, len(self.workers) + 2)) - used)  # a free line under the total
            bar = self._tqdm(total=round(self.durations.get(value, 0.0), 1), unit="s", desc=Path(value).name[-30:],
                             file=self.file, disable=self.disable, leave=False, dynamic_ncols=True, position=slot)
            self.workers[worker] = [bar, value, 0.0, slot]
        elif kind == "at" and worker in self.workers:
            entry = self.workers[worker]
            seconds = min(float(value), self.durations.get(entry[1], float(value)))
            entry[0].update(round(seconds - entry[2], 3))
            self._credit(entry[1], seconds)
            entry[2] = seconds
        elif kind == "end":
            self._end(worker)

    def _credit(self, video: str, seconds: float) -> None:
        gain = seconds - self.credited.get(video, 0.0)
        if gain > 0:
            self.credited[video] = seconds
            self.total.update(round(gain, 3))

    def _end(self, worker) -> None:
        entry = self.workers.pop(worker, None)
        if entry is not None:
            entry[0].close()

    def finished(self, row: dict) -> None:
        """A video is done (ok or failed): its whole duration counts in the total."""
        self.failed += row.get("status") == "failed"
        self._credit(row["file"], self.durations.get(row["file"], 0.0))
        self.total.set_postfix(skipped=self.skipped, failed=self.failed, refresh=False)

    def close(self) -> None:
        """Close every bar."""
        for worker in list(self.workers):
            self._end(worker)
        self.total.close()


def _results(todo: list, args: tuple, workers: int, bars: Bars):
    """Yield (position, summary row) as videos finish, feeding ``bars`` with the workers' progress."""
    if not todo:
        return
    if workers <= 1 or len(todo) <= 1:
        with _Worker(*args, report=bars.event) as worker:
            for i, video, out in todo:
                yield i, worker(video, out)
        return
    from concurrent.futures import FIRST_COMPLETED, wait

    from femo.training.runs import RunFolder

    RunFolder(args[0]).load_model(classes=args[4])  # a bad run fails here, not inside every worker
    ctx = get_context("spawn")
    events = ctx.Queue()
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init, initargs=(*args, events)) as pool:
        pending = {pool.submit(_in_worker, video, out): i for i, video, out in todo}
        while pending:
            _drain(events, bars)
            done, _ = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
            for fut in done:
                _drain(events, bars)
                yield pending.pop(fut), fut.result()
    _drain(events, bars)


def _drain(events, bars: Bars) -> None:
    """Hand every queued worker report to ``bars``."""
    import queue

    while True:
        try:
            bars.event(*events.get_nowait())
        except queue.Empty:
            return


class _Worker:
    """One process's predictor; ``worker(video, out_json)`` -> summary row (never raises for a bad file).
    ``report(kind, worker, value)``: where progress goes (:meth:`Bars.event`), or None."""

    def __init__(self, run: str, window: float, hop: float, sig: dict, classes, report=None) -> None:
        from femo.inference.predictor import Predictor

        self.predictor = Predictor.from_run(run, classes=classes)
        self.window, self.hop, self.sig, self.report = window, hop, sig, report

    def __call__(self, video: str, out: str) -> dict:
        from femo.data.decode import MediaError

        t0 = time.perf_counter()
        me = os.getpid()
        tell = (lambda *event: self.report(*event)) if self.report is not None else (lambda *event: None)
        tell("start", me, video)
        try:
            tl = self.predictor.timeline(video, window=self.window, hop=self.hop,
                                         progress=lambda seconds: tell("at", me, seconds))
        except (MediaError, ValueError, OSError) as exc:
            reason = str(exc) if video in str(exc) else f"{video}: {exc}"
            return {"file": video, "status": "failed", "error": f"{type(exc).__name__}: {reason}"}
        finally:
            tell("end", me)
        data = {**tl.to_json(), "predicted_with": self.sig}
        tmp = Path(out).with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, out)  # a killed run never leaves a half-written result
        return {**_summary(data), "file": video, "status": "ok", "seconds": round(time.perf_counter() - t0, 2)}

    def __enter__(self) -> _Worker:
        return self

    def __exit__(self, *exc) -> None:
        self.predictor.close()


def _summary(data: dict) -> dict:
    """The summary row of a stored result."""
    s = data["summary"]
    row = {"error": "", "label": s["label"], **{f"p_{c}": p for c, p in s["probabilities"].items()},
           "duration": data["duration"], "windows": len(data["windows"])}
    row["face_found"] = round(sum(w["face"]["found"] for w in data["windows"]) / max(1, row["windows"]), 4)
    row["audio"] = any(w["audio"] for w in data["windows"])
    return row


def _reuse(path: Path, sig: dict) -> dict | None:
    """The summary row of ``path`` when it exists, parses and was made with ``sig``; else None."""
    try:
        data = json.loads(path.read_text())
        return _summary(data) if data.get("predicted_with") == sig else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


_PROCESS: dict[str, _Worker] = {}


def _init(*args) -> None:
    """Pool initializer: args = the :class:`_Worker` arguments, then the progress queue."""
    from multiprocessing.util import Finalize

    import torch

    torch.set_num_threads(1)  # the pool's processes share the cores
    *worker_args, events = args
    worker = _PROCESS["worker"] = _Worker(*worker_args, report=lambda *event: events.put(event))
    Finalize(worker, worker.predictor.close, exitpriority=10)


def _in_worker(video: str, out: str) -> dict:
    return _PROCESS["worker"](video, out)
