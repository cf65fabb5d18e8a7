"""Pure ranking core: best-positive ranks by counting, R@K / MedR / MeanR / mAP / SumR, NDCG@k.

Conventions (spec ccr_methods §6, itr_video_methods §9.2, perf_anchors "Agreement"):

* Rows are queries (captions), columns are gallery (visual) items; ``query_to_gallery[q]`` is the one
  visual item of caption ``q``. Text->visual (t2v) has one positive per query; visual->text (v2t) ranks
  all captions for gallery item ``j`` and its positives are the captions with ``query_to_gallery == j``.
* Ranks are 1-based: rank = 1 + #candidates scored STRICTLY higher than the best positive. This is the
  optimistic tie policy: a negative tied with the positive does not push it down.
* Ranks come from counting ``score > threshold`` in cache-sized blocks, never from sorting score rows.

How the scores are visited (perf_anchors "near the floor"). Queries are grouped by their item and cut into chunks of
about ``chunk_size`` rows that hold whole items, so chunk c holds every caption of a range of items [j0, j1): its
"diagonal" block S[chunk, j0:j1] contains the positives of its rows (t2v thresholds) and of its items (v2t
thresholds). All diagonal blocks are scored first and kept (about Q x chunk_size / captions-per-item scores), which
fixes every threshold; then every other block is scored once, counted in both directions while it is hot, and
dropped (on the CPU by the fused kernel of ``counting``, which reads each score once for all its counts, in the
query-major or the item-major layout a scorer returns; ``DotScorer`` returns item-major CPU blocks). Every
score is computed exactly once and every threshold is read from the same computation as its
competitors, so no GEMM is repeated and no full score matrix is held. Items without captions (a gallery larger
than the captioned items, e.g. a million distractors) only compete in t2v: they are scored in column tiles of the
full gallery whose captioned columns are left out of the counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from leccr_lightning.metrics.counting import count_block, fused_counting, item_major
from leccr_lightning.metrics.scoring import ALIGNED_COLUMNS, DotScorer, Views, slice_views

AUTO_CHUNK_ROWS = 2048
"""Query rows per chunk when ``chunk_size`` is None. perf_anchors "near the floor" 4 uses 1,024-query GEMM chunks;
2,048 halve the share of the narrow diagonal bands (17% of the GEMM at VATEX with 1,024) and the calls per report:
paired in one process on 2 cores, evaluation / GEMM went from 1.04-1.05 to 1.00-1.01 at MSCOCO-5K and from 1.15-1.17
to 1.12 at VATEX (4,096: 1.03-1.07 / 1.09-1.11)."""
PIECE_ELEMENTS = 2**22
"""Scores per scorer call (16 MiB of fp32) past which a block is cut into column tiles: small enough for the
allocator to reuse the memory of the previous piece instead of mapping fresh pages."""
MIN_PIECE = 256
"""Fewest columns of a piece where the gallery allows: BLAS libraries switch to small-matrix kernels below
~128 columns, whose rounding differs from a full GEMM's (MKL: N <= 128 at K = 1024); wider pieces score exactly as
one [Q, G] product does there."""
COUNT_BLOCK_BYTES = 2**20
"""Bytes of scores per counting step and CPU thread (each thread's share of the hot rows stays in its core's L2)."""
ACCELERATOR_COUNT_BLOCK_BYTES = 2**28
"""The same on GPUs, where few large kernels beat cache-sized ones."""

PieceScores = Callable[[int, int, int, int], Tensor]
"""(row start, row stop, column start, column stop) -> the [rows, columns] score block of that piece."""


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


def _check_finite(block: Tensor, row_offset: int) -> None:
    """Raise naming the first query row holding a NaN/inf score (one cheap sum, exact scan on failure)."""
    if torch.isfinite(block.sum()):
        return
    bad = (~torch.isfinite(block)).any(dim=1).nonzero()
    if bad.numel():
        raise ValueError(f"non-finite score in query row {row_offset + int(bad[0])}")


@dataclass(frozen=True)
class _Layout:
    """Queries grouped by item and cut into item-aligned chunks (CPU bookkeeping, no score is touched).

    ``items``: the gallery items that have captions, ascending (G* of them); ``column[p]``: the position in
    ``items`` of the item of the p-th query in grouped order (non-decreasing); ``order[p]``: that query's original
    index, or None when the queries are already grouped; ``chunks``: (row start, row stop, band start, band stop),
    the band being the captioned items [b0, b1) of the chunk's diagonal block, which holds the chunk's own items.
    """

    items: Tensor
    column: Tensor
    order: Tensor | None
    chunks: tuple[tuple[int, int, int, int], ...]
    num_gallery: int

    @property
    def all_items_captioned(self) -> bool:
        return self.items.numel() == self.num_gallery

    @staticmethod
    def build(query_to_gallery: Tensor, num_gallery: int, rows: int) -> _Layout:
        """Group the queries by item (stable) and cut chunks of about ``rows`` rows at item boundaries.

        Cuts fall on the last item boundary at or before each multiple of ``rows`` rows, so a chunk holds at most
        ``rows`` rows unless an item straddles a multiple; a last chunk under ``rows // 2`` rows joins the one before.
        A band spans the chunk's items, widened to ``MIN_PIECE`` columns, its edges to multiples of ``ALIGNED_COLUMNS``,
        and to the edge of the captioned items when fewer than ``MIN_PIECE`` columns would remain beyond it.
        """
        query_to_gallery = query_to_gallery.cpu()
        items, column = torch.unique(query_to_gallery, return_inverse=True)
        order = torch.sort(column, stable=True).indices
        if bool((order == torch.arange(order.numel())).all()):
            order = None
        else:
            column = column[order]
        num_items = items.numel()
        ends = torch.cumsum(torch.bincount(column, minlength=num_items), 0)
        targets = torch.tensor(range(rows, int(ends[-1]), rows), dtype=torch.long)
        cuts = torch.unique(torch.cat([torch.searchsorted(ends, targets, right=True), torch.tensor([num_items])]))
        cuts = [int(cut) for cut in cuts if cut > 0]
        if len(cuts) > 1 and int(ends[-1] - ends[cuts[-2] - 1]) < rows // 2:
            del cuts[-2]
        chunks = []
        for item_start, item_stop in zip([0, *cuts[:-1]], cuts, strict=True):
            band_stop = max(item_stop, min(num_items, item_start + MIN_PIECE))
            band_start = min(item_start, max(0, band_stop - MIN_PIECE))
            band_start -= band_start % ALIGNED_COLUMNS
            band_stop = min(num_items, band_stop + -band_stop % ALIGNED_COLUMNS)
            band_start = 0 if band_start < MIN_PIECE else band_start
            band_stop = num_items if num_items - band_stop < MIN_PIECE else band_stop
            row_start = int(ends[item_start - 1]) if item_start else 0
            chunks.append((row_start, int(ends[item_stop - 1]), band_start, band_stop))
        return _Layout(items, column, order, tuple(chunks), num_gallery)

    def original_row(self, grouped_row: int) -> int:
        """The original query index of the query at ``grouped_row`` in grouped order."""
        return grouped_row if self.order is None else int(self.order[grouped_row])


def _gather_columns(block: Tensor, columns: Tensor) -> Tensor:
    """``block[:, columns]``, gathered as whole rows of its storage when the block is item-major (torch gathers the
    columns of a transposed CPU tensor element by element, ~10x slower)."""
    if item_major(block):
        return block.T.index_select(0, columns).T
    return block.index_select(1, columns)


def _tiles(start: int, stop: int, width: int) -> list[tuple[int, int]]:
    """[start, stop) cut into consecutive ranges of ``width``; a last range under ``MIN_PIECE`` joins the one
    before."""
    bounds = list(range(start, stop, width)) + [stop]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < MIN_PIECE:
        del bounds[-2]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


class _Workspace:
    """One reusable fp32 buffer for the comparison results of every counting step."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        cpu_budget = COUNT_BLOCK_BYTES * torch.get_num_threads()
        self.budget = cpu_budget if device.type == "cpu" else ACCELERATOR_COUNT_BLOCK_BYTES
        self.storage = torch.empty(0, device=device)

    def rows_per_step(self, values_per_row: int) -> int:
        """Rows whose ``values_per_row`` comparison results fit the device's block budget."""
        return max(1, self.budget // (4 * max(1, values_per_row)))

    def take(self, *shape: int) -> Tensor:
        """A [*shape] fp32 view of the buffer (grown when needed); valid until the next ``take``."""
        size = 1
        for dim in shape:
            size *= dim
        if self.storage.numel() < size:
            self.storage = torch.empty(size, device=self.device)
        return self.storage[:size].view(shape)


class _ColumnCounter:
    """Counts, for every caption q, #{q' : S[q', j] > S[q, j]} in its item's column j (positions in ``items``).

    Captions are ordered per item by score (descending); the i-th of an item is "level i". Levels held by at
    least half of the items are "dense": on the CPU ``counting.count_block`` compares every score with all of them in
    one pass, elsewhere each step of rows is compared with them level by level while it is in cache (missing items
    get +inf thresholds, which nothing exceeds); the rare deeper levels are compared on
    gathered columns, so a skewed item does not multiply the work. Level 0 is each item's best positive
    (``scatter_reduce`` amax): the v2t rank. Counts are exact within a block (the kernel's int32 / fp32 counts, or
    sums of fp32 0/1 comparison results over at most a step of rows on the torch path) and accumulated in fp64.
    """

    def __init__(self, positives: Tensor, column: Tensor, num_items: int) -> None:
        device = positives.device
        num_queries = positives.numel()
        by_score = torch.sort(positives, descending=True, stable=True).indices
        order = by_score[torch.sort(column[by_score], stable=True).indices]
        self.items = column[order]
        scores = positives[order]
        self.captions_per_item = torch.bincount(column, minlength=num_items)
        starts = torch.cumsum(self.captions_per_item, 0) - self.captions_per_item
        index = torch.arange(num_queries, device=device)
        self.level = index - starts[self.items]
        new_run = torch.ones(num_queries, dtype=torch.bool, device=device)
        new_run[1:] = (self.items[1:] != self.items[:-1]) | (scores[1:] != scores[:-1])
        run_start = torch.cummax(torch.where(new_run, index, 0), 0).values
        self.positives_above = run_start - starts[self.items]

        coverage = torch.bincount(self.level.cpu())
        self.num_dense = max(1, int((2 * coverage >= num_items).sum()))
        thresholds = torch.full((self.num_dense, num_items), float("inf"), dtype=positives.dtype, device=device)
        thresholds[0].scatter_reduce_(0, column, positives, "amax", include_self=False)
        deeper = (self.level >= 1) & (self.level < self.num_dense)
        thresholds[self.level[deeper], self.items[deeper]] = scores[deeper]
        self.thresholds = thresholds
        self.dense_counts = torch.zeros(self.num_dense, num_items, dtype=torch.float64, device=device)

        tail = self.level >= self.num_dense
        self.tail_items = self.items[tail]
        self.tail_items_cpu = self.tail_items.cpu()
        self.tail_thresholds = scores[tail]
        self.tail_counts = torch.zeros(self.tail_items.numel(), dtype=torch.float64, device=device)

    def count_dense(self, rows: Tensor, first_item: int, hits: Tensor) -> None:
        """Add the dense-level counts of ``rows`` [r, C], whose columns are items ``first_item`` ... ``first_item +
        C - 1``; ``hits`` is an fp32 scratch tensor of the shape of ``rows``."""
        columns = slice(first_item, first_item + rows.shape[1])
        for level in range(self.num_dense):
            torch.gt(rows, self.thresholds[level, columns], out=hits)
            self.dense_counts[level, columns] += hits.sum(0)

    def count_tail(self, block: Tensor, first_item: int) -> None:
        """Add the counts of the levels deeper than the dense ones for ``block`` [rows, C] (columns as above)."""
        if not self.tail_items_cpu.numel():
            return
        width = block.shape[1]
        lo, hi = (
            int(i) for i in torch.searchsorted(self.tail_items_cpu, torch.tensor([first_item, first_item + width]))
        )
        if hi > lo:
            gathered = _gather_columns(block, self.tail_items[lo:hi] - first_item)
            self.tail_counts[lo:hi] += (gathered > self.tail_thresholds[lo:hi]).sum(0)

    def best_ranks(self) -> Tensor:
        """v2t rank of each item: 1 + #captions scored strictly above its best positive."""
        return 1 + self.dense_counts[0].long()

    def average_precision(self) -> Tensor:
        """v2t AP of every item: mean_i (i / p_i), p_i = i + #negatives above positive i."""
        above = torch.empty_like(self.level)
        dense = self.level < self.num_dense
        above[dense] = self.dense_counts[self.level[dense], self.items[dense]].long()
        above[~dense] = self.tail_counts.long()
        negatives_above = above - self.positives_above
        position_among_positives = (self.level + 1).double()
        precision = position_among_positives / (position_among_positives + negatives_above)
        total = torch.zeros(self.captions_per_item.numel(), dtype=torch.float64, device=precision.device)
        total.index_add_(0, self.items, precision)
        return total / self.captions_per_item


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


@dataclass(frozen=True)
class RetrievalRanks:
    """The ranks behind a report (1-based; ties count in the query's favour): ``t2v`` [Q], each query's rank of its
    item, in the input query order; ``v2t`` [G*], each captioned item's rank of its best caption, for the gallery
    items ``v2t_items`` [G*] (ascending)."""

    t2v: Tensor
    v2t: Tensor
    v2t_items: Tensor


class _Evaluation:
    """The counts of one report: t2v row counts, v2t column counts, and a finiteness check per query row."""

    def __init__(self, layout: _Layout, positives: Tensor, workspace: _Workspace) -> None:
        self.layout = layout
        self.positives = positives
        self.workspace = workspace
        self.row_counts = torch.zeros(positives.numel(), dtype=torch.float64, device=positives.device)
        self.row_sums = torch.zeros(positives.numel(), device=positives.device)
        self.columns = _ColumnCounter(positives, layout.column.to(positives.device), layout.items.numel())
        self.items = layout.items.to(positives.device)

    def _row_steps(self, block: Tensor, start: int) -> Iterator[tuple[slice, Tensor]]:
        """The block in cache-sized steps of rows: (the step's grouped query rows, its scores)."""
        step = self.workspace.rows_per_step(block.shape[1])
        for offset in range(0, block.shape[0], step):
            rows = block[offset : offset + step]
            yield slice(start + offset, start + offset + rows.shape[0]), rows

    def _count_step(self, grouped: slice, rows: Tensor) -> Tensor:
        """Add the t2v counts and the row sums of one step; returns the fp32 scratch of its shape."""
        hits = self.workspace.take(*rows.shape)
        self.row_sums[grouped] += rows.sum(1)
        torch.gt(rows, self.positives[grouped, None], out=hits)
        self.row_counts[grouped] += hits.sum(1)
        return hits

    def count_rows(self, block: Tensor, start: int) -> None:
        """t2v: add #{columns of ``block`` scored above each row's positive} for rows ``start`` ... of ``block``."""
        if fused_counting(block):
            no_levels = block.new_empty(0, block.shape[1])
            rows = slice(start, start + block.shape[0])
            count_block(block, self.positives[rows], no_levels, self.row_counts[rows], self.row_sums[rows], no_levels)
            return
        for grouped, rows in self._row_steps(block, start):
            self._count_step(grouped, rows)

    def count_captioned(self, block: Tensor, start: int, first_item: int) -> None:
        """Both directions for a block of captioned items ``first_item`` ... (grouped query rows ``start`` ...): on
        the CPU in one fused pass (``counting.count_block``), elsewhere step of rows by step while it is in cache."""
        if fused_counting(block):
            rows = slice(start, start + block.shape[0])
            columns = slice(first_item, first_item + block.shape[1])
            count_block(
                block,
                self.positives[rows],
                self.columns.thresholds[:, columns],
                self.row_counts[rows],
                self.row_sums[rows],
                self.columns.dense_counts[:, columns],
            )
        else:
            for grouped, rows in self._row_steps(block, start):
                self.columns.count_dense(rows, first_item, self._count_step(grouped, rows))
        self.columns.count_tail(block, first_item)

    def count_uncaptioned(self, block: Tensor, start: int, first_column: int) -> None:
        """t2v only, for a tile of full-gallery columns ``first_column`` ...: the captioned columns inside it are
        counted from their own blocks, so their hits here are taken back out."""
        self.count_rows(block, start)
        bounds = torch.tensor([first_column, first_column + block.shape[1]])
        lo, hi = (int(i) for i in torch.searchsorted(self.layout.items, bounds))
        if hi > lo:
            captioned = _gather_columns(block, self.items[lo:hi] - first_column)
            rows = slice(start, start + block.shape[0])
            self.row_counts[rows] -= (captioned > self.positives[rows, None]).sum(1)

    def check_finite(self, captioned: PieceScores, uncaptioned: PieceScores | None) -> None:
        """Raise naming the first query row with a NaN/inf score. A row whose fp32 sum of scores is not finite is
        scored again on its own, since huge finite scores can overflow the sum without being wrong themselves."""
        for row in (~torch.isfinite(self.row_sums)).nonzero().squeeze(1).tolist():
            scores = [captioned(row, row + 1, 0, self.layout.items.numel())]
            if uncaptioned is not None:
                scores.append(uncaptioned(row, row + 1, 0, self.layout.num_gallery))
            if not all(bool(torch.isfinite(block).all()) for block in scores):
                raise ValueError(f"non-finite score in query row {self.layout.original_row(row)}")

    def ranks(self) -> RetrievalRanks:
        """Per-query t2v ranks in the input order and per-item v2t ranks, from the counts."""
        grouped = 1 + self.row_counts.long()
        t2v = grouped if self.layout.order is None else torch.empty_like(grouped)
        if self.layout.order is not None:
            t2v[self.layout.order.to(grouped.device)] = grouped
        return RetrievalRanks(t2v.cpu(), self.columns.best_ranks().cpu(), self.items.cpu())

    def report(self, ks: tuple[int, ...]) -> dict[str, float]:
        """The report's keys from the counts."""
        t2v_ranks = 1 + self.row_counts.long()
        report = _direction_summary("t2v", t2v_ranks, 1.0 / t2v_ranks.double(), ks)
        report.update(_direction_summary("v2t", self.columns.best_ranks(), self.columns.average_precision(), ks))
        report["sumr"] = sum(report[f"{direction}_r{k}"] for direction in ("t2v", "v2t") for k in ks)
        return report


def _evaluate(captioned: PieceScores, uncaptioned: PieceScores | None, layout: _Layout, device) -> _Evaluation:
    """Score every piece once (diagonal blocks first, see the module docstring) and count it in both directions.

    ``captioned(r0, r1, i0, i1)``: scores of grouped queries [r0, r1) against captioned items [i0, i1) (positions in
    ``layout.items``); ``uncaptioned(r0, r1, c0, c1)``: against gallery items [c0, c1), needed only when some
    gallery items have no caption.
    """
    num_items = layout.items.numel()
    diagonal = [captioned(r0, r1, b0, b1) for r0, r1, b0, b1 in layout.chunks]
    column = layout.column.to(device)
    positives = torch.cat(
        [
            block[torch.arange(r1 - r0, device=device), column[r0:r1] - b0]
            for block, (r0, r1, b0, _) in zip(diagonal, layout.chunks, strict=True)
        ]
    )
    evaluation = _Evaluation(layout, positives, _Workspace(torch.device(device)))
    for block, (r0, _, b0, _) in zip(diagonal, layout.chunks, strict=True):
        evaluation.count_captioned(block, r0, b0)
    del diagonal
    for r0, r1, b0, b1 in layout.chunks:
        width = max(MIN_PIECE, PIECE_ELEMENTS // (r1 - r0) // ALIGNED_COLUMNS * ALIGNED_COLUMNS)
        for c0, c1 in _tiles(0, b0, width) + _tiles(b1, num_items, width):
            evaluation.count_captioned(captioned(r0, r1, c0, c1), r0, c0)
        if uncaptioned is not None:
            for c0, c1 in _tiles(0, layout.num_gallery, width):
                evaluation.count_uncaptioned(uncaptioned(r0, r1, c0, c1), r0, c0)
    evaluation.check_finite(captioned, uncaptioned)
    return evaluation


def _piece(matrix: Tensor, rows: slice | Tensor, columns: slice | Tensor) -> Tensor:
    """``matrix[rows][:, columns]`` for slices (a view) or index tensors (a copy of just the piece)."""
    if isinstance(rows, slice):
        return matrix[rows, columns] if isinstance(columns, slice) else matrix[rows].index_select(1, columns)
    if isinstance(columns, slice):
        return matrix[:, columns].index_select(0, rows)
    return matrix[rows[:, None], columns[None, :]]


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
    query_to_gallery = _check_query_to_gallery(query_to_gallery, num_queries, num_gallery)
    layout = _Layout.build(query_to_gallery, num_gallery, AUTO_CHUNK_ROWS)
    order = None if layout.order is None else layout.order.to(scores.device)
    items = layout.items.to(scores.device)

    def rows(r0: int, r1: int) -> slice | Tensor:
        return slice(r0, r1) if order is None else order[r0:r1]

    def captioned(r0: int, r1: int, i0: int, i1: int) -> Tensor:
        return _piece(scores, rows(r0, r1), slice(i0, i1) if layout.all_items_captioned else items[i0:i1])

    def uncaptioned(r0: int, r1: int, c0: int, c1: int) -> Tensor:
        return _piece(scores, rows(r0, r1), slice(c0, c1))

    return _evaluate(captioned, None if layout.all_items_captioned else uncaptioned, layout, scores.device).report(ks)


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


def _rows_of_views(views: Views, index: Tensor) -> dict[str, Tensor]:
    """Rows ``index`` of every view (a copy, in that order)."""
    return {name: view.index_select(0, index.to(view.device)) for name, view in views.items()}


def retrieval_report_from_views(
    queries: Views,
    gallery: Views,
    query_to_gallery: Tensor,
    scorer: Callable[[Views, Views], Tensor],
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int | None = None,
    return_ranks: bool = False,
) -> dict[str, float] | tuple[dict[str, float], RetrievalRanks]:
    """``retrieval_report`` of ``scorer(queries, gallery)``, scored piece by piece (module docstring); with
    ``return_ranks`` also the ``RetrievalRanks`` it was computed from.

    ``scorer`` maps query views and gallery views (each sliced or indexed on dim 0) to their [queries, items] score
    block; it must score every (query, item) pair on its own, whatever other rows it is given. If it has a ``fit``
    method (e.g. ``FusedScorer``, global min-max), ``fit`` runs first over query chunks. Floating views and score
    blocks are fp32. Chunks hold about ``chunk_size`` queries (None: AUTO_CHUNK_ROWS) and whole items; equal chunk
    sizes give equal numbers, different ones agree up to the GEMM's rounding (exactly on exactly-representable
    data). Each score is computed once; at most the diagonal blocks (~Q x chunk_size / captions per item) and one
    block of PIECE_ELEMENTS scores are held.
    """
    ks = validate_ks(ks)
    validate_chunk_size(chunk_size)
    num_queries = _num_rows(queries, "query")
    num_gallery = _num_rows(gallery, "gallery")
    query_to_gallery = _check_query_to_gallery(query_to_gallery, num_queries, num_gallery)
    queries, gallery = _as_float32(queries), _as_float32(gallery)
    rows = min(AUTO_CHUNK_ROWS if chunk_size is None else chunk_size, num_queries)
    if hasattr(scorer, "fit"):
        scorer.fit(queries, gallery, rows)
    layout = _Layout.build(query_to_gallery, num_gallery, rows)
    grouped = queries if layout.order is None else _rows_of_views(queries, layout.order)
    captioned_gallery = gallery if layout.all_items_captioned else _rows_of_views(gallery, layout.items)

    def scored(query_views: Views, gallery_views: Views, num_rows: int, num_columns: int) -> Tensor:
        block = scorer(query_views, gallery_views)
        if not isinstance(block, Tensor) or tuple(block.shape) != (num_rows, num_columns):
            raise ValueError(
                f"scorer returned {getattr(block, 'shape', type(block))} for {num_rows} queries x {num_columns} "
                f"gallery items, expected [{num_rows}, {num_columns}]"
            )
        return block.float()

    def captioned(r0: int, r1: int, i0: int, i1: int) -> Tensor:
        return scored(slice_views(grouped, r0, r1), slice_views(captioned_gallery, i0, i1), r1 - r0, i1 - i0)

    def uncaptioned(r0: int, r1: int, c0: int, c1: int) -> Tensor:
        return scored(slice_views(grouped, r0, r1), slice_views(gallery, c0, c1), r1 - r0, c1 - c0)

    device = next(iter(queries.values())).device
    evaluation = _evaluate(captioned, None if layout.all_items_captioned else uncaptioned, layout, device)
    report = evaluation.report(ks)
    return (report, evaluation.ranks()) if return_ranks else report


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
