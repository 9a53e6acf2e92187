"""Tiny real media for the manifest and layout tests: mp4 (+AAC), wav, JPEG/PNG frame folders,
still images, a Git LFS pointer and a truncated mp4. Every clip is 32x32 and under a second."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from femo.data.media import write_video, write_wav

LFS_POINTER = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
    "size 1048576\n"
)


def _frames(n: int = 4, seed: int = 0) -> np.ndarray:
    """(n, 32, 32, 3) uint8: a moving bright square on a noisy background."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 60, size=(n, 32, 32, 3), dtype=np.uint8)
    for i in range(n):
        frames[i, 8 + i:16 + i, 8:16] = 230
    return frames


def tone(seconds: float = 0.5, sample_rate: int = 16_000) -> np.ndarray:
    """(N,) float32 440 Hz sine at half scale."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def mp4(path: Path, *, audio: bool = True, seed: int = 0) -> Path:
    """A 4-frame 32x32 H.264 mp4 at 8 fps, with a 0.5 s AAC tone unless ``audio`` is False."""
    return write_video(path, _frames(4, seed), fps=8, audio=tone() if audio else None)


def wav(path: Path) -> Path:
    """A 0.5 s 16 kHz mono wav."""
    return write_wav(path, tone())


def image(path: Path, seed: int = 0) -> Path:
    """One 32x32 RGB still (format from the suffix: .jpg or .png)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_frames(1, seed)[0]).save(path)
    return path


def frame_folder(folder: Path, n: int = 3, suffix: str = ".jpg") -> Path:
    """A folder of ``n`` frames named 1..n."""
    for i, rgb in enumerate(_frames(n), start=1):
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(folder / f"{i}{suffix}")
    return folder


def lfs_pointer(path: Path) -> Path:
    """A Git LFS pointer text file at a media path (what a clone without git-lfs leaves)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(LFS_POINTER)
    return path


def truncated_mp4(path: Path) -> Path:
    """An mp4 cut to its first 40% (the moov index at the end is lost)."""
    mp4(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.4)])
    return path
