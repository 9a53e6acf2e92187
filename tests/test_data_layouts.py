"""Every dataset layout builder on a small real tree it writes: DFEW, MAFW, FERV39k, RAVDESS,
CREMA-D and plain label folders, plus the factory and each layout's bad-input errors."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from _media import frame_folder, image, lfs_pointer, mp4, wav
from femo.config import CLASSES
from femo.data.layouts import LAYOUTS, build_manifest, layout_options
from femo.data.manifest import ManifestError, validate_manifest

pytestmark = pytest.mark.filterwarnings("ignore::femo.data.manifest.ManifestWarning")  # tiny trees miss classes

# DFEW: clip number -> (label 1..7, test set); clips 1..10 over the 5 sets.
DFEW_CLIPS = {1: (1, 1), 2: (2, 1), 3: (3, 2), 4: (4, 2), 5: (5, 3), 6: (6, 3), 7: (7, 4), 8: (1, 4), 9: (2, 5),
              10: (3, 5)}


def _write_dfew(root: Path, spelling: str, *, with_originals=(1, 2)) -> Path:
    for part in ("train", "test"):
        folder = root / "EmoLabel_DataSplit" / f"{part}({spelling})"
        folder.mkdir(parents=True)
        for k in range(1, 6):
            rows = [(c, lab) for c, (lab, s) in DFEW_CLIPS.items() if (s == k) == (part == "test")]
            pd.DataFrame(rows, columns=["video_name", "label"]).to_csv(folder / f"set_{k}.csv", index=False)
    for c in DFEW_CLIPS:
        frame_folder(root / "Clip" / "clip_224x224" / f"{c:05d}", 2, ".jpg" if c % 2 else ".png")
        frame_folder(root / "Clip" / "clip_224x224_16f" / f"{c:05d}", 2)
    for c in with_originals:
        mp4(root / "Clip" / "original" / f"{c:05d}.mp4", seed=c)
    return root


def _write_dfew_votes(root: Path) -> None:
    header = ["order"] + [f"{i}{name.capitalize()}" for i, name in enumerate(CLASSES, start=1)] + ["label"]
    rows = [[c] + [10 if i == lab - 1 else 0 for i in range(7)] + [lab] for c, (lab, _) in DFEW_CLIPS.items()]
    rows[0][1:8] = [6, 1, 1, 0, 1, 0, 1]
    (root / "Annotation").mkdir(parents=True)
    pd.DataFrame(rows, columns=header).to_excel(root / "Annotation" / "annotation.xlsx", index=False)


@pytest.mark.parametrize("spelling", ["single-labeled", "single_labeled"])
def test_dfew_frames_folds_votes_audio(tmp_path, spelling):
    root = _write_dfew(tmp_path / "DFEW", spelling)
    _write_dfew_votes(root)
    df, meta = build_manifest("dfew", root)
    assert meta.dataset == "dfew" and meta.classes == CLASSES
    assert list(df.columns[:5]) == ["clip_id", "path", "label", "subject", "fold"]
    by_id = df.set_index("clip_id")
    assert sorted(by_id.index) == [f"{c:05d}" for c in DFEW_CLIPS]
    for c, (lab, k) in DFEW_CLIPS.items():
        assert by_id.loc[f"{c:05d}", "label"] == CLASSES[lab - 1]
        assert by_id.loc[f"{c:05d}", "fold"] == k
    assert by_id.loc["00003", "path"] == str(root / "Clip" / "clip_224x224" / "00003")
    assert by_id.loc["00001", "audio_path"] == str(root / "Clip" / "original" / "00001.mp4")
    assert pd.isna(by_id.loc["00003", "audio_path"])
    assert by_id.loc["00001", [f"vote_{c}" for c in CLASSES]].tolist() == [6, 1, 1, 0, 1, 0, 1]
    assert by_id.loc["00007", "vote_fear"] == pytest.approx(10.0)
    assert (df["subject"] == df["clip_id"]).all()
    good, bad = validate_manifest(df, meta, workers=2)
    assert len(good) == 10 and bad.empty


def test_dfew_options_and_bad_inputs(tmp_path):
    root = _write_dfew(tmp_path / "DFEW", "single-labeled", with_originals=range(1, 11))
    df, _ = build_manifest("dfew", root, frames="16f")
    assert df["path"].iat[0].endswith("Clip/clip_224x224_16f/" + df["clip_id"].iat[0])
    df, meta = build_manifest("dfew", root, source="original")
    assert df["path"].str.endswith(".mp4").all() and "audio_path" not in df.columns
    assert validate_manifest(df, meta, workers=2)[1].empty
    with pytest.raises(ValueError, match="16f"):
        build_manifest("dfew", root, frames="8f")

    test_dir = root / "EmoLabel_DataSplit" / "test(single-labeled)"
    pd.DataFrame({"video_name": [11], "label": [9]}).to_csv(test_dir / "set_5.csv", index=False)
    frame_folder(root / "Clip" / "clip_224x224" / "00011", 1)
    df, meta = build_manifest("dfew", root)
    _, bad = validate_manifest(df, meta, check_media=False)
    assert bad["check"].tolist() == ["unknown_label"] and "'9'" in bad["reason"].iat[0]

    (test_dir / "set_2.csv").write_text("clip,emotion\n3,3\n")
    with pytest.raises(ManifestError) as err:
        build_manifest("dfew", root)
    assert "set_2.csv" in str(err.value) and "['clip', 'emotion']" in str(err.value)
    (test_dir / "set_2.csv").unlink()
    with pytest.raises(ManifestError, match="set_2.csv"):
        build_manifest("dfew", root)


def test_dfew_votes_header_checked(tmp_path):
    root = _write_dfew(tmp_path / "DFEW", "single-labeled", with_originals=())
    (root / "Annotation").mkdir()
    pd.DataFrame({"order": [1], "happy": [3], "sad": [1]}).to_excel(root / "Annotation" / "annotation.xlsx",
                                                                   index=False)
    with pytest.raises(ManifestError, match=r"annotation.xlsx: wrong header .*missing \['neutral'"):
        build_manifest("dfew", root)


def _write_mafw(root: Path) -> Path:
    names = ["anger", "happiness", "contempt", "helplessness", "neutral"]
    split = root / "Train & Test Set" / "single" / "no_caption"
    for k in range(1, 6):
        (split / f"set_{k}").mkdir(parents=True)
        (split / f"set_{k}" / "test.txt").write_text(f"{k:05d}.mp4 {names[k - 1]}\n")
        (split / f"set_{k}" / "train.txt").write_text(
            "".join(f"{j:05d}.mp4 {names[j - 1]}\n" for j in range(1, 6) if j != k))
    for k in (1, 2, 3):
        mp4(root / "data" / "clips" / f"{k:05d}.mp4", seed=k)
    lfs_pointer(root / "data" / "clips" / "00004.mp4")
    frame_folder(root / "data" / "frames" / "00001", 2)
    header = ["clip", "invalid", "anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise",
              "contempt", "anxiety", "helplessness", "disappointment"]
    (root / "Labels").mkdir()
    pd.DataFrame([["00001.mp4", 0, 9, 2] + [0] * 9], columns=header).to_excel(root / "Labels" / "annotation.xlsx",
                                                                              index=False)
    return root


def test_mafw_classes_folds_votes_and_lfs(tmp_path):
    root = _write_mafw(tmp_path / "MAFW")
    df, meta = build_manifest("mafw", root)
    assert len(meta.classes) == 11 and meta.classes[:7] == CLASSES and meta.classes[7] == "contempt"
    by_id = df.set_index("clip_id")
    assert by_id["label"].to_dict() == {"00001": "angry", "00002": "happy", "00003": "contempt",
                                        "00004": "helplessness", "00005": "neutral"}
    assert by_id["fold"].to_dict() == {f"{k:05d}": k for k in range(1, 6)}
    assert by_id.loc["00001", "vote_angry"] == 9 and by_id.loc["00001", "vote_disgust"] == 2
    assert pd.isna(by_id.loc["00002", "vote_angry"])
    good, bad = validate_manifest(df, meta, workers=2)
    assert good["clip_id"].tolist() == ["00001", "00002", "00003"]
    assert dict(zip(bad["clip_id"], bad["check"])) == {"00004": "lfs_pointer", "00005": "missing_file"}

    df, _ = build_manifest("mafw", root, source="frames")
    assert df["path"].iat[0] == str(root / "data" / "frames" / "00001")
    assert df["audio_path"].iat[0] == str(root / "data" / "clips" / "00001.mp4")
    assert pd.isna(df["audio_path"].iat[4])


def test_mafw_bad_line_names_file_and_line(tmp_path):
    root = _write_mafw(tmp_path / "MAFW")
    bad = root / "Train & Test Set" / "single" / "no_caption" / "set_3" / "test.txt"
    bad.write_text("00003.mp4\tcontempt\textra words\n")
    with pytest.raises(ManifestError, match=r"set_3/test.txt:1: expected"):
        build_manifest("mafw", root)


def test_ferv39k_split_scene_labels(tmp_path):
    root = tmp_path / "FERV39k"
    clips = {"train": ["Action/Sad/0010 Sad", "Crime/Happy/0003 Happy"], "test": ["Action/Fear/0001 Fear"]}
    (root / "4_setups" / "All_scenes").mkdir(parents=True)
    for split, lines in clips.items():
        (root / "4_setups" / "All_scenes" / f"{split}_All.csv").write_text("\n".join(lines) + "\n")
        for line in lines:
            frame_folder(root / "2_ClipsforFaceCrop" / line.split()[0], 2)
    df, meta = build_manifest("ferv39k", tmp_path)  # finds ROOT/FERV39k/4_setups too
    assert meta.classes == CLASSES
    assert df[["clip_id", "label", "split", "scene"]].values.tolist() == [
        ["Action_Sad_0010", "sad", "train", "Action"], ["Crime_Happy_0003", "happy", "train", "Crime"],
        ["Action_Fear_0001", "fear", "test", "Action"]]
    assert df["path"].iat[0] == str(root / "2_ClipsforFaceCrop" / "Action" / "Sad" / "0010")
    assert validate_manifest(df, meta, workers=2)[1].empty
    with pytest.raises(ManifestError, match="Night_scenes"):
        build_manifest("ferv39k", root, setup="Night_scenes")


def test_ravdess_fields(tmp_path):
    root = tmp_path / "RAVDESS"
    mp4(root / "Actor_01" / "01-01-03-02-01-01-01.mp4")
    mp4(root / "Actor_02" / "02-02-06-01-02-02-02.mp4", audio=False)
    wav(root / "Actor_02" / "03-01-02-01-02-02-02.wav")
    wav(root / "Actor_03" / "03-01-09-01-01-01-03.wav")
    wav(root / "Actor_03" / "take_one.wav")
    df, meta = build_manifest("ravdess", root)
    assert meta.classes == CLASSES + ("calm",)
    ok = df[df["build_error"].isna()].set_index("clip_id")
    assert ok.loc["01-01-03-02-01-01-01", ["label", "intensity", "statement", "repetition", "modality",
                                           "vocal_channel", "subject", "sex"]].tolist() == [
        "happy", "strong", "kids", 1, "audio-video", "speech", "01", "male"]
    assert ok.loc["02-02-06-01-02-02-02", ["label", "modality", "vocal_channel", "sex"]].tolist() == [
        "fear", "video-only", "song", "female"]
    assert ok.loc["03-01-02-01-02-02-02", ["label", "modality", "statement"]].tolist() == [
        "calm", "audio-only", "dogs"]
    assert ok.loc["03-01-02-01-02-02-02", "fold"] == ok.loc["02-02-06-01-02-02-02", "fold"]  # same actor
    good, bad = validate_manifest(df, meta, workers=2)
    assert len(good) == 3
    reasons = dict(zip(bad["clip_id"], bad["reason"]))
    assert set(reasons) == {"03-01-09-01-01-01-03", "take_one"}
    assert "unknown emotion code 09" in reasons["03-01-09-01-01-01-03"] and "take_one.wav" in reasons["take_one"]
    only_audio, _ = build_manifest("ravdess", root, modality="audio-only")
    assert "01-01-03-02-01-01-01" not in set(only_audio["clip_id"]) and len(only_audio) == 3


def test_cremad_demographics_and_audio(tmp_path):
    root = tmp_path / "CREMA-D"
    for stem, seed in (("1001_DFA_ANG_XX", 1), ("1001_IEO_HAP_HI", 2), ("1002_TIE_NEU_LO", 3)):
        mp4(root / "VideoFlash" / f"{stem}.flv", seed=seed)  # mp4 content: the probe reads the container
        wav(root / "AudioWAV" / f"{stem}.wav")
    (root / "VideoDemographics.csv").write_text(
        "ActorID,Age,Sex,Race,Ethnicity\n1001,51,Male,Caucasian,Not Hispanic\n1002,21,Female,Asian,Not Hispanic\n")
    df, meta = build_manifest("cremad", root)
    assert meta.classes == ("happy", "sad", "neutral", "angry", "disgust", "fear")
    row = df.set_index("clip_id").loc["1001_DFA_ANG_XX"]
    assert row[["label", "subject", "sentence", "intensity", "age", "sex", "race", "ethnicity"]].tolist() == [
        "angry", "1001", "DFA", "unspecified", 51, "male", "Caucasian", "Not Hispanic"]
    assert row["audio_path"] == str(root / "AudioWAV" / "1001_DFA_ANG_XX.wav")
    assert df.groupby("subject")["fold"].nunique().max() == 1
    assert validate_manifest(df, meta, workers=2)[1].empty
    audio, _ = build_manifest("cremad", root, media="audio")
    assert audio["path"].str.endswith(".wav").all() and len(audio) == 3

    (root / "VideoDemographics.csv").write_text("Actor,Years\n1001,51\n")
    with pytest.raises(ManifestError, match=r"VideoDemographics.csv: wrong header \['Actor', 'Years'\]"):
        build_manifest("cremad", root)


def test_folder_layout_every_path_kind(tmp_path):
    root = tmp_path / "mine"
    mp4(root / "Anger" / "clip1.mp4")
    wav(root / "Anger" / "voice.wav")
    image(root / "happy" / "face.jpg")
    frame_folder(root / "happy" / "seq")
    frame_folder(root / "Contempt" / "seq2")
    (root / "happy" / "notes.txt").write_text("hello")
    (root / "stray.mp4").write_bytes(b"x")
    (root / ".hidden").mkdir()
    df, meta = build_manifest("folder", root, folds="3")
    assert meta.classes == ("happy", "angry", "contempt")
    assert set(df["fold"]) <= {1, 2, 3}
    good, bad = validate_manifest(df, meta, workers=2)
    assert sorted(good["clip_id"]) == ["Anger_clip1", "Anger_voice", "Contempt_seq2", "happy_face", "happy_seq"]
    assert dict(zip(good["clip_id"], good["label"]))["Anger_voice"] == "angry"
    assert sorted(bad["check"]) == ["build", "build"]
    assert any("unsupported file type '.txt'" in r for r in bad["reason"])
    assert any("directly under the root" in r for r in bad["reason"])


def test_factory_refuses_unknown_layouts_and_options(tmp_path):
    assert LAYOUTS == ("dfew", "mafw", "ferv39k", "ravdess", "cremad", "folder")
    with pytest.raises(ValueError, match="known layouts: dfew, mafw, ferv39k, ravdess, cremad, folder"):
        build_manifest("affectnet", tmp_path)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['fps'\]; known: \['folds', 'subject_pattern'\]"):
        build_manifest("folder", tmp_path, fps=3)
    with pytest.raises(ValueError, match="expected int"):
        build_manifest("folder", tmp_path, folds="many")
    assert layout_options("dfew") == {"frames": "all", "source": "frames"}
    with pytest.raises(ManifestError, match="DFEW test split folder"):
        build_manifest("dfew", tmp_path)


def test_dfew_through_the_command(tmp_path, capsys):
    from femo.cli import main
    from femo.data.manifest import read_manifest

    root = _write_dfew(tmp_path / "DFEW", "single_labeled")
    _write_dfew_votes(root)
    out = root / "manifest.csv"
    assert main(["manifest", "dfew", str(root), "--out", str(out), "--frames", "16f", "--strict"]) == 0
    assert "dfew: 10 clip(s) kept, 0 excluded" in capsys.readouterr().out
    assert pd.read_csv(out, dtype=str)["path"].iat[0].startswith("Clip/clip_224x224_16f/")  # relative inside root
    df, meta = read_manifest(out)
    assert meta.classes == CLASSES and meta.extra["frames"] == "16f" and meta.extra["empty_classes"] == []
    assert Path(df["path"].iat[0]).is_dir() and df["vote_happy"].iat[0] == pytest.approx(6.0)
    assert df["fold"].tolist() == [DFEW_CLIPS[int(c)][1] for c in df["clip_id"]]


def test_pipeline_data_stage_builds_a_dfew_manifest(tmp_path):
    """`make report DATA=/path/to/DFEW`: the pipeline's data stage turns a DFEW root into a manifest,
    and a manifest CSV given as DATA is used as it is."""
    import argparse

    from femo.commands import pipeline
    from femo.data.manifest import read_manifest

    root = _write_dfew(tmp_path / "DFEW", "single-labeled")
    manifest = pipeline._data_stage(argparse.Namespace(data=str(root), clips=None), tmp_path / "work")
    df, meta = read_manifest(manifest)
    assert meta.dataset == "dfew" and len(df) == len(DFEW_CLIPS)
    assert sorted(df["fold"].unique().tolist()) == [1, 2, 3, 4, 5]
    again = pipeline._data_stage(argparse.Namespace(data=str(manifest), clips=None), tmp_path / "other")
    assert again == manifest.resolve()
    with pytest.raises(pipeline.StageError, match="not found"):
        pipeline._data_stage(argparse.Namespace(data=str(tmp_path / "missing"), clips=None), tmp_path / "w")
