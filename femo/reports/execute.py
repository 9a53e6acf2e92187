"""Run the report notebooks with papermill into dated report folders, then write the index page.

This package is the only part of femo that imports papermill. ``femo report`` and ``femo pipeline``
call :func:`run_reports`; the notebook conventions are checked by :mod:`femo.reports.notebooks`.

Each run goes to ``REPORTS/<YYYY-MM-DD>_<notebook-stem>_<tag>/`` holding ``<stem>.ipynb`` (executed),
``<stem>.html`` (no code cells), ``config.json``, ``metrics.json``, ``report.json`` and
``figures/``; the index page is ``REPORTS/<YYYY-MM-DD>_<tag>/index.html``. A same-day rerun with
the same tag gets the tag ``<tag>-2`` (``-3``, ...) unless ``overwrite`` is set.
"""
from __future__ import annotations

import datetime as dt
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from femo.reports import figures
from femo.reports.index import Report, write_index
from femo.reports.notebooks import (ReportError, check_tag, default_notebooks_dir, find_notebooks, notebook_parameters,
                                    plan)
from femo.reports.privacy import scrub_report
from femo.reports.quiet import WarningFilter, quiet_kernel_manager, without_library_warnings


def free_tag(reports_dir: Path, day: str, stems: list[str], tag: str) -> str:
    """``tag``, or ``tag-2``, ``tag-3``... so that no report or index folder of ``day`` is reused."""
    candidate, n = tag, 1
    while any((reports_dir / f"{day}_{s}_{candidate}").exists() for s in stems) or (
            reports_dir / f"{day}_{candidate}").exists():
        n += 1
        candidate = f"{tag}-{n}"
    return candidate


def execute(notebook: Path, folder: Path, parameters: dict[str, Any], *, log_progress: bool = True,
            privacy: str = "") -> Report:
    """Run one notebook into ``folder`` (its working directory and ``output_dir``); export HTML.

    privacy: ``auto | none | blur | landmarks`` (default: the notebook's ``privacy`` parameter, else
    ``auto``); unless it resolves to ``none``, the saved notebook, HTML, config.json and metrics.json
    are scrubbed of absolute paths and clip ids (:mod:`femo.reports.privacy`).

    Raises :class:`ReportError` naming the executed notebook, the failing cell's error name and
    value when a cell fails, or when the notebook writes no ``metrics.json``.
    """
    import time

    import papermill
    from papermill.exceptions import PapermillExecutionError

    folder.mkdir(parents=True, exist_ok=True)
    params = {**parameters, "output_dir": str(folder.resolve())}
    declared = notebook_parameters(notebook)
    full = {name: params.get(name, p.default) for name, p in declared.items()}
    figures.write_config(folder, full, notebook=notebook.name)
    executed = folder / notebook.name
    started = time.monotonic()
    report = Report(notebook, folder, full)
    stderr = WarningFilter(sys.stderr) if log_progress else None  # progress yes, warnings no
    try:
        papermill.execute_notebook(
            str(notebook), str(executed), parameters=params, kernel_name="python3", cwd=str(folder),
            progress_bar=False, stderr_file=stderr, kernel_manager_class=quiet_kernel_manager())
    except PapermillExecutionError as exc:
        report.error = f"{exc.ename}: {exc.evalue}"
        raise ReportError(f"{notebook} failed in cell [{exc.exec_count}]: {exc.ename}: {exc.evalue}\n"
                          f"  executed notebook: {executed}") from None
    except Exception as exc:  # the kernel died, a cell timed out, the kernel could not start...
        report.error = f"{type(exc).__name__}: {exc}"
        raise ReportError(f"{notebook} did not run to the end: {report.error}\n"
                          f"  executed notebook: {executed}") from exc
    finally:
        if stderr is not None:
            stderr.flush()
        report.seconds = time.monotonic() - started
        if executed.is_file():
            export_html(executed, folder / f"{notebook.stem}.html")
        _write_report_json(report)
        scrub_report(folder, full, privacy=privacy or str(full.get("privacy", "auto")))
    report.metrics = figures.read_metrics(folder)
    if not report.metrics:
        report.error = "no metrics.json written"
        _write_report_json(report)
        raise ReportError(f"{executed}: ran but wrote no metrics.json (last cell must call "
                          "femo.reports.figures.write_metrics(output_dir, metrics))")
    return report


def export_html(executed: Path, html: Path) -> Path:
    """HTML export of an executed notebook without code cells, prompts or stderr streams."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(executed, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.name == "stderr")]
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb)
    html.write_text(body, encoding="utf-8")
    return html


def _write_report_json(report: Report) -> None:
    info = {"notebook": report.name, "error": report.error, "seconds": round(report.seconds, 1),
            "html": f"{report.name}.html", "ipynb": report.notebook.name}
    (report.folder / "report.json").write_text(json.dumps(info, indent=2) + "\n")


def _trained_run(path: Path) -> str:
    """``path`` as text when it holds a trained run (single or k-fold), else ""."""
    from femo.training.runs import RunFolder

    folder = RunFolder(path)
    return str(path.resolve()) if (path / "config.json").is_file() or folder.is_kfold else ""


@without_library_warnings
def run_reports(*, notebooks_dir: str | Path | None = None, reports_dir: str | Path = "reports",
                data: str = "", run_dir: str = "", only: list[str] | None = None, tag: str = "demo",
                overrides: dict[str, Any] | None = None, overwrite: bool = False, day: str | None = None,
                log=print) -> tuple[list[Report], Path]:
    """Validate, then execute the selected notebooks; returns the reports and the index page path.

    A failing notebook is recorded (``Report.error``) and the others still run; parameters are
    checked for every notebook before the first one starts.
    """
    check_tag(tag)
    notebooks = find_notebooks(notebooks_dir or default_notebooks_dir(), only)
    if not notebooks:
        raise ReportError(f"no numbered notebooks in {notebooks_dir or default_notebooks_dir()}")
    overrides = dict(overrides or {})
    for name, value in (("data", data), ("run_dir", run_dir)):
        if value:
            overrides[name] = str(Path(value).expanduser().resolve())
    plans = plan(notebooks, overrides)
    reports_dir = Path(reports_dir)
    day = day or dt.date.today().isoformat()
    stems = [nb.stem for nb in notebooks]
    if overwrite:
        for stem in stems:
            shutil.rmtree(reports_dir / f"{day}_{stem}_{tag}", ignore_errors=True)
    else:
        tag = free_tag(reports_dir, day, stems, tag)
    reports = []
    trained_here = ""  # without run_dir, the run the training notebook (02) made goes to the later ones
    for nb in notebooks:
        folder = reports_dir / f"{day}_{nb.stem}_{tag}"
        params = plans[nb]
        if trained_here and "run_dir" in notebook_parameters(nb):
            params = {**params, "run_dir": trained_here}
        log(f"running {nb.name} -> {folder}")
        try:
            reports.append(execute(nb, folder, params, privacy=str(overrides.get("privacy", ""))))
        except ReportError as exc:
            log(f"FAILED {exc}")
            reports.append(Report(nb, folder, params, error=str(exc)))
        if not run_dir and nb.stem.startswith("02") and not reports[-1].error:
            trained_here = _trained_run(folder / "run")
    index = write_index(reports_dir, day=day, tag=tag)
    return reports, index
