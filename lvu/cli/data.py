"""``lvu data ...``: arguments for synthesising, packing, inspecting, concatenating, embedding and indexing shards.

Each command imports its lvu.data module when it runs (they import numpy, PyAV or torch): `lvu --help` stays
instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lvu.cli.common import add_command
from lvu.errors import LvuError


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, e.g. 128x96, got {text!r}") from None
    return width, height


def _summary(report, out: Path, verb: str) -> None:
    skipped = len(report.skipped)
    line = f"{verb} {report.written} sample(s)"
    if report.reused_shards:
        line += f" (+{report.reused_shards} shard(s) kept from an earlier run)"
    line += f", skipped {skipped}" + (f" (reasons in {out / 'skipped.jsonl'})" if skipped else "")
    print(f"{line} -> {out} ({report.manifest.total} samples in {len(report.manifest.shards)} shard(s))")


def cmd_synth(args: argparse.Namespace) -> int:
    from lvu.data.synth import SynthConfig, synthesize  # see the module docstring

    try:
        cfg = SynthConfig(min_seconds=args.seconds[0], max_seconds=args.seconds[1], fps=args.fps,
                          width=args.size[0], height=args.size[1], max_events=args.max_events)
    except ValueError as exc:
        raise LvuError(str(exc)) from None
    report = synthesize(Path(args.out), args.videos, seed=args.seed, cfg=cfg, maxcount=args.maxcount,
                        workers=args.workers)
    _summary(report, Path(args.out), "synthesised")
    return 0


# lvu.data.pack.FORMATS, spelled out: the parser must not import the packing code (tests/test_data_cli.py checks).
PACK_FORMATS = ["llava", "lvu", "grounding", "videomme", "mlvu", "longvideobench", "lvbench", "mvbench", "egoschema",
                "nextqa", "perceptiontest", "ego4d_nlq"]


def cmd_pack(args: argparse.Namespace) -> int:
    from lvu.data.pack import pack  # see the module docstring

    report = pack(args.format, Path(args.videos), Path(args.annotations), Path(args.out), maxcount=args.maxcount,
                  workers=args.workers, allow_missing_tasks=args.allow_missing_tasks,
                  subtitles=Path(args.subtitles) if args.subtitles else None)
    _summary(report, Path(args.out), "packed")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from lvu.data.inspect import contact_sheet, format_report, inspect_shards, report_json  # see the docstring
    from lvu.data.shards import resolve_shards  # (idem)

    report = inspect_shards(args.shards, decode=not args.quick, quiet=args.json)
    print(report_json(report) if args.json else format_report(report))
    if args.grid:
        rows = contact_sheet(resolve_shards(args.shards), Path(args.grid), rows=args.grid_rows,
                             columns=args.grid_columns)
        if rows == 0:
            raise LvuError("no readable video to draw a contact sheet from")
        if not args.json:
            print(f"contact sheet with {rows} video(s) -> {args.grid}")
    if report["unreadable"] and not args.allow_bad:
        print(f"lvu: {report['unreadable']} of {report['samples']} samples are unreadable (see the report); "
              f"--allow-bad exits 0 anyway", file=sys.stderr)
        return 1
    return 0


def cmd_concat(args: argparse.Namespace) -> int:
    from lvu.data.concat import concat  # see the module docstring

    report = concat(args.shards, Path(args.out), min_minutes=args.minutes[0], max_minutes=args.minutes[1],
                    seed=args.seed, maxcount=args.maxcount, join=args.join, size=args.size)
    _summary(report, Path(args.out), "joined")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from lvu.data.embed import embed_videos  # see the module docstring
    from lvu.data.shots import ShotConfig  # numpy and the video reader: not at `lvu --help` time

    report = embed_videos(args.shards, Path(args.out), args.encoder, segment_seconds=args.segment_seconds,
                          frames_per_clip=args.frames_per_clip, batch_size=args.batch_size, workers=args.workers,
                          device=args.device, save_dtype=args.dtype, segments=args.segments,
                          shots=ShotConfig(enabled=True, threshold=args.shot_threshold))
    _summary(report, Path(args.out), f"embedded ({report.dim}-wide features)")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from lvu.data.shards import SHARD_GLOBS, Manifest, scan_shard  # see the module docstring

    folder = Path(args.folder)
    tars = sorted(t for pattern in SHARD_GLOBS for t in folder.glob(pattern))
    if not tars:
        raise LvuError(f"{folder}: no .tar or .tar.gz shards to index")
    scanned = [scan_shard(t) for t in tars]
    broken = {s.info.name: s.error for s in scanned if s.error}
    if broken and not args.allow_truncated:
        raise LvuError(f"{len(broken)} shard(s) are truncated or unreadable, a manifest would record their loss as "
                       f"their size: " + "; ".join(f"{name}: {error}" for name, error in broken.items())
                       + " (rewrite them, or --allow-truncated to index them marked: readers then report the lost "
                         "samples)")
    manifest = Manifest([s.info for s in scanned], kind=args.kind,
                        extra={"truncated": broken} if broken else {})
    path = manifest.save(folder)
    print(json.dumps({"manifest": str(path), "shards": len(tars), "samples": manifest.total,
                      **({"truncated": sorted(broken)} if broken else {})}))
    return 0


def add_data_commands(subparsers: argparse._SubParsersAction) -> None:
    sub = add_command(subparsers, "synth", "generate synthetic long videos with every annotation kind",
                      "lvu data synth shards/synth --videos 200 --seed 0 --seconds 30 90 --fps 8 --size 128x96")
    sub.add_argument("out", help="output shard folder")
    sub.add_argument("--videos", type=int, required=True, help="how many videos")
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument("--seconds", type=float, nargs=2, default=(20.0, 60.0), metavar=("MIN", "MAX"),
                     help="video length range in seconds (default 20 60)")
    sub.add_argument("--fps", type=float, default=8.0)
    sub.add_argument("--size", type=_size, default=(128, 96), metavar="WxH", help="frame size (default 128x96)")
    sub.add_argument("--max-events", type=int, default=4, help="most brief events per video")
    sub.add_argument("--maxcount", type=int, default=100, help="videos per shard")
    sub.add_argument("--workers", type=int, default=1, help="parallel processes")
    sub.set_defaults(func=cmd_synth)

    sub = add_command(subparsers, "pack", "pack a public dataset (videos + annotations) into shards",
                      "lvu data pack --format llava --videos /data/videos --annotations train.json --out shards/train")
    sub.add_argument("--format", required=True, choices=PACK_FORMATS,
                     help="a training format (llava, lvu, grounding) or an evaluation benchmark; layouts in "
                     "data/README.md and data/cards/eval/")
    sub.add_argument("--videos", required=True, help="folder the annotation's video paths are relative to")
    sub.add_argument("--annotations", required=True,
                     help="annotation file, or folder (LVU: the task CSVs; MLVU, MVBench: json/; EgoSchema: the "
                     "folder of questions.json and subset_answers.json)")
    sub.add_argument("--subtitles", help="Video-MME, LongVideoBench: the subtitle folder (kept in each sample)")
    sub.add_argument("--out", required=True, help="output shard folder")
    sub.add_argument("--maxcount", type=int, default=100, help="samples per shard")
    sub.add_argument("--workers", type=int, default=1, help="parallel processes")
    sub.add_argument("--allow-missing-tasks", action="store_true",
                     help="LVU: pack even if some of the nine tasks' {train,val,test}.csv are missing (listed)")
    sub.set_defaults(func=cmd_pack)

    sub = add_command(subparsers, "inspect", "counts, durations, annotation kinds and unreadable samples of shards",
                      "lvu data inspect shards/train --grid sheet.png")
    sub.add_argument("shards", nargs="+", help="shard folders, .tar files, globs or brace patterns")
    sub.add_argument("--json", action="store_true", help="print one JSON object")
    sub.add_argument("--grid", help="write a PNG contact sheet of sampled frames with timestamps")
    sub.add_argument("--grid-rows", type=int, default=8, help="videos in the contact sheet")
    sub.add_argument("--grid-columns", type=int, default=6, help="frames per video in the contact sheet")
    sub.add_argument("--quick", action="store_true", help="read headers and JSON only; do not decode videos")
    sub.add_argument("--allow-bad", action="store_true",
                     help="exit 0 even when samples are unreadable (by default that exits 1)")
    sub.set_defaults(func=cmd_inspect)

    sub = add_command(subparsers, "concat", "join short captioned videos into long ones (FiLA-Video Sec. 3.3)",
                      "lvu data concat shards/captioned shards/long --minutes 5 30")
    sub.add_argument("shards", nargs="+", help="input shard folders")
    sub.add_argument("out", help="output shard folder")
    sub.add_argument("--minutes", type=float, nargs=2, default=(5.0, 30.0), metavar=("MIN", "MAX"))
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument("--maxcount", type=int, default=10, help="long videos per shard")
    sub.add_argument("--join", default="mp4", choices=["mp4", "parts"],
                     help="mp4: one re-encoded mp4 per long video (default); parts: the clips' own bytes, played back "
                          "to back by lvu (no re-encoding)")
    sub.add_argument("--size", type=_size, default=None, metavar="WxH",
                     help="frame size of joined mp4s (default: the first clip's)")
    sub.set_defaults(func=cmd_concat)

    sub = add_command(subparsers, "embed",
                      "embed consecutive clips of every video with a frozen encoder (LV-MAE input)",
                      "lvu data embed shards/train feats/train --encoder /models/clip-vit-b16 --segment-seconds 5")
    sub.add_argument("shards", nargs="+", help="video shard folders")
    sub.add_argument("out", help="output folder for feature shards")
    sub.add_argument("--encoder", required=True,
                     help="folder of a CLIP, SigLIP, X-CLIP, VideoMAE, V-JEPA 2 or Video-LLaVA checkpoint")
    sub.add_argument("--segments", choices=["fixed", "shots"], default="fixed",
                     help="fixed: consecutive --segment-seconds clips (default, the paper's); shots: one clip per "
                          "detected shot (the paper's Table 9 variant)")
    sub.add_argument("--segment-seconds", type=float, default=5.0, help="clip length (default 5, the paper's)")
    sub.add_argument("--shot-threshold", type=float, default=0.3,
                     help="--segments shots: colour-histogram change (0..1) that starts a new shot (default 0.3)")
    sub.add_argument("--frames-per-clip", type=int, default=None,
                     help="frames per clip (default: what the encoder takes, else 8)")
    sub.add_argument("--batch-size", type=int, default=64, help="clips per encoder batch")
    sub.add_argument("--workers", type=int, default=2, help="decoding processes")
    sub.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    sub.add_argument("--dtype", default="float16", choices=["float16", "float32"], help="stored feature type")
    sub.set_defaults(func=cmd_embed)

    sub = add_command(subparsers, "index", "write manifest.json for a folder of shards made by another tool",
                      "lvu data index /data/video2dataset_shards")
    sub.add_argument("folder", help="folder of .tar shards")
    sub.add_argument("--kind", default="video", choices=["video", "features", "mixed"])
    sub.add_argument("--allow-truncated", action="store_true",
                     help="index truncated shards anyway, marked in the manifest (their lost samples are reported "
                          "as bad samples when read)")
    sub.set_defaults(func=cmd_index)
