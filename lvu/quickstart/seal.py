"""``lvu quickstart seal``: SEAL's whole path on synthetic videos with tiny random models, on a CPU.

1. synthesise short videos with multiple-choice questions (LVBench-style tags) and grounding queries (train, val);
2. save a tiny random CLIP (with a tokenizer), SAM2, object detector and LLaVA-OneVision host (``save_pretrained``;
   loaded back with ``from_pretrained`` like real ones);
3. extract scene, object and action tokens (``lvu predict seal/extract``, ``recipes/quickstart/seal_extract.yaml``);
4. select each question's tokens (``lvu predict seal/select``, budget 8) and write their crops;
5. answer the selected tokens with the host in LVBench's prompt and score them by tag (``lvu eval seal/lvbench_qa``);
6. train the grounding head on the train tokens and test it on the val tokens (``seal/ground_ego4d``): Recall@{1,5};
7. print a table and write ``summary.json``.

The models are random, so the answers are not meant to be right (the table prints the paper's numbers beside ours
only as a reminder of the scale): the point is every stage of the real path running end to end.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from lvu.config import load_recipe
from lvu.data.shards import iter_samples, resolve_shards
from lvu.data.synth import SynthConfig, synthesize
from lvu.models.seal_tiny import save_tiny_clip, save_tiny_detector, save_tiny_sam2
from lvu.models.vlm.tiny import save_tiny_host
from lvu.quickstart.common import loss_curve, quiet_lightning, step_printer, table
from lvu.quickstart.registry import Quickstart
from lvu.train.evaluate import evaluate
from lvu.train.run import run

HOST_FRAME = 32  # the tiny host's image size


@dataclass
class SealQuickstartConfig:
    """Sizes of the SEAL quickstart (README: its time on 2 cores)."""

    train_videos: int = 32
    val_videos: int = 8
    videos: SynthConfig = field(default_factory=lambda: SynthConfig(min_seconds=20, max_seconds=40, fps=8,
                                                                     width=64, height=48))
    ground_epochs: int = 30
    seed: int = 0
    workers: int = 2


def run_seal_quickstart(out: Path, entry: Quickstart | None = None, *, cfg: SealQuickstartConfig | None = None,
                        console: Console | None = None) -> dict[str, Any]:
    """Run the pipeline into ``out``; returns (and writes) the summary."""
    cfg = cfg or SealQuickstartConfig()
    console = console or Console(stderr=True)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    step = step_printer(console, 7)

    step(1, "Synthesising videos with multiple-choice questions and grounding queries")
    videos = {split: out / "videos" / split for split in ("train", "val")}
    for offset, (split, count) in enumerate((("train", cfg.train_videos), ("val", cfg.val_videos))):
        synthesize(videos[split], count, seed=cfg.seed * 100 + offset, cfg=cfg.videos, maxcount=16,
                   workers=cfg.workers, quiet=True)

    step(2, "Saving a tiny random CLIP, SAM2, object detector and LLaVA-OneVision host")
    models = out / "models"
    encoder = save_tiny_clip(models / "clip", seed=cfg.seed)
    sam2 = save_tiny_sam2(models / "sam2", seed=cfg.seed)
    detector = save_tiny_detector(models / "detector", seed=cfg.seed)
    host = save_tiny_host("llava_onevision", models / "host", seed=cfg.seed)

    tokens = {split: out / "tokens" / split for split in videos}
    counts: dict[str, float] = {}
    with quiet_lightning():
        step(3, "Extracting scene, object and action tokens (lvu predict seal/extract)")
        for split in videos:
            run(load_recipe("quickstart/seal_extract", [
                f"data.predict={videos[split]}", f"output.folder={tokens[split]}", f"models.encoder={encoder}",
                f"models.sam2={sam2}", f"models.detector={detector}", f"run_dir={out / 'runs' / f'extract-{split}'}",
                "trainer.progress_bar=none"], stage="predict"), "predict")
        counts = _token_counts(tokens["val"])

        step(4, "Selecting each val question's tokens, budget 8 (lvu predict seal/select)")
        selected = out / "selected" / "val"
        run(load_recipe("quickstart/seal_select", [
            f"data.predict={videos['val']}", f"tokens={tokens['val']}", f"output.folder={selected}",
            f"run_dir={out / 'runs' / 'select-val'}", "trainer.progress_bar=none"], stage="predict"), "predict")

        step(5, "Answering the selected tokens with the host, scored as LVBench (lvu eval seal/lvbench_qa)")
        answered = evaluate("seal/lvbench_qa", [
            "eval=lvbench", f"host.path={host}", f"data.predict={selected}", f"run_dir={out / 'eval' / 'lvbench'}",
            f"data.frame_size={HOST_FRAME}", "data.eval_frames=8", "data.num_workers=0", "trainer.progress_bar=none",
            "trainer.precision=32-true", "parts.llm.mode=frozen"], ckpt=None)
        qa = answered.results.metrics if answered.results is not None else {}

        step(6, f"Training the grounding head on the train tokens ({cfg.ground_epochs} epochs), testing on val")
        ground_dir = out / "runs" / "ground"
        grounded = run(load_recipe("quickstart/seal_ground", [
            f"encoder={encoder}", f"data.train={tokens['train']}", f"data.test={tokens['val']}",
            f"run_dir={ground_dir}", f"trainer.max_epochs={cfg.ground_epochs}", "trainer.test_after_fit=true",
            "trainer.progress_bar=none", f"seed={cfg.seed}"]), "fit", verbose=False)

    step(7, "Done")
    losses = loss_curve(ground_dir)
    recall = {k.removeprefix("test/"): v for k, v in grounded.metrics.items() if k.startswith("test/R@")}
    elapsed = time.perf_counter() - start
    summary = {"tokens_per_val_video": counts, "lvbench": {k: qa[k] for k in sorted(qa)},
               "grounding": {"recall": recall, "train_loss_first": losses[0] if losses else None,
                             "train_loss_last": losses[-1] if losses else None},
               "seconds": round(elapsed, 1), "config": asdict(cfg), "out": str(out)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    rows = {"tokens per val video (scene / object / action)":
            [" / ".join(f"{counts.get(k, 0):.1f}" for k in ("scene", "object", "action"))],
            "LVBench-style accuracy (random host), %": [f"{qa.get('accuracy', float('nan')):.1f}"],
            "grounding R@1 / R@5, IoU 0.3": [f"{recall.get('R@1,IoU=0.3', 0):.2f} / "
                                             f"{recall.get('R@5,IoU=0.3', 0):.2f}"],
            "grounding train loss, first -> last": [f"{losses[0]:.3f} -> {losses[-1]:.3f}" if losses else "-"]}
    console.print(table("SEAL quickstart (tiny random models)", ["", "value"], rows))
    console.print(f"summary: {out / 'summary.json'}  ({elapsed:.0f} s)")
    return summary


def _token_counts(folder: Path) -> dict[str, float]:
    """Mean tokens of each kind per video in a token folder."""
    per_video = [json.loads(raw["json"])["counts"] for raw in iter_samples(resolve_shards(str(folder)),
                                                                           exts=("json",))]
    return {kind: sum(c[kind] for c in per_video) / max(1, len(per_video)) for kind in ("scene", "object", "action")}
