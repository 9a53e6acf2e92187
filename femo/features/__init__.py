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
import importlib
import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def quiet_native_stderr(log_path: str | Path | None = None) -> Iterator[None]:
    """Send native (C/C++) writes to file descriptor 2 to ``log_path`` (default: discard) for the block.

    mediapipe's C++ log lines bypass Python and ignore ``GLOG_minloglevel``; without this they
    drown a progress bar. Python exceptions are unaffected: they propagate as objects and are
    printed after fd 2 is restored.
    """
    with quiet_native_fd(2, log_path):
        yield


@contextlib.contextmanager
def quiet_native_fd(fd: int, log_path: str | Path | None = None) -> Iterator[None]:
    """Send native writes to file descriptor ``fd`` (1: stdout, 2: stderr) to ``log_path``
    (default: discard) for the block; Python's buffered stream of that fd is flushed around it."""
    stream = {1: sys.stdout, 2: sys.stderr}.get(fd)
    target = os.fspath(log_path) if log_path else os.devnull
    if stream is not None:
        stream.flush()
    saved = os.dup(fd)
    sink = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(sink, fd)
        yield
    finally:
        if stream is not None:
            stream.flush()
        os.dup2(saved, fd)
        os.close(saved)
        os.close(sink)


def mediapipe_tasks():
    """``(BaseOptions, vision)`` of mediapipe's Tasks API.

    ``import mediapipe`` loads every task and its drawing helpers, which import
    ``matplotlib.pyplot`` (~0.4 s of every ``femo predict`` and extraction worker's start-up).
    Unless pyplot is already imported, a stand-in (:class:`_DeferredModule`) takes its place for
    that import and imports the real pyplot on first use of one of its names, by mediapipe's
    drawing functions or anyone else, then forwards to it; later imports get the real module.
    """
    if "matplotlib.pyplot" not in sys.modules and "mediapipe" not in sys.modules:
        sys.modules["matplotlib.pyplot"] = _DeferredModule("matplotlib.pyplot")
    from mediapipe.tasks.python import BaseOptions, vision

    stand_in, package = sys.modules.get("matplotlib.pyplot"), sys.modules.get("matplotlib")
    if isinstance(stand_in, _DeferredModule) and package is not None and not hasattr(package, "pyplot"):
        package.pyplot = stand_in  # what the import system sets after importing a submodule
    return BaseOptions, vision


class _DeferredModule(types.ModuleType):
    """Stands in for module ``name`` in ``sys.modules`` until a name of it is used; then imports the
    real module (which replaces it in ``sys.modules``) and forwards every attribute to it.

    Dunder names other than ``__all__`` are not forwarded, so tools that scan ``sys.modules``
    (``inspect.getmodule`` reads every module's ``__file__``) see a module without them instead of
    importing it; ``__all__`` imports it and lists its public names, so ``from M import *`` gets
    what it would get from the real module.
    """

    def __getattr__(self, attr: str):  # called only for names the stand-in itself lacks
        if attr.startswith("__") and attr.endswith("__") and attr != "__all__":
            raise AttributeError(attr)
        real = self.__dict__.get("_real")
        if real is None:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
            real = self.__dict__["_real"] = importlib.import_module(self.__name__)
        if attr == "__all__" and not hasattr(real, "__all__"):
            return [k for k in vars(real) if not k.startswith("_")]
        return getattr(real, attr)
