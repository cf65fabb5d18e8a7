"""Image-text evaluation protocols over the shared ranking core: NDCG@k both ways, MSCOCO 1K (5 folds) and 5K.

Rows are captions (queries of t2v), columns images (queries of v2t), as in ``retrieval_report``. Rules (itr spec
§9.1, §9.3): ranks are 1-based with the optimistic tie policy of the ranking core (a negative tied with the positive
does not push it down; the official RVSE++/VSE code uses argsort, i.e. index order); NDCG ranks by a stable sort
(ties by lower gallery index) and averages all queries (``teran_v2t=True`` drops v2t queries whose NDCG is exactly 0,
as TERAN's i2t mean does). COCO 1K: fold f holds images f*1000 ... (f+1)*1000 - 1 and their captions; every metric
is averaged over the five folds. COCO 5K: the full ``testall``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from leccr_lightning.metrics.ranking import (
    AUTO_CHUNK_ROWS,
    _as_float32,
    _stable_top_k,
    ndcg_at_k,
    retrieval_report,
    validate_chunk_size,
)
from leccr_lightning.metrics.scoring import Views, slice_views

MAX_FULL_SCORE_ELEMENTS = 2**27
"""Q*G up to which NDCG with ``chunk_size=None`` scores one full [Q, G] block (512 MiB of fp32)."""


def ndcg_report(scores: Tensor, relevance: Tensor, k: int = 25, teran_v2t: bool = False) -> dict[str, float]:
    """``t2v_ndcg@k`` = mean_q NDCG@k(S[q], Rel[q]) and ``v2t_ndcg@k`` over S^T, Rel^T (itr spec §9.3).

    ``relevance`` [captions, images] is indexed like ``scores``; the v2t direction reads its columns. Returns
    percentages like the recalls.
    """
    relevance = torch.as_tensor(relevance)
    t2v = ndcg_at_k(scores, relevance, k)
    v2t = ndcg_at_k(scores.T.contiguous(), relevance.T.contiguous(), k)
    return _ndcg_summary(t2v, v2t, k, teran_v2t)


def _ndcg_summary(t2v: Tensor, v2t: Tensor, k: int, teran_v2t: bool) -> dict[str, float]:
    """Mean per-query NDCG of both directions in percent (TERAN mode: v2t ignores queries whose NDCG is 0)."""
    if teran_v2t:
        v2t = v2t[v2t != 0]
    v2t_mean = float(v2t.double().mean()) if v2t.numel() else 0.0
    return {f"t2v_ndcg@{k}": 100.0 * float(t2v.double().mean()), f"v2t_ndcg@{k}": 100.0 * v2t_mean}


def _dcg(ranked_relevance: Tensor) -> Tensor:
    """DCG of relevance rows already in rank order: sum_r (2^rel_r - 1) / log2(r + 1), r = 1..k (itr spec §9.3)."""
    ranks = torch.arange(2, ranked_relevance.shape[1] + 2, device=ranked_relevance.device)
    return ((torch.exp2(ranked_relevance) - 1) / torch.log2(ranks.to(ranked_relevance.dtype))).sum(1)


def ndcg_report_from_views(
    queries: Views,
    gallery: Views,
    relevance: Callable[[Tensor, Tensor], Tensor],
    scorer: Callable[[Views, Views], Tensor],
    k: int = 25,
    chunk_size: int | None = None,
    teran_v2t: bool = False,
) -> dict[str, float]:
    """:func:`ndcg_report` of ``scorer(queries, gallery)`` against ``relevance(query_positions, gallery_positions)``
    [Q, G], computed in chunks of queries: one [chunk, G] block of scores and of relevance at a time.

    t2v: ``ndcg_at_k`` of each chunk's rows. v2t: every gallery column keeps its running top-k queries (ties by
    lower query index, as ``ndcg_at_k`` of the transpose) and its running top-k relevance for the ideal DCG, so the
    result equals ``ndcg_report`` of the full matrices. ``relevance.validate(Q, G)`` and ``scorer.fit`` run first
    when present; floating views are scored in fp32 and ``chunk_size`` is as in ``retrieval_report_from_views``.
    """
    validate_chunk_size(chunk_size)
    queries, gallery = _as_float32(queries), _as_float32(gallery)
    num_queries = next(iter(queries.values())).shape[0]
    num_gallery = next(iter(gallery.values())).shape[0]
    if hasattr(relevance, "validate"):
        relevance.validate(num_queries, num_gallery)
    if chunk_size is None:
        chunk_size = num_queries if num_queries * num_gallery <= MAX_FULL_SCORE_ELEMENTS else AUTO_CHUNK_ROWS
    rows = min(chunk_size, num_queries)
    if hasattr(scorer, "fit"):
        scorer.fit(queries, gallery, rows)
    gallery_positions = torch.arange(num_gallery)
    t2v, top_scores, top_relevance, ideal = [], None, None, None
    for start in range(0, num_queries, rows):
        stop = min(start + rows, num_queries)
        block = scorer(slice_views(queries, start, stop), gallery).float()
        block_relevance = torch.as_tensor(relevance(torch.arange(start, stop), gallery_positions)).to(block.device)
        if block_relevance.shape != block.shape:
            raise ValueError(
                f"relevance returned {list(block_relevance.shape)} for queries {start}:{stop}, "
                f"expected {list(block.shape)}"
            )
        t2v.append(ndcg_at_k(block, block_relevance, k))
        block_relevance = block_relevance.to(torch.promote_types(block_relevance.dtype, torch.float32))
        if top_scores is None:
            scores_by_item, relevance_by_item, ideal_pool = block.T, block_relevance.T, block_relevance.T
        else:
            scores_by_item = torch.cat([top_scores, block.T], 1)
            relevance_by_item = torch.cat([top_relevance, block_relevance.T], 1)
            ideal_pool = torch.cat([ideal, block_relevance.T], 1)
        keep = min(k, scores_by_item.shape[1])
        order = _stable_top_k(scores_by_item, keep)
        top_scores, top_relevance = scores_by_item.gather(1, order), relevance_by_item.gather(1, order)
        ideal = ideal_pool.topk(keep, dim=1).values
    ideal_dcg = _dcg(ideal)
    tiny = torch.finfo(ideal_dcg.dtype).tiny
    v2t = torch.where(ideal_dcg > 0, _dcg(top_relevance) / ideal_dcg.clamp_min(tiny), torch.zeros_like(ideal_dcg))
    return _ndcg_summary(torch.cat(t2v), v2t, k, teran_v2t)


def full_report(
    scores: Tensor,
    query_to_gallery: Tensor,
    relevance: Tensor | None = None,
    ks: Sequence[int] = (1, 5, 10),
    ndcg_k: int = 25,
    teran_v2t: bool = False,
) -> dict[str, float]:
    """``retrieval_report`` with the image-text MedR (floor of the median rank), plus, when ``relevance`` is given,
    the NDCG@``ndcg_k`` keys of :func:`ndcg_report`."""
    report = retrieval_report(scores, query_to_gallery, ks)
    # MedR of the official i2t / t2i: floor(median(0-based)) + 1 = floor(median(1-based)) (RVSEPP evaluation.py:326,370)
    report.update({key: float(math.floor(report[key])) for key in ("t2v_medr", "v2t_medr")})
    if relevance is not None:
        report.update(ndcg_report(scores, relevance, ndcg_k, teran_v2t))
    return report


def fold_reports(
    scores: Tensor,
    query_to_gallery: Tensor,
    n_folds: int = 5,
    relevance: Tensor | None = None,
    ks: Sequence[int] = (1, 5, 10),
    ndcg_k: int = 25,
    teran_v2t: bool = False,
) -> list[dict[str, float]]:
    """One report per fold of consecutive image blocks (COCO 1K: ``testall`` in 5 blocks of 1,000 images).

    Fold f keeps images [f G/n, (f+1) G/n) and the captions whose image is in it (the scores and relevance
    sub-blocks); G must be divisible by ``n_folds``.
    """
    num_gallery = scores.shape[1]
    if n_folds < 1 or num_gallery % n_folds:
        raise ValueError(f"n_folds: expected a divisor of the {num_gallery} gallery items, got {n_folds}")
    size = num_gallery // n_folds
    reports = []
    for fold in range(n_folds):
        start, stop = fold * size, (fold + 1) * size
        rows = ((query_to_gallery >= start) & (query_to_gallery < stop)).nonzero().squeeze(1)
        if rows.numel() == 0:
            raise ValueError(f"fold {fold} (images {start}..{stop - 1}) has no caption")
        block = scores[rows][:, start:stop]
        fold_relevance = None if relevance is None else torch.as_tensor(relevance)[rows][:, start:stop]
        reports.append(full_report(block, query_to_gallery[rows] - start, fold_relevance, ks, ndcg_k, teran_v2t))
    return reports


def average_reports(reports: Sequence[dict[str, float]]) -> dict[str, float]:
    """Key-wise mean of reports (the official COCO 1K averaging: every metric, rsum included, over folds)."""
    if not reports:
        raise ValueError("average_reports: expected at least one report")
    return {key: sum(report[key] for report in reports) / len(reports) for key in reports[0]}


def coco_report(
    scores: Tensor,
    query_to_gallery: Tensor,
    relevance: Tensor | None = None,
    ks: Sequence[int] = (1, 5, 10),
    ndcg_k: int = 25,
    n_folds: int = 5,
    teran_v2t: bool = False,
) -> dict[str, float]:
    """MSCOCO ``testall`` protocols: ``coco1k/<key>`` (mean over ``n_folds`` folds) and ``coco5k/<key>`` (full)."""
    folds = fold_reports(scores, query_to_gallery, n_folds, relevance, ks, ndcg_k, teran_v2t)
    report = {f"coco1k/{key}": value for key, value in average_reports(folds).items()}
    full = full_report(scores, query_to_gallery, relevance, ks, ndcg_k, teran_v2t)
    report.update({f"coco5k/{key}": value for key, value in full.items()})
    return report
