"""Export a trained run for deployment: ONNX (default) or TorchScript.

Why ONNX by default: an ``.onnx`` file runs under onnxruntime (C, C++, C#, Java, JavaScript,
mobile) with no Python or torch on the target, is a ~15 MB runtime instead of a ~1 GB torch
install, and is the format inference servers and edge runtimes accept. TorchScript is offered for
deployments that already run libtorch; it is deprecated upstream in favour of ``torch.export``.

What is exported (the same split :mod:`femo.inference.predictor` runs; see
:func:`femo.inference.predictor.load_run_model`):

* ``OUT`` -- the **fusion model**: every weight except the per-frame CNN. Inputs, in order
  (only those of the run's modalities; B and N are dynamic)::

      face_emb        (B, T, D) float32   frame-CNN features (zeros where no face)
      face_mask       (B, T)    bool      False = no face in that frame
      landmarks       (B, T, G) float32   femo.features.geometry vectors
      landmarks_mask  (B, T)    bool      False = neither face mesh nor body
      audio           (B, 1, 64, A) float32  normalised log-mel (femo.data.dataset.audio_inputs)
      prosody         (B, A, 4) float32
      audio_mask      (B,)      bool      False = no audio

  Output ``probabilities`` (B, C) float32, softmax over the run's classes. A modality whose mask is
  all False goes through the model's learned missing-modality path, as in eager mode.
* ``OUT`` with suffix ``.frames.onnx`` (``.frames.pt``) -- the **frame encoder**: ``crops``
  (N, 3, S, S) float32 in [0, 1] -> ``features`` (N, D); absent when the run has no face modality.
* ``OUT`` with suffix ``.json`` -- classes, T, S, A, G, D, input names and shapes, files and sizes.

Every export is checked against the eager model on the same random inputs, including samples
with a missing face and missing audio (``atol`` 1e-4); :class:`ExportError` otherwise.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

import femo

EXPORT_FORMATS: tuple[str, ...] = ("onnx", "torchscript")
INPUT_SHAPES: dict[str, str] = {
    "face_emb": "B,T,D", "face_mask": "B,T", "landmarks": "B,T,G", "landmarks_mask": "B,T",
    "audio": "B,1,64,A", "prosody": "B,A,4", "audio_mask": "B"}


class ExportError(RuntimeError):
    """The exported model does not reproduce the eager one (or cannot be written); says by how much."""


class ProbabilityHead(nn.Module):
    """The run's head with positional tensor inputs (``keys`` order) -> probabilities (B, C)."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head
        self.keys = tuple(head.input_keys())

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(dict(zip(self.keys, inputs)))["logits"].float(), dim=1)


@dataclass(frozen=True)
class ExportResult:
    """Files written (``{"fusion": path, "frames": path, "meta": path}``), their sizes in bytes,
    and the largest absolute probability difference exported vs eager over the checks."""

    files: dict[str, Path]
    sizes: dict[str, int]
    max_abs_diff: float
    checks: dict[str, float] = field(default_factory=dict)


def example_inputs(model, *, batch: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random inputs for the head of ``model`` (a :class:`femo.inference.predictor.RunModel`).

    Sample 0 has every modality; sample 1 has no face (and no landmarks); sample 2 has no audio
    and half its frames without a face. Shapes as in the module docstring.
    """
    from femo.features.geometry import GEOMETRY_DIM

    g = torch.Generator().manual_seed(seed)
    d, cfg = model.data, model.head.config
    t, a = d.num_frames, d.audio_frames
    emb = int(cfg.embedding_dim or 1)
    x = {"face_emb": torch.randn(batch, t, emb, generator=g), "face_mask": torch.ones(batch, t, dtype=torch.bool),
         "landmarks": torch.randn(batch, t, cfg.landmark_dim or GEOMETRY_DIM, generator=g),
         "landmarks_mask": torch.ones(batch, t, dtype=torch.bool),
         "audio": torch.rand(batch, 1, 64, a, generator=g) * 2 - 1, "prosody": torch.rand(batch, a, 4, generator=g),
         "audio_mask": torch.ones(batch, dtype=torch.bool)}
    if batch > 1:
        x["face_mask"][1] = False
        x["landmarks_mask"][1] = False
        x["face_emb"][1] = 0
    if batch > 2:
        x["audio_mask"][2] = False
        x["audio"][2] = 0
        x["prosody"][2] = 0
        x["face_mask"][2, ::2] = False
    return {k: x[k] for k in model.head.input_keys()}


def _write_onnx(module: nn.Module, args: tuple, path: Path, inputs: list[str], output: str, opset: int) -> None:
    dynamic = {name: {0: "batch"} for name in [*inputs, output]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python bools on shape checks
        try:
            torch.onnx.export(module, args, str(path), input_names=inputs, output_names=[output],
                              dynamic_axes=dynamic, opset_version=opset, dynamo=False)
        except torch.onnx.errors.OnnxExporterError as exc:  # e.g. antialiased resize (face-api preprocessing)
            raise ExportError(f"{path}: {type(module).__name__} cannot be written as ONNX opset {opset} "
                              f"({str(exc).splitlines()[0]}); use --format torchscript") from exc


def _write_torchscript(module: nn.Module, args: tuple, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, args, check_trace=False)
    traced.save(str(path))


def run_exported(path: str | Path, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    """Run an exported file (``.onnx`` with onnxruntime, else TorchScript) on named inputs; float64 output."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        return session.run(None, {n: inputs[n].numpy() for n in names})[0].astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream; still works
        module = torch.jit.load(str(path))
    with torch.inference_mode():
        return module(*inputs.values()).double().numpy()


def export_run(run: str | Path, out: str | Path, *, format: str = "onnx", opset: int = 17,
               atol: float = 1e-4) -> ExportResult:
    """Export ``run`` to ``out`` (+ frame encoder and JSON sidecar), check it; see module docstring."""
    from femo.inference.predictor import load_run_model

    if format not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {format!r}; choose one of {list(EXPORT_FORMATS)}")
    model = load_run_model(run)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ext = ".onnx" if format == "onnx" else ".pt"
    files = {"fusion": out}
    head = ProbabilityHead(model.head).eval()
    inputs = example_inputs(model)
    with torch.no_grad(), _no_fastpath():
        if format == "onnx":
            _write_onnx(head, tuple(inputs.values()), out, list(inputs), "probabilities", opset)
        else:
            _write_torchscript(head, tuple(inputs.values()), out)
        if model.frames is not None:
            files["frames"] = out.with_name(out.stem + ".frames" + ext)
            crops = torch.rand(4, 3, model.data.face_size, model.data.face_size, generator=torch.Generator().manual_seed(1))
            if format == "onnx":
                _write_onnx(model.frames.eval(), (crops,), files["frames"], ["crops"], "features", opset)
            else:
                _write_torchscript(model.frames.eval(), (crops,), files["frames"])
    checks = verify(model, files)
    files["meta"] = out.with_suffix(".json")
    sizes = {k: p.stat().st_size for k, p in files.items() if k != "meta"}
    _write_meta(files, model, inputs, sizes, format, checks)
    worst = max(checks.values())
    if worst > atol:
        raise ExportError(f"{out}: exported model differs from the eager one by {worst:.2e} (> atol {atol:g}); "
                          f"checks: {checks}")
    sizes["meta"] = files["meta"].stat().st_size
    return ExportResult(files, sizes, worst, checks)


def verify(model, files: dict[str, Path]) -> dict[str, float]:
    """Max |exported - eager| per check: the fusion model on all-present / missing-face / missing-audio
    samples and on another batch size, and the frame encoder on random crops."""
    head = ProbabilityHead(model.head).eval()
    checks = {}
    for name, batch, seed in (("fusion_b3_missing", 3, 0), ("fusion_b5", 5, 2)):
        inputs = example_inputs(model, batch=batch, seed=seed)
        with torch.inference_mode():
            eager = head(*inputs.values()).double().numpy()
        checks[name] = float(np.abs(run_exported(files["fusion"], inputs) - eager).max())
    absent = example_inputs(model, batch=2, seed=4)  # no sample has a face or landmarks
    for key in ("face_mask", "landmarks_mask"):
        if key in absent:
            absent[key][:] = False
    with torch.inference_mode():
        eager = head(*absent.values()).double().numpy()
    checks["fusion_no_face_in_batch"] = float(np.abs(run_exported(files["fusion"], absent) - eager).max())
    if "frames" in files:
        s = model.data.face_size
        crops = {"crops": torch.rand(3, 3, s, s, generator=torch.Generator().manual_seed(3))}
        with torch.inference_mode():
            eager = model.frames(crops["crops"]).double().numpy()
        checks["frames"] = float(np.abs(run_exported(files["frames"], crops) - eager).max())
    return checks


def _write_meta(files, model, inputs, sizes, format, checks) -> None:
    cfg = model.head.config
    meta = {"format": format, "classes": list(model.classes), "femo": femo.__version__, "torch": str(torch.__version__),
            "num_frames": model.data.num_frames, "face_size": model.data.face_size,
            "audio_frames": model.data.audio_frames, "embedding_dim": cfg.embedding_dim,
            "modalities": list(cfg.modalities),
            "inputs": {k: {"shape": INPUT_SHAPES[k], "dtype": str(v.dtype).replace("torch.", "")} for k, v in inputs.items()},
            "output": {"probabilities": "B,C"},
            "frames_input": {"crops": "N,3,S,S float32 in [0, 1]"} if "frames" in files else None,
            "files": {k: p.name for k, p in files.items()}, "bytes": sizes, "max_abs_diff": checks}
    files["meta"].write_text(json.dumps(meta, indent=2))


class _no_fastpath:
    """Disable torch's fused transformer fast path (no ONNX/TorchScript equivalent) for a block."""

    def __enter__(self):
        self.prev = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)

    def __exit__(self, *exc):
        torch.backends.mha.set_fastpath_enabled(self.prev)
