"""SEAL's query-aware subset selection (global and streaming), in torch.

From the candidate tokens ``T`` (scene, object and action tokens, each an embedding in a text-image space) and a
query embedding ``q``, SEAL keeps a subset of ``B`` tokens maximising

    alpha * sum_{t in S} R(t, q)  +  (1 - alpha) * sum_{i != j in S} 1 / S(t_i, t_j)

with R the token-query cosine and S the token-token cosine (alpha = 0.9). As written the second term is unusable: a
cosine can be zero or negative (1/S blows up or rewards similarity), and it sums B(B-1) pairs against B relevances,
so the budget alone would tilt the balance. What is computed here instead (each an option of
:class:`SelectionConfig`, documented where it is used):

* the similarity is shifted to ``(1 + S) / 2`` in [0, 1] and floored at ``similarity_floor`` (0.05), so the inverse
  lies in [1, 1 / floor] and identical tokens gain nothing;
* the inverse is rescaled to a dissimilarity ``d`` in [0, 1] (0 for identical tokens, 1 at the floor), and the
  relevance to ``(1 + R) / 2`` in [0, 1], so alpha weighs two terms of the same range;
* the pair sum is divided by ``B - 1``: each selected token then contributes its mean dissimilarity to the others,
  so both terms grow like B.

The objective stays a sum over the selected set with fixed coefficients, so the greedy algorithm's marginal gain of a
candidate ``c`` given the selected ``S`` is exact and cheap: ``alpha * r(c) + (1 - alpha) * 2 / (B - 1) * sum_{s in S}
d(c, s)``. Each step adds one column of dissimilarities (one matrix-vector product over all candidates) to a running
sum: ``O(N * B * D)`` time and ``O(N)`` memory beyond the tokens, no ``N x N`` matrix, no Python loop over candidates.
The pair term is not submodular, so greedy carries no approximation guarantee (the papers say as much); it is what
SEAL uses.

Streaming mode (the supplement's Table 1): the video's tokens arrive in windows; each step selects from the window
and the subset kept so far, ``S_t = select(W_t | S_{t-1})``, so memory is bounded by window + budget whatever the
video's length (window 1000 by default).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class SelectionConfig:
    """Subset selection (SEAL Sec. 3.2; values from the supplement)."""

    budget: int = 16
    """Tokens kept, B (LVBench 16, MovieChat 256, Ego4D-NLQ 200 or 450)."""
    alpha: float = 0.9
    """Weight of relevance against diversity (the supplement's Figure 1: 0.9 best overall)."""
    similarity_floor: float = 0.05
    """OPEN: the shifted similarity (1 + cos) / 2 is floored here before it is inverted (the paper's 1/S is
    unbounded); 0.05 caps the inverse at 20."""
    window: int = 1000
    """Streaming: new tokens per step (the supplement's Table 1: 500 -> 42.7, 1000 -> 44.2, 2000 -> 42.7)."""


@dataclass
class Selection:
    """Chosen tokens: their indices into the candidates, in the order greedy picked them and in token order."""

    picked: torch.Tensor  # [K] long, greedy order (K = min(budget, candidates))
    objective: float  # the objective of the chosen set (see the module docstring)

    @property
    def indices(self) -> torch.Tensor:
        """[K] in ascending index order (temporal order when the candidates are in time order)."""
        return self.picked.sort().values


def relevance(tokens: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """``(1 + cos(t, q)) / 2`` for tokens ``[N, D]`` and a query ``[D]`` -> ``[N]`` in [0, 1]."""
    return (1 + F.cosine_similarity(tokens.float(), query.float()[None], dim=-1)) / 2


def _from_cosine(cosine: torch.Tensor, floor: float) -> torch.Tensor:
    shifted = ((1 + cosine) / 2).clamp(min=floor)
    return (1 / shifted - 1) / (1 / floor - 1)


def dissimilarity(a: torch.Tensor, b: torch.Tensor, floor: float) -> torch.Tensor:
    """The rescaled inverse similarity ``[Na, Nb]`` of tokens ``a [Na, D]`` and ``b [Nb, D]``, in [0, 1]: 0 for the
    same direction, 1 at or below the floor of the shifted similarity."""
    return _from_cosine(F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T, floor)


def objective(tokens: torch.Tensor, query: torch.Tensor, chosen: torch.Tensor, cfg: SelectionConfig) -> float:
    """The objective of the set ``chosen`` (indices into ``tokens [N, D]``), computed from scratch."""
    picked = tokens[chosen]
    pairs = dissimilarity(picked, picked, cfg.similarity_floor)
    pair_sum = pairs.sum() - pairs.diagonal().sum()
    scale = 1 / max(1, cfg.budget - 1)
    return float(cfg.alpha * relevance(picked, query).sum() + (1 - cfg.alpha) * scale * pair_sum)


def select(tokens: torch.Tensor, query: torch.Tensor, cfg: SelectionConfig) -> Selection:
    """Greedy selection of ``min(cfg.budget, N)`` of ``tokens [N, D]`` for ``query [D]`` (global mode).

    Ties go to the lowest index (``argmax``), so the result is deterministic; a chosen token is never chosen again
    (its gain is set to minus infinity), so duplicates can both be kept only when nothing better is left."""
    count = min(cfg.budget, len(tokens))
    if count == 0:
        return Selection(torch.zeros(0, dtype=torch.long), 0.0)
    scale = 2 / max(1, cfg.budget - 1)  # each new pair counts in both orders of the pair sum
    unit = F.normalize(tokens.float(), dim=-1)  # once: each step is then one matrix-vector product
    base = cfg.alpha * (1 + unit @ F.normalize(query.float(), dim=-1)) / 2
    spread = torch.zeros_like(base)  # sum of dissimilarities to the chosen tokens, per candidate
    taken = torch.zeros(len(tokens), dtype=torch.bool)
    picked, total = [], 0.0
    for _ in range(count):
        gains = (base + (1 - cfg.alpha) * scale * spread).masked_fill(taken, float("-inf"))
        best = int(torch.argmax(gains))
        total += float(gains[best])
        picked.append(best)
        taken[best] = True
        spread += _from_cosine(unit @ unit[best], cfg.similarity_floor)
    return Selection(torch.tensor(picked, dtype=torch.long), total)


@dataclass
class StreamingSelector:
    """Streaming selection: ``update`` with each window of new tokens (and their ids: positions in the whole
    video, or any label to get back), ``kept`` is the subset so far. Holds at most ``budget`` tokens between
    windows; ``peak_candidates`` records the most tokens one step selected from (window + budget at most)."""

    cfg: SelectionConfig
    query: torch.Tensor
    tokens: torch.Tensor | None = None  # [K, D] the kept subset
    ids: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))  # [K]
    peak_candidates: int = 0

    def update(self, tokens: torch.Tensor, ids: torch.Tensor) -> None:
        """Select from the kept subset and the new tokens ``[W, D]`` (ids ``[W]``) together."""
        candidates = tokens if self.tokens is None else torch.cat([self.tokens, tokens])
        labels = torch.cat([self.ids, ids.long()])
        self.peak_candidates = max(self.peak_candidates, len(candidates))
        chosen = select(candidates, self.query, self.cfg).indices
        self.tokens, self.ids = candidates[chosen], labels[chosen]

    def run(self, tokens: torch.Tensor) -> torch.Tensor:
        """Every token of ``tokens [N, D]`` in windows of ``cfg.window``; returns the kept ids (ascending)."""
        for start in range(0, len(tokens), self.cfg.window):
            window = tokens[start:start + self.cfg.window]
            self.update(window, torch.arange(start, start + len(window)))
        return self.ids.sort().values


def select_streaming(windows: Iterable[tuple[torch.Tensor, torch.Tensor]], query: torch.Tensor,
                     cfg: SelectionConfig) -> StreamingSelector:
    """Streaming selection over ``(tokens [W, D], ids [W])`` windows as they come (e.g. read from token shards)."""
    selector = StreamingSelector(cfg, query)
    for tokens, ids in windows:
        selector.update(tokens, ids)
    return selector
