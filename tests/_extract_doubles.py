"""Stand-in clip extractors for the extraction job's pool, resume and lock tests.

They run in real worker processes (spawned, so they must live in an importable module) and
write real store files, but skip decoding and the landmarkers: a clip's arrays depend only on
its file's bytes. File names steer them: ``crash*`` kills the worker process with SIGKILL (a
native crash), ``slow*`` sleeps :data:`SLOW_SECONDS` first. Every attempt leaves a
``<file>.attempt-<pid>`` marker next to the clip, so tests can count attempts per process.
"""
from __future__ import annotations

import os
import signal
import time
import zlib
from pathlib import Path

import numpy as np

from femo.data import store as fs

SLOW_SECONDS = 30.0


class FakeExtractor:
    """``extract(path, audio_path) -> (arrays, flags, seconds)`` like ClipExtractor, no models."""

    def __init__(self, config, *, log_path=None) -> None:
        self.config = config

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> FakeExtractor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def extract(self, path: str, audio_path: str | None = None) -> tuple[dict, dict, dict]:
        p = Path(path)
        Path(f"{p}.attempt-{os.getpid()}").touch()
        if p.name.startswith("crash"):
            os.kill(os.getpid(), signal.SIGKILL)
        if p.name.startswith("slow"):
            time.sleep(SLOW_SECONDS)
        return fake_arrays(p.read_bytes(), self.config.num_frames, self.config.face_size), fake_flags(), {}


def fake_arrays(data: bytes, t: int, s: int) -> dict:
    """Every CLIP_KEYS array with its store shape; ``times`` carry a checksum of ``data``."""
    arrays = {"times": np.full(t, zlib.crc32(data) % 1000, np.float32), "faces": np.zeros((t, s, s, 3), np.uint8),
              "face_found": np.zeros(t, bool), "face_box": np.zeros((t, 4), np.float32),
              "landmarks": np.zeros((t, 478, 3), np.float32), "blendshapes": np.zeros((t, 52), np.float32),
              "head_pose": np.zeros((t, 3), np.float32), "pose": np.zeros((t, 33, 4), np.float32),
              "pose_found": np.zeros(t, bool), "logmel": np.zeros((64, 0), np.float32),
              "mfcc": np.zeros((20, 0), np.float32), "prosody": np.zeros((0, 4), np.float32),
              "has_audio": np.array(False)}
    assert set(arrays) == set(fs.CLIP_KEYS)
    return arrays


def fake_flags() -> dict:
    """Condition flags of a clip without face or audio."""
    flags = {k: float("nan") for k in fs.FLAG_COLUMNS}
    flags["has_audio"] = False
    return flags


def attempts(path: Path) -> int:
    """How many times a FakeExtractor started on ``path``."""
    return len(list(path.parent.glob(f"{path.name}.attempt-*")))
