"""Utterance-level functionals: the field's standard hand-crafted acoustic sets, one vector per clip.

The openSMILE sets are computed by the ``opensmile`` package (audEERING's Python wrapper; its
wheel ships the SMILExtract binary, nothing is downloaded) from mono float32 audio at 16 kHz:

* ``"egemaps"``: eGeMAPSv02 functionals, F = 88 (Eyben et al., 2016: pitch, jitter, shimmer,
  loudness, formants, spectral slope, MFCC 1-4, voiced/unvoiced segment statistics).
* ``"compare"``: ComParE_2016 functionals, F = 6,373 (the INTERSPEECH Computational
  Paralinguistics Challenge set: many more low-level descriptors x functionals).
* ``"librosa"``: F = 218 utterance statistics of the clip's own librosa features (the stored
  log-mel, MFCC and prosody of :mod:`femo.features.audio`; see :func:`utterance_statistics`):
  mean and std of the 64 log-mel bands (dB), of the 20 MFCC and of their frame-to-frame deltas;
  f0 in semitones re 100 Hz over voiced frames (mean, std, 10/50/90th percentiles, range); the
  voiced fraction; log-RMS mean, std and 90th percentile. Costs nothing beyond the log-mel.
* ``"a+b"``: several sets concatenated in the canonical order egemaps, compare, librosa
  (``"egemaps+librosa"``: F = 306); every combination has its own width F, so a run's width
  names its set.
* ``"none"``: nothing is computed; the store holds a (0,) array.

Cost on a 2-core machine: about 0.06 s per 3 s clip when idle, up to ~0.5 s under load, plus
~0.3 s for the first extractor of a process. A clip shorter than openSMILE's analysis window
(it returns NaN then) or without audio gets :func:`empty_functionals` plus a reason instead of
NaN values: see :func:`functionals`.
"""
from __future__ import annotations

import warnings
from functools import lru_cache
from itertools import combinations

import numpy as np

#: The single sets, in the canonical order of a combination, with their width F.
BASE_SETS: dict[str, int] = {"egemaps": 88, "compare": 6373, "librosa": 218}
#: Functional sets a store can carry (every canonical "+" combination of :data:`BASE_SETS`), with
#: their dimension F (0 for "none"); the widths are distinct.
FUNCTIONAL_SETS: dict[str, int] = {"none": 0, **{
    "+".join(parts): sum(BASE_SETS[p] for p in parts)
    for r in range(1, len(BASE_SETS) + 1) for parts in combinations(BASE_SETS, r)}}
_OPENSMILE_NAMES = {"egemaps": "eGeMAPSv02", "compare": "ComParE_2016"}
#: Shortest audio openSMILE's functionals are computed on (seconds); shorter clips get NaN there.
MIN_SECONDS = 0.1


class FunctionalsError(ValueError):
    """An unknown functional set, or the ``opensmile`` package is missing; says which."""


def check_set(name: str) -> str:
    """``name`` if it is one of :data:`FUNCTIONAL_SETS`, else :class:`FunctionalsError` listing them
    (and the canonical spelling of a combination written in another order)."""
    if name not in FUNCTIONAL_SETS:
        parts = str(name).split("+")
        if set(parts) <= set(BASE_SETS) and len(set(parts)) == len(parts):
            canonical = "+".join(p for p in BASE_SETS if p in parts)
            raise FunctionalsError(f"audio functional set {name!r}: write the combination as {canonical!r}")
        raise FunctionalsError(f"unknown audio functional set {name!r}; choose one of {list(FUNCTIONAL_SETS)}")
    return name


def set_parts(name: str) -> tuple[str, ...]:
    """The single sets of ``name`` in order (``()`` for ``"none"``)."""
    return () if check_set(name) == "none" else tuple(name.split("+"))


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


#: Names of the 218 :func:`utterance_statistics`, in order.
STAT_NAMES: tuple[str, ...] = (
    *(f"logmel{i}_{s}" for s in ("mean", "std") for i in range(64)),
    *(f"{kind}{i}_{s}" for kind in ("mfcc", "mfcc_delta") for s in ("mean", "std") for i in range(20)),
    *(f"f0_semitone_{s}" for s in ("mean", "std", "p10", "p50", "p90", "range")), "voiced_fraction",
    *(f"log_rms_{s}" for s in ("mean", "std", "p90")))


def feature_names(name: str) -> list[str]:
    """Names of the F functionals of set ``name`` (openSMILE's, then :data:`STAT_NAMES`)."""
    return [n for part in set_parts(name)
            for n in (STAT_NAMES if part == "librosa" else _smile(part).feature_names)]


def utterance_statistics(logmel: np.ndarray, mfcc: np.ndarray, prosody: np.ndarray) -> np.ndarray:
    """(218,) float32 statistics (:data:`STAT_NAMES`) of one clip's librosa features as stored:
    ``logmel`` (64, A) dB (0 = clip maximum), ``mfcc`` (20, A), ``prosody`` (A, 4) = f0 Hz (0 when
    unvoiced), voiced probability, RMS, voiced flag. A clip without voiced frames gets f0
    statistics 0; a single frame gets delta statistics 0."""
    logmel, mfcc, pro = (np.nan_to_num(np.asarray(a, np.float64)) for a in (logmel, mfcc, prosody))
    if logmel.shape[-1] == 0:
        return np.zeros(len(STAT_NAMES), np.float32)
    delta = np.diff(mfcc, axis=1) if mfcc.shape[1] > 1 else np.zeros_like(mfcc)
    voiced = pro[:, 3] > 0.5
    f0 = 12 * np.log2(np.maximum(pro[voiced, 0], 1.0) / 100.0) if voiced.any() else np.zeros(1)  # semitones
    log_rms = np.log(np.maximum(pro[:, 2], 1e-6))
    parts = [logmel.mean(1), logmel.std(1), mfcc.mean(1), mfcc.std(1), delta.mean(1), delta.std(1),
             [f0.mean(), f0.std(), *np.percentile(f0, [10, 50, 90]), np.ptp(f0)], [voiced.mean()],
             [log_rms.mean(), log_rms.std(), np.percentile(log_rms, 90)]]
    return np.concatenate([np.asarray(p, np.float64).ravel() for p in parts]).astype(np.float32)


def empty_functionals(name: str) -> np.ndarray:
    """The all-zero (F,) float32 vector stored when functionals cannot be computed."""
    return np.zeros(functionals_dim(name), np.float32)


def functionals(audio: np.ndarray, name: str, sample_rate: int = 16_000, *,
                features: dict[str, np.ndarray] | None = None) -> tuple[np.ndarray, str]:
    """(F,) float32 functionals of (N,) mono audio and a reason ("" when computed).

    The reason is non-empty and the vector all zeros when there is nothing to measure:
    ``"no audio"`` (N == 0), ``"audio shorter than 0.1 s"``, ``"digital silence"`` (every sample
    0) or ``"openSMILE returned NaN"``. ``name="none"`` gives a (0,) vector and "". Sets with
    ``librosa`` need ``features``: the clip's ``logmel``, ``mfcc`` and ``prosody`` arrays
    (:func:`femo.features.audio.audio_features`).
    """
    if check_set(name) == "none":
        return empty_functionals(name), ""
    if "librosa" in set_parts(name) and not (features and {"logmel", "mfcc", "prosody"} <= set(features)):
        raise FunctionalsError(f"functional set {name!r} needs features= with the clip's logmel, mfcc and prosody")
    y = np.asarray(audio, np.float32).reshape(-1)
    reason = ("no audio" if y.size == 0 else
              f"audio shorter than {MIN_SECONDS} s" if y.size < MIN_SECONDS * sample_rate else
              "digital silence" if not np.any(y) else "")
    if reason:
        return empty_functionals(name), reason
    values = []
    for part in set_parts(name):
        if part == "librosa":
            values.append(utterance_statistics(features["logmel"], features["mfcc"], features["prosody"]))
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Segment too short, filling with NaN": handled below
            v = _smile(part).process_signal(y, sample_rate).to_numpy(np.float32).reshape(-1)
        if v.shape != (BASE_SETS[part],):
            raise FunctionalsError(f"openSMILE {part} returned {v.shape[0]} values, expected {BASE_SETS[part]}")
        if not np.all(np.isfinite(v)):
            return empty_functionals(name), "openSMILE returned NaN"
        values.append(v)
    return np.concatenate(values).astype(np.float32), ""
