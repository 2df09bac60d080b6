"""torchmetrics ``Metric``s for the benchmarks the methods are scored on (states sync across ranks)."""

from lvu.metrics.choice import Choice, MultipleChoiceAccuracy, Parse, extract_choice
from lvu.metrics.grounding import TemporalGroundingRecall, temporal_iou
from lvu.metrics.lvu import LVUAccuracy, LVUMeanSquaredError, LVUScore, lvu_metric

__all__ = ["Choice", "LVUAccuracy", "LVUMeanSquaredError", "LVUScore", "MultipleChoiceAccuracy", "Parse",
           "TemporalGroundingRecall", "extract_choice", "lvu_metric", "temporal_iou"]
