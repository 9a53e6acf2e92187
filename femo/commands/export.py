"""`femo export`: write a trained run as ONNX (default) or TorchScript for deployment.

Example::

    femo export runs/dfew_fold1 --format onnx --out deploy/femo.onnx

Writes the fusion model (OUT), the frame encoder (OUT with suffix .frames.onnx) and a JSON
sidecar (OUT with suffix .json: classes, input shapes, sizes); what each file holds is in
``femo.inference.export``. The export is checked against the eager model (missing modalities included) and
the file sizes are printed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    """Add the ``export`` sub-command to ``subparsers``."""
    p = subparsers.add_parser("export", help="export a trained run to ONNX or TorchScript",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="run folder (config.json + best.pt)")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx", help="default onnx")
    p.add_argument("--out", type=Path, required=True, help="output file of the fusion model (.onnx or .pt)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export and check; 0 on success, 1 when the check fails, 2 when the run cannot be loaded."""
    from femo.inference.export import ExportError, export_run
    from femo.training.runs import CheckpointError, RunError

    try:
        result = export_run(args.run, args.out, format=args.format, opset=args.opset)
    except (RunError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, path in result.files.items():
        print(f"{name:<7} {path}  {result.sizes[name] / 1e6:8.2f} MB")
    print(f"max |exported - eager| probability: {result.max_abs_diff:.2e}")
    return 0
