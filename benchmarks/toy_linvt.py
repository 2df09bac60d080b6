"""Toy reproduction of LinVT's ablations on synthetic video QA, over several seeds.

The paper (Gao et al.): SVR + TTA (the ``multi_c`` variant) beats averaging each frame's tokens into one
(``avg``, Table 2), and TTA's text conditioning helps (Table 5). Here: one tiny random frozen Qwen2-VL host, the
tests' (``lvu.models.vlm.tiny.save_tiny_host``: hidden 64, one LLM layer, 32-px frames, 16 tokens per frame),
48 synthetic 12-24 s videos of 64x48 px (``lvu data synth``), and stage 2 (``linvt/instruct``: LinVT + LoRA on the
host LLM, ``init.required=false``) trained with ``lvu fit`` (in-process) for a fixed number of steps per configuration
and seed; the host and the data are the same for every run, the seed changes LinVT's and LoRA's initialisation and
the data order.

Every video gives two questions whose answer is one of the six places (the synth scene types): "Which place is
shown first?" (the first act) and "Which place is shown last?" (the third act), written as the sample's first (and
only) exchange, from the ground truth in the json's ``synth`` field. The answer depends on the video and, for one
video, on the question: that is what text-conditioned aggregation could use. Eight uniform frames per video in
training and evaluation; 36 videos train (72 samples, 18 steps of 4 per epoch), 12 are held out (24 samples).

The host's random ``lm_head`` is scaled by 25 (:func:`scale_output_layer`): at the tests' initialisation the frozen
head caps the answer loss at about 4.5 nats per token whatever LinVT and LoRA learn. LinVT is 1 layer, 2 heads,
top-k 32 of the 128 frame tokens, queries [8, 4, 2] (14 video tokens; ``avg`` gives 8, one per frame); AdamW at
3e-3 (the tests' rate), 10 warm-up steps, cosine to zero at the last step.

Metrics on the held-out videos, after the last step:

* ``val/loss``: the task's own validation loss (next-token cross-entropy on the answer tokens and end-of-turn),
  read from the run's ``metrics.csv``;
* accuracy: the place whose answer has the highest likelihood among the six (chance 16.7%; computed here with the
  task's own prompt builder, ``llm_inputs``, so the prompts are the training ones);
* the same two on a *shuffled-video* copy of the held-out set (each question paired with another held-out video):
  if the model uses the video, loss rises and accuracy falls towards chance there.

    python benchmarks/toy_linvt.py --seeds 0 1 2 --out runs/toy_linvt
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import shutil
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from lvu.cli import main as lvu
from lvu.config import load_recipe
from lvu.data.shards import iter_samples, resolve_shards, write_shard
from lvu.data.synth import SCENE_NAMES, SynthConfig, synthesize
from lvu.models.vlm.tiny import FRAME, save_tiny_host
from lvu.tasks.host_lm import host_lm_data
from lvu.tasks.host_lm.conversation import IGNORE, Conversation, Turn
from lvu.tasks.linvt import LinVTTask

VIDEOS = SynthConfig(min_seconds=12, max_seconds=24, fps=8, width=64, height=48)  # tests/conftest.py SMALL_VIDEOS
QUESTIONS = {"first": ("Which place is shown first?", 0), "last": ("Which place is shown last?", 2)}
CONFIGS = {  # name -> (run folder, overrides)
    "SVR+TTA, text on (multi_c)": ("multi_c", ["model.variant=multi_c", "model.text_conditioning=true"]),
    "SVR+TTA, text off": ("multi_c_text_off", ["model.variant=multi_c", "model.text_conditioning=false"]),
    "avg (one token per frame)": ("avg", ["model.variant=avg"]),
}
BASELINE = "avg (one token per frame)"
HEAD_SCALE = 25.0


def scale_output_layer(host: Path, factor: float) -> None:
    """Multiply the host's (untied, frozen) ``lm_head`` by ``factor``. At the random initialisation (std 0.02, width
    64) no hidden state can raise a token's logit above about 1.3, so the answer loss could not fall below about 4.5
    nats per token whatever LinVT and LoRA learn; scaled, the frozen head can express confident answers."""
    weights = load_file(host / "model.safetensors")
    weights["lm_head.weight"] = weights["lm_head.weight"] * factor
    save_file(weights, host / "model.safetensors", metadata={"format": "pt"})


def prepare(out: Path, videos: int, train_videos: int) -> dict[str, Path]:
    """The host, and train / val / shuffled-video val shards of (video, question, place) samples."""
    host = out / "host"
    if not (host / "config.json").exists():
        save_tiny_host("qwen2_vl", host)
        scale_output_layer(host, HEAD_SCALE)
    raw = out / "raw"
    if not (raw / "manifest.json").exists():
        synthesize(raw, videos, seed=0, cfg=VIDEOS, maxcount=16, quiet=True)
    items = [(s["__key__"], s["mp4"], json.loads(s["json"])) for s in iter_samples(resolve_shards(str(raw)))]
    splits = {"train": items[:train_videos], "val": items[train_videos:]}
    held = splits["val"]
    # Shuffled control: each held-out question gets the next held-out video (a derangement of the videos).
    splits["val_shuffled"] = [(key, held[(i + 1) % len(held)][1], ann) for i, (key, _, ann) in enumerate(held)]
    paths = {"host": host}
    for split, rows in splits.items():
        samples = []
        for key, mp4, ann in rows:
            places = [act["scene_type"] for act in ann["synth"]["acts"]]
            for name, (question, act) in QUESTIONS.items():
                talk = [{"from": "human", "value": f"<video>\n{question}"}, {"from": "gpt", "value": places[act]}]
                samples.append((f"{key}_{name}", {"mp4": mp4, "json": {"conversations": talk}}))
        write_shard(out / split / "shard-000000.tar", samples)
        paths[split] = out / split
    return paths


def overrides(paths: dict[str, Path], run_dir: Path, seed: int, config: list[str], steps: int) -> list[str]:
    return [f"host.path={paths['host']}", f"data.train={paths['train']}", f"data.val={paths['val']}",
            f"run_dir={run_dir}", f"seed={seed}", "init.required=false", "trainer=cpu", "trainer.precision=32-true",
            f"data.frame_size={FRAME}", "data.batch_size=4", "data.eval_batch_size=4", "data.num_workers=0",
            "data.sampler.name=uniform", "data.sampler.num_frames=8", "data.eval_frames=8",
            "model.layers=1", "model.heads=2", "model.top_k=32", "model.queries=[8,4,2]",
            "optim.lr=3e-3", "optim.scheduler.warmup_steps=10", f"trainer.max_steps={steps}",
            "trainer.max_epochs=null", "trainer.num_sanity_val_steps=0", "trainer.check_val_every_n_epoch=4",
            "trainer.progress_bar=none", "trainer.log_every_n_steps=6", "trainer.enable_model_summary=false",
            "trainer.loggers=[csv]", *config]


def logged_val_loss(run_dir: Path, steps: int) -> float | None:
    """``val/loss`` logged after the last step (None when the last step did not end a validated epoch)."""
    with (run_dir / "logs" / "csv" / "version_0" / "metrics.csv").open() as f:
        rows = [float(r["val/loss"]) for r in csv.DictReader(f) if r.get("val/loss") and int(r["step"]) == steps - 1]
    return rows[-1] if rows else None


@torch.no_grad()
def evaluate(args: list[str], run_dir: Path, shards: Path) -> dict[str, float]:
    """Mean answer loss (as ``val/loss``: per-batch token mean, equal batches) and six-way accuracy on ``shards``."""
    cfg = load_recipe("linvt/instruct", [*args, f"data.val={shards}"]).to_object()
    model = LinVTTask(cfg)
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and not [k for k in missing if model.saved_in_checkpoint(k)], unexpected
    model.eval()
    losses, correct, total = [], 0, 0
    for batch in host_lm_data(cfg).loader("val"):
        answers = [c.turns[-1].text for c in batch.conversations]
        visual = model.visual_tokens(batch)
        scores = []
        for place in SCENE_NAMES:  # log-likelihood of each candidate answer (all answer tokens and end-of-turn)
            asked = [Conversation([c.turns[0], Turn("assistant", place)]) for c in batch.conversations]
            inputs = model.llm_inputs(dataclasses.replace(batch, conversations=asked), visual, answers=True)
            logits = model.host(inputs.embeds, inputs.mask, None, inputs.positions).logits
            nll = F.cross_entropy(logits[:, :-1].transpose(1, 2), inputs.labels[:, 1:], reduction="none",
                                  ignore_index=IGNORE).sum(1)
            scores.append(-nll)
        predicted = torch.stack(scores, 1).argmax(1).tolist()
        correct += sum(SCENE_NAMES[p] == a for p, a in zip(predicted, answers, strict=True))
        total += len(answers)
        losses.append(float(model.losses(batch)["answer_loss"].value))
    return {"loss": statistics.mean(losses), "accuracy": 100.0 * correct / total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/toy_linvt")
    parser.add_argument("--steps", type=int, default=288, help="training steps (18 per epoch of 72 samples)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the ops are tiny: 1 is fastest)")
    parser.add_argument("--videos", type=int, default=48)
    parser.add_argument("--train-videos", type=int, default=36)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    out = Path(args.out)
    paths = prepare(out, args.videos, args.train_videos)
    results: dict[str, dict[int, dict[str, float]]] = {}
    for name, (folder, config) in CONFIGS.items():
        results[name] = {}
        for seed in args.seeds:
            run_dir = out / "runs" / f"{folder}_seed{seed}"
            shutil.rmtree(run_dir, ignore_errors=True)  # an existing run dir would make `lvu fit` resume it
            run_args = overrides(paths, run_dir, seed, config, args.steps)
            t0 = time.perf_counter()
            if lvu(["fit", "linvt/instruct", *run_args]) != 0:
                raise SystemExit(f"lvu fit failed for {name}, seed {seed}")
            fit_s = time.perf_counter() - t0
            matched, shuffled = evaluate(run_args, run_dir, paths["val"]), evaluate(run_args, run_dir,
                                                                                     paths["val_shuffled"])
            logged = logged_val_loss(run_dir, args.steps)
            if logged is None:  # --steps not a multiple of 4 epochs: the same loss, computed here
                print("no val/loss logged at the last step; using the script's own (same definition)")
            results[name][seed] = {"val_loss": matched["loss"] if logged is None else logged,
                                   "check_loss": matched["loss"],
                                   "accuracy": matched["accuracy"], "shuffled_loss": shuffled["loss"],
                                   "shuffled_accuracy": shuffled["accuracy"], "fit_s": fit_s}
            print(f"{name} seed {seed}: {results[name][seed]}", flush=True)
    report(results, args, time.perf_counter() - start, out)


def _cell(values: list[float], digits: int) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {std:.{digits}f}"


def report(results, args, seconds: float, out: Path) -> None:
    seeds = args.seeds
    baseline = statistics.mean(results[BASELINE][s]["val_loss"] for s in seeds)
    print(f"\n# {len(seeds)} seeds {seeds}; {args.steps} steps; held-out answer loss and six-way accuracy "
          f"(chance 16.7%); {seconds:.0f} s")
    print(f"{'config':28s}{'val/loss per seed':>20s}{'mean ± std':>16s}{'vs avg':>8s}{'acc % per seed':>18s}"
          f"{'mean ± std':>14s}{'shuffled loss':>16s}{'shuffled acc %':>16s}")
    table = {}
    for name, per_seed in results.items():
        rows = [per_seed[s] for s in seeds]
        loss = [r["val_loss"] for r in rows]
        table[name] = {"per_seed": per_seed, "val_loss_mean": statistics.mean(loss),
                       "ratio_vs_avg": statistics.mean(loss) / baseline}
        accuracy = [r["accuracy"] for r in rows]
        print(f"{name:28s}{' '.join(f'{v:.3f}' for v in loss):>20s}{_cell(loss, 3):>16s}"
              f"{statistics.mean(loss) / baseline:>8.2f}{' '.join(f'{v:.1f}' for v in accuracy):>18s}"
              f"{_cell(accuracy, 1):>14s}"
              f"{_cell([r['shuffled_loss'] for r in rows], 3):>16s}"
              f"{_cell([r['shuffled_accuracy'] for r in rows], 1):>16s}")
    (out / "toy_linvt.json").write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
