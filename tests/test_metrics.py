"""lvu.metrics: the LVU benchmark's scores as torchmetrics Metrics."""

from __future__ import annotations

import torch

from lvu.metrics import LVUAccuracy, LVUMeanSquaredError, lvu_metric


def test_classification_is_top1_accuracy_over_every_sample_seen():
    metric = lvu_metric(3)
    assert isinstance(metric, LVUAccuracy) and metric.name == "acc"
    metric.update(torch.tensor([[0.1, 2.0, 0.0], [3.0, 0.0, 0.0]]), torch.tensor([1, 2]))  # logits: 1 of 2 right
    metric.update(torch.tensor([2, 2]), torch.tensor([2, 2]))  # class ids: 2 of 2 right
    assert metric.compute() == 0.75 and metric.score() == 0.75 and metric.higher_is_better
    metric.reset()
    metric.update(torch.tensor([0]), torch.tensor([1]))
    assert metric.compute() == 0.0


def test_regression_is_mean_squared_error_and_its_score_is_its_negative():
    metric = lvu_metric(None)
    assert isinstance(metric, LVUMeanSquaredError) and metric.name == "mse"
    metric.update(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 4.0]))
    metric.update(torch.tensor([0.0]), torch.tensor([3.0]))
    assert torch.isclose(metric.compute(), torch.tensor(13.0 / 3))
    assert torch.isclose(metric.score(), torch.tensor(-13.0 / 3)) and not metric.higher_is_better


def test_a_clone_starts_empty_and_keeps_its_kind():
    metric = lvu_metric(4)
    metric.update(torch.tensor([1]), torch.tensor([1]))
    clone = metric.clone()
    clone.reset()
    clone.update(torch.tensor([0]), torch.tensor([1]))
    assert metric.compute() == 1.0 and clone.compute() == 0.0 and isinstance(clone, LVUAccuracy)
