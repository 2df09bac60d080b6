"""SEAL's query-aware subset selection (global and streaming), in torch.

From the candidate tokens ``T`` (scene, object and action tokens, each an embedding in a text-image space) and a
query embedding ``q``, SEAL keeps a subset of ``B`` tokens maximising

    alpha * sum_{t in S} R(t, q)  +  (1 - alpha) * sum_{i != j in S} 1 / S(t_i, t_j)

with R the token-query cosine and S the token-token cosine (alpha = 0.9). As written the second term is unusable: a
cosine can be zero or negative (1/S blows up or rewards similarity). The similarity is therefore shifted to
``(1 + S) / 2`` in [0, 1] and floored at ``similarity_floor`` (0.05), so the inverse lies in [1, 1 / floor] and
identical tokens gain least. How the two terms are then put on one scale is :class:`Normalisation` (an option; the
papers are silent, and the choice decides what alpha means: benchmarks/README.md, SEAL toy v1 and v2):

* ``paper``: the raw cosine against the raw inverse ``1 / S``, summed over all B(B-1) ordered pairs: the paper's
  formula, with only the shift and floor added. Its pair term grows like B^2 against B, so alpha's balance moves
  with the budget;
* ``unit``: relevance ``(1 + R) / 2`` and the inverse rescaled to a dissimilarity in [0, 1] (0 for identical tokens,
  1 at the floor), the pair sum divided by ``B - 1`` so both terms grow like B;
* ``spread``: ``unit``'s terms, each divided by its standard deviation over the candidates (relevance over the
  tokens, dissimilarity over the pairs of a strided sample of at most 512 candidates).

The objective stays a sum over the selected set with fixed coefficients, so the greedy algorithm's marginal gain of a
candidate ``c`` given the selected ``S`` is exact and cheap: ``alpha * r(c) + (1 - alpha) * 2 * w * sum_{s in S}
p(c, s)`` (``r`` and ``p`` the normalised relevance and pair terms, ``w`` the pair sum's weight). Each step adds one
column of pair values (one matrix-vector product over all candidates) to a running sum: ``O(N * B * D)`` time and
``O(N)`` memory beyond the tokens, no ``N x N`` matrix, no Python loop over candidates. The pair term is not
submodular, so greedy carries no approximation guarantee (the papers say as much); it is what
SEAL uses.

Streaming mode (the supplement's Table 1): the video's tokens arrive in windows; each step selects from the window
and the subset kept so far, ``S_t = select(W_t | S_{t-1})``, so memory is bounded by window + budget whatever the
video's length (window 1000 by default).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

import torch
import torch.nn.functional as F


class Normalisation(str, Enum):
    """How relevance and diversity are put on one scale (see the module docstring)."""

    PAPER = "paper"
    UNIT = "unit"
    SPREAD = "spread"


SPREAD_SAMPLE = 512  # candidates whose pairs estimate the dissimilarity's spread (``spread``): 130k pairs, no N x N


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
    normalisation: Normalisation = Normalisation.PAPER
    """OPEN: how the two terms are scaled against each other (module docstring). ``paper`` by the rule fixed before
    the toy's design v2 ran (benchmarks/README.md): the only one under which alpha 0.9 beat alpha 0, 0.5 and 1."""
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


def _inverse(cosine: torch.Tensor, floor: float) -> torch.Tensor:
    """``1 / S`` of the shifted, floored similarity: in [1, 1 / floor]."""
    return 1 / ((1 + cosine) / 2).clamp(min=floor)


def _from_cosine(cosine: torch.Tensor, floor: float) -> torch.Tensor:
    return (_inverse(cosine, floor) - 1) / (1 / floor - 1)


def dissimilarity(a: torch.Tensor, b: torch.Tensor, floor: float) -> torch.Tensor:
    """The rescaled inverse similarity ``[Na, Nb]`` of tokens ``a [Na, D]`` and ``b [Nb, D]``, in [0, 1]: 0 for the
    same direction, 1 at or below the floor of the shifted similarity."""
    return _from_cosine(F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T, floor)


@dataclass
class _Terms:
    """The objective's terms for one candidate set under a normalisation: ``relevance [N]`` per candidate,
    ``pair(cosines)`` the diversity of pairs from their cosines, and ``pair_weight`` on the pair sum."""

    relevance: torch.Tensor
    floor: float
    mode: Normalisation
    pair_scale: float  # divides the pair values (``spread``)
    pair_weight: float

    def pair(self, cosine: torch.Tensor) -> torch.Tensor:
        if self.mode is Normalisation.PAPER:
            return _inverse(cosine, self.floor)
        return _from_cosine(cosine, self.floor) / self.pair_scale


def _spread(values: torch.Tensor) -> float:
    """Standard deviation, or 1 when the values do not vary (a constant term changes no choice)."""
    deviation = float(values.std()) if values.numel() > 1 else 0.0
    return deviation if deviation > 1e-12 else 1.0


def _terms(unit: torch.Tensor, unit_query: torch.Tensor, cfg: SelectionConfig) -> _Terms:
    """Terms for unit-norm candidates ``unit [N, D]`` and query ``[D]``."""
    mode = Normalisation(cfg.normalisation)
    cosine = unit @ unit_query
    pair_weight = 1.0 if mode is Normalisation.PAPER else 1 / max(1, cfg.budget - 1)
    if mode is Normalisation.PAPER:
        return _Terms(cosine, cfg.similarity_floor, mode, 1.0, pair_weight)
    relevant = (1 + cosine) / 2
    if mode is Normalisation.UNIT:
        return _Terms(relevant, cfg.similarity_floor, mode, 1.0, pair_weight)
    sample = unit[::max(1, -(-len(unit) // SPREAD_SAMPLE))]
    upper = torch.triu_indices(len(sample), len(sample), offset=1)
    pairs = _from_cosine((sample @ sample.T)[upper[0], upper[1]], cfg.similarity_floor)
    return _Terms(relevant / _spread(relevant), cfg.similarity_floor, mode, _spread(pairs), pair_weight)


def _unit(tokens: torch.Tensor) -> torch.Tensor:
    return F.normalize(tokens.float(), dim=-1)


def objective(tokens: torch.Tensor, query: torch.Tensor, chosen: torch.Tensor, cfg: SelectionConfig) -> float:
    """The objective of the set ``chosen`` (indices into ``tokens [N, D]``), computed from scratch (``spread``'s
    scales come from all of ``tokens``, as in :func:`select`)."""
    unit = _unit(tokens)
    terms = _terms(unit, _unit(query), cfg)
    picked = unit[chosen]
    pairs = terms.pair(picked @ picked.T)
    pair_sum = pairs.sum() - pairs.diagonal().sum()
    return float(cfg.alpha * terms.relevance[chosen].sum() + (1 - cfg.alpha) * terms.pair_weight * pair_sum)


def select(tokens: torch.Tensor, query: torch.Tensor, cfg: SelectionConfig) -> Selection:
    """Greedy selection of ``min(cfg.budget, N)`` of ``tokens [N, D]`` for ``query [D]`` (global mode).

    Ties go to the lowest index (``argmax``), so the result is deterministic; a chosen token is never chosen again
    (its gain is set to minus infinity), so duplicates can both be kept only when nothing better is left."""
    count = min(cfg.budget, len(tokens))
    if count == 0:
        return Selection(torch.zeros(0, dtype=torch.long), 0.0)
    unit = _unit(tokens)  # once: each step is then one matrix-vector product
    terms = _terms(unit, _unit(query), cfg)
    base = cfg.alpha * terms.relevance
    scale = (1 - cfg.alpha) * 2 * terms.pair_weight  # each new pair counts in both orders of the pair sum
    spread = torch.zeros_like(base)  # sum of pair values with the chosen tokens, per candidate
    taken = torch.zeros(len(tokens), dtype=torch.bool, device=tokens.device)
    picked, total = [], 0.0
    for _ in range(count):
        gains = (base + scale * spread).masked_fill(taken, float("-inf"))
        best = int(torch.argmax(gains))
        total += float(gains[best])
        picked.append(best)
        taken[best] = True
        spread += terms.pair(unit @ unit[best])
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
