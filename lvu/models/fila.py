"""FiLA-Video's two modules (Guo et al., Sec. 3.1-3.2; supplement B-C): scene selection among candidate frames, and
the merge of each scene's frames into the tokens of one frame.

* **Scene selection** (Sec. 3.1, Eq. 1-6; inference only in the paper): each frame is represented by the mean of its
  patch tokens (Eq. 1); K-means with random initial centres groups the frames (Eq. 2-3); the member frame nearest to
  each centre represents its cluster (Eq. 4); in temporal order, every representative takes the ``r`` frames most
  (or, as Table 2's rival, least) cosine-similar to it among its *historical* frames, those strictly between the
  previous representative and itself (Eq. 5-6): ``k`` scenes of ``r + 1`` frames.
* **Merges** (Sec. 3.2 and Table 3; supplement C), all ``[S, k, N, D] -> [S, N, D]`` (``S`` scenes of ``k`` frames of
  ``N`` tokens): weighted fusion (one learnable ``W`` of shape ``k x N x D`` initialised to ``1/k``, Eq. 7-8: at
  initialisation exactly temporal averaging), attention pooling (the middle frame queries the others token by
  token), temporal averaging, bipartite soft matching (ToMe / LongVLM), and *uniform* (no merge: the middle frame).

Choices the paper leaves open are marked OPEN and exposed as options. Everything is batched over videos; no Python
loop runs over frames or tokens (K-means loops over its iterations, representative picking over clusters).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import torch
import torch.nn.functional as F
from torch import nn


class Selection(str, Enum):
    """How scenes are chosen among the candidate frames (Table 2)."""

    clustering = "clustering"  # Sec. 3.1 (the paper's choice)
    uniform = "uniform"  # k * (r + 1) evenly spaced candidates, consecutive groups (Table 2's "uniformly sampling")


class Supplements(str, Enum):
    similar = "similar"  # the r historical frames most similar to the representative (chosen, Table 2)
    dissimilar = "dissimilar"  # the r least similar (Table 2's rival)


class ShortHistory(str, Enum):
    """OPEN: a representative with fewer than r historical frames (two representatives close together)."""

    repeat = "repeat"  # the scene repeats its representative (its weight in the merge grows; no frame is shared)
    extend = "extend"  # also take frames after the representative (which may belong to the next scene's history)


@dataclass
class SceneSelectionConfig:
    """Scene selection settings (defaults: Sec. 4.1's 96 candidates -> 32 scenes of 3 frames)."""

    scenes: int = 32  # k: scenes, i.e. frames after merging
    supplements: int = 2  # r: frames added to each representative (r + 1 frames per scene)
    selection: Selection = Selection.clustering
    supplement: Supplements = Supplements.similar
    clusters: int | None = None  # OPEN: K-means clusters M; None = scenes. With M > k the k largest clusters are kept
    iterations: int = 50  # K-means iteration cap (OPEN)
    tolerance: float = 1e-4  # stop when no centre moves more than this (relative to the features' scale)
    # OPEN: random starts, the best (least within-cluster sum of squares) kept. The paper's single random start can
    # end in a poor local optimum (two starts in one scene); several are cheap on ~100 frames (scikit-learn: 10).
    restarts: int = 10
    seed: int = 0  # the random initial centres (seeded: the same video selects the same scenes)
    short_history: ShortHistory = ShortHistory.repeat

    @property
    def frames_per_scene(self) -> int:
        return self.supplements + 1


@dataclass
class KMeansResult:
    centres: torch.Tensor  # [V, M, D]
    assignment: torch.Tensor  # [V, N] cluster of each point (-1 for padding)
    iterations: int  # iterations run before the centres settled (or the cap)


def kmeans(points: torch.Tensor, valid: torch.Tensor, clusters: int, *, iterations: int = 50, tolerance: float = 1e-4,
           generator: torch.Generator | None = None, restarts: int = 1) -> KMeansResult:
    """Lloyd's K-means on each video's points at once (Eq. 2-3).

    Args:
        points: ``[V, N, D]`` frame features; padding rows are ignored.
        valid: ``[V, N]`` bool, at least ``clusters`` real points per video.
        clusters: M centres, initialised to M distinct random real points of each video (the paper's random init).
        tolerance: stop once no centre moves by more than ``tolerance`` times the points' mean norm.
        restarts: independent random starts (run as one batch); each video keeps its lowest within-cluster sum of
            squares.

    An empty cluster keeps its centre (it may win points again later).
    """
    if restarts > 1:
        v = points.shape[0]
        runs = _lloyd(points.repeat(restarts, 1, 1), valid.repeat(restarts, 1), clusters, iterations, tolerance,
                      generator)
        x = points.float().repeat(restarts, 1, 1)
        spread = (x - runs.centres.gather(1, runs.assignment.clamp(min=0)[..., None].expand(-1, -1, x.shape[-1])))
        inertia = (spread.pow(2).sum(-1) * valid.repeat(restarts, 1)).sum(1).view(restarts, v)
        best = inertia.argmin(0) * v + torch.arange(v, device=points.device)
        return KMeansResult(runs.centres[best], runs.assignment[best], runs.iterations)
    return _lloyd(points, valid, clusters, iterations, tolerance, generator)


def _lloyd(points: torch.Tensor, valid: torch.Tensor, clusters: int, iterations: int, tolerance: float,
           generator: torch.Generator | None) -> KMeansResult:
    v, n, d = points.shape
    if bool((valid.sum(1) < clusters).any()):
        raise ValueError(f"K-means: {clusters} clusters need at least as many frames; a video has "
                         f"{int(valid.sum(1).min())}")
    x = points.float()
    draws = torch.rand(v, n, generator=generator, device=points.device if generator is None else "cpu")
    draws = draws.to(points.device).masked_fill(~valid, -1.0)
    first = draws.topk(clusters, dim=1).indices  # [V, M] distinct real points
    centres = x.gather(1, first[..., None].expand(-1, -1, d))
    scale = (x.norm(dim=-1) * valid).sum() / valid.sum().clamp(min=1)
    weights = valid.float()
    done = 0
    while done < iterations:
        done += 1
        assignment = torch.cdist(x, centres).argmin(-1)  # [V, N]
        slots = assignment[..., None].expand(-1, -1, d)
        sums = x.new_zeros(v, clusters, d).scatter_add_(1, slots, x * weights[..., None])
        counts = x.new_zeros(v, clusters).scatter_add_(1, assignment, weights)
        moved = torch.where(counts[..., None] > 0, sums / counts.clamp(min=1)[..., None], centres)
        shift = (moved - centres).norm(dim=-1).max()
        centres = moved
        if float(shift) <= tolerance * float(scale):
            break
    assignment = torch.cdist(x, centres).argmin(-1).masked_fill(~valid, -1)
    return KMeansResult(centres, assignment, done)


@dataclass
class SceneSelection:
    frames: torch.Tensor  # [V, k, r + 1] frame indices of each scene, in temporal order, scenes in temporal order
    representatives: torch.Tensor  # [V, k] each scene's representative frame


def frame_features(tokens: torch.Tensor) -> torch.Tensor:
    """Eq. 1: each frame's mean patch token, ``[..., N, D] -> [..., D]``."""
    return tokens.mean(-2)


def _representatives(points: torch.Tensor, valid: torch.Tensor, result: KMeansResult, keep: int) -> torch.Tensor:
    """Eq. 4: each kept cluster's member frame nearest to its centre; the ``keep`` largest clusters are kept. A
    cluster left empty takes the nearest frame that no other cluster took. ``[V, keep]``, unsorted."""
    v, n, _ = points.shape
    distance = torch.cdist(points.float(), result.centres)  # [V, N, M]
    sizes = F.one_hot(result.assignment.clamp(min=0), result.centres.shape[1]).mul(valid[..., None]).sum(1)
    order = sizes.argsort(dim=1, descending=True, stable=True)[:, :keep]  # [V, keep] largest clusters first
    taken = torch.zeros(v, n, dtype=torch.bool, device=points.device)
    chosen = []
    rows = torch.arange(v, device=points.device)
    for j in range(keep):
        cluster = order[:, j]
        to_centre = distance[rows, :, cluster]  # [V, N]
        member = (result.assignment == cluster[:, None]) & ~taken
        free = valid & ~taken
        pick = torch.where(member.any(1), to_centre.masked_fill(~member, math.inf).argmin(1),
                           to_centre.masked_fill(~free, math.inf).argmin(1))
        taken[rows, pick] = True
        chosen.append(pick)
    return torch.stack(chosen, 1)


def _supplements(features: torch.Tensor, valid: torch.Tensor, reps: torch.Tensor, cfg: SceneSelectionConfig
                 ) -> torch.Tensor:
    """Eq. 5-6: each representative's r supplements among its historical frames; ``[V, k, r]``."""
    v, n, _ = features.shape
    r = cfg.supplements
    unit = F.normalize(features.float(), dim=-1)
    similarity = torch.einsum("vkd,vnd->vkn", unit.gather(1, reps[..., None].expand(-1, -1, unit.shape[-1])), unit)
    score = similarity if cfg.supplement == Supplements.similar else -similarity
    index = torch.arange(n, device=features.device)
    previous = torch.cat([reps.new_full((v, 1), -1), reps[:, :-1]], 1)  # the first scene's history starts at frame 0
    history = (index > previous[..., None]) & (index < reps[..., None]) & valid[:, None]  # [V, k, N]
    ranked = score.masked_fill(~history, -math.inf)
    if cfg.short_history == ShortHistory.extend:
        following = torch.cat([reps[:, 1:], reps.new_full((v, 1), n)], 1)
        after = (index > reps[..., None]) & (index < following[..., None]) & valid[:, None]
        # History first: a following frame only fills what the history cannot.
        ranked = torch.where(after, score - 4.0, ranked)
    if r == 0:
        return reps.new_zeros(v, reps.shape[1], 0)
    top = ranked.topk(min(r, n), dim=-1)
    picked = torch.where(torch.isfinite(top.values), top.indices, reps[..., None])
    if picked.shape[-1] < r:
        picked = torch.cat([picked, reps[..., None].expand(-1, -1, r - picked.shape[-1])], -1)
    return picked


def select_scenes(tokens: torch.Tensor, valid: torch.Tensor, cfg: SceneSelectionConfig) -> SceneSelection:
    """Pick ``cfg.scenes`` scenes of ``r + 1`` frames among each video's candidate frames.

    Args:
        tokens: ``[V, N, L, D]`` each candidate frame's patch tokens (or ``[V, N, D]`` frame features).
        valid: ``[V, N]`` real frames (padding is never selected).
    """
    features = frame_features(tokens) if tokens.dim() == 4 else tokens
    k, r = cfg.scenes, cfg.supplements
    if cfg.selection == Selection.uniform:
        return _uniform_scenes(valid, k, r + 1)
    generator = torch.Generator().manual_seed(cfg.seed)
    result = kmeans(features, valid, cfg.clusters or k, iterations=cfg.iterations, tolerance=cfg.tolerance,
                    generator=generator, restarts=cfg.restarts)
    reps = _representatives(features, valid, result, k).sort(1).values  # temporal order (Eq. 4's K)
    extra = _supplements(features, valid, reps, cfg)
    # OPEN: slot order inside a scene. Temporal order, as the consecutive frames of training scenes (stage 4).
    frames = torch.cat([reps[..., None], extra], -1).sort(-1).values
    return SceneSelection(frames, reps)


def _uniform_scenes(valid: torch.Tensor, scenes: int, size: int) -> SceneSelection:
    counts = valid.sum(1)
    steps = torch.linspace(0, 1, scenes * size, device=valid.device)
    frames = torch.round(steps[None] * (counts[:, None] - 1).float()).long().view(-1, scenes, size)
    return SceneSelection(frames, frames[..., size // 2])


# ---------------------------------------------------------------------------------------------------------------
# Merges: [S, k, N, D] -> [S, N, D]


class MergeKind(str, Enum):
    weighted_fusion = "weighted_fusion"  # Sec. 3.2, Eq. 7-8 (the paper's)
    attention_pooling = "attention_pooling"  # supplement C.1
    temporal_average = "temporal_average"  # Table 3, as temporal segment networks
    bsm = "bsm"  # bipartite soft matching (supplement C.2, as LongVLM)
    uniform = "uniform"  # no merge: each scene's middle frame (Table 3's uniform-32 baseline)


class WeightedFusion(nn.Module):
    """Eq. 7-8: ``out = sum_i F_i * W_i`` with one learnable ``W`` of shape ``[k, N, D]`` initialised to ``1/k`` and no
    normalisation, so at initialisation it is temporal averaging and training may weigh any frame's any channel."""

    def __init__(self, frames: int, tokens: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((frames, tokens, dim), 1.0 / frames))

    def forward(self, scenes: torch.Tensor) -> torch.Tensor:
        return (scenes * self.weight.to(scenes.dtype)).sum(1)


class AttentionPooling(nn.Module):
    """Supplement C.1: the middle frame's tokens, projected by ``W_Q``, query every frame's tokens projected by ``W_K``
    at the same position (OPEN: the paper's ``softmax(Q K_m^T / sqrt(d))`` read token by token over the frames; a
    full token-to-token attention would mix positions); the weights average the frames' own tokens (no value
    projection). Xavier-initialised projections."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query = nn.Linear(dim, dim, bias=False)
        self.key = nn.Linear(dim, dim, bias=False)
        nn.init.xavier_uniform_(self.query.weight)
        nn.init.xavier_uniform_(self.key.weight)

    def forward(self, scenes: torch.Tensor) -> torch.Tensor:
        middle = scenes[:, scenes.shape[1] // 2]  # [S, N, D]
        q = self.query(middle)[:, None]  # [S, 1, N, D]
        k = self.key(scenes)  # [S, k, N, D]
        weights = ((q * k).sum(-1) / math.sqrt(scenes.shape[-1])).softmax(1)  # [S, k, N] over the frames
        return (weights[..., None] * scenes).sum(1)


class TemporalAverage(nn.Module):
    def forward(self, scenes: torch.Tensor) -> torch.Tensor:
        return scenes.mean(1)


class MiddleFrame(nn.Module):
    """No merge: the scene's middle frame (with 96 candidates in scenes of 3, the uniform-32 baseline's frames)."""

    def forward(self, scenes: torch.Tensor) -> torch.Tensor:
        return scenes[:, scenes.shape[1] // 2]


class BipartiteMerge(nn.Module):
    """Supplement C.2: the scene's ``k * N`` tokens merged down to ``N`` by repeated bipartite soft matching (ToMe):
    alternate tokens form sets A and B, each A token's most similar B token is its edge, the strongest edges merge.

    Args:
        weighted: merged tokens are the size-weighted mean of what they absorbed (ToMe, LongVLM); False sums them,
            as the paper's pseudocode writes (OPEN).

    The paper's pseudocode also loses the token order; here each merged token carries the size-weighted mean
    position of its sources and the result is put back in that order, so the LLM still reads the scene's tokens in
    raster order.
    """

    def __init__(self, weighted: bool = True) -> None:
        super().__init__()
        self.weighted = weighted

    def forward(self, scenes: torch.Tensor) -> torch.Tensor:
        s, k, n, d = scenes.shape
        # OPEN: the token order the alternating A/B split sees. Position-major (the k frames' tokens at one spatial
        # position side by side), so a token can meet its own position in the other frames: the temporal merge the
        # paper compares. (Frame-major order would put a position's copies all in A or all in B for even N.)
        x = scenes.transpose(1, 2).reshape(s, n * k, d)
        size = x.new_ones(s, n * k, 1)
        # Each token's raster position in its frame; merged tokens take the size-weighted mean, to restore order.
        position = torch.arange(n, device=x.device, dtype=x.dtype).repeat_interleave(k)[None, :, None].expand(s, -1, 1)
        while x.shape[1] > n:
            x, size, position = self._merge_step(x, size, position, min(x.shape[1] - n, x.shape[1] // 2))
        order = position.squeeze(-1).argsort(1)
        return x.gather(1, order[..., None].expand(-1, -1, d))

    def _merge_step(self, x: torch.Tensor, size: torch.Tensor, position: torch.Tensor, r: int):
        d = x.shape[-1]
        metric = F.normalize(x.float(), dim=-1)
        a, b = metric[:, ::2], metric[:, 1::2]
        best, target = (a @ b.transpose(1, 2)).max(-1)  # [S, |A|]
        edges = best.argsort(-1, descending=True)
        merged, kept = edges[:, :r], edges[:, r:]
        xa, xb, sa, sb, pa, pb = x[:, ::2], x[:, 1::2], size[:, ::2], size[:, 1::2], position[:, ::2], position[:, 1::2]
        dst = target.gather(1, merged)  # [S, r]

        def gather(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            return t.gather(1, idx[..., None].expand(-1, -1, t.shape[-1]))

        src_size = gather(sa, merged)
        weight = src_size if self.weighted else torch.ones_like(src_size)
        total = (xb * sb if self.weighted else xb).scatter_add(1, dst[..., None].expand(-1, -1, d),
                                                               gather(xa, merged) * weight)
        new_size = sb.scatter_add(1, dst[..., None], src_size)
        xb = total / new_size if self.weighted else total
        pb = (pb * sb).scatter_add(1, dst[..., None], gather(pa, merged) * src_size) / new_size
        keep = lambda t: gather(t, kept)  # noqa: E731
        return (torch.cat([keep(xa), xb], 1), torch.cat([keep(sa), new_size], 1),
                torch.cat([keep(pa), pb], 1))


@dataclass
class MergeConfig:
    kind: MergeKind = MergeKind.weighted_fusion
    bsm_weighted: bool = True  # bsm: size-weighted mean (ToMe / LongVLM) or the paper pseudocode's plain sum


def build_merge(cfg: MergeConfig, frames: int, tokens: int, dim: int) -> nn.Module:
    """The merge module for scenes of ``frames`` frames of ``tokens`` tokens of width ``dim``."""
    kind = MergeKind(cfg.kind)
    if kind == MergeKind.weighted_fusion:
        return WeightedFusion(frames, tokens, dim)
    if kind == MergeKind.attention_pooling:
        return AttentionPooling(dim)
    if kind == MergeKind.temporal_average:
        return TemporalAverage()
    if kind == MergeKind.bsm:
        return BipartiteMerge(cfg.bsm_weighted)
    return MiddleFrame()
