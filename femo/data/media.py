"""Writing real media files: H.264 + AAC mp4 clips and 16-bit PCM wav files.

Used by the synthetic dataset and by tests that need genuine containers. Output is
deterministic: the same arrays give byte-identical files with the same PyAV/FFmpeg build
(single-threaded x264, bit-exact muxer flags, no creation time).
"""
from __future__ import annotations

import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

#: Samples per AAC frame; audio is fed to the encoder in chunks of this size.
_AAC_FRAME = 1024


def write_video(path: str | Path, frames: np.ndarray, *, fps: float, audio: np.ndarray | None = None,
                sample_rate: int = 16_000, crf: int = 23) -> Path:
    """Write an H.264 (yuv420p) mp4, with a mono AAC track when ``audio`` is given.

    frames: (N, H, W, 3) uint8 RGB; H and W must be even (yuv420p). fps: frames per second.
    audio: (M,) float32 in [-1, 1] at ``sample_rate`` Hz, or None for a file with no audio stream.
    crf: x264 constant rate factor (lower = better quality, bigger file). Returns ``path``.
    """
    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"{path}: frames must be (N, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    n, height, width, _ = frames.shape
    if n == 0 or height % 2 or width % 2:
        raise ValueError(f"{path}: need at least one frame with even height/width, got {frames.shape}")
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w", format="mp4", options={"fflags": "+bitexact"}) as out:
        vstream = out.add_stream("libx264", rate=rate)
        vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
        # Reproducible output needs one x264 thread (no lookahead/slice threads) and no macroblock
        # tree: with mbtree on, repeated encodes of the same frames differed now and then.
        vstream.codec_context.thread_count = 1
        vstream.codec_context.options = {
            "crf": str(crf), "preset": "veryfast",
            "x264-params": "threads=1:lookahead-threads=1:sliced-threads=0:mbtree=0"}
        vstream.codec_context.flags |= av.codec.context.Flags.bitexact
        astream = None
        if audio is not None:
            astream = out.add_stream("aac", rate=sample_rate)
            astream.layout = "mono"
            astream.codec_context.flags |= av.codec.context.Flags.bitexact
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = i
            out.mux(vstream.encode(frame))
        out.mux(vstream.encode(None))
        if astream is not None:
            _encode_audio(out, astream, np.asarray(audio, dtype=np.float32), sample_rate)
    return path


def _encode_audio(out, stream, audio: np.ndarray, sample_rate: int) -> None:
    """Feed mono float audio (M,) to an AAC stream in 1024-sample frames, then flush."""
    audio = np.clip(audio.reshape(-1), -1.0, 1.0)
    for start in range(0, len(audio), _AAC_FRAME):
        chunk = np.ascontiguousarray(audio[start:start + _AAC_FRAME][None, :])  # (1, <=1024)
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
        frame.sample_rate = sample_rate
        frame.pts = start
        frame.time_base = Fraction(1, sample_rate)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int = 16_000) -> Path:
    """Write mono 16-bit PCM wav. audio: (M,) float in [-1, 1] at ``sample_rate`` Hz."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = (np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0) * 32767.0).round()
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(int(sample_rate))
        fh.writeframes(pcm.astype("<i2").tobytes())
    return path
