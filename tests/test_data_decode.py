"""Decoding of every clip kind (real PyAV-written media), temporal sampling and bad input."""
from __future__ import annotations

import av
import numpy as np
import pytest
from PIL import Image

from femo.data.decode import (FOLDER_FPS, MediaError, iter_frames, load_audio, load_clip, probe,
                              sample_indices)
from femo.data.media import write_video, write_wav

SR = 16_000


def _frames(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    """(n, h, w, 3) uint8 frames whose mean brightness encodes the frame index."""
    levels = np.linspace(20, 235, n).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (n, h, w, 3)).copy()


def _tone(seconds: float, hz: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A 2 s mp4 with audio, one without an audio stream, a wav, a frame folder, a still image."""
    root = tmp_path_factory.mktemp("media")
    out = {"tone": _tone(2.0)}
    out["mp4"] = write_video(root / "clip.mp4", _frames(30), fps=15, audio=out["tone"])
    out["silent"] = write_video(root / "silent.mp4", _frames(30), fps=15)
    out["wav"] = write_wav(root / "voice.wav", out["tone"])
    folder = root / "frames"
    folder.mkdir()
    for i, rgb in enumerate(_frames(12)):  # names that sort wrongly as strings: 1, 2, ..., 10
        Image.fromarray(rgb).save(folder / f"frame{i + 1}.png")
    out["folder"] = folder
    out["image"] = root / "still.png"
    Image.fromarray(_frames(1)[0]).save(out["image"])
    return out


def test_mp4_with_audio_shapes_and_alignment(media):
    clip = load_clip(media["mp4"], num_frames=16)
    assert clip.kind == "video" and clip.n_frames == 30 and clip.fps == pytest.approx(15.0)
    assert clip.frames.shape == (16, 48, 64, 3) and clip.frames.dtype == np.uint8
    assert clip.times.dtype == np.float32 and clip.times.shape == (16,)
    np.testing.assert_allclose(clip.times, clip.indices / 15.0, atol=1e-4)
    assert clip.has_audio and clip.audio.dtype == np.float32
    assert clip.audio.shape == (2 * SR,)
    assert np.corrcoef(clip.audio, media["tone"])[0, 1] > 0.99
    # brightness rises with the frame index: the kept frames are the sampled ones, in order
    expected = np.linspace(20, 235, 30)[clip.indices]
    np.testing.assert_allclose(clip.frames.mean(axis=(1, 2, 3)), expected, atol=4)
    assert clip.duration == pytest.approx(2.0, abs=0.01)


def test_mp4_without_audio_stream_has_no_audio(media):
    info = probe(media["silent"])
    assert info.has_audio is False and info.n_frames == 30
    clip = load_clip(media["silent"], num_frames=8, max_side=32)
    assert clip.audio is None and clip.has_audio is False
    assert clip.frames.shape == (8, 24, 32, 3)
    assert load_audio(media["silent"]) is None


def test_audio_path_overrides_the_video_track(media):
    clip = load_clip(media["silent"], num_frames=4, audio_path=media["wav"])
    assert clip.has_audio and clip.audio.shape == (2 * SR,)


def test_frame_folder_natural_order(media):
    info = probe(media["folder"])
    assert (info.kind, info.n_frames, info.width, info.height) == ("frames", 12, 64, 48)
    clip = load_clip(media["folder"], num_frames=16)
    assert clip.frames.shape == (16, 48, 64, 3) and clip.audio is None
    expected = np.linspace(20, 235, 12)[clip.indices]
    np.testing.assert_allclose(clip.frames.mean(axis=(1, 2, 3)), expected, atol=1)
    np.testing.assert_allclose(clip.times, clip.indices / FOLDER_FPS, atol=1e-6)
    streamed = list(iter_frames(media["folder"], every=5))
    assert [t for t, _ in streamed] == pytest.approx([0, 5 / FOLDER_FPS, 10 / FOLDER_FPS])


def test_still_image_repeats_with_zero_times(media):
    clip = load_clip(media["image"], num_frames=6)
    assert clip.kind == "image" and clip.frames.shape == (6, 48, 64, 3)
    assert np.all(clip.frames == clip.frames[0]) and np.all(clip.times == 0)
    assert clip.audio is None


def test_wav_is_audio_only(media):
    clip = load_clip(media["wav"], num_frames=16)
    assert clip.kind == "audio" and clip.frames.shape[0] == 0 and clip.times.shape == (0,)
    assert clip.audio.shape == (2 * SR,)
    np.testing.assert_allclose(clip.audio, media["tone"], atol=1e-4)
    assert clip.duration == pytest.approx(2.0)
    assert list(iter_frames(media["wav"])) == []


def _write_container(path, vcodec: str, acodec: str, rate: int):
    """30 frames at 15 fps + 2 s of tone at ``rate`` Hz, written with PyAV in any container."""
    tone = _tone(2.0)
    t = np.arange(2 * rate) / rate
    audio = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    with av.open(str(path), "w") as out:
        video = out.add_stream(vcodec, rate=15)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        sound = out.add_stream(acodec, rate=rate)
        sound.layout = "mono"
        for i, rgb in enumerate(_frames(30)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        fmt = sound.codec_context.format.name
        step = sound.codec_context.frame_size or 1024
        for start in range(0, len(audio), step):
            chunk = audio[start:start + step][None, :]
            if fmt.startswith(("s16", "s32")):  # integer sample formats of some encoders
                bits = 15 if fmt.startswith("s16") else 31
                chunk = (chunk * (2 ** bits - 1)).astype(np.int16 if bits == 15 else np.int32)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format=fmt, layout="mono")
            frame.sample_rate, frame.pts = rate, start
            out.mux(sound.encode(frame))
        out.mux(sound.encode(None))
    return tone


@pytest.mark.parametrize("suffix, vcodec, acodec, rate", [
    (".avi", "mpeg4", "mp3", 44_100),
    (".mkv", "libx264", "flac", 22_050),
    (".flv", "flv", "mp3", 22_050),
    (".webm", "libvpx", "libopus", 48_000),
])
def test_other_containers(tmp_path, suffix, vcodec, acodec, rate):
    path = tmp_path / f"clip{suffix}"
    tone = _write_container(path, vcodec, acodec, rate)
    clip = load_clip(path, num_frames=16)
    assert clip.kind == "video" and clip.n_frames == 30 and clip.frames.shape == (16, 48, 64, 3)
    expected = np.linspace(20, 235, 30)[clip.indices]
    np.testing.assert_allclose(clip.frames.mean(axis=(1, 2, 3)), expected, atol=6)
    # MP3 in AVI/FLV keeps the encoder delay (~50 ms): lengths match to that, waveforms after alignment
    assert clip.audio.shape[0] == pytest.approx(2 * SR, abs=0.06 * SR)
    n = min(len(clip.audio), len(tone)) - 2000
    lag = np.argmax([np.dot(clip.audio[1000:n], tone[1000 + d:n + d]) for d in range(-200, 200)]) - 200
    assert abs(lag) < 200 and np.corrcoef(clip.audio[1000:n], tone[1000 + lag:n + lag])[0, 1] > 0.95


def test_audio_resampled_to_16k(tmp_path):
    path = write_wav(tmp_path / "hi.wav", np.zeros(44_100, np.float32), sample_rate=44_100)
    assert load_audio(path, sample_rate=SR).shape == (pytest.approx(SR, abs=2),)


def test_iter_frames_streams_video(media):
    frames = list(iter_frames(media["mp4"], every=4, max_side=32))
    assert len(frames) == 8
    assert frames[1][0] == pytest.approx(4 / 15, abs=1e-4)
    assert frames[0][1].shape == (24, 32, 3)


@pytest.mark.parametrize("n, t, expected", [
    (4, 8, [0, 0, 1, 1, 2, 2, 3, 3]),
    (3, 4, [0, 0, 1, 2]),
    (16, 16, list(range(16))),
    (32, 4, [4, 12, 20, 28]),
    (100, 4, [12, 37, 62, 87]),
])
def test_sample_indices(n, t, expected):
    idx = sample_indices(n, t)
    assert idx.tolist() == expected and idx.dtype == np.int64


def test_sample_indices_properties():
    for n in range(1, 80):
        idx = sample_indices(n, 16)
        assert idx.shape == (16,) and idx.min() >= 0 and idx.max() < n
        assert np.all(np.diff(idx) >= 0)
        if n >= 16:
            assert len(set(idx.tolist())) == 16
        else:
            assert set(idx.tolist()) == set(range(n))
    with pytest.raises(ValueError):
        sample_indices(0, 16)


def test_lfs_pointer(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "a" * 64 + "\nsize 123456\n")
    with pytest.raises(MediaError, match=r"clip\.mp4.*Git LFS pointer"):
        load_clip(path)


def test_truncated_mp4(media, tmp_path):
    data = media["mp4"].read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match=r"cut\.mp4.*(corrupt|truncated)"):
        load_clip(path)


def test_garbage_and_empty_files(tmp_path):
    junk = tmp_path / "junk.avi"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(MediaError, match=r"junk\.avi"):
        probe(junk)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match=r"empty\.mp4.*empty file"):
        probe(empty)


def test_zero_length_video(tmp_path):
    path = tmp_path / "zero.mp4"
    out = av.open(str(path), "w")
    stream = out.add_stream("libx264", rate=15)
    stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
    out.start_encoding()  # header and trailer only, no packets
    out.close()
    with pytest.raises(MediaError, match=r"zero\.mp4.*zero-length"):
        load_clip(path)


def test_missing_file_and_empty_folder(tmp_path):
    with pytest.raises(MediaError, match=r"nope\.mp4.*not found"):
        load_clip(tmp_path / "nope.mp4")
    (tmp_path / "frames").mkdir()
    with pytest.raises(MediaError, match=r"frames.*empty frame folder"):
        load_clip(tmp_path / "frames")
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    with pytest.raises(MediaError, match=r"notes\.txt.*unsupported"):
        probe(bad)


def test_write_video_is_deterministic(tmp_path):
    # noisy dark frames: the content that exposed run-to-run differences in x264
    noisy = np.clip(np.random.default_rng(0).normal(40, 8, (10, 96, 96, 3)), 0, 255).astype(np.uint8)
    written = {write_video(tmp_path / f"{i}.mp4", noisy, fps=10, audio=_tone(1.0)).read_bytes() for i in range(6)}
    assert len(written) == 1
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", _frames(2, h=15), fps=10)
