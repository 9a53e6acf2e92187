"""Manifests, decoding, synthetic data and the feature store. Never imports ``femo.models``."""
