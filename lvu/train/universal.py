"""DeepSpeed universal checkpoints: the route to resume a ZeRO run on a different number of ranks.

ZeRO stores each rank's slice of the optimiser state (and, under stage 3, of the parameters), so a checkpoint only
loads on the world size that wrote it. DeepSpeed's ``ds_to_universal`` rewrites the slices per parameter; a run of
any size then loads them with ``load_universal_checkpoint``. Lightning has no support for it; lvu converts
automatically when a resume changes the world size (``LvuDeepSpeedStrategy.load_checkpoint``), or on demand with
``lvu ckpt universal``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from lvu.errors import LvuError

TAG = "checkpoint"  # the tag Lightning's DeepSpeedStrategy saves under
DONE = "lvu_universal.json"


def deepspeed_world_size(path: Path) -> int | None:
    """Data-parallel ranks that wrote a DeepSpeed checkpoint folder (from its per-rank shard files)."""
    tag_dir = path / ((path / "latest").read_text().strip() if (path / "latest").is_file() else TAG)
    # bf16 runs name their optimiser shards bf16_zero_pp_rank_N_...
    ranks = {int(m.group(1)) for f in tag_dir.glob("*zero_pp_rank_*_mp_rank_00_*states.pt")
             if (m := re.match(r"(?:bf16_)?zero_pp_rank_(\d+)_", f.name))}
    return len(ranks) or None


def universal_path(path: Path) -> Path:
    return path.parent / f".{path.name}.universal"


def convert_to_universal(path: Path, out: Path, *, quiet: bool = True, force: bool = False) -> Path:
    """Write the universal form of the DeepSpeed checkpoint folder ``path`` to ``out`` (a folder that
    ``--ckpt`` and Lightning's DeepSpeedStrategy accept). Reuses ``out`` when it was made from the same files;
    replaces an older conversion; refuses to replace anything else unless ``force``."""
    tag = (path / "latest").read_text().strip() if (path / "latest").is_file() else TAG
    source = path / tag
    if not source.is_dir():
        raise LvuError(f"{path} is not a DeepSpeed checkpoint folder (no {tag}/)")
    stamp = {"source": str(path.resolve()), "mtime": max(f.stat().st_mtime for f in source.iterdir())}
    done = out / DONE
    if done.is_file() and json.loads(done.read_text()) == stamp:
        return out
    if out.exists() and not done.is_file() and not force and any(out.iterdir()):
        raise LvuError(f"{out} exists and is not a universal checkpoint made by lvu; pass --force to replace it")
    # Written beside the target and renamed into place: a failed or concurrent conversion never leaves a
    # half-written folder under the final name.
    work = out.parent / f".{out.name}.converting-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        _run_converter(source, work, quiet)
        (work / "latest").write_text(TAG)  # what Lightning's checkpoint-folder check looks for
        (work / "latest_universal").write_text(TAG)
        (work / DONE).write_text(json.dumps(stamp))
        shutil.rmtree(out, ignore_errors=True)
        os.replace(work, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _run_converter(source: Path, work: Path, quiet: bool) -> None:
    command = [sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal", "--input_folder", str(source),
               "--output_folder", str(work / TAG), "--num_extract_workers", "1", "--num_merge_workers", "1",
               # Lightning's checkpoints lack DeepSpeed's optional parameter-layout record; plain data parallelism
               # needs none, and the converter then fills in the default.
               "--inject_missing_state"]
    env = {**os.environ, "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu")}
    result = subprocess.run(command, capture_output=quiet, text=True, env=env)
    if result.returncode != 0:
        detail = (result.stderr or "").strip().splitlines()[-1:] if quiet else []
        raise LvuError(f"converting {source.parent} to a universal checkpoint failed: "
                       f"{' '.join(detail) or 'see output above'}")
