"""The fast ``femo predict`` path: needed frames only, tracking across chunks, onnxruntime CNN,
pose groups, decode-ahead thread; and its outputs against the reference path."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from femo.data.decode import iter_frames
from femo.data.media import write_video
from femo.inference.frames import FastFrameEncoder, iter_needed_frames, needed_times, prefetch
from femo.inference.predictor import Predictor
from femo.inference.timeline import target_times, window_spans
from femo.inference.tracking import StreamFaceTracker, StreamPoseTracker

from _media import astronaut_clip, face_then_gone_clip, gradient_frames, make_run

#: Stated tolerance of the fast path against the reference path (max over windows and classes).
PROB_TOL, BOX_TOL = 0.02, 0.01


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("fast_media")
    return {"astro": astronaut_clip(d / "astro.mp4", seconds=4.0, fps=25.0),
            "gone": face_then_gone_clip(d / "gone.mp4", seconds=2.0, fps=12.5),
            "run": make_run(d / "run")}


def test_needed_times_are_eight_per_second_for_two_second_windows():
    spans = window_spans(10.0, 2.0, 0.5)
    times = needed_times(spans, 16)
    assert len(times) == 80 and np.allclose(np.diff(times), 0.125)
    for start, end in spans:  # every window's targets are among them
        assert np.isin(np.round(target_times(start, end, 16), 6), times).all()


def test_needed_frames_are_the_nearest_decoded_ones(media):
    every = list(iter_frames(media["astro"]))  # all 100 frames at 25 fps
    all_t = np.array([t for t, _ in every])
    want = needed_times(window_spans(4.0, 2.0, 0.5), 16)
    nearest = sorted({int(np.argmin(np.abs(all_t - w))) for w in want})  # ties: argmin takes the earlier
    got = list(iter_needed_frames(media["astro"], want))
    assert [t for t, _ in got] == pytest.approx(all_t[nearest].tolist())
    for (_, rgb), i in zip(got, nearest):
        np.testing.assert_array_equal(rgb, every[i][1])
    assert len(got) == 32 < len(every) // 3  # 8 per second, not every third of 25


def test_prefetch_keeps_order_reraises_and_stops_early():
    assert list(prefetch(iter(range(50)), 4)) == list(range(50))

    def broken():
        yield 1
        raise ValueError("bad frame 2")

    with pytest.raises(ValueError, match="bad frame 2"):
        list(prefetch(broken(), 2))
    it = prefetch(iter(range(10_000)), 2)
    assert next(it) == 0
    it.close()  # the producer thread must not stay blocked on a full queue


def test_fast_frame_encoder_matches_eager_and_falls_back(monkeypatch):
    from femo.models.frames import build_frame_encoder

    torch.manual_seed(0)
    enc = build_frame_encoder("resnet18", freeze="frozen").eval()
    x = torch.rand(5, 3, 48, 48)
    with torch.inference_mode():
        want = enc(x).numpy()
    fast = FastFrameEncoder(enc, size=48, threads=1)
    assert fast.backend == "onnxruntime"
    np.testing.assert_allclose(fast(x), want, atol=1e-4, rtol=1e-4)

    def no_export(*args, **kwargs):
        raise RuntimeError("operator not supported")

    monkeypatch.setattr(torch.onnx, "export", no_export)
    slow = FastFrameEncoder(enc, size=48)
    assert slow.backend == "torch"
    np.testing.assert_allclose(slow(x), want, atol=1e-4, rtol=1e-4)


class CountingDetector:
    """Wraps a landmarker, counting calls."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, 0

    def __getattr__(self, name):
        fn = getattr(self.inner, name)

        def counted(*args, **kwargs):
            self.calls += 1
            return fn(*args, **kwargs)
        return counted


@pytest.mark.parametrize("chunk, calls", [(8, 6), (6, 8)])
def test_pose_runs_once_per_group_across_chunks(chunk, calls):
    frames = gradient_frames(seconds=2.2, fps=10)[:22]  # 22 kept frames: 6 groups of stride 4
    with StreamPoseTracker(stride=4) as tracker:
        tracker._lm = CountingDetector(tracker._lm)
        tracker.begin()
        out = [tracker.track(frames[i:i + chunk]) for i in range(0, 22, chunk)]
        # chunks of 8 keep the groups whole; chunks of 6 split groups 1 and 4, computed on both sides
        assert tracker._lm.calls == calls
    assert sum(len(o.pose_found) for o in out) == 22


def test_no_face_video_costs_few_tile_searches(media):
    frames = gradient_frames(seconds=8.0, fps=8)  # 64 frames, 4 chunks of 16, nobody on screen
    times = np.arange(64) / 8
    with StreamFaceTracker(face_size=48) as tracker:
        tracker._image = CountingDetector(tracker._image)
        for i in range(0, 64, 16):
            assert not tracker.track(frames[i:i + 16], times[i:i + 16]).face_found.any()
        stream_calls = tracker._image.calls
    from femo.features.face import FaceTracker

    with FaceTracker(face_size=48) as per_chunk:
        per_chunk._image = CountingDetector(per_chunk._image)
        for i in range(0, 64, 16):
            per_chunk.track(frames[i:i + 16], times[i:i + 16])
        assert stream_calls <= per_chunk._image.calls / 2  # one search per 2 s instead of three per chunk


def test_face_is_followed_across_chunks(media):
    frames = np.stack([rgb for _, rgb in iter_frames(media["astro"], every=3)])[:32]
    times = np.arange(len(frames)) * 0.12
    with StreamFaceTracker(face_size=48) as tracker:
        a, b = tracker.track(frames[:16], times[:16]), tracker.track(frames[16:], times[16:])
    assert a.face_found.all() and b.face_found.all()
    assert np.abs(a.face_box[-1] - b.face_box[0]).max() < 0.05  # the same face on both sides of the cut


def test_fast_path_matches_reference_within_tolerance(media):
    with Predictor.from_run(media["run"]) as fast, Predictor.from_run(media["run"], reference=True) as ref:
        a, b = fast.timeline(media["astro"]), ref.timeline(media["astro"])
        gone_a, gone_b = fast.timeline(media["gone"]), ref.timeline(media["gone"])
    np.testing.assert_array_equal(a.spans, b.spans)
    assert np.abs(a.probabilities - b.probabilities).max() <= PROB_TOL
    np.testing.assert_array_equal(a.face_found, b.face_found)
    assert np.abs(a.face_box - b.face_box).max() <= BOX_TOL
    np.testing.assert_array_equal(a.audio, b.audio)
    assert set(a.seconds) == set(b.seconds)
    # the face leaves at 2 s: both paths see it go the same way (window probabilities without a face
    # can differ more: the body landmarker's stray detections on the background depend on the frames it runs on)
    np.testing.assert_array_equal(gone_a.face_found, gone_b.face_found)
    assert gone_a.face_found[0] == 1.0 and gone_a.face_found[-1] == 0.0


def test_fast_path_reads_frame_folders_and_mute_videos(media, tmp_path):
    mute = write_video(tmp_path / "mute.mp4", gradient_frames(seconds=1.0, fps=10), fps=10)
    with Predictor.from_run(media["run"]) as fast:
        tl = fast.timeline(mute)
    assert len(tl.spans) == 1 and not tl.audio.any() and tl.face_found.max() == 0
