"""femo: multimodal dynamic facial emotion recognition."""
__version__ = "0.1.0"


def load(run):
    """A :class:`femo.inference.predictor.Predictor` for the trained run folder ``run`` (config.json + best.pt)."""
    from femo.inference.predictor import Predictor

    return Predictor.from_run(run)
