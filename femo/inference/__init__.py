"""Inference on user videos (what ``femo predict`` and ``femo export`` need).

* :mod:`.predictor`: ``femo.load(RUN)`` -> :class:`~femo.inference.predictor.Predictor`: the run's model,
  split into the frame CNN and the head.
* :mod:`.stream`: the streaming loop: decode a video once, featurize it chunk by chunk, score the windows.
* :mod:`.tracking`: face and body tracking over one long video, chunk after chunk.
* :mod:`.faces`: several people (``--faces all``): stable face ids and per-face features.
* :mod:`.face_timelines`: the streaming loop that gives one timeline per face id.
* :mod:`.frames`: only the frames the windows need, and the frame CNN on them.
* :mod:`.window_audio`: a window's log-mel and prosody in NumPy (librosa's features, without its start-up).
* :mod:`.timeline`: the windows laid over a video and the :class:`~femo.inference.timeline.Timeline` result.
* :mod:`.outputs`: the files a timeline is written to: JSON, CSV, a PNG plot.
* :mod:`.video_out`: the video with the prediction drawn on it (``--video-out``).
* :mod:`.batch`: many videos at once (``femo predict DIR_OR_GLOB --out-dir OUT --workers N``).
* :mod:`.pairs`: clip-level prediction of a face with a separately recorded voice (``--audio``, pair manifests).
* :mod:`.export`: the model as ONNX or TorchScript with a JSON sidecar (``femo export``).
"""
