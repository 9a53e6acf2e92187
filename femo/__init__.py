"""femo: multimodal dynamic facial emotion recognition."""
__version__ = "0.1.0"
