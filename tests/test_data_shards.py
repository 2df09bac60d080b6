"""Shard format: reproducible writing, stock tools read ours, we read theirs, truncation, manifests."""

from __future__ import annotations

import json
import subprocess
import tarfile

import numpy as np
import pytest
import webdataset as wds

from lvu.data.shards import (
    Manifest,
    ShardInfo,
    ShardReader,
    resolve_shards,
    scan_tar,
    write_shard,
)
from lvu.errors import LvuError

SAMPLES = [
    (f"clip{i:03d}", {"json": {"caption": f"clip {i}", "duration_s": 1.0 + i}, "npy": np.full((3, 4), i, np.float16)})
    for i in range(5)
]


def test_writing_is_byte_reproducible(tmp_path):
    write_shard(tmp_path / "a.tar", SAMPLES)
    write_shard(tmp_path / "b.tar", SAMPLES)
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically


def test_stock_webdataset_and_tar_read_our_shards(tmp_path, synth_shards):
    write_shard(tmp_path / "f.tar", SAMPLES)
    listing = subprocess.run(["tar", "-tf", str(tmp_path / "f.tar")], capture_output=True, text=True, check=True)
    assert listing.stdout.split()[:2] == ["clip000.json", "clip000.npy"]
    samples = list(wds.WebDataset(str(tmp_path / "f.tar"), shardshuffle=False).decode())
    assert [s["__key__"] for s in samples] == [k for k, _ in SAMPLES]
    assert samples[2]["json"]["caption"] == "clip 2" and samples[2]["npy"].shape == (3, 4)
    videos = list(wds.WebDataset(str(synth_shards / "shard-000000.tar"), shardshuffle=False))
    assert len(videos) == 4 and set(videos[0]) >= {"__key__", "mp4", "json"}
    assert json.loads(videos[0]["json"])["source"] == "synthetic"


def test_we_read_shards_written_by_webdataset_without_a_manifest(tmp_path):
    folder = tmp_path / "foreign"
    folder.mkdir()
    with wds.TarWriter(str(folder / "00000.tar")) as sink:  # video2dataset layout: key.mp4 + key.json
        for i in range(3):
            sink.write({"__key__": f"{i:09d}", "mp4": b"fake-video", "json": {"caption": f"v{i}"}})
    shards = resolve_shards(str(folder))
    assert [(s.name, s.samples) for s in shards] == [("00000.tar", 3)]
    sample = ShardReader(shards).read(0, 2)
    assert sample["__key__"] == "000000002" and sample["mp4"] == b"fake-video"
    assert json.loads(sample["json"]) == {"caption": "v2"}


def test_truncated_tar_keeps_complete_samples(tmp_path):
    path = tmp_path / "t.tar"
    write_shard(path, SAMPLES)
    offset, _ = scan_tar(path).samples[3][1]["npy"]
    path.write_bytes(path.read_bytes()[: offset + 10])  # cut inside the data of clip003.npy
    index = scan_tar(path)
    assert index.error is not None
    assert [k for k, _ in index.samples] == ["clip000", "clip001", "clip002"]


def test_manifest_round_trip_and_errors(tmp_path):
    write_shard(tmp_path / "shard-000000.tar", SAMPLES)
    manifest = Manifest([ShardInfo(tmp_path / "shard-000000.tar", 5)], kind="features", extra={"dim": 4})
    manifest.save(tmp_path)
    loaded = Manifest.load(tmp_path)
    assert loaded.total == 5 and loaded.kind == "features" and loaded.extra == {"dim": 4}
    assert [s.samples for s in resolve_shards(str(tmp_path / "manifest.json"))] == [5]
    payload = json.loads((tmp_path / "manifest.json").read_text())
    payload["schema_version"] = 99
    (tmp_path / "manifest.json").write_text(json.dumps(payload))
    with pytest.raises(LvuError, match="schema version 99 is not supported"):
        Manifest.load(tmp_path)
    with pytest.raises(LvuError, match="no shards found"):
        resolve_shards(str(tmp_path / "nothing-*.tar"))


def test_brace_patterns_and_globs(tmp_path):
    for i in range(3):
        write_shard(tmp_path / f"part-{i}.tar", SAMPLES[:2])
    assert len(resolve_shards(str(tmp_path / "part-{0..2}.tar"))) == 3
    assert len(resolve_shards(str(tmp_path / "part-*.tar"))) == 3
    with tarfile.open(tmp_path / "part-0.tar") as tar:
        assert all(m.mtime == 0 and m.uid == 0 for m in tar.getmembers())


def test_a_truncated_shard_without_a_manifest_is_a_bad_shard_not_a_shorter_one(tmp_path, capsys):
    """It used to resolve as a 3-sample shard: the loss passed unseen even with data.strict, and `lvu data index`
    made it permanent by writing the short count."""
    from lvu.cli import main
    from lvu.data.shards import BadSample

    folder = tmp_path / "shards"
    folder.mkdir()
    path = folder / "shard-000000.tar"
    write_shard(path, SAMPLES)
    offset, _ = scan_tar(path).samples[3][1]["npy"]
    path.write_bytes(path.read_bytes()[: offset + 10])  # cut inside clip003
    (info,) = resolve_shards(str(folder))
    assert info.samples == 4  # 3 whole + (at least) the one cut short
    reader = ShardReader([info])
    assert reader.read(0, 2)["__key__"] == "clip002"
    with pytest.raises(BadSample) as lost:
        reader.read(0, 3)
    assert lost.value.reason == "truncated_shard" and "truncated tar" in str(lost.value)
    assert main(["data", "index", str(folder)]) == 1
    err = capsys.readouterr().err
    assert "1 shard(s) are truncated or unreadable" in err and "shard-000000.tar: member clip003.npy" in err
    assert not (folder / "manifest.json").exists()
    assert main(["data", "index", str(folder), "--allow-truncated"]) == 0
    manifest = Manifest.load(folder)
    assert manifest.total == 4 and "shard-000000.tar" in manifest.extra["truncated"]


def test_tar_indices_are_remembered_until_the_file_changes(tmp_path):
    from lvu.data.shards import indexed_tar

    path = tmp_path / "s.tar"
    write_shard(path, [(f"k{i}", {"json": {"i": i}}) for i in range(3)])
    first = indexed_tar(path)
    assert indexed_tar(path) is first and len(first.samples) == 3  # not scanned again
    write_shard(path, [(f"k{i}", {"json": {"i": i}}) for i in range(5)])  # rewritten: another size and time
    assert len(indexed_tar(path).samples) == 5
