"""Worker processes for the extraction job that survive a native crash and die with their parent.

:func:`run_pool` runs ``fn(*job)`` for every job in a spawned process pool and yields
``(job, result)`` as jobs finish:

* **At most ``workers`` jobs in flight**, so the jobs a dead worker takes down are exactly the
  ones being worked on (never a long queue).
* **A worker that dies** (segfault, SIGKILL, out of memory: ``BrokenProcessPool``) costs only
  the clips in hand: the pool is rebuilt and each of them is retried once, alone, in a fresh
  worker; a job that kills its worker again is given up with ``crashed(job, reason)`` as its
  result, and the rest go on. If fresh pools keep dying before finishing any job (e.g. the
  worker cannot even start), :class:`PoolError` stops the run.
* **Workers exit with their parent**, even when it is SIGKILLed: on Linux through
  ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, elsewhere (and as a fallback) through a thread that
  polls the parent's pid every :data:`PARENT_POLL_SECONDS`.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any

PARENT_POLL_SECONDS = 0.5
_PR_SET_PDEATHSIG = 1


class PoolError(RuntimeError):
    """Worker processes keep dying before finishing any job."""


def die_with_parent(parent_pid: int) -> None:
    """Make this process exit as soon as ``parent_pid`` is gone (call it first in a worker)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the polling thread below still covers it
    if os.getppid() != parent_pid:  # the parent died before the line above ran
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _start_worker(parent_pid: int, initializer: Callable | None, initargs: tuple) -> None:
    die_with_parent(parent_pid)
    if initializer is not None:
        initializer(*initargs)


def run_pool(fn: Callable, jobs: Iterable[tuple], *, workers: int, crashed: Callable[[tuple, str], Any],
             initializer: Callable | None = None, initargs: tuple = (),
             max_dead_pools: int = 5) -> Iterator[tuple[tuple, Any]]:
    """Yield ``(job, fn(*job))`` per job (completion order); see the module docstring.

    fn, initializer: picklable module-level callables (workers are spawned). crashed(job,
    reason) builds the result of a job given up after killing two workers. max_dead_pools:
    fresh pools in a row that may die before any job finishes.
    """
    todo, suspects = deque(jobs), deque()
    crashes: dict[tuple, int] = {}
    dead_in_a_row = 0
    start = (os.getpid(), initializer, initargs)
    pool = _new_pool(workers, start)
    try:
        in_flight: dict = {}
        while todo or suspects or in_flight:
            limit = 1 if suspects else workers  # a suspect runs alone: its crash then proves its guilt
            while len(in_flight) < limit and (suspects or todo):
                job = suspects.popleft() if suspects else todo.popleft()
                in_flight[pool.submit(fn, *job)] = job
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            broken = False
            for fut in done:
                try:
                    result = fut.result()
                except BrokenProcessPool:
                    broken = True
                    continue
                dead_in_a_row = 0
                yield in_flight.pop(fut), result
            if not broken:
                continue
            lost, in_flight = list(in_flight.values()), {}
            pool.shutdown(wait=True, cancel_futures=True)
            dead_in_a_row += 1
            if dead_in_a_row > max_dead_pools:
                raise PoolError(f"{dead_in_a_row} fresh worker pools in a row died before finishing a job; "
                                "the workers cannot run here (see the messages above)")
            pool = _new_pool(workers, start)
            for job in lost:
                crashes[job] = crashes.get(job, 0) + 1
                if crashes[job] >= 2:  # its second crash happened while it ran alone: it is the culprit
                    yield job, crashed(job, "the worker process died twice on this clip, the second time alone "
                                            "in a fresh worker (a native crash, or killed by the system)")
                else:
                    suspects.append(job)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _new_pool(workers: int, start: tuple) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                               initializer=_start_worker, initargs=start)
