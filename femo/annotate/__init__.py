"""Annotation of clips with *perceived* demographics and colorimetric skin tone.

Datasets such as DFEW, MAFW and FERV39k carry no demographic labels. ``femo annotate`` adds
estimates so that the bias audit has groups to compare:

* :mod:`.job`: the entry point, :func:`~femo.annotate.job.annotate`: the columns below for each clip of a
  store or table.
* :mod:`.perceived`: ``perceived_age`` / ``perceived_age_group`` / ``perceived_sex`` from a pretrained age/sex network.
* :mod:`.skin`: ``ita`` / ``ita_skin_tone``: the Individual Typology Angle of facial skin pixels.
* :mod:`.faces`: how well the face pipeline saw each clip (``face_found_rate``, ``face_score``) and its face crops.

They are estimates with their own, group-dependent errors (measured on UTKFace by
``benchmarks/utkface.py``).
"""
from femo.annotate.job import ANNOTATION_COLUMNS, annotate
from femo.annotate.perceived import AGE_GROUPS, AgeSexEstimator, age_group
from femo.annotate.skin import ita_category, ita_group, measure_skin

__all__ = ["ANNOTATION_COLUMNS", "AGE_GROUPS", "AgeSexEstimator", "age_group", "annotate", "ita_category",
           "ita_group", "measure_skin"]
