"""Time `make report` (``femo pipeline``) from nothing, stage by stage, and print what the index page
found: the row of the README's "Two commands" table and the planted-truth checks.

Protocol: a fresh work folder and reports folder (nothing cached), the pipeline's defaults (392
synthetic clips with a planted skin_tone=dark bias, all five folds, every report), run ``--repeats``
times; the time per stage is the median over repeats with the min-max range. The second and later
repeats of the same folder would reuse cached stages, so every repeat gets its own folder.

    python benchmarks/report_time.py --out /tmp/femo_report_time          # one run
    python benchmarks/report_time.py --out /tmp/femo_report_time --repeats 3 --clips 392
    python benchmarks/report_time.py --out /tmp/femo_report_time --rerun   # and a second `make report`
    python benchmarks/report_time.py --out /tmp/femo_report_time_s1 --seed 1   # other subjects and clips

Besides wall-clock seconds it records the CPU seconds of the run (this process and its finished
workers) and the 1-minute load average before and after, because on a shared machine the wall
clock measures the neighbours too.

Writes ``OUT/report_time.json`` (stage seconds per repeat, CPU seconds, load averages, the planted
checks of the last run).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its children that have finished."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def one_run(folder: Path, clips: int | None, seed: int | None = None) -> dict:
    """Run the pipeline into ``folder``; returns the stage seconds and the planted checks."""
    from femo import cli
    from femo.reports.index import collect
    from femo.reports.planted import planted_checks

    argv = ["pipeline", "--workdir", str(folder / "work"), "--reports-dir", str(folder / "reports"), "--tag", "bench"]
    load_before, cpu_before, started = os.getloadavg()[0], _cpu_seconds(), time.monotonic()
    rc = cli.main(argv + (["--clips", str(clips)] if clips else []) + (["--seed", str(seed)] if seed is not None else []))
    wall, cpu = time.monotonic() - started, _cpu_seconds() - cpu_before
    state = json.loads((folder / "work" / "stages.json").read_text())
    index = Path(state["reports"]["index"])
    day, tag = index.parent.name[:10], index.parent.name[11:]
    checks = planted_checks(collect(folder / "reports", day=day, tag=tag)) or []
    return {"rc": rc, "wall_seconds": wall, "cpu_seconds": cpu, "load_before": load_before,
            "load_after": os.getloadavg()[0], "stages": {k: v["seconds"] for k, v in state.items()},
            "planted": [{"check": c.name, "measured": c.measured, "passed": c.passed} for c in checks]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the runs and report_time.json")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--clips", type=int, default=None, help="synthetic clips (default: the pipeline's)")
    parser.add_argument("--seed", type=int, default=None, help="synthetic data seed (default: the pipeline's)")
    parser.add_argument("--rerun", action="store_true",
                        help="then run the pipeline once more in the last folder: the cached stages are "
                             "skipped and only the reports rerun (what a second `make report` costs)")
    args = parser.parse_args()
    runs = [one_run(args.out / f"run{i + 1}", args.clips, args.seed) for i in range(args.repeats)]
    rerun = one_run(args.out / f"run{args.repeats}", args.clips, args.seed) if args.rerun else None
    stages = list(runs[0]["stages"])
    print("| stage | median s | range s |\n|---|---|---|")
    for name in stages + ["total"]:
        values = [sum(r["stages"].values()) if name == "total" else r["stages"][name] for r in runs]
        print(f"| {name} | {statistics.median(values):.0f} | {min(values):.0f}-{max(values):.0f} |")
    for r in runs:
        print(f"wall {r['wall_seconds']:.0f} s, CPU {r['cpu_seconds']:.0f} s, "
              f"load average {r['load_before']:.1f} -> {r['load_after']:.1f}")
    if rerun:
        print(f"rerun in the same folder (cached stages skipped): wall {rerun['wall_seconds']:.0f} s, "
              f"CPU {rerun['cpu_seconds']:.0f} s, load average {rerun['load_before']:.1f} -> {rerun['load_after']:.1f}")
    for check in runs[-1]["planted"]:
        print(f"- {check['check']}: {check['measured']} -> {check['passed']}")
    out = {"machine": platform.platform(), "processor": platform.processor(), "runs": runs, "rerun": rerun}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report_time.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
