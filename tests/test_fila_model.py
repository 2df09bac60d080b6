"""FiLA-Video's modules (lvu.models.fila): K-means against brute force, scene selection, and the five merges."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from lvu.models.fila import (
    AttentionPooling,
    BipartiteMerge,
    MergeConfig,
    MergeKind,
    SceneSelectionConfig,
    Selection,
    ShortHistory,
    Supplements,
    WeightedFusion,
    build_merge,
    kmeans,
    select_scenes,
)


def _lloyd_reference(points: np.ndarray, first: np.ndarray, iterations: int) -> np.ndarray:
    """Textbook Lloyd iterations, one point at a time, from the given initial centres."""
    centres = points[first].copy()
    for _ in range(iterations):
        labels = np.array([int(np.argmin([((p - c) ** 2).sum() for c in centres])) for p in points])
        for j in range(len(centres)):
            if (labels == j).any():
                centres[j] = points[labels == j].mean(0)
    return np.array([int(np.argmin([((p - c) ** 2).sum() for c in centres])) for p in points])


def test_kmeans_matches_a_point_by_point_reference_from_the_same_start():
    generator = torch.Generator().manual_seed(3)
    points = torch.randn(4, 12, 5, generator=generator)
    valid = torch.ones(4, 12, dtype=torch.bool)
    result = kmeans(points, valid, 3, iterations=30, tolerance=0.0, generator=torch.Generator().manual_seed(7))
    draws = torch.rand(4, 12, generator=torch.Generator().manual_seed(7))
    first = draws.topk(3, dim=1).indices
    for v in range(4):
        expected = _lloyd_reference(points[v].double().numpy(), first[v].numpy(), 30)
        assert result.assignment[v].tolist() == expected.tolist()


def test_kmeans_finds_the_brute_force_optimum_on_separated_groups():
    """Three well separated groups of frames: the best of several random starts has the lowest within-cluster sum of
    squares of all 3^9 assignments, for every video of the batch and every seed. (A single random start may settle
    in a local optimum, two centres in one group: that is what the restarts are for.)"""
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    labels = torch.tensor([0, 1, 1, 2, 2, 0, 2])
    points = torch.stack([centres[labels] + 0.3 * torch.randn(7, 2, generator=generator) for _ in range(2)])
    assignments = [a for a in itertools.product(range(3), repeat=7) if len(set(a)) == 3]

    def inertia(p: torch.Tensor, assignment) -> float:
        a = torch.as_tensor(assignment)
        return float(sum(((p[a == j] - p[a == j].mean(0)) ** 2).sum() for j in range(3) if (a == j).any()))

    for seed in range(3):
        result = kmeans(points, torch.ones(2, 7, dtype=torch.bool), 3, generator=torch.Generator().manual_seed(seed),
                        restarts=10)
        for v in range(2):
            best = min(inertia(points[v], a) for a in assignments)
            assert inertia(points[v], result.assignment[v]) == pytest.approx(best)


def test_kmeans_ignores_padding_and_refuses_too_few_frames():
    points = torch.randn(1, 6, 3)
    valid = torch.tensor([[True, True, True, True, False, False]])
    points[0, 4:] = 1e6  # padding far away must not pull a centre
    result = kmeans(points, valid, 2, generator=torch.Generator().manual_seed(0))
    assert (result.assignment[0, 4:] == -1).all() and result.centres.abs().max() < 1e3
    with pytest.raises(ValueError, match="2 clusters need at least as many frames"):
        kmeans(points[:, :1], valid[:, :1], 2)


def _blocks(lengths: list[int], dim: int = 8, seed: int = 0) -> torch.Tensor:
    """Frame features in blocks of near-identical frames (one place each), ``[1, sum(lengths), dim]``."""
    generator = torch.Generator().manual_seed(seed)
    places = torch.randn(len(lengths), dim, generator=generator) * 5
    return torch.cat([places[i] + 0.05 * torch.randn(n, dim, generator=generator) for i, n in enumerate(lengths)])[None]


def test_scene_selection_returns_temporal_scenes_of_representatives_and_their_history():
    features = _blocks([6, 6, 6, 6])
    valid = torch.ones(1, 24, dtype=torch.bool)
    chosen = select_scenes(features, valid, SceneSelectionConfig(scenes=4, supplements=2))
    frames, reps = chosen.frames[0], chosen.representatives[0]
    assert frames.shape == (4, 3) and reps.shape == (4,)
    assert reps.tolist() == sorted(reps.tolist()) and len(set(reps.tolist())) == 4
    assert [r // 6 for r in reps.tolist()] == [0, 1, 2, 3]  # one representative per place
    previous = -1
    for scene, rep in zip(frames.tolist(), reps.tolist(), strict=True):
        assert scene == sorted(scene) and rep in scene
        history = [f for f in scene if f != rep]
        assert all(previous < f < rep for f in history) or rep - previous - 1 < 2
        previous = rep


def test_similar_and_dissimilar_supplements_are_the_most_and_least_cosine_similar_history_frames():
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(1, 30, 6, generator=generator)
    valid = torch.ones(1, 30, dtype=torch.bool)
    for mode in Supplements:
        chosen = select_scenes(features, valid, SceneSelectionConfig(scenes=3, supplements=2, supplement=mode))
        reps = chosen.representatives[0].tolist()
        unit = torch.nn.functional.normalize(features[0], dim=-1)
        previous = -1
        for scene, rep in zip(chosen.frames[0].tolist(), reps, strict=True):
            history = list(range(previous + 1, rep))
            if len(history) >= 2:
                sims = {f: float(unit[rep] @ unit[f]) for f in history}
                ranked = sorted(history, key=sims.get, reverse=mode == Supplements.similar)
                assert sorted(f for f in scene if f != rep) == sorted(ranked[:2])
            previous = rep


def test_short_history_repeats_the_representative_or_extends_past_it():
    features = _blocks([1, 5, 1, 5], seed=2)  # representatives land on frames with almost no history
    valid = torch.ones(1, 12, dtype=torch.bool)
    repeated = select_scenes(features, valid, SceneSelectionConfig(scenes=4, supplements=2))
    first = repeated.frames[0, 0].tolist()
    assert first == [repeated.representatives[0, 0].item()] * 3 or len(set(first)) < 3 or first[0] > 0
    extended = select_scenes(features, valid, SceneSelectionConfig(scenes=4, supplements=2,
                                                                   short_history=ShortHistory.extend))
    assert (extended.frames[0] >= 0).all() and all(len(set(s)) == 3 for s in extended.frames[0, 1::2].tolist())


def test_padding_is_never_selected_and_uniform_selection_spreads_evenly():
    features = torch.randn(2, 20, 4)
    valid = torch.ones(2, 20, dtype=torch.bool)
    valid[1, 12:] = False
    chosen = select_scenes(features, valid, SceneSelectionConfig(scenes=3, supplements=1))
    assert (chosen.frames[1] < 12).all()
    uniform = select_scenes(features, valid, SceneSelectionConfig(scenes=3, supplements=1,
                                                                  selection=Selection.uniform))
    assert uniform.frames[0].flatten().tolist() == [0, 4, 8, 11, 15, 19]
    assert uniform.frames[1].max() == 11


# ----------------------------------------------------------------------------------------------------------------
# Merges


def test_weighted_fusion_starts_as_temporal_averaging_and_learns_every_weight():
    scenes = torch.randn(4, 3, 5, 8)
    fusion = WeightedFusion(3, 5, 8)
    assert fusion.weight.shape == (3, 5, 8) and torch.all(fusion.weight == 1 / 3)
    torch.testing.assert_close(fusion(scenes), scenes.mean(1), rtol=0, atol=1e-6)
    fusion(scenes).pow(2).sum().backward()
    assert fusion.weight.grad is not None and (fusion.weight.grad != 0).all()


@pytest.mark.parametrize("merge", ["weighted_fusion", "attention_pooling"])
def test_learnable_merges_have_the_gradients_finite_differences_give(merge):
    """Not only "a gradient exists": autograd's gradients, for the inputs and every weight, match central finite
    differences on a small case (float64)."""
    torch.manual_seed(0)
    module = (WeightedFusion(3, 4, 6) if merge == "weighted_fusion" else AttentionPooling(6)).double()
    with torch.no_grad():  # away from the uniform start, where weighted fusion's weights are all equal
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    scenes = torch.randn(2, 3, 4, 6, dtype=torch.float64, requires_grad=True)
    names = [name for name, _ in module.named_parameters()]

    def f(x, *weights):
        return torch.func.functional_call(module, dict(zip(names, weights, strict=True)), (x,))

    weights = [p.detach().clone().requires_grad_(True) for p in module.parameters()]
    assert torch.autograd.gradcheck(f, (scenes, *weights), eps=1e-6, atol=1e-6)


def test_attention_pooling_is_a_per_token_convex_combination_of_the_frames_queried_by_the_middle_one():
    torch.manual_seed(0)
    scenes = torch.randn(2, 3, 4, 6)
    pooling = AttentionPooling(6)
    bound = (6 / (6 + 6)) ** 0.5  # Xavier uniform
    assert pooling.query.weight.abs().max() <= bound and pooling.key.weight.abs().max() <= bound
    assert pooling.query.bias is None and not hasattr(pooling, "value")
    out = pooling(scenes)
    q = scenes[:, 1] @ pooling.query.weight.T
    k = scenes @ pooling.key.weight.T
    weights = ((q[:, None] * k).sum(-1) / 6**0.5).softmax(1)
    torch.testing.assert_close(out, (weights[..., None] * scenes).sum(1))
    lo, hi = scenes.min(1).values, scenes.max(1).values
    assert ((out >= lo - 1e-6) & (out <= hi + 1e-6)).all()
    out.sum().backward()
    assert pooling.query.weight.grad.abs().sum() > 0 and pooling.key.weight.grad.abs().sum() > 0


def test_bipartite_merge_reduces_a_scene_to_one_frame_of_tokens_in_order():
    frame = torch.randn(1, 1, 6, 4)
    copies = frame.expand(1, 3, 6, 4)
    # Three identical frames: every token merges with its copies; the mean gives the frame back, in raster order.
    torch.testing.assert_close(BipartiteMerge(weighted=True)(copies), frame[:, 0])
    # The paper's pseudocode sums what merges: copies of a token add up.
    summed = BipartiteMerge(weighted=False)(copies)
    assert summed.shape == (1, 6, 4)
    assert torch.allclose(summed.sum(1), 3 * frame[:, 0].sum(1), atol=1e-5)
    out = BipartiteMerge()(torch.randn(5, 3, 7, 4, requires_grad=True))
    assert out.shape == (5, 7, 4)


@pytest.mark.parametrize("kind", list(MergeKind))
def test_every_merge_maps_scenes_of_k_frames_to_one_frame(kind):
    scenes = torch.randn(6, 3, 16, 8, requires_grad=True)
    merge = build_merge(MergeConfig(kind=kind), frames=3, tokens=16, dim=8)
    out = merge(scenes)
    assert out.shape == (6, 16, 8)
    out.sum().backward()
    assert scenes.grad is not None and scenes.grad.abs().sum() > 0
    if kind == MergeKind.uniform:
        torch.testing.assert_close(out, scenes[:, 1])
    if kind == MergeKind.temporal_average:
        torch.testing.assert_close(out, scenes.mean(1))
