"""Analyses on a trained run: bias audit (:mod:`femo.audit.fairness`), the statistics it shares
with the other audits (:mod:`femo.audit.stats`), modality ablation and attribution."""
