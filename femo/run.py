"""Run the report notebooks with papermill and write HTML reports and an index page.

This is the only femo module that imports papermill. ``femo report`` and ``femo pipeline`` call
:func:`run_reports`.

Notebook conventions (every notebook under ``notebooks/`` follows them; :func:`check_notebook`
enforces the mechanical ones):

* an H1 title and a card (Task / Model / Data / Method / Outputs) in the first markdown cell;
* ONE code cell tagged ``parameters`` holding flat, typed scalars, one per line, always including
  ``data: str = ""``, ``run_dir: str = ""``, ``output_dir: str = "."`` and ``seed: int = 0``;
  defaults are a CPU smoke run (the cached demo set of :mod:`femo.demo`); a trailing comment must
  not contain ``=`` (papermill cannot read such a line);
* the next cell derives values, starting with ``paths = femo.demo.resolve(data=data, run_dir=run_dir)``
  (papermill injects only the overrides after the parameters cell);
* no ``def`` or ``class`` in cells: code lives in ``femo`` (figures in :mod:`femo.reporting`);
* a markdown sentence interprets every figure and table;
* the last section is "Sanity checks" (asserts), and the last cell is
  ``femo.reporting.write_metrics(output_dir, metrics)``;
* outputs stripped, kernel ``python3``; long loops use :func:`femo.reporting.progress`.

Each run goes to ``REPORTS/<YYYY-MM-DD>_<notebook-stem>_<tag>/`` holding ``<stem>.ipynb`` (executed),
``<stem>.html`` (no code cells), ``config.json``, ``metrics.json``, ``report.json`` and
``figures/``; the index page is ``REPORTS/<YYYY-MM-DD>_<tag>/index.html``. A same-day rerun with
the same tag gets the tag ``<tag>-2`` (``-3``, ...) unless ``overwrite`` is set.
"""
from __future__ import annotations

import ast
import datetime as dt
import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterable, Mapping
from typing import Any

import femo
from femo import reporting

#: Parameters every notebook declares.
COMMON_PARAMETERS: tuple[str, ...] = ("data", "run_dir", "output_dir", "seed")
#: Parameters that name an existing file or folder when not empty.
PATH_PARAMETERS: tuple[str, ...] = ("data", "run_dir")
_TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


class ReportError(ValueError):
    """Bad report input or a failed notebook; the message names the notebook and the problem."""


@dataclass(frozen=True)
class Parameter:
    """One entry of a notebook's ``parameters`` cell: name, type name and default (Python value)."""

    name: str
    type: str
    default: Any


@dataclass
class Report:
    """Outcome of one executed notebook."""

    notebook: Path
    folder: Path
    parameters: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    seconds: float = 0.0

    @property
    def name(self) -> str:
        """Notebook stem, e.g. ``02_train``."""
        return self.notebook.stem


def default_notebooks_dir() -> Path:
    """``./notebooks`` when it exists, else the ``notebooks/`` folder beside the femo package."""
    here = Path.cwd() / "notebooks"
    return here if here.is_dir() else Path(femo.__file__).resolve().parents[1] / "notebooks"


def find_notebooks(notebooks_dir: str | Path, only: list[str] | None = None) -> list[Path]:
    """Numbered notebooks in ``notebooks_dir`` (sorted); ``only`` selects by stem or its prefix (``02``)."""
    folder = Path(notebooks_dir)
    if not folder.is_dir():
        raise ReportError(f"{folder}: notebooks folder not found")
    found = sorted(p for p in folder.glob("*.ipynb") if p.stem[:2].isdigit())
    if not only:
        return found
    chosen = []
    for name in only:
        matches = [p for p in found if p.stem == name or p.stem == Path(name).stem or p.stem.startswith(name + "_")]
        if not matches:
            raise ReportError(f"no notebook {name!r} in {folder}; available: {[p.stem for p in found]}")
        chosen += [p for p in matches if p not in chosen]
    return sorted(chosen)


def notebook_parameters(notebook: str | Path) -> dict[str, Parameter]:
    """The typed parameters declared in the notebook's ``parameters`` cell."""
    import papermill

    path = Path(notebook)
    if not path.is_file():
        raise ReportError(f"{path}: notebook not found")
    out = {}
    for name, info in papermill.inspect_notebook(str(path)).items():
        try:
            default = ast.literal_eval(info["default"])
        except (ValueError, SyntaxError):
            default = info["default"]
        type_name = info["inferred_type_name"]
        if type_name not in _TYPES:
            type_name = type(default).__name__
        out[name] = Parameter(name, type_name, default)
    if not out:
        raise ReportError(f"{path}: no cell tagged 'parameters' (or it declares no parameters)")
    return out


def check_notebook(notebook: str | Path) -> list[str]:
    """Problems with the mechanical conventions (see the module docstring); [] when it follows them."""
    import nbformat

    path = Path(notebook)
    nb = nbformat.read(path, as_version=4)
    problems = []
    if nb.metadata.get("kernelspec", {}).get("name") != "python3":
        problems.append("kernel is not python3")
    code = [c for c in nb.cells if c.cell_type == "code"]
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    if len(tagged) != 1:
        return problems + [f"{len(tagged)} cells tagged 'parameters' (need exactly one)"]
    statements = ast.parse(tagged[0].source).body
    declared = set(papermill_names(path))
    for stmt in statements:
        ok = (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
              and isinstance(stmt.value, ast.Constant) and stmt.target.id in declared)
        if not ok:
            problems.append(f"parameters cell line {stmt.lineno}: not a typed scalar papermill can read "
                            "(write `name: type = literal`; no '=' inside comments)")
    problems += [f"parameter {n!r} missing" for n in COMMON_PARAMETERS if n not in declared]
    following = code[code.index(tagged[0]) + 1].source if code[-1] is not tagged[0] else ""
    if "femo.demo.resolve(data=data, run_dir=run_dir)" not in following:
        problems.append("the cell after the parameters does not call femo.demo.resolve(data=data, run_dir=run_dir)")
    for i, cell in enumerate(code):
        if cell.get("outputs") or cell.get("execution_count"):
            problems.append(f"code cell {i} has outputs (strip them)")
        if any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))
               for n in ast.walk(ast.parse(cell.source))):
            problems.append(f"code cell {i} defines a function or class (move it into femo)")
    if not nb.cells or nb.cells[0].cell_type != "markdown" or not nb.cells[0].source.startswith("# "):
        problems.append("first cell is not a markdown H1 title")
    if not any(c.cell_type == "markdown" and "## Sanity checks" in c.source for c in nb.cells):
        problems.append("no '## Sanity checks' section")
    if "write_metrics(output_dir, metrics)" not in code[-1].source:
        problems.append("last cell does not call write_metrics(output_dir, metrics)")
    return problems


def papermill_names(notebook: str | Path) -> list[str]:
    """Parameter names papermill reads from the notebook's ``parameters`` cell."""
    import papermill

    return list(papermill.inspect_notebook(str(notebook)))


def coerce(notebook: Path, param: Parameter, value: Any) -> Any:
    """``value`` (a CLI string or a Python value) as ``param``'s type; ReportError when it does not fit."""
    kind = _TYPES.get(param.type)
    if kind is None:
        return value
    problem = f"{notebook.name}: parameter {param.name!r} expects {param.type}, got {value!r}"
    if isinstance(value, str) and kind is not str:
        text = value.strip().lower()
        if kind is bool:
            if text not in _TRUE | _FALSE:
                raise ReportError(problem + " (use true/false)")
            return text in _TRUE
        try:
            return kind(value)
        except ValueError:
            raise ReportError(problem) from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ReportError(problem)
    return value


def parse_assignments(pairs: list[str] | None) -> dict[str, str]:
    """``["epochs=3", "fusion=late"]`` -> ``{"epochs": "3", "fusion": "late"}``."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ReportError(f"-p {pair!r}: expected key=value")
        out[key.strip()] = value
    return out


def check_paths(params: dict[str, Any]) -> None:
    """Refuse a non-empty ``data``/``run_dir`` that does not exist, naming it."""
    for name in PATH_PARAMETERS:
        value = params.get(name)
        if value and not Path(value).expanduser().exists():
            raise ReportError(f"{name} path not found: {value}")


def resolve_parameters(notebook: Path, overrides: dict[str, Any], *, strict: bool = True) -> dict[str, Any]:
    """Validate ``overrides`` against the notebook; returns those it declares, typed.

    With ``strict`` an override the notebook does not declare is an error listing the known names.
    """
    known = notebook_parameters(notebook)
    unknown = sorted(set(overrides) - set(known))
    if strict and unknown:
        raise ReportError(f"{notebook.name}: unknown parameter(s) {unknown}; known: {sorted(known)}")
    typed = {k: coerce(notebook, known[k], v) for k, v in overrides.items() if k in known}
    check_paths(typed)
    return typed


def plan(notebooks: list[Path], overrides: dict[str, Any]) -> dict[Path, dict[str, Any]]:
    """Validate ``overrides`` for all notebooks before running any.

    An override applies to the notebooks that declare it; one that no notebook declares is an error.
    """
    if "output_dir" in overrides:
        raise ReportError("output_dir is set by femo report (each notebook writes into its report folder)")
    declared = {nb: notebook_parameters(nb) for nb in notebooks}
    names = set().union(*(set(p) for p in declared.values())) if declared else set()
    unknown = sorted(set(overrides) - names)
    if unknown:
        known = {nb.stem: sorted(p) for nb, p in declared.items()}
        raise ReportError(f"unknown parameter(s) {unknown}; known per notebook: {known}")
    return {nb: resolve_parameters(nb, overrides, strict=False) for nb in notebooks}


def free_tag(reports_dir: Path, day: str, stems: list[str], tag: str) -> str:
    """``tag``, or ``tag-2``, ``tag-3``... so that no report or index folder of ``day`` is reused."""
    candidate, n = tag, 1
    while any((reports_dir / f"{day}_{s}_{candidate}").exists() for s in stems) or (
            reports_dir / f"{day}_{candidate}").exists():
        n += 1
        candidate = f"{tag}-{n}"
    return candidate


def execute(notebook: Path, folder: Path, parameters: dict[str, Any], *, log_progress: bool = True) -> Report:
    """Run one notebook into ``folder`` (its working directory and ``output_dir``); export HTML.

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
    reporting.write_config(folder, full, notebook=notebook.name)
    executed = folder / notebook.name
    started = time.monotonic()
    report = Report(notebook, folder, full)
    try:
        papermill.execute_notebook(
            str(notebook), str(executed), parameters=params, kernel_name="python3", cwd=str(folder),
            progress_bar=False, stderr_file=sys.stderr if log_progress else None)
    except PapermillExecutionError as exc:
        report.error = f"{exc.ename}: {exc.evalue}"
        raise ReportError(f"{notebook} failed in cell [{exc.exec_count}]: {exc.ename}: {exc.evalue}\n"
                          f"  executed notebook: {executed}") from None
    except Exception as exc:  # the kernel died, a cell timed out, the kernel could not start...
        report.error = f"{type(exc).__name__}: {exc}"
        raise ReportError(f"{notebook} did not run to the end: {report.error}\n"
                          f"  executed notebook: {executed}") from exc
    finally:
        report.seconds = time.monotonic() - started
        if executed.is_file():
            export_html(executed, folder / f"{notebook.stem}.html")
        _write_report_json(report)
    report.metrics = reporting.read_metrics(folder)
    if not report.metrics:
        report.error = "no metrics.json written"
        _write_report_json(report)
        raise ReportError(f"{executed}: ran but wrote no metrics.json (last cell must call "
                          "femo.reporting.write_metrics(output_dir, metrics))")
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


def run_reports(*, notebooks_dir: str | Path | None = None, reports_dir: str | Path = "reports",
                data: str = "", run_dir: str = "", only: list[str] | None = None, tag: str = "demo",
                overrides: dict[str, Any] | None = None, overwrite: bool = False, day: str | None = None,
                log=print) -> tuple[list[Report], Path]:
    """Validate, then execute the selected notebooks; returns the reports and the index page path.

    A failing notebook is recorded (``Report.error``) and the others still run; parameters are
    checked for every notebook before the first one starts.
    """
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
    for nb in notebooks:
        folder = reports_dir / f"{day}_{nb.stem}_{tag}"
        log(f"running {nb.name} -> {folder}")
        try:
            reports.append(execute(nb, folder, plans[nb]))
        except ReportError as exc:
            log(f"FAILED {exc}")
            reports.append(Report(nb, folder, plans[nb], error=str(exc)))
    index = write_index(reports_dir, day=day, tag=tag)
    return reports, index


def collect(reports_dir: Path, *, day: str, tag: str) -> list[Report]:
    """Reports of ``day`` and ``tag`` found on disk (from their ``report.json``), sorted by notebook."""
    out = []
    for info_path in sorted(reports_dir.glob(f"{day}_*_{tag}/report.json")):
        info = json.loads(info_path.read_text())
        folder = info_path.parent
        if folder.name != f"{day}_{info['notebook']}_{tag}":
            continue
        out.append(Report(folder / info["ipynb"], folder, {}, reporting.read_metrics(folder),
                          info.get("error", ""), info.get("seconds", 0.0)))
    return out


def write_index(reports_dir: str | Path, *, day: str, tag: str) -> Path:
    """Write ``REPORTS/<day>_<tag>/index.html`` linking every report of that day and tag."""
    reports_dir = Path(reports_dir)
    path = reports_dir / f"{day}_{tag}" / "index.html"
    rows = []
    for rep in collect(reports_dir, day=day, tag=tag):
        link = Path("..") / rep.folder.name
        rows.append({"name": rep.name, "error": rep.error, "seconds": rep.seconds, "metrics": rep.metrics,
                     "html": f"{link}/{rep.name}.html", "ipynb": f"{link}/{rep.notebook.name}",
                     "metrics_json": f"{link}/metrics.json"})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(index_html(rows, title=f"femo reports {day} ({tag})"), encoding="utf-8")
    return path


def headline(metrics: Mapping[str, Any]) -> dict[str, str]:
    """The few numbers an index page shows for one report's ``metrics.json`` (label -> text)."""
    out: dict[str, str] = {}

    def number(value: Any) -> float | None:
        if isinstance(value, Mapping):
            value = value.get("mean")
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    for key, label, fmt in (("uar", "UAR", "{:.3f}"), ("war", "WAR", "{:.3f}"),
                            ("macro_f1", "macro-F1", "{:.3f}"), ("n_clips", "clips", "{:.0f}"),
                            ("n_test", "test clips", "{:.0f}"), ("n_excluded", "excluded", "{:.0f}"),
                            ("randomisation_similarity", "randomisation similarity", "{:.2f}")):
        value = number(metrics.get(key))
        if value is not None:
            out[label] = fmt.format(value)
    if isinstance(metrics.get("flagged"), list):
        out["flagged disparities"] = str(len(metrics["flagged"]))
    shapley = metrics.get("shapley_uar")
    if isinstance(shapley, Mapping) and shapley:
        scores = {k: number(v) for k, v in shapley.items() if number(v) is not None}
        if scores:
            top = max(scores, key=scores.get)
            out["top modality"] = f"{top} ({scores[top]:+.3f} UAR)"
    share = metrics.get("region_share")
    if isinstance(share, Mapping):
        overall = share.get("overall", share)
        scores = {k: number(v) for k, v in overall.items() if number(v) is not None}
        if scores:
            top = max(scores, key=scores.get)
            out["top face region"] = f"{top} ({scores[top]:.0%})"
    return out


_INDEX_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #ddd;padding:.5em;text-align:left;
vertical-align:top}th{background:#f3f3f3}.failed{color:#b00020;font-weight:bold}.ok{color:#1b7837}
dl{margin:0;display:grid;grid-template-columns:max-content auto;gap:.1em 1em}dt{color:#555}dd{margin:0}"""


def index_html(rows: Iterable[Mapping[str, Any]], *, title: str) -> str:
    """An HTML index page: one table row per report with links, status and :func:`headline` metrics.

    Each row holds ``name``, ``error``, ``seconds``, ``metrics`` and relative links ``html``,
    ``ipynb``, ``metrics_json``.
    """
    from html import escape

    lines = [f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>",
             f"<style>{_INDEX_CSS}</style></head><body><h1>{escape(title)}</h1>",
             "<table><tr><th>report</th><th>status</th><th>headline metrics</th><th>files</th></tr>"]
    for row in rows:
        status = (f"<span class='failed'>failed</span><br><small>{escape(row['error'])}</small>"
                  if row["error"] else f"<span class='ok'>ok</span> ({row['seconds']:.0f} s)")
        items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in headline(row["metrics"]).items())
        files = f"<a href='{escape(row['ipynb'])}'>notebook</a>"
        if row["metrics"]:
            files += f" &middot; <a href='{escape(row['metrics_json'])}'>metrics.json</a>"
        lines.append(f"<tr><td><a href='{escape(row['html'])}'>{escape(row['name'])}</a></td><td>{status}</td>"
                     f"<td><dl>{items}</dl></td><td>{files}</td></tr>")
    lines.append("</table></body></html>")
    return "\n".join(lines) + "\n"
