"""SEAL's SnAG-style grounding head (lvu/models/seal_grounding.py): shapes and padding, the local window, the focal
loss, learning a toy timeline, and the top-k windows after 1-D NMS."""

from __future__ import annotations

import torch

from lvu.metrics.grounding import TemporalGroundingRecall
from lvu.models.seal_grounding import (
    GroundingConfig,
    GroundingHead,
    GroundingOutput,
    grounding_loss,
    sigmoid_focal_loss,
    top_windows,
    window_iou,
)

TINY = GroundingConfig(token_dim=8, query_dim=6, width=16, layers=2, heads=2, window=3)


def _inputs(batch: int = 2, length: int = 8, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randn(batch, length, 8, generator=generator)
    times = torch.arange(length, dtype=torch.float32).repeat(batch, 1) * 2.0 + 1.0
    mask = torch.ones(batch, length, dtype=torch.bool)
    query = torch.randn(batch, 3, 6, generator=generator)
    return tokens, times, mask, query, torch.ones(batch, 3, dtype=torch.bool), torch.full((batch,), 2.0 * length)


def test_outputs_are_finite_distances_are_non_negative_and_padding_changes_nothing_real():
    torch.manual_seed(0)
    head = GroundingHead(TINY).eval()
    tokens, times, mask, query, query_mask, duration = _inputs()
    mask[1, 5:] = False
    out = head(tokens, times, mask, query, query_mask, duration)
    assert out.logits.shape == (2, 8) and out.distances.shape == (2, 8, 2)
    assert torch.isfinite(out.logits).all() and (out.distances >= 0).all()
    changed = tokens.clone()
    changed[1, 5:] = 100.0  # padding content
    again = head(changed, times, mask, query, query_mask, duration)
    assert torch.allclose(out.logits[1, :5], again.logits[1, :5], atol=1e-6)


def test_attention_stays_within_the_local_window():
    """Two layers of window 3 reach 2 tokens each way: token 7 cannot move tokens 0..4."""
    torch.manual_seed(0)
    head = GroundingHead(TINY).eval()
    tokens, times, mask, query, query_mask, duration = _inputs(batch=1)
    out = head(tokens, times, mask, query, query_mask, duration)
    changed = tokens.clone()
    changed[0, 7] += 5.0
    again = head(changed, times, mask, query, query_mask, duration)
    assert torch.allclose(out.logits[0, :5], again.logits[0, :5], atol=1e-6)
    assert not torch.allclose(out.logits[0, 5:], again.logits[0, 5:], atol=1e-4)


def test_focal_loss_is_retinanets():
    logits, targets = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 0.0, 0.0])
    p = torch.sigmoid(logits)
    expected = torch.stack([0.25 * -torch.log(p[0]) * (1 - p[0]) ** 2, 0.75 * -torch.log(1 - p[1]) * p[1] ** 2,
                            0.75 * -torch.log(1 - p[2]) * p[2] ** 2])
    assert torch.allclose(sigmoid_focal_loss(logits, targets, 0.25, 2.0), expected, atol=1e-6)


def test_the_head_learns_where_a_marked_moment_is():
    """Tokens carry a flag inside the answer window: after a short training the best window overlaps it well."""
    torch.manual_seed(0)
    head = GroundingHead(TINY)
    optimiser = torch.optim.Adam(head.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(1)

    def batch():
        tokens, times, mask, query, query_mask, duration = _inputs(batch=8, length=16, seed=int(
            torch.randint(0, 10_000, (1,), generator=generator)))
        start = torch.randint(0, 10, (8,), generator=generator)
        target = torch.stack([times[0, start] - 1.0, times[0, start + 5] + 1.0], dim=1)
        inside = (times >= target[:, :1]) & (times <= target[:, 1:])
        tokens[..., 0] = inside.float() * 3.0
        return tokens, times, mask, query, query_mask, duration, target

    losses = []
    for _ in range(150):
        tokens, times, mask, query, query_mask, duration, target = batch()
        out = head(tokens, times, mask, query, query_mask, duration)
        terms = grounding_loss(out, times, mask, target, TINY)
        loss = terms["classification"] + terms["regression"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
    tokens, times, mask, query, query_mask, duration, target = batch()
    with torch.no_grad():
        found = top_windows(head.eval()(tokens, times, mask, query, query_mask, duration), times, mask, k=5)
    recall = TemporalGroundingRecall(ks=(1,), thresholds=(0.5,))
    recall.update(found, target)
    assert float(recall.compute()["R@1,IoU=0.5"]) >= 0.75


def test_top_windows_suppress_overlapping_proposals():
    times = torch.tensor([[10.0, 11.0, 30.0]])
    out = GroundingOutput(logits=torch.tensor([[3.0, 2.0, 1.0]]),
                          distances=torch.tensor([[[5.0, 5.0], [5.0, 5.0], [2.0, 2.0]]]))
    (kept,) = top_windows(out, times, torch.ones(1, 3, dtype=torch.bool), k=5, nms_iou=0.5)
    assert kept.tolist() == [[5.0, 15.0], [28.0, 32.0]]  # [6, 16] overlaps [5, 15] by 0.82: suppressed
    assert float(window_iou(torch.tensor([5.0, 15.0]), torch.tensor([6.0, 16.0]))) > 0.5
