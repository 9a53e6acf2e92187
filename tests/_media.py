"""The test media, built for real with PyAV / PIL / OpenCV (no fixtures on disk).

Manifest and layout tests: tiny mp4 (+AAC), wav, JPEG/PNG frame folders, still images, a Git LFS
pointer and a truncated mp4 (every clip 32x32 and under a second). Inference tests: an animated
astronaut photo with a tone, a face-free clip, two people, and a run folder holding an untrained
FemoNet checkpoint.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from femo.config import DataConfig, ModelConfig, to_dict
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


#: Inference tests: three classes, a small model and data sizes.
CLASSES = ("happy", "sad", "neutral")
TINY_DATA = DataConfig(num_frames=8, face_size=48, audio_frames=32, classes=CLASSES)
TINY_MODEL = ModelConfig(dim=32, heads=2, temporal="transformer", fusion="gated", frame_encoder="resnet18")


def wobbling_tone(seconds: float, *, sample_rate: int = 16_000, freq: float = 220.0) -> np.ndarray:
    """(N,) float32 sine at ``freq`` Hz with a slow amplitude wobble."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (0.3 * np.sin(2 * np.pi * freq * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.5 * t))).astype(np.float32)


def moving_frames(image: np.ndarray, *, seconds: float, fps: float, size: tuple[int, int]) -> np.ndarray:
    """(N, H, W, 3) uint8: ``image`` on a grey canvas of ``size`` (w, h) with a small affine wobble."""
    w, h = size
    side = min(w, h)
    img = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    out = []
    for i in range(int(round(seconds * fps))):
        a = 2 * np.pi * i / max(fps * 2, 1)
        m = cv2.getRotationMatrix2D((side / 2, side / 2), 3 * np.sin(a), 1.0 + 0.02 * np.cos(a))
        m[:, 2] += [(w - side) / 2 + 4 * np.sin(a), 3 * np.cos(a)]
        out.append(cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_CONSTANT, borderValue=(128, 128, 128)))
    return np.stack(out)


def astronaut_clip(path: Path, *, seconds: float = 3.0, fps: float = 10.0, size=(320, 240), audio: bool = True) -> Path:
    """An mp4 of the animated astronaut photo, with a tone unless ``audio`` is False."""
    from skimage.data import astronaut

    frames = moving_frames(astronaut(), seconds=seconds, fps=fps, size=size)
    return write_video(path, frames, fps=fps, audio=wobbling_tone(seconds) if audio else None)


def gradient_frames(*, seconds: float, fps: float, size=(320, 240)) -> np.ndarray:
    """(N, H, W, 3) uint8 of a moving colour gradient (no face)."""
    w, h = size
    x = np.linspace(0, 255, w)[None, :, None]
    y = np.linspace(0, 255, h)[:, None, None]
    base = np.concatenate([np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)),
                           np.full((h, w, 1), 90.0)], axis=2).astype(np.uint8)
    return moving_frames(base, seconds=seconds, fps=fps, size=size)


def face_then_gone_clip(path: Path, *, seconds: float = 2.0, fps: float = 10.0, size=(320, 240)) -> Path:
    """An mp4 with a tone: the animated astronaut for ``seconds``, then a face-free gradient as long."""
    from skimage.data import astronaut

    frames = np.concatenate([moving_frames(astronaut(), seconds=seconds, fps=fps, size=size),
                             gradient_frames(seconds=seconds, fps=fps, size=size)])
    return write_video(path, frames, fps=fps, audio=wobbling_tone(2 * seconds))


def make_run(out: Path, *, model: ModelConfig = TINY_MODEL, data: DataConfig = TINY_DATA,
             classes=CLASSES, seed: int = 0) -> Path:
    """A run folder (config.json + best.pt) with an untrained FemoNet, in femo.training.loop's format."""
    from femo.models.net import FemoNet

    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    net = FemoNet(model, len(classes)).eval()
    config = {"model": to_dict(model), "train": {}, "data": to_dict(data), "classes": list(classes),
              "store": str(out / "no-store"), "fold": None, "versions": {}}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    torch.save({"model": net.state_dict(), "epoch": 1, "config": config, "classes": list(classes)}, out / "best.pt")
    return out


def two_people_clip(path: Path, *, seconds: float = 1.0, fps: float = 10.0) -> Path:
    """640x360 mp4: the astronaut's head large right of centre (300 px) and smaller at the left edge
    (200 px), shifted a few pixels per frame, with a tone."""
    from skimage.data import astronaut

    head = astronaut()[20:280, 120:380]
    canvas = np.full((360, 640, 3), 128, np.uint8)
    canvas[30:330, 300:600] = cv2.resize(head, (300, 300), interpolation=cv2.INTER_AREA)
    canvas[80:280, 10:210] = cv2.resize(head, (200, 200), interpolation=cv2.INTER_AREA)
    shifts = [(round(3 * np.sin(i / fps * np.pi)), round(4 * np.cos(i / fps * np.pi))) for i in range(int(seconds * fps))]
    frames = np.stack([np.roll(canvas, s, axis=(0, 1)) for s in shifts])
    return write_video(path, frames, fps=fps, audio=wobbling_tone(seconds))
