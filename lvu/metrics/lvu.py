"""The LVU benchmark's scores (Wu & Krähenbühl 2021): top-1 accuracy for its seven classification tasks
(relationship, speaking style, scene, director, genre, writer, year) and mean squared error for its two regression
tasks (like ratio, view count), as LV-MAE's Table 8 reports them.

Each metric also exposes :meth:`LVUScore.score`, one number where higher is better (the accuracy, or minus the MSE),
so model selection treats every task alike.
"""

from __future__ import annotations

import torch
import torchmetrics
from torchmetrics.classification import MulticlassAccuracy


class LVUScore:
    """A metric whose value can be ranked: ``score()`` is higher for better models."""

    higher_is_better: bool
    name: str  # "acc" or "mse": the logged key's last part

    def score(self) -> torch.Tensor:
        value = self.compute()  # type: ignore[attr-defined]
        return value if self.higher_is_better else -value


class LVUAccuracy(MulticlassAccuracy, LVUScore):
    """Top-1 accuracy over every sample seen (micro average), from class logits ``[N, C]`` or class ids ``[N]``."""

    name = "acc"

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes=num_classes, average="micro")


class LVUMeanSquaredError(torchmetrics.MeanSquaredError, LVUScore):
    """Mean squared error of the regression targets (like ratio and log view count, already normalised by the
    label map)."""

    name = "mse"


def lvu_metric(num_classes: int | None) -> LVUAccuracy | LVUMeanSquaredError:
    """The metric of an LVU task with ``num_classes`` classes, or of a regression task (None)."""
    return LVUAccuracy(num_classes) if num_classes is not None else LVUMeanSquaredError()
