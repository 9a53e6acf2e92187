"""`femo report`: execute the report notebooks with papermill into dated report folders."""
from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    """Add the ``report`` sub-command."""
    p = subparsers.add_parser(
        "report", help="run the report notebooks (papermill) and write HTML reports + an index page",
        description="Execute notebooks/NN_*.ipynb into REPORTS/<date>_<notebook>_<tag>/ with an HTML export "
                    "(no code), config.json and metrics.json, and write REPORTS/<date>_<tag>/index.html. "
                    "Without --data/--run the notebooks use the cached synthetic demo set.")
    p.add_argument("--data", default="", help="manifest CSV, feature store, or folder holding manifest.csv")
    p.add_argument("--run", default="", dest="run_dir", help="trained run folder (femo train --out RUN)")
    p.add_argument("--only", nargs="+", metavar="NAME", help="notebook stems or numbers, e.g. 01 02_train")
    p.add_argument("--tag", default="demo",
                   help="suffix of the report folders: letters, digits, '-', '_', '.', not starting with '.' "
                        "(default: demo)")
    p.add_argument("-p", "--param", action="append", metavar="KEY=VALUE", default=[],
                   help="notebook parameter override (repeatable); checked against each notebook's parameters cell")
    p.add_argument("--reports-dir", default="reports", help="where report folders go (default: reports)")
    p.add_argument("--notebooks-dir", default=None, help="folder of the notebooks (default: ./notebooks)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace today's reports with the same tag instead of using a new suffix")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Validate the parameters, run the notebooks and print the index page path."""
    from femo.reports.execute import run_reports
    from femo.reports.notebooks import ReportError, parse_assignments

    try:
        reports, index = run_reports(
            notebooks_dir=args.notebooks_dir, reports_dir=args.reports_dir, data=args.data,
            run_dir=args.run_dir, only=args.only, tag=args.tag, overrides=parse_assignments(args.param),
            overwrite=args.overwrite)
    except ReportError as exc:
        print(f"femo report: {exc}", file=sys.stderr)
        return 2
    return summarize(reports, index)


def summarize(reports, index) -> int:
    """Print one line per report and the index path; 1 when any notebook failed."""
    failed = [r for r in reports if r.error]
    for rep in reports:
        status = "FAILED" if rep.error else f"ok ({rep.seconds:.0f} s)"
        print(f"{rep.name:24s} {status:10s} {rep.folder / (rep.name + '.html')}")
    for rep in failed:
        print(f"error in {rep.name}: {rep.error}", file=sys.stderr)
    print(f"index: {index}")
    return 1 if failed else 0
