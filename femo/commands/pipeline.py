"""`femo pipeline`: data -> manifest -> features -> embeddings -> training -> all reports (`make report`).

Stages run as the matching ``femo`` sub-commands in this process, inside ``--workdir``
(default ``runs/<tag>``). Each finished stage is recorded in ``WORKDIR/stages.json`` and skipped
on the next call, so a killed pipeline resumes where it stopped (``--force`` reruns everything).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

STAGES: tuple[str, ...] = ("data", "features", "embeddings", "train", "reports")


class StageError(RuntimeError):
    """A pipeline stage failed; the message names the stage and the command it ran."""


def register(subparsers) -> None:
    """Add the ``pipeline`` sub-command."""
    p = subparsers.add_parser(
        "pipeline", help="synthetic (or real) data -> features -> training -> all reports",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="", help="DFEW root (official layout) or a manifest CSV; default: synthetic")
    p.add_argument("--tag", default="demo", help="report tag and default workdir name (default: demo)")
    p.add_argument("--workdir", default=None, help="where data, store and run go (default: runs/<tag>)")
    p.add_argument("--clips", type=int, default=None, help="synthetic clips (default: femo synth's default)")
    p.add_argument("--epochs", type=int, default=12, help="training epochs (default: 12)")
    p.add_argument("--fold", type=int, default=1, help="test fold of the 5-fold subject-independent split")
    p.add_argument("--workers", type=int, default=2, help="feature-extraction processes (default: 2)")
    p.add_argument("--reports-dir", default="reports", help="where report folders go (default: reports)")
    p.add_argument("--force", action="store_true", help="rerun finished stages")
    p.set_defaults(func=run)


def _femo(argv: list[str], *, ok: tuple[int, ...] = (0,)) -> None:
    """Run ``femo ARGV`` in this process; StageError unless its exit status is in ``ok``."""
    from femo import cli

    print(f"$ femo {' '.join(argv)}", flush=True)
    rc = cli.main(argv)
    if rc not in ok:
        raise StageError(f"`femo {' '.join(argv)}` exited with status {rc}")


def _data_stage(args: argparse.Namespace, work: Path) -> Path:
    """Write or build the manifest; returns its path."""
    if not args.data:
        out = work / "data"
        _femo(["synth", str(out)] + (["--clips", str(args.clips)] if args.clips else []))
        return out / "manifest.csv"
    source = Path(args.data).expanduser().resolve()
    if not source.exists():
        raise StageError(f"--data path not found: {source}")
    if source.is_file():
        return source
    if (source / "manifest.csv").is_file():
        return source / "manifest.csv"
    manifest = work / "manifest.csv"
    _femo(["manifest", "dfew", str(source), "--out", str(manifest)])
    return manifest


def _stages(args: argparse.Namespace, work: Path, state: dict) -> dict[str, Callable[[], dict]]:
    store, run_dir = work / "store", work / "run"

    def data() -> dict:
        return {"manifest": str(_data_stage(args, work))}

    def features() -> dict:
        # Status 1 = some clips failed: they are recorded in the index and the rest go on.
        _femo(["extract", state["data"]["manifest"], "--out", str(store), "--workers", str(args.workers)],
              ok=(0, 1))
        return {"store": str(store)}

    def embeddings() -> dict:
        from femo import demo

        return {"embeddings": demo.cache_embeddings(store) or ""}

    def train() -> dict:
        emb = state["embeddings"]["embeddings"]
        _femo(["train", str(store), "--out", str(run_dir), "--fold", str(args.fold), "--cache", "--quiet"]
              + (["--embeddings", emb] if emb else []) + ["--epochs", str(args.epochs)])
        return {"run": str(run_dir)}

    def reports() -> dict:
        from femo.commands.report import summarize
        from femo.run import run_reports

        found, index = run_reports(reports_dir=args.reports_dir, data=str(store), run_dir=str(run_dir),
                                   tag=args.tag)
        if summarize(found, index) != 0:
            raise StageError(f"some reports failed; see {index}")
        return {"index": str(index.resolve())}

    return {"data": data, "features": features, "embeddings": embeddings, "train": train, "reports": reports}


def run(args: argparse.Namespace) -> int:
    """Run the stages not yet finished, print the time of each and where the index page is."""
    work = Path(args.workdir or Path("runs") / args.tag).resolve()
    work.mkdir(parents=True, exist_ok=True)
    state_path = work / "stages.json"
    state = {} if args.force or not state_path.is_file() else json.loads(state_path.read_text())
    stages = _stages(args, work, state)
    for name in STAGES:
        if name in state and name != "reports":
            print(f"[{name}] done earlier ({state[name]['seconds']:.0f} s); skipping", flush=True)
            continue
        print(f"[{name}] starting", flush=True)
        started = time.monotonic()
        try:
            result = stages[name]()
        except (StageError, ValueError, FileNotFoundError) as exc:
            print(f"femo pipeline: stage {name} failed: {exc}", file=sys.stderr)
            return 1
        state[name] = {**result, "seconds": round(time.monotonic() - started, 1)}
        state_path.write_text(json.dumps(state, indent=2) + "\n")
        print(f"[{name}] finished in {state[name]['seconds']:.0f} s", flush=True)
    print("stage times (s): " + ", ".join(f"{n} {state[n]['seconds']:.0f}" for n in STAGES))
    print(f"index page: {state['reports']['index']}")
    return 0
