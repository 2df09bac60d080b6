"""ShardLoader: exact mid-epoch resume, rank balance, worker independence, bad data."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from support.media import zero_frame_mp4

from lvu.data.decoders import VideoDecoder
from lvu.data.loader import SampleSet, ShardLoader
from lvu.data.sampling import SamplerConfig
from lvu.data.shards import ShardInfo, ShardReader, resolve_shards, scan_tar, write_shard
from lvu.data.synth import SynthConfig, make_video, read_timecode
from lvu.errors import LvuError

DECODE = VideoDecoder(SamplerConfig(num_frames=4), size=(32, 24))


def collate(samples):
    return {"frames": torch.stack([s["frames"] for s in samples]), "keys": [s["__key__"] for s in samples],
            "pad": [s["__pad__"] for s in samples]}


def keys_of(loader, stop=None, epochs=1):
    out = []
    for _ in range(epochs):
        for batch in loader:
            out.append(tuple(batch["keys"]))
            if stop is not None and len(out) == stop:
                return out
    return out


def make_loader(shards, **kwargs):
    options = {"batch_size": 2, "num_workers": 0, "seed": 3}
    options.update(kwargs)
    return ShardLoader(SampleSet(resolve_shards(str(shards))), DECODE, collate, **options)


@pytest.mark.parametrize("stop", [1, 2, 3])
def test_mid_epoch_resume_replays_exactly_on_each_of_two_ranks(synth_shards, stop):
    # 10 samples, 2 ranks x batch 2 -> 2 batches per rank per epoch; 3 epochs; stop mid-epoch and at a boundary.
    for rank in (0, 1):
        full = keys_of(make_loader(synth_shards, num_workers=2, rank=rank, world_size=2), epochs=3)
        first = make_loader(synth_shards, num_workers=2, rank=rank, world_size=2)
        head = keys_of(first, stop=stop, epochs=3)
        state = first.state_dict()
        resumed = make_loader(synth_shards, num_workers=1, rank=rank, world_size=2)  # fewer workers on purpose
        resumed.load_state_dict(state)
        tail = keys_of(resumed, epochs=3)[: len(full) - stop]
        assert head + tail == full, f"rank {rank}"


def test_order_does_not_depend_on_worker_count(synth_shards):
    runs = [keys_of(make_loader(synth_shards, num_workers=w), epochs=2) for w in (0, 1, 3)]
    assert runs[0] == runs[1] == runs[2]


def test_ranks_get_equal_disjoint_batches_and_evaluation_sees_every_sample_once(synth_shards):
    train = [keys_of(make_loader(synth_shards, rank=r, world_size=2)) for r in (0, 1)]
    assert len(train[0]) == len(train[1]) == 2  # floor(10 / (2 ranks * 2))
    flat = [k for run in train for batch in run for k in batch]
    assert len(flat) == len(set(flat)) == 8
    seen = Counter()
    lengths = []
    for rank in (0, 1):
        loader = make_loader(synth_shards, rank=rank, world_size=2, batch_size=3, shuffle=False, drop_last=False)
        lengths.append(len(loader))
        for batch in loader:
            assert len(batch["keys"]) == 3
            seen.update(k for k, pad in zip(batch["keys"], batch["pad"], strict=True) if not pad)
    assert lengths == [2, 2]  # ceil(10 / 6), padded
    assert len(seen) == 10 and set(seen.values()) == {1}


def test_evaluation_passes_are_identical(synth_shards):
    sampler = VideoDecoder(SamplerConfig(name="random_interval", min_frames=3, max_frames=6), size=(32, 24))

    def frames(batch_samples):
        return [s["timestamps"].tolist() for s in batch_samples]

    loader = ShardLoader(SampleSet(resolve_shards(str(synth_shards))), sampler, frames, batch_size=5, shuffle=False,
                         drop_last=False, evaluation=True)
    assert list(loader) == list(loader)  # same random frame choices at every validation
    training = ShardLoader(SampleSet(resolve_shards(str(synth_shards))), sampler, frames, batch_size=5,
                           shuffle=False)
    assert list(training) != list(training)  # training draws new frames each epoch


def test_epochs_reshuffle_and_seed_matters(synth_shards):
    loader = make_loader(synth_shards, batch_size=5)
    epochs = [keys_of(loader) for _ in range(2)]
    assert epochs[0] != epochs[1]
    assert sorted(k for b in epochs[0] for k in b) == sorted(k for b in epochs[1] for k in b)
    assert keys_of(make_loader(synth_shards, batch_size=5, seed=4)) != epochs[0]
    ordered = keys_of(make_loader(synth_shards, batch_size=5, shuffle=False))
    assert [k for b in ordered for k in b] == [f"synth_0_{i:06d}" for i in range(10)]


def test_resampled_mode_has_a_fixed_epoch_length_and_resumes(synth_shards):
    loader = make_loader(synth_shards, resampled=True, epoch_batches=7)
    assert len(loader) == 7
    full = keys_of(loader, epochs=2)
    assert len(full) == 14
    head_loader = make_loader(synth_shards, resampled=True, epoch_batches=7)
    head = keys_of(head_loader, stop=9)
    resumed = make_loader(synth_shards, resampled=True, epoch_batches=7)
    resumed.load_state_dict(head_loader.state_dict())
    assert head + keys_of(resumed) == full


def test_frames_come_from_the_sampled_positions(synth_shards):
    loader = make_loader(synth_shards, batch_size=1, shuffle=False)
    batch = next(iter(loader))
    codes = [read_timecode(np.asarray(f)) for f in batch["frames"][0]]
    assert codes[0] == 0 and codes == sorted(codes) and len(set(codes)) == 4


def _rank_worker(rank, shards, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ["LVU_TEST_PORT"])
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        loader = make_loader(shards, num_workers=1)  # rank and world size come from torch.distributed
        keys = keys_of(loader, epochs=2)
        with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
            json.dump({"len": len(loader), "keys": keys}, f)
    finally:
        dist.destroy_process_group()


def test_two_real_processes_get_the_same_number_of_batches(synth_shards, tmp_path):
    os.environ["LVU_TEST_PORT"] = str(29500 + os.getpid() % 1000)
    mp.start_processes(_rank_worker, args=(str(synth_shards), str(tmp_path)), nprocs=2, start_method="fork")
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert results[0]["len"] == results[1]["len"] == 2
    assert len(results[0]["keys"]) == len(results[1]["keys"]) == 4
    for epoch in (slice(0, 2), slice(2, 4)):
        a = {k for b in results[0]["keys"][epoch] for k in b}
        b = {k for b in results[1]["keys"][epoch] for k in b}
        assert not a & b


# ------------------------------------------------------------------------------------------------------------------
# Bad data: each case sits between good samples; default skips (counted), strict raises naming shard and key.


def _good_samples(synth_shards, n=5):
    reader = ShardReader(resolve_shards(str(synth_shards)))
    return [(raw["__key__"], {"mp4": raw["mp4"], "json": raw["json"]}) for raw in (reader.read(0, i) for i in range(4))
            ] + [(r["__key__"], {"mp4": r["mp4"], "json": r["json"]}) for r in [reader.read(1, 0)]][: n - 4]


def _short_video() -> bytes:
    _, fields = make_video(0, seed=9, cfg=SynthConfig(min_seconds=0.375, max_seconds=0.375, fps=8, width=64,
                                                      height=48))
    return fields["mp4"]  # 3 frames: too short for the 4-frame sampler


BAD_CASES = {
    "undecodable_video": lambda good: {"mp4": b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000), "json": good["json"]},
    "empty_video": lambda good: {"mp4": b"", "json": good["json"]},
    "no_frames": lambda good: {"mp4": zero_frame_mp4(), "json": good["json"]},
    "missing_json": lambda good: {"mp4": good["mp4"]},
    "bad_json": lambda good: {"mp4": good["mp4"], "json": b"{not json"},
    "too_short": lambda good: {"mp4": _short_video(), "json": good["json"]},
}


def _case_shards(tmp_path, synth_shards, reason):
    good = _good_samples(synth_shards)
    path = tmp_path / "shard-000000.tar"
    if reason == "truncated_shard":
        write_shard(path, good)
        offset, _ = scan_tar(path).samples[3][1]["mp4"]
        path.write_bytes(path.read_bytes()[: offset + 100])  # the manifest below still promises 5 samples
        return [ShardInfo(path, 5)], "shard-000000.tar"
    samples = [*good[:2], ("broken", BAD_CASES[reason](good[0][1])), *good[2:]]
    write_shard(path, samples)
    return [ShardInfo(path, len(samples))], "key broken"


@pytest.mark.parametrize("reason", [*BAD_CASES, "truncated_shard"])
def test_bad_samples_are_skipped_counted_and_replaced(tmp_path, synth_shards, reason, caplog):
    shards, _ = _case_shards(tmp_path, synth_shards, reason)
    loader = ShardLoader(SampleSet(shards), DECODE, collate, batch_size=2, num_workers=1, seed=0)
    batches = list(loader)
    assert len(batches) == len(loader) == (2 if reason == "truncated_shard" else 3)
    assert all(len(b["keys"]) == 2 for b in batches)  # sizes kept: the bad sample was replaced
    assert all(k != "broken" for b in batches for k in b["keys"])
    assert loader.skipped[reason] >= 1 and set(loader.skipped) == {reason}
    assert loader.state_dict()["skipped"][reason] == loader.skipped[reason]
    assert f"skipped a bad sample ({reason})" in caplog.text and "shard shard-000000.tar" in caplog.text
    assert "key :" not in caplog.text  # a sample past the end of a truncated shard has no key to show


@pytest.mark.parametrize("reason", ["missing_json", "bad_json", "too_short"])
def test_a_bad_sample_met_again_as_a_replacement_counts_once(tmp_path, synth_shards, reason, caplog):
    # Batch 1, seed 0: the bad sample is drawn in its own slot and then again as its own replacement. It used to
    # count (and be reported) once per attempt.
    shards, _ = _case_shards(tmp_path, synth_shards, reason)
    loader = ShardLoader(SampleSet(shards), DECODE, collate, batch_size=1, num_workers=0, seed=0)
    assert len(list(loader)) == 6
    assert loader.skipped == {reason: 1}
    assert caplog.text.count("skipped a bad sample") == 1
    resumed = ShardLoader(SampleSet(shards), DECODE, collate, batch_size=1, num_workers=0, seed=0)
    resumed.load_state_dict(loader.state_dict())
    assert resumed.skipped == {reason: 1}


@pytest.mark.parametrize("reason", [*BAD_CASES, "truncated_shard"])
def test_strict_mode_raises_naming_shard_and_key(tmp_path, synth_shards, reason):
    shards, where = _case_shards(tmp_path, synth_shards, reason)
    loader = ShardLoader(SampleSet(shards), DECODE, collate, batch_size=2, num_workers=1, seed=0, strict=True,
                         shuffle=False)
    with pytest.raises(LvuError) as info:
        list(loader)
    message = str(info.value)
    assert f"bad sample ({reason})" in message and "shard shard-000000.tar" in message and where in message
    assert "\n" not in message  # the worker's traceback is not part of the user's message


def test_a_mostly_broken_shard_set_is_an_error(tmp_path):
    write_shard(tmp_path / "s.tar", [(f"b{i}", {"mp4": b"", "json": {}}) for i in range(6)])
    loader = ShardLoader(SampleSet([ShardInfo(tmp_path / "s.tar", 6)]), DECODE, collate, batch_size=2)
    with pytest.raises(LvuError, match="gave up after 16 bad samples in a row"):
        list(loader)


def test_too_few_samples_for_one_batch_per_rank(synth_shards):
    with pytest.raises(LvuError, match="cannot fill one batch of 4 on each of 4 rank"):
        len(make_loader(synth_shards, batch_size=4, rank=0, world_size=4))


def test_evaluation_padding_is_spread_over_ranks():
    from lvu.data.loader import EpochPlan, PlanSpec

    # 33 samples, 2 ranks x batches of 8: 3 batches per rank, 15 padding slots. Slot-by-slot to ranks and batch by
    # batch within a rank, they would fill rank 1's last batch entirely (its metric would then never be updated).
    samples = SampleSet([ShardInfo(Path("x.tar"), 33)])
    per_rank = []
    for rank in (0, 1):
        plan = EpochPlan(samples, PlanSpec(batch_size=8, rank=rank, world_size=2, seed=0, shuffle=False,
                                           drop_last=False), epoch=0)
        pads = [plan.batch(j)[1] for j in range(plan.num_batches)]
        assert plan.num_batches == 3 and all(not p.all() for p in pads)  # no batch of padding only
        per_rank.append(sum(int(p.sum()) for p in pads))
    assert sum(per_rank) == 15 and max(per_rank) <= 8


def test_an_evaluation_stand_in_for_a_bad_sample_does_not_count_twice(tmp_path, synth_shards):
    good = _good_samples(synth_shards)
    write_shard(tmp_path / "s.tar", [*good[:2], ("broken", {"mp4": b"", "json": good[0][1]["json"]}), *good[2:]])
    loader = ShardLoader(SampleSet([ShardInfo(tmp_path / "s.tar", 6)]), DECODE, collate, batch_size=2,
                         shuffle=False, drop_last=False, evaluation=True)
    counted = Counter(k for b in loader for k, pad in zip(b["keys"], b["pad"], strict=True) if not pad)
    assert set(counted) == {k for k, _ in good} and set(counted.values()) == {1}


def test_the_worker_fork_server_preloads_what_defines_the_decoder_and_collate():
    """Workers fork from a server that has imported the decoder's and collate function's modules, so no worker imports
    a task module (Lightning, transformers: seconds) at every pass."""
    import functools

    from lvu.data.decoders import FeatureDecoder
    from lvu.data.loader import _defining_modules
    from lvu.tasks.host_lm.batch import Collate

    modules = _defining_modules(FeatureDecoder(4), functools.partial(Collate(False, "q")), len)
    assert modules == ["lvu.data.decoders", "lvu.tasks.host_lm.batch"]


def test_train_weights_mix_sources_in_proportion_once_and_reproducibly(tmp_path):
    """FiLA-Video mixes real and synthetic videos about 40 : 1: the first source is taken whole and each other source
    contributes its share, drawn without replacement by the seed."""
    from support.features import make_features

    from lvu.data.datamodule import ShardDataConfig, ShardDataModule
    from lvu.errors import ConfigError

    real = make_features(tmp_path / "real", 20, seed=1)
    synthetic = make_features(tmp_path / "synthetic", 12, seed=2)

    def mixed(weights, seed=0):
        cfg = ShardDataConfig(train=[str(real), str(synthetic)], train_weights=weights)
        samples = ShardDataModule(cfg, seed, decode=lambda s: None, collate=lambda s: None).samples("train")
        return [(samples.shards[int(s)].path.parent.name, samples.shards[int(s)].path.name, int(i))
                for s, i in zip(samples.shard_ids, samples.indices, strict=True)]

    quarter = mixed([4, 1])
    assert sum(s[0] == "real" for s in quarter) == 20 and sum(s[0] == "synthetic" for s in quarter) == 5
    assert len(set(quarter)) == 25 and mixed([4, 1]) == quarter and mixed([4, 1], seed=1) != quarter
    assert sum(s[0] == "synthetic" for s in mixed([1, 1])) == 12  # asks for 20, has 12: all of them
    with pytest.raises(ConfigError, match=r"one positive weight per data.train source \(2\)"):
        mixed([1])
