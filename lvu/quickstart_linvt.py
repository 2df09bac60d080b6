"""``lvu quickstart linvt``: both LinVT stages on synthetic videos with a tiny random host, in minutes on a CPU.

1. synthesise short captioned videos with LLaVA-format questions (train and val);
2. save a tiny random Qwen2-VL host (``save_pretrained``; loaded back with ``from_pretrained`` like a real one);
3. stage 1, ``linvt.align`` (``recipes/quickstart/linvt_align.yaml``): only LinVT trains, caption + contrastive;
4. stage 2, ``linvt.instruct`` (``recipes/quickstart/linvt_instruct.yaml``): LoRA + LinVT from stage 1;
5. ``predict`` on the val videos, ``lvu ckpt export`` of stage 2, and a summary.

The host is random, so the answers are not meant to be right: the point is every step of the real path running
end to end (recipes, shards, both stages, generation, export). Losses go down; they are in the summary.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from lvu.config import load_recipe
from lvu.data.synth import SynthConfig, synthesize
from lvu.models.vlm.tiny import save_tiny_host
from lvu.quickstart import quiet_lightning, step_printer
from lvu.train.run import run


@dataclass
class LinVTQuickstartConfig:
    """Sizes of the LinVT quickstart; the defaults take a few minutes on 2 CPU cores."""

    train_videos: int = 32
    val_videos: int = 8
    videos: SynthConfig = field(default_factory=lambda: SynthConfig(min_seconds=12, max_seconds=24, fps=8,
                                                                     width=64, height=48))
    align_epochs: int = 4
    instruct_epochs: int = 4
    host_family: str = "qwen2_vl"
    seed: int = 0
    workers: int = 2


def _loss_curve(run_dir: Path) -> list[float]:
    with next((run_dir / "logs").rglob("metrics.csv")).open() as f:
        return [float(row["train/loss"]) for row in csv.DictReader(f) if row.get("train/loss")]


def run_linvt_quickstart(out: Path, cfg: LinVTQuickstartConfig | None = None, *,
                         console: Console | None = None) -> dict[str, Any]:
    """Run the pipeline into ``out``; returns (and writes) the summary."""
    from lvu.train.ckpt_cli import export_checkpoint

    cfg = cfg or LinVTQuickstartConfig()
    console = console or Console(stderr=True)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    step = step_printer(console, 6)

    step(1, "Synthesising captioned videos with questions")
    for offset, (split, count) in enumerate((("train", cfg.train_videos), ("val", cfg.val_videos))):
        synthesize(out / "videos" / split, count, seed=cfg.seed * 100 + offset, cfg=cfg.videos, maxcount=16,
                   workers=cfg.workers, quiet=True)
    data = [f"data.train={out / 'videos' / 'train'}", f"data.val={out / 'videos' / 'val'}", f"seed={cfg.seed}"]

    step(2, f"Saving a tiny random {cfg.host_family} host")
    host = save_tiny_host(cfg.host_family, out / "host", seed=cfg.seed)
    data.append(f"host.path={host}")

    step(3, f"Stage 1, linvt.align: LinVT alone on captions ({cfg.align_epochs} epochs)")
    align = load_recipe("quickstart/linvt_align", [*data, f"run_dir={out / 'runs' / 'align'}",
                                                   f"trainer.max_epochs={cfg.align_epochs}"])
    with quiet_lightning():
        aligned = run(align, "fit")
    align_ckpt = aligned.run_dir / "checkpoints" / "last.ckpt"

    step(4, f"Stage 2, linvt.instruct: LoRA + LinVT on questions ({cfg.instruct_epochs} epochs)")
    overrides = [*data, f"init.align={align_ckpt}", f"trainer.max_epochs={cfg.instruct_epochs}"]
    instruct = load_recipe("quickstart/linvt_instruct", [*overrides, f"run_dir={out / 'runs' / 'instruct'}"])
    with quiet_lightning():
        instructed = run(instruct, "fit")
    instruct_ckpt = instructed.run_dir / "checkpoints" / "last.ckpt"

    step(5, "Answering the val questions and exporting stage 2")
    predict = load_recipe("quickstart/linvt_instruct", [*overrides, f"data.predict={out / 'videos' / 'val'}",
                                                        f"run_dir={out / 'runs' / 'predict'}"])
    with quiet_lightning():
        predicted = run(predict, "predict", ckpt=str(instruct_ckpt), predictions=str(out / "answers.jsonl"))
    answers = [json.loads(line) for line in predicted.predictions.read_text().splitlines() if line.strip()]
    exported = export_checkpoint(instruct_ckpt, out / "export")
    for record in answers[:3]:
        console.print(f"      Q: {record['question']}\n      A: {record['answer']!r}")

    step(6, "Done")
    curves = {"align": _loss_curve(aligned.run_dir), "instruct": _loss_curve(instructed.run_dir)}
    summary = {
        "train_loss": {stage: {"first": c[0], "last": c[-1], "steps": len(c)} for stage, c in curves.items()},
        "answers": str(out / "answers.jsonl"), "export": exported["path"],
        "seconds": round(time.perf_counter() - start, 1), "config": asdict(cfg), "out": str(out),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    for stage, loss in summary["train_loss"].items():
        console.print(f"  {stage}: train loss {loss['first']:.3f} -> {loss['last']:.3f} over {loss['steps']} logged "
                      f"steps")
    console.print(f"summary: {out / 'summary.json'}  ({summary['seconds']:.0f} s)")
    return summary
