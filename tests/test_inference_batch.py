"""`femo predict DIR_OR_GLOB --out-dir OUT [--workers N]`: one JSON per video, a summary, resume, failures."""
from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from femo.cli import main
from femo.inference.batch import Bars, _Worker, expand_inputs, output_names, run_signature

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
    err = capsys.readouterr().err
    assert "broken.mp4" in summary.loc[2, "error"] and "failed" in err
    assert "s/s" not in err and "it/s" not in err  # stderr is not a terminal: no progress bars
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


def test_bars_follow_workers_and_the_total():
    import io

    screen = io.StringIO()
    bars = Bars({"a.mp4": 10.0, "b.mp4": 4.0}, skipped=1, disable=False, file=screen)
    bars.event("start", 11, "a.mp4")
    bars.event("start", 12, "b.mp4")
    assert [w[3] for w in bars.workers.values()] == [1, 2]  # one line each under the total
    bars.event("at", 11, 6.0)
    bars.event("at", 12, 3.0)
    assert bars.total.n == pytest.approx(9.0) and bars.workers[11][0].n == pytest.approx(6.0)
    bars.event("end", 12)
    bars.finished({"file": "b.mp4", "status": "failed"})  # a file done counts in full
    assert bars.total.n == pytest.approx(10.0) and bars.failed == 1
    bars.event("start", 12, "a.mp4")  # the freed line is reused
    assert bars.workers[12][3] == 2
    bars.close()
    assert "a.mp4" in screen.getvalue() and "2 videos" in screen.getvalue()


def test_worker_reports_each_chunk(folder, tmp_path):
    events = []
    sig = run_signature(folder["run"], 1.0, 0.5)
    with _Worker(str(folder["run"]), 1.0, 0.5, sig, None, report=lambda *e: events.append(e)) as worker:
        row = worker(str(folder["videos"] / "b.mp4"), str(tmp_path / "b.json"))
    assert row["status"] == "ok"
    kinds = [e[0] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and "at" in kinds
    reached = [e[2] for e in events if e[0] == "at"]
    assert reached == sorted(reached) and reached[-1] == pytest.approx(1.5, abs=0.2)
