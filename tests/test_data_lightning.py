"""The loader under a real Lightning Trainer: DDP on 2 CPU processes, stopped mid-epoch and resumed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_resume import Background

SCRIPT = Path(__file__).parent / "support" / "loader_resume.py"


def _command(shards: Path, out: Path, steps: int, devices: int, ckpt: Path | None = None) -> list[str]:
    return [sys.executable, str(SCRIPT), str(shards), str(out), str(steps), str(devices),
            *([str(ckpt)] if ckpt is not None else [])]


def _run(shards: Path, out: Path, steps: int, devices: int, ckpt: Path | None = None) -> None:
    result = subprocess.run(_command(shards, out, steps, devices, ckpt), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def _keys(out: Path, rank: int) -> list[tuple[int, list[str]]]:
    lines = (out / f"keys_rank{rank}.jsonl").read_text().splitlines()
    return [(r["step"], r["keys"]) for r in map(json.loads, lines)]


@pytest.mark.slow
def test_ddp_resume_mid_epoch_sees_exactly_the_uninterrupted_samples(synth_shards, tmp_path):
    # 10 videos, 2 ranks x batch 2: 2 batches per rank per epoch. Stop at step 3 (mid-epoch 1), resume to 5.
    # The uninterrupted run goes alongside the interrupted one (each is mostly one process importing at a time).
    with Background(_command(synth_shards, tmp_path / "full", 5, devices=2)[2:], tmp_path / "full.log",
                    script=str(SCRIPT)) as full_run:
        _run(synth_shards, tmp_path / "cut", 3, devices=2)
        _run(synth_shards, tmp_path / "cut", 5, devices=2, ckpt=tmp_path / "cut" / "ckpt" / "last.ckpt")
        full_run.wait_ok(timeout=300)
    for rank in (0, 1):
        full, resumed = _keys(tmp_path / "full", rank), _keys(tmp_path / "cut", rank)
        assert [s for s, _ in full] == [0, 1, 2, 3, 4]
        assert resumed == full, f"rank {rank}"
    seen = [{k for _, keys in _keys(tmp_path / "full", r) for k in keys} for r in (0, 1)]
    assert len(_keys(tmp_path / "full", 0)) == len(_keys(tmp_path / "full", 1))
    first_epoch = [{k for _, keys in _keys(tmp_path / "full", r)[:2] for k in keys} for r in (0, 1)]
    assert not first_epoch[0] & first_epoch[1] and seen[0] and seen[1]


def test_skipped_samples_are_logged_to_the_trainer(synth_shards, tmp_path):
    import shutil

    from lvu.data.shards import ShardReader, resolve_shards, write_shard

    reader = ShardReader(resolve_shards(str(synth_shards)))
    samples = [(r["__key__"], {"mp4": r["mp4"], "json": r["json"]}) for r in (reader.read(0, i) for i in range(4))]
    samples[1] = ("corrupt", {"mp4": b"not a video at all" * 100, "json": samples[1][1]["json"]})
    shards = tmp_path / "shards"
    write_shard(shards / "shard-000000.tar", samples)
    shutil.copy(synth_shards / "shard-000001.tar", shards / "shard-000001.tar")
    _run(shards, tmp_path / "run", 4, devices=1)
    metrics = next((tmp_path / "run" / "logs").rglob("metrics.csv")).read_text()
    assert "data/skipped_undecodable_video" in metrics.splitlines()[0]
