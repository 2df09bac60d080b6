"""The automatic-mask steps around SAM2 for SEAL's object tokens (lvu/models/seal_masks.py), each against a plain
reference: the point grid, stability scores, mask boxes, NMS, box expansion and the generator's filter order."""

from __future__ import annotations

import pytest
import torch

from lvu.models.seal_masks import (
    MaskGenerationConfig,
    box_iou,
    box_nms,
    expand_boxes,
    keep_masks,
    mask_boxes,
    point_grid,
    stability_score,
)


def test_the_point_grid_holds_the_cell_centres_row_by_row():
    grid = point_grid(4)
    assert grid.shape == (16, 2)
    assert grid[0].tolist() == [0.125, 0.125] and grid[1].tolist() == [0.375, 0.125]
    assert grid[-1].tolist() == [0.875, 0.875]
    assert point_grid(64).shape == (4096, 2)  # the supplement's 64 x 64


def test_stability_is_the_pixel_ratio_of_the_mask_at_two_thresholds():
    logits = torch.full((2, 8, 8), -5.0)
    logits[0, 2:6, 2:6] = 3.0  # a crisp square: the same at both thresholds
    logits[1, 2:6, 2:6] = 3.0
    logits[1, 1:7, 1:7][logits[1, 1:7, 1:7] < 0] = 0.5  # a soft ring: in at -0.99, out at +0.99
    scores = stability_score(logits, threshold=0.0, offset=0.99)
    assert scores.tolist() == pytest.approx([1.0, 16 / 36])
    assert stability_score(torch.full((1, 4, 4), -9.0), 0.0, 0.99).tolist() == [1.0]  # nothing either way


def test_mask_boxes_are_the_bounds_of_the_pixels():
    generator = torch.Generator().manual_seed(0)
    masks = torch.rand(6, 12, 9, generator=generator) > 0.93
    masks[5] = False
    for mask, box in zip(masks, mask_boxes(masks), strict=True):
        ys, xs = mask.nonzero(as_tuple=True)
        expected = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1] if len(xs) else [0, 0, 0, 0]
        assert box.tolist() == expected


def _reference_nms(boxes, scores, threshold):
    order = sorted(range(len(boxes)), key=lambda i: (-float(scores[i]), i))
    kept = []
    for i in order:
        if all(float(box_iou(boxes[i:i + 1], boxes[k:k + 1])) <= threshold for k in kept):
            kept.append(i)
    return kept


def test_nms_matches_a_plain_greedy_reference():
    generator = torch.Generator().manual_seed(1)
    for threshold in (0.3, 0.5, 0.7):
        low = torch.randint(0, 40, (60, 2), generator=generator)
        boxes = torch.cat([low, low + torch.randint(4, 25, (60, 2), generator=generator)], dim=1)
        scores = torch.rand(60, generator=generator).round(decimals=1)  # ties included
        assert box_nms(boxes, scores, threshold).tolist() == _reference_nms(boxes, scores, threshold)


def test_boxes_are_expanded_around_their_centres_and_clipped():
    boxes = torch.tensor([[10, 10, 20, 30], [0, 0, 8, 8], [90, 40, 100, 50]])
    assert expand_boxes(boxes, 2.0, width=100, height=50).tolist() == [[5, 0, 25, 40], [0, 0, 12, 12],
                                                                        [85, 35, 100, 50]]


def test_the_generator_filters_by_predicted_iou_then_stability_then_overlap():
    logits = torch.full((5, 16, 16), -4.0)
    logits[0, 2:8, 2:8] = 4.0  # kept
    logits[1, 2:8, 3:8] = 4.0  # nearly the same box, lower score: suppressed by NMS
    logits[2, 9:14, 9:14] = 4.0  # low predicted IoU: dropped
    logits[3, 9:15, 1:6] = 0.5  # unstable (every pixel flips at +0.99): dropped
    logits[4, 10:15, 10:15] = 4.0  # kept (another place)
    predicted = torch.tensor([0.95, 0.93, 0.5, 0.99, 0.9])
    kept = keep_masks(logits, predicted, MaskGenerationConfig())
    assert kept.scores.tolist() == pytest.approx([0.95, 0.9])
    assert kept.boxes.tolist() == [[2, 2, 8, 8], [10, 10, 15, 15]]
    assert kept.crops.tolist() == [[0, 0, 11, 11], [7, 7, 16, 16]]  # 2x, clipped to the 16 x 16 image
    assert kept.masks.shape == (2, 16, 16) and kept.masks.dtype == torch.bool
