"""SEAL toy reproduction at the selection level: does alpha trade relevance against diversity as the paper says, and
does streaming stay close to global? Design (written before the first run) and results: benchmarks/README.md,
"SEAL toy reproduction, selection level" (design v1: normalisation ``unit``, budget 8; design v2: every
normalisation, budgets 8 and 16, streaming at budget 16).

    python benchmarks/toy_seal.py                 # 3 seeds x 100 videos, every condition of v2 (v1's included)
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from lvu.models.seal import Normalisation, SelectionConfig, StreamingSelector, select

DIM, FACETS, COPIES_PER_FACET, REPEATS, BACKGROUND = 64, 4, 3, 200, 4800


def mix(base: torch.Tensor, other: torch.Tensor, cosine: float) -> torch.Tensor:
    """A unit vector at about ``cosine`` to unit ``base``, leaning towards ``other`` (made orthogonal to base)."""
    orth = F.normalize(other - (other @ base) * base, dim=-1)
    return F.normalize(cosine * base + (1 - cosine ** 2) ** 0.5 * orth, dim=-1)


def video(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokens ``[N, DIM]`` in random order, the query ``[DIM]``, and each token's facet (-1: not an answer facet)."""
    query = F.normalize(torch.randn(DIM, generator=generator), dim=-1)
    # Facets at ~0.6 to the query; their off-query parts random, so ~0.2 to each other after the shared 0.6.
    facets = torch.stack([mix(query, torch.randn(DIM, generator=generator), 0.6) for _ in range(FACETS)])
    repeated = mix(query, torch.randn(DIM, generator=generator), 0.7)

    def noisy(direction: torch.Tensor, count: int) -> torch.Tensor:
        return F.normalize(direction + 0.05 * torch.randn(count, DIM, generator=generator), dim=-1)

    parts = [noisy(f, COPIES_PER_FACET) for f in facets] + [noisy(repeated, REPEATS),
                                                            F.normalize(torch.randn(BACKGROUND, DIM,
                                                                                    generator=generator), dim=-1)]
    labels = torch.cat([torch.full((COPIES_PER_FACET,), i) for i in range(FACETS)] +
                       [torch.full((REPEATS + BACKGROUND,), -1)])
    order = torch.randperm(len(labels), generator=generator)
    return torch.cat(parts)[order], query, labels[order]


def coverage(chosen: torch.Tensor, labels: torch.Tensor) -> float:
    found = {int(f) for f in labels[chosen] if f >= 0}
    return len(found) / FACETS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--videos", type=int, default=100)
    args = parser.parse_args()
    conditions: list[tuple[str, SelectionConfig, bool]] = []
    for norm in Normalisation:
        for budget in (8, 16):
            conditions += [(f"{norm.value}, B {budget}, global, alpha {a}",
                            SelectionConfig(budget=budget, alpha=a, normalisation=norm), False)
                           for a in (0.0, 0.5, 0.9, 1.0)]
        conditions += [(f"{norm.value}, B 16, streaming {w}, alpha 0.9",
                        SelectionConfig(budget=16, alpha=0.9, normalisation=norm, window=w), True) for w in (1000, 500)]
    per_seed: dict[str, list[float]] = {name: [] for name, _, _ in conditions}
    for seed in range(args.seeds):
        generator = torch.Generator().manual_seed(seed)
        videos = [video(generator) for _ in range(args.videos)]
        for name, cfg, streaming in conditions:
            scores = []
            for tokens, query, labels in videos:
                chosen = StreamingSelector(cfg, query).run(tokens) if streaming else select(tokens, query, cfg).picked
                scores.append(coverage(chosen, labels))
            per_seed[name].append(100 * statistics.mean(scores))
        print(f"seed {seed} done", flush=True)
    print(f"\n{args.seeds} seeds x {args.videos} videos; answer facets covered (%), mean +- sd")
    print("| condition | coverage (%) |\n|---|---|")
    for name, values in per_seed.items():
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"| {name} | {statistics.mean(values):.1f} +- {sd:.1f} |")


if __name__ == "__main__":
    main()
