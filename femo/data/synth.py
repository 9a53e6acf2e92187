"""A synthetic audio-visual emotion dataset with planted ground truth.

``generate(out, config=SynthConfig(...))`` writes ``OUT/clips/<clip_id>.mp4`` (H.264 + AAC,
drawn faces from :mod:`femo.data.synth_face`, voices from :mod:`femo.data.synth_voice`) and
``OUT/manifest.csv`` + ``OUT/manifest.meta.json``. The same seed gives byte-identical files.

What is planted (and recorded as manifest columns, so reports can be checked against it):

- ``label``: one of the 7 canonical classes, balanced. ``true_emotion`` is the emotion the clip
  was generated from; it differs from ``label`` only where ``label_flipped`` (planted bias).
- ``informative``: face | audio | both. face: the voice follows another emotion
  (``voice_emotion``); audio: the face shows another emotion (``face_emotion``); both: both
  follow the true emotion. About a third each.
- ``intensity``: expression and prosody strength, uniform 0.5..1.0 x the ``culture``
  display-rule factor (so 0.4..1.15); onset-apex-offset dynamics over each clip. ``expression_region``: full | mouth (~20%: only the
  mouth moves, brows and eyes stay neutral).
- Nuisances: ``low_light`` (~15%: brightness x0.3 plus sensor noise), ``occluded`` (~15%, with
  ``occluder_region`` mouth | eyes, "none" otherwise), ``head_yaw`` (degrees), ``voice_snr_db`` (voice
  noise), ``has_audio_track`` (~5% False: no audio stream at all), ``face_absent_frac`` (~5% of
  clips lose the face for 30-50% of the clip). Low light and occlusion leave less facial
  information, so the voice matters more there.
- Subgroups per subject: ``sex`` (f | m: hair length, voice pitch), ``age_group`` (young |
  adult | senior: wrinkles, grey hair), ``skin_tone`` (light | medium | dark), ``culture``
  (A | B | C: headwear and display-rule factor 1.0 / 0.8 / 1.15). ``fold`` 1..5 by subject.
- ``vote_<class>``: 10 simulated annotators; agreement falls with intensity.
- ``plant_bias=(column, value)``: that subgroup's expressions are subtler (intensity x
  :data:`BIAS_INTENSITY_SCALE`) and :data:`BIAS_LABEL_NOISE` of its labels are flipped to a random
  other class with votes to match; recorded in the sidecar ``extra.planted_bias``.
- ``label_noise=P``: exactly round(P x clips) labels, drawn among the clips the bias left alone,
  are flipped to a uniformly drawn other class; ``true_emotion`` keeps the original label and
  ``label_flipped`` is True. Their annotators split: each follows the recorded label with
  probability 1/2, else the original one, so a flipped clip's votes disagree more. The media are
  those of the same seed without noise (a separate random stream draws the noise). Recorded in
  the sidecar ``extra.label_noise``.
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from femo.config import CLASSES, SAMPLE_RATE
from femo.data.manifest import ManifestMeta, write_manifest
from femo.data.media import write_video
from femo.data.synth_face import FaceRenderer, FaceStyle, envelope, expression
from femo.data.synth_voice import synth_voice

#: Subgroup columns and their values; ``--plant-bias`` accepts any COLUMN=VALUE of these.
SUBGROUPS: dict[str, tuple[str, ...]] = {
    "sex": ("f", "m"),
    "age_group": ("young", "adult", "senior"),
    "skin_tone": ("light", "medium", "dark"),
    "culture": ("A", "B", "C"),
}
SKIN: dict[str, tuple[int, int, int]] = {"light": (236, 200, 172), "medium": (196, 146, 106), "dark": (118, 80, 56)}
HAIR: tuple[tuple[int, int, int], ...] = ((30, 25, 20), (85, 55, 30), (190, 160, 90), (125, 60, 30))
GREY: tuple[tuple[int, int, int], ...] = ((175, 175, 175), (215, 215, 210))
HEADWEAR: dict[str, str] = {"A": "none", "B": "band", "C": "hat"}
DISPLAY_RULE: dict[str, float] = {"A": 1.0, "B": 0.8, "C": 1.15}
#: Confusable class pairs: annotators' wrong votes go to the partner 60% of the time.
CONFUSABLE: dict[str, str] = {"happy": "surprise", "sad": "neutral", "neutral": "sad", "angry": "disgust",
                              "surprise": "fear", "disgust": "angry", "fear": "surprise"}
BIAS_INTENSITY_SCALE = 0.4
BIAS_LABEL_NOISE = 0.25
N_ANNOTATORS = 10
#: Seed offset of the random stream that draws ``label_noise`` (separate, so noise leaves the media alone).
NOISE_STREAM = 14


@dataclass(frozen=True)
class SynthConfig:
    """Size and content of a synthetic dataset.

    clips: number of clips. seed: the only source of randomness. size: frame side (pixels, even).
    fps: frame rate. seconds: clip length. subjects: distinct identities (>= 5 for 5 folds).
    plant_bias: (column, value) of a subgroup, or None. workers: processes (0 = all cores).
    label_noise: fraction P of labels flipped to another class, 0 <= P < 1.
    """

    clips: int = 392
    seed: int = 0
    size: int = 192
    fps: float = 15.0
    seconds: float = 2.0
    subjects: int = 40
    plant_bias: tuple[str, str] | None = None
    workers: int = 0
    label_noise: float = 0.0

    def __post_init__(self):
        if self.clips < 1 or self.subjects < 5 or self.size < 64 or self.size % 2 or self.seconds <= 0 or self.fps <= 0:
            raise ValueError(f"invalid SynthConfig {self}: need clips >= 1, subjects >= 5, even size >= 64, "
                             "positive seconds and fps")
        if self.plant_bias is not None:
            column, value = self.plant_bias
            if column not in SUBGROUPS or value not in SUBGROUPS[column]:
                options = ", ".join(f"{c}={'|'.join(v)}" for c, v in SUBGROUPS.items())
                raise ValueError(f"unknown bias subgroup {column}={value}; choose one of {options}")
        if not 0.0 <= self.label_noise < 1.0:
            raise ValueError(f"label_noise must be a fraction in [0, 1), got {self.label_noise}")


def parse_bias(text: str | None) -> tuple[str, str] | None:
    """``"skin_tone=dark"`` -> ("skin_tone", "dark"); None stays None."""
    if not text:
        return None
    if "=" not in text:
        raise ValueError(f"--plant-bias expects COLUMN=VALUE (e.g. skin_tone=dark), got {text!r}")
    column, value = (part.strip() for part in text.split("=", 1))
    return column, value


def plan_subjects(cfg: SynthConfig, rng: np.random.Generator) -> pd.DataFrame:
    """One row per subject: id, fold, subgroup columns and drawing identity (face size, colours)."""
    n = cfg.subjects
    table = {"subject": [f"s{i:03d}" for i in range(n)]}
    for column, values in SUBGROUPS.items():  # balanced, then shuffled independently
        table[column] = rng.permutation(np.resize(np.array(values), n))
    table["fold"] = rng.permutation(np.resize(np.arange(1, 6), n))
    df = pd.DataFrame(table)
    df["face_w"] = rng.uniform(0.25, 0.31, n)
    df["face_h"] = rng.uniform(0.34, 0.40, n)
    df["eye_dx"] = rng.uniform(0.095, 0.125, n)
    df["speaker_f0"] = rng.uniform(0.85, 1.15, n)
    jitter = rng.integers(-12, 13, size=(n, 3))
    df["skin"] = [tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(SKIN[t], jit))
                  for t, jit in zip(df["skin_tone"], jitter)]
    df["hair"] = [GREY[rng.integers(len(GREY))] if age == "senior" else HAIR[rng.integers(len(HAIR))]
                  for age in df["age_group"]]
    return df


def _other(rng: np.random.Generator, emotion: str) -> str:
    return str(rng.choice([c for c in CLASSES if c != emotion]))


def _votes(rng: np.random.Generator, label: str, intensity: float, annotators: int = N_ANNOTATORS) -> list[int]:
    """Vote counts over CLASSES from ``annotators`` annotators of a clip whose label is ``label``."""
    p_right = float(np.clip(0.3 + 0.65 * intensity, 0.3, 0.95))
    counts = dict.fromkeys(CLASSES, 0)
    for _ in range(annotators):
        if rng.random() < p_right:
            counts[label] += 1
        elif rng.random() < 0.6:
            counts[CONFUSABLE[label]] += 1
        else:
            counts[_other(rng, label)] += 1
    return [counts[c] for c in CLASSES]


def plan_clips(cfg: SynthConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(clips, subjects): every per-clip choice, made up front from ``cfg.seed``."""
    rng = np.random.default_rng(cfg.seed)
    subjects = plan_subjects(cfg, rng)
    n = cfg.clips
    df = pd.DataFrame({"clip_id": [f"synth_{i:05d}" for i in range(n)]})
    df["path"] = "clips/" + df["clip_id"] + ".mp4"
    df["true_emotion"] = rng.permutation(np.resize(np.array(CLASSES), n))
    df["subject"] = rng.permutation(np.resize(subjects["subject"].to_numpy(), n))
    df = df.merge(subjects[["subject", "fold", *SUBGROUPS]], on="subject", how="left")
    df["informative"] = rng.permutation(np.resize(np.array(["face", "audio", "both"]), n))
    df["face_emotion"] = [_other(rng, e) if inf == "audio" else e for e, inf in zip(df["true_emotion"], df["informative"])]
    df["voice_emotion"] = [_other(rng, e) if inf == "face" else e for e, inf in zip(df["true_emotion"], df["informative"])]
    intensity = rng.uniform(0.5, 1.0, n) * df["culture"].map(DISPLAY_RULE).to_numpy()
    biased = np.zeros(n, bool)
    if cfg.plant_bias is not None:
        biased = (df[cfg.plant_bias[0]] == cfg.plant_bias[1]).to_numpy()
        intensity = np.where(biased, intensity * BIAS_INTENSITY_SCALE, intensity)
    df["intensity"] = np.round(intensity, 4)
    df["expression_region"] = np.where(rng.random(n) < 0.2, "mouth", "full")
    df["low_light"] = rng.random(n) < 0.15
    df["occluded"] = rng.random(n) < 0.15
    df["occluder_region"] = np.where(df["occluded"], np.where(rng.random(n) < 0.5, "mouth", "eyes"), "none")
    turned = rng.random(n) < 0.2
    yaw = np.where(turned, rng.choice([-1, 1], n) * rng.uniform(20, 35, n), rng.normal(0, 6, n))
    df["head_yaw"] = np.round(yaw, 1)
    df["has_audio_track"] = rng.random(n) >= 0.05
    df["voice_snr_db"] = np.where(df["has_audio_track"], np.round(rng.uniform(3, 30, n), 1), np.nan)
    df["face_absent_frac"] = np.where(rng.random(n) < 0.05, np.round(rng.uniform(0.3, 0.5, n), 2), 0.0)
    flipped = biased & (rng.random(n) < BIAS_LABEL_NOISE)
    df["label_flipped"] = flipped
    df["label"] = [_other(rng, e) if f else e for e, f in zip(df["true_emotion"], flipped)]
    votes = np.array([_votes(rng, lab, inten) for lab, inten in zip(df["label"], df["intensity"])])
    for j, c in enumerate(CLASSES):
        df[f"vote_{c}"] = votes[:, j]
    df["noise_flipped"] = False
    if cfg.label_noise > 0:
        _flip_labels(df, cfg)
    df["background"] = [tuple(int(v) for v in rng.integers(90, 210, 3)) for _ in range(n)]
    onset = rng.uniform(0.0, 0.25, n)
    offset = rng.uniform(0.8, 1.0, n)
    df["dynamics"] = [tuple(float(v) * cfg.seconds for v in d) for d in zip(
        onset, onset + rng.uniform(0.15, 0.35, n), offset - rng.uniform(0.1, 0.3, n), offset)]
    df["absent_start"] = rng.uniform(0, 1, n)
    df["sway"] = [tuple(rng.uniform(0, 2 * np.pi, 2)) for _ in range(n)]
    return df, subjects


def _flip_labels(df: pd.DataFrame, cfg: SynthConfig) -> None:
    """Flip round(label_noise x clips) labels of ``df`` in place (see the module docstring), with
    split votes; marks them in ``label_flipped`` and ``noise_flipped``.

    Draws from its own stream (seed, NOISE_STREAM), so every other planned column, and so every
    rendered clip, is that of the same seed without noise.
    """
    rng = np.random.default_rng([cfg.seed, NOISE_STREAM])
    free = np.flatnonzero(~df["label_flipped"].to_numpy())
    k = min(len(free), int(round(cfg.label_noise * len(df))))
    for i in np.sort(rng.choice(free, size=k, replace=False)):
        original, intensity = str(df.at[i, "true_emotion"]), float(df.at[i, "intensity"])
        noisy = _other(rng, original)
        follow = int(rng.binomial(N_ANNOTATORS, 0.5))  # annotators who agree with the recorded label
        votes = np.add(_votes(rng, noisy, intensity, follow), _votes(rng, original, intensity, N_ANNOTATORS - follow))
        df.loc[i, ["label", "label_flipped", "noise_flipped"]] = [noisy, True, True]
        df.loc[i, [f"vote_{c}" for c in CLASSES]] = votes


def noise_record(cfg: SynthConfig, n_flipped: int) -> dict[str, Any] | None:
    """The sidecar's ``extra.label_noise``: fraction, clips flipped, how votes were drawn; None at 0."""
    if cfg.label_noise <= 0:
        return None
    return {"fraction": cfg.label_noise, "n_flipped": int(n_flipped), "to": "uniform other class",
            "votes": "each annotator follows the recorded label with probability 1/2, else the original",
            "original_label_column": "true_emotion"}


#: Manifest column order (the rest of the plan only drives rendering).
MANIFEST_COLUMNS: tuple[str, ...] = (
    "clip_id", "path", "label", "subject", "fold", *SUBGROUPS, "informative", "true_emotion",
    "face_emotion", "voice_emotion", "intensity", "expression_region", "low_light", "occluded",
    "occluder_region", "head_yaw", "voice_snr_db", "has_audio_track", "face_absent_frac", "label_flipped",
    *(f"vote_{c}" for c in CLASSES),
)


def _style(spec: dict[str, Any], subject: dict[str, Any]) -> FaceStyle:
    return FaceStyle(face_w=subject["face_w"], face_h=subject["face_h"], eye_dx=subject["eye_dx"],
                     skin=subject["skin"], hair=subject["hair"], background=spec["background"],
                     long_hair=subject["sex"] == "f", wrinkles=subject["age_group"] == "senior",
                     headwear=HEADWEAR[subject["culture"]], yaw=float(spec["head_yaw"]))


def render_frames(spec: dict[str, Any], subject: dict[str, Any], cfg: SynthConfig,
                  rng: np.random.Generator) -> np.ndarray:
    """(N, S, S, 3) uint8 frames of one planned clip (N = round(seconds * fps))."""
    renderer = FaceRenderer(_style(spec, subject), cfg.size)
    n = int(round(cfg.seconds * cfg.fps))
    t = np.arange(n) / cfg.fps
    level = envelope(t, *spec["dynamics"]) * spec["intensity"]  # (N,)
    absent = np.zeros(n, bool)
    if spec["face_absent_frac"] > 0:
        length = int(round(spec["face_absent_frac"] * n))
        start = int(spec["absent_start"] * (n - length))
        absent[start:start + length] = True
    amp = cfg.size * 0.012  # head sway of about 1% of the frame side
    frames = np.empty((n, cfg.size, cfg.size, 3), np.uint8)
    for i in range(n):
        if absent[i]:
            frames[i] = renderer.blank()
            continue
        shift = (int(round(amp * np.sin(1.3 * t[i] + spec["sway"][0]))),
                 int(round(amp * 0.5 * np.sin(0.9 * t[i] + spec["sway"][1]))))
        params = expression(spec["face_emotion"], float(level[i]), region=spec["expression_region"])
        frames[i] = renderer.frame(params, occluder=spec["occluder_region"], shift=shift)
    if spec["low_light"]:
        dark = frames.astype(np.float32) * 0.3 + rng.normal(0.0, 4.0, frames.shape)
        frames = np.clip(dark, 0, 255).astype(np.uint8)
    return frames


def render_audio(spec: dict[str, Any], subject: dict[str, Any], cfg: SynthConfig,
                 rng: np.random.Generator) -> np.ndarray | None:
    """(round(seconds * 16000),) float32 voice of one planned clip, or None without an audio track."""
    if not spec["has_audio_track"]:
        return None
    return synth_voice(emotion=spec["voice_emotion"], intensity=min(1.0, spec["intensity"]), sex=subject["sex"],
                       seconds=cfg.seconds, snr_db=float(spec["voice_snr_db"]), rng=rng,
                       speaker_f0=subject["speaker_f0"], sample_rate=SAMPLE_RATE)


def render_clip(spec: dict[str, Any], subject: dict[str, Any], cfg: SynthConfig, out: str) -> str:
    """Render and write one clip to ``out/spec['path']``; returns the clip id."""
    rng = np.random.default_rng([cfg.seed, int(spec["clip_id"].split("_")[-1])])
    frames = render_frames(spec, subject, cfg, rng)
    audio = render_audio(spec, subject, cfg, rng)
    target = Path(out) / spec["path"]
    # written beside the target and renamed, so a killed run never leaves a half-written clip
    partial = target.with_name(f".{target.stem}.partial.mp4")
    write_video(partial, frames, fps=cfg.fps, audio=audio, sample_rate=SAMPLE_RATE)
    os.replace(partial, target)
    return spec["clip_id"]


def _claim(out: Path, config: SynthConfig) -> None:
    """Record the configuration in ``out/synth_config.json``; refuse a folder made with another one
    (its clips would otherwise be mixed into this dataset)."""
    record = out / "synth_config.json"
    settings = json.dumps(_settings(config), sort_keys=True, default=str)
    if record.is_file() and record.read_text() != settings:
        raise ValueError(f"{out}: already holds a synthetic dataset made with other settings "
                         f"({record}); use another folder or delete it")
    record.write_text(settings)


def _settings(cfg: SynthConfig) -> dict[str, Any]:
    """The settings that shape the files (no ``workers``; ``label_noise`` only when used, so the
    record of a noise-free set reads as it always did)."""
    settings = {k: v for k, v in asdict(cfg).items() if k != "workers"}
    if not cfg.label_noise:
        settings.pop("label_noise")
    return settings


def _meta(cfg: SynthConfig, n_noise_flipped: int = 0) -> ManifestMeta:
    bias = None
    if cfg.plant_bias is not None:
        bias = {"column": cfg.plant_bias[0], "value": cfg.plant_bias[1],
                "intensity_scale": BIAS_INTENSITY_SCALE, "label_noise": BIAS_LABEL_NOISE}
    extra = {"generator": "femo.data.synth", "config": {**_settings(cfg), "plant_bias": cfg.plant_bias and list(cfg.plant_bias)},
             "planted_bias": bias, "subgroups": {c: list(v) for c, v in SUBGROUPS.items()},
             "annotators": N_ANNOTATORS, "sample_rate": SAMPLE_RATE}
    if cfg.label_noise:
        extra["label_noise"] = noise_record(cfg, n_noise_flipped)
    return ManifestMeta(dataset="synthetic", classes=CLASSES, extra=extra)


def generate(out: str | Path, config: SynthConfig = SynthConfig(), *,
             log: Callable[[str], None] = print, progress: bool = True) -> Path:
    """Write the dataset under ``out`` (clips/, manifest.csv, manifest.meta.json); returns the manifest path.

    Clips are rendered in a process pool; each clip's randomness comes from (seed, clip index), so
    the output does not depend on the number of workers.
    """
    out = Path(out)
    (out / "clips").mkdir(parents=True, exist_ok=True)
    _claim(out, config)
    plan, subjects = plan_clips(config)
    by_subject = {row["subject"]: row for row in subjects.to_dict("records")}
    # clips already on disk are complete (atomic writes), so a rerun resumes where it stopped
    specs = [s for s in plan.to_dict("records") if not (out / s["path"]).is_file()]
    workers = config.workers or os.cpu_count() or 1
    start = time.perf_counter()
    bar = tqdm(total=len(specs), desc="synth", unit="clip", disable=not progress or not specs)
    if workers == 1:
        for spec in specs:
            render_clip(spec, by_subject[spec["subject"]], config, str(out))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            jobs = [pool.submit(render_clip, s, by_subject[s["subject"]], config, str(out)) for s in specs]
            for job in as_completed(jobs):
                job.result()
                bar.update()
    bar.close()
    log(f"rendered {len(specs)} of {len(plan)} clips ({len(plan) - len(specs)} already present) "
        f"with {workers} worker(s) in {time.perf_counter() - start:.1f} s")
    manifest = plan[list(MANIFEST_COLUMNS)].copy()
    manifest["path"] = [str((out / p).absolute()) for p in manifest["path"]]
    return write_manifest(manifest, out / "manifest.csv", _meta(config, int(plan["noise_flipped"].sum())))
