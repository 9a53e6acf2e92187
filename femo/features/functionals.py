"""Utterance-level openSMILE functionals: the field's standard hand-crafted acoustic sets.

One vector per clip, computed by the ``opensmile`` package (audEERING's Python wrapper; its
wheel ships the SMILExtract binary, nothing is downloaded) from mono float32 audio at 16 kHz:

* ``"egemaps"``: eGeMAPSv02 functionals, F = 88 (Eyben et al., 2016: pitch, jitter, shimmer,
  loudness, formants, spectral slope, MFCC 1-4, voiced/unvoiced segment statistics).
* ``"compare"``: ComParE_2016 functionals, F = 6,373 (the INTERSPEECH Computational
  Paralinguistics Challenge set: many more low-level descriptors x functionals).
* ``"none"``: nothing is computed; the store holds a (0,) array.

Cost on a 2-core machine: about 0.06 s per 3 s clip when idle, up to ~0.5 s under load, plus
~0.3 s for the first extractor of a process. A clip shorter than openSMILE's analysis window
(it returns NaN then) or without audio gets :func:`empty_functionals` plus a reason instead of
NaN values: see :func:`functionals`.
"""
from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np

#: Functional sets a store can carry, with their dimension F (0 for "none").
FUNCTIONAL_SETS: dict[str, int] = {"none": 0, "egemaps": 88, "compare": 6373}
_OPENSMILE_NAMES = {"egemaps": "eGeMAPSv02", "compare": "ComParE_2016"}
#: Shortest audio openSMILE's functionals are computed on (seconds); shorter clips get NaN there.
MIN_SECONDS = 0.1


class FunctionalsError(ValueError):
    """An unknown functional set, or the ``opensmile`` package is missing; says which."""


def check_set(name: str) -> str:
    """``name`` if it is one of :data:`FUNCTIONAL_SETS`, else :class:`FunctionalsError` listing them."""
    if name not in FUNCTIONAL_SETS:
        raise FunctionalsError(f"unknown audio functional set {name!r}; choose one of {list(FUNCTIONAL_SETS)}")
    return name


def functionals_dim(name: str) -> int:
    """F, the vector length of functional set ``name`` (0 for ``"none"``)."""
    return FUNCTIONAL_SETS[check_set(name)]


@lru_cache(maxsize=2)
def _smile(name: str):
    """One openSMILE extractor per set and process (building one costs ~0.3 s)."""
    try:
        import opensmile
    except ImportError as exc:
        raise FunctionalsError(f"audio functionals {name!r} need the opensmile package "
                               f"(pip install opensmile): {exc}") from exc
    return opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, _OPENSMILE_NAMES[name]),
                           feature_level=opensmile.FeatureLevel.Functionals)


def feature_names(name: str) -> list[str]:
    """openSMILE's names of the F functionals of set ``name`` (empty for ``"none"``)."""
    return [] if check_set(name) == "none" else list(_smile(name).feature_names)


def empty_functionals(name: str) -> np.ndarray:
    """The all-zero (F,) float32 vector stored when functionals cannot be computed."""
    return np.zeros(functionals_dim(name), np.float32)


def functionals(audio: np.ndarray, name: str, sample_rate: int = 16_000) -> tuple[np.ndarray, str]:
    """(F,) float32 functionals of (N,) mono audio and a reason ("" when computed).

    The reason is non-empty and the vector all zeros when there is nothing to measure:
    ``"no audio"`` (N == 0), ``"audio shorter than 0.1 s"``, ``"digital silence"`` (every sample
    0) or ``"openSMILE returned NaN"``. ``name="none"`` gives a (0,) vector and "".
    """
    if check_set(name) == "none":
        return empty_functionals(name), ""
    y = np.asarray(audio, np.float32).reshape(-1)
    reason = ("no audio" if y.size == 0 else
              f"audio shorter than {MIN_SECONDS} s" if y.size < MIN_SECONDS * sample_rate else
              "digital silence" if not np.any(y) else "")
    if reason:
        return empty_functionals(name), reason
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Segment too short, filling with NaN": handled below
        values = _smile(name).process_signal(y, sample_rate).to_numpy(np.float32).reshape(-1)
    if values.shape != (functionals_dim(name),):
        raise FunctionalsError(f"openSMILE {name} returned {values.shape[0]} values, expected {functionals_dim(name)}")
    if not np.all(np.isfinite(values)):
        return empty_functionals(name), "openSMILE returned NaN"
    return values, ""
