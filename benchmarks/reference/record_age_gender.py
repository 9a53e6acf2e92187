"""Record reference outputs of the ORIGINAL face-api.js AgeGenderNet into tests/data/.

``record_age_gender.cjs`` runs the published model with face-api.js on the TF.js cpu backend in
Node.js (no code shared with femo's torch port). This script builds the same four 112x112 RGB
crops as the expression-net reference (:mod:`inputs`), calls it, and writes
``tests/data/age_gender_reference.json``.

Rerun (a throwaway folder; Node.js packages are not femo dependencies)::

    mkdir -p /tmp/faceapi-ref && cd /tmp/faceapi-ref && npm init -y && npm install \
        @vladmandic/face-api@1.7.15 @tensorflow/tfjs@4.22.0 @tensorflow/tfjs-backend-wasm@4.22.0
    femo models fetch --face-weights
    python benchmarks/reference/record_age_gender.py --node-modules /tmp/faceapi-ref/node_modules
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
    ap.add_argument("--node-modules", required=True, help="node_modules with @vladmandic/face-api and tfjs")
    ap.add_argument("--out", default=str(ROOT / "tests/data/age_gender_reference.json"))
    args = ap.parse_args()
    from femo.assets import asset_path

    model_dir = asset_path("age_gender_model.bin").parent
    asset_path("age_gender_model-weights_manifest.json")
    names = list(SPECS)
    with tempfile.TemporaryDirectory() as tmp:
        np.stack([crop(SPECS[n]["faceapi"], 112, gray=False) for n in names]).tofile(f"{tmp}/rgb.u8")
        env = dict(os.environ, NODE_PATH=args.node_modules)
        subprocess.run(["node", str(HERE / "record_age_gender.cjs"), str(model_dir), f"{tmp}/rgb.u8",
                        str(len(names)), f"{tmp}/out.json"], check=True, env=env)
        out = json.loads(Path(f"{tmp}/out.json").read_text())
    ref = {
        "inputs": {"names": names, "specs": {n: SPECS[n]["faceapi"] for n in names},
                   "note": "image[y0:y0+112*step:step, x0:x0+112*step:step], flip = [:, ::-1]; 112x112 RGB"},
        "preprocessing": "RGB 0..255 float (N, 112, 112, 3) through toNetInput",
        "sex_classes": ["male", "female"],
        "age": [round(float(a), 5) for a in out["age"]],
        "sex_probs": np.asarray(out["sex_probs"], np.float64).round(7).tolist(),
        "features": [[float(f"{x:.6g}") for x in row] for row in out["features"]],
        **{k: out[k] for k in ("faceapi_version", "tfjs_version", "backend")},
    }
    Path(args.out).write_text(json.dumps(ref, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
