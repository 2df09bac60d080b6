"""SEAL's subset selection (lvu/models/seal.py), measured side by side in one run (figures and machine:
benchmarks/README.md).

1. Global selection time against the number of candidate tokens (1k to 100k) at budget 16, and against the budget
   (16 to 450) at 10k candidates: the greedy makes B passes of one matrix-vector product over the candidates, so time
   should grow linearly in both. Tokens are 256 wide (a BLIP-2 / CLIP projection width). Median of interleaved rounds.
2. Streaming selection's peak memory against the video's length: windows of 1000 tokens arrive one at a time (made
   on the fly, as token shards would be read), budget 16; each length in a fresh process, peak RSS minus the RSS
   once the process is ready. Memory should not grow with the number of windows; the global selection over the
   same tokens (all held at once) is measured beside it.
3. Extraction throughput per stage (lvu/models/seal_extract.py): seconds per video for scene, object and action
   tokens alone, against the frames decoded per video (32 to 128), with tiny random models (a 64-pixel CLIP, SAM2
   and YOLOS) on 64 x 64 frames. Tiny models make this a measure of lvu's own work around the model calls (point
   batches, mask filters, NMS, crops, tracking), not of real-model throughput; the growth with frames is the point.

    python benchmarks/bench_seal.py
    python benchmarks/bench_seal.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _memory import peak_rss_mb, rss_mb

from lvu.models.clip_encoders import ClipEncoder
from lvu.models.seal import SelectionConfig, StreamingSelector, select
from lvu.models.seal_extract import DetectionConfig, Detector, ExtractionConfig, Extractor, MaskProposer
from lvu.models.seal_masks import MaskGenerationConfig
from lvu.models.seal_tiny import save_tiny_clip, save_tiny_detector, save_tiny_sam2
from lvu.models.seal_tracks import TrackerConfig

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


def extraction_part(rounds: int) -> None:
    cpu = torch.device("cpu")
    masks = MaskGenerationConfig(points_per_side=16, points_per_batch=128, pred_iou_threshold=0.0,
                                 stability_threshold=0.0, stability_offset=0.0)
    detection = DetectionConfig(score_threshold=0.0, max_per_frame=5)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        encoder = ClipEncoder.from_pretrained(save_tiny_clip(folder / "clip", width=64, image_size=64))
        proposer = MaskProposer.from_pretrained(save_tiny_sam2(folder / "sam2"), masks, cpu, torch.float32)
        detector = Detector.from_pretrained(save_tiny_detector(folder / "det"), detection, cpu, torch.float32)
        frames_per_video = (32, 64, 128)
        times: dict[tuple[str, int], list[float]] = {}
        for _ in range(rounds):
            for count in frames_per_video:
                frames = torch.randint(0, 255, (count, 64, 64, 3), dtype=torch.uint8)
                stamps = torch.arange(count, dtype=torch.float64)
                for kind in ("scene", "object", "action"):
                    cfg = ExtractionConfig(kinds=[kind], scene_frames=count // 2, keyframes=count // 8,
                                           masks=masks, detection=detection,
                                           tracking=TrackerConfig(min_length=4, max_length=16, max_cost=1.0))
                    extractor = Extractor(cfg, encoder, proposer, detector)
                    start = time.perf_counter()
                    extractor.extract(frames, stamps, float(count))
                    times.setdefault((kind, count), []).append(time.perf_counter() - start)
    print("\n| stage | frames per video | scene frames / keyframes | s per video | vs 32 frames |")
    print("|---|---|---|---|---|")
    for kind in ("scene", "object", "action"):
        base = statistics.median(times[(kind, frames_per_video[0])])
        for count in frames_per_video:
            t = statistics.median(times[(kind, count)])
            print(f"| {kind} | {count} | {count // 2} / {count // 8} | {t:.3f} | {t / base:.1f}x |")


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
    extraction_part(args.rounds)


if __name__ == "__main__":
    main()
