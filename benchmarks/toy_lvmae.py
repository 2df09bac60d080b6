"""Toy reproduction of LV-MAE's claim on synthetic long videos, over several seeds (design v2, benchmarks/README.md).

The paper: LV-MAE pre-training + attentive probing reaches 63.4 average top-1 on LVU against 38.9 for the raw
LanguageBind embeddings with the same probe (supplement Sec. 9), and attentive probing beats linear probing.

v2, per seed of the whole pipeline (videos, tiny random frozen CLIP, pre-training, probes):

1. synthesise 1200 unlabelled videos for pre-training and 240 / 60 / 90 labelled train / val / test videos, all
   with ``SynthConfig.clip_seconds=5``: every 5-second clip is a new arrangement of its act's objects over the act's
   background, so a masked clip is predictable from its act but not copied from its neighbour;
2. embed every 5-second clip with the frozen tiny CLIP;
3. pre-train a tiny LV-MAE on the unlabelled embeddings only (val loss on the labelled val set);
4. the gate: the masked-clip reconstruction error on the val set against a copy-the-neighbour baseline (each masked
   clip predicted by its nearest unmasked clip's normalised embedding, same masks, same loss);
5. four probe rows (LV-MAE / raw embeddings x attentive / mean-pooled linear), every label task, with all 240
   labelled training videos and with the first 60 of them; the same probe recipe, epochs and videos for each row.

``act_order`` depends only on the order of the three acts, so a mean-pooled bag of clips is at chance (16.7%).

``--control`` adds the untrained-encoder control (benchmarks/README.md): the LV-MAE probe rows again, on an LV-MAE of
the same architecture initialised exactly as the seed's pre-training run started (``seed_everything(seed)``, then the
model built) with zero pre-training steps; same probes, recipes, epochs and labelled videos. It reuses each seed's
data and pre-training checkpoint (the latter only for its config and record) and keeps its results in
``control.json``.

    python benchmarks/toy_lvmae.py --pilot --seeds 0          # data, pre-training and the gate of one seed
    python benchmarks/toy_lvmae.py --seeds 0 1 2 --out runs/toy_lvmae_v2
    python benchmarks/toy_lvmae.py --control --seeds 0 1 2 --out runs/toy_lvmae_v2

Finished steps (synthesised and embedded sets, the pre-training checkpoint) are reused when the script is run again
into the same ``--out``, so the pilot's seed is not recomputed.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from lvu.config import load_recipe
from lvu.data.embed import embed_videos
from lvu.data.shards import count_samples, iter_samples, resolve_shards
from lvu.data.synth import LABEL_MAPS, SynthConfig, synthesize
from lvu.models.lvmae import LVMAE, random_mask
from lvu.quickstart.common import quiet_lightning
from lvu.quickstart.lvmae import PROBES, QuickstartConfig, make_tiny_encoder
from lvu.tasks.lvmae import load_pretrained
from lvu.train.run import run

# The quickstart's like-for-like rows; attentive probes with 8 heads as the lvmae/probe_attentive recipe (Table 7).
TOY_PROBES = tuple((name, [*overrides, "probe.num_heads=8"]) for name, overrides in PROBES)
# The control: the LV-MAE rows (same run-dir index as in TOY_PROBES) on an untrained encoder.
CONTROL_PROBES = tuple((f"untrained {name}", overrides, n) for n, (name, overrides) in enumerate(TOY_PROBES)
                       if "probe.backbone=lvmae" in overrides)
SPLITS = ("unlabelled", "train", "val", "test")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def prepare(out: Path, seed: int, args: argparse.Namespace) -> dict[str, Path]:
    """Synthesise and embed the four sets of one seed (skipping sets already done); returns the feature folders."""
    qs = QuickstartConfig()
    video_cfg = SynthConfig(min_seconds=args.min_seconds, max_seconds=args.max_seconds, fps=qs.fps, width=qs.width,
                            height=qs.height, clip_seconds=5.0)
    counts = {"unlabelled": args.unlabelled, "train": args.train, "val": args.val, "test": args.test}
    # v1's labelled sets used seeds seed*100 + 0, 1, 2; the unlabelled set takes + 3.
    offsets = {"train": 0, "val": 1, "test": 2, "unlabelled": 3}
    encoder = make_tiny_encoder(out / "encoder", qs.encoder_width, qs.encoder_image_size, seed)
    features = {}
    for split in SPLITS:
        videos, feats = out / "videos" / split, out / "features" / split
        if not (videos / "manifest.json").is_file():
            t = time.perf_counter()
            # Shards of --few videos: the first training shard is the few-label training set.
            synthesize(videos, counts[split], seed=seed * 100 + offsets[split], cfg=video_cfg, maxcount=args.few,
                       workers=args.workers, quiet=True)
            log(f"seed {seed}: synthesised {counts[split]} {split} videos in {time.perf_counter() - t:.0f} s")
        if not (feats / "manifest.json").is_file():
            t = time.perf_counter()
            embed_videos([str(videos)], feats, encoder, frames_per_clip=qs.frames_per_clip, batch_size=256,
                         workers=args.workers, device="cpu", quiet=True)
            log(f"seed {seed}: embedded {split} in {time.perf_counter() - t:.0f} s")
        features[split] = feats
    return features


def pretrain(out: Path, seed: int, features: dict[str, Path], epochs: int) -> tuple[Path, dict[str, float]]:
    run_dir = out / "runs" / "pretrain"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    metrics_file = run_dir / "toy_metrics.json"
    if ckpt.is_file() and metrics_file.is_file():
        return ckpt, json.loads(metrics_file.read_text())
    width = QuickstartConfig.encoder_width
    recipe = load_recipe("quickstart/lvmae_pretrain", [
        f"data.train={features['unlabelled']}", f"data.val={features['val']}", f"run_dir={run_dir}",
        f"seed={seed}", f"trainer.max_epochs={epochs}", f"model.input_dim={width}", f"model.embed_dim={width}",
    ])
    t = time.perf_counter()
    with quiet_lightning():
        result = run(recipe, "fit", verbose=False)
    metrics = {k: float(v) for k, v in result.metrics.items() if "loss" in k}
    metrics["steps"] = result.global_step
    metrics["seconds"] = round(time.perf_counter() - t, 1)
    metrics_file.write_text(json.dumps(metrics, indent=2) + "\n")
    log(f"seed {seed}: pre-trained {result.global_step} steps in {metrics['seconds']:.0f} s: {metrics}")
    return ckpt, metrics


def load_sequences(folder: Path, max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every video's L2-normalised clip embeddings (first max_tokens), padded: ``x [N, L, D]``, ``valid [N, L]``."""
    seqs = [F.normalize(torch.from_numpy(np.load(io.BytesIO(raw["npy"]))).float(), dim=-1)[:max_tokens]
            for raw in iter_samples(resolve_shards([str(folder)]), exts=("npy",))]
    x = torch.zeros(len(seqs), max(len(s) for s in seqs), seqs[0].shape[1])
    for i, s in enumerate(seqs):
        x[i, :len(s)] = s
    valid = torch.arange(x.shape[1])[None] < torch.tensor([len(s) for s in seqs])[:, None]
    return x, valid


def copy_neighbour(x: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Each masked clip predicted by its nearest unmasked clip's (normalised) embedding; ties take the earlier."""
    pred = x.clone()
    positions = torch.arange(x.shape[1])
    for b in range(x.shape[0]):
        visible = positions[valid[b] & ~mask[b]]
        for i in positions[mask[b]].tolist():
            pred[b, i] = x[b, visible[(visible - i).abs().argmin()]]
    return pred


def gate(ckpt: Path, folder: Path, seed: int, draws: int = 10) -> dict[str, float]:
    """Masked-clip MSE (the pre-training loss) of the model and of copy-the-neighbour, on the same masks."""
    encoder = load_pretrained(ckpt)
    model = LVMAE(encoder.config)
    model.load_state_dict(encoder.state)
    model.eval()
    x, valid = load_sequences(folder, encoder.config.max_tokens)
    errors: dict[str, list[float]] = {"model": [], "copy_neighbour": []}
    for draw in range(draws):
        mask = random_mask(valid, encoder.config.mask_ratio, torch.Generator().manual_seed(10_000 * seed + draw))
        with torch.no_grad():
            out = model(x, valid, mask=mask)
        weight = (out.mask & valid).float()
        for name, pred in (("model", out.pred), ("copy_neighbour", copy_neighbour(x, out.mask, valid))):
            per_token = (pred - x).pow(2).mean(-1)
            errors[name].append(float((per_token * weight).sum() / weight.sum()))
    result = {name: statistics.mean(v) for name, v in errors.items()}
    result["ratio"] = result["model"] / result["copy_neighbour"]
    result["videos"], result["draws"] = int(x.shape[0]), draws
    return result


def untrained_checkpoint(out: Path, seed: int, ckpt: Path) -> Path:
    """A copy of the pre-training checkpoint whose weights are the model as the pre-training run built it before its
    first step (``run`` seeds with ``seed_everything(seed)`` and then builds the model), global step 0, no optimiser
    state; the record (model config, ``data.normalize``) is the pre-training run's."""
    path = out / "runs" / "untrained" / "untrained.ckpt"
    if path.is_file():
        return path
    entries = torch.load(ckpt, map_location="cpu", weights_only=False)
    config = load_pretrained(ckpt).config
    L.seed_everything(seed, workers=True, verbose=False)
    model = LVMAE(config)
    state = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    trained = {k for k in entries["state_dict"] if k.startswith("model.")}
    if set(state) != trained:
        raise RuntimeError(f"untrained model keys differ from the checkpoint's: {sorted(set(state) ^ trained)}")
    changed = sum(not torch.equal(state[k], entries["state_dict"][k]) for k in state)
    entries.update(state_dict=state, global_step=0, epoch=0, optimizer_states=[], lr_schedulers=[])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(entries, path)
    log(f"seed {seed}: untrained checkpoint {path} ({changed}/{len(state)} tensors differ from the trained ones)")
    return path


def probe(out: Path, seed: int, features: dict[str, Path], ckpt: Path, few: int,
          control: bool = False) -> dict[str, dict[str, Any]]:
    """Every probe row on every task, with all labelled training videos and with the first ``few`` (results kept in
    ``probes.json`` and reused). With ``control``, the untrained-encoder rows instead (``ckpt`` the untrained
    checkpoint; results in ``control.json``)."""
    saved = out / ("control.json" if control else "probes.json")
    rows = CONTROL_PROBES if control else tuple((name, overrides, n) for n, (name, overrides) in enumerate(TOY_PROBES))
    results: dict[str, dict[str, Any]] = json.loads(saved.read_text()) if saved.is_file() else {}
    few_shard = features["train"] / "shard-000000.tar"
    if count_samples(few_shard) != few:
        raise RuntimeError(f"{few_shard} holds {count_samples(few_shard)} videos, not {few}")
    # The few-label regime first: it is the cheaper one.
    regimes = {f"{few} labels": str(few_shard),
               f"{count_samples_all(features['train'])} labels": str(features["train"])}
    for regime, train in regimes.items():
        for name, overrides, n in rows:
            if name in results.get(regime, {}):
                continue
            run_dir = out / "runs" / f"{'control' if control else 'probe'}{n}_{regime.split()[0]}"
            t = time.perf_counter()
            recipe = load_recipe("quickstart/lvmae_probe", [
                f"data.train={train}", f"data.val={features['val']}", f"data.test={features['test']}",
                f"data.label_maps={features['train'] / 'label_maps.json'}", f"probe.pretrained={ckpt}",
                f"run_dir={run_dir}", f"seed={seed}", *overrides,
            ])
            with quiet_lightning():
                metrics = run(recipe, "fit", verbose=False).metrics
            row = {}
            for task in LABEL_MAPS:
                for key in (f"{task}/test/acc", f"{task}/test/mse"):
                    if key in metrics:
                        row[task] = float(metrics[key]) * (100 if key.endswith("acc") else 1)
            results.setdefault(regime, {})[name] = row
            log(f"seed {seed}: {regime}, {name}: {row} ({time.perf_counter() - t:.0f} s)")
            saved.write_text(json.dumps(results, indent=2) + "\n")
    return results


def count_samples_all(folder: Path) -> int:
    return sum(s.samples for s in resolve_shards([str(folder)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="runs/toy_lvmae_v2")
    parser.add_argument("--pilot", action="store_true", help="data, pre-training and the gate only")
    parser.add_argument("--control", action="store_true",
                        help="the untrained-encoder control rows (after the main run: reuses its steps)")
    parser.add_argument("--unlabelled", type=int, default=1200)
    parser.add_argument("--train", type=int, default=240)
    parser.add_argument("--val", type=int, default=60)
    parser.add_argument("--test", type=int, default=90)
    parser.add_argument("--few", type=int, default=60, help="labelled training videos of the few-label regime")
    parser.add_argument("--min-seconds", type=float, default=QuickstartConfig.min_seconds)
    parser.add_argument("--max-seconds", type=float, default=QuickstartConfig.max_seconds)
    parser.add_argument("--pretrain-epochs", type=int, default=QuickstartConfig.pretrain_epochs)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per process: on a shared 2-core machine, 2 threads ran a pre-training step "
                             "16x slower than 1 (OpenMP threads waiting on each other)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.train % args.few:
        parser.error("--train must be a multiple of --few (the first shard is the few-label set)")
    start = time.perf_counter()
    report: dict[str, Any] = {"args": vars(args), "seeds": {}}
    out_root = Path(args.out)
    # Seeds may run in separate processes into one --out (their steps are reused), then all together to tabulate.
    kind = "pilot" if args.pilot else "control" if args.control else "toy_lvmae"
    report_file = out_root / f"{kind}_seeds{'-'.join(map(str, args.seeds))}.json"
    for seed in args.seeds:
        out = out_root / f"seed{seed}"
        features = prepare(out, seed, args)
        ckpt, pretrain_metrics = pretrain(out, seed, features, args.pretrain_epochs)
        gate_numbers = gate(ckpt, features["val"], seed)
        log(f"seed {seed}: gate on val: {gate_numbers}")
        entry = report["seeds"][seed] = {"pretrain": pretrain_metrics, "gate": gate_numbers}
        if args.control:
            entry["probes"] = probe(out, seed, features, ckpt, args.few)  # the main rows, for the table
            entry["control"] = probe(out, seed, features, untrained_checkpoint(out, seed, ckpt), args.few,
                                     control=True)
        elif not args.pilot:
            entry["probes"] = probe(out, seed, features, ckpt, args.few)
        entry["seconds_so_far"] = round(time.perf_counter() - start, 1)
        out_root.mkdir(parents=True, exist_ok=True)
        report_file.write_text(json.dumps(report, indent=2) + "\n")
    elapsed = time.perf_counter() - start
    report["seconds"] = round(elapsed, 1)
    if not args.pilot:
        report["table"] = summarise(report, args.seeds, args.control)
    report_file.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n# seeds {args.seeds}; {elapsed:.0f} s")
    for seed in args.seeds:
        g, p = report["seeds"][seed]["gate"], report["seeds"][seed]["pretrain"]
        print(f"seed {seed}: pre-training {p}; gate: model {g['model']:.4f} vs copy-the-neighbour "
              f"{g['copy_neighbour']:.4f} (ratio {g['ratio']:.2f})")


def summarise(report: dict[str, Any], seeds: list[int], control: bool = False) -> dict[str, Any]:
    table: dict[str, Any] = {}
    first = report["seeds"][seeds[0]]["probes"]
    rows = [(name, "probes") for name, _ in TOY_PROBES]
    if control:
        rows += [(name, "control") for name, _, _ in CONTROL_PROBES]
    print("test metric mean ± sd over seeds (accuracy %, MSE for event_count)")
    for regime in first:
        print(f"\n{regime}\n{'probe':40s}" + "".join(f"{t:>18s}" for t in LABEL_MAPS))
        for name, source in rows:
            cells = []
            for task in LABEL_MAPS:
                values = [report["seeds"][s][source][regime][name][task] for s in seeds]
                mean, sd = statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0
                table.setdefault(regime, {}).setdefault(name, {})[task] = {"mean": mean, "sd": sd, "values": values}
                cells.append(f"{mean:10.1f} ± {sd:5.1f}")
            print(f"{name:40s}" + "".join(f"{c:>18s}" for c in cells))
            print(f"{'':40s}" + "".join(
                f"  {' / '.join(f'{v:.1f}' for v in table[regime][name][t]['values']):>16s}" for t in LABEL_MAPS))
    return table


if __name__ == "__main__":
    main()
