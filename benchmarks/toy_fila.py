"""FiLA-Video's Table 3 and Table 2 in miniature, over several seeds (design: benchmarks/README.md, written first).

Table 3 (merges at the same token budget): 8 uniform frames against 24 uniform frames in consecutive threes merged to
8 by weighted fusion, attention pooling, temporal averaging and bipartite soft matching (the paper: 32 against 96).
Table 2 (scene selection, inference only): the weighted-fusion models answering with consecutive threes of the 24
candidates, with clustering and similar supplements, and with clustering and dissimilar supplements.

The task: 6-second videos (8 fps, 48 frames, 32x32 px) of three acts in three grey places; three out of four show one
brief flash (2 frames) in red, green or blue; the question "What colour flashes?" has four answers (red, green, blue,
none). 8 uniform frames (every 6th) see the flash one time in three, so no model can do better than 50% with them;
every 24 uniform frames (every 2nd) contain one flash frame.

Model: a tiny composed host (random 2-layer SigLIP, 32 px, patch 4; random one-layer Qwen2, hidden 64) with
LLaVA-OneVision's video path (2x2 pooling, a newline token), vision encoder, projector, LLM and merge module all
trained (stage 4's parts) at one toy learning rate. Accuracy: the answer with the highest likelihood among the four.

    python benchmarks/toy_fila.py --seeds 0 1 2 --out runs/toy_fila
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lvu.cli import main as lvu
from lvu.config import load_recipe
from lvu.data.shards import write_shard
from lvu.data.video import encode_mp4
from lvu.models.vlm.tiny import FRAME, save_tiny_parts
from lvu.tasks.fila import FiLATask
from lvu.tasks.host_lm import host_lm_data
from lvu.tasks.host_lm.conversation import IGNORE, Conversation, Turn

FPS, SECONDS = 8, 6
BUDGET, CANDIDATES = 8, 24  # frames the uniform baseline sees; frames merged in threes to the same budget
QUESTION = "What colour flashes?"
ANSWERS = ["red", "green", "blue", "none"]
FLASH = {"red": (230, 30, 30), "green": (30, 210, 30), "blue": (40, 40, 240)}
# Places are grey levels: the flash is the only colour a video ever shows (design v3, see benchmarks/README.md).
PLACES = [(g, g, g) for g in (30, 65, 100, 135, 170, 205)]
MERGES = {  # name -> (run folder, overrides): Table 3's rows
    f"uniform-{BUDGET}": ("uniform", ["scenes.train=base", "scenes.eval=base", f"data.sampler.num_frames={BUDGET}",
                                      f"data.eval_frames={BUDGET}", "parts.method.mode=frozen"]),
    "weighted fusion": ("weighted_fusion", ["model.merge=weighted_fusion"]),
    # Not in the paper's table: all candidate frames unmerged (3x the tokens), the reference for what they hold.
    f"uniform-{CANDIDATES} (3x tokens)": ("all_candidates", ["scenes.train=base", "scenes.eval=base",
                                                            "parts.method.mode=frozen"]),
    "attention pooling": ("attention_pooling", ["model.merge=attention_pooling"]),
    "temporal averaging": ("temporal_average", ["model.merge=temporal_average"]),
    "BSM": ("bsm", ["model.merge=bsm"]),
}
SELECTIONS = {  # Table 2's rows, at inference with the weighted-fusion models
    "consecutive threes (uniform)": ["scenes.eval=consecutive"],
    "clustering + similar": ["scenes.eval=selection", "scenes.supplement=similar"],
    "clustering + dissimilar": ["scenes.eval=selection", "scenes.supplement=dissimilar"],
}


def make_video(rng: np.random.Generator) -> tuple[bytes, str]:
    """Three acts in three places with a moving square, and (3 times in 4) one 2-frame flash of one colour."""
    frames = SECONDS * FPS
    places = rng.choice(len(PLACES), 3, replace=False)
    cuts = np.sort(rng.choice(np.arange(8, frames - 8), 2, replace=False))
    answer = ANSWERS[int(rng.integers(4))]
    start = int(rng.integers(0, frames - 2))
    x, y, dx, dy = (float(v) for v in rng.uniform([4, 4, -1.5, -1.5], [24, 24, 1.5, 1.5]))
    video = []
    for i in range(frames):
        act = int(np.searchsorted(cuts, i, side="right"))
        frame = np.empty((FRAME, FRAME, 3), dtype=np.float32)
        frame[:] = PLACES[places[act]]
        frame += rng.normal(0, 4, frame.shape)  # texture noise
        x, y = (x + dx) % (FRAME - 6), (y + dy) % (FRAME - 6)
        frame[int(y):int(y) + 6, int(x):int(x) + 6] = (220, 220, 220)
        if answer != "none" and start <= i < start + 2:
            frame = 0.3 * frame + 0.7 * np.asarray(FLASH[answer], dtype=np.float32)
        video.append(np.clip(frame, 0, 255).astype(np.uint8))
    return encode_mp4(video, FPS), answer


def make_split(out: Path, count: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    samples = []
    for n in range(count):
        mp4, answer = make_video(rng)
        talk = [{"from": "human", "value": f"<video>\n{QUESTION}"}, {"from": "gpt", "value": answer}]
        samples.append((f"v{n:05d}", {"mp4": mp4, "json": {"conversations": talk}}))
    write_shard(out / "shard-000000.tar", samples)
    return out


def prepare(out: Path, train: int, test: int) -> dict[str, Path]:
    paths = {"host": out / "host"}
    if not (paths["host"] / "qwen2" / "config.json").exists():
        save_tiny_parts(paths["host"], seed=0)
    for split, count, seed in (("train", train, 100), ("test", test, 200)):
        paths[split] = out / "data" / split
        if not (paths[split] / "shard-000000.tar").exists():
            make_split(paths[split], count, seed)
    return paths


def overrides(paths: dict[str, Path], run_dir: Path, seed: int, steps: int, config: list[str], lr: float,
              video_pool: int) -> list[str]:
    return [f"host.vision={paths['host'] / 'siglip'}", f"host.llm={paths['host'] / 'qwen2'}",
            f"data.train={paths['train']}", f"run_dir={run_dir}", f"seed={seed}", "init.from=null",
            "init.required=false", f"data.sampler.num_frames={CANDIDATES}", f"data.eval_frames={CANDIDATES}",
            "data.batch_size=4", "data.eval_batch_size=4", "data.num_workers=0", f"scenes.scenes={BUDGET}",
            "prompt.time_instruction=none",
            f"parts.vision.lr={lr}", f"parts.projector.lr={lr}", f"parts.llm.lr={lr}", f"parts.method.lr={lr}",
            f"host.video_pool={video_pool}",
            "optim.scheduler.warmup_steps=10", f"trainer.max_steps={steps}", "trainer.max_epochs=null",
            "trainer.num_sanity_val_steps=0", "trainer.log_every_n_steps=10", "trainer.loggers=[csv]",
            "trainer.checkpoint.every_n_train_steps=null", *config]


@torch.no_grad()
def accuracy(args: list[str], run_dir: Path, test: Path, extra: list[str]) -> float:
    """Four-way accuracy on ``test``: the answer whose tokens (and end-of-turn) the model finds most likely."""
    cfg = load_recipe("quickstart/fila_stage4", [*args, *extra, f"data.val={test}"]).to_object()
    model = FiLATask(cfg)
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and not [k for k in missing if model.saved_in_checkpoint(k)], unexpected
    model.eval()
    right = total = 0
    for batch in host_lm_data(cfg).loader("val"):
        truth = [c.turns[-1].text for c in batch.conversations]
        visual = model.visual_tokens(batch)
        scores = []
        for answer in ANSWERS:
            asked = [Conversation([c.turns[0], Turn("assistant", answer)]) for c in batch.conversations]
            inputs = model.llm_inputs(dataclasses.replace(batch, conversations=asked), visual, answers=True)
            logits = model.host(inputs.embeds, inputs.mask, None, inputs.positions).logits
            scores.append(-F.cross_entropy(logits[:, :-1].transpose(1, 2), inputs.labels[:, 1:], reduction="none",
                                           ignore_index=IGNORE).sum(1))
        picked = torch.stack(scores, 1).argmax(1).tolist()
        keep = (~batch.pad).tolist()
        right += sum(ANSWERS[p] == t for p, t, k in zip(picked, truth, keep, strict=True) if k)
        total += sum(keep)
    return 100.0 * right / total


def _cell(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {std:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/toy_fila")
    parser.add_argument("--steps", type=int, default=1000, help="training steps of 4 videos (200 videos: 20 epochs)")
    parser.add_argument("--train", type=int, default=200)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-3, help="one learning rate for every trained part")
    parser.add_argument("--video-pool", type=int, default=2, help="each frame's 8x8 patch grid pooled by this factor")
    parser.add_argument("--rows", nargs="+", choices=list(MERGES), default=[m for m in MERGES if "3x" not in m],
                        help="Table 3 rows to run (default: all but the unmerged reference, which costs 3x a row)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    out = Path(args.out)
    paths = prepare(out, args.train, args.test)
    table3: dict[str, list[float]] = {name: [] for name in args.rows}
    table2: dict[str, list[float]] = {name: [] for name in SELECTIONS}
    for seed in args.seeds:
        for name in args.rows:
            folder, config = MERGES[name]
            run_dir = out / "runs" / f"{folder}_seed{seed}"
            shutil.rmtree(run_dir, ignore_errors=True)
            run_args = overrides(paths, run_dir, seed, args.steps, config, args.lr, args.video_pool)
            t0 = time.perf_counter()
            if lvu(["fit", "quickstart/fila_stage4", *run_args]) != 0:
                raise SystemExit(f"lvu fit failed for {name}, seed {seed}")
            table3[name].append(accuracy(run_args, run_dir, paths["test"], []))
            print(f"{name} seed {seed}: {table3[name][-1]:.1f}% ({time.perf_counter() - t0:.0f} s)", flush=True)
            if name == "weighted fusion":
                for selection, extra in SELECTIONS.items():
                    table2[selection].append(accuracy(run_args, run_dir, paths["test"], extra))
                    print(f"  {selection}: {table2[selection][-1]:.1f}%", flush=True)
    seconds = time.perf_counter() - start
    print(f"\n# seeds {args.seeds}; {args.steps} steps at lr {args.lr:g}; frames pooled {args.video_pool}x"
          f"{args.video_pool}; {args.train} train / {args.test} test videos; four-way "
          f"accuracy (chance 25%; uniform-{BUDGET} cannot exceed 50%); {seconds:.0f} s")
    print(f"| Table 3 ({CANDIDATES} -> {BUDGET}, same tokens) | accuracy per seed (%) | mean ± sd |\n|---|---|---|")
    for name, values in ((n, v) for n, v in table3.items() if v):
        print(f"| {name} | {' '.join(f'{v:.1f}' for v in values)} | {_cell(values)} |")
    print("\n| Table 2 (weighted fusion, inference) | accuracy per seed (%) | mean ± sd |\n|---|---|---|")
    for name, values in ((n, v) for n, v in table2.items() if v):
        print(f"| {name} | {' '.join(f'{v:.1f}' for v in values)} | {_cell(values)} |")


if __name__ == "__main__":
    main()
