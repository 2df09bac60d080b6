"""The official LinVT module's *shape*, rebuilt for ``bench_linvt.py --vs-official`` (not a copy of its code).

What the public repository (gls0425/LinVT, ``LinearVideoTokenizer``) computes, from ``../shared/ANCHORS.md`` and a
reading of it, written here in our own words so its speed and memory can be measured beside ours on the same inputs:

* SVR: ``layers`` x (spatial ``nn.MultiheadAttention`` over each frame's tokens, then temporal over each position's
  frames); no residual, no normalisation, no MLP; a linear score per token and a hard top-k (its score is discarded
  there; here too: the scorer gets no gradient, as in the original).
* Multi-scale pooling of the k selected tokens (in score order) with windows 1, 2 and 4, concatenated.
* TTA: one stack of ``layers`` x (query self-attention + LayerNorm, cross-attention to the pooled visual tokens with
  q/k/v/out projections + LayerNorm, the same to the text + LayerNorm), then the linear aggregation (q and k
  projections, softmax, applied to the per-head channel split of the tokens, no value map).
* One query set (``sum(queries)`` queries, 112 at 64/32/16), every attention call with ``need_weights`` left at
  ``nn.MultiheadAttention``'s default (True): the unfused path that materialises the attention weights.

Deliberate differences, none of which changes the cost: the original's ``nn.MultiheadAttention`` runs with
``batch_first=False``, so its "spatial" attention runs across frames and its "temporal" across positions (the same
two attention shapes, in the other order); here each runs along the axis its name says. Frame and text masks are
accepted and ignored (the original handles no padding; the benchmark passes none).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ReferenceOutput:
    tokens: torch.Tensor  # [B, sum(queries), D]


class CrossAttention(nn.Module):
    """q/k/v/out projections and softmax attention over ``context``; ``aggregate`` drops the value and output maps."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor, context: torch.Tensor, aggregate: bool = False) -> torch.Tensor:
        b, d = x.shape[0], x.shape[-1]
        split = lambda t: t.view(b, -1, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        q, k = split(self.q(x)), split(self.k(context))
        v = split(context if aggregate else self.v(context))
        weights = (q @ k.transpose(-2, -1) / math.sqrt(d // self.heads)).softmax(-1)
        mixed = (weights @ v).transpose(1, 2).reshape(b, -1, d)
        return mixed if aggregate else self.out(mixed)


class SVRLayer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.spatial = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.temporal = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, n, d = x.shape
        x = x.reshape(b * t, n, d)
        x = self.spatial(x, x, x)[0].view(b, t, n, d).transpose(1, 2).reshape(b * n, t, d)
        x = self.temporal(x, x, x)[0]
        return x.view(b, n, t, d).transpose(1, 2)


class TTALayer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.visual, self.text = CrossAttention(dim, heads), CrossAttention(dim, heads)
        self.norm_self, self.norm_visual, self.norm_text = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, q: torch.Tensor, visual: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        q = self.norm_self(q + self.self_attn(q, q, q)[0])
        q = self.norm_visual(q + self.visual(q, visual))
        return self.norm_text(q + self.text(q, text))


class OfficialShapeLinVT(nn.Module):
    """Frames' tokens ``[B, T, N, D]`` and text ``[B, L, D]`` -> ``sum(queries)`` tokens, at the original's cost."""

    def __init__(self, dim: int, layers: int, heads: int, top_k: int, queries: list[int]) -> None:
        super().__init__()
        self.top_k = top_k
        self.svr = nn.ModuleList(SVRLayer(dim, heads) for _ in range(layers))
        self.score = nn.Linear(dim, 1)
        self.queries = nn.Parameter(torch.randn(sum(queries), dim) * 0.02)
        self.tta = nn.ModuleList(TTALayer(dim, heads) for _ in range(layers))
        self.aggregate = CrossAttention(dim, heads)

    def forward(self, visual: torch.Tensor, frame_mask: torch.Tensor, text: torch.Tensor,
                text_mask: torch.Tensor) -> ReferenceOutput:
        b, t, n, d = visual.shape
        x = visual
        for layer in self.svr:
            x = layer(x)
        x = x.reshape(b, t * n, d)
        picked = self.score(x).squeeze(-1).topk(min(self.top_k, t * n), dim=1).indices
        x = x.gather(1, picked[..., None].expand(-1, -1, d))
        pooled = torch.cat([F.avg_pool1d(x.transpose(1, 2), s, s).transpose(1, 2) for s in (1, 2, 4)], 1)
        q = self.queries.expand(b, -1, -1)
        for layer in self.tta:
            q = layer(q, pooled, text)
        return ReferenceOutput(self.aggregate(q, pooled, aggregate=True))
