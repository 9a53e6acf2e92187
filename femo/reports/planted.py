"""The index page's "planted truth" panel: on the synthetic set, does each report find what was planted?

The synthetic generator records what it planted in the manifest sidecar, which extraction copies
into the feature store's ``store.json`` (``extra.generator == "femo.data.synth"``,
``extra.planted_bias = {column, value}`` or None). The panel reads it from the store the reports
ran on (``metrics.json["store"]`` of the ablation or attribution report, else the ``data``
parameter) and checks, each with the measured figure and pass/fail:

1. **bias**: the bias audit (04) flags the planted group and no other attribute (with no bias
   planted: flags nothing); an intersection flagged through the planted group counts as the
   planted one;
2. **modality**: in the ``informative=face`` / ``informative=audio`` slices the label-carrying
   modality gets the largest Shapley share (03);
3. **region**: in mouth-only clips whose face shows their emotion, hiding the mouth from the face
   inputs (crops and landmarks, :mod:`femo.audit.occlusion`) lowers that emotion's logit more than
   hiding any other region (05);
   the integrated-gradients shares of the crops alone are shown next to it, not judged;
4. **randomisation**: the attribution's cascading model-randomisation check passes (05).

On any other dataset :func:`planted_checks` returns None and the panel is absent.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SYNTH_GENERATOR = "femo.data.synth"


@dataclass(frozen=True)
class Check:
    """One row of the panel: what was planted, what was measured, and the verdict (None = the
    report that measures it is missing or failed)."""

    name: str
    planted: str
    measured: str
    passed: bool | None


def _metrics(reports: Sequence[Any], prefix: str) -> dict | None:
    """metrics.json of the first report whose notebook name starts with ``prefix`` (e.g. ``03``)."""
    for rep in reports:
        if rep.name.startswith(prefix) and rep.metrics and not rep.error:
            return rep.metrics
    return None


def synthetic_truth(reports: Sequence[Any]) -> dict | None:
    """``store.json``'s ``extra`` of the store the reports ran on, when it is the synthetic set."""
    from femo.data.store import read_meta

    for rep in reports:
        store = (rep.metrics or {}).get("store") or (rep.parameters or {}).get("data") or _config_data(rep.folder)
        if store and (Path(store) / "store.json").is_file():
            extra = read_meta(store).extra or {}
            return extra if extra.get("generator") == SYNTH_GENERATOR else None
    return None


def _config_data(folder: Path) -> str:
    """The ``data`` parameter recorded in a report folder's ``config.json`` ("" when absent)."""
    import json

    path = Path(folder) / "config.json"
    return json.loads(path.read_text()).get("parameters", {}).get("data", "") if path.is_file() else ""


def bias_check(bias: Mapping[str, Any] | None, metrics: Mapping[str, Any] | None) -> Check:
    """Planted group flagged by the bias audit, and nothing else."""
    planted = f"{bias['column']}={bias['value']}" if bias else "no bias planted"
    if metrics is None:
        return Check("bias audit flags the planted group only", planted, "bias audit report missing", None)
    flagged = list(metrics.get("flagged") or [])

    def is_planted(row: Mapping[str, Any]) -> bool:
        if not bias:
            return False
        columns, values = str(row["attribute"]).split("*"), str(row["group"]).split(" / ")
        return bias["column"] in columns and dict(zip(columns, values)).get(bias["column"]) == bias["value"]

    hits = [r for r in flagged if is_planted(r)]
    others = [r for r in flagged if not is_planted(r)]
    parts = [f"{r['attribute']}='{r['group']}' (UAR gap {float(r['gap']):.2f}, adjusted p {float(r['p_value']):.3g})"
             for r in hits + others]
    measured = "flagged: " + "; ".join(parts) if parts else "nothing flagged"
    passed = (bool(hits) if bias else True) and not others
    return Check("bias audit flags the planted group only", planted, measured, passed)


def modality_checks(metrics: Mapping[str, Any] | None) -> list[Check]:
    """Label-carrying modality first in its ``informative=<modality>`` slice."""
    name = "label-carrying modality has the largest Shapley share"
    if metrics is None:
        return [Check(name, "informative=face / audio", "modality ablation report missing", None)]
    out = []
    for row in metrics.get("planted") or []:
        expected = " or ".join(row["expected"])
        if not row["judged"]:
            measured = "slice too small to judge"
        else:
            phi = row.get("top_shapley")
            measured = f"{row['top']} first" + (f" ({100 * phi:+.1f} UAR points)" if phi is not None else "")
        out.append(Check(f"{name} ({row['slice']})", f"{expected} carries the label", measured, bool(row["passed"])))
    return out or [Check(name, "informative=face / audio", "no planted slices in the report", None)]


def region_check(metrics: Mapping[str, Any] | None) -> Check:
    """Mouth first in mouth-only clips."""
    name = "mouth gets the largest attribution in mouth-only clips"
    planted = "expression drawn only in the mouth"
    if metrics is None or not metrics.get("planted_region"):
        return Check(name, planted, "attribution report missing or without face maps", None)
    row = metrics["planted_region"]
    if not row["judged"]:
        return Check(name, planted, f"too few mouth-only clips explained ({int(row['n_clips'])})", False)
    values = row.get("values") or row.get("shares") or {}
    top_value = values.get(row["top"])
    if row["top"] == "mouth":  # the runner-up says by how much
        rest = {k: v for k, v in values.items() if k not in ("mouth", "other") and v is not None}
        second = max(rest, key=rest.get) if rest else None
        versus = f"next {second} {rest[second]:.2f}" if second else "no other region"
    else:
        versus = f"mouth {values.get('mouth', float('nan')):.2f}"
    measured = f"{row['top']} first ({top_value:.2f}; {versus}, {int(row['n_clips'])} clips)"
    if row.get("measure"):
        measured += f"; measure: {row['measure']}"
    pixels = metrics.get("planted_region_pixels")
    if pixels and pixels.get("judged"):  # the IG shares of the crops alone, shown, not judged
        measured += f"; the crops' integrated-gradients shares alone put the {pixels['top']} first"
    return Check(name, planted, measured, bool(row["passed"]))


def randomisation_check(metrics: Mapping[str, Any] | None) -> Check:
    """The attribution report's cascading model-randomisation check."""
    name = "face maps differ from a randomised model's"
    planted = "a trained model"
    rand = (metrics or {}).get("randomisation")
    if not rand:
        return Check(name, planted, "attribution report missing", None)
    final = rand.get("spearman_final")
    measured = (f"rank correlation {final:.2f} with every layer random (pass below {rand['threshold']:.2f})"
                if final is not None else "not measured")
    return Check(name, planted, measured, bool(rand["passed"]))


def planted_checks(reports: Sequence[Any]) -> list[Check] | None:
    """Every check of the module docstring, or None when the reports did not run on the synthetic set."""
    truth = synthetic_truth(reports)
    if truth is None:
        return None
    ablation, audit, attribution = (_metrics(reports, p) for p in ("03", "04", "05"))
    return [bias_check(truth.get("planted_bias"), audit), *modality_checks(ablation), region_check(attribution),
            randomisation_check(attribution)]


def panel_html(checks: Sequence[Check] | None) -> str:
    """The panel as an HTML fragment ("" when there is nothing planted to check)."""
    from html import escape

    if not checks:
        return ""
    word = {True: "<span class='ok'>pass</span>", False: "<span class='failed'>fail</span>",
            None: "<span class='failed'>not measured</span>"}
    n_pass = sum(c.passed is True for c in checks)
    lines = ["<h2>Planted truth</h2>",
             f"<p>The synthetic set plants known effects; {n_pass} of {len(checks)} are recovered by the reports.</p>",
             "<table><tr><th>check</th><th>planted</th><th>measured</th><th>result</th></tr>"]
    lines += [f"<tr><td>{escape(c.name)}</td><td>{escape(c.planted)}</td><td>{escape(c.measured)}</td>"
              f"<td>{word[c.passed]}</td></tr>" for c in checks]
    lines.append("</table>")
    return "\n".join(lines)
