"""The synthetic dataset: planted columns, bias, determinism, real decodable media, detectability."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from femo.cli import main as femo_main
from femo.config import CLASSES
from femo.data.decode import iter_frames, load_clip
from femo.data.manifest import read_manifest
from femo.data.synth import (BIAS_INTENSITY_SCALE, SUBGROUPS, SynthConfig, generate, parse_bias, plan_clips)
from femo.data.synth_face import FaceRenderer, FaceStyle, envelope, expression
from femo.data.synth_voice import synth_voice

SMALL = dict(clips=8, subjects=5, size=96, seconds=1.0, fps=10.0)


@pytest.fixture(scope="module")
def plan():
    return plan_clips(SynthConfig(clips=700, seed=3))[0]


def test_labels_balanced_and_modalities(plan):
    assert set(plan["label"].value_counts()) == {100}
    assert plan["informative"].value_counts().to_dict() == pytest.approx({"face": 234, "audio": 233, "both": 233}, abs=1)
    both = plan[plan["informative"] == "both"]
    assert (both["face_emotion"] == both["label"]).all() and (both["voice_emotion"] == both["label"]).all()
    face = plan[plan["informative"] == "face"]
    assert (face["face_emotion"] == face["label"]).all() and (face["voice_emotion"] != face["label"]).all()
    audio = plan[plan["informative"] == "audio"]
    assert (audio["voice_emotion"] == audio["label"]).all() and (audio["face_emotion"] != audio["label"]).all()


def test_nuisance_and_subgroup_columns(plan):
    assert plan["low_light"].mean() == pytest.approx(0.15, abs=0.05)
    assert plan["occluded"].mean() == pytest.approx(0.15, abs=0.05)
    assert set(plan.loc[plan["occluded"], "occluder_region"]) == {"mouth", "eyes"}
    assert set(plan.loc[~plan["occluded"], "occluder_region"]) == {"none"}
    assert (plan["expression_region"] == "mouth").mean() == pytest.approx(0.2, abs=0.05)
    assert (~plan["has_audio_track"]).mean() == pytest.approx(0.05, abs=0.03)
    assert plan.loc[~plan["has_audio_track"], "voice_snr_db"].isna().all()
    assert (plan["face_absent_frac"] > 0).mean() == pytest.approx(0.05, abs=0.03)
    assert plan["head_yaw"].abs().max() <= 40 and (plan["head_yaw"].abs() > 15).mean() > 0.1
    for column, values in SUBGROUPS.items():
        assert set(plan[column]) == set(values)
    assert plan.groupby("subject")["fold"].nunique().max() == 1
    assert sorted(plan["fold"].unique()) == [1, 2, 3, 4, 5]
    assert plan["subject"].nunique() == 40 and not plan["label_flipped"].any()
    assert (plan["label"] == plan["true_emotion"]).all()


def test_votes_follow_labels_and_intensity(plan):
    votes = plan[[f"vote_{c}" for c in CLASSES]].to_numpy()
    assert (votes.sum(axis=1) == 10).all()
    agree = votes[np.arange(len(plan)), plan["label"].map(CLASSES.index).to_numpy()]
    assert (votes.argmax(axis=1) == plan["label"].map(CLASSES.index)).mean() > 0.8
    strong = plan["intensity"] > plan["intensity"].median()
    assert agree[strong.to_numpy()].mean() > agree[~strong.to_numpy()].mean() + 0.5


def test_planted_bias():
    cfg = SynthConfig(clips=700, seed=3, plant_bias=parse_bias("skin_tone=dark"))
    biased = plan_clips(cfg)[0]
    plain = plan_clips(SynthConfig(clips=700, seed=3))[0]
    dark = biased["skin_tone"] == "dark"
    ratio = biased.loc[dark, "intensity"].mean() / plain.loc[dark, "intensity"].mean()
    assert ratio == pytest.approx(BIAS_INTENSITY_SCALE, rel=1e-3)
    assert (biased.loc[~dark, "intensity"] == plain.loc[~dark, "intensity"]).all()
    assert not biased.loc[~dark, "label_flipped"].any()
    assert biased.loc[dark, "label_flipped"].mean() == pytest.approx(0.25, abs=0.07)
    assert ((biased["label"] != biased["true_emotion"]) == biased["label_flipped"]).all()
    flipped = biased[biased["label_flipped"]]
    top = flipped[[f"vote_{c}" for c in CLASSES]].to_numpy().argmax(axis=1)
    assert (top == flipped["label"].map(CLASSES.index).to_numpy()).mean() > 0.4


@pytest.mark.parametrize("text", ["skin_tone=purple", "height=tall"])
def test_unknown_bias_refused(text):
    with pytest.raises(ValueError, match="unknown bias subgroup"):
        SynthConfig(plant_bias=parse_bias(text))
    with pytest.raises(ValueError, match="COLUMN=VALUE"):
        parse_bias("skin_tone")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    a = generate(root / "a", SynthConfig(seed=7, workers=2, **SMALL), log=lambda _: None)
    b = generate(root / "b", SynthConfig(seed=7, workers=1, **SMALL), log=lambda _: None)
    c = generate(root / "c", SynthConfig(seed=8, workers=1, plant_bias=("culture", "B"), **SMALL),
                 log=lambda _: None)
    return a, b, c


def test_generate_is_deterministic(small):
    a, b, c = small
    df_a, df_b = pd.read_csv(a), pd.read_csv(b)
    pd.testing.assert_frame_equal(df_a, df_b)
    for rel in df_a["path"]:
        assert (a.parent / rel).read_bytes() == (b.parent / rel).read_bytes()
    clip_a, clip_b = load_clip(a.parent / df_a["path"][0]), load_clip(b.parent / df_b["path"][0])
    np.testing.assert_array_equal(clip_a.frames, clip_b.frames)
    df_c = pd.read_csv(c)
    assert not df_a.drop(columns=["path"]).equals(df_c.drop(columns=["path"]))
    assert (a.parent / df_a["path"][0]).read_bytes() != (c.parent / df_c["path"][0]).read_bytes()


def test_rerun_resumes_missing_clips_and_refuses_other_settings(small, tmp_path):
    a = small[0]
    folder = tmp_path / "resume"
    first = generate(folder, SynthConfig(seed=7, workers=1, **SMALL), log=lambda _: None, progress=False)
    paths = pd.read_csv(first)["path"].tolist()
    for rel in paths[::2]:  # a killed run: half the clips never written
        (folder / rel).unlink()
    lines = []
    generate(folder, SynthConfig(seed=7, workers=2, **SMALL), log=lines.append, progress=False)
    assert f"rendered {len(paths[::2])} of {len(paths)} clips" in lines[0]
    for rel in paths:
        assert (folder / rel).read_bytes() == (a.parent / rel).read_bytes()
    assert not list(folder.glob("clips/.*partial*"))
    with pytest.raises(ValueError, match="other settings"):
        generate(folder, SynthConfig(seed=8, workers=1, **SMALL), log=lambda _: None, progress=False)


def test_generated_media_and_sidecar(small):
    a, _, c = small
    df, meta = read_manifest(a)
    assert meta.dataset == "synthetic" and meta.classes == CLASSES
    assert meta.extra["planted_bias"] is None
    for row in df.itertuples():
        clip = load_clip(row.path, num_frames=16)
        assert clip.frames.shape == (16, 96, 96, 3)
        assert clip.has_audio == row.has_audio_track
        if clip.has_audio:
            assert clip.audio.shape == (16_000,)
    side = json.loads(c.with_name("manifest.meta.json").read_text())
    assert side["extra"]["planted_bias"] == {"column": "culture", "value": "B", "intensity_scale": 0.4,
                                             "label_noise": 0.25}


def test_cli(tmp_path, capsys):
    assert femo_main(["synth", str(tmp_path / "out"), "--clips", "2", "--subjects", "5", "--size", "64",
                      "--seconds", "0.5", "--workers", "1"]) == 0
    assert len(pd.read_csv(tmp_path / "out" / "manifest.csv")) == 2
    assert femo_main(["synth", str(tmp_path / "bad"), "--plant-bias", "skin_tone=blue"]) == 2
    assert "unknown bias subgroup" in capsys.readouterr().err


STYLE = FaceStyle(face_w=0.28, face_h=0.37, eye_dx=0.11, skin=(200, 150, 110), hair=(40, 30, 20),
                  background=(150, 170, 190), long_hair=True, wrinkles=False, headwear="none")


@pytest.mark.parametrize("emotion", [c for c in CLASSES if c != "neutral"])
def test_mouth_only_expression_leaves_eyes_neutral(emotion):
    renderer = FaceRenderer(STYLE, 192)
    neutral = renderer.frame(expression("neutral", 1.0)).astype(int)
    full = renderer.frame(expression(emotion, 1.0)).astype(int)
    mouth = renderer.frame(expression(emotion, 1.0, region="mouth")).astype(int)
    upper, lower = slice(0, 110), slice(120, 192)  # eyes/brows at ~y 70-90, mouth at ~y 138
    assert np.abs(mouth[upper] - neutral[upper]).sum() == 0
    assert np.abs(mouth[lower] - neutral[lower]).sum() > 0 or emotion == "sad"
    assert np.abs(full - neutral).sum() > np.abs(mouth - neutral).sum() * 0.99


def test_envelope_dynamics():
    t = np.linspace(0, 2, 201)
    env = envelope(t, 0.2, 0.6, 1.4, 1.8)
    assert env[t < 0.2].max() == 0 and env[t > 1.8].max() == 0
    assert np.all(env[(t >= 0.6) & (t <= 1.4)] == pytest.approx(1.0))
    assert np.all(np.diff(env[(t >= 0.2) & (t <= 0.6)]) >= 0)


def _peak_hz(audio: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    freqs = np.fft.rfftfreq(len(audio), 1 / 16_000)
    band = (freqs > 60) & (freqs < 600)
    return float(freqs[band][spectrum[band].argmax()])


def test_voice_prosody_depends_on_emotion():
    def voice(emotion, sex="f"):
        return synth_voice(emotion=emotion, intensity=1.0, sex=sex, seconds=2.0, snr_db=40.0,
                           rng=np.random.default_rng(0))

    happy, sad, angry = voice("happy"), voice("sad"), voice("angry")
    assert happy.shape == (32_000,) and happy.dtype == np.float32 and np.abs(happy).max() <= 1.0
    assert _peak_hz(happy) > 1.25 * _peak_hz(sad)
    assert _peak_hz(voice("neutral", "m")) < 0.75 * _peak_hz(voice("neutral", "f"))
    assert np.sqrt(np.mean(angry ** 2)) > 2 * np.sqrt(np.mean(sad ** 2))


def _detection_rate(manifest) -> tuple[float, int]:
    """Share of frames with a drawn face that FaceLandmarker (VIDEO mode) finds."""
    from femo.assets import MissingModelError, asset_path

    try:
        model = asset_path("face_landmarker.task")
    except MissingModelError as exc:
        pytest.skip(str(exc))
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    opts = vision.FaceLandmarkerOptions(base_options=BaseOptions(model_asset_path=str(model)),
                                        running_mode=vision.RunningMode.VIDEO)
    df, _ = read_manifest(manifest)
    found = present = 0
    for row in df.itertuples():
        with vision.FaceLandmarker.create_from_options(opts) as landmarker:
            hits = [bool(landmarker.detect_for_video(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb),
                                                     int(t * 1000)).face_landmarks)
                    for t, rgb in iter_frames(row.path)]
        found += sum(hits)
        present += len(hits) - int(round(row.face_absent_frac * len(hits)))
    return found / present, present


def test_faces_are_detected(tmp_path):
    manifest = generate(tmp_path, SynthConfig(clips=4, seed=1, seconds=1.0, workers=1), log=lambda _: None)
    rate, frames = _detection_rate(manifest)
    assert frames >= 50 and rate >= 0.95


@pytest.mark.slow
def test_faces_are_detected_default_size(tmp_path):
    manifest = generate(tmp_path, SynthConfig(clips=60, seed=2), log=lambda _: None)
    rate, frames = _detection_rate(manifest)
    assert frames >= 1500 and rate >= 0.95
