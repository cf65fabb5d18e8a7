"""Writes ``leccr predict`` output as the official QVHighlights submission jsonl (spec grounding_methods §6.1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter


def _records(nested: Any):
    """The submission dicts inside the (per dataloader, per batch) nested lists of predictions."""
    if isinstance(nested, dict):
        yield nested
    else:
        for item in nested:
            yield from _records(item)


class GroundingPredictionWriter(BasePredictionWriter):
    """Collects every rank's ``predict_step`` records, drops repeated qids, and rank 0 writes one line per
    query ``{qid, vid, pred_relevant_windows, pred_saliency_scores}`` to ``output_dir/filename``
    (``output_dir`` defaults to the trainer's log dir or default root dir)."""

    def __init__(self, output_dir: str | None = None, filename: str = "hl_submission.jsonl") -> None:
        super().__init__(write_interval="epoch")
        self.output_dir, self.filename = output_dir, filename
        self.path: Path | None = None

    def write_on_epoch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        records = list(_records(predictions))
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, records)
            records = [record for part in gathered for record in part]
        unique: dict[Any, dict[str, Any]] = {}
        for record in records:
            unique.setdefault(record["qid"], record)
        folder = Path(self.output_dir or trainer.log_dir or trainer.default_root_dir)
        self.path = folder / self.filename
        if trainer.is_global_zero:
            folder.mkdir(parents=True, exist_ok=True)
            lines = "".join(json.dumps(record) + "\n" for record in unique.values())
            self.path.write_text(lines, encoding="utf-8")
