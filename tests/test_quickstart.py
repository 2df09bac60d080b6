"""`lvu quickstart` end to end, shrunk: every step runs, the summary holds both probes and the baseline."""

from __future__ import annotations

import json

import pytest

from lvu.data.synth import LABEL_MAPS
from lvu.quickstart.lvmae import PROBES, QuickstartConfig, _metric, _probe_run, probe_jobs, run_quickstart


@pytest.mark.slow
def test_quickstart_pipeline_writes_a_summary(tmp_path):
    cfg = QuickstartConfig(train_videos=32, val_videos=16, test_videos=16, min_seconds=20, max_seconds=30,
                           pretrain_epochs=2, workers=2, probe_seeds=(0, 1))
    summary = run_quickstart(tmp_path / "qs", cfg=cfg)  # probes 2 at a time, in fresh processes
    saved = json.loads((tmp_path / "qs" / "summary.json").read_text())
    assert saved["probes"] == summary["probes"]
    # Like for like: both probe kinds on LV-MAE and on the raw embeddings, each with every probe seed.
    assert list(saved["probes"]) == [name for name, _ in PROBES] == [
        "LV-MAE + attentive probe", "raw embeddings + attentive probe", "LV-MAE + linear probe",
        "raw embeddings, mean-pooled + linear"]
    for name, values in saved["probes"].items():
        assert set(values) == set(LABEL_MAPS)
        runs = saved["probe_runs"][name]
        # Every accuracy counts each of the 16 test videos exactly once (no padding copies, none left out).
        for run in runs:
            for task, spec in LABEL_MAPS.items():
                if spec["type"] == "classification":
                    correct = run[task] * 16 / 100
                    assert 0 <= correct <= 16 and abs(correct - round(correct)) < 1e-4, (name, task, run[task])
        assert len(runs) == 2 and all(abs(values[t] - (runs[0][t] + runs[1][t]) / 2) < 1e-9 for t in values)
        assert all(saved["probe_sd"][name][t] >= 0 for t in values)
    for split in ("train", "val", "test"):
        assert (tmp_path / "qs" / "features" / split / "manifest.json").is_file()
    assert (tmp_path / "qs" / "runs" / "pretrain" / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "qs" / "runs" / "probe0_seed1" / "summary.txt").read_text().startswith("| Method")
    # Where a probe runs does not change its numbers: probe 0, seed 1 again, here in this process.
    pretrained = tmp_path / "qs" / "runs" / "pretrain" / "checkpoints" / "last.ckpt"
    overrides = probe_jobs(tmp_path / "qs", pretrained, PROBES, cfg.probe_seeds)[("LV-MAE + attentive probe", 1)]
    metrics = _probe_run([*overrides, f"run_dir={tmp_path / 'again'}"])
    again = {task: _metric(metrics, task) for task in LABEL_MAPS}
    assert again == saved["probe_runs"]["LV-MAE + attentive probe"][1]


@pytest.mark.slow
def test_linvt_quickstart_runs_both_stages_answers_and_exports(tmp_path):
    from lvu.models.linvt import LinVT
    from lvu.quickstart.host_lm import HostLMQuickstartConfig
    from lvu.quickstart.registry import QUICKSTARTS

    cfg = HostLMQuickstartConfig(train_videos=8, val_videos=4, epochs=2, workers=1)
    summary = QUICKSTARTS["linvt"].run(tmp_path / "qs", cfg=cfg)
    assert set(summary["train_loss"]) == {"align", "instruct"}
    # 8 videos / batch 4 x 2 epochs = 4 steps, logged every 2nd
    assert all(loss["steps"] == 2 for loss in summary["train_loss"].values())
    answers = [json.loads(line) for line in (tmp_path / "qs" / "answers.jsonl").read_text().splitlines()]
    assert all(isinstance(a["answer"], str) for a in answers)
    # Each val video answered exactly once, with its own question and reference (the caption it was made with).
    from lvu.data.shards import iter_samples, parse_json, resolve_shards

    val = {s["__key__"]: parse_json(s) for s in iter_samples(resolve_shards(str(tmp_path / "qs" / "videos" / "val")),
                                                              exts=("json",))}
    assert sorted(a["key"] for a in answers) == sorted(val) and len(val) == 4
    assert all(a["reference"] == val[a["key"]]["caption"] and a["question"] for a in answers)
    assert LinVT.from_pretrained(tmp_path / "qs" / "export" / "linvt").cfg.queries == [8, 4, 2]
    assert (tmp_path / "qs" / "export" / "adapter" / "adapter_config.json").is_file()


@pytest.mark.slow
def test_uniform_quickstart_is_one_registry_entry_on_the_shared_pipeline(tmp_path, capsys):
    from lvu.cli import main
    from lvu.quickstart.host_lm import HostLMQuickstartConfig
    from lvu.quickstart.registry import QUICKSTARTS

    with pytest.raises(SystemExit):
        main(["quickstart", "--help"])
    listing = capsys.readouterr().out
    assert all(f"  {name}: {entry.description}" in listing for name, entry in QUICKSTARTS.items())
    cfg = HostLMQuickstartConfig(train_videos=8, val_videos=4, epochs=2, workers=1)
    summary = QUICKSTARTS["uniform"].run(tmp_path / "qs", cfg=cfg)
    assert list(summary["train_loss"]) == ["instruct"] and summary["train_loss"]["instruct"]["steps"] == 2
    answers = (tmp_path / "qs" / "answers.jsonl").read_text().splitlines()
    assert len(answers) == 4
    export = json.loads((tmp_path / "qs" / "export" / "export.json").read_text())
    assert export["task"] == "uniform" and export["adapters"]["llm"]["path"] == "adapter"


@pytest.mark.slow
def test_fila_quickstart_chains_four_stages_on_images_then_videos(tmp_path):
    from lvu.models.vlm import load_host
    from lvu.quickstart.host_lm import HostLMQuickstartConfig
    from lvu.quickstart.registry import QUICKSTARTS

    cfg = HostLMQuickstartConfig(train_videos=8, val_videos=4, epochs=1, workers=1)
    summary = QUICKSTARTS["fila"].run(tmp_path / "qs", cfg=cfg)
    assert list(summary["train_loss"]) == ["stage1", "stage2", "stage3", "stage4"]
    assert (tmp_path / "qs" / "images" / "train" / "shard-000000.tar").is_file()
    assert len((tmp_path / "qs" / "answers.jsonl").read_text().splitlines()) == 4
    export = json.loads((tmp_path / "qs" / "export" / "export.json").read_text())
    assert export["task"] == "fila" and export["host_weights"] == "host" and "merge" in export["method"]
    assert load_host(tmp_path / "qs" / "export" / "host").family == "composed"  # the trained host, whole


def test_seal_quickstart_extracts_selects_answers_and_grounds(tmp_path):
    from lvu.quickstart.registry import QUICKSTARTS
    from lvu.quickstart.seal import SealQuickstartConfig

    cfg = SealQuickstartConfig(train_videos=6, val_videos=3, ground_epochs=2, workers=1)
    summary = QUICKSTARTS["seal"].run(tmp_path / "qs", cfg=cfg)
    assert summary["tokens_per_val_video"]["scene"] == 16 and summary["tokens_per_val_video"]["action"] > 0
    assert summary["lvbench"]["questions"] > 0 and summary["lvbench"]["unanswered"] == 0
    assert set(summary["grounding"]["recall"]) == {f"R@{k},IoU={t}" for k in (1, 5) for t in (0.3, 0.5)}
    assert (tmp_path / "qs" / "summary.json").is_file() and (tmp_path / "qs" / "eval" / "lvbench" /
                                                              "results.md").is_file()
    assert len(list((tmp_path / "qs" / "selected" / "val").glob("part-*.tar"))) == 1
