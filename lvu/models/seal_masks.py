"""The automatic-mask steps SEAL's object tokens need around a SAM2 model, in torch (supplement: 64 x 64 point grid,
points per batch 128, predicted IoU > 0.88, stability > 0.92 with offset 0.99, box NMS at IoU 0.7, no crops).

transformers' SAM2 image processor, mask-generation pipeline and NMS need torchvision, whose only wheel for our torch
is a CUDA build that breaks CPU torch; so the grid, the filters, the boxes and the NMS are written here (they are
short, and each is tested against a plain reference). The model call itself stays transformers' ``Sam2Model``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class MaskGenerationConfig:
    """SAM2 automatic mask generation as the SEAL supplement sets it."""

    points_per_side: int = 64
    """The prompt grid is points_per_side x points_per_side."""
    points_per_batch: int = 128
    """Prompt points per model call (memory only: results do not depend on it)."""
    pred_iou_threshold: float = 0.88
    """Masks whose predicted IoU is not above this are dropped."""
    stability_threshold: float = 0.92
    """Masks whose stability score is not above this are dropped."""
    stability_offset: float = 0.99
    """The stability score compares the mask binarised at logit threshold +- this offset."""
    mask_threshold: float = 0.0
    """Logit above which a pixel is in the mask."""
    box_nms_threshold: float = 0.7
    """Boxes overlapping a better-scored kept box by more than this IoU are dropped."""
    box_expansion: float = 2.0
    """Each kept mask's box is scaled by this around its centre before the crop is encoded."""


def point_grid(points_per_side: int) -> torch.Tensor:
    """``[n * n, 2]`` (x, y) points in [0, 1], cell centres of an n x n grid (row by row), as SAM's generator lays
    them out."""
    offset = 1 / (2 * points_per_side)
    axis = torch.linspace(offset, 1 - offset, points_per_side)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1)


def stability_score(mask_logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """``[M]``: the IoU of each mask ``[M, H, W]`` binarised at ``threshold + offset`` and at ``threshold - offset``
    (the first lies inside the second, so it is a ratio of pixel counts); 1 for a mask with no pixel either way."""
    flat = mask_logits.flatten(1)
    inner = (flat > threshold + offset).sum(1)
    outer = (flat > threshold - offset).sum(1)
    return torch.where(outer > 0, inner.float() / outer.clamp(min=1).float(), torch.ones_like(outer, dtype=torch.float))


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """``[M, 4]`` (x0, y0, x1, y1) pixel boxes, end-exclusive, of boolean masks ``[M, H, W]``; all zeros for an empty
    mask."""
    rows, cols = masks.any(2), masks.any(1)  # [M, H], [M, W]
    height, width = masks.shape[1:]

    def span(hit: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.arange(size, device=hit.device)
        first = torch.where(hit, index, size).min(1).values
        last = torch.where(hit, index, -1).max(1).values + 1
        empty = ~hit.any(1)
        return first.masked_fill(empty, 0), last.masked_fill(empty, 0)

    x0, x1 = span(cols, width)
    y0, y1 = span(rows, height)
    return torch.stack([x0, y0, x1, y1], dim=1)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[Na, Nb]`` IoU of (x0, y0, x1, y1) boxes (0 where both are empty)."""
    area_a = ((a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)).float()
    area_b = ((b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)).float()
    top_left = torch.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1).float()
    union = area_a[:, None] + area_b[None] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Indices of the boxes kept by greedy non-maximum suppression, best score first: a box is dropped when its IoU
    with a kept, better-scored box exceeds ``threshold`` (torchvision's ``nms`` rule; ties keep the lower index)."""
    order = torch.sort(scores, descending=True, stable=True).indices
    ious = box_iou(boxes[order], boxes[order])
    alive = torch.ones(len(order), dtype=torch.bool)
    for i in range(len(order)):  # one pass over the kept boxes; the suppression itself is a vector operation
        if alive[i]:
            alive[i + 1:] &= ious[i, i + 1:] <= threshold
    return order[alive]


def expand_boxes(boxes: torch.Tensor, factor: float, width: int, height: int) -> torch.Tensor:
    """Boxes scaled by ``factor`` around their centres, clipped to the image, as integer pixel bounds (the object
    with its surroundings: SEAL crops 2x the mask's box)."""
    centre = (boxes[:, :2] + boxes[:, 2:]).float() / 2
    half = (boxes[:, 2:] - boxes[:, :2]).float() * factor / 2
    low = (centre - half).floor().clamp(min=0)
    high = (centre + half).ceil()
    high = torch.stack([high[:, 0].clamp(max=width), high[:, 1].clamp(max=height)], dim=1)
    return torch.cat([low, high], dim=1).long()


@dataclass
class KeptMasks:
    """The masks automatic generation keeps, best first."""

    masks: torch.Tensor  # [K, H, W] bool
    scores: torch.Tensor  # [K] predicted IoU
    boxes: torch.Tensor  # [K, 4] the masks' boxes
    crops: torch.Tensor  # [K, 4] the expanded boxes to crop and encode


@dataclass
class MaskCandidates:
    """Masks that passed the per-mask filters (predicted IoU, stability), before the NMS over all of an image's."""

    masks: torch.Tensor  # [M, H, W] bool
    scores: torch.Tensor  # [M] predicted IoU

    @staticmethod
    def join(parts: list[MaskCandidates], height: int, width: int) -> MaskCandidates:
        if not parts:
            return MaskCandidates(torch.zeros(0, height, width, dtype=torch.bool), torch.zeros(0))
        return MaskCandidates(torch.cat([p.masks for p in parts]), torch.cat([p.scores for p in parts]))


def filter_masks(mask_logits: torch.Tensor, predicted_iou: torch.Tensor, cfg: MaskGenerationConfig) -> MaskCandidates:
    """The generator's per-mask filters, in SAM's order: predicted IoU, then stability, on masks ``[M, H, W]``
    (logits) with their predicted IoUs ``[M]``. Applied per batch of prompts, so that only survivors are kept."""
    confident = predicted_iou > cfg.pred_iou_threshold
    logits, scores = mask_logits[confident], predicted_iou[confident]
    stable = stability_score(logits, cfg.mask_threshold, cfg.stability_offset) > cfg.stability_threshold
    return MaskCandidates(logits[stable] > cfg.mask_threshold, scores[stable])


def suppress_masks(candidates: MaskCandidates, cfg: MaskGenerationConfig) -> KeptMasks:
    """Box NMS over all of an image's candidates (after every batch: NMS does not split over batches), then the
    expanded crop boxes."""
    boxes = mask_boxes(candidates.masks)
    chosen = box_nms(boxes, candidates.scores, cfg.box_nms_threshold)
    height, width = candidates.masks.shape[1:]
    return KeptMasks(candidates.masks[chosen], candidates.scores[chosen], boxes[chosen],
                     expand_boxes(boxes[chosen], cfg.box_expansion, width, height))


def keep_masks(mask_logits: torch.Tensor, predicted_iou: torch.Tensor, cfg: MaskGenerationConfig) -> KeptMasks:
    """Every filter at once on masks ``[M, H, W]`` (logits, one per grid point and output) with their predicted IoUs
    ``[M]``: :func:`filter_masks`, then :func:`suppress_masks`."""
    return suppress_masks(filter_masks(mask_logits, predicted_iou, cfg), cfg)
