"""Fused counting of a CPU score block: every score is read once for all the counts the ranking core needs.

For a block S [R, C] (rows = queries, columns = gallery items), row thresholds t [R] and column thresholds T [L, C]
it adds, in one pass over the scores:

* ``row_counts[r] += #{j : S[r, j] > t[r]}`` (t2v: competitors above the query's positive),
* ``row_sums[r] += sum_j S[r, j]`` (fp32; a non-finite sum flags a NaN/inf score),
* ``level_counts[l, j] += #{r : S[r, j] > T[l, j]}`` (v2t: captions above the item's l-th positive).

The torch version of the same counts makes 2 + 2L passes over each cache-sized step of rows (compare, then sum the
comparison results); on 2 cores that cost 15-50% of the GEMM at MSCOCO-5K / VATEX (benchmarks/eval_speed.py). The
numba kernel below reads each score once from memory and compares it with all L + 1 thresholds while its rows are in
L1, four rows at a time so that each column count is loaded and stored once per four rows: 0.7 ns per score at L = 5
on one core, ~5% of a d = 1024 GEMM. It runs on the calling thread: right after a GEMM, torch's OpenMP workers still
spin on the other cores, and splitting the rows over two threads made counting twice as slow on 2 cores (0.24 s
instead of 0.10 s over MSCOCO-5K). No numba threading layer is involved, so forked DDP workers stay safe. Counts are
exact: int32 or fp32 (below 2**24) within a block, accumulated into fp64 (exact below 2**53).

Blocks come in two layouts, both read where they lie: query-major (row r of the block contiguous, e.g. ``q @ g.T``)
and item-major (column j contiguous: the transpose of ``g @ q.T``, which ``DotScorer`` returns on the CPU because MKL
computes it faster). The item-major kernel takes four item rows at a time against the per-query thresholds and
counts each item's levels as scalar thresholds over its row, four levels per pass: 0.56 / 0.84 ns per score at
L = 5 / 10, as the query-major kernel in the same run.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch import Tensor

ROWS_PER_GROUP = 4
"""Rows compared together against the column thresholds (one load/store of each column count per group)."""
LEVELS_PER_PASS = 4
"""Item-major blocks: levels compared together in one pass over an item's row of scores."""
EXACT_FLOAT_COUNT = 2**24
"""Queries per item-major kernel call: its fp32 level counts are exact below 2**24."""
FUSED_DEVICES = ("cpu",)
"""Devices whose blocks are counted by the kernel; elsewhere (CUDA) the ranking core counts with torch kernels."""
FUSED_DTYPES = (torch.float32, torch.float64)


def fused_counting(block: Tensor) -> bool:
    """Whether ``count_block`` counts this block: a float32/float64 block on a device of ``FUSED_DEVICES``."""
    return block.device.type in FUSED_DEVICES and block.dtype in FUSED_DTYPES


@numba.njit(inline="always", boundscheck=False)
def _stored_row(flat, stride, index, length):
    """The ``length`` values of stored row ``index`` of ``flat`` (rows ``stride`` apart), a view."""
    return flat[index * stride : index * stride + length]


@numba.njit(nogil=True, cache=True, boundscheck=False, fastmath={"reassoc", "nsz"})
def _count(flat, row_stride, rows, width, row_thresholds, level_thresholds, row_counts, row_sums, level_counts):
    """The counts of the block stored row-major in ``flat`` (row r starts at ``r * row_stride``), added in place.

    Scores are compared with ">" (NaN never counts), as ``torch.gt``; column counts are int32 within the call.
    """
    levels = level_thresholds.shape[0]
    partial = np.zeros((levels, width), dtype=np.int32)
    for r in range(0, rows, ROWS_PER_GROUP):
        group = min(ROWS_PER_GROUP, rows - r)
        for k in range(group):
            row = _stored_row(flat, row_stride, r + k, width)
            threshold = row_thresholds[r + k]
            above = 0
            total = np.float32(0.0)
            for j in range(width):
                score = row[j]
                above += score > threshold
                total += score
            row_counts[r + k] += above
            row_sums[r + k] += total
        if group == ROWS_PER_GROUP:
            a = _stored_row(flat, row_stride, r, width)
            b = _stored_row(flat, row_stride, r + 1, width)
            c = _stored_row(flat, row_stride, r + 2, width)
            d = _stored_row(flat, row_stride, r + 3, width)
            for level in range(levels):
                counts = partial[level]
                thresholds = level_thresholds[level]
                for j in range(width):
                    t = thresholds[j]
                    counts[j] += np.int32(a[j] > t) + np.int32(b[j] > t) + np.int32(c[j] > t) + np.int32(d[j] > t)
        else:
            for k in range(group):
                row = _stored_row(flat, row_stride, r + k, width)
                for level in range(levels):
                    counts = partial[level]
                    thresholds = level_thresholds[level]
                    for j in range(width):
                        counts[j] += np.int32(row[j] > thresholds[j])
    for level in range(levels):
        for j in range(width):
            level_counts[level, j] += partial[level, j]


@numba.njit(nogil=True, cache=True, boundscheck=False, fastmath={"reassoc", "nsz"})
def _count_item_major(
    flat, item_stride, items, queries, query_thresholds, level_thresholds, query_counts, query_sums, level_counts
):
    """The same counts for a block stored item after item in ``flat`` (the scores of item i for every query start at
    ``i * item_stride``), added in place: four items at a time against the per-query thresholds, so that each query
    count and sum is loaded and stored once per four items; each item's levels are scalar thresholds of its row,
    four per pass, counted in fp32 registers (LLVM vectorises a select of 1.0 / 0.0 twice as well as an integer
    count here; exact while ``queries`` < 2**24, which ``count_block`` ensures).
    """
    levels = level_thresholds.shape[0]
    above = np.zeros(queries, dtype=np.int32)
    totals = np.zeros(queries, dtype=np.float32)
    for i in range(0, items, ROWS_PER_GROUP):
        group = min(ROWS_PER_GROUP, items - i)
        if group == ROWS_PER_GROUP:
            a = _stored_row(flat, item_stride, i, queries)
            b = _stored_row(flat, item_stride, i + 1, queries)
            c = _stored_row(flat, item_stride, i + 2, queries)
            d = _stored_row(flat, item_stride, i + 3, queries)
            for q in range(queries):
                t = query_thresholds[q]
                above[q] += np.int32(a[q] > t) + np.int32(b[q] > t) + np.int32(c[q] > t) + np.int32(d[q] > t)
                totals[q] += (a[q] + b[q]) + (c[q] + d[q])
        else:
            for k in range(group):
                row = _stored_row(flat, item_stride, i + k, queries)
                for q in range(queries):
                    above[q] += np.int32(row[q] > query_thresholds[q])
                    totals[q] += row[q]
        for k in range(group):
            row = _stored_row(flat, item_stride, i + k, queries)
            for level in range(0, levels - LEVELS_PER_PASS + 1, LEVELS_PER_PASS):
                t0 = level_thresholds[level, i + k]
                t1 = level_thresholds[level + 1, i + k]
                t2 = level_thresholds[level + 2, i + k]
                t3 = level_thresholds[level + 3, i + k]
                c0 = c1 = c2 = c3 = np.float32(0.0)
                for q in range(queries):
                    score = row[q]
                    c0 += np.float32(1.0) if score > t0 else np.float32(0.0)
                    c1 += np.float32(1.0) if score > t1 else np.float32(0.0)
                    c2 += np.float32(1.0) if score > t2 else np.float32(0.0)
                    c3 += np.float32(1.0) if score > t3 else np.float32(0.0)
                level_counts[level, i + k] += c0
                level_counts[level + 1, i + k] += c1
                level_counts[level + 2, i + k] += c2
                level_counts[level + 3, i + k] += c3
            for level in range(levels - levels % LEVELS_PER_PASS, levels):
                threshold = level_thresholds[level, i + k]
                count = np.float32(0.0)
                for q in range(queries):
                    count += np.float32(1.0) if row[q] > threshold else np.float32(0.0)
                level_counts[level, i + k] += count
    for q in range(queries):
        query_counts[q] += above[q]
        query_sums[q] += totals[q]


def item_major(block: Tensor) -> bool:
    """Whether the block [R, C] is stored column after column (the transpose of a row-major [C, R] block with a row
    stride of at least R), as ``DotScorer`` returns its CPU blocks."""
    return block.stride(0) == 1 and block.stride(1) >= block.shape[0]


def _flat(storage: Tensor) -> tuple[np.ndarray, int]:
    """(flat array holding the row-major ``storage`` row after row, row stride), over the storage's own memory."""
    rows, width = storage.shape
    row_stride = storage.stride(0)
    flat = storage.as_strided(((rows - 1) * row_stride + width,), (1,))
    return flat.numpy(), row_stride


def _row_major(block: Tensor) -> Tensor:
    """The block itself when its rows are contiguous (e.g. padded rows), else a contiguous copy."""
    if block.stride(1) != 1 or block.stride(0) < block.shape[1]:
        return block.contiguous()
    return block


def count_block(
    block: Tensor,
    row_thresholds: Tensor,
    level_thresholds: Tensor,
    row_counts: Tensor,
    row_sums: Tensor,
    level_counts: Tensor,
) -> None:
    """Add the counts of ``block`` [R, C] (module docstring) on the CPU: ``row_thresholds`` [R] fp32,
    ``level_thresholds`` [L, C] fp32 (L may be 0), ``row_counts`` [R] fp64, ``row_sums`` [R] fp32 and
    ``level_counts`` [L, C] fp64, all CPU tensors; the last three are updated in place."""
    if not fused_counting(block):
        raise ValueError(f"count_block counts float32/float64 CPU blocks, got {block.dtype} on {block.device}")
    rows, width = block.shape
    if rows == 0 or width == 0:
        return
    row_thresholds = row_thresholds.contiguous().numpy()
    level_thresholds = level_thresholds.contiguous().numpy()
    outputs = row_counts.numpy(), row_sums.numpy(), level_counts.numpy()
    if item_major(block):
        counts, sums, levels = outputs
        for start in range(0, rows, EXACT_FLOAT_COUNT):
            stop = min(rows, start + EXACT_FLOAT_COUNT)
            flat, item_stride = _flat(block[start:stop].T)
            queries = slice(start, stop)
            _count_item_major(
                flat,
                item_stride,
                width,
                stop - start,
                row_thresholds[queries],
                level_thresholds,
                counts[queries],
                sums[queries],
                levels,
            )
    else:
        flat, row_stride = _flat(_row_major(block))
        _count(flat, row_stride, rows, width, row_thresholds, level_thresholds, *outputs)
