"""Figure of the face-pipeline audit: per-group face-found rate (or detector score) with intervals,
drawn with the bias audit's forest plot (:func:`femo.audit.fairness_plots.forest_plot`)."""
from __future__ import annotations

from femo.audit.fairness_plots import forest_plot
from femo.audit.pipeline import PipelineAudit

__all__ = ["pipeline_plot"]

#: Axis label of each measure.
LABELS = {"face_found_rate": "share of sampled frames with a face", "face_score": "face detector score"}


def pipeline_plot(result: PipelineAudit, measure: str = "face_found_rate", *, overall: float | None = None):
    """One row per (attribute, group): the group mean of ``measure`` (dot) and its interval (line);
    hollow grey = not ranked (too few subjects, or the "unknown" group of a face-derived column)."""
    if measure not in result.measures:
        raise ValueError(f"pipeline_plot: measure {measure!r} not audited; audited: {list(result.measures)}")
    rows = result.groups[result.groups["measure"] == measure].reset_index(drop=True)
    table = rows.rename(columns={"mean": "uar", "low": "uar_low", "high": "uar_high"})
    fig = forest_plot(table, overall=overall, title=f"{measure} per group")
    fig.axes[0].set_xlabel(f"{LABELS.get(measure, measure)} (group mean with interval)")
    return fig
