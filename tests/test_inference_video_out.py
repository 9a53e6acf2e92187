"""`femo predict --video-out`: the annotated video keeps every frame and the original audio."""
from __future__ import annotations

import av
import numpy as np
import pytest

from femo.cli import main
from femo.inference.predictor import Predictor
from femo.inference.video_out import draw, write_annotated

from _media import astronaut_clip, make_run


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("video_out")
    return {"clip": astronaut_clip(d / "astro.mp4", seconds=2.5), "run": make_run(d / "run")}


def _frames_and_audio(path):
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        packets = [(p.pts, bytes(p)) for p in c.demux(audio=0) if p.dts is not None]
        rate = c.streams.audio[0].codec_context.sample_rate
    return np.stack(frames), packets, rate


def test_annotated_video_keeps_frames_and_audio(media, tmp_path):
    with Predictor.from_run(media["run"]) as p:
        tl = p.timeline(media["clip"])
    out = write_annotated(media["clip"], tl, tmp_path / "annotated.mp4")
    src, src_audio, src_rate = _frames_and_audio(media["clip"])
    got, got_audio, got_rate = _frames_and_audio(out)
    assert got.shape == src.shape
    assert got_rate == src_rate and [b for _, b in got_audio] == [b for _, b in src_audio]  # copied, not re-encoded
    # the class bars sit in the top-left corner; elsewhere (away from the box) the picture is unchanged
    assert np.abs(got[:, :40, :100].astype(int) - src[:, :40, :100]).mean() > 20
    assert np.abs(got[:, -20:, -20:].astype(int) - src[:, -20:, -20:]).mean() < 6


def test_draw_marks_the_box_in_the_label_colour(media):
    with Predictor.from_run(media["run"]) as p:
        tl = p.timeline(media["clip"])
    frame = np.full((240, 320, 3), 128, np.uint8)
    draw(frame, tl, 0)
    x0, y0, x1, y1 = (tl.face_box[0] * [320, 240, 320, 240]).round().astype(int)
    edge = frame[(y0 + y1) // 2, x0]
    assert not np.array_equal(edge, [128, 128, 128])


def test_cli_video_out(media, tmp_path):
    assert main(["predict", str(media["clip"]), "--run", str(media["run"]), "--video-out", str(tmp_path / "a.mp4")]) == 0
    assert (tmp_path / "a.mp4").stat().st_size > 1000
    assert main(["predict", str(media["clip"]), "--run", str(media["run"]), "--video-out", str(tmp_path / "a.avi")]) == 2
