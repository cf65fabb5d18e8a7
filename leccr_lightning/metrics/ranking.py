"""Pure ranking core: best-positive ranks by counting, R@K / MedR / MeanR / mAP / SumR, NDCG@k.

Conventions (spec ccr_methods §6, itr_video_methods §9.2, perf_anchors "Agreement"):

* Rows are queries (captions), columns are gallery (visual) items; ``query_to_gallery[q]`` is the one
  visual item of caption ``q``. Text->visual (t2v) has one positive per query; visual->text (v2t) ranks
  all captions for gallery item ``j`` and its positives are the captions with ``query_to_gallery == j``.
* Ranks are 1-based: rank = 1 + #candidates scored STRICTLY higher than the best positive. This is the
  optimistic tie policy: a negative tied with the positive does not push it down.
* Ranks come from counting ``score > positive`` in cache-sized blocks with int32 accumulation, never
  from sorting score rows. The positive's score is read from the same block as its competitors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from leccr_lightning.metrics.scoring import DotScorer, Views, slice_views

MAX_FULL_SCORE_ELEMENTS = 2**27
"""Q*G up to which ``chunk_size=None`` materialises the full fp32 score matrix (512 MiB)."""
AUTO_CHUNK_ROWS = 1024
"""Query rows per score chunk when the full matrix is over budget (perf_anchors "near the floor" 4)."""
COUNT_BLOCK_BYTES = 2**21
"""Bytes of scores compared per counting step on CPU (~2 MB stays in L2, perf_anchors rule 3)."""
ACCELERATOR_COUNT_BLOCK_BYTES = 2**28
"""The same on GPUs, where few large kernels beat cache-sized ones."""
UINT8_ROWS = 255
"""Most rows whose 0/1 hits can be summed in uint8 without overflow (then added to int32 counts)."""

ScoreBlocks = Callable[[int, int], Tensor]


def validate_ks(ks: Sequence[int]) -> tuple[int, ...]:
    """Validate the recall cut-offs: a non-empty sequence of distinct positive integers."""
    ks = tuple(ks)
    if not ks or any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty sequence of positive ints, got {ks!r}")
    if len(set(ks)) != len(ks):
        raise ValueError(f"ks must not repeat a cut-off, got {ks!r}")
    return ks


def _check_query_to_gallery(query_to_gallery: Tensor, num_queries: int, num_gallery: int) -> Tensor:
    """Validate ``query_to_gallery``: integer [Q] with every entry in [0, G)."""
    if not isinstance(query_to_gallery, Tensor) or query_to_gallery.dtype.is_floating_point:
        raise ValueError("query_to_gallery must be an integer tensor of gallery columns")
    if query_to_gallery.dim() != 1 or query_to_gallery.numel() != num_queries:
        raise ValueError(
            f"query_to_gallery must have shape [{num_queries}] (one gallery column per query), "
            f"got {list(query_to_gallery.shape)}"
        )
    if num_queries == 0 or num_gallery == 0:
        raise ValueError(f"need at least one query and one gallery item, got Q={num_queries}, G={num_gallery}")
    bad = ((query_to_gallery < 0) | (query_to_gallery >= num_gallery)).nonzero()
    if bad.numel():
        q = int(bad[0])
        raise ValueError(
            f"query_to_gallery[{q}] = {int(query_to_gallery[q])} is outside the gallery [0, {num_gallery})"
        )
    return query_to_gallery.long()


def validate_chunk_size(chunk_size: int | None) -> None:
    """Validate ``chunk_size``: None (automatic) or a positive int."""
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be None or a positive int, got {chunk_size!r}")


def _block_rows(chunk: Tensor, bytes_per_score: int) -> int:
    """Rows per counting block so that ``bytes_per_score`` bytes per score fit the device's block budget."""
    budget = COUNT_BLOCK_BYTES if chunk.device.type == "cpu" else ACCELERATOR_COUNT_BLOCK_BYTES
    return max(1, budget // max(1, chunk.shape[1] * bytes_per_score))


def _check_finite(block: Tensor, row_offset: int) -> None:
    """Raise naming the first query row holding a NaN/inf score (one cheap sum, exact scan on failure)."""
    if torch.isfinite(block.sum()):
        return
    bad = (~torch.isfinite(block)).any(dim=1).nonzero()
    if bad.numel():
        raise ValueError(f"non-finite score in query row {row_offset + int(bad[0])}")


def _count_rows_above(chunk: Tensor, positives: Tensor, row_offset: int) -> Tensor:
    """Per row q of the chunk: #{g : S[q, g] > positives[q]} (int32, counted in cache-sized blocks)."""
    counts = torch.empty(chunk.shape[0], dtype=torch.int32, device=chunk.device)
    step = _block_rows(chunk, chunk.element_size())
    for start in range(0, chunk.shape[0], step):
        block = chunk[start : start + step]
        _check_finite(block, row_offset + start)
        counts[start : start + step] = (block > positives[start : start + step, None]).sum(1, dtype=torch.int32)
    return counts


class _ColumnCounter:
    """Counts, for every caption q, #{q' : S[q', j] > S[q, j]} in its item's column j = query_to_gallery[q].

    Captions are ordered per item by score (descending); the i-th of an item is "level i". Levels held by at
    least half of the gallery are compared against whole blocks in one batched comparison (missing items
    get +inf thresholds, which nothing exceeds); the rare deeper levels are compared on gathered columns,
    so a skewed item does not multiply the work. Hits are summed in uint8 over <= UINT8_ROWS rows, then
    added to int32 counts. Level 0 is each item's best positive (``scatter_reduce`` amax): the v2t rank.
    """

    def __init__(self, positives: Tensor, query_to_gallery: Tensor, num_gallery: int) -> None:
        device = positives.device
        num_queries = positives.numel()
        by_score = torch.sort(positives, descending=True, stable=True).indices
        order = by_score[torch.sort(query_to_gallery[by_score], stable=True).indices]
        self.items = query_to_gallery[order]
        scores = positives[order]
        self.captions_per_item = torch.bincount(query_to_gallery, minlength=num_gallery)
        starts = torch.cumsum(self.captions_per_item, 0) - self.captions_per_item
        index = torch.arange(num_queries, device=device)
        self.level = index - starts[self.items]
        new_run = torch.ones(num_queries, dtype=torch.bool, device=device)
        new_run[1:] = (self.items[1:] != self.items[:-1]) | (scores[1:] != scores[:-1])
        run_start = torch.cummax(torch.where(new_run, index, 0), 0).values
        self.positives_above = run_start - starts[self.items]

        coverage = torch.bincount(self.level)
        self.num_dense = max(1, int((2 * coverage >= num_gallery).sum()))
        thresholds = torch.full((self.num_dense, num_gallery), float("inf"), dtype=positives.dtype, device=device)
        thresholds[0].scatter_reduce_(0, query_to_gallery, positives, "amax", include_self=False)
        deeper = (self.level >= 1) & (self.level < self.num_dense)
        thresholds[self.level[deeper], self.items[deeper]] = scores[deeper]
        self.thresholds = thresholds
        self.dense_counts = torch.zeros(self.num_dense, num_gallery, dtype=torch.int32, device=device)

        tail = self.level >= self.num_dense
        self.tail_items = self.items[tail]
        self.tail_thresholds = scores[tail]
        self.tail_counts = torch.zeros(self.tail_items.numel(), dtype=torch.int32, device=device)

    def update(self, chunk: Tensor) -> None:
        """Add the counts of one score chunk (rows = queries, all gallery columns)."""
        step = min(UINT8_ROWS, _block_rows(chunk, self.num_dense))
        for start in range(0, chunk.shape[0], step):
            block = chunk[start : start + step]
            hits = block[:, None, :] > self.thresholds
            self.dense_counts += hits.view(torch.uint8).sum(0, dtype=torch.uint8)
            if self.tail_items.numel():
                tail_hits = block.index_select(1, self.tail_items) > self.tail_thresholds
                self.tail_counts += tail_hits.view(torch.uint8).sum(0, dtype=torch.uint8)

    def best_ranks(self) -> Tensor:
        """v2t rank of each item with captions: 1 + #captions scored strictly above its best positive."""
        has_captions = self.captions_per_item > 0
        return 1 + self.dense_counts[0][has_captions].long()

    def average_precision(self) -> Tensor:
        """v2t AP of every item with captions: mean_i (i / p_i), p_i = i + #negatives above positive i."""
        above = torch.empty_like(self.level)
        dense = self.level < self.num_dense
        above[dense] = self.dense_counts[self.level[dense], self.items[dense]].long()
        above[~dense] = self.tail_counts.long()
        negatives_above = above - self.positives_above
        position_among_positives = (self.level + 1).double()
        precision = position_among_positives / (position_among_positives + negatives_above)
        total = torch.zeros(self.captions_per_item.numel(), dtype=torch.float64, device=precision.device)
        total.index_add_(0, self.items, precision)
        has_captions = self.captions_per_item > 0
        return total[has_captions] / self.captions_per_item[has_captions]


def _median(ranks: Tensor) -> float:
    """Median of ranks with numpy semantics (mean of the two middle values for an even count, e.g. 195.5)."""
    ordered = torch.sort(ranks).values.double()
    middle = (ordered.numel() - 1) // 2
    if ordered.numel() % 2:
        return float(ordered[middle])
    return float((ordered[middle] + ordered[middle + 1]) / 2)


def _direction_summary(prefix: str, ranks: Tensor, average_precision: Tensor, ks: tuple[int, ...]) -> dict:
    """R@K (percent), medr (numpy median), meanr and mAP (percent) for one direction."""
    count = ranks.numel()
    report = {f"{prefix}_r{k}": 100.0 * int((ranks <= k).sum()) / count for k in ks}
    report[f"{prefix}_medr"] = _median(ranks)
    report[f"{prefix}_meanr"] = float(ranks.double().mean())
    report[f"{prefix}_map"] = 100.0 * float(average_precision.mean())
    return report


def _evaluate(
    blocks: ScoreBlocks,
    num_queries: int,
    num_gallery: int,
    query_to_gallery: Tensor,
    ks: tuple[int, ...],
    rows: int,
) -> dict[str, float]:
    """Two passes over query chunks of ``rows``: t2v ranks and positives, then v2t column counts.

    A single chunk is kept between the passes; several chunks are recomputed with identical boundaries.
    """
    bounds = [(start, min(start + rows, num_queries)) for start in range(0, num_queries, rows)]
    kept: Tensor | None = None
    positives = []
    row_counts = []
    for start, stop in bounds:
        chunk = blocks(start, stop)
        targets = query_to_gallery[start:stop]
        chunk_positives = chunk[torch.arange(stop - start, device=chunk.device), targets]
        row_counts.append(_count_rows_above(chunk, chunk_positives, start))
        positives.append(chunk_positives)
        if len(bounds) == 1:
            kept = chunk
    t2v_ranks = 1 + torch.cat(row_counts).long()

    counter = _ColumnCounter(torch.cat(positives), query_to_gallery, num_gallery)
    for start, stop in bounds:
        counter.update(kept if kept is not None else blocks(start, stop))

    report = _direction_summary("t2v", t2v_ranks, 1.0 / t2v_ranks.double(), ks)
    report.update(_direction_summary("v2t", counter.best_ranks(), counter.average_precision(), ks))
    report["sumr"] = sum(report[f"{direction}_r{k}"] for direction in ("t2v", "v2t") for k in ks)
    return report


def retrieval_report(scores: Tensor, query_to_gallery: Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Retrieval metrics of a text->visual score matrix ``scores`` [Q, G] (row = caption, column = item).

    Returns python floats: ``t2v_r{k}``, ``t2v_medr``, ``t2v_meanr``, ``t2v_map``, the same for ``v2t`` and
    ``sumr`` (sum of all the recalls). Recalls and mAP are in percent (NRCCR README style). Ranks are
    1-based with the optimistic tie policy (strict ">" count). MedR is numpy's median of the ranks, as the
    official NRCCR ``eval_q2m`` (even count -> mean of the two middle ranks). t2v AP = 1/rank; v2t AP is
    over all positives of the item (NRCCR ``v2t_map``); items without captions are skipped in v2t.
    The scores are used in the dtype given (no cast).
    """
    if not isinstance(scores, Tensor) or scores.dim() != 2 or not scores.dtype.is_floating_point:
        raise ValueError(f"scores must be a floating [Q, G] tensor, got {getattr(scores, 'shape', type(scores))}")
    ks = validate_ks(ks)
    num_queries, num_gallery = scores.shape
    query_to_gallery = _check_query_to_gallery(query_to_gallery, num_queries, num_gallery).to(scores.device)
    return _evaluate(
        lambda start, stop: scores[start:stop], num_queries, num_gallery, query_to_gallery, ks, num_queries
    )


def _num_rows(views: Views, role: str) -> int:
    """Common dim-0 size of a mapping of view tensors, with an error naming the view that differs."""
    if not isinstance(views, Mapping) or not views:
        raise ValueError(f"{role} views must be a non-empty mapping of name -> tensor")
    sizes = {name: view.shape[0] for name, view in views.items()}
    first = next(iter(sizes.values()))
    for name, size in sizes.items():
        if size != first:
            raise ValueError(f"{role} view {name!r} has {size} rows, expected {first} like the others: {sizes}")
    return first


def _as_float32(views: Views) -> dict[str, Tensor]:
    """Cast floating views (fp16/bf16/fp64) to fp32; other dtypes pass through."""
    return {name: view.float() if view.dtype.is_floating_point else view for name, view in views.items()}


def retrieval_report_from_views(
    queries: Views,
    gallery: Views,
    query_to_gallery: Tensor,
    scorer: Callable[[Views, Views], Tensor],
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int | None = None,
) -> dict[str, float]:
    """``retrieval_report`` of ``scorer(queries, gallery)`` computed in query chunks of ``chunk_size`` rows.

    ``scorer`` maps a chunk of query views (each sliced on dim 0) and the full gallery views to a [chunk, G]
    score block. If it has a ``fit`` method (e.g. ``FusedScorer``, global min-max), ``fit`` runs first over
    the same chunks. Floating views and score blocks are fp32. ``chunk_size=None``: one block when
    Q*G <= MAX_FULL_SCORE_ELEMENTS, else chunks of AUTO_CHUNK_ROWS queries. Equal boundaries give equal
    numbers; different chunk sizes agree up to the GEMM's rounding (exactly on exactly-representable data).
    """
    ks = validate_ks(ks)
    validate_chunk_size(chunk_size)
    num_queries = _num_rows(queries, "query")
    num_gallery = _num_rows(gallery, "gallery")
    query_to_gallery = _check_query_to_gallery(query_to_gallery, num_queries, num_gallery)
    queries, gallery = _as_float32(queries), _as_float32(gallery)
    if chunk_size is None:
        full = num_queries * num_gallery <= MAX_FULL_SCORE_ELEMENTS
        chunk_size = num_queries if full else AUTO_CHUNK_ROWS
    rows = min(chunk_size, num_queries)
    if hasattr(scorer, "fit"):
        scorer.fit(queries, gallery, rows)

    def blocks(start: int, stop: int) -> Tensor:
        block = scorer(slice_views(queries, start, stop), gallery)
        if not isinstance(block, Tensor) or tuple(block.shape) != (stop - start, num_gallery):
            raise ValueError(
                f"scorer returned {getattr(block, 'shape', type(block))} for queries {start}:{stop}, "
                f"expected [{stop - start}, {num_gallery}]"
            )
        return block.float()

    any_view = next(iter(queries.values()))
    return _evaluate(blocks, num_queries, num_gallery, query_to_gallery.to(any_view.device), ks, rows)


def retrieval_report_from_embeddings(
    query_emb: Tensor,
    gallery_emb: Tensor,
    query_to_gallery: Tensor,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int | None = None,
) -> dict[str, float]:
    """``retrieval_report`` of the fp32 dot products ``query_emb @ gallery_emb.T``, chunked by queries.

    Inputs of other float dtypes are cast to fp32. See ``retrieval_report_from_views`` for ``chunk_size``.
    """
    for name, emb in (("query_emb", query_emb), ("gallery_emb", gallery_emb)):
        if not isinstance(emb, Tensor) or emb.dim() != 2:
            raise ValueError(f"{name} must be a [N, D] tensor, got {getattr(emb, 'shape', type(emb))}")
    return retrieval_report_from_views(
        {"query": query_emb}, {"gallery": gallery_emb}, query_to_gallery, DotScorer(), ks, chunk_size
    )


def _stable_top_k(scores: Tensor, k: int) -> Tensor:
    """Column indices of the k best scores per row, ordered by score descending, ties by lower column first.

    This equals the first k of a stable descending sort, found with ``topk`` plus one pass over the row.
    """
    kth = scores.topk(k, dim=1).values[:, -1:]
    above = scores > kth
    tied = scores == kth
    room = k - above.sum(1, keepdim=True)
    chosen = above | (tied & (torch.cumsum(tied, 1) <= room))
    columns = torch.arange(scores.shape[1], device=scores.device).expand_as(scores)
    candidates = columns[chosen].view(-1, k)
    order = torch.sort(scores.gather(1, candidates), dim=1, descending=True, stable=True).indices
    return candidates.gather(1, order)


def ndcg_at_k(scores: Tensor, relevance: Tensor, k: int) -> Tensor:
    """Per-query NDCG@k [Q] (itr_video_methods §9.3/§10.3).

    DCG = sum_{r=1..min(k,G)} (2^rel_r - 1) / log2(r + 1) over the ranking by ``scores`` (stable: ties broken
    by lower gallery index); IDCG is the same sum over ``relevance`` sorted descending over the whole gallery,
    truncated at k; NDCG = DCG / IDCG and 0 where IDCG = 0. ``relevance`` >= 0, same shape as ``scores``.
    """
    if not isinstance(scores, Tensor) or scores.dim() != 2 or not scores.dtype.is_floating_point:
        raise ValueError(f"scores must be a floating [Q, G] tensor, got {getattr(scores, 'shape', type(scores))}")
    if not isinstance(relevance, Tensor) or relevance.shape != scores.shape:
        raise ValueError(
            f"relevance must have the shape of scores {list(scores.shape)}, got {list(getattr(relevance, 'shape', []))}"
        )
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if scores.numel() == 0:
        raise ValueError(f"need at least one query and one gallery item, got scores of shape {list(scores.shape)}")
    _check_finite(scores, 0)
    relevance = relevance.to(torch.promote_types(relevance.dtype, torch.float32))
    bad = (~torch.isfinite(relevance) | (relevance < 0)).any(1).nonzero()
    if bad.numel():
        raise ValueError(f"relevance of query row {int(bad[0])} must be finite and >= 0")
    k = min(k, scores.shape[1])
    discount = torch.log2(torch.arange(2, k + 2, device=scores.device, dtype=relevance.dtype))
    ranked_relevance = relevance.gather(1, _stable_top_k(scores, k))
    dcg = ((torch.exp2(ranked_relevance) - 1) / discount).sum(1)
    ideal = ((torch.exp2(relevance.topk(k, dim=1).values) - 1) / discount).sum(1)
    return torch.where(ideal > 0, dcg / ideal.clamp_min(torch.finfo(ideal.dtype).tiny), torch.zeros_like(dcg))
