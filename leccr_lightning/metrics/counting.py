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
exact: int32 within a block, accumulated into fp64 (exact below 2**53).
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch import Tensor

ROWS_PER_GROUP = 4
"""Rows compared together against the column thresholds (one load/store of each column count per group)."""
FUSED_DEVICES = ("cpu",)
"""Devices whose blocks are counted by the kernel; elsewhere (CUDA) the ranking core counts with torch kernels."""
FUSED_DTYPES = (torch.float32, torch.float64)


def fused_counting(block: Tensor) -> bool:
    """Whether ``count_block`` counts this block: a float32/float64 block on a device of ``FUSED_DEVICES``."""
    return block.device.type in FUSED_DEVICES and block.dtype in FUSED_DTYPES


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
            row = flat[(r + k) * row_stride : (r + k) * row_stride + width]
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
            a = flat[r * row_stride : r * row_stride + width]
            b = flat[(r + 1) * row_stride : (r + 1) * row_stride + width]
            c = flat[(r + 2) * row_stride : (r + 2) * row_stride + width]
            d = flat[(r + 3) * row_stride : (r + 3) * row_stride + width]
            for level in range(levels):
                counts = partial[level]
                thresholds = level_thresholds[level]
                for j in range(width):
                    t = thresholds[j]
                    counts[j] += np.int32(a[j] > t) + np.int32(b[j] > t) + np.int32(c[j] > t) + np.int32(d[j] > t)
        else:
            for k in range(group):
                row = flat[(r + k) * row_stride : (r + k) * row_stride + width]
                for level in range(levels):
                    counts = partial[level]
                    thresholds = level_thresholds[level]
                    for j in range(width):
                        counts[j] += np.int32(row[j] > thresholds[j])
    for level in range(levels):
        for j in range(width):
            level_counts[level, j] += partial[level, j]


def _row_major(block: Tensor) -> tuple[np.ndarray, int]:
    """(flat array holding the block row after row, row stride): the block's own memory when its rows are
    contiguous (e.g. DotScorer's padded rows), else a contiguous copy."""
    if not fused_counting(block):
        raise ValueError(f"count_block counts float32/float64 CPU blocks, got {block.dtype} on {block.device}")
    if block.stride(1) != 1 or block.stride(0) < block.shape[1]:
        block = block.contiguous()
    rows, width = block.shape
    row_stride = block.stride(0)
    flat = block.as_strided(((rows - 1) * row_stride + width,), (1,))
    return flat.numpy(), row_stride


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
    rows, width = block.shape
    flat, row_stride = _row_major(block)
    _count(
        flat,
        row_stride,
        rows,
        width,
        row_thresholds.contiguous().numpy(),
        level_thresholds.contiguous().numpy(),
        row_counts.numpy(),
        row_sums.numpy(),
        level_counts.numpy(),
    )
