"""``lvu ckpt ...``: look inside, convert and export checkpoints (only export builds a model)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from lvu.errors import LvuError
from lvu.train.callbacks import CHECKPOINT_KEY


def _deepspeed_client_state(path: Path) -> Path:
    """The file of a DeepSpeed checkpoint folder that holds Lightning's state (rank 0's model states)."""
    tag_file = path / "latest"
    if not tag_file.is_file():
        raise LvuError(f"{path} is a folder but not a DeepSpeed checkpoint (no 'latest'); give a checkpoint file, "
                       f"e.g. {path}/checkpoints/last.ckpt")
    tag = tag_file.read_text().strip()
    # ZeRO-1/2: mp_rank_00_model_states.pt; ZeRO-3: zero_pp_rank_0_mp_rank_00_model_states.pt.
    candidates = sorted((path / tag).glob("*mp_rank_00_model_states.pt"))
    if not candidates:
        raise LvuError(f"{path}: DeepSpeed tag '{tag}' has no model states file")
    return candidates[0]


def _parameter_count(ckpt: dict[str, Any], state: dict[str, Any]) -> int:
    shapes = ckpt.get("param_shapes")
    if shapes:  # DeepSpeed records full shapes; under ZeRO-3 the module holds only empty placeholders
        import math

        groups = shapes if isinstance(shapes, list) else [shapes]
        return int(sum(math.prod(shape) for group in groups for shape in group.values()))
    return int(sum(t.numel() for t in state.values() if hasattr(t, "numel")))


def read_checkpoint_info(path: Path) -> dict[str, Any]:
    """Step, epoch and the lvu record of a Lightning checkpoint file or DeepSpeed checkpoint folder.

    Files are memory-mapped, so inspecting a multi-GB checkpoint does not read its tensors.
    """

    if not path.exists():
        raise LvuError(f"checkpoint {path} not found")
    deepspeed = path.is_dir()
    source = _deepspeed_client_state(path) if deepspeed else path
    ckpt = _load(source)
    if deepspeed and isinstance(ckpt, dict) and "module" in ckpt:
        ckpt["state_dict"] = ckpt.get("module") or {}  # ZeRO-3 keeps the weights in the per-rank shards
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
        "format": "deepspeed" if deepspeed else "lightning",
        "parameters": _parameter_count(ckpt, state),
        "tensors": len(state),
        "has_optimizer_state": bool(ckpt.get("optimizer_states") or ckpt.get("optimizer")) or deepspeed,
        "config": config,
    }


LIGHTNING_WRAPPER_PREFIX = "_forward_module."


def _load(source: Path) -> dict[str, Any]:
    import torch

    try:
        # Checkpoints hold pickled Lightning loop state, so weights_only=False: only open checkpoints you trust.
        return torch.load(source, map_location="cpu", mmap=True, weights_only=False)
    except Exception as exc:
        raise LvuError(f"{source} is not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from None


def consolidated_state_dict(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(fp32 state dict of the whole model, the checkpoint's other top-level entries) from a Lightning file or a
    DeepSpeed ZeRO folder (shards gathered with DeepSpeed's zero_to_fp32, Lightning's wrapper prefix removed)."""
    import torch

    if not path.exists():
        raise LvuError(f"checkpoint {path} not found")
    if path.is_dir():
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        client = _load(_deepspeed_client_state(path))
        tag = (path / "latest").read_text().strip()
        state = get_fp32_state_dict_from_zero_checkpoint(str(path), tag=tag)
        state = {k.removeprefix(LIGHTNING_WRAPPER_PREFIX): v for k, v in state.items()}
    else:
        client = _load(path)
        if not isinstance(client, dict) or "state_dict" not in client:
            raise LvuError(f"{path} is not a Lightning checkpoint (no 'state_dict')")
        state = client["state_dict"]
    state = {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in state.items()}
    return state, client


def convert_checkpoint(path: Path, out: Path) -> dict[str, Any]:
    """Write one consolidated fp32 checkpoint: ``state_dict`` plus step, epoch and the lvu record, without
    optimiser or loop state. ``lvu validate/test/predict --ckpt`` and ``probe.pretrained`` accept it."""
    import torch

    state, client = consolidated_state_dict(path)
    payload = {"state_dict": state, "global_step": client.get("global_step"), "epoch": client.get("epoch"),
               "pytorch-lightning_version": client.get("pytorch-lightning_version")}
    if client.get(CHECKPOINT_KEY):
        payload[CHECKPOINT_KEY] = {**client[CHECKPOINT_KEY], "converted_from": str(path)}
    out.parent.mkdir(parents=True, exist_ok=True)
    from lvu.train.checkpointing import AtomicCheckpointIO

    AtomicCheckpointIO().save_checkpoint(payload, out)
    return {"path": str(out), "tensors": len(state), "parameters": int(sum(t.numel() for t in state.values()
                                                                          if torch.is_tensor(t))),
            "global_step": payload["global_step"]}


def cmd_convert(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not args.force:
        raise LvuError(f"{out} exists; pass --force to overwrite it")
    result = convert_checkpoint(Path(args.checkpoint), out)
    print(f"wrote {result['path']}: {result['tensors']} tensors, {result['parameters']:,} parameters (fp32), "
          f"step {result['global_step']}")
    return 0


def cmd_universal(args: argparse.Namespace) -> int:
    from lvu.train.universal import convert_to_universal, deepspeed_world_size

    path = Path(args.checkpoint)
    if not path.is_dir():
        raise LvuError(f"{path} is not a DeepSpeed checkpoint folder; files from DDP or one device load on any "
                       f"world size as they are")
    out = convert_to_universal(path, Path(args.out), quiet=False, force=args.force)
    print(f"wrote {out}: universal checkpoint of {path} (written by {deepspeed_world_size(path)} ranks); resume it "
          f"on any number of ranks with `lvu fit RECIPE --ckpt {out}`")
    return 0


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


def export_checkpoint(path: Path, out: Path) -> dict[str, Any]:
    """Hand a checkpoint to its task's exporter, with the recipe it was trained with rebuilt from the record."""
    from omegaconf import OmegaConf

    from lvu.config import validate
    from lvu.tasks.registry import get_task

    state, client = consolidated_state_dict(path)
    info = client.get(CHECKPOINT_KEY) or {}
    if not info.get("task") or not info.get("config"):
        raise LvuError(f"{path} has no lvu record (task and recipe); only checkpoints written by `lvu fit` export")
    spec = get_task(info["task"])
    if spec.export is None:
        raise LvuError(f"task '{info['task']}' has no export format; `lvu ckpt convert` writes its weights")
    cfg = OmegaConf.to_object(validate(OmegaConf.create(info["config"]), spec.config_class))
    return spec.export(cfg, state, client, out)


def cmd_export(args: argparse.Namespace) -> int:
    from lvu.tasks.linvt_export import clear_export

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        if not args.force:
            raise LvuError(f"{out} exists and is not empty; pass --force to replace what an earlier export wrote")
        clear_export(out)
    summary = export_checkpoint(Path(args.checkpoint), out)
    print(json.dumps(summary, indent=2))
    return 0


def add_ckpt_commands(subparsers: argparse._SubParsersAction) -> None:
    from lvu.cli import add_command

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
                      "a checkpoint to files that load with from_pretrained (LinVT: LinVT, peft adapter, host config)",
                      "lvu ckpt export runs/linvt/instruct/version_0/checkpoints/last.ckpt exported/")
    sub.add_argument("checkpoint", help="Lightning checkpoint file or DeepSpeed checkpoint folder")
    sub.add_argument("out", help="folder to write")
    sub.add_argument("--force", action="store_true", help="replace an earlier export in --out")
    sub.set_defaults(func=cmd_export)

    sub = add_command(subparsers, "universal",
                      "a DeepSpeed ZeRO folder to a universal checkpoint that resumes on any number of ranks",
                      "lvu ckpt universal runs/x/slurm-1234/checkpoints/last.ckpt --out last.universal")
    sub.add_argument("checkpoint", help="DeepSpeed checkpoint folder")
    sub.add_argument("--out", required=True, help="folder to write")
    sub.add_argument("--force", action="store_true", help="replace --out even if it holds something else")
    sub.set_defaults(func=cmd_universal)
