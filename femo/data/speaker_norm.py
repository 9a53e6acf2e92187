"""Per-speaker audio normalisation: each speaker's features z-scored with its own statistics.

Acted-speech corpora differ more between speakers (voice pitch, timbre, recording level) than
between one speaker's emotions, so removing each speaker's mean and scale is a classic gain for
speaker-independent emotion recognition. The statistics of a speaker come only from that
speaker's own clips (the ``subject`` column); no label is used. For a test speaker that means
its own unlabelled test audio: the protocol is **transductive** (a deployment must collect
several utterances of a speaker first), and runs using it say so.

Per speaker, over its clips with audio:

* ``functionals`` (F,): mean and standard deviation of each functional over the clips;
* log-mel: mean and standard deviation of each of the 64 normalised bands over all frames;
* f0: mean of ``log2(f0 / 200)`` over voiced frames (the dataset's prosody column 0), removed
  from voiced frames so pitch becomes relative to the speaker's own.

A standard deviation under ``EPS`` (a constant feature, or a speaker with one clip) counts as 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EPS = 1e-6


@dataclass(frozen=True)
class SpeakerStats:
    """One speaker's statistics: functionals mean/std (F,), log-mel band mean/std (M,), voiced
    log2-f0 mean (0 when the speaker has no voiced frame) and the number of clips used."""

    func_mean: np.ndarray
    func_std: np.ndarray
    mel_mean: np.ndarray
    mel_std: np.ndarray
    f0_mean: float
    n_clips: int


def _std(x: np.ndarray, axis: int) -> np.ndarray:
    sd = x.std(axis=axis) if x.shape[axis] else np.ones(x.shape[1 - axis])
    return np.where(sd > EPS, sd, 1.0).astype(np.float32)


def speaker_stats(mels: list[np.ndarray], prosodies: list[np.ndarray], funcs: list[np.ndarray]) -> SpeakerStats:
    """Statistics of one speaker from its clips' normalised (M, A_i) log-mels, (A_i, 4) dataset
    prosody (column 0 = log2(f0 / 200), column 3 = voiced flag) and (F,) functionals."""
    n_mels = mels[0].shape[0] if mels else 0
    frames = np.concatenate(mels, axis=1) if mels else np.zeros((n_mels, 0), np.float32)  # (M, sum A_i)
    pro = np.concatenate(prosodies, axis=0) if prosodies else np.zeros((0, 4), np.float32)
    voiced = pro[:, 3] > 0.5
    func = (np.stack(funcs).astype(np.float64) if funcs and funcs[0].size
            else np.zeros((max(1, len(funcs)), 0)))
    return SpeakerStats(func_mean=func.mean(0).astype(np.float32), func_std=_std(func, 0),
                        mel_mean=(frames.mean(1) if frames.shape[1] else np.zeros(n_mels)).astype(np.float32),
                        mel_std=_std(frames, 1), f0_mean=float(pro[voiced, 0].mean()) if voiced.any() else 0.0,
                        n_clips=len(mels))


def normalise(stats: SpeakerStats, mel: np.ndarray, prosody: np.ndarray, func: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply a speaker's statistics to one clip: (M, A) log-mel, (A, 4) prosody, (F,) functionals."""
    mel = ((mel - stats.mel_mean[:, None]) / stats.mel_std[:, None]).astype(np.float32)
    pro = np.array(prosody, np.float32, copy=True)
    voiced = pro[:, 3] > 0.5
    pro[voiced, 0] -= stats.f0_mean
    func = ((func - stats.func_mean) / stats.func_std).astype(np.float32) if func.size else func
    return mel, pro, func


#: Appended to the protocol text of every run and report that used per-speaker normalisation.
PROTOCOL_NOTE = ("TRANSDUCTIVE: audio features z-scored per speaker with that speaker's own statistics, "
                 "test speakers' from their own unlabelled test audio")


def protocol_note(data_config: dict) -> str:
    """``"; " + PROTOCOL_NOTE`` when the run's data config (a dict) has speaker_norm, else ""."""
    return f"; {PROTOCOL_NOTE}" if data_config.get("speaker_norm") else ""
