"""SEAL (Wang et al.) on the shared stack, one task per stage:

* ``seal.extract`` (:mod:`.extract`): video shards -> scene, object and action token shards;
* ``seal.select`` (:mod:`.select`): per question, the query-aware subset of a video's tokens, as a short video any
  host answers through ``lvu eval`` (``seal/lvbench_qa``);
* ``seal.ground`` (:mod:`.ground`): the temporal-grounding head (Ego4D-NLQ) trained on each query's selected tokens.
"""

from __future__ import annotations

from pathlib import Path

from lvu.tasks.registry import TaskSpec, register_task
from lvu.tasks.seal.extract import SealExtractRecipe, SealExtractTask, extraction_identity, seal_extract_data
from lvu.tasks.seal.ground import SealGroundRecipe, SealGroundTask, ground_metrics, seal_ground_data
from lvu.tasks.seal.parts import PartWriter
from lvu.tasks.seal.select import SealSelectRecipe, SealSelectTask, seal_select_data, selection_identity


def _token_writer(cfg: SealExtractRecipe) -> PartWriter:
    return PartWriter(Path(cfg.output.folder), cfg.output.part_videos, extraction_identity(cfg), "features")


def _selected_writer(cfg: SealSelectRecipe) -> PartWriter:
    return PartWriter(Path(cfg.output.folder), cfg.output.part_videos, selection_identity(cfg), "video")


register_task(TaskSpec(
    "seal.extract", SealExtractRecipe, SealExtractTask, seal_extract_data,
    "SEAL token extraction: video shards -> scene, object and action token shards (resumable)",
    predict_writer=_token_writer))

register_task(TaskSpec(
    "seal.select", SealSelectRecipe, SealSelectTask, seal_select_data,
    "SEAL query-aware selection: token shards -> per question, the selected tokens' crops as a short video "
    "(answered by any host with lvu eval)",
    predict_writer=_selected_writer))

register_task(TaskSpec(
    "seal.ground", SealGroundRecipe, SealGroundTask, seal_ground_data,
    "SEAL temporal grounding (Ego4D-NLQ): a SnAG-style head over each query's selected tokens, Recall@{1,5}",
    metrics=ground_metrics))
