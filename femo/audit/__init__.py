"""Analyses on a trained run. Each takes a run's predictions or its model and returns one result.

* **Bias audit** (:func:`audit`, :mod:`femo.audit.fairness`): UAR, WAR and calibration per
  subgroup (fairlearn ``MetricFrame``), subject-clustered bootstrap intervals, permutation tests
  of the gaps with Holm correction, composition of the data by group, and the same gaps per
  modality; :meth:`~femo.audit.report.AuditResult.to_metrics` gives the report's numbers.
  The face pipeline by group (face-found rate, landmark confidence) is :func:`pipeline_audit`.
* **Modality ablation** (:func:`ablate`, :mod:`femo.audit.ablation`): the model on every subset
  of its modalities (the others masked), UAR per subset and exact Shapley contributions, overall
  and per condition slice.
* **Attribution** (:func:`attribute`, :mod:`femo.audit.attribution`, captum): which frames, face regions, geometry
  features and audio bands the predictions rest on, with a model-randomisation sanity check.
* **Label quality** (:func:`audit_labels`, :mod:`femo.audit.labels`): likely label errors from
  out-of-fold probabilities (cleanlab) and annotator agreement where votes exist.

:func:`modality_predictions` (and :func:`masked_predictions`, every subset) gives a run's
predictions with modalities switched off, computed once and cached by content
(:mod:`femo.audit.masked`), for the ablation and the per-modality gaps of the bias audit.
:func:`load_run` loads a run's model and the split it was tested on
(:class:`femo.training.runs.RunFolder` underneath); :mod:`femo.audit.stats` holds the shared
cluster bootstrap, permutation tests and multiple-comparison corrections.

The entry points are loaded on first use (``femo.audit.audit``), so importing this package does
not pull in captum, cleanlab or torch.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

#: Entry point -> module that defines it.
_ENTRY_POINTS: dict[str, str] = {
    "audit": "femo.audit.fairness",
    "ablate": "femo.audit.ablation_result",
    "attribute": "femo.audit.attribution",
    "audit_labels": "femo.audit.labels",
    "pipeline_audit": "femo.audit.pipeline",
    "load_run": "femo.audit.trained",
    "masked_predictions": "femo.audit.masked",
    "modality_predictions": "femo.audit.masked",
}

__all__ = sorted(_ENTRY_POINTS)


def __getattr__(name: str) -> Any:
    if name in _ENTRY_POINTS:
        return getattr(import_module(_ENTRY_POINTS[name]), name)
    raise AttributeError(f"module 'femo.audit' has no attribute {name!r}")
