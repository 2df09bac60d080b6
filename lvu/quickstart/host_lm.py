"""The quickstart of every video-LLM method on the host-LM layer: its stages on synthetic videos with a tiny random
host, in minutes on a CPU.

1. synthesise short captioned videos with multi-turn LLaVA-format conversations (train and val), and, for methods
   with image stages, an image of each (its middle frame) with a question about the place it shows;
2. save a tiny random host of the entry's family, or a tiny vision encoder and LLM to compose (``save_pretrained``;
   loaded back with ``from_pretrained`` like real ones);
3. run the entry's stages (``recipes/quickstart/<method>_*.yaml``) in order, each starting from the previous stage's
   checkpoint with ``init.from``;
4. answer the val questions with the last stage (``lvu predict``) and export it (``lvu ckpt export``);
5. print a table of each stage's training loss and write ``summary.json``.

The host is random, so the answers are not meant to be right: the point is every step of the real path running
end to end (recipes, shards, every stage, generation, export). Losses go down; they are in the summary.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rich.console import Console

from lvu.config import load_recipe
from lvu.data.shards import iter_samples, resolve_shards, write_shard
from lvu.data.synth import SynthConfig, synthesize
from lvu.data.video import VideoFile
from lvu.models.vlm.tiny import save_tiny_host, save_tiny_parts
from lvu.quickstart.common import loss_curve, quiet_lightning, step_printer, table
from lvu.quickstart.registry import Quickstart
from lvu.train.export import export_checkpoint
from lvu.train.run import run


@dataclass
class HostLMQuickstartConfig:
    """Sizes of a host-LM quickstart; the defaults take a minute or two per stage on 2 CPU cores."""

    train_videos: int = 32
    val_videos: int = 8
    videos: SynthConfig = field(default_factory=lambda: SynthConfig(min_seconds=12, max_seconds=24, fps=8,
                                                                     width=64, height=48))
    epochs: int | None = None  # None: each stage's recipe decides
    seed: int = 0
    workers: int = 2


def _stage_name(recipe: str) -> str:
    return recipe.rsplit("/", 1)[-1].split("_", 1)[-1]


def write_frame_images(videos: Path, out: Path) -> Path:
    """An image sample per synthetic video: its middle frame (PNG) with a LLaVA question about the place it shows
    and a caption, from the video's ground truth."""
    samples = []
    for raw in iter_samples(resolve_shards(str(videos))):
        annotation = json.loads(raw["json"])
        video = VideoFile(raw["mp4"])
        middle = video.info.num_frames // 2
        frame = video.read([middle])[0]
        acts = annotation["synth"]["acts"]
        place = next((a["scene_type"] for a in acts if a["start_frame"] <= middle < a["end_frame"]),
                     acts[-1]["scene_type"])
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(frame)).save(buffer, format="PNG")
        talk = [{"from": "human", "value": "<image>\nWhich place is shown?"}, {"from": "gpt", "value": f"A {place}."}]
        samples.append((raw["__key__"], {"png": buffer.getvalue(),
                                         "json": {"conversations": talk, "caption": f"A {place} scene."}}))
    write_shard(out / "shard-000000.tar", samples)
    return out


def run_host_lm_quickstart(out: Path, entry: Quickstart, *, cfg: HostLMQuickstartConfig | None = None,
                           console: Console | None = None) -> dict[str, Any]:
    """Run ``entry``'s stages into ``out``; returns (and writes) the summary."""
    cfg = cfg or HostLMQuickstartConfig()
    console = console or Console(stderr=True)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    steps = 4 + len(entry.stages)
    step = step_printer(console, steps)

    kinds = entry.stage_data or ("videos",) * len(entry.stages)
    step(1, "Synthesising captioned videos with multi-turn conversations"
         + (" and images of their places" if "images" in kinds else ""))
    for offset, (split, count) in enumerate((("train", cfg.train_videos), ("val", cfg.val_videos))):
        synthesize(out / "videos" / split, count, seed=cfg.seed * 100 + offset, cfg=cfg.videos, maxcount=16,
                   workers=cfg.workers, quiet=True)
        if "images" in kinds:
            write_frame_images(out / "videos" / split, out / "images" / split)
    common = [f"seed={cfg.seed}"]
    if cfg.epochs is not None:
        common.append(f"trainer.max_epochs={cfg.epochs}")

    step(2, f"Saving a tiny random {entry.host_family} host")
    with quiet_lightning():
        if entry.host_family == "composed":
            vision, llm = save_tiny_parts(out / "host", seed=cfg.seed)
            common += ["host.path=null", f"host.vision={vision}", f"host.llm={llm}"]
        else:
            common.append(f"host.path={save_tiny_host(entry.host_family, out / 'host', seed=cfg.seed)}")

    runs: dict[str, Path] = {}
    previous: Path | None = None
    for n, (recipe_name, data) in enumerate(zip(entry.stages, kinds, strict=True), start=3):
        stage = _stage_name(recipe_name)
        start_from = [f"init.from={previous}"] if previous is not None else []
        step(n, f"Stage {recipe_name} on {data}" + (f", from {previous.parent.parent.name}" if previous else ""))
        shards = [f"data.train={out / data / 'train'}", f"data.val={out / data / 'val'}"]
        recipe = load_recipe(recipe_name, [*common, *shards, *start_from, f"run_dir={out / 'runs' / stage}"])
        with quiet_lightning():
            runs[stage] = run(recipe, "fit").run_dir
        previous = runs[stage] / "checkpoints" / "last.ckpt"
    assert previous is not None, "a host-LM quickstart names at least one stage"
    last = entry.stages[-1]

    step(steps - 1, "Answering the val questions and exporting the last stage")
    predict = load_recipe(last, [*common, f"data.predict={out / 'videos' / 'val'}",
                                 f"run_dir={out / 'runs' / 'predict'}"], stage="predict")
    with quiet_lightning():
        predicted = run(predict, "predict", ckpt=str(previous), predictions=str(out / "answers.jsonl"))
    answers = [json.loads(line) for line in predicted.predictions.read_text().splitlines() if line.strip()]
    with quiet_lightning():
        exported = export_checkpoint(previous, out / "export", force=True)
    for record in answers[:3]:
        console.print(f"      Q: {record['question']}\n      A: {record['answer']!r}")

    step(steps, "Done")
    curves = {stage: loss_curve(run_dir) for stage, run_dir in runs.items()}
    summary = {
        "train_loss": {stage: {"first": c[0], "last": c[-1], "steps": len(c)} for stage, c in curves.items()},
        "answers": str(out / "answers.jsonl"), "export": exported["path"],
        "seconds": round(time.perf_counter() - start, 1), "config": asdict(cfg), "out": str(out),
        "method": entry.name, "stages": list(entry.stages),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    console.print(table(f"Quickstart {entry.name}: training loss per stage", ["stage", "first", "last", "steps"],
                        {stage: [f"{loss['first']:.3f}", f"{loss['last']:.3f}", str(loss["steps"])]
                         for stage, loss in summary["train_loss"].items()}))
    console.print(f"summary: {out / 'summary.json'}  ({summary['seconds']:.0f} s)")
    return summary
