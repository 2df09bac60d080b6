"""``lvu eval`` on 2 processes against 1, on CPU: questions per second, measured side by side in one run (figures
and machine: benchmarks/README.md).

The same evaluation (LVBench's prompt and scorer, greedy, 16 new tokens) of the uniform baseline on a CPU-sized
composed host (SigLIP 256 wide, 2 layers; Qwen2 256 wide, 4 layers) over synthetic videos (each with 3-4 questions),
run as the user runs it: the whole ``lvu eval`` command in a fresh process, start-up included, 1 process with all
cores against ``trainer=ddp`` with 2 processes of one thread each. Rounds alternate the two, and each round checks that
both wrote the same answers (each video is asked alone, so the split over ranks cannot change an answer). The
answering time (from the first answer to the last) is reported beside the whole command's, since start-up (imports,
the model load, the process group) does not shrink with more processes; it runs from the first answer on disk to
the command's end (the scoring included, a fraction of a second).

    python benchmarks/bench_eval.py                      # 24 videos, 2 rounds
    python benchmarks/bench_eval.py --videos 48 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lvu.data.synth import SynthConfig, synthesize
from lvu.models.vlm.tiny import FRAME, save_tiny_parts


def build(root: Path, videos: int) -> tuple[Path, Path, Path]:
    shards = root / "videos"
    synthesize(shards, videos, seed=0, cfg=SynthConfig(min_seconds=12, max_seconds=24, fps=8, width=64, height=48),
               maxcount=8, quiet=True)
    vision, llm = save_tiny_parts(root / "host", seed=0,
                                  vision_sizes=dict(hidden_size=256, intermediate_size=1024, num_attention_heads=4),
                                  text_sizes=dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                                                  num_attention_heads=4, num_key_value_heads=2))
    return shards, vision, llm


def run(shards: Path, vision: Path, llm: Path, folder: Path, processes: int, frames: int) -> dict:
    threads = max(1, (os.cpu_count() or 1) // processes)
    distributed = ["trainer=ddp", "trainer.accelerator=cpu", f"trainer.devices={processes}"] if processes > 1 else \
        ["trainer=cpu"]
    command = [sys.executable, "-m", "lvu", "eval", "uniform/instruct", "host.path=null", f"host.vision={vision}",
               f"host.llm={llm}", f"data.predict={shards}", f"run_dir={folder}", "eval=lvbench", *distributed,
               f"data.frame_size={FRAME}", f"data.eval_frames={frames}", "data.eval_batch_size=1",
               "data.num_workers=0", "trainer.progress_bar=none", "trainer.precision=32-true",
               f"trainer.threads={threads}"]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = None  # when the first answer reached the disk: the start-up is over
    while process.poll() is None:
        if first is None and any(f.stat().st_size for f in (folder / "answers").glob("answers-rank*.jsonl")):
            first = time.perf_counter()
        time.sleep(0.02)
    end = time.perf_counter()
    if process.returncode != 0:
        raise SystemExit(f"lvu eval failed ({process.returncode}):\n{process.stderr.read()[-3000:]}")
    answers = [json.loads(line) for line in (folder / "answers.jsonl").read_text().splitlines()]
    return {"wall": end - start, "questions": len(answers), "answers": answers, "answering": end - (first or start)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        root = Path(tmp)
        shards, vision, llm = build(root, args.videos)
        timings: dict[int, list[dict]] = {1: [], 2: []}
        for r in range(args.rounds):
            for processes in (1, 2):
                result = run(shards, vision, llm, root / f"r{r}-p{processes}", processes, args.frames)
                timings[processes].append(result)
                print(f"round {r}: {processes} process(es): {result['questions']} questions, whole command "
                      f"{result['wall']:.1f} s, answering {result['answering']:.1f} s", flush=True)
            same = timings[1][-1]["answers"] == timings[2][-1]["answers"]
            print(f"round {r}: the two runs' answers are {'identical' if same else 'DIFFERENT'}", flush=True)
        questions = timings[1][0]["questions"]
        print(f"\n{args.videos} videos, {questions} questions, {args.frames} frames each, cpu_count={os.cpu_count()}")
        print("| processes | whole command (s) | questions/s | answering (s) | questions/s answering |")
        print("|---|---|---|---|---|")
        medians = {}
        for processes, runs in timings.items():
            wall = statistics.median(r["wall"] for r in runs)
            answering = statistics.median(r["answering"] for r in runs)
            medians[processes] = (wall, answering)
            print(f"| {processes} | {wall:.1f} | {questions / wall:.2f} | {answering:.1f} | "
                  f"{questions / answering:.2f} |")
        print(f"\n2 processes vs 1: {medians[1][0] / medians[2][0]:.2f}x questions/s over the whole command, "
              f"{medians[1][1] / medians[2][1]:.2f}x while answering")


if __name__ == "__main__":
    main()
