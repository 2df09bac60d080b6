"""``lvu ckpt ...``: arguments for the checkpoint library (lvu.ckpt) and the exporter (lvu.train.export)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lvu.cli.common import add_command
from lvu.errors import LvuError


def cmd_inspect(args: argparse.Namespace) -> int:
    from lvu.ckpt import read_info  # imports torch: not at module level, so `lvu --help` stays instant

    info = read_info(Path(args.checkpoint)).as_dict()
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    for key, value in info.items():
        if key != "config":
            print(f"{key:20s} {value}")
    if info["task"] is None:
        print("note: no lvu record: this checkpoint was not written by `lvu fit`")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from lvu.ckpt import convert  # imports torch (see cmd_inspect)

    out = Path(args.out)
    if out.exists() and not args.force:
        raise LvuError(f"{out} exists; pass --force to overwrite it")
    result = convert(Path(args.checkpoint), out)
    print(f"wrote {result.path}: {result.tensors} tensors, {result.parameters:,} parameters (fp32), "
          f"step {result.global_step}")
    return 0


def cmd_universal(args: argparse.Namespace) -> int:
    from lvu.train.universal import convert_to_universal, deepspeed_world_size  # see cmd_inspect

    path = Path(args.checkpoint)
    if not path.is_dir():
        raise LvuError(f"{path} is not a DeepSpeed checkpoint folder; files from DDP or one device load on any "
                       f"world size as they are")
    out = convert_to_universal(path, Path(args.out), quiet=False, force=args.force)
    print(f"wrote {out}: universal checkpoint of {path} (written by {deepspeed_world_size(path)} ranks); resume it "
          f"on any number of ranks with `lvu fit RECIPE --ckpt {out}`")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from lvu.train.export import export_checkpoint  # builds models (see cmd_inspect)

    summary = export_checkpoint(Path(args.checkpoint), Path(args.out), force=args.force, overrides=args.overrides)
    print(json.dumps(summary, indent=2))
    return 0


def add_ckpt_commands(subparsers: argparse._SubParsersAction) -> None:
    sub = add_command(subparsers, "inspect",
                      "step, epoch, world size, strategy, task and config digest of a checkpoint",
                      "lvu ckpt inspect runs/lvmae/pretrain/version_0/checkpoints/last.ckpt")
    sub.add_argument("checkpoint", help="Lightning checkpoint file or DeepSpeed checkpoint folder")
    sub.add_argument("--json", action="store_true", help="print one JSON object (includes the resolved config)")
    sub.set_defaults(func=cmd_inspect)

    sub = add_command(subparsers, "convert",
                      "a DeepSpeed ZeRO folder or a Lightning checkpoint to one consolidated fp32 state dict",
                      "lvu ckpt convert runs/lvmae/pretrain/slurm-1234/checkpoints/last.ckpt --out lvmae.pt")
    sub.add_argument("checkpoint", help="Lightning checkpoint file or DeepSpeed checkpoint folder")
    sub.add_argument("--out", required=True, help="file to write (torch.save: state_dict, global_step, epoch, lvu)")
    sub.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    sub.set_defaults(func=cmd_convert)

    sub = add_command(subparsers, "export",
                      "a video-LLM checkpoint to files that load with from_pretrained (the method's module, peft "
                      "adapters, the host's config or trained weights)",
                      "lvu ckpt export runs/linvt/instruct/version_0/checkpoints/last.ckpt exported/")
    sub.add_argument("checkpoint", help="Lightning checkpoint file or DeepSpeed checkpoint folder")
    sub.add_argument("out", help="folder to write")
    sub.add_argument("--force", action="store_true", help="replace an earlier export in --out")
    sub.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                     help="changes to the checkpoint's recorded recipe, e.g. host.path=/new/place for a host that "
                          "has moved since training")
    sub.set_defaults(func=cmd_export)

    sub = add_command(subparsers, "universal",
                      "a DeepSpeed ZeRO folder to a universal checkpoint that resumes on any number of ranks",
                      "lvu ckpt universal runs/x/slurm-1234/checkpoints/last.ckpt --out last.universal")
    sub.add_argument("checkpoint", help="DeepSpeed checkpoint folder")
    sub.add_argument("--out", required=True, help="folder to write")
    sub.add_argument("--force", action="store_true", help="replace --out even if it holds something else")
    sub.set_defaults(func=cmd_universal)
