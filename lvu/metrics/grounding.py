"""Temporal grounding (Ego4D-NLQ, SEAL's grounding head): Recall@k at temporal IoU thresholds.

torchmetrics has no 1-D IoU recall; this is a small ``Metric`` with summed tensor states, so it syncs across ranks.
The denominator is every ground-truth query, including those the model gave no window for: a query without a
prediction is a miss, never left out (Ego4D-NLQ's official script averages over the predictions submitted and only
prints how many queries it saw, so a run that skips hard queries scores higher there). A hit needs IoU strictly above
the threshold, as that script counts it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric


def temporal_iou(windows: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of each ``[start, end]`` window ``[K, 2]`` with one target ``[2]`` (seconds) -> ``[K]``. A window with
    end < start is empty (IoU 0)."""
    start = torch.maximum(windows[:, 0], target[0])
    end = torch.minimum(windows[:, 1], target[1])
    inter = (end - start).clamp(min=0)
    lengths = (windows[:, 1] - windows[:, 0]).clamp(min=0)
    union = lengths + (target[1] - target[0]).clamp(min=0) - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


class TemporalGroundingRecall(Metric):
    """Recall@k at IoU > t: the share of queries whose top-k predicted windows include one with IoU above t.

    Args:
        ks: the k of Recall@k (default 1 and 5).
        thresholds: the IoU thresholds (default 0.3 and 0.5).
    """

    full_state_update = False

    def __init__(self, ks: Sequence[int] = (1, 5), thresholds: Sequence[float] = (0.3, 0.5)) -> None:
        super().__init__()
        self.ks, self.thresholds = list(ks), list(thresholds)
        self.add_state("hits", default=torch.zeros(len(self.ks), len(self.thresholds), dtype=torch.long),
                       dist_reduce_fx="sum")
        self.add_state("queries", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predictions: Sequence[torch.Tensor], targets: torch.Tensor) -> None:
        """``predictions``: per query, its windows ``[K_i, 2]`` best first (K_i may be 0); ``targets`` ``[Q, 2]``."""
        if len(predictions) != len(targets):
            raise ValueError(f"{len(predictions)} predictions for {len(targets)} queries")
        thresholds = torch.tensor(self.thresholds)
        for windows, target in zip(predictions, targets, strict=True):
            self.queries += 1
            if len(windows) == 0:
                continue
            ious = temporal_iou(windows.float().cpu(), target.float().cpu())
            for i, k in enumerate(self.ks):
                best = ious[:k].max()
                self.hits[i] += (best > thresholds).to(self.hits.device, torch.long)

    def compute(self) -> dict[str, torch.Tensor]:
        """``R@{k},IoU={t}`` for every k and threshold, as a fraction of all queries."""
        recall = self.hits.float() / self.queries.clamp(min=1)
        return {f"R@{k},IoU={t:g}": recall[i, j] for i, k in enumerate(self.ks)
                for j, t in enumerate(self.thresholds)}
