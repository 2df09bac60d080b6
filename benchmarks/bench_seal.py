"""SEAL's subset selection (lvu/models/seal.py), measured side by side in one run (figures and machine:
benchmarks/README.md).

1. Global selection time against the number of candidate tokens (1k to 100k) at budget 16, and against the budget
   (16 to 450) at 10k candidates: the greedy makes B passes of one matrix-vector product over the candidates, so time
   should grow linearly in both. Tokens are 256 wide (a BLIP-2 / CLIP projection width). Median of interleaved rounds.
2. Streaming selection's peak memory against the video's length: windows of 1000 tokens arrive one at a time (made
   on the fly, as token shards would be read), budget 16; each length in a fresh process, peak RSS minus the RSS
   once the process is ready. Memory should not grow with the number of windows; the global selection over the
   same tokens (all held at once) is measured beside it.

    python benchmarks/bench_seal.py
    python benchmarks/bench_seal.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
from _memory import peak_rss_mb, rss_mb

from lvu.models.seal import SelectionConfig, StreamingSelector, select

WIDTH = 256


def tokens(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, WIDTH, generator=generator), torch.randn(WIDTH, generator=generator)


def timed(n: int, budget: int) -> float:
    candidates, query = tokens(n)
    start = time.perf_counter()
    select(candidates, query, SelectionConfig(budget=budget))
    return time.perf_counter() - start


def time_part(rounds: int) -> None:
    sizes = (1_000, 3_000, 10_000, 30_000, 100_000)
    budgets = (16, 64, 200, 450)
    by_size: dict[int, list[float]] = {n: [] for n in sizes}
    by_budget: dict[int, list[float]] = {b: [] for b in budgets}
    for _ in range(rounds):
        for n in sizes:
            by_size[n].append(timed(n, 16))
        for b in budgets:
            by_budget[b].append(timed(10_000, b))
    print("| candidates | budget | median s | vs 1k candidates |\n|---|---|---|---|")
    first = statistics.median(by_size[sizes[0]])
    for n in sizes:
        t = statistics.median(by_size[n])
        print(f"| {n} | 16 | {t:.4f} | {t / first:.1f}x ({n / sizes[0]:.0f}x tokens) |")
    print("\n| candidates | budget | median s | vs budget 16 |\n|---|---|---|---|")
    base = statistics.median(by_budget[budgets[0]])
    for b in budgets:
        t = statistics.median(by_budget[b])
        print(f"| 10000 | {b} | {t:.4f} | {t / base:.1f}x ({b / budgets[0]:.1f}x budget) |")


def memory_child(mode: str, windows: int) -> dict:
    cfg = SelectionConfig(budget=16, window=1000)
    _, query = tokens(1)
    before = rss_mb()
    if mode == "streaming":
        selector = StreamingSelector(cfg, query)
        for w in range(windows):
            window, _ = tokens(cfg.window, seed=w + 1)  # made as it arrives, then dropped
            selector.update(window, torch.arange(w * cfg.window, (w + 1) * cfg.window))
    else:
        everything = torch.cat([tokens(cfg.window, seed=w + 1)[0] for w in range(windows)])
        select(everything, query, cfg)
    return {"mode": mode, "windows": windows, "peak_mb": peak_rss_mb() - before}


def memory_part() -> None:
    print("\n| mode | windows of 1000 | tokens | peak MB above start |\n|---|---|---|---|")
    for windows in (10, 50, 200):
        for mode in ("streaming", "global"):
            out = subprocess.run([sys.executable, __file__, "--memory-child", mode, str(windows)], check=True,
                                 capture_output=True, text=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            print(f"| {mode} | {windows} | {windows * 1000} | {result['peak_mb']:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-child", nargs=2, metavar=("MODE", "WINDOWS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child[0], int(args.memory_child[1]))))
        return
    torch.set_num_threads(1)  # a like-for-like per-core figure on a shared machine
    time_part(args.rounds)
    memory_part()


if __name__ == "__main__":
    main()
