"""Per-clip features: mediapipe face mesh/blendshapes and body pose, audio features, condition flags.

``face`` (:class:`~femo.features.face.FaceTracker`), ``pose``
(:class:`~femo.features.pose.PoseTracker`), ``audio`` (:func:`~femo.features.audio.audio_features`)
and ``conditions`` (:func:`~femo.features.conditions.condition_flags`) work on numpy arrays; the
extraction job that writes them to the feature store is :mod:`femo.extract`.
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def quiet_native_stderr(log_path: str | Path | None = None) -> Iterator[None]:
    """Send native (C/C++) writes to file descriptor 2 to ``log_path`` (default: discard) for the block.

    mediapipe's C++ log lines bypass Python and ignore ``GLOG_minloglevel``; without this they
    drown a progress bar. Python exceptions are unaffected: they propagate as objects and are
    printed after fd 2 is restored.
    """
    target = os.fspath(log_path) if log_path else os.devnull
    sys.stderr.flush()
    saved = os.dup(2)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)
