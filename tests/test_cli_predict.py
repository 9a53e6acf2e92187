"""`femo predict`: files that fail are in the JSON/CSV output too, with the reason."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from _media import astronaut_clip, make_run
from femo.cli import main as femo_main


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli_predict")
    (d / "garbage.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (d / "empty.mp4").write_bytes(b"")
    return {"dir": d, "run": make_run(d / "run"), "garbage": d / "garbage.mp4", "empty": d / "empty.mp4"}


def test_failed_files_are_in_the_json_output(inputs, capsys) -> None:
    clip = astronaut_clip(inputs["dir"] / "astro.mp4", seconds=2.0)
    out = inputs["dir"] / "all.json"
    assert femo_main(["predict", str(clip), str(inputs["garbage"]), "--run", str(inputs["run"]),
                      "--out", str(out)]) == 1
    entries = json.loads(out.read_text())
    assert [e["status"] for e in entries] == ["ok", "failed"]
    assert entries[0]["windows"] and "error" not in entries[0]
    assert entries[1]["file"] == str(inputs["garbage"]) and "garbage.mp4" in entries[1]["error"]
    assert "garbage.mp4" in capsys.readouterr().err  # and still on stderr


def test_failed_files_are_in_the_csv_output_even_when_none_succeeded(inputs) -> None:
    out = inputs["dir"] / "none.csv"
    assert femo_main(["predict", str(inputs["garbage"]), str(inputs["empty"]), "--run", str(inputs["run"]),
                      "--out", str(out)]) == 1
    table = pd.read_csv(out)
    assert table["file"].tolist() == [str(inputs["garbage"]), str(inputs["empty"])]
    assert (table["status"] == "failed").all() and table["error"].str.len().gt(10).all()


def test_one_failed_file_gives_one_json_object(inputs) -> None:
    out = inputs["dir"] / "one.json"
    assert femo_main(["predict", str(inputs["empty"]), "--run", str(inputs["run"]), "--out", str(out)]) == 1
    entry = json.loads(out.read_text())
    assert entry["status"] == "failed" and "empty.mp4" in entry["error"]
