"""Record reference outputs of the ORIGINAL face-expression models into tests/data/.

The recorders run the published models with their own frameworks, sharing no code with femo's
torch ports: ``record_keras.py`` (Keras 3 reading fer's HDF5) and ``record_faceapi.cjs``
(face-api.js on the TF.js cpu backend in Node.js). This script builds the input crops
(:mod:`inputs`), calls both, and writes ``tests/data/face_pretrained_reference.json``.

Rerun (a throwaway environment; neither framework is a femo dependency)::

    python3.11 -m venv /tmp/kerasenv && /tmp/kerasenv/bin/pip install keras jax h5py
    mkdir -p /tmp/faceapi-ref && cd /tmp/faceapi-ref && npm init -y && npm install \
        @vladmandic/face-api@1.7.15 @tensorflow/tfjs@4.22.0 @tensorflow/tfjs-backend-wasm@4.22.0
    femo models fetch --face-weights
    python benchmarks/reference/record_all.py --keras-python /tmp/kerasenv/bin/python \
        --node-modules /tmp/faceapi-ref/node_modules
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inputs import SPECS, crop  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keras-python", required=True, help="python with keras + h5py + jax")
    ap.add_argument("--node-modules", required=True, help="node_modules with @vladmandic/face-api and tfjs")
    ap.add_argument("--out", default=str(ROOT / "tests/data/face_pretrained_reference.json"))
    args = ap.parse_args()
    from femo.assets import asset_path

    h5 = asset_path("emotion_model.hdf5")
    model_dir = asset_path("face_expression_model.bin").parent
    names = list(SPECS)
    with tempfile.TemporaryDirectory() as tmp:
        gray = np.stack([crop(SPECS[n]["fer"], 64, gray=True) for n in names])
        rgb = np.stack([crop(SPECS[n]["faceapi"], 112, gray=False) for n in names])
        np.save(f"{tmp}/gray.npy", gray)
        rgb.tofile(f"{tmp}/rgb.u8")
        env = dict(os.environ, KERAS_BACKEND="jax")
        subprocess.run([args.keras_python, str(HERE / "record_keras.py"), str(h5), f"{tmp}/gray.npy",
                        f"{tmp}/keras.json"], check=True, env=env)
        env = dict(os.environ, NODE_PATH=args.node_modules)
        subprocess.run(["node", str(HERE / "record_faceapi.cjs"), str(model_dir), f"{tmp}/rgb.u8",
                        str(len(names)), f"{tmp}/faceapi.json"], check=True, env=env)
        keras_out = json.loads(Path(f"{tmp}/keras.json").read_text())
        faceapi_out = json.loads(Path(f"{tmp}/faceapi.json").read_text())
    ref = {
        "inputs": {"names": names, "specs": SPECS,
                   "note": "image[y0:y0+size*step:step, x0:x0+size*step:step], flip = [:, ::-1]; "
                           "fer: 64x64 gray round(.299R+.587G+.114B); faceapi: 112x112 RGB"},
        "fer": {"classes": ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"],
                "preprocessing": "(gray / 255 - 0.5) * 2, shape (N, 64, 64, 1)", **_rounded(keras_out)},
        "faceapi": {"classes": ["neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised"],
                    "preprocessing": "RGB 0..255 float (N, 112, 112, 3) through toNetInput", **_rounded(faceapi_out)},
    }
    Path(args.out).write_text(json.dumps(ref, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


def _rounded(out: dict) -> dict:
    """Round arrays to 7 significant digits to keep the JSON small (well below test tolerances)."""
    return {k: (np.asarray(v, np.float64).round(7).tolist() if k in ("probs",) else
                [[float(f"{x:.6g}") for x in row] for row in v] if k == "features" else v)
            for k, v in out.items()}


if __name__ == "__main__":
    sys.exit(main())
