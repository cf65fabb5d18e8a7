"""Per-query ranks and DCOT confidences written beside ``test_metrics.json``, for ``leccr report`` and the plots.

The ranks are those the run's own evaluation counted (``RetrievalMetric`` keeps the ``RetrievalRanks`` behind its
last report; the method stores them per stage in ``last_ranks``), so recall@K, MedR and MeanR of ``ranks.json`` are
the ``test_metrics.json`` numbers, with no second encoding pass:

* the t2v rank of each query: 1 + the gallery items scored strictly above its item;
* the v2t rank of each item with captions: 1 + the captions scored strictly above its best caption.

``RankWriter`` writes them as ``ranks.json`` in the run's log folder; ``ConfidenceWriter`` writes the last epoch's
DCOT confidence of every training caption (``ConfidenceLogger``) as ``confidences.json``.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path

import lightning as L
import torch

STAGES = ("val", "test")


def recall_at(ranks, ks) -> list[float]:
    """Recall@K in percent of 1-based ranks, for every K."""
    ranks = torch.as_tensor(ranks)
    return [100.0 * float((ranks <= k).double().mean()) for k in ks]


def stage_ranks(trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> dict:
    """``{"stage", "epoch", "gallery_size", "t2v": {"ids", "ranks"}, "v2t": {"ids", "ranks"}}`` of the method's last
    ``stage`` evaluation, with the query caption ids and gallery item ids of the DataModule's split."""
    ranks = getattr(pl_module, "last_ranks", {}).get(stage)
    if ranks is None:
        raise ValueError(f"{type(pl_module).__name__} kept no {stage} ranks (a retrieval method keeps them)")
    split = trainer.datamodule.split(stage)
    query_ids, gallery_ids = split["queries"].ids, split["gallery"].ids
    return {
        "stage": stage,
        "epoch": trainer.current_epoch,
        "gallery_size": len(gallery_ids),
        "t2v": {"ids": list(query_ids), "ranks": ranks.t2v.tolist()},
        "v2t": {"ids": [gallery_ids[i] for i in ranks.v2t_items.tolist()], "ranks": ranks.v2t.tolist()},
    }


def run_folder(trainer: L.Trainer) -> Path:
    """The folder where ``leccr test`` writes ``test_metrics.json`` (the logger's version folder). Under DDP
    ``trainer.log_dir`` is a broadcast: every rank must call this."""
    return Path(trainer.log_dir or trainer.default_root_dir)


class RankCollector(L.Callback, ABC):
    """Hands the ranks of every ``stages`` (``val``, ``test``) evaluation to ``on_ranks``, after the method counted
    them (every rank calls it; the ranks are the same on every rank)."""

    def __init__(self, stages: tuple[str, ...] = ("test",)):
        unknown = set(stages) - set(STAGES)
        if unknown:
            raise ValueError(f"stages must be among {STAGES}, got {sorted(unknown)}")
        self.stages = tuple(stages)

    @abstractmethod
    def on_ranks(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str, ranks: dict) -> None:
        """Receives the ``stage_ranks`` dict on every rank."""

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if "val" in self.stages and not trainer.sanity_checking:
            self.on_ranks(trainer, pl_module, "val", stage_ranks(trainer, pl_module, "val"))

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if "test" in self.stages:
            self.on_ranks(trainer, pl_module, "test", stage_ranks(trainer, pl_module, "test"))


class RankWriter(RankCollector):
    """Writes ``ranks.json`` (``ranks_<stage>.json`` for validation, overwritten every epoch) into the run folder."""

    def on_ranks(self, trainer, pl_module, stage, ranks) -> None:
        folder = run_folder(trainer)
        if trainer.global_rank != 0:
            return
        folder.mkdir(parents=True, exist_ok=True)
        name = "ranks.json" if stage == "test" else f"ranks_{stage}.json"
        (folder / name).write_text(json.dumps(ranks), encoding="utf-8")


class ConfidenceWriter(L.Callback):
    """At the end of fit, writes ``confidences.json`` (training caption id -> DCOT confidence of the last epoch, the
    ``last_epoch`` of the run's ``ConfidenceLogger``) into the run folder; a run without DCOT confidences writes
    nothing."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from leccr_lightning.callbacks.confidence import ConfidenceLogger

        loggers = [c for c in trainer.callbacks if isinstance(c, ConfidenceLogger) and c.last_epoch]
        folder = run_folder(trainer)
        if not loggers or trainer.global_rank != 0:
            return
        folder.mkdir(parents=True, exist_ok=True)
        payload = {"epoch": trainer.current_epoch - 1, "confidences": loggers[0].last_epoch}
        (folder / "confidences.json").write_text(json.dumps(payload), encoding="utf-8")
