"""SEAL's temporal-grounding head (Ego4D-NLQ), in the manner of SnAG: the selected tokens on their timeline, a
local-window transformer, cross-attention to the query, and per token a score (is this moment inside the answer?)
and two distances (how far the answer reaches before and after it).

Training (SnAG's recipe, as SEAL states it): sigmoid focal loss on every token's score, with the tokens whose time
lies inside the target window as positives, plus ``1 - IoU`` of each positive's predicted window with the target;
both summed and divided by the number of positives. Inference: every token proposes ``[t - d_start, t + d_end]``
scored by its sigmoid; a 1-D non-maximum suppression keeps the top-k for Recall@k.

Shapes: ``B`` videos, ``T`` selected tokens each (padded, ``mask``), ``D`` token width, ``L`` query tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class GroundingConfig:
    """The head's sizes (OPEN: SEAL gives no sizes; SnAG's small setting scaled to the token budgets 200-450)."""

    token_dim: int = 256
    """Width of the selected tokens (seal.ground: the encoder's embedding width, whatever is set here)."""
    query_dim: int = 256
    """Width of the query's token embeddings (seal.ground: the encoder's text width, whatever is set here)."""
    width: int = 256
    """The head's width."""
    layers: int = 2
    """Local-window self-attention layers over the timeline."""
    heads: int = 4
    """Attention heads."""
    window: int = 9
    """Each token attends to this many neighbours on the timeline (itself in the middle)."""
    focal_alpha: float = 0.25
    """Focal loss: weight of positives (SnAG/RetinaNet's 0.25)."""
    focal_gamma: float = 2.0
    """Focal loss: focusing exponent (2)."""


@dataclass
class GroundingOutput:
    logits: torch.Tensor  # [B, T] score of each token (before the sigmoid)
    distances: torch.Tensor  # [B, T, 2] seconds before and after the token's time (>= 0)


def local_window_mask(length: int, window: int, device: torch.device | None = None) -> torch.Tensor:
    """``[T, T]`` bool, True where attention is allowed: tokens at most ``window // 2`` positions apart."""
    index = torch.arange(length, device=device)
    return (index[:, None] - index[None]).abs() <= window // 2


class GroundingHead(nn.Module):
    """Scores and boundary distances per selected token (see the module docstring)."""

    def __init__(self, cfg: GroundingConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tokens_in = nn.Linear(cfg.token_dim + 1, cfg.width)  # + the token's time (normalised by the video)
        self.query_in = nn.Linear(cfg.query_dim, cfg.width)
        self.timeline = nn.ModuleList(nn.TransformerEncoderLayer(cfg.width, cfg.heads, 2 * cfg.width, dropout=0.0,
                                                                 batch_first=True, norm_first=True)
                                      for _ in range(cfg.layers))
        self.cross = nn.MultiheadAttention(cfg.width, cfg.heads, batch_first=True)
        self.cross_norm = nn.LayerNorm(cfg.width)
        self.score = nn.Linear(cfg.width, 1)
        self.reach = nn.Linear(cfg.width, 2)

    def forward(self, tokens: torch.Tensor, times: torch.Tensor, mask: torch.Tensor, query: torch.Tensor,
                query_mask: torch.Tensor, duration: torch.Tensor) -> GroundingOutput:
        """``tokens [B, T, D]`` at ``times [B, T]`` seconds (``mask [B, T]``), ``query [B, L, Dq]`` (``query_mask``),
        ``duration [B]`` seconds (times and distances are normalised by it inside, returned in seconds)."""
        scale = duration.clamp(min=1e-6)[:, None]
        x = self.tokens_in(torch.cat([tokens, (times / scale)[..., None]], dim=-1))
        allowed = local_window_mask(tokens.shape[1], self.cfg.window, tokens.device)
        blocked = ~allowed[None] | ~mask[:, None, :]  # [B, T, T]
        blocked = blocked & ~torch.eye(tokens.shape[1], dtype=torch.bool, device=tokens.device)  # padding sees itself
        attention = blocked.repeat_interleave(self.cfg.heads, dim=0)
        for layer in self.timeline:
            x = layer(x, src_mask=attention)
        q = self.query_in(query)
        attended, _ = self.cross(self.cross_norm(x), q, q, key_padding_mask=~query_mask)
        x = x + attended
        return GroundingOutput(self.score(x)[..., 0], F.softplus(self.reach(x)) * scale[..., None])


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Element-wise focal loss (RetinaNet's; torchvision's ``sigmoid_focal_loss`` with reduction none)."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    weight = alpha * targets + (1 - alpha) * (1 - targets)
    return weight * ce * (1 - p_t) ** gamma


def window_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of matching 1-D windows ``[..., 2]`` (start, end)."""
    inter = (torch.minimum(a[..., 1], b[..., 1]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    union = (a[..., 1] - a[..., 0]) + (b[..., 1] - b[..., 0]) - inter
    return inter / union.clamp(min=1e-6)


def predicted_windows(out: GroundingOutput, times: torch.Tensor) -> torch.Tensor:
    """``[B, T, 2]`` each token's proposal ``[t - d_start, t + d_end]`` in seconds."""
    return torch.stack([times - out.distances[..., 0], times + out.distances[..., 1]], dim=-1)


def grounding_loss(out: GroundingOutput, times: torch.Tensor, mask: torch.Tensor, target: torch.Tensor,
                   cfg: GroundingConfig) -> dict[str, torch.Tensor]:
    """``classification`` (focal) and ``regression`` (1 - IoU on positives), each divided by the number of
    positives (at least 1); ``target [B, 2]`` the answer window in seconds. Positives: tokens inside the window."""
    inside = (times >= target[:, :1]) & (times <= target[:, 1:]) & mask
    positives = inside.sum().clamp(min=1)
    focal = sigmoid_focal_loss(out.logits, inside.float(), cfg.focal_alpha, cfg.focal_gamma)
    classification = (focal * mask).sum() / positives
    iou = window_iou(predicted_windows(out, times), target[:, None, :].expand_as(out.distances))
    regression = ((1 - iou) * inside).sum() / positives
    return {"classification": classification, "regression": regression}


def top_windows(out: GroundingOutput, times: torch.Tensor, mask: torch.Tensor, k: int = 5,
                nms_iou: float = 0.5) -> list[torch.Tensor]:
    """Per video, up to ``k`` windows ``[K, 2]`` best first, after 1-D non-maximum suppression at ``nms_iou``."""
    windows = predicted_windows(out, times)
    scores = torch.sigmoid(out.logits).masked_fill(~mask, -1)
    result = []
    for proposals, score in zip(windows, scores, strict=True):
        order = score.argsort(descending=True, stable=True)
        order = order[score[order] >= 0]
        kept: list[int] = []
        for i in order.tolist():
            if all(float(window_iou(proposals[i], proposals[j])) <= nms_iou for j in kept):
                kept.append(i)
            if len(kept) == k:
                break
        result.append(proposals[kept].detach())
    return result
