"""Per-clip features and the extraction job that writes them to the feature store.

Features (numpy arrays in, arrays out):

* :mod:`.face`: face mesh, blendshapes, head pose and aligned face crops (mediapipe FaceLandmarker;
  the one face alignment, ``alignment_matrix``).
* :mod:`.pose`: body pose, 33 landmarks with visibility (mediapipe PoseLandmarker).
* :mod:`.audio`: log-mel, MFCC and prosody from the clip's own track, on one frame grid.
* :mod:`.functionals`: utterance-level openSMILE functionals (eGeMAPS, ComParE).
* :mod:`.geometry`: per-frame geometry vectors (blendshapes, normalised landmarks, head pose, upper body).
* :mod:`.conditions`: per-clip condition flags (light, blur, occlusion, head pose, audio) for the sliced reports.

The job (manifest -> store):

* :mod:`.clip`: the settings (:class:`~femo.features.clip.ExtractConfig`), one clip -> arrays
  (:class:`~femo.features.clip.ClipExtractor`) and the per-clip checks.
* :mod:`.extract`: the job over a manifest: screening, resume, workers, shards, merge (``femo extract``).
* :mod:`.resume`: row screening, row fingerprints, the per-clip journal and the store lock.
* :mod:`.pool`: worker processes that survive a native crash and exit with their parent.
* :mod:`.engines`: beyond one pool: Ray actor tasks, or a SLURM job array of shards.
* :mod:`.embed`: the cache of frozen frame-CNN embeddings in ``STORE/embeddings/<encoder>/``.

This package itself holds only :func:`quiet_native_stderr` (mediapipe's C++ log lines off the terminal).
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
