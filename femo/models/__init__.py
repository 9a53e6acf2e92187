"""Models: per-frame encoders (``frames``), landmark and audio encoders, temporal blocks, fusion and
the full multimodal net (``net.FemoNet``). Builders are keyword-only and refuse unknown names.

Shapes follow the sample dicts of docs/ARCHITECTURE.md with a leading batch axis B.
"""
from femo.models.fusion import FUSIONS, make_fusion
from femo.models.net import FemoNet
from femo.models.temporal import TEMPORAL_BLOCKS, make_temporal

__all__ = ["FUSIONS", "TEMPORAL_BLOCKS", "FemoNet", "make_fusion", "make_temporal"]
