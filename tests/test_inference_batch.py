"""`femo predict DIR_OR_GLOB --out-dir OUT [--workers N]`: one JSON per video, a summary, resume, failures."""
from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from femo.cli import main
from femo.inference.batch import expand_inputs, output_names

from _media import CLASSES, astronaut_clip, make_run


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("batch")
    videos = d / "videos"
    astronaut_clip(videos / "a.mp4", seconds=1.0)
    astronaut_clip(videos / "b.mp4", seconds=1.5, audio=False)
    (videos / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    (videos / "notes.txt").write_text("not a video")
    return {"videos": videos, "run": make_run(d / "run")}


def test_expand_inputs_folders_globs_and_names(folder, tmp_path):
    v = folder["videos"]
    assert expand_inputs([v]) == [v / "a.mp4", v / "b.mp4", v / "broken.mp4"]
    assert expand_inputs([str(v / "[ab].mp4"), v / "a.mp4"]) == [v / "a.mp4", v / "b.mp4"]  # once each
    (tmp_path / "x").mkdir(), (tmp_path / "y").mkdir()
    same = [tmp_path / "x" / "clip.mp4", tmp_path / "y" / "clip.mp4"]
    assert output_names(same) == ["x__clip.mp4.json", "y__clip.mp4.json"]


def test_folder_run_lists_failures_and_resumes(folder, tmp_path, capsys):
    out = tmp_path / "out"
    cmd = ["predict", str(folder["videos"]), "--run", str(folder["run"]), "--out-dir", str(out)]
    assert main(cmd) == 1  # broken.mp4 failed, the others are done
    summary = pd.read_csv(out / "summary.csv", keep_default_na=False)
    assert list(summary["status"]) == ["ok", "ok", "failed"]
    assert "broken.mp4" in summary.loc[2, "error"] and "failed" in capsys.readouterr().err
    assert set(summary["label"][:2]) <= set(CLASSES) and summary["audio"].astype(str).tolist()[:2] == ["True", "False"]
    doc = json.loads((out / "a.mp4.json").read_text())
    assert doc["predicted_with"]["window"] == 2.0 and len(doc["windows"]) == 1
    stamp = (out / "a.mp4.json").stat().st_mtime_ns

    assert main(cmd) == 1  # again: the two done are kept, the broken one is retried
    again = pd.read_csv(out / "summary.csv", keep_default_na=False)
    assert list(again["status"]) == ["skipped", "skipped", "failed"]
    assert again["p_" + CLASSES[0]][:2].tolist() == pytest.approx(summary["p_" + CLASSES[0]][:2].tolist())
    assert (out / "a.mp4.json").stat().st_mtime_ns == stamp

    os.utime(folder["run"] / "best.pt")  # a retrained run: the results no longer match it
    assert main(cmd + ["--hop", "0.5"]) == 1
    assert list(pd.read_csv(out / "summary.csv")["status"]) == ["ok", "ok", "failed"]


def test_no_match_and_bad_run(folder, tmp_path, capsys):
    assert main(["predict", str(tmp_path / "*.mp4"), "--run", str(folder["run"]), "--out-dir", str(tmp_path)]) == 2
    assert "no video matches" in capsys.readouterr().err
    assert main(["predict", str(folder["videos"] / "a.mp4"), "--run", str(tmp_path / "nope"),
                 "--out-dir", str(tmp_path / "o")]) == 2


@pytest.mark.slow  # two spawned processes, each loading torch and mediapipe
def test_two_workers_write_what_one_writes(folder, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    base = ["predict", str(folder["videos"]), "--run", str(folder["run"])]
    assert main(base + ["--out-dir", str(one)]) == 1
    assert main(base + ["--out-dir", str(two), "--workers", "2"]) == 1
    a, b = pd.read_csv(one / "summary.csv"), pd.read_csv(two / "summary.csv")
    assert list(a["status"]) == list(b["status"]) and list(a["label"]) == list(b["label"])
    for name in ("a.mp4.json", "b.mp4.json"):
        pa = json.loads((one / name).read_text())["summary"]["probabilities"]
        pb = json.loads((two / name).read_text())["summary"]["probabilities"]
        assert pa == pytest.approx(pb, abs=1e-5)
