"""``lvu ckpt ...``: look inside checkpoints without building a model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from lvu.errors import LvuError
from lvu.train.callbacks import CHECKPOINT_KEY


def read_checkpoint_info(path: Path) -> dict[str, Any]:
    """Step, epoch and the lvu record of a Lightning checkpoint file.

    The file is memory-mapped, so inspecting a multi-GB checkpoint does not read its tensors.
    """
    import torch

    if not path.exists():
        raise LvuError(f"checkpoint {path} not found")
    if path.is_dir():
        raise LvuError(f"{path} is a folder; give a checkpoint file (e.g. {path}/checkpoints/last.ckpt)")
    try:
        # Checkpoints hold pickled Lightning loop state, so weights_only=False: only open checkpoints you trust.
        ckpt = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception as exc:
        raise LvuError(f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise LvuError(f"{path} is not a Lightning checkpoint (no 'state_dict')")
    info = dict(ckpt.get(CHECKPOINT_KEY) or {})
    config = info.pop("config", None)
    state = ckpt["state_dict"]
    return {
        "path": str(path),
        "global_step": ckpt.get("global_step"),
        "epoch": ckpt.get("epoch"),
        "task": info.get("task"),
        "recipe": info.get("recipe"),
        "world_size": info.get("world_size"),
        "strategy": info.get("strategy"),
        "config_digest": info.get("config_digest"),
        "lvu_version": info.get("lvu_version"),
        "lightning_version": ckpt.get("pytorch-lightning_version"),
        "parameters": int(sum(t.numel() for t in state.values() if hasattr(t, "numel"))),
        "tensors": len(state),
        "has_optimizer_state": bool(ckpt.get("optimizer_states")),
        "config": config,
    }


def cmd_inspect(args: argparse.Namespace) -> int:
    info = read_checkpoint_info(Path(args.checkpoint))
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    for key, value in info.items():
        if key != "config":
            print(f"{key:20s} {value}")
    if info["task"] is None:
        print("note: no lvu record: this checkpoint was not written by `lvu fit`")
    return 0


def add_ckpt_commands(subparsers: argparse._SubParsersAction) -> None:
    from lvu.cli import add_command

    sub = add_command(subparsers, "inspect",
                      "step, epoch, world size, strategy, task and config digest of a checkpoint",
                      "lvu ckpt inspect runs/lvmae/pretrain/version_0/checkpoints/last.ckpt")
    sub.add_argument("checkpoint", help="Lightning checkpoint file")
    sub.add_argument("--json", action="store_true", help="print one JSON object (includes the resolved config)")
    sub.set_defaults(func=cmd_inspect)
