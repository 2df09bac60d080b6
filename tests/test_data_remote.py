"""Shards from anywhere: gzip-compressed tars, ``pipe:`` commands and HTTP, read exactly like local shards."""

from __future__ import annotations

import functools
import gzip
import http.server
import shutil
import threading
from pathlib import Path

import pytest

from lvu.data import remote
from lvu.data.shards import BadSample, ShardReader, iter_samples, resolve_shards
from lvu.errors import LvuError


def _samples(shards) -> list[dict]:
    return [{k: v for k, v in s.items() if k not in ("__shard__", "__path__")} for s in iter_samples(shards)]


@pytest.fixture(scope="module")
def http_root(synth_shards, tmp_path_factory):
    """A local HTTP server (a thread of this process) serving a copy of the synthetic shards under /shards/."""
    root = tmp_path_factory.mktemp("www")
    shutil.copytree(synth_shards, root / "shards")
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


def _gzip_copy(synth_shards: Path, out: Path) -> Path:
    out.mkdir()
    for tar in sorted(synth_shards.glob("*.tar")):
        (out / (tar.name + ".gz")).write_bytes(gzip.compress(tar.read_bytes()))
    return out


def test_gzip_shards_read_as_the_plain_tars(synth_shards, tmp_path, shard_cache):
    plain = resolve_shards(str(synth_shards))
    folder = _gzip_copy(synth_shards, tmp_path / "gz")
    for source in (str(folder), str(folder / "shard-*.tar.gz"), str(folder / "shard-{000000..000002}.tar.gz")):
        shards = resolve_shards(source)
        assert [s.samples for s in shards] == [s.samples for s in plain] == [4, 4, 2]
        assert [s.name for s in shards] == [s.name + ".gz" for s in plain]
        assert all(s.path.parent == shard_cache for s in shards)  # decompressed copies, in the cache
        assert _samples(shards) == _samples(plain)


def test_a_cut_gzip_shard_is_a_truncated_shard(synth_shards, tmp_path):
    folder = _gzip_copy(synth_shards, tmp_path / "gz")
    victim = folder / "shard-000001.tar.gz"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) * 2 // 3])
    shards = resolve_shards(str(folder))
    # A complete tar holds 4; the cut copy keeps fewer whole samples plus one counted as lost, as for a local tar.
    assert shards[1].samples < 4
    reader = ShardReader(shards)
    assert reader.index(1).error.startswith("the gzip stream ends before its end marker")
    with pytest.raises(BadSample) as bad:
        reader.read(1, shards[1].samples - 1)
    assert bad.value.reason == "truncated_shard" and bad.value.shard == "shard-000001.tar.gz"
    reader.close()


def test_pipe_sources_expand_braces_and_read_every_sample(synth_shards):
    plain = resolve_shards(str(synth_shards))
    piped = resolve_shards(f"pipe:cat {synth_shards}/shard-{{000000..000002}}.tar")
    assert [s.samples for s in piped] == [4, 4, 2]
    assert [s.name for s in piped] == [s.name for s in plain]  # the command's last word: the file it reads
    assert _samples(piped) == _samples(plain)


def test_a_failing_pipe_stops_with_one_line_naming_the_shard(monkeypatch, tmp_path):
    monkeypatch.setattr(remote, "FETCH_TRIES", 2)
    monkeypatch.setattr(remote.time, "sleep", lambda s: None)
    with pytest.raises(LvuError, match=r"cannot fetch shard pipe:cat .*missing\.tar \(2 tries\): .*exit 1"):
        resolve_shards(f"pipe:cat {tmp_path}/missing.tar")
    left = [p.name for p in Path(remote.shard_cache()).glob("*missing*") if not p.name.endswith(".lock")]
    assert left == []  # neither a copy nor a half-written partial is kept


def test_http_shards_by_manifest_folder_and_pattern(synth_shards, http_root):
    _, url = http_root
    plain = _samples(resolve_shards(str(synth_shards)))
    for source in (f"{url}/shards/", f"{url}/shards/manifest.json", f"{url}/shards/shard-{{000000..000002}}.tar"):
        shards = resolve_shards(source)
        assert [s.samples for s in shards] == [4, 4, 2], source
        assert _samples(shards) == plain, source


def test_http_manifest_fetches_only_the_shards_read(http_root, tmp_path):
    _, url = http_root
    shards = resolve_shards(f"{url}/shards/", cache=tmp_path / "cache")
    assert not any((tmp_path / "cache").glob("*.tar"))  # counts came from the manifest
    reader = ShardReader(shards)
    reader.read(2, 0)
    reader.close()
    assert [p.name.split("-", 1)[1] for p in (tmp_path / "cache").glob("*.tar")] == ["shard-000002.tar"]


def test_a_missing_url_stops_with_one_line(http_root, monkeypatch):
    _, url = http_root
    monkeypatch.setattr(remote.time, "sleep", lambda s: None)
    with pytest.raises(LvuError, match=r"cannot fetch shard http://.*/nothing-here\.tar \(3 tries\)"):
        resolve_shards(f"{url}/shards/nothing-here.tar")


def test_a_listable_url_glob(synth_shards):
    shards = resolve_shards(f"file://{synth_shards}/shard-*.tar")
    assert [s.samples for s in shards] == [4, 4, 2]
    assert _samples(shards) == _samples(resolve_shards(str(synth_shards)))
    with pytest.raises(LvuError, match="no shards found at file://"):
        resolve_shards(f"file://{synth_shards}/nothing-*.tar")


def test_lvu_data_index_counts_gzip_shards(synth_shards, tmp_path):
    import json

    from lvu.cli import main

    folder = _gzip_copy(synth_shards, tmp_path / "gz")
    assert main(["data", "index", str(folder)]) == 0
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [(s["file"], s["samples"]) for s in manifest["shards"]] == [
        ("shard-000000.tar.gz", 4), ("shard-000001.tar.gz", 4), ("shard-000002.tar.gz", 2)]
    assert _samples(resolve_shards(str(folder))) == _samples(resolve_shards(str(synth_shards)))


# -- exact mid-epoch resume under a real Trainer, over pipe: and HTTP ------------------------------------------------


def _with_a_corrupt_sample(synth_shards: Path, out: Path) -> Path:
    """The synthetic shards with sample 1 of shard 0 undecodable, and a manifest (``lvu data index``)."""
    from lvu.cli import main
    from lvu.data.shards import write_shard

    reader = ShardReader(resolve_shards(str(synth_shards)))
    samples = [(r["__key__"], {"mp4": r["mp4"], "json": r["json"]}) for r in (reader.read(0, i) for i in range(4))]
    reader.close()
    samples[1] = ("corrupt", {"mp4": b"not a video at all" * 100, "json": samples[1][1]["json"]})
    write_shard(out / "shard-000000.tar", samples)
    for tar in ("shard-000001.tar", "shard-000002.tar"):
        shutil.copy(synth_shards / tar, out / tar)
    assert main(["data", "index", str(out)]) == 0
    return out


def _skipped(out: Path) -> list[str]:
    import csv

    rows = list(csv.DictReader(next((out / "logs").rglob("metrics.csv")).open()))
    return [r["data/skipped_undecodable_video"] for r in rows if r.get("data/skipped_undecodable_video")]


@pytest.mark.slow
def test_resume_mid_epoch_over_pipe_and_http_sees_the_local_runs_samples(synth_shards, http_root, tmp_path):
    import os
    import subprocess
    import sys

    from test_data_lightning import SCRIPT, _keys
    from test_resume import Background

    root, url = http_root
    local = _with_a_corrupt_sample(synth_shards, root / "bad")
    sources = {"pipe": f"pipe:cat {local}/shard-{{000000..000002}}.tar", "http": f"{url}/bad/"}

    def run(source: str, out: Path, steps: int, cache: str, ckpt: Path | None = None) -> None:
        env = {**os.environ, "LVU_SHARD_CACHE": str(tmp_path / cache)}  # each run fetches afresh
        command = [sys.executable, str(SCRIPT), source, str(out), str(steps), "1", *([str(ckpt)] if ckpt else [])]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0, result.stderr[-3000:]

    # 9 samples + 1 bad one, batch 2: 5 batches an epoch. Stop at step 3 (mid-epoch 0), resume to 7 (epoch 1).
    with Background([str(local), str(tmp_path / "local"), "7", "1"], tmp_path / "local.log",
                    script=str(SCRIPT)) as reference:
        for name, source in sources.items():
            run(source, tmp_path / name, 3, f"{name}-cache-1")
            run(source, tmp_path / name, 7, f"{name}-cache-2", tmp_path / name / "ckpt" / "last.ckpt")
        reference.wait_ok(timeout=300)
    expected = _keys(tmp_path / "local", 0)
    assert [step for step, _ in expected] == list(range(7))
    assert all("corrupt" not in keys for _, keys in expected) and float(_skipped(tmp_path / "local")[-1]) >= 1
    for name in sources:
        assert _keys(tmp_path / name, 0) == expected, name
        assert _skipped(tmp_path / name)[-1] == _skipped(tmp_path / "local")[-1], name
    assert any((tmp_path / "http-cache-2").glob("*shard-000000.tar"))  # the resumed run fetched its own copy


def test_lvu_data_inspect_reads_http_and_pipe_sources(synth_shards, http_root, capsys):
    import json

    from lvu.cli import main

    _, url = http_root
    for source in (f"{url}/shards/", f"pipe:cat {synth_shards}/shard-{{000000..000002}}.tar"):
        assert main(["data", "inspect", source, "--quick", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["samples"] == 10 and report["unreadable"] == 0, source


def test_a_remote_gzip_stream_cut_short_is_fetched_again_then_read_as_truncated(synth_shards, http_root,
                                                                                  monkeypatch, caplog):
    root, url = http_root
    data = gzip.compress((synth_shards / "shard-000001.tar").read_bytes())
    (root / "cut.tar.gz").write_bytes(data[: len(data) * 2 // 3])
    monkeypatch.setattr(remote.time, "sleep", lambda s: None)
    (shard,) = resolve_shards(f"{url}/cut.tar.gz")
    # Fetched 3 times (a cut in transit would have healed); cut every time, it is the file itself: a truncated shard.
    assert caplog.text.count("the gzip stream ends before its end marker") == 2
    reader = ShardReader([shard])
    assert reader.index(0).error.startswith("the gzip stream ends before its end marker")
    with pytest.raises(BadSample, match=r"sample \d+ is missing"):
        reader.read(0, shard.samples - 1)
    reader.close()


def test_a_rebuilt_local_gzip_shard_gets_a_fresh_copy(synth_shards, tmp_path):
    import os

    shard = tmp_path / "s.tar.gz"
    shard.write_bytes(gzip.compress((synth_shards / "shard-000002.tar").read_bytes()))
    assert [s.samples for s in resolve_shards(str(shard))] == [2]
    shard.write_bytes(gzip.compress((synth_shards / "shard-000000.tar").read_bytes()))
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    assert [s.samples for s in resolve_shards(str(shard))] == [4]  # not the old copy's 2


def test_shard_names_in_messages_are_the_files_a_source_names():
    assert remote.display_name("pipe:aws s3 cp s3://bucket/train/shard-000007.tar -") == "shard-000007.tar"
    assert remote.display_name("pipe:curl -sf https://h/x/shard-000001.tar.gz | zcat") == "shard-000001.tar.gz"
    assert remote.display_name("https://h/dl?id=3") == "dl?id=3"
    assert remote.display_name("s3://bucket/a/shard-000002.tar") == "shard-000002.tar"
