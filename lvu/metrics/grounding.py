"""Temporal grounding (Ego4D-NLQ, SEAL's grounding head): Recall@k at temporal IoU thresholds.

torchmetrics has no 1-D IoU recall; this is a small ``Metric`` with summed tensor states, so it syncs across ranks.
The denominator is every ground-truth query, including those the model gave no window for: a query without a
prediction is a miss, never left out (Ego4D-NLQ's official script averages over the predictions submitted and only
prints how many queries it saw, so a run that skips hard queries scores higher there). A hit needs IoU strictly above
the threshold, as that script counts it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

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
        kwargs: torchmetrics' ``Metric`` options (``sync_on_compute=False`` to score on one process of many).
    """

    full_state_update = False

    def __init__(self, ks: Sequence[int] = (1, 5), thresholds: Sequence[float] = (0.3, 0.5), **kwargs: Any) -> None:
        super().__init__(**kwargs)
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


# A time as a model writes it: seconds ("12", "12.5") or clock time ("1:05", "01:02:03.5").
_TIME = re.compile(r"(?<![\d.:])(\d+(?::\d{1,2}){0,2}(?:\.\d+)?)(?![\d:]|\.\d)")


def _seconds(text: str) -> float:
    return sum(float(part) * 60 ** i for i, part in enumerate(reversed(text.split(":"))))


def parse_window(text: str | None) -> tuple[float, float] | None:
    """The first two times in a generated answer as a ``(start, end)`` window in seconds ("12.5 - 30",
    "from 1:05 to 1:30 s"); None when fewer than two times appear. A window written backwards is put in order."""
    times = [_seconds(m.group(1)) for m in _TIME.finditer(text or "")]
    if len(times) < 2:
        return None
    start, end = times[0], times[1]
    return (min(start, end), max(start, end))
