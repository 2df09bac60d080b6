"""torchmetrics ``Metric``s for the benchmarks the methods are scored on (states sync across ranks)."""

from lvu.metrics.lvu import LVUAccuracy, LVUMeanSquaredError, LVUScore, lvu_metric

__all__ = ["LVUAccuracy", "LVUMeanSquaredError", "LVUScore", "lvu_metric"]
