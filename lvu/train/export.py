"""``lvu ckpt export``: a checkpoint to files that load outside lvu, written by its task's exporter.

The recipe the checkpoint was trained with is rebuilt from its lvu record (upgraded first when an older version of
the task wrote it), and handed with the consolidated weights to ``TaskSpec.export``. Each exporter lists what it
wrote in ``export.json`` (``written``), which is what ``--force`` removes before a new export into the same folder.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lvu.ckpt import EXPORT_RECORD, consolidated_state_dict
from lvu.config import validate
from lvu.errors import LvuError
from lvu.tasks.registry import get_task

# What exports written before export.json listed its parts contained (LinVT's first format).
LEGACY_PARTS = ("linvt", "adapter", "host", EXPORT_RECORD)


def recorded_recipe(record: dict[str, Any], source: Path, overrides: list[str] | None = None) -> Any:
    """The typed recipe of a checkpoint's lvu record (its config in today's schema), with ``key=value``
    ``overrides`` on top (a host that has moved since training: ``host.path=/new/place``)."""
    if not record.get("task") or not record.get("config"):
        raise LvuError(f"{source} has no lvu record (task and recipe); only checkpoints written by `lvu fit` export")
    spec = get_task(record["task"])
    config = spec.upgrade(record["config"]) if spec.upgrade is not None else record["config"]
    merged = OmegaConf.merge(OmegaConf.create(config), OmegaConf.from_dotlist(list(overrides or [])))
    return OmegaConf.to_object(validate(merged, spec.config_class))


def _check_host_files(cfg: Any) -> None:
    """An export reads the host's config files (to name adapter modules, to copy them beside the export)."""
    host = getattr(cfg, "host", None)
    for key in ("path", "vision", "llm"):
        place = getattr(host, key, None) if host is not None else None
        if place and not (Path(place) / "config.json").is_file():
            raise LvuError(f"the checkpoint's host.{key} {place} has no config.json here; if the host has moved, "
                           f"name it: lvu ckpt export CKPT OUT host.{key}=/new/place")


def clear_export(out: Path) -> None:
    """Remove what an earlier export wrote into ``out``, so that no stale part survives a new export."""
    record = out / EXPORT_RECORD
    written = json.loads(record.read_text()).get("written") if record.is_file() else None
    for name in [*(written or LEGACY_PARTS), EXPORT_RECORD]:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def export_checkpoint(path: Path, out: Path, *, force: bool = False, overrides: list[str] | None = None
                      ) -> dict[str, Any]:
    """Export the checkpoint at ``path`` into the folder ``out``; returns the exporter's summary. ``overrides``
    change the recorded recipe (see :func:`recorded_recipe`)."""
    if out.exists() and any(out.iterdir()):
        if not force:
            raise LvuError(f"{out} exists and is not empty; pass --force to replace what an earlier export wrote")
        clear_export(out)
    loaded = consolidated_state_dict(path)
    cfg = recorded_recipe(loaded.record, path, overrides)
    _check_host_files(cfg)
    spec = get_task(loaded.record["task"])
    if spec.export is None:
        raise LvuError(f"task '{spec.name}' has no export format; `lvu ckpt convert` writes its weights")
    return spec.export(cfg, loaded.state, loaded.entries, out)
