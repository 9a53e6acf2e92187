"""Manifest schema, read/write round trip, validation of bad inputs, and the `femo manifest` command."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from _media import frame_folder, image, lfs_pointer, mp4, truncated_mp4, wav
from femo.cli import main
from femo.data.manifest import (
    ManifestError, ManifestMeta, ManifestWarning, canonical_label, empty_classes, is_lfs_pointer, meta_path,
    order_classes, read_manifest, subject_folds, validate_manifest, write_manifest,
)

CLASSES3 = ("happy", "sad", "angry")


def _row(clip_id: str, path: Path | str, label: str = "happy", **extra) -> dict:
    return {"clip_id": clip_id, "path": str(path), "label": label, "subject": extra.pop("subject", clip_id), **extra}


def test_write_read_round_trip_relative_paths(tmp_path):
    clip = mp4(tmp_path / "data" / "00001.mp4")
    outside = tmp_path.parent / "elsewhere.mp4"
    df = pd.DataFrame([_row("00001", clip, fold=1, age=31, audio_path=str(clip)),
                       _row("00002", outside, "sad", fold=2, age=40, audio_path=None)])
    meta = ManifestMeta(dataset="toy", classes=CLASSES3, extra={"note": "x"})
    out = write_manifest(df, tmp_path / "manifest.csv", meta)

    raw = pd.read_csv(out, dtype=str)
    assert raw["path"].tolist() == ["data/00001.mp4", os.path.normpath(outside)]
    side = json.loads(meta_path(out).read_text())
    assert side == {"dataset": "toy", "classes": list(CLASSES3), "extra": {"note": "x"}}
    assert meta_path(out).name == "manifest.meta.json"

    back, back_meta = read_manifest(out)
    assert back_meta == meta
    assert back["clip_id"].tolist() == ["00001", "00002"]  # zero padding survives
    assert back["path"].tolist() == [str(clip), os.path.normpath(outside)]
    assert back["audio_path"].iat[0] == str(clip) and pd.isna(back["audio_path"].iat[1])
    assert str(back["fold"].dtype) == "Int64" and back["fold"].tolist() == [1, 2]
    assert back["age"].tolist() == [31, 40]


def test_read_without_sidecar_infers_classes_canonical_first(tmp_path):
    path = tmp_path / "m.csv"
    pd.DataFrame([_row("a", "a.mp4", "contempt"), _row("b", "b.mp4", "sad"), _row("c", "c.mp4", "happy"),
                  _row("d", "d.mp4", "calm")]).to_csv(path, index=False)
    _, meta = read_manifest(path)
    assert meta.classes == ("happy", "sad", "calm", "contempt")
    assert meta.dataset == "unknown"


def test_wrong_header_names_file_and_header(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("video,emotion\n1,happy\n")
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    message = str(err.value)
    assert str(path) in message and "['video', 'emotion']" in message and "clip_id" in message


def test_missing_manifest_and_bad_sidecar(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "nope.csv")
    path = tmp_path / "m.csv"
    pd.DataFrame([_row("a", "a.mp4")]).to_csv(path, index=False)
    meta_path(path).write_text("{not json")
    with pytest.raises(ManifestError, match="m.meta.json"):
        read_manifest(path)


def test_label_helpers():
    assert [canonical_label(x) for x in ("Anger", " Happiness", "fearful", "Surprised", "calm")] == [
        "angry", "happy", "fear", "surprise", "calm"]
    assert order_classes(["zeta", "fear", "happy", "alpha", "fear"]) == ("happy", "fear", "alpha", "zeta")


def test_subject_folds_deterministic_balanced_subject_independent():
    subjects = pd.Series([f"{a:02d}" for a in range(1, 25) for _ in range(3)])
    folds = subject_folds(subjects, 5)
    again = subject_folds(subjects.sample(frac=1.0, random_state=0), 5).sort_index()
    assert folds.tolist() == again.tolist()  # row order does not matter
    per_subject = pd.DataFrame({"s": subjects, "f": folds}).groupby("s")["f"].nunique()
    assert (per_subject == 1).all()
    sizes = pd.DataFrame({"s": subjects, "f": folds}).drop_duplicates("s")["f"].value_counts()
    assert sorted(sizes.index) == [1, 2, 3, 4, 5] and sizes.max() - sizes.min() <= 1


@pytest.fixture
def mixed(tmp_path):
    """Good clips of every path kind plus one clip per kind of bad input."""
    d = tmp_path / "clips"
    rows = [
        _row("video", mp4(d / "video.mp4")),
        _row("frames", frame_folder(d / "frames", 3, ".png"), "sad"),
        _row("still", image(d / "still.jpg"), "sad"),
        _row("voice", wav(d / "voice.wav")),
        _row("lfs", lfs_pointer(d / "lfs.mp4")),
        _row("missing", d / "missing.mp4"),
        _row("empty", (d / "empty").mkdir() or d / "empty"),
        _row("trunc", truncated_mp4(d / "trunc.mp4")),
        _row("video", mp4(d / "video2.mp4", seed=1)),
        _row("alien", mp4(d / "alien.mp4", seed=2), "contempt"),
        _row("badaudio", mp4(d / "badaudio.mp4", audio=False), audio_path=str(lfs_pointer(d / "badaudio.wav"))),
        _row("nolabel", d / "video.mp4", ""),
        _row("x", d / "video.mp4", build_error="x: name does not parse"),
    ]
    return pd.DataFrame(rows)


def test_validate_reports_every_bad_clip_with_reason(mixed):
    meta = ManifestMeta(dataset="toy", classes=CLASSES3)
    with pytest.warns(ManifestWarning, match="angry"):
        good, bad = validate_manifest(mixed, meta, workers=2)
    assert good["clip_id"].tolist() == ["video", "frames", "still", "voice"]
    assert "build_error" not in good.columns
    checks = dict(zip(bad["clip_id"] + "@" + bad["path"].map(lambda p: Path(p).name), bad["check"]))
    assert checks == {
        "lfs@lfs.mp4": "lfs_pointer", "missing@missing.mp4": "missing_file", "empty@empty": "empty_folder",
        "trunc@trunc.mp4": "unreadable", "video@video2.mp4": "duplicate_id", "alien@alien.mp4": "unknown_label",
        "badaudio@badaudio.mp4": "audio_lfs_pointer", "nolabel@video.mp4": "missing_value",
        "x@video.mp4": "build",
    }
    reasons = dict(zip(bad["clip_id"] + bad["check"], bad["reason"]))
    assert "lfs.mp4" in reasons["lfslfs_pointer"] and "git lfs pull" in reasons["lfslfs_pointer"]
    assert "trunc.mp4" in reasons["truncunreadable"]
    assert "video.mp4" in reasons["videoduplicate_id"]  # names the first occurrence
    assert "'contempt'" in reasons["alienunknown_label"]
    assert len(good) + len(bad) == len(mixed)
    assert empty_classes(good, meta.classes) == ["angry"]


def test_validate_without_media_checks_keeps_structural_ones(mixed):
    meta = ManifestMeta(dataset="toy", classes=CLASSES3)
    with pytest.warns(ManifestWarning):
        good, bad = validate_manifest(mixed, meta, check_media=False)
    assert sorted(bad["check"]) == ["build", "duplicate_id", "missing_value", "unknown_label"]
    assert "lfs" in good["clip_id"].tolist() and "missing" in good["clip_id"].tolist()


def test_validate_refuses_missing_columns():
    with pytest.raises(ManifestError, match="subject"):
        validate_manifest(pd.DataFrame({"clip_id": ["a"], "path": ["a"], "label": ["happy"]}),
                          ManifestMeta(classes=CLASSES3))


def test_is_lfs_pointer(tmp_path):
    assert is_lfs_pointer(lfs_pointer(tmp_path / "a.mp4"))
    assert not is_lfs_pointer(mp4(tmp_path / "b.mp4"))
    assert not is_lfs_pointer(tmp_path / "nope.mp4")


@pytest.fixture
def label_tree(tmp_path):
    root = tmp_path / "mine"
    mp4(root / "Happy" / "s01_a.mp4")
    frame_folder(root / "happy" / "s02_b")
    image(root / "Sad" / "s01_c.png")
    lfs_pointer(root / "Sad" / "s03_d.mp4")
    return root


def test_cli_writes_manifest_excluded_and_summary(label_tree, tmp_path, capsys):
    out = tmp_path / "out" / "manifest.csv"
    assert main(["manifest", "folder", str(label_tree), "--out", str(out), "--subject-pattern", r"^(s\d+)_",
                 "--workers", "2"]) == 0
    text = capsys.readouterr().out
    assert "3 clip(s) kept, 1 excluded" in text and "lfs_pointer" in text
    df, meta = read_manifest(out)
    assert sorted(df["clip_id"]) == ["Happy_s01_a", "Sad_s01_c", "happy_s02_b"]
    assert sorted(df["subject"]) == ["s01", "s01", "s02"]
    assert meta.classes == ("happy", "sad") and meta.extra["n_excluded"] == 1
    assert meta.extra["excluded_by_check"] == {"lfs_pointer": 1}
    excluded = pd.read_csv(out.parent / "manifest.excluded.csv", dtype=str)
    assert excluded["clip_id"].tolist() == ["Sad_s03_d"] and excluded["check"].tolist() == ["lfs_pointer"]


def test_cli_strict_fails_and_writes_nothing(label_tree, tmp_path, capsys):
    out = tmp_path / "strict" / "manifest.csv"
    assert main(["manifest", "folder", str(label_tree), "--out", str(out), "--strict"]) == 1
    err = capsys.readouterr().err
    assert "Sad_s03_d" in err and "Git LFS pointer" in err
    assert not out.exists() and not (out.parent / "manifest.excluded.csv").exists()


def test_cli_clean_run_removes_stale_excluded(label_tree, tmp_path):
    out = tmp_path / "clean" / "manifest.csv"
    out.parent.mkdir()
    (out.parent / "manifest.excluded.csv").write_text("stale\n")
    (label_tree / "Sad" / "s03_d.mp4").unlink()
    assert main(["manifest", "folder", str(label_tree), "--out", str(out), "--strict"]) == 0
    assert out.exists() and not (out.parent / "manifest.excluded.csv").exists()


def test_cli_bad_option_and_root(label_tree, tmp_path, capsys):
    out = str(tmp_path / "m.csv")
    assert main(["manifest", "folder", str(label_tree), "--out", out, "-O", "colour=blue"]) == 2
    assert "unknown option(s) ['colour']" in capsys.readouterr().err
    assert main(["manifest", "folder", str(label_tree), "--out", out, "--frames", "16f"]) == 2
    assert "unknown option(s) ['frames']" in capsys.readouterr().err
    assert main(["manifest", "folder", str(tmp_path / "absent"), "--out", out]) == 2
    assert "not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["manifest", "nosuch", str(label_tree), "--out", out])


@pytest.mark.parametrize("clip_id, why", [
    ("../../escape", "path separator"), ("/abs/x", "path separator"), ("a\\b", "path separator"),
    ("..", "starts with a dot"), (".hidden", "starts with a dot"), ("a\x00b", "U+0000"),
    ("line\nbreak", "U+000A"), ("  ", "is empty"), ("C:evil", "drive letter"), ("x" * 201, "longer than 200"),
])
def test_unsafe_clip_ids_are_excluded_for_that_row_only(tmp_path, clip_id, why):
    clip = wav(tmp_path / "a.wav")
    df = pd.DataFrame([_row("good", clip), _row(clip_id, clip), _row("good2", clip, "sad")])
    good, bad = validate_manifest(df, ManifestMeta(classes=("happy", "sad")), check_media=False)
    assert good["clip_id"].tolist() == ["good", "good2"]
    assert bad["check"].tolist() == ["bad_clip_id"]
    assert why in bad["reason"].iat[0] and "row 2" in bad["reason"].iat[0]


def test_hand_written_csv_with_unsafe_ids_reads_and_validates(tmp_path):
    clip = wav(tmp_path / "a.wav")
    path = tmp_path / "m.csv"
    pd.DataFrame([_row("../x", "a.wav"), _row("ok", "a.wav"), _row(".x", "a.wav")]).to_csv(path, index=False)
    df, meta = read_manifest(path)
    good, bad = validate_manifest(df, meta)
    assert good["clip_id"].tolist() == ["ok"] and good["path"].iat[0] == str(clip)
    assert bad["clip_id"].tolist() == ["../x", ".x"] and set(bad["check"]) == {"bad_clip_id"}


def test_cli_names_exclusions_after_the_manifest(label_tree, tmp_path):
    first, second = tmp_path / "out" / "a.csv", tmp_path / "out" / "b.csv"
    assert main(["manifest", "folder", str(label_tree), "--out", str(first)]) == 0
    (label_tree / "Sad" / "s03_d.mp4").unlink()
    lfs_pointer(label_tree / "happy" / "s09_z.mp4")
    assert main(["manifest", "folder", str(label_tree), "--out", str(second)]) == 0
    assert not (tmp_path / "out" / "excluded.csv").exists()
    assert pd.read_csv(tmp_path / "out" / "a.excluded.csv")["clip_id"].tolist() == ["Sad_s03_d"]
    assert pd.read_csv(tmp_path / "out" / "b.excluded.csv")["clip_id"].tolist() == ["happy_s09_z"]


@pytest.mark.parametrize("layout", ["folder", "ravdess", "cremad"])
def test_cli_empty_root_fails_and_says_what_it_expected(tmp_path, capsys, layout):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "m.csv"
    assert main(["manifest", layout, str(tmp_path / "empty"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no clip" in err and str(tmp_path / "empty") in err and "expected" in err
    assert not out.exists()


def test_cli_root_without_any_usable_clip_fails(tmp_path, capsys):
    root = tmp_path / "junk"
    lfs_pointer(root / "happy" / "a.mp4")
    (root / "notes.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "notes.txt").write_text("hello")
    out = tmp_path / "m.csv"
    assert main(["manifest", "folder", str(root), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no usable clip" in err and "expected" in err
    assert not out.exists()


def test_ids_that_look_like_missing_values_stay_text(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("clip_id,path,label,subject,note\nnan,a.wav,happy,NA,null\nNA,b.wav,sad,s2,\n")
    df, _ = read_manifest(path)
    assert df["clip_id"].tolist() == ["nan", "NA"] and df["subject"].tolist() == ["NA", "s2"]
    assert df["note"].iat[0] == "null" and pd.isna(df["note"].iat[1])
