"""Report notebooks: finding them, reading and checking their ``parameters`` cell, validating overrides.

Notebook conventions (every notebook under ``notebooks/`` follows them; :func:`check_notebook`
enforces the mechanical ones):

* an H1 title and a card (Task / Model / Data / Method / Outputs) in the first markdown cell;
* ONE code cell tagged ``parameters`` holding flat, typed scalars, one per line, always including
  ``data: str = ""``, ``run_dir: str = ""``, ``output_dir: str = "."`` and ``seed: int = 0``;
  defaults are a CPU smoke run (the cached demo set of :mod:`femo.reports.demo`); a trailing
  comment must not contain ``=`` (papermill cannot read such a line);
* the next cell derives values, starting with ``paths = demo.resolve(data=data, run_dir=run_dir)``
  (``from femo.reports import demo``; papermill injects only the overrides after the parameters cell);
* no ``def`` or ``class`` in cells: code lives in ``femo`` (figures in :mod:`femo.reports.figures`);
* a markdown sentence interprets every figure and table;
* the last section is "Sanity checks" (asserts), and the last cell is
  ``figures.write_metrics(output_dir, metrics)``;
* outputs stripped, kernel ``python3``; long loops use :func:`femo.reports.figures.progress`.
"""
from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import femo

#: Parameters every notebook declares.
COMMON_PARAMETERS: tuple[str, ...] = ("data", "run_dir", "output_dir", "seed")
#: Parameters that name an existing file or folder when not empty.
PATH_PARAMETERS: tuple[str, ...] = ("data", "run_dir")
_TYPES: dict[str, type] = {"str": str, "int": int, "float": float, "bool": bool}
_SAFE_TAG = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
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
    text = path.read_text(encoding="utf-8")
    nb = nbformat.reads(text, as_version=4)  # fills in missing cell ids, so those are looked up in the JSON
    problems = []
    no_id = [i for i, cell in enumerate(json.loads(text).get("cells", [])) if "id" not in cell]
    if no_id:
        problems.append(f"cell(s) {no_id} have no id (nbformat 4.5: one per cell)")
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
    if "demo.resolve(data=data, run_dir=run_dir)" not in following:
        problems.append("the cell after the parameters does not call demo.resolve(data=data, run_dir=run_dir)")
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


def check_tag(tag: str) -> str:
    """``tag`` when it is a safe folder-name suffix (letters, digits, ``-``, ``_``, ``.``; not
    starting with a dot; at most 64 characters), else :class:`ReportError` saying what is allowed."""
    if not _SAFE_TAG.fullmatch(tag or ""):
        raise ReportError(f"--tag {tag!r}: use 1-64 letters, digits, '-', '_' or '.', not starting with '.' "
                          "(it becomes part of the report folder names)")
    return tag


def _is_manifest(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as fh:
            header = fh.readline(4096)
    except (OSError, UnicodeDecodeError):
        return False
    return {"clip_id", "path", "label"} <= {c.strip().strip('"') for c in header.split(",")}


def data_problem(path: Path) -> str:
    """Why ``path`` is not report data (a manifest CSV, a feature store, a folder holding
    manifest.csv), or "" when it is one."""
    if path.is_file():
        return "" if path.suffix.lower() == ".csv" and _is_manifest(path) else (
            "not a manifest CSV (needs a header with clip_id, path and label)")
    if (path / "store.json").is_file():
        return ""
    if (path / "manifest.csv").is_file():
        return "" if _is_manifest(path / "manifest.csv") else f"{path / 'manifest.csv'} is not a manifest CSV"
    return "neither a feature store (store.json), a manifest CSV nor a folder holding manifest.csv"


def run_problem(path: Path) -> str:
    """Why ``path`` is not a trained run folder (config.json, or fold_<k>/config.json), or ""."""
    if (path / "config.json").is_file() or any(path.glob("fold_*/config.json")):
        return ""
    inner = sorted(str(p.parent) for p in path.glob("*/config.json"))[:3]
    hint = f"; did you mean {' or '.join(inner)}?" if inner else ""
    return f"not a run folder (no config.json; train one with `femo train STORE --out RUN`){hint}"


def check_paths(params: dict[str, Any]) -> None:
    """Refuse a non-empty ``data``/``run_dir`` that does not exist or is not data / a run, naming it."""
    checks = {"data": data_problem, "run_dir": run_problem}
    for name in PATH_PARAMETERS:
        value = params.get(name)
        if not value:
            continue
        path = Path(value).expanduser()
        if not path.exists():
            raise ReportError(f"{name} path not found: {value}")
        problem = checks[name](path)
        if problem:
            raise ReportError(f"{name}={value}: {problem}")


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
