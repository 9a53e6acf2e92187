"""`femo predict` / femo.load on real mp4s: the animated astronaut photo with a tone, a clip
without a face, a clip without audio, and damaged files; run-folder errors."""
from __future__ import annotations

import json

import av
import numpy as np
import pandas as pd
import pytest
import torch

import femo
from femo.cli import main
from femo.data.decode import MediaError, load_audio
from femo.inference.predictor import Predictor, load_run_model
from femo.training.runs import ClassMismatchError, RunError
from femo.inference.outputs import plot_timeline, write_results
from femo.inference.stream import AudioStream, FrameBuffer
from femo.inference.timeline import window_spans
from femo.training.runs import CheckpointError

from _media import CLASSES, astronaut_clip, face_then_gone_clip, make_run, two_people_clip

WINDOW_KEYS = {"start", "end", "label", "probabilities", "face", "audio"}


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("predict_media")
    files = {"astro": astronaut_clip(d / "astro.mp4", seconds=3.0),
             "silent": astronaut_clip(d / "silent.mp4", seconds=2.0, audio=False),
             "gone": face_then_gone_clip(d / "gone.mp4", seconds=2.0)}
    data = files["astro"].read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (d / "empty.mp4").write_bytes(b"")
    (d / "garbage.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with av.open(str(d / "zero.mp4"), "w", format="mp4") as out:  # a container with no frames at all
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
        out.start_encoding()
        out.mux(s.encode(None))
    files.update({k: d / f"{k}.mp4" for k in ("truncated", "empty", "garbage", "zero")})
    files["run"] = make_run(d / "run")
    return files


@pytest.fixture(scope="module")
def predictor(media):
    with femo.load(media["run"]) as p:
        yield p


@pytest.fixture(scope="module")
def astro(predictor, media):
    return predictor.timeline(media["astro"], window=2.0, hop=0.5)


def test_astronaut_timeline_json_schema(astro, media):
    doc = astro.to_json()
    assert set(doc) == {"file", "duration", "summary", "windows"}
    assert doc["file"] == str(media["astro"])
    assert doc["duration"] == pytest.approx(3.0, abs=0.1)
    assert [(w["start"], w["end"]) for w in doc["windows"]] == [(0.0, 2.0), (0.5, 2.5), (1.0, 3.0)]
    for w in doc["windows"]:
        assert set(w) == WINDOW_KEYS
        assert list(w["probabilities"]) == list(CLASSES)
        assert sum(w["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert w["label"] == max(w["probabilities"], key=w["probabilities"].get)
        assert w["face"]["found"] >= 0.75  # the astronaut is found in (nearly) every frame
        x0, y0, x1, y1 = w["face"]["box"]
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
        assert w["audio"] is True
    mean = np.mean([[w["probabilities"][c] for c in CLASSES] for w in doc["windows"]], axis=0)
    assert [doc["summary"]["probabilities"][c] for c in CLASSES] == pytest.approx(mean, abs=1e-5)
    assert doc["summary"]["label"] == CLASSES[int(mean.argmax())]
    json.dumps(doc)  # serialisable as is


def test_astronaut_envelope_and_timings(astro):
    assert astro.envelope.shape == (300, 2)  # 3 s of audio at 100 bins per second
    assert np.abs(astro.envelope).max() == pytest.approx(0.3, abs=0.05)  # the tone's amplitude
    assert set(astro.seconds) == {"decode", "landmarks", "cnn", "audio", "fusion"}
    assert all(v > 0 for v in astro.seconds.values())


def test_face_gone_windows_say_so(predictor, media):
    """The face leaves after 2 s: later windows report no face and still get probabilities."""
    tl = predictor.timeline(media["gone"], window=1.0, hop=1.0)
    doc = tl.to_json()
    assert [w["start"] for w in doc["windows"]] == [0.0, 1.0, 2.0, 3.0]
    assert [w["face"]["found"] >= 0.75 for w in doc["windows"]] == [True, True, False, False]
    for w in doc["windows"][2:]:
        assert w["face"] == {"found": 0.0, "box": None}
    for w in doc["windows"]:
        assert sum(w["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert w["audio"] is True


def test_no_audio_windows_say_so(predictor, media, tmp_path):
    tl = predictor.timeline(media["silent"])
    assert len(tl.spans) == 1 and tuple(tl.spans[0]) == pytest.approx((0.0, 2.0))
    assert not tl.audio.any() and tl.envelope is None
    assert tl.face_found[0] >= 0.75
    png = plot_timeline(tl, tmp_path / "silent.png")
    assert png.stat().st_size > 5000


def test_several_people_follow_the_largest_central_face(predictor, tmp_path):
    clip = two_people_clip(tmp_path / "two.mp4")
    tl = predictor.timeline(clip, window=1.0, hop=1.0)
    x0, y0, x1, y1 = tl.face_box[0]
    assert tl.face_found[0] >= 0.75
    assert (x0 + x1) / 2 > 0.55  # the larger face right of centre, not the smaller one at the left edge
    assert x1 - x0 > 0.1


def test_missing_face_uses_the_missing_path(predictor):
    """A window without faces gets the face branch's learned 'missing' embedding, not CNN output."""
    head = predictor.model.head
    t, d = predictor.model.data.num_frames, head.config.embedding_dim
    batch = {"face_emb": torch.randn(2, t, d), "face_mask": torch.zeros(2, t, dtype=torch.bool),
             "landmarks": torch.zeros(2, t, 202), "landmarks_mask": torch.zeros(2, t, dtype=torch.bool),
             "audio": torch.zeros(2, 1, 64, 32), "prosody": torch.zeros(2, 32, 4),
             "audio_mask": torch.tensor([True, False])}
    with torch.inference_mode():
        out = head(batch)
        other = head({**batch, "face_emb": torch.randn(2, t, d)})  # face features must not matter
    assert out["present"].tolist() == [[False, False, True], [False, False, False]]
    assert out["weights"][0].tolist() == pytest.approx([0.0, 0.0, 1.0])
    assert other["logits"].numpy() == pytest.approx(out["logits"].numpy(), abs=1e-6)
    assert predictor.probabilities(batch).sum(1) == pytest.approx([1.0, 1.0])


def test_split_model_matches_full_net(media):
    """head(face_emb = CNN(crops)) equals the trained FemoNet run on the crops themselves."""
    from femo.models.net import FemoNet
    from femo.training.runs import load_checkpoint, model_config_from

    ckpt = load_checkpoint(media["run"] / "best.pt")
    net = FemoNet(model_config_from(ckpt), len(CLASSES))
    net.load_state_dict(ckpt["model"])
    net.eval()
    m = load_run_model(media["run"])
    g = torch.Generator().manual_seed(0)
    t, s = m.data.num_frames, m.data.face_size
    mask = torch.rand(2, t, generator=g) > 0.3
    batch = {"face": torch.rand(2, t, 3, s, s, generator=g), "face_mask": mask,
             "landmarks": torch.randn(2, t, 202, generator=g), "landmarks_mask": mask,
             "audio": torch.rand(2, 1, 64, 32, generator=g), "prosody": torch.rand(2, 32, 4, generator=g),
             "audio_mask": torch.tensor([True, False])}
    with torch.inference_mode():
        emb = m.frames(batch["face"].flatten(0, 1)).reshape(2, t, -1) * mask.unsqueeze(-1)
        split = m.head({**batch, "face_emb": emb})["logits"]
        full = net(batch)["logits"]
    assert split.numpy() == pytest.approx(full.numpy(), abs=1e-4)


def test_dataframe_api(predictor, media):
    clip = predictor.predict_clip(media["silent"])
    assert len(clip) == 1
    p = clip[[f"p_{c}" for c in CLASSES]].to_numpy()
    assert p.sum() == pytest.approx(1.0, abs=1e-4)
    assert clip["label"].iloc[0] == CLASSES[int(p.argmax())]
    assert not clip["audio"].iloc[0]
    tl = predictor.predict_timeline(media["silent"], window=1.0, hop=1.0)
    assert list(tl[["start", "end"]].itertuples(index=False, name=None)) == [(0.0, 1.0), (1.0, 2.0)]
    assert {"label", "face_found", "face_x0", "audio", *[f"p_{c}" for c in CLASSES]} <= set(tl.columns)


@pytest.mark.parametrize("name, words", [("truncated", "truncated"), ("empty", "empty file"),
                                         ("garbage", "corrupt"), ("zero", "zero-length")])
def test_bad_media_errors_name_the_file(predictor, media, name, words):
    with pytest.raises(MediaError, match=words) as err:
        predictor.timeline(media[name])
    assert str(media[name]) in str(err.value)


def test_run_folder_errors(media, tmp_path):
    with pytest.raises(RunError, match="run folder not found"):
        load_run_model(tmp_path / "nope")
    (tmp_path / "kfold" / "fold_1").mkdir(parents=True)
    (tmp_path / "kfold" / "fold_1" / "best.pt").write_bytes(b"x")
    with pytest.raises(RunError, match="k-fold run"):
        load_run_model(tmp_path / "kfold")
    bad = make_run(tmp_path / "bad")
    (bad / "best.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="best.pt"):
        load_run_model(bad)


def test_class_mismatch_errors(media, tmp_path):
    other = make_run(tmp_path / "other", classes=("happy", "sad", "angry"))
    config = json.loads((media["run"] / "config.json").read_text())
    (other / "config.json").write_text(json.dumps(config))  # a config from a run with other classes
    with pytest.raises(ClassMismatchError, match="angry"):
        load_run_model(other)
    with pytest.raises(ClassMismatchError, match="expected"):
        Predictor.from_run(media["run"], classes=["happy", "sad", "neutral", "angry"])


def test_window_spans():
    assert window_spans(3.0, 2.0, 0.5).tolist() == [[0.0, 2.0], [0.5, 2.5], [1.0, 3.0]]
    assert window_spans(3.2, 2.0, 0.5).tolist()[-1] == pytest.approx([1.2, 3.2])  # tail covered
    assert window_spans(1.5, 2.0, 0.5).tolist() == [[0.0, 1.5]]
    with pytest.raises(ValueError, match="hop"):
        window_spans(3.0, 2.0, 0.0)


def test_audio_stream_matches_whole_decode(media):
    whole = load_audio(media["astro"], sample_rate=16_000)
    with AudioStream(media["astro"], sample_rate=16_000) as stream:
        a = stream.segment(0.5, 1.5)
        b = stream.segment(1.0, 2.5)  # overlapping, later start
        assert len(stream._buf) < len(whole)  # earlier samples were released
    assert a == pytest.approx(whole[8000:24000], abs=1e-6)
    assert b == pytest.approx(whole[16000:40000], abs=1e-6)


def test_frame_buffer_nearest_and_drop():
    buf = FrameBuffer()
    buf.extend(np.arange(10) * 0.1, {"x": np.arange(10)})
    assert buf.nearest(np.array([0.04, 0.26, 5.0])).tolist() == [0, 3, 9]
    buf.drop_before(0.55)
    assert buf.times[0] == pytest.approx(0.5) and buf.arrays["x"].tolist() == [5, 6, 7, 8, 9]


def test_cli_multi_file_goes_on_and_reports(media, tmp_path, capsys):
    out, plot = tmp_path / "res.json", tmp_path / "tl.png"
    code = main(["predict", str(media["silent"]), str(media["garbage"]), "--run", str(media["run"]),
                 "--window", "1.0", "--hop", "1.0", "--out", str(out), "--plot", str(plot)])
    err = capsys.readouterr().err
    assert code == 1
    assert "1 of 2 file(s) failed" in err and str(media["garbage"]) in err
    doc = json.loads(out.read_text())
    assert isinstance(doc, list) and [d["file"] for d in doc] == [str(media["silent"]), str(media["garbage"])]
    assert [d["status"] for d in doc] == ["ok", "failed"] and doc[1]["error"]  # the failure is in the output too
    assert (tmp_path / "tl_silent.png").is_file()
    csv = tmp_path / "res.csv"
    write_results([], csv)
    assert csv.is_file()


def test_cli_wrong_run_and_bad_out(media, tmp_path, capsys):
    assert main(["predict", str(media["silent"]), "--run", str(tmp_path)]) == 2
    assert "config.json missing" in capsys.readouterr().err
    assert main(["predict", str(media["silent"]), "--run", str(media["run"]), "--out", str(tmp_path / "x.txt")]) == 2


def test_csv_rows_per_window(astro, tmp_path):
    path = write_results([astro], tmp_path / "t.csv")
    table = pd.read_csv(path)
    assert len(table) == 3 and table["file"].nunique() == 1
    assert table[[f"p_{c}" for c in CLASSES]].sum(1).to_numpy() == pytest.approx(np.ones(3), abs=1e-4)
