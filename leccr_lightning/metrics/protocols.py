"""Image-text evaluation protocols over the shared ranking core: NDCG@k both ways, MSCOCO 1K (5 folds) and 5K.

Rows are captions (queries of t2v), columns images (queries of v2t), as in ``retrieval_report``. Rules
(itr spec §9.1, §9.3): ranks are 1-based with the optimistic tie policy of the ranking core (a negative
tied with
the positive does not push it down; the official RVSE++/VSE code uses argsort, i.e. index order); NDCG
ranks by a
stable sort (ties by lower gallery index) and averages all queries (``teran_v2t=True`` drops v2t queries whose
NDCG is exactly 0, as TERAN's i2t mean does). COCO 1K: fold f holds images f*1000 ... (f+1)*1000 - 1 and their
captions; every metric is averaged over the five folds. COCO 5K: the full ``testall``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from leccr_lightning.metrics.ranking import ndcg_at_k, retrieval_report


def ndcg_report(scores: Tensor, relevance: Tensor, k: int = 25, teran_v2t: bool = False) -> dict[str, float]:
    """``t2v_ndcg@k`` = mean_q NDCG@k(S[q], Rel[q]) and ``v2t_ndcg@k`` over S^T, Rel^T (itr spec §9.3).

    ``relevance`` [captions, images] is indexed like ``scores``; the v2t direction reads its columns. Returns
    percentages like the recalls.
    """
    relevance = torch.as_tensor(relevance)
    t2v = ndcg_at_k(scores, relevance, k)
    v2t = ndcg_at_k(scores.T.contiguous(), relevance.T.contiguous(), k)
    if teran_v2t:
        v2t = v2t[v2t != 0]
    v2t_mean = float(v2t.double().mean()) if v2t.numel() else 0.0
    return {f"t2v_ndcg@{k}": 100.0 * float(t2v.double().mean()), f"v2t_ndcg@{k}": 100.0 * v2t_mean}


def full_report(
    scores: Tensor,
    query_to_gallery: Tensor,
    relevance: Tensor | None = None,
    ks: Sequence[int] = (1, 5, 10),
    ndcg_k: int = 25,
    teran_v2t: bool = False,
) -> dict[str, float]:
    """``retrieval_report`` plus, when ``relevance`` is given, the NDCG@``ndcg_k`` keys of
    :func:`ndcg_report`."""
    report = retrieval_report(scores, query_to_gallery, ks)
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
    """MSCOCO ``testall`` protocols: ``coco1k/<key>`` (mean over ``n_folds`` folds) and ``coco5k/<key>``
    (full)."""
    folds = fold_reports(scores, query_to_gallery, n_folds, relevance, ks, ndcg_k, teran_v2t)
    report = {f"coco1k/{key}": value for key, value in average_reports(folds).items()}
    full = full_report(scores, query_to_gallery, relevance, ks, ndcg_k, teran_v2t)
    report.update({f"coco5k/{key}": value for key, value in full.items()})
    return report
