"""LV-MAE tasks from the CLI: pre-training, probing (linear/attentive, LV-MAE/raw), bad input, LVU Table 8."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from support.features import make_features

from lvu.cli import main
from lvu.config import load_recipe
from lvu.data.loader import SampleSet, ShardLoader
from lvu.data.shards import Manifest, ShardInfo, resolve_shards, write_shard
from lvu.errors import ConfigError, LvuError
from lvu.tasks.lvmae import LVMAEDataConfig, Overflow, RandomCropConfig, SequenceDecoder, pad_sequences

TINY_MODEL = ["model.input_dim=8", "model.embed_dim=8", "model.depth=1", "model.num_heads=2", "model.decoder_dim=8",
              "model.decoder_num_heads=2", "model.max_tokens=32"]


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("features")
    return {split: make_features(root / split, n, seed=s) for split, n, s in
            (("train", 96, 0), ("val", 32, 1), ("test", 48, 2))}


@pytest.fixture(scope="module")
def pretrained(features, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("pretrain") / "run"
    assert main(["fit", "quickstart/lvmae_pretrain", f"data.train={features['train']}",
                 f"data.val={features['val']}", f"run_dir={run_dir}", "trainer.max_epochs=4",
                 "trainer.progress_bar=none", *TINY_MODEL]) == 0
    return run_dir


def _csv(run_dir: Path, column: str) -> list[float]:
    rows = [r for p in sorted((run_dir / "logs" / "csv").glob("version_*/metrics.csv"))
            for r in csv.DictReader(p.open())]
    return [float(r[column]) for r in rows if r.get(column)]


def test_pretraining_lowers_the_reconstruction_loss_and_resumes(pretrained, features):
    val = _csv(pretrained, "val/loss")
    assert len(val) == 4 and val[-1] < val[0]
    recipe = load_recipe(pretrained / "config.yaml")  # the metrics the task declares are the ones it logs
    with (pretrained / "logs" / "csv" / "version_0" / "metrics.csv").open() as f:
        header = next(csv.reader(f))
    assert {name for name in header if name.startswith(("train/", "val/"))} == recipe.task.metrics(recipe.cfg)
    ckpt = torch.load(pretrained / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4 * (96 // 16) and ckpt["lvu"]["task"] == "lvmae.pretrain"
    assert ckpt["lvu"]["config"]["optim"]["betas"] == [0.9, 0.95]  # Table 5 kept through the quickstart recipe
    assert main(["fit", str(pretrained / "config.yaml"), "trainer.max_epochs=5"]) == 0
    assert torch.load(pretrained / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 5 * 6


@pytest.mark.parametrize(("kind", "backbone"), [("linear", "raw"), ("attentive", "lvmae")])
def test_probe_every_task_and_report_the_test_at_the_best_validation_epoch(
        features, pretrained, tmp_path, kind, backbone, capsys):
    run_dir = tmp_path / "probe"
    args = ["quickstart/lvmae_probe", f"data.train={features['train']}", f"data.val={features['val']}",
            f"data.test={features['test']}", f"probe.pretrained={pretrained / 'checkpoints' / 'last.ckpt'}",
            f"probe.kind={kind}", f"probe.backbone={backbone}", "probe.num_heads=2", "trainer.max_epochs=15",
            # The planted signals are simple; a constant, larger rate learns them in the few steps a test affords.
            "optim.lr=0.01", "optim.scheduler.name=constant"]
    assert main(["fit", *args, f"run_dir={run_dir}"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary) == {"kind", "order", "size"}
    assert summary["kind"]["test/acc"] > 0.8  # the class shifts every clip's mean: easy for any probe
    assert summary["size"]["test/mse"] < 1.0
    table = (run_dir / "summary.txt").read_text()
    method = "LV-MAE" if backbone == "lvmae" else "raw embeddings"
    assert table.splitlines()[0].startswith("| Method") and f"| {method} ({kind})" in table
    assert "| kind " in table and "| Avg. " in table and "size (MSE)" in table
    for task in ("kind", "order", "size"):
        best = json.loads((run_dir / task / "checkpoints" / "best.json").read_text())
        scores = _csv(run_dir / task, "val/score")
        assert best["score"] == pytest.approx(max(scores), abs=1e-6)  # the best validation epoch was kept
        assert json.loads((run_dir / task / "test_metrics.json").read_text()) == summary[task]
        state = torch.load(run_dir / task / "checkpoints" / best["path"], weights_only=True)["state_dict"]
        assert not any(k.startswith("backbone.") for k in state) or backbone == "raw"
    # `lvu test` on the run directory re-evaluates every task's best checkpoint and prints the same table.
    capsys.readouterr()
    assert main(["test", *args, f"runs_root={tmp_path / 'eval'}", "--ckpt", str(run_dir)]) == 0
    retest = json.loads(next((tmp_path / "eval").rglob("summary.json")).read_text())
    for task in summary:
        for key, value in summary[task].items():
            assert retest[task][key] == pytest.approx(value, rel=1e-5)


def test_order_needs_an_order_aware_probe(features, tmp_path):
    """The planted long-range label: mean pooling cannot see it, an attentive probe over positions can."""
    common = ["quickstart/lvmae_probe", f"data.train={features['train']}", f"data.val={features['val']}",
              f"data.test={features['test']}", "probe.task=order", "probe.backbone=raw", "probe.num_heads=2",
              "trainer.max_epochs=20", "optim.scheduler.name=constant"]
    assert main(["fit", *common, "probe.kind=linear", f"run_dir={tmp_path / 'linear'}"]) == 0
    assert main(["fit", *common, "probe.kind=attentive", f"run_dir={tmp_path / 'attentive'}"]) == 0
    linear = json.loads((tmp_path / "linear" / "test_metrics.json").read_text())["test/acc"]
    attentive = json.loads((tmp_path / "attentive" / "test_metrics.json").read_text())["test/acc"]
    # Chance is 50%; the attentive probe plateaus near 80% with 96 training videos.
    assert attentive > 0.75 and linear < 0.65 and attentive - linear > 0.2


# ------------------------------------------------------------------------------------------------------------------
# Bad input


def _write(folder: Path, samples) -> Path:
    write_shard(folder / "shard-000000.tar", samples)
    Manifest([ShardInfo(folder / "shard-000000.tar", len(samples))], kind="features").save(folder)
    return folder


def _good(i: int, n: int = 5, dim: int = 8):
    return (f"g{i}", {"npy": np.ones((n, dim), np.float32) * i, "json": {"labels": {"kind": "one"}}})


def _data(overflow=Overflow.truncate, normalize=False, crop=False, min_clips=2) -> LVMAEDataConfig:
    return LVMAEDataConfig(overflow=overflow, normalize=normalize, crop=RandomCropConfig(crop, min_clips))


def _loader(folder: Path, dim: int = 8, max_tokens: int = 32, overflow=Overflow.truncate, train=True):
    return ShardLoader(SampleSet(resolve_shards(str(folder))), SequenceDecoder(dim, max_tokens, _data(overflow), train),
                       pad_sequences, batch_size=2, num_workers=0)


def test_wrong_width_is_an_error_naming_shard_key_and_widths(tmp_path):
    folder = _write(tmp_path, [_good(0), ("wide", {"npy": np.ones((4, 12), np.float32), "json": {}}), _good(1)])
    with pytest.raises(LvuError, match=r"shard shard-000000\.tar, key wide: feature width 12, expected 8"):
        list(_loader(folder))


@pytest.mark.parametrize(("bad", "reason"), [(np.full((4, 8), np.nan, np.float32), "nonfinite_features"),
                                             (np.array([[1.0] * 8, [np.inf] * 8], np.float32), "nonfinite_features"),
                                             (np.zeros((0, 8), np.float32), "zero_clips")])
def test_nan_inf_and_zero_clip_samples_are_rejected_and_counted(tmp_path, bad, reason, caplog):
    folder = _write(tmp_path, [_good(0), ("bad", {"npy": bad, "json": {}}), _good(1), _good(2)])
    loader = _loader(folder)
    batches = list(loader)
    assert len(batches) == 2 and all(b["x"].isfinite().all() for b in batches)
    assert loader.skipped == {reason: loader.skipped[reason]} and loader.skipped[reason] >= 1
    assert "key bad" in caplog.text


def test_sequences_over_the_cap_are_truncated_or_windowed(tmp_path):
    long = np.arange(40, dtype=np.float32)[:, None].repeat(8, 1)
    folder = _write(tmp_path, [("long", {"npy": long, "json": {}}), _good(1)])
    raw = {"__key__": "long", "__shard__": "s", "npy": None}
    from lvu.data.shards import ShardReader

    raw = ShardReader(resolve_shards(str(folder))).read(0, 0)
    rng = np.random.default_rng(0)
    truncated = SequenceDecoder(8, 32, _data(Overflow.truncate), True)(raw, rng)["features"]
    assert truncated.shape == (32, 8) and truncated[0, 0] == 0 and truncated[-1, 0] == 31
    starts = {int(SequenceDecoder(8, 32, _data(Overflow.window), True)(raw, np.random.default_rng(s))["features"][0, 0])
              for s in range(20)}
    assert len(starts) > 1 and all(0 <= s <= 8 for s in starts)  # random 32-clip windows in training
    centred = SequenceDecoder(8, 32, _data(Overflow.window), False)(raw, rng)["features"]
    assert centred[0, 0] == 4  # the middle window in evaluation


def test_the_feature_cache_decodes_each_sample_once_within_its_budget(tmp_path, monkeypatch):
    long = (np.arange(40, dtype=np.float32)[:, None] + 1).repeat(8, 1)  # 40 x 8 fp32: 1280 bytes
    folder = _write(tmp_path, [("long", {"npy": long, "json": {}}), ("other", {"npy": long * 2, "json": {}})])
    from lvu.data.shards import ShardReader

    reader = ShardReader(resolve_shards(str(folder)))
    raws = [reader.read(0, 0), reader.read(0, 1)]
    cfg = LVMAEDataConfig(normalize=True, crop=RandomCropConfig(True, 2), feature_cache_mb=1)
    cached, plain = SequenceDecoder(8, 32, cfg, True), SequenceDecoder(8, 32, _data(normalize=True, crop=True), True)
    parsed = []
    for decoder in (cached, plain):
        def counting(raw, rng, decode=decoder.features):
            parsed.append(raw["__key__"])
            return decode(raw, rng)

        monkeypatch.setattr(decoder, "features", counting)
    for seed in range(6):  # the same crops, drawn from the same generators, with and without the cache
        for raw in raws:
            a = cached(raw, np.random.default_rng(seed))["features"]
            b = plain(raw, np.random.default_rng(seed))["features"]
            assert torch.equal(a, b)
    assert parsed.count("long") == 7 and parsed.count("other") == 7  # cached: once each; uncached: six times each
    small = SequenceDecoder(8, 32, LVMAEDataConfig(feature_cache_mb=0), True)
    small(raws[0], np.random.default_rng(0))
    assert small._cache == {}  # 0 MB: nothing kept


def test_inputs_are_l2_normalised_and_training_crops_have_random_length_and_start(tmp_path):
    long = (np.arange(40, dtype=np.float32)[:, None] + 1).repeat(8, 1)  # clip i is (i + 1) * ones: norm ~ 3 * (i + 1)
    folder = _write(tmp_path, [("long", {"npy": long, "json": {}})])
    from lvu.data.shards import ShardReader

    raw = ShardReader(resolve_shards(str(folder))).read(0, 0)
    rng = np.random.default_rng(0)
    plain = SequenceDecoder(8, 32, _data(), True)(raw, rng)["features"]
    unit = SequenceDecoder(8, 32, _data(normalize=True), True)(raw, rng)["features"]
    assert plain.norm(dim=-1)[0] == pytest.approx(8**0.5) and torch.allclose(unit.norm(dim=-1), torch.ones(32))
    assert torch.allclose(unit * plain.norm(dim=-1, keepdim=True), plain)
    crop = SequenceDecoder(8, 32, _data(crop=True, min_clips=2), True)
    windows = [crop(raw, np.random.default_rng(s))["features"][:, 0] for s in range(200)]
    lengths, starts = {len(w) for w in windows}, {int(w[0]) - 1 for w in windows}
    assert min(lengths) == 2 and max(lengths) == 32 and len(lengths) > 20  # 10 s up to the token cap
    assert min(starts) == 0 and max(starts) > 30 and all(int(w[-1] - w[0]) == len(w) - 1 for w in windows)
    again = [crop(raw, np.random.default_rng(s))["features"][:, 0] for s in range(200)]
    assert all(torch.equal(a, b) for a, b in zip(windows, again, strict=True))  # seeded by the loader's generator
    evaluation = SequenceDecoder(8, 32, _data(crop=True), False)(raw, rng)["features"]
    assert evaluation.shape == (32, 8) and evaluation[0, 0] == 1  # no crop outside training: the overflow rule
    with pytest.raises(ConfigError, match=r"data\.crop\.min_clips must be between 1 and the token cap 32, got 40"):
        SequenceDecoder(8, 32, _data(crop=True, min_clips=40), True)


def test_a_label_missing_from_the_label_map_is_an_error(features, tmp_path, capsys):
    folder = tmp_path / "odd"
    make_features(folder, 32, seed=5)
    samples = [(f"x{i}", {"npy": np.ones((5, 8), np.float16), "json": {"labels": {"kind": "seven"}}})
               for i in range(16)]
    _write(folder, samples)
    assert main(["fit", "quickstart/lvmae_probe", f"data.train={folder}", f"data.val={folder}",
                 f"data.test={folder}", "probe.task=kind", "probe.backbone=raw", "probe.kind=linear",
                 f"run_dir={tmp_path / 'r'}"]) == 1
    assert "label 'seven' of task kind is not in the label map (classes: zero, one, two)" in capsys.readouterr().err


def test_probe_configuration_errors(features, pretrained, tmp_path, capsys):
    base = ["fit", "quickstart/lvmae_probe", f"data.train={features['train']}", f"data.val={features['val']}",
            f"data.test={features['test']}", f"run_dir={tmp_path / 'r'}"]
    # The encoder was pre-trained on L2-normalised embeddings (the default): probing it on raw ones is refused.
    assert main([*base, "probe.task=kind", f"probe.pretrained={pretrained / 'checkpoints' / 'last.ckpt'}",
                 "data.normalize=false"]) == 1
    assert ("data.normalize=false, but the encoder was pre-trained with data.normalize=true"
            in capsys.readouterr().err)
    assert main([*base, "probe.task=colour", "probe.backbone=raw"]) == 1
    assert "probe.task: colour not in the label map (tasks: kind, order, size)" in capsys.readouterr().err
    assert main([*base, "probe.task=kind", "probe.pretrained=null"]) == 1
    assert "probe.pretrained: set the LV-MAE pre-training checkpoint" in capsys.readouterr().err
    assert main([*base, "probe.task=kind", f"probe.pretrained={tmp_path / 'none.ckpt'}"]) == 1
    assert "probe.pretrained: checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_two_process_probing_of_all_tasks_with_a_ragged_test_split(tmp_path):
    """DDP on 2 CPU processes: 33 test videos in batches of 8 used to leave rank 1 a batch of padding only (its
    metric never synced: a hang), and the second rank used to take a sub-run's folder for the run's folder."""
    import subprocess
    import sys

    root = tmp_path / "feats"
    data = {split: make_features(root / split, n, seed=s) for split, n, s in (("train", 64, 0), ("val", 16, 1),
                                                                            ("test", 33, 2))}
    run_dir = tmp_path / "run"
    args = [str(Path(sys.executable).parent / "lvu"), "fit", "quickstart/lvmae_probe", f"data.train={data['train']}",
            f"data.val={data['val']}", f"data.test={data['test']}", "probe.backbone=raw", "probe.kind=linear",
            "data.eval_batch_size=8", "trainer.max_epochs=2", "trainer=ddp", "trainer.devices=2",
            "trainer.accelerator=cpu", f"run_dir={run_dir}"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in run_dir.iterdir() if p.is_dir()) == ["kind", "order", "size"]
    assert not list(run_dir.glob("*/kind")) and not list(run_dir.glob("*/*/checkpoints"))  # no nested folders
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary) == {"kind", "order", "size"} and 0 <= summary["kind"]["test/acc"] <= 1
    # The saved config of the whole run resumes it: every task is already tested, nothing is retrained.
    resumed = subprocess.run([args[0], "fit", str(run_dir / "config.yaml")], capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "already trained and tested" in resumed.stderr + resumed.stdout
    assert not (tmp_path / "runs").exists()


def test_mask_seeds_differ_between_micro_batches_and_stay_fixed_in_validation():
    from types import SimpleNamespace

    from lvu.tasks.lvmae import LVMAEPretrain

    module = SimpleNamespace(cfg=SimpleNamespace(seed=3), global_step=7, global_rank=0)
    draw = lambda stage, batch: torch.rand(4, generator=LVMAEPretrain._generator(module, stage, batch))  # noqa: E731
    assert not torch.equal(draw(0, 0), draw(0, 1))  # two micro-batches of one optimiser step
    before = draw(1, 2)
    module.global_step = 99
    assert torch.equal(draw(1, 2), before)  # validation masks do not move with training


def test_model_shape_mistakes_are_configuration_errors(features, tmp_path, capsys):
    assert main(["fit", "quickstart/lvmae_pretrain", f"data.train={features['train']}", f"run_dir={tmp_path}",
                 *TINY_MODEL, "model.num_heads=3"]) == 1
    assert capsys.readouterr().err.strip() == "lvu: error: model: width 8 is not divisible by 3 heads"


def test_the_mean_pooled_baseline_is_the_plain_mean_of_the_embeddings():
    from lvu.models.lvmae import LinearProbe, RawEmbeddings

    x = torch.randn(2, 5, 8)
    valid = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    tokens, key_valid = RawEmbeddings(8, 16, with_positions=False).features(x, valid)
    probe = LinearProbe(8, 3)
    expected = torch.stack([x[0].mean(0), x[1, :3].mean(0)])
    torch.testing.assert_close(probe(tokens, key_valid), probe.head(expected))
    assert not [p for p in RawEmbeddings(8, 16, with_positions=False).parameters()]


def test_video_shards_given_to_a_features_task_are_named_as_the_wrong_kind(synth_shards, tmp_path, capsys):
    """It used to skip every sample as `missing_features` and give up on a 'mostly broken' shard set."""
    assert main(["fit", "quickstart/lvmae_pretrain", f"data.train={synth_shards}", "data.val=null",
                 "data.num_workers=0", "data.batch_size=2", f"run_dir={tmp_path / 'run'}", "trainer.max_steps=1",
                 "trainer.progress_bar=none", *TINY_MODEL]) == 1
    err = capsys.readouterr().err
    assert "holds a video or image, not clip features (.npy)" in err and "lvu data embed" in err
    assert err.count("\n") == 1
