"""LVU end to end on a hand-made miniature: pack the 9 tasks' CSVs, embed, probe all 9, print Table 8's shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.encoders import save_tiny_encoder

from lvu.cli import main
from lvu.data.pack import LVU_CLASSIFICATION, LVU_REGRESSION
from lvu.data.shards import ShardReader, resolve_shards

SPLITS = ["train"] * 6 + ["val"] * 2 + ["test"] * 2


def _lvu_folder(root: Path, videos: int) -> Path:
    ann = root / "lvu_1.0"
    for t, task in enumerate(LVU_CLASSIFICATION + LVU_REGRESSION):
        rows: dict[str, list[str]] = {s: [] for s in ("train", "val", "test")}
        for i in range(videos):
            vid = f"yt{i:03d}"
            split = SPLITS[(i + t) % len(SPLITS)]
            if task == "like_ratio":
                rows[split].append(f"{50 + i} {5 + t} {vid} tt{i}")
            elif task == "view_count":
                rows[split].append(f"{1000 * (i + 1)} {vid} tt{i}")
            else:
                k = (i + t) % 3
                rows[split].append(f"{k} {task}_class_{k} {vid} tt{i}")
        header = {"like_ratio": "like dislike youtube_id imdb_id", "view_count": "views youtube_id imdb_id"}.get(
            task, "class_id class_name youtube_id imdb_id")
        (ann / task).mkdir(parents=True)
        for split, lines in rows.items():
            (ann / task / f"{split}.csv").write_text("\n".join([header, *lines]) + "\n")
    return ann


@pytest.mark.slow
def test_lvu_pack_embed_probe_all_nine_tasks_prints_table_8(synth_shards, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    reader = ShardReader(resolve_shards(str(synth_shards)))
    for i in range(10):
        (videos / f"yt{i:03d}.mp4").write_bytes(reader.read(i // 4, i % 4)["mp4"])
    annotations = _lvu_folder(tmp_path, 10)
    packed, feats = tmp_path / "lvu_videos", tmp_path / "lvu_feats"
    assert main(["data", "pack", "--format", "lvu", "--videos", str(videos), "--annotations", str(annotations),
                 "--out", str(packed)]) == 0
    maps = json.loads((packed / "label_maps.json").read_text())
    assert list(maps) == [*LVU_CLASSIFICATION, *LVU_REGRESSION]  # one map per task, over all splits
    encoder = save_tiny_encoder("clip", tmp_path / "clip")
    assert main(["data", "embed", str(packed), str(feats), "--encoder", str(encoder), "--frames-per-clip", "2",
                 "--device", "cpu", "--workers", "1"]) == 0

    probe = ["lvmae/lvu_linear", f"data.train={feats}", "probe.backbone=raw", "data.batch_size=2",
             "data.num_workers=0", "trainer.max_epochs=2", "trainer.progress_bar=none"]
    run_dir = tmp_path / "lvu_run"
    assert main(["fit", *probe, f"run_dir={run_dir}"]) == 0
    results = json.loads((run_dir / "summary.json").read_text())
    assert set(results) == set(LVU_CLASSIFICATION + LVU_REGRESSION)
    assert all("test/acc" in results[t] for t in LVU_CLASSIFICATION)
    assert all("test/mse" in results[t] for t in LVU_REGRESSION)
    header = (run_dir / "summary.txt").read_text().splitlines()[0]
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns == ["Method", "Dir.", "Genre", "Writer", "Year", "Scene", "Speak", "Rel.", "Avg.", "Like (MSE)",
                       "View (MSE)"]
    # Each task trained on its own split: 6 training videos of 10, batch 2 -> 3 steps per epoch.
    info = json.loads((run_dir / "director" / "checkpoints" / "best.json").read_text())
    assert info["global_step"] in (3, 6)

    assert main(["test", *probe, f"runs_root={tmp_path / 'tests'}", "--ckpt", str(run_dir)]) == 0
    (table,) = (tmp_path / "tests").rglob("summary.txt")
    assert table.read_text().splitlines()[0] == header
