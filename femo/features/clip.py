"""One clip: the extraction settings, the extractor that turns a clip into arrays, and its checks.

:class:`ExtractConfig` holds the settings (frames, crop size, audio rate, pose stride, pitch
tracker, decode caps, openSMILE set). :class:`ClipExtractor` owns one face and one pose tracker and
turns one media file into the store's arrays (:data:`femo.data.store.CLIP_KEYS`), its condition
flags and seconds per stage (:data:`STAGES`); :func:`check_audio` refuses audio no feature can be
computed from; :func:`process_clip` extracts and writes one clip and never raises for a bad one
(the failure is returned as a row). The job over a whole manifest (screening, resume, workers,
shards) is :mod:`femo.features.extract`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from femo.config import FACE_SIZE, NUM_FRAMES, PITCH_METHOD, POSE_STRIDE, SAMPLE_RATE
from femo.data import store as fs

STAGES = ("decode", "face", "pose", "audio", "other")


class ExtractError(ValueError):
    """The job cannot start or finish (bad shard spec, store settings clash); names the problem."""


@dataclass(frozen=True)
class ExtractConfig:
    """Extraction settings: T frames, S crop side (px), audio rate (Hz), pose on every k-th frame,
    pitch tracker ("yin" | "pyin"), optional cap on the decoded frame's longer side (px), and the
    functional set stored per clip ("none" | "egemaps" | "compare" | "librosa" or a "+" combination
    such as "egemaps+librosa"; see :mod:`femo.features.functionals`; "none" by default: openSMILE
    adds 0.06-0.5 s per clip).
    ``image_max_side`` caps the longer side (px) of still images and frame-folder images before
    landmarking (a 4000x4000 photo repeated T times would otherwise cost T full-size copies)."""

    num_frames: int = NUM_FRAMES
    face_size: int = FACE_SIZE
    sample_rate: int = SAMPLE_RATE
    pose_stride: int = POSE_STRIDE
    pitch: str = PITCH_METHOD
    max_side: int | None = None
    audio_functionals: str = "none"
    image_max_side: int = 1280

    def __post_init__(self) -> None:
        bad = [f"{k}={getattr(self, k)}" for k, low in (("num_frames", 1), ("face_size", 16), ("pose_stride", 1),
                                                         ("sample_rate", 8000)) if getattr(self, k) < low]
        if self.max_side is not None and self.max_side < 32:
            bad.append(f"max_side={self.max_side}")
        if self.image_max_side < 32:
            bad.append(f"image_max_side={self.image_max_side}")
        if self.pitch not in ("yin", "pyin"):
            bad.append(f"pitch={self.pitch!r} (yin | pyin)")
        from femo.features.functionals import FUNCTIONAL_SETS

        if self.audio_functionals not in FUNCTIONAL_SETS:
            bad.append(f"audio_functionals={self.audio_functionals!r} ({' | '.join(FUNCTIONAL_SETS)})")
        if bad:
            raise ExtractError(f"invalid extraction settings: {', '.join(bad)} (frames >= 1, face size >= 16, "
                               "pose stride >= 1, sample rate >= 8000, max side >= 32)")


class ClipExtractor:
    """Owns one face tracker and one pose tracker; ``extract(path)`` -> (arrays, flags, seconds per stage).

    The trackers see each distinct source frame once (:func:`distinct_frames`): repeats of it (a
    still image's T copies, the repeated frames of a clip shorter than T) get its arrays."""

    def __init__(self, config: ExtractConfig = ExtractConfig(), *, log_path: str | Path | None = None) -> None:
        from femo.features.audio import AudioConfig
        from femo.features.face import FaceTracker
        from femo.features.pose import PoseTracker

        self.config = config
        self.audio_config = AudioConfig(sample_rate=config.sample_rate, pitch=config.pitch)
        self.face = FaceTracker(face_size=config.face_size, log_path=log_path)
        self.pose = PoseTracker(stride=config.pose_stride, log_path=log_path)

    def close(self) -> None:
        """Release the landmarkers."""
        self.face.close()
        self.pose.close()

    def __enter__(self) -> ClipExtractor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def extract(self, path: str, audio_path: str | None = None) -> tuple[dict, dict, dict]:
        """All CLIP_KEYS arrays, the condition flags, and wall (``<stage>``) and process CPU
        (``cpu_<stage>``) seconds per stage of :data:`STAGES` for one clip."""
        from femo.data.decode import load_clip
        from femo.features.audio import audio_features, empty_audio_features
        from femo.features.conditions import condition_flags
        from femo.features.face import empty_face_track
        from femo.features.pose import empty_pose_track

        cfg, t = self.config, self.config.num_frames
        t0, c0 = time.perf_counter(), time.process_time()
        clip = load_clip(path, num_frames=t, sample_rate=cfg.sample_rate, audio_path=audio_path or None,
                         max_side=_max_side(path, cfg))
        check_audio(clip, audio_path or path, min_samples=self.audio_config.n_fft)
        video = len(clip.frames) > 0  # audio-only files decode to no frames: T all-False frame masks
        times = np.asarray(clip.times if video else np.zeros(t), np.float32)
        t1, c1 = time.perf_counter(), time.process_time()
        keep, spread = distinct_frames(clip.indices)
        repeats = len(keep) < len(clip.indices)  # else every frame is distinct: no copy, no spreading
        frames, frame_times = (clip.frames[keep], times[keep]) if repeats else (clip.frames, times)
        face = self.face.track(frames, frame_times) if video else empty_face_track(t, cfg.face_size)
        face = take(face, spread) if repeats else face
        t2, c2 = time.perf_counter(), time.process_time()
        pose = self.pose.track(frames) if video else empty_pose_track(t)
        pose = take(pose, spread) if repeats else pose
        t3, c3 = time.perf_counter(), time.process_time()
        audio = (audio_features(clip.audio, self.audio_config) if clip.has_audio
                 else empty_audio_features(self.audio_config))
        audio_record = _audio_record(clip.audio if clip.has_audio else None, audio, cfg)
        audio["functionals"] = audio_record.pop("functionals")
        t4, c4 = time.perf_counter(), time.process_time()
        arrays = {"times": times, "has_audio": np.array(clip.has_audio), **face.arrays(), **pose.arrays(), **audio}
        flags = condition_flags(
            frames=clip.frames, face_found=face.face_found, head_pose=face.head_pose, faces=face.faces,
            landmarks_px=face.landmarks_px, rms=audio["prosody"][:, 2] if clip.has_audio else None,
            duration=clip.duration, has_audio=clip.has_audio)
        flags.update(audio_record)
        t5, c5 = time.perf_counter(), time.process_time()
        wall, cpu = (t0, t1, t2, t3, t4, t5), (c0, c1, c2, c3, c4, c5)
        sec = {k: wall[i + 1] - wall[i] for i, k in enumerate(STAGES)}
        sec.update({f"cpu_{k}": cpu[i + 1] - cpu[i] for i, k in enumerate(STAGES)})
        return arrays, flags, sec


def distinct_frames(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions of the first frame of each run of repeated source frames, (T,) position of each
    frame among those) for a clip's ``indices`` (:class:`femo.data.decode.Clip`).

    A still image is T copies of one frame and a clip shorter than T repeats some of its frames:
    the landmarkers run once per distinct frame and the copies get its results (the same pixels
    give the same landmarks, instead of the small drift of a tracker fed one picture T times; a
    still costs one face-mesh and one pose call instead of T and T / stride)."""
    indices = np.asarray(indices)
    first = np.ones(len(indices), bool)
    first[1:] = indices[1:] != indices[:-1]
    return np.flatnonzero(first), np.cumsum(first) - 1


def take(track, positions: np.ndarray):
    """The track (a dataclass of per-frame arrays: :class:`femo.features.face.FaceTrack`,
    :class:`femo.features.pose.PoseTrack`) at ``positions`` along its first axis."""
    from dataclasses import fields, replace

    return replace(track, **{f.name: getattr(track, f.name)[positions] for f in fields(track)})


def _audio_record(audio: np.ndarray | None, features: dict, config: ExtractConfig) -> dict[str, Any]:
    """The clip's ``functionals`` (F,) and its AUDIO_COLUMNS: voiced ratio and a note saying why
    the audio carries no speech cue (empty when it does)."""
    from femo.features.audio import audio_note, voiced_ratio
    from femo.features.functionals import empty_functionals, functionals

    note = audio_note(audio, features["prosody"])
    if audio is None:
        values, reason = empty_functionals(config.audio_functionals), ""
    else:
        values, reason = functionals(audio, config.audio_functionals, config.sample_rate, features=features)
    if reason and reason not in note:
        note = f"{note}; functionals: {reason}" if note else f"functionals: {reason}"
    return {"functionals": values, "voiced_ratio": voiced_ratio(features["prosody"]), "audio_note": note}


_WORKER: dict[str, Any] = {}


def _max_side(path: str, config: ExtractConfig) -> int | None:
    """The decode cap for ``path``: ``max_side``, and for images at most ``image_max_side``."""
    from femo.data.decode import media_kind

    if media_kind(path) not in ("image", "frames"):
        return config.max_side
    return min(config.max_side or config.image_max_side, config.image_max_side)


def check_audio(clip, source: str, *, min_samples: int = 400) -> None:
    """Raise MediaError naming ``source`` for audio no feature can be computed from.

    NaN/inf samples fail any clip. A clip whose only modality is audio also fails with fewer than
    ``min_samples`` samples (one analysis window) or with digital silence: no feature exists for
    it. Beside frames, silence is kept, masked by the dataset and described by the index's
    ``audio_note``; so is a short or empty track.
    """
    from femo.data.decode import MediaError

    if not clip.has_audio:
        return
    audio = np.asarray(clip.audio)
    bad = int(audio.size - np.isfinite(audio).sum())
    if bad:
        raise MediaError(f"{source}: {bad} NaN/inf audio sample(s) of {audio.size}")
    if len(clip.frames):
        return
    if audio.size < min_samples:
        raise MediaError(f"{source}: no audio samples to analyse ({audio.size}, fewer than one "
                         f"{min_samples}-sample window)")
    if not np.any(audio):
        raise MediaError(f"{source}: digital silence (every one of {audio.size} samples is 0) in a clip "
                         "whose only modality is audio: nothing to analyse")


def init_worker(config: ExtractConfig, log_path: str | None, extractor_class: type | None = None) -> None:
    from multiprocessing.util import Finalize

    extractor = _WORKER["extractor"] = (extractor_class or ClipExtractor)(config, log_path=log_path)
    # close the landmarkers before interpreter teardown, else their __del__ prints errors
    Finalize(extractor, extractor.close, exitpriority=10)


def process_clip(store: str, clip_id: str, path: str, audio_path: str | None,
                 extractor: ClipExtractor | None = None) -> dict[str, Any]:
    """Extract and write one clip; never raises for a bad clip. Returns status/error/file/flags/seconds.

    ``seconds`` holds wall and CPU seconds per stage (see :meth:`ClipExtractor.extract`) and
    ``cpu``, the process CPU seconds of the whole clip including its write.
    """
    extractor = extractor or _WORKER["extractor"]
    cpu0 = time.process_time()
    try:
        arrays, flags, sec = extractor.extract(path, audio_path)
        file = fs.write_clip(store, clip_id, arrays)
        sec["cpu"] = time.process_time() - cpu0
    except Exception as exc:  # one bad clip must not stop the job; the reason is recorded
        return {"clip_id": clip_id, "status": fs.STATUS_FAILED, "error": f"{type(exc).__name__}: {exc}",
                "file": "", "seconds": {}}
    row = {"clip_id": clip_id, "status": fs.STATUS_OK, "error": "",
           "file": str(file.relative_to(store)), "seconds": sec}
    row.update(flags)
    return row
