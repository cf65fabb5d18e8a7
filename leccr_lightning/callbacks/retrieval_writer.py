"""``leccr predict`` output for retrieval: the top-k gallery ids of every query, as JSON lines."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from leccr_lightning.distributed import gather_uneven
from leccr_lightning.metrics.scoring import DotScorer, slice_views

BACKENDS = ("torch", "faiss")


def _stack(batches: list[dict]) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[str]]:
    """Concatenate a rank's prediction batches, gather every rank's, and order them by position (de-duplicated)."""
    positions = gather_uneven(torch.cat([b["position"] for b in batches]))
    views = {k: gather_uneven(torch.cat([b["views"][k] for b in batches])) for k in batches[0]["views"]}
    ids = [i for b in batches for i in b["ids"]]
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        gathered: list[list[str]] = [[] for _ in range(torch.distributed.get_world_size())]
        torch.distributed.all_gather_object(gathered, ids)
        ids = [i for part in gathered for i in part]
    order = torch.argsort(positions, stable=True)
    keep = torch.ones(len(order), dtype=torch.bool)
    keep[1:] = positions[order][1:] != positions[order][:-1]
    order = order[keep]
    return positions[order], {k: v[order] for k, v in views.items()}, [ids[i] for i in order.tolist()]


def top_k_blocks(scorer, query_views, gallery_views, k: int, chunk_size: int, backend: str = "torch"):
    """Yield ``(first query row, scores [n, k], gallery indices [n, k])`` per chunk of queries.

    ``torch``: the method's scorer on each chunk, then ``topk``. ``faiss``: an exact inner-product index
    (``IndexFlatIP``) over the gallery view of a ``DotScorer`` method, searched chunk by chunk (no score matrix).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown top-k backend {backend!r}; expected one of {BACKENDS}")
    n_queries = len(next(iter(query_views.values())))
    if backend == "faiss":
        import faiss

        if not isinstance(scorer, DotScorer):
            raise ValueError(f"the faiss backend searches inner products and needs a DotScorer, not {scorer!r}")
        gallery = gallery_views[scorer.gallery_view].float().contiguous().numpy()
        index = faiss.IndexFlatIP(gallery.shape[1])
        index.add(gallery)
        for start in range(0, n_queries, chunk_size):
            chunk = query_views[scorer.query_view][start : start + chunk_size].float().contiguous().numpy()
            values, indices = index.search(chunk, k)
            yield start, torch.from_numpy(values), torch.from_numpy(indices)
        return
    for start in range(0, n_queries, chunk_size):
        values, indices = scorer(slice_views(query_views, start, start + chunk_size), gallery_views).topk(k, dim=1)
        yield start, values, indices


class RetrievalPredictionWriter(BasePredictionWriter):
    """Writes ``predictions.jsonl`` (one line per query: its id and the ``top_k`` gallery ids with scores) into
    ``output_dir`` (default: the trainer's log directory); ``backend`` is ``torch`` or ``faiss`` (see
    :func:`top_k_blocks`)."""

    def __init__(self, output_dir: str | None = None, top_k: int = 10, chunk_size: int = 1024, backend: str = "torch"):
        super().__init__(write_interval="epoch")
        if backend not in BACKENDS:
            raise ValueError(f"unknown top-k backend {backend!r}; expected one of {BACKENDS}")
        self.output_dir = output_dir
        self.top_k = top_k
        self.chunk_size = chunk_size
        self.backend = backend

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, predictions, batch_indices):
        per_loader = predictions if predictions and isinstance(predictions[0], list) else [predictions]
        batches = [b for loader in per_loader for b in loader]
        queries = [b for b in batches if b["kind"] == "query"]
        gallery = [b for b in batches if b["kind"] == "gallery"]
        _, query_views, query_ids = _stack(queries)
        _, gallery_views, gallery_ids = _stack(gallery)
        out_dir = Path(self.output_dir or trainer.log_dir or trainer.default_root_dir)  # log_dir: every rank calls
        if trainer.global_rank != 0:
            return
        scorer = pl_module.scorer("predict")
        if hasattr(scorer, "fit"):
            scorer.fit(query_views, gallery_views, self.chunk_size)
        out_dir.mkdir(parents=True, exist_ok=True)
        k = min(self.top_k, len(gallery_ids))
        blocks = top_k_blocks(scorer, query_views, gallery_views, k, self.chunk_size, self.backend)
        with (out_dir / "predictions.jsonl").open("w", encoding="utf-8") as handle:
            for start, values, indices in blocks:
                for row in range(values.shape[0]):
                    record = {
                        "query_id": query_ids[start + row],
                        "gallery_ids": [gallery_ids[j] for j in indices[row].tolist()],
                        "scores": [round(float(v), 6) for v in values[row]],
                    }
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
