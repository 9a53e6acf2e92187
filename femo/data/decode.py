"""Decoding clips with PyAV: video files, frame folders, still images and audio-only files.

Every path kind a manifest may hold becomes a :class:`Clip`:

============ ===================================== ==========================================
kind         frames / times                        audio
============ ===================================== ==========================================
``video``    T frames sampled by ``sample_indices`` the file's audio stream, or None
``frames``   T images of the sorted folder          None (unless ``audio_path``)
``image``    the image repeated T times; times 0    None (unless ``audio_path``)
``audio``    none: frames (0, 0, 0, 3), times (0,)  the file's audio
============ ===================================== ==========================================

Audio is always mono float32 at ``sample_rate`` Hz, trimmed to the stream's duration (AAC/MP3
encoders pad the tail). A clip without an audio stream has ``audio=None`` and
``has_audio=False``: never a silent array.

Video frames are decoded sequentially and only the sampled ones are converted and kept, so a
clip never holds the whole video in memory. The frame count is the number of packets in the
video stream (demuxed without decoding), not the container header; if fewer frames decode
than packets were counted, sampling is redone on the decoded count.

Frame folders have no timing of their own: they are taken to run at :data:`FOLDER_FPS`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import av
import numpy as np
from PIL import Image

VIDEO_EXTS = frozenset({".mp4", ".avi", ".flv", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv"})
AUDIO_EXTS = frozenset({".wav", ".mp3", ".m4a", ".flac", ".aac", ".ogg", ".opus"})
IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
#: Frame rate assumed for folders of frames (DFEW's extracted frames are at 25 fps).
FOLDER_FPS: float = 25.0
_LFS_MAGIC = b"version https://git-lfs"


class MediaError(ValueError):
    """A clip cannot be read; the message names the file and the problem."""


@dataclass(frozen=True)
class MediaInfo:
    """What :func:`probe` learns about a path without decoding pictures.

    kind: "video" | "audio" | "image" | "frames". n_frames: frames in the file or folder
    (video: demuxed packet count; image: 1; audio: 0). fps: frames per second (0 when not
    defined). duration: seconds. width, height: pixels (0 for audio). has_audio: an audio
    stream exists.
    """

    path: str
    kind: str
    n_frames: int
    fps: float
    duration: float
    width: int
    height: int
    has_audio: bool


@dataclass(frozen=True)
class Clip:
    """A decoded clip.

    frames: (T, H, W, 3) uint8 RGB (T = 0 for audio-only files). times: (T,) float32 seconds of
    each frame. indices: (T,) int64 source frame indices. n_frames: frames in the source.
    fps: source frame rate. duration: seconds. audio: (N,) float32 mono at ``sample_rate`` Hz,
    or None when there is no audio stream.
    """

    path: str
    kind: str
    frames: np.ndarray
    times: np.ndarray
    indices: np.ndarray
    n_frames: int
    fps: float
    duration: float
    audio: np.ndarray | None
    sample_rate: int

    @property
    def has_audio(self) -> bool:
        """True when the clip carries an audio track."""
        return self.audio is not None


def sample_indices(n_frames: int, num_frames: int) -> np.ndarray:
    """T frame indices spread uniformly over a clip of ``n_frames`` frames.

    Short clips (n < T) repeat frames by nearest index (DFEW's convention: index
    ``floor(i * n / T)``, so each frame appears T/n times, in order). Long clips (n >= T)
    take the centre of each of T equal segments (TSN-style uniform sampling), which reduces to
    every frame when n == T. Returns (T,) int64, non-decreasing, in [0, n).
    """
    if n_frames <= 0 or num_frames <= 0:
        raise ValueError(f"sample_indices needs n_frames > 0 and num_frames > 0, got {n_frames}, {num_frames}")
    i = np.arange(num_frames, dtype=np.float64)
    if n_frames < num_frames:
        idx = np.floor(i * n_frames / num_frames)
    else:
        idx = np.floor((i + 0.5) * n_frames / num_frames)
    return np.clip(idx, 0, n_frames - 1).astype(np.int64)


def media_kind(path: str | Path) -> str:
    """ "video" | "audio" | "image" | "frames" from the path's suffix (a folder is "frames")."""
    path = Path(path)
    if path.is_dir():
        return "frames"
    ext = path.suffix.lower()
    if ext in VIDEO_EXTS:
        return "video"
    if ext in AUDIO_EXTS:
        return "audio"
    if ext in IMAGE_EXTS:
        return "image"
    raise MediaError(f"{path}: unsupported file type {ext or '(no suffix)'!r}; expected a video "
                     f"({', '.join(sorted(VIDEO_EXTS))}), audio, image or a folder of frames")


def _check_file(path: Path) -> None:
    """Raise MediaError for a missing, empty or Git LFS pointer file."""
    if not path.exists():
        raise MediaError(f"{path}: file not found")
    if path.is_dir():
        return
    size = path.stat().st_size
    if size == 0:
        raise MediaError(f"{path}: empty file (0 bytes)")
    if size < 2048:
        with open(path, "rb") as fh:
            if fh.read(len(_LFS_MAGIC)) == _LFS_MAGIC:
                raise MediaError(f"{path}: Git LFS pointer file ({size} bytes), not media; "
                                 "run `git lfs pull` to fetch the real file")


def _open(path: Path):
    """av.open with errors turned into MediaError."""
    try:
        return av.open(str(path))
    except av.FFmpegError as exc:
        raise MediaError(f"{path}: corrupt or truncated container ({exc})") from exc


def frame_files(folder: str | Path) -> list[Path]:
    """Image files of a frame folder in natural order (frame2 before frame10)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MediaError(f"{folder}: frame folder not found")
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS]
    if not files:
        raise MediaError(f"{folder}: empty frame folder (no {'/'.join(sorted(IMAGE_EXTS))} files)")
    return sorted(files, key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)])


def probe(path: str | Path) -> MediaInfo:
    """Inspect a clip without decoding pictures; raises :class:`MediaError` naming the problem."""
    path = Path(path)
    _check_file(path)
    kind = media_kind(path)
    if kind == "frames":
        files = frame_files(path)
        width, height = _image_size(files[0])
        return MediaInfo(str(path), kind, len(files), FOLDER_FPS, len(files) / FOLDER_FPS, width, height, False)
    if kind == "image":
        width, height = _image_size(path)
        return MediaInfo(str(path), kind, 1, 0.0, 0.0, width, height, False)
    with _open(path) as container:
        if not container.streams:
            raise MediaError(f"{path}: zero-length media (the container holds no streams)")
        has_audio = bool(container.streams.audio)
        if kind == "audio" or not container.streams.video:
            if not has_audio:
                raise MediaError(f"{path}: no decodable video or audio stream")
            stream = container.streams.audio[0]
            return MediaInfo(str(path), "audio", 0, 0.0, _stream_duration(container, stream), 0, 0, True)
        stream = container.streams.video[0]
        n = _count_packets(path, container, stream)
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        duration = _stream_duration(container, stream) or (n / fps if fps else 0.0)
        return MediaInfo(str(path), "video", n, fps, duration, stream.codec_context.width,
                         stream.codec_context.height, has_audio)


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, Image.DecompressionBombError) as exc:
        raise MediaError(f"{path}: unreadable image ({exc})") from exc


def _stream_duration(container, stream) -> float:
    """Stream duration in seconds (container duration when the stream has none)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0


def _count_packets(path: Path, container, stream) -> int:
    """Number of non-empty packets of a video stream (demux only); raises on zero."""
    try:
        n = sum(1 for pkt in container.demux(stream) if pkt.size)
    except av.FFmpegError as exc:
        raise MediaError(f"{path}: corrupt or truncated container ({exc})") from exc
    if n == 0:
        raise MediaError(f"{path}: zero-length video (no frames in the video stream)")
    return n


def _target_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """(w, h) scaled so that the longer side is at most ``max_side`` (unchanged when None)."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _to_rgb(frame: av.VideoFrame, max_side: int | None) -> np.ndarray:
    width, height = _target_size(frame.width, frame.height, max_side)
    if (width, height) != (frame.width, frame.height):
        frame = frame.reformat(width=width, height=height, interpolation="AREA")
    return frame.to_ndarray(format="rgb24")


def video_frames(path: Path) -> Iterator[tuple[float, "av.VideoFrame"]]:
    """(time_s, PyAV frame) of every frame of the video stream, decoded sequentially (times from
    the pts relative to the stream's start). The one decode loop of videos: callers convert only
    the frames they keep (:func:`_to_rgb`). Raises MediaError naming the file and the number of
    frames decoded when the stream is corrupt or truncated."""
    count = 0
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        start = stream.start_time or 0
        try:
            for frame in container.decode(stream):
                pts = frame.pts if frame.pts is not None else start
                yield (float((pts - start) * stream.time_base) if stream.time_base else 0.0), frame
                count += 1
        except av.FFmpegError as exc:
            raise MediaError(f"{path}: corrupt or truncated video stream after {count} frames ({exc})") from exc


def _decode_video(path: Path, wanted: np.ndarray, max_side: int | None) -> tuple[dict, dict, int]:
    """Decode sequentially, keeping frames whose index is in ``wanted``.

    Returns ({index: rgb}, {index: time_s}, number of frames decoded).
    """
    keep = set(int(i) for i in wanted)
    frames, times, count = {}, {}, 0
    for count, (t, frame) in enumerate(video_frames(path), start=1):
        if count - 1 in keep:
            frames[count - 1], times[count - 1] = _to_rgb(frame, max_side), t
    return frames, times, count


def _load_video_frames(path: Path, num_frames: int, max_side: int | None, info: MediaInfo):
    """(frames (T,H,W,3), times (T,), indices (T,), n decoded) for a video file."""
    idx = sample_indices(info.n_frames, num_frames)
    frames, times, count = _decode_video(path, idx, max_side)
    if count == 0:
        raise MediaError(f"{path}: no decodable video frames")
    if count < info.n_frames:  # fewer frames decoded than packets: resample on what decodes
        idx = sample_indices(count, num_frames)
        frames, times, count = _decode_video(path, idx, max_side)
    stack = np.stack([frames[int(i)] for i in idx])
    return stack, np.array([times[int(i)] for i in idx], dtype=np.float32), idx, count


def _read_image(path: Path, size: tuple[int, int] | None, max_side: int | None) -> np.ndarray:
    """(H, W, 3) uint8 RGB; resized to ``size`` (w, h) when given, else capped by ``max_side``."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            target = size or _target_size(im.width, im.height, max_side)
            if target != im.size:
                im = im.resize(target, Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except (OSError, Image.DecompressionBombError) as exc:
        raise MediaError(f"{path}: unreadable image ({exc})") from exc


def _load_folder_frames(folder: Path, num_frames: int, max_side: int | None):
    """Sampled frames of a folder; frames of a different size are resized to the first one's."""
    files = frame_files(folder)
    idx = sample_indices(len(files), num_frames)
    cache: dict[int, np.ndarray] = {}
    for i in dict.fromkeys(int(i) for i in idx):
        size = None if not cache else (next(iter(cache.values())).shape[1::-1])
        cache[i] = _read_image(files[i], size, max_side)
    stack = np.stack([cache[int(i)] for i in idx])
    return stack, (idx / FOLDER_FPS).astype(np.float32), idx, len(files)


def load_clip(path: str | Path, *, num_frames: int = 16, sample_rate: int = 16_000,
              audio_path: str | Path | None = None, max_side: int | None = None, with_audio: bool = True) -> Clip:
    """Decode a clip of any supported kind into T sampled frames plus its audio.

    path: video file, frame folder, still image or audio-only file. num_frames: T.
    sample_rate: audio rate in Hz. audio_path: take audio from this file instead (frame
    folders and images have none of their own). max_side: cap the longer frame side (pixels).
    with_audio: False skips decoding the audio (``audio`` is None; for callers that need frames only).
    Still images become T copies with times 0; audio-only files give T = 0 frames.
    Raises :class:`MediaError` for missing, empty, LFS-pointer, corrupt or stream-less files.
    """
    path = Path(path)
    info = probe(path)
    empty = (np.zeros((0, 0, 0, 3), np.uint8), np.zeros(0, np.float32), np.zeros(0, np.int64))
    if info.kind == "video":
        frames, times, idx, n = _load_video_frames(path, num_frames, max_side, info)
    elif info.kind == "frames":
        frames, times, idx, n = _load_folder_frames(path, num_frames, max_side)
    elif info.kind == "image":
        still = _read_image(path, None, max_side)
        frames = np.repeat(still[None], num_frames, axis=0)
        times, idx, n = np.zeros(num_frames, np.float32), np.zeros(num_frames, np.int64), 1
    else:
        (frames, times, idx), n = empty, 0
    source = Path(audio_path) if audio_path is not None else path
    wanted = with_audio and (audio_path is not None or info.has_audio)
    audio = load_audio(source, sample_rate=sample_rate) if wanted else None
    duration = info.duration
    if info.kind == "audio" and audio is not None:
        duration = len(audio) / sample_rate
    return Clip(str(path), info.kind, frames, times, idx, n, info.fps, duration, audio, sample_rate)


def load_audio(path: str | Path, *, sample_rate: int = 16_000) -> np.ndarray | None:
    """The first audio stream as (N,) float32 mono at ``sample_rate`` Hz; None without one.

    Resampled with ``av.AudioResampler`` (flt, mono), flushed, and trimmed to the stream's
    duration to drop encoder padding.
    """
    path = Path(path)
    _check_file(path)
    if path.is_dir() or media_kind(path) == "image":
        return None
    with _open(path) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        chunks = list(audio_chunks(container, stream, sample_rate, path))
        duration = _stream_duration(container, stream)
    audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if duration > 0:
        audio = audio[: int(round(duration * sample_rate))]
    return audio


def audio_chunks(container, stream, sample_rate: int, path: Path) -> Iterator[np.ndarray]:
    """Mono float32 chunks of ``stream`` (an audio stream of the open ``container``) resampled to
    ``sample_rate``, in order, the resampler flushed at the end. The one audio decode loop: a
    corrupt or truncated stream raises MediaError naming ``path``."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
    try:
        for frame in container.decode(stream):
            frame.pts = None  # let the resampler count samples itself
            for out in resampler.resample(frame):
                yield out.to_ndarray().reshape(-1)
    except av.FFmpegError as exc:
        raise MediaError(f"{path}: corrupt or truncated audio stream ({exc})") from exc
    for out in resampler.resample(None):
        yield out.to_ndarray().reshape(-1)


def iter_frames(path: str | Path, *, every: int = 1, max_side: int | None = None
                ) -> Iterator[tuple[float, np.ndarray]]:
    """Stream (time_s, (H, W, 3) uint8 RGB) for every ``every``-th frame, one frame in memory.

    Videos decode sequentially; frame folders read one image at a time at :data:`FOLDER_FPS`;
    a still image yields one frame at time 0; an audio-only file yields nothing.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    path = Path(path)
    info = probe(path)
    if info.kind == "frames":
        for i, file in enumerate(frame_files(path)[::every]):
            yield i * every / FOLDER_FPS, _read_image(file, None, max_side)
    elif info.kind == "image":
        yield 0.0, _read_image(path, None, max_side)
    elif info.kind == "video":
        yield from _iter_video(path, every, max_side)


def _iter_video(path: Path, every: int, max_side: int | None) -> Iterator[tuple[float, np.ndarray]]:
    for count, (t, frame) in enumerate(video_frames(path)):
        if count % every == 0:
            yield t, _to_rgb(frame, max_side)
