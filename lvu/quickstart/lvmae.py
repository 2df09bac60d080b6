"""``lvu quickstart lvmae``: the whole LV-MAE pipeline on synthetic long videos, in a few minutes on a laptop CPU.

1. synthesise long videos whose ``act_order`` label depends on the order of their three acts (a bag of clips cannot
   tell it) — train, val and test sets;
2. save a tiny random CLIP (``save_pretrained``) and embed every 5-second clip with it, frozen;
3. pre-train a tiny LV-MAE on the train embeddings (``recipes/quickstart/lvmae_pretrain.yaml``);
4. probe it on every label task, attentive and linear, and probe the raw embeddings the same two ways as the
   like-for-like baselines (``recipes/quickstart/lvmae_probe.yaml``), each probe with three seeds;
5. print the table and write ``summary.json``.

Every step is the same code path a user takes with real data: the recipes, ``lvu data`` and ``lvu fit``.
"""

from __future__ import annotations

import json
import multiprocessing
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from transformers import CLIPConfig, CLIPModel

from lvu.config import load_recipe
from lvu.data.embed import embed_videos
from lvu.data.synth import LABEL_MAPS, SynthConfig, synthesize
from lvu.quickstart.common import quiet_lightning, step_printer, table
from lvu.quickstart.registry import Quickstart
from lvu.train.library_noise import quiet_library_noise
from lvu.train.run import run


@dataclass
class QuickstartConfig:
    """Sizes of the quickstart; the defaults took 142 s on an idle 2-core VM (README), most of it the 12 probe runs."""

    train_videos: int = 240
    val_videos: int = 60
    test_videos: int = 90
    min_seconds: float = 60.0
    max_seconds: float = 120.0
    fps: float = 4.0
    width: int = 64
    height: int = 48
    frames_per_clip: int = 4
    encoder_width: int = 64
    encoder_image_size: int = 64
    pretrain_epochs: int = 30
    seed: int = 0
    probe_seeds: tuple[int, ...] = (0, 1, 2)
    """Each probe is trained with these seeds (one pre-training): the table shows mean ± sd over them."""
    workers: int = 2


# Like for like: each probe on LV-MAE's features and on the raw clip embeddings, so a difference between two rows
# of one probe kind is what pre-training bought.
PROBES = (
    ("LV-MAE + attentive probe", ["probe.kind=attentive", "probe.backbone=lvmae"]),
    ("raw embeddings + attentive probe", ["probe.kind=attentive", "probe.backbone=raw"]),
    ("LV-MAE + linear probe", ["probe.kind=linear", "probe.backbone=lvmae"]),
    ("raw embeddings, mean-pooled + linear", ["probe.kind=linear", "probe.backbone=raw"]),
)


def make_tiny_encoder(path: Path, width: int, image_size: int, seed: int) -> Path:
    """A small random CLIP saved like a real checkpoint (nothing is downloaded)."""
    if (path / "config.json").is_file():
        return path
    torch.manual_seed(seed)
    vision = dict(hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2, num_attention_heads=4,
                  image_size=image_size, patch_size=8)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, vocab_size=64,
                max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=width)).save_pretrained(path)
    return path


def _metric(metrics: dict[str, float], task: str) -> float | None:
    for key in (f"{task}/test/acc", f"{task}/test/mse"):
        if key in metrics:
            return metrics[key] * (100 if key.endswith("acc") else 1)
    return None


def run_quickstart(out: Path, entry: Quickstart | None = None, *, cfg: QuickstartConfig | None = None,
                   console: Console | None = None, probes: tuple[tuple[str, list[str]], ...] = PROBES
                   ) -> dict[str, Any]:
    """Run the pipeline into ``out``; returns (and writes) the summary.

    Args:
        entry: its registry entry (the pipeline needs nothing from it).
        probes: ``(row name, recipe overrides)`` per probe configuration to compare.
    """
    cfg = cfg or QuickstartConfig()
    console = console or Console(stderr=True)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    step = step_printer(console, 6)

    video_cfg = SynthConfig(min_seconds=cfg.min_seconds, max_seconds=cfg.max_seconds, fps=cfg.fps,
                            width=cfg.width, height=cfg.height)
    step(1, "Synthesising long videos (three acts; act_order depends on their order)")
    for offset, (split, count) in enumerate((("train", cfg.train_videos), ("val", cfg.val_videos),
                                              ("test", cfg.test_videos))):
        synthesize(out / "videos" / split, count, seed=cfg.seed * 100 + offset, cfg=video_cfg, maxcount=60,
                   workers=cfg.workers)

    step(2, "Saving a tiny random CLIP encoder (frozen)")
    encoder = make_tiny_encoder(out / "encoder", cfg.encoder_width, cfg.encoder_image_size, cfg.seed)

    step(3, "Embedding 5-second clips")
    for split in ("train", "val", "test"):
        embed_videos([str(out / "videos" / split)], out / "features" / split, encoder,
                     frames_per_clip=cfg.frames_per_clip, batch_size=256, workers=cfg.workers, device="cpu")

    step(4, f"Pre-training a tiny LV-MAE ({cfg.pretrain_epochs} epochs)")
    features = {split: str(out / "features" / split) for split in ("train", "val", "test")}
    pretrain = load_recipe("quickstart/lvmae_pretrain", [
        f"data.train={features['train']}", f"data.val={features['val']}", f"run_dir={out / 'runs' / 'pretrain'}",
        f"seed={cfg.seed}", f"trainer.max_epochs={cfg.pretrain_epochs}", f"model.input_dim={cfg.encoder_width}",
        f"model.embed_dim={cfg.encoder_width}", "trainer.progress_bar=rich",
    ])
    with quiet_lightning():
        pretrained = run(pretrain, "fit").run_dir / "checkpoints" / "last.ckpt"

    seeds = ", ".join(str(s) for s in cfg.probe_seeds)
    step(5, f"Probing every label task, LV-MAE and raw embeddings, attentive and linear (probe seeds {seeds}; "
            f"{cfg.workers} at a time)")
    jobs = probe_jobs(out, pretrained, probes, cfg.probe_seeds)
    runs: dict[str, list[dict[str, float]]] = {}
    for (name, _), metrics in zip(jobs, _probe_runs(list(jobs.values()), cfg.workers), strict=True):
        runs.setdefault(name, []).append(
            {task: value for task in LABEL_MAPS if (value := _metric(metrics, task)) is not None})
        if len(runs[name]) == len(cfg.probe_seeds):
            rows = {task: [r[task] for r in runs[name] if task in r] for task in LABEL_MAPS}
            console.print(f"      {name}: " + ", ".join(f"{t} {_mean_sd(v)}" for t, v in rows.items() if v))

    step(6, "Done")
    elapsed = time.perf_counter() - start
    rows = {name: {t: statistics.mean(v) for t in LABEL_MAPS if (v := [r[t] for r in per_seed if t in r])}
            for name, per_seed in runs.items()}
    spread = {name: {t: statistics.stdev(v) if len(v) > 1 else 0.0 for t in LABEL_MAPS
                     if (v := [r[t] for r in per_seed if t in r])} for name, per_seed in runs.items()}
    summary = {"probes": rows, "probe_sd": spread, "probe_runs": runs, "probe_seeds": list(cfg.probe_seeds),
               "metrics": {t: ("test accuracy %" if s["type"] == "classification" else "test MSE")
                                           for t, s in LABEL_MAPS.items()},
               "seconds": round(elapsed, 1), "config": asdict(cfg), "out": str(out)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    console.print(summary_table(rows, spread, len(cfg.probe_seeds)))
    console.print(f"summary: {out / 'summary.json'}  ({elapsed:.0f} s)")
    return summary


def probe_jobs(out: Path, pretrained: Path, probes: tuple[tuple[str, list[str]], ...],
               seeds: tuple[int, ...]) -> dict[tuple[str, int], list[str]]:
    """The recipe overrides of every probe run, by (row name, probe seed)."""
    features = {split: out / "features" / split for split in ("train", "val", "test")}
    return {(name, seed): [
        f"data.train={features['train']}", f"data.val={features['val']}", f"data.test={features['test']}",
        f"probe.pretrained={pretrained}", f"run_dir={out / 'runs' / f'probe{n}_seed{seed}'}", f"seed={seed}",
        *overrides,
    ] for n, (name, overrides) in enumerate(probes) for seed in seeds}


def _probe_run(overrides: list[str]) -> dict[str, float]:
    """One probe run (all label tasks) of ``recipes/quickstart/lvmae_probe.yaml``; its test metrics."""
    recipe = load_recipe("quickstart/lvmae_probe", overrides)
    with quiet_lightning():
        return run(recipe, "fit", verbose=False).metrics


def _probe_runs(jobs: list[list[str]], workers: int) -> Iterator[dict[str, float]]:
    """The probe runs' metrics in ``jobs`` order, ``workers`` runs at a time in fresh processes.

    Why processes: a probe step is a few milliseconds of tiny matmuls and mostly Python (Lightning's loop, the
    loader), one core's work, so two runs side by side take little more than the time of one on two cores (1.7x
    faster here). ``spawn``: the quickstart process has trained already (threads running), which a forked child must
    not inherit. Each run is seeded by its recipe and uses one torch thread (``trainer.threads``), so where it runs
    does not change its numbers."""
    if workers <= 1:
        yield from map(_probe_run, jobs)
        return
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=quiet_library_noise) as pool:
        yield from pool.map(_probe_run, jobs)


def _mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.1f}"


def summary_table(rows: dict[str, dict[str, float]], spread: dict[str, dict[str, float]], seeds: int) -> Table:
    columns = ["probe", *[f"{task}\n({'acc %' if spec['type'] == 'classification' else 'MSE'})"
                          for task, spec in LABEL_MAPS.items()]]
    cells = {name: [f"{values[t]:.1f} ± {spread[name][t]:.1f}" if t in values else "-" for t in LABEL_MAPS]
             for name, values in rows.items()}
    return table(f"Quickstart: test metrics on synthetic long videos (mean ± sd over {seeds} probe seeds, one "
                 f"pre-training)", columns, cells)
