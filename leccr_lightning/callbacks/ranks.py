"""Per-query ranks and DCOT confidences written beside ``test_metrics.json``, for ``leccr report`` and the plots.

``RankCollector`` re-encodes every evaluation batch through the method's ``predict_step`` (its ``encode_queries`` /
``encode_gallery``: one more encoding pass, so it is opt-in), gathers the views from every rank with the
DistributedSampler padding removed, and counts with the method's own scorer, in the same query chunks as
``RetrievalMetric``:

* the t2v rank of each query: 1 + the gallery items scored strictly above its item;
* the v2t rank of each item with captions: 1 + the captions scored strictly above its best caption,

so recall@K, MedR and MeanR of these ranks are the ``test_metrics.json`` numbers. ``RankWriter`` writes them as
``ranks.json`` in the run's log folder; ``ConfidenceWriter`` writes the last epoch's DCOT confidence of every training
caption (``ConfidenceLogger``) as ``confidences.json``.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path

import lightning as L
import torch
from torch import Tensor

from leccr_lightning.distributed import gather_uneven, is_distributed
from leccr_lightning.metrics.ranking import AUTO_CHUNK_ROWS, MAX_FULL_SCORE_ELEMENTS
from leccr_lightning.metrics.scoring import slice_views

STAGES = ("val", "test")


def retrieval_ranks(
    scorer: Callable, queries: Mapping[str, Tensor], gallery: Mapping[str, Tensor], targets: Tensor, chunk_size=None
) -> tuple[Tensor, Tensor]:
    """(t2v rank of every query [Q], v2t rank of every gallery item with captions [G']) of ``scorer``'s scores.

    ``targets[q]`` is the gallery row of query q. Chunks of ``chunk_size`` queries (``None``: the whole matrix up to
    ``MAX_FULL_SCORE_ELEMENTS`` scores, else ``AUTO_CHUNK_ROWS``), each positive read from its own score chunk.
    """
    queries = {k: v.float() if v.is_floating_point() else v for k, v in queries.items()}
    gallery = {k: v.float() if v.is_floating_point() else v for k, v in gallery.items()}
    num_queries, num_gallery = len(targets), len(next(iter(gallery.values())))
    if chunk_size is None:
        chunk_size = num_queries if num_queries * num_gallery <= MAX_FULL_SCORE_ELEMENTS else AUTO_CHUNK_ROWS
    rows = min(chunk_size, num_queries)
    if hasattr(scorer, "fit"):
        scorer.fit(queries, gallery, rows)
    bounds = [(start, min(start + rows, num_queries)) for start in range(0, num_queries, rows)]
    t2v = torch.empty(num_queries, dtype=torch.long)
    best = torch.full((num_gallery,), float("-inf"))
    for start, stop in bounds:
        scores = scorer(slice_views(queries, start, stop), gallery).float()
        positives = scores[torch.arange(stop - start), targets[start:stop]]
        t2v[start:stop] = 1 + (scores > positives[:, None]).sum(1)
        best.scatter_reduce_(0, targets[start:stop], positives, "amax")
    above = torch.zeros(num_gallery, dtype=torch.long)
    for start, stop in bounds:
        above += (scorer(slice_views(queries, start, stop), gallery).float() > best[None, :]).sum(0)
    has_captions = torch.bincount(targets, minlength=num_gallery) > 0
    return t2v, 1 + above[has_captions]


def recall_at(ranks: Tensor, ks) -> list[float]:
    """Recall@K in percent of 1-based ranks, for every K."""
    ranks = torch.as_tensor(ranks)
    return [100.0 * float((ranks <= k).double().mean()) for k in ks]


class _Batches:
    """One role's evaluation outputs (positions, ids, views) on this rank."""

    def __init__(self) -> None:
        self.positions: list[Tensor] = []
        self.ids: list[str] = []
        self.views: dict[str, list[Tensor]] = {}
        self.targets: list[Tensor] = []

    def add(self, output: dict, targets: Tensor | None) -> None:
        self.positions.append(output["position"])
        self.ids.extend(output["ids"])
        for name, view in output["views"].items():
            self.views.setdefault(name, []).append(view)
        if targets is not None:
            self.targets.append(targets.cpu())

    def gathered(self) -> tuple[list[str], dict[str, Tensor], Tensor | None]:
        """Every rank's outputs in position order, each position once."""
        positions = gather_uneven(torch.cat(self.positions))
        views = {name: gather_uneven(torch.cat(parts)) for name, parts in self.views.items()}
        targets = gather_uneven(torch.cat(self.targets)) if self.targets else None
        ids = self.ids
        if is_distributed():
            parts: list[list[str]] = [[] for _ in range(torch.distributed.get_world_size())]
            torch.distributed.all_gather_object(parts, ids)
            ids = [i for part in parts for i in part]
        order = torch.argsort(positions, stable=True)
        keep = torch.ones(len(order), dtype=torch.bool)
        keep[1:] = positions[order][1:] != positions[order][:-1]
        order = order[keep]
        return (
            [ids[i] for i in order.tolist()],
            {name: view[order] for name, view in views.items()},
            None if targets is None else targets[order],
        )


class RankCollector(L.Callback, ABC):
    """Collects the evaluation embeddings of ``stages`` (``val``, ``test``) and hands the ranks to ``on_ranks``."""

    def __init__(self, stages: tuple[str, ...] = ("test",)):
        unknown = set(stages) - set(STAGES)
        if unknown:
            raise ValueError(f"stages must be among {STAGES}, got {sorted(unknown)}")
        self.stages = tuple(stages)
        self._roles: dict[str, _Batches] = {}

    @abstractmethod
    def on_ranks(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str, ranks: dict) -> None:
        """Receives ``{"stage", "epoch", "gallery_size", "t2v": {"ids", "ranks"}, "v2t": {"ids", "ranks"}}`` on
        every rank."""

    def _start(self) -> None:
        self._roles = {"query": _Batches(), "gallery": _Batches()}

    def _collect(self, pl_module: L.LightningModule, batch: dict, batch_idx: int) -> None:
        with torch.no_grad():
            output = pl_module.predict_step(batch, batch_idx)
        output = {**output, "position": output["position"].cpu()}
        self._roles[output["kind"]].add(output, batch.get("target") if output["kind"] == "query" else None)

    def _finish(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        query_ids, queries, targets = self._roles["query"].gathered()
        gallery_ids, gallery, _ = self._roles["gallery"].gathered()
        self._roles = {}
        scorer = pl_module.scorer(stage)
        t2v, v2t = retrieval_ranks(scorer, queries, gallery, targets, getattr(pl_module, "eval_chunk_size", None))
        with_captions = torch.bincount(targets, minlength=len(gallery_ids)) > 0
        ranks = {
            "stage": stage,
            "epoch": trainer.current_epoch,
            "gallery_size": len(gallery_ids),
            "t2v": {"ids": query_ids, "ranks": t2v.tolist()},
            "v2t": {
                "ids": [g for g, keep in zip(gallery_ids, with_captions.tolist(), strict=True) if keep],
                "ranks": v2t.tolist(),
            },  # fmt: skip
        }
        self.on_ranks(trainer, pl_module, stage, ranks)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if "val" in self.stages and not trainer.sanity_checking:
            self._start()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if "val" in self.stages and not trainer.sanity_checking:
            self._collect(pl_module, batch, batch_idx)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if "val" in self.stages and not trainer.sanity_checking:
            self._finish(trainer, pl_module, "val")

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        if "test" in self.stages:
            self._start()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if "test" in self.stages:
            self._collect(pl_module, batch, batch_idx)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        if "test" in self.stages:
            self._finish(trainer, pl_module, "test")


def run_folder(trainer: L.Trainer) -> Path:
    """The folder where ``leccr test`` writes ``test_metrics.json`` (the logger's version folder). Under DDP
    ``trainer.log_dir`` is a broadcast: every rank must call this."""
    return Path(trainer.log_dir or trainer.default_root_dir)


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
    ``last_epoch`` of the run's ``ConfidenceLogger``, found by name so this layer imports no method) into the run
    folder; a run without DCOT confidences writes nothing."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loggers = [c for c in trainer.callbacks if type(c).__name__ == "ConfidenceLogger" and c.last_epoch]
        folder = run_folder(trainer)
        if not loggers or trainer.global_rank != 0:
            return
        folder.mkdir(parents=True, exist_ok=True)
        payload = {"epoch": trainer.current_epoch - 1, "confidences": loggers[0].last_epoch}
        (folder / "confidences.json").write_text(json.dumps(payload), encoding="utf-8")
