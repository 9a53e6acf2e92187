"""Only the frames the windows need, and the frame CNN on them, for ``femo predict``.

* :func:`needed_times`: a window [s, s + w] looks at T frames, the centres of T equal segments
  (:func:`femo.inference.timeline.target_times`); overlapping windows on a hop that divides the
  segment share them, so a 2 s window with T = 16 and a 0.5 s hop needs 8 frames per second
  whatever the video's frame rate.
* :func:`iter_needed_frames`: decodes the video once (every packet must be decoded anyway) but
  converts to RGB only the frame nearest each needed time (ties go to the earlier frame, as
  :meth:`femo.inference.stream.FrameBuffer.nearest` does), holding one undecoded-to-RGB frame at a time.
* :class:`FastFrameEncoder`: the run's frame CNN exported in memory to ONNX and run by
  onnxruntime (the package femo already depends on); on this CPU it takes ~60% of eager PyTorch's
  CPU time per crop for ResNet-18 at 112 px (benchmarks/predict.py). Encoders the exporter cannot
  trace fall back to eager PyTorch in channels-last layout. Outputs agree with eager within 1e-4.
"""
from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from femo.features import quiet_native_fd
from femo.inference.timeline import target_times


def needed_times(spans: np.ndarray, num_frames: int) -> np.ndarray:
    """(K,) sorted unique seconds that the windows ``spans`` (W, 2) look at (T = ``num_frames`` each)."""
    if not len(spans):
        return np.zeros(0)
    every = np.concatenate([target_times(s, e, num_frames) for s, e in spans])
    return np.unique(np.round(every, 6))


def iter_needed_frames(path: str | Path, times: np.ndarray, *, max_side: int | None = None
                       ) -> Iterator[tuple[float, np.ndarray]]:
    """(time_s, (H, W, 3) uint8 RGB) of the decoded frame nearest each of ``times`` (sorted),
    each frame once, in order. Frame folders and still images go through
    :func:`femo.data.decode.iter_frames` (all their frames)."""
    from femo.data.decode import _to_rgb, iter_frames, probe, video_frames

    path = Path(path)
    if probe(path).kind != "video":
        yield from iter_frames(path, max_side=max_side)
        return
    times, j, prev, last_yielded = np.asarray(times, np.float64), 0, None, None
    for t, frame in video_frames(path):
        if prev is not None and t <= prev[0]:
            continue  # non-increasing timestamps (broken files)
        while j < len(times) and times[j] <= t:
            pick = prev if prev is not None and abs(prev[0] - times[j]) <= abs(t - times[j]) else (t, frame)
            j += 1
            if pick[0] != last_yielded:
                last_yielded = pick[0]
                yield pick[0], _to_rgb(pick[1], max_side)
        prev = (t, frame)
    if prev is not None and j < len(times) and prev[0] != last_yielded:
        yield prev[0], _to_rgb(prev[1], max_side)  # the times past the last frame take the last frame


def prefetch(items: Iterator, size: int) -> Iterator:
    """Iterate ``items`` in a background thread, at most ``size`` ahead (decoding releases the GIL,
    so the next frames decode while the current ones are analysed). Errors re-raise here."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=max(1, size))
    stop, end = threading.Event(), object()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((end, None))
        except BaseException as exc:  # handed to the consumer
            put((end, exc))
        finally:
            getattr(items, "close", lambda: None)()  # release the container in this thread

    thread = threading.Thread(target=produce, name="femo-decode", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = q.get()
            if exc is not None:
                raise exc
            if item is end:
                return
            yield item
    finally:
        stop.set()
        thread.join()


class FastFrameEncoder:
    """A frame CNN, (N, 3, S, S) float in [0, 1] -> (N, D) float32 numpy, run by onnxruntime.

    encoder: the run's frame encoder (a module with ``out_dim``); size: its input side S;
    threads: onnxruntime intra-op threads (default: torch's). ``backend`` says which runs it:
    ``"onnxruntime"`` or ``"torch"`` (channels-last eager, when the export fails or the encoder is
    not on the CPU).
    """

    def __init__(self, encoder: torch.nn.Module, *, size: int, threads: int | None = None) -> None:
        self.encoder, self.out_dim = encoder.eval(), int(encoder.out_dim)
        self.backend, self._session = "torch", None
        device = next(encoder.parameters()).device
        if device.type == "cpu":
            self._session = _onnx_session(encoder, size, threads or torch.get_num_threads())
        if self._session is not None:
            self.backend = "onnxruntime"
        else:
            self.encoder = encoder.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> np.ndarray:
        """x (N, 3, S, S) float in [0, 1] -> (N, D) float32."""
        if self._session is not None:
            return self._session.run(None, {"crops": x.numpy()})[0].astype(np.float32, copy=False)
        device = next(self.encoder.parameters()).device
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        return self.encoder(x).float().cpu().numpy()


def _onnx_session(encoder: torch.nn.Module, size: int, threads: int):
    """An onnxruntime session of ``encoder`` checked against eager on random crops, or None."""
    import onnxruntime as ort

    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    buf = io.BytesIO()
    try:
        # quiet fd 1: torch's exporter prints the whole traced graph to stdout when an operator
        # has no ONNX form (e.g. an antialiased F.interpolate; femo's FER2013 encoders resize by
        # matrix products instead, which export)
        with warnings.catch_warnings(), torch.inference_mode(), quiet_native_fd(1):
            warnings.simplefilter("ignore")
            torch.onnx.export(encoder, (x,), buf, input_names=["crops"], output_names=["features"],
                              dynamic_axes={"crops": {0: "n"}, "features": {0: "n"}}, opset_version=17, dynamo=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.log_severity_level = 3
        session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])
        with torch.inference_mode():
            want = encoder(x).float().numpy()
        got = session.run(None, {"crops": x.numpy()})[0]
    except Exception:  # an operator the exporter or runtime lacks: eager PyTorch does the work
        return None
    return session if np.allclose(got, want, atol=1e-4, rtol=1e-4) else None
