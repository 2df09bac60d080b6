"""FiLA-Video's costs, measured side by side in one run (figures and machine: benchmarks/README.md).

1. Scene selection (Sec. 3.1: K-means, representatives, similar supplements; ``lvu.models.fila.select_scenes``)
   against the number of candidate frames, 96 to 1024, at SigLIP-so400m's width (1152), k = 32 scenes of r + 1 = 3
   frames, the recipe's 10 random starts. Candidates are synthetic frame features with scene structure (40 scenes
   of random lengths, small noise around each scene's mean), so K-means has clusters to find, as in a real video.
   Time: median over interleaved rounds in this process; memory: peak RSS of a fresh process per size minus the same
   process's RSS once its inputs exist. Selection should be linear in the candidates: every step (distances to 32
   centres, representatives, similarities to 32 representatives) is ``O(candidates x 32 x width)``.
2. The merge's share of a stage-4 step: one ``fila/stage4`` training step (96 frames, every 3 one scene merged to 32;
   forward, backward, AdamW over every trained part) on a CPU-sized composed host, against the weighted-fusion merge's
   own forward + backward on the exact tensor it receives in that step, and against the same step with temporal
   averaging (a merge with no parameters). Interleaved rounds, medians.

    python benchmarks/bench_fila.py                          # both parts
    python benchmarks/bench_fila.py --part selection --rounds 5
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

from lvu.models.fila import SceneSelectionConfig, select_scenes

WIDTH = 1152  # SigLIP-so400m's hidden size, the width LLaVA-OneVision's frame features have
SIZES = (96, 192, 384, 768, 1024)


def candidate_features(frames: int, seed: int = 0) -> torch.Tensor:
    """``[1, frames, WIDTH]``: 40 scenes of random lengths, each frame its scene's mean plus 10% noise."""
    generator = torch.Generator().manual_seed(seed)
    cuts = torch.randperm(frames - 1, generator=generator)[:39].add(1).sort().values
    scene = torch.bucketize(torch.arange(frames), cuts, right=True)
    means = torch.randn(40, WIDTH, generator=generator)
    return (means[scene] + 0.1 * torch.randn(frames, WIDTH, generator=generator))[None]


def select(features: torch.Tensor) -> None:
    select_scenes(features, torch.ones(features.shape[:2], dtype=torch.bool), SceneSelectionConfig())


def selection_memory(frames: int) -> dict:
    """Run in a fresh process (``--memory-child``): one selection's peak memory above its inputs."""
    features = candidate_features(frames)
    before = rss_mb()
    select(features)
    return {"frames": frames, "peak_mb": peak_rss_mb() - before}


def selection_part(rounds: int) -> None:
    inputs = {n: candidate_features(n) for n in SIZES}
    for n in SIZES:  # warm-up
        select(inputs[n])
    times: dict[int, list[float]] = {n: [] for n in SIZES}
    for _ in range(rounds):
        for n in SIZES:
            start = time.perf_counter()
            select(inputs[n])
            times[n].append(time.perf_counter() - start)
    memory = {}
    for n in SIZES:
        out = subprocess.run([sys.executable, __file__, "--memory-child", str(n)], capture_output=True, text=True,
                             check=True)
        memory[n] = json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]
    base = statistics.median(times[SIZES[0]])
    print(f"\n# scene selection, width {WIDTH}, k=32, r=2, 10 restarts; median of {rounds} rounds; "
          f"torch threads {torch.get_num_threads()}")
    print("| candidates | time | vs 96 | candidates vs 96 | time per candidate | peak MB above inputs |")
    print("|---|---|---|---|---|---|")
    for n in SIZES:
        t = statistics.median(times[n])
        print(f"| {n} | {1000 * t:.1f} ms | {t / base:.2f}x | {n / SIZES[0]:.2f}x | {1e6 * t / n:.0f} us "
              f"| {memory[n]:.1f} |")


# -- 2. the merge inside a stage-4 step --------------------------------------------------------------------------

FRAME = 64


def save_parts(out: Path) -> tuple[Path, Path]:
    """A CPU-sized composed host: SigLIP 4 layers x 256 at 64 px / patch 8 (64 patches per frame), Qwen2 4 layers x
    512 (the quickstart's tokenizer)."""
    from lvu.models.vlm.tiny import save_tiny_parts

    return save_tiny_parts(out, seed=0, vision_sizes=dict(hidden_size=256, intermediate_size=1024,
                                                          num_hidden_layers=4, num_attention_heads=4,
                                                          image_size=FRAME, patch_size=8),
                           text_sizes=dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=4,
                                           num_attention_heads=8, num_key_value_heads=2,
                                           max_position_embeddings=2048))


def stage4(parts: tuple[Path, Path], merge: str):
    from lvu.config import load_recipe
    from lvu.tasks.fila import FiLATask

    vision, llm = parts
    cfg = load_recipe("fila/stage4", [f"host.vision={vision}", f"host.llm={llm}", "data.train=unused",
                                      "init.from=null", "init.required=false", f"data.frame_size={FRAME}",
                                      f"model.merge={merge}", "prompt.time_instruction=none"]).to_object()
    torch.manual_seed(0)
    task = FiLATask(cfg).train()
    optimizer = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=1e-6)
    return task, optimizer


def video_batch(frames: int = 96):
    from lvu.tasks.host_lm.batch import MediaBatch
    from lvu.tasks.host_lm.conversation import Conversation, Turn

    generator = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (1, frames, FRAME, FRAME, 3), dtype=torch.uint8, generator=generator)
    talk = Conversation([Turn("user", "Describe the video in detail."),
                         Turn("assistant", "A grey square moves over three places, one after another.")])
    return MediaBatch(keys=["v0"], kinds=["video"], frames=pixels, frame_mask=torch.ones(1, frames, dtype=torch.bool),
                      timestamps=torch.arange(frames, dtype=torch.float32)[None] / 2,
                      durations=torch.tensor([frames / 2]), conversations=[talk], captions=[None],
                      pad=torch.zeros(1, dtype=torch.bool))


def merge_part(rounds: int) -> None:
    batch = video_batch()
    with tempfile.TemporaryDirectory() as folder:
        parts = save_parts(Path(folder))
        fused, fused_opt = stage4(parts, "weighted_fusion")
        averaged, averaged_opt = stage4(parts, "temporal_average")
    seen: list[torch.Tensor] = []
    fused.merge.register_forward_pre_hook(lambda _module, args: seen.append(args[0].detach()))

    def step(task, optimizer) -> None:
        terms = task.losses(batch)
        optimizer.zero_grad(set_to_none=True)
        sum(t.weight * t.value for t in terms.values()).backward()
        optimizer.step()

    step(fused, fused_opt)
    step(averaged, averaged_opt)
    scenes = seen[-1].clone().requires_grad_(True)

    def merge_alone() -> None:
        fused.merge(scenes).square().mean().backward()

    merge_alone()
    runs = {"stage-4 step, weighted fusion": lambda: step(fused, fused_opt),
            "stage-4 step, temporal averaging": lambda: step(averaged, averaged_opt),
            "weighted fusion alone (forward + backward)": merge_alone}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    trained = sum(p.numel() for p in fused.parameters() if p.requires_grad)
    print(f"\n# stage-4 step: 96 frames of {FRAME} px -> 32 scenes, merge input {tuple(scenes.shape)} "
          f"(after the projector), {trained / 1e6:.1f}M trained parameters, merge weight "
          f"{fused.merge.weight.numel() / 1e6:.2f}M; median of {rounds} rounds; "
          f"torch threads {torch.get_num_threads()}")
    step_time = statistics.median(times["stage-4 step, weighted fusion"])
    print("| what | time | share of the weighted-fusion step |\n|---|---|---|")
    for name, values in times.items():
        t = statistics.median(values)
        print(f"| {name} | {1000 * t:.1f} ms | {100 * t / step_time:.2f}% |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["selection", "merge", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(selection_memory(args.memory_child)))
        return
    if args.part in ("selection", "both"):
        selection_part(args.rounds)
    if args.part in ("merge", "both"):
        merge_part(args.rounds)


if __name__ == "__main__":
    main()
