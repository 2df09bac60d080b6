"""LV-MAE pre-training step throughput and memory scaling, measured side by side in one run.

1. Throughput: one pre-training step (forward, backward, AdamW) at batch 16, 256 tokens, width 1024 (decoder 512,
   16 heads, the paper's shapes) and a CPU-sized depth. FLOPs of the step are counted by
   ``torch.utils.flop_counter.FlopCounterMode``; achieved FLOP/s is compared with a dense matmul's FLOP/s measured
   in the same process just before.
2. Scaling: step time and peak memory at 256, 1024 and 4096 tokens, each in a fresh process (peak RSS minus an
   import-only baseline). Attention runs through ``scaled_dot_product_attention``, so memory should grow about
   linearly with tokens (a materialised L x L attention would grow 16x per 4x tokens).

    python benchmarks/bench_lvmae.py                   # depth 2 / decoder depth 1
    python benchmarks/bench_lvmae.py --depth 4 --steps 5
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch
from _memory import peak_rss_mb

from lvu.models.lvmae import LVMAE, LVMAEConfig


def dense_matmul_flops(size: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def make(tokens: int, depth: int, decoder_depth: int) -> LVMAE:
    cfg = LVMAEConfig(input_dim=1024, embed_dim=1024, depth=depth, num_heads=16, decoder_dim=512,
                      decoder_depth=decoder_depth, decoder_num_heads=16, max_tokens=tokens)
    return LVMAE(cfg)


def step_fn(model: LVMAE, batch: int, tokens: int):
    x = torch.randn(batch, tokens, 1024)
    valid = torch.ones(batch, tokens, dtype=torch.bool)
    valid[batch // 2:, tokens * 3 // 4:] = False  # ragged: a quarter of half the batch is padding
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        loss = model(x, valid, generator=generator).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def throughput(batch: int, tokens: int, depth: int, decoder_depth: int, steps: int) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    peak = dense_matmul_flops()
    model = make(tokens, depth, decoder_depth)
    step = step_fn(model, batch, tokens)
    step()  # warm-up: allocations, optimiser state
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - start) / steps
    return {"step_s": seconds, "samples_per_s": batch / seconds, "step_flops": flops,
            "achieved_flops": flops / seconds, "matmul_flops": peak}


def scaling_child(tokens: int, batch: int, depth: int, decoder_depth: int) -> dict:
    model = make(tokens, depth, decoder_depth)
    step = step_fn(model, batch, tokens)
    step()
    start = time.perf_counter()
    step()
    return {"tokens": tokens, "step_s": time.perf_counter() - start,
            "peak_mb": peak_rss_mb()}


def _child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        tokens, batch, depth, decoder_depth = map(int, sys.argv[2:6])
        print(json.dumps(scaling_child(tokens, batch, depth, decoder_depth) if tokens else
                         {"peak_mb": peak_rss_mb()}))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--decoder-depth", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--scaling-batch", type=int, default=2)
    args = parser.parse_args()

    print(f"# torch {torch.__version__}, {torch.get_num_threads()} threads; encoder 1024 x depth {args.depth}, "
          f"decoder 512 x depth {args.decoder_depth}, 16 heads")
    result = throughput(16, 256, args.depth, args.decoder_depth, args.steps)
    print(f"batch 16 x 256 tokens: {result['step_s']:.3f} s/step, {result['samples_per_s']:.1f} samples/s, "
          f"{result['achieved_flops'] / 1e9:.1f} GFLOP/s achieved vs {result['matmul_flops'] / 1e9:.1f} GFLOP/s "
          f"dense matmul = {result['achieved_flops'] / result['matmul_flops']:.0%} "
          f"({result['step_flops'] / 1e9:.1f} GFLOP per step)")

    base = _child("0", "0", "0", "0")["peak_mb"]
    rows = [_child(str(t), str(args.scaling_batch), str(args.depth), str(args.decoder_depth))
            for t in (256, 1024, 4096)]
    print(f"\nbatch {args.scaling_batch}: tokens, step time, peak memory above imports (model and AdamW state "
          f"included), memory added per added token vs the previous size")
    previous = None
    for row in rows:
        mem = row["peak_mb"] - base
        added = ""
        if previous is not None:
            added = f"+{mem - previous[1]:.0f} MB for +{row['tokens'] - previous[0]} tokens = " \
                    f"{(mem - previous[1]) / (row['tokens'] - previous[0]):.2f} MB/token"
        print(f"{row['tokens']:6d} {row['step_s']:8.3f} s {mem:8.0f} MB  {added}")
        previous = (row["tokens"], mem)


if __name__ == "__main__":
    main()
