"""The index page of a batch of reports: one row per executed notebook with its headline metrics.

Each report folder holds ``report.json`` (written by :mod:`femo.reports.execute`) and the
notebook's ``metrics.json``; :func:`write_index` gathers those of one day and tag into
``REPORTS/<YYYY-MM-DD>_<tag>/index.html``.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from femo.reports.figures import read_metrics


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


def collect(reports_dir: Path, *, day: str, tag: str) -> list[Report]:
    """Reports of ``day`` and ``tag`` found on disk (from their ``report.json``), sorted by notebook."""
    out = []
    for info_path in sorted(reports_dir.glob(f"{day}_*_{tag}/report.json")):
        info = json.loads(info_path.read_text())
        folder = info_path.parent
        if folder.name != f"{day}_{info['notebook']}_{tag}":
            continue
        out.append(Report(folder / info["ipynb"], folder, {}, read_metrics(folder),
                          info.get("error", ""), info.get("seconds", 0.0)))
    return out


def write_index(reports_dir: str | Path, *, day: str, tag: str, stages: Mapping[str, float] | None = None) -> Path:
    """Write ``REPORTS/<day>_<tag>/index.html`` linking every report of that day and tag, with the
    planted-truth panel on the synthetic set (:mod:`femo.reports.planted`) and, when given, the
    seconds per pipeline stage (``stages``: name -> seconds)."""
    from femo.reports.planted import panel_html, planted_checks

    reports_dir = Path(reports_dir)
    path = reports_dir / f"{day}_{tag}" / "index.html"
    reports = collect(reports_dir, day=day, tag=tag)
    rows = []
    for rep in reports:
        link = Path("..") / rep.folder.name
        rows.append({"name": rep.name, "error": rep.error, "seconds": rep.seconds, "metrics": rep.metrics,
                     "html": f"{link}/{rep.name}.html", "ipynb": f"{link}/{rep.notebook.name}",
                     "metrics_json": f"{link}/metrics.json"})
    path.parent.mkdir(parents=True, exist_ok=True)
    html = index_html(rows, title=f"femo reports {day} ({tag})", panel=panel_html(planted_checks(reports)),
                      stages=stages)
    path.write_text(html, encoding="utf-8")
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
                            ("randomisation_similarity", "randomisation similarity", "{:.2f}"),
                            ("n_suspect", "suspected label errors", "{:.0f}")):
        value = number(metrics.get(key))
        if value is not None:
            out[label] = fmt.format(value)
            ci = metrics.get(f"{key}_ci")  # [low, high]: subject-clustered 95% interval (training report)
            if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(number(v) is not None for v in ci):
                out[label] += f" (95% CI {fmt.format(ci[0])}-{fmt.format(ci[1])})"
    for warning in metrics.get("warnings", []) if isinstance(metrics.get("warnings"), list) else []:
        out.setdefault("warning", str(warning))
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


def stages_html(stages: Mapping[str, float] | None) -> str:
    """One line with the seconds of each pipeline stage and their total ("" without stages)."""
    if not stages:
        return ""
    parts = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in stages.items())
    return f"<p>Pipeline time: {sum(stages.values()) / 60:.1f} minutes ({parts}).</p>"


def index_html(rows: Iterable[Mapping[str, Any]], *, title: str, panel: str = "",
               stages: Mapping[str, float] | None = None) -> str:
    """An HTML index page: one table row per report with links, status and :func:`headline` metrics.

    Each row holds ``name``, ``error``, ``seconds``, ``metrics`` and relative links ``html``,
    ``ipynb``, ``metrics_json``. panel: an HTML fragment shown above the table (the planted-truth
    panel); stages: pipeline seconds per stage, shown as one line.
    """
    from html import escape

    lines = [f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>",
             f"<style>{_INDEX_CSS}</style></head><body><h1>{escape(title)}</h1>"]
    lines += [part for part in (stages_html(stages), panel) if part]
    lines.append("<h2>Reports</h2>" if panel else "")
    lines.append("<table><tr><th>report</th><th>status</th><th>headline metrics</th><th>files</th></tr>")
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
