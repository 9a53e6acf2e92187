"""Record the original Keras mini-Xception's outputs (run with a Python that has keras + h5py).

Usage: KERAS_BACKEND=jax python record_keras.py MODEL.hdf5 INPUTS.npy OUT.json
INPUTS.npy: (N, 64, 64) uint8 gray. Preprocessing is fer's: (x / 255 - 0.5) * 2. Writes
{"probs": (N, 7), "features": (N, 128)}; features are the spatial mean of the input of the
final convolution (the model's penultimate activations). Shares no code with femo.
"""
import json
import sys

import keras
import numpy as np

model_path, inputs_path, out_path = sys.argv[1:4]
model = keras.models.load_model(model_path, compile=False)
gray = np.load(inputs_path).astype("float32")
x = ((gray / 255.0 - 0.5) * 2.0)[..., None]
probs = model.predict(x, verbose=0)
last_conv = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)
             and not isinstance(layer, keras.layers.SeparableConv2D)][-1]
trunk = keras.Model(model.inputs, last_conv.input)
features = trunk.predict(x, verbose=0).mean(axis=(1, 2))
with open(out_path, "w") as fh:
    json.dump({"probs": probs.tolist(), "features": features.tolist(),
               "keras_version": keras.__version__, "backend": keras.backend.backend()}, fh)
