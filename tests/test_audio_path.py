"""The manifest's ``audio_path`` column (a face and a voice recorded apart) through extraction and
clip-level prediction (femo.inference.pairs, `femo predict IMAGE --audio FILE` and `--manifest`)."""
import json

import numpy as np
import pandas as pd
import pytest

import _media
from femo.data.store import read_clip
from femo.features.extract import run_extraction


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    return {"image": _media.image(root / "face.jpg"), "wav": _media.wav(root / "voice.wav"),
            "frames": _media.frame_folder(root / "frames"), "root": root}


@pytest.fixture(scope="module")
def run(media):
    return _media.make_run(media["root"] / "run")


def test_extraction_reads_audio_from_audio_path(media, tmp_path):
    manifest = pd.DataFrame({"clip_id": ["img", "frames", "missing"], "label": "happy", "subject": ["a", "b", "c"],
                             "path": [str(media["image"]), str(media["frames"]), str(media["image"])],
                             "audio_path": [str(media["wav"]), str(media["wav"]), str(media["root"] / "nope.wav")]})
    index = run_extraction(manifest, tmp_path / "store", classes=_media.CLASSES, progress=False).set_index("clip_id")
    assert index.loc[["img", "frames"], "status"].tolist() == ["ok", "ok"]
    for clip in ("img", "frames"):
        z = read_clip(tmp_path / "store", clip)
        assert bool(z["has_audio"]) and z["logmel"].shape[1] > 10  # 0.5 s of tone at a 10 ms hop
    assert index.loc["missing", "status"] == "failed" and "nope.wav" in index.loc["missing", "error"]


def test_predict_pairs_uses_the_audio_and_reports_bad_rows(media, run):
    from femo.inference.pairs import pair_table, predict_pairs

    rows = pair_table([media["image"]] * 3, [media["wav"], None, media["root"] / "nope.wav"])
    pred = predict_pairs(run, rows)
    probs = pred[[f"p_{c}" for c in _media.CLASSES]].to_numpy()
    assert pred["status"].tolist() == ["ok", "ok", "failed"] and "nope.wav" in pred.loc[2, "error"]
    assert probs[:2].sum(axis=1) == pytest.approx([1.0, 1.0]) and np.isnan(probs[2]).all()
    assert not np.allclose(probs[0], probs[1])  # the same face with and without the voice: the audio reached the model
    assert pred.loc[0, "label"] == _media.CLASSES[int(probs[0].argmax())] and pred.loc[2, "label"] == ""


def test_cli_predict_with_audio_and_with_a_manifest(media, run, tmp_path, capsys):
    from femo.cli import main

    out = tmp_path / "one.csv"
    assert main(["predict", str(media["image"]), "--audio", str(media["wav"]), "--run", str(run),
                 "--out", str(out)]) == 0
    one = pd.read_csv(out)
    assert len(one) == 1 and one.loc[0, "status"] == "ok" and one.loc[0, "label"] in _media.CLASSES
    pairs = media["root"] / "pairs.csv"
    pd.DataFrame({"path": ["face.jpg", "face.jpg"], "audio_path": ["voice.wav", "gone.wav"]}).to_csv(pairs, index=False)
    capsys.readouterr()
    assert main(["predict", "--manifest", str(pairs), "--run", str(run), "--out", str(tmp_path / "m.json")]) == 1
    assert "gone.wav" in capsys.readouterr().err
    rows = json.loads((tmp_path / "m.json").read_text())
    assert [r["status"] for r in rows] == ["ok", "failed"]
    assert rows[0]["p_happy"] == pytest.approx(one.loc[0, "p_happy"], abs=1e-5)  # same pair, same answer
    assert main(["predict", "--run", str(run)]) == 2
