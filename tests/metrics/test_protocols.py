"""COCO 1K/5K protocols and NDCG in both directions over the shared ranking core."""

from __future__ import annotations

import math

import pytest
import torch

from leccr_lightning.metrics.protocols import (
    average_reports,
    coco_report,
    fold_reports,
    full_report,
    ndcg_report,
)
from leccr_lightning.metrics.ranking import ndcg_at_k, retrieval_report


def _collection(images: int = 10, per_image: int = 2, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    query_to_gallery = torch.arange(images).repeat_interleave(per_image)
    scores = torch.randn(images * per_image, images, generator=generator)
    relevance = torch.rand(images * per_image, images, generator=generator)
    return scores, query_to_gallery, relevance


def test_ndcg_report_reads_the_columns_for_v2t():
    scores, _, relevance = _collection()
    report = ndcg_report(scores, relevance, k=3)
    assert report["t2v_ndcg@3"] == pytest.approx(100 * float(ndcg_at_k(scores, relevance, 3).mean()), rel=1e-6)
    assert report["v2t_ndcg@3"] == pytest.approx(100 * float(ndcg_at_k(scores.T, relevance.T, 3).mean()), rel=1e-6)
    perfect = ndcg_report(relevance.clone(), relevance, k=5)
    assert perfect["t2v_ndcg@5"] == pytest.approx(100.0) and perfect["v2t_ndcg@5"] == pytest.approx(100.0)


def test_teran_mode_drops_zero_ndcg_image_queries():
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.2]])
    relevance = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert ndcg_report(scores, relevance, k=1)["v2t_ndcg@1"] == pytest.approx(50.0)
    assert ndcg_report(scores, relevance, k=1, teran_v2t=True)["v2t_ndcg@1"] == pytest.approx(100.0)


def test_coco_1k_is_the_mean_of_the_manual_per_fold_reports_and_5k_the_full_report():
    scores, query_to_gallery, relevance = _collection()
    report = coco_report(scores, query_to_gallery, relevance, ks=(1, 5), ndcg_k=3, n_folds=5)
    manual = []
    for fold in range(5):
        rows = slice(4 * fold, 4 * fold + 4)
        cols = slice(2 * fold, 2 * fold + 2)
        part = retrieval_report(scores[rows, cols], query_to_gallery[rows] - 2 * fold, (1, 5))
        # the image-text protocols floor the median rank (RVSEPP evaluation.py:326,370)
        part.update({key: float(math.floor(part[key])) for key in ("t2v_medr", "v2t_medr")})
        part.update(ndcg_report(scores[rows, cols], relevance[rows, cols], 3))
        manual.append(part)
    for key, value in average_reports(manual).items():
        assert report[f"coco1k/{key}"] == pytest.approx(value)
    full = full_report(scores, query_to_gallery, relevance, (1, 5), 3)
    for key, value in full.items():
        assert report[f"coco5k/{key}"] == pytest.approx(value)
    assert report["coco1k/sumr"] <= 400.0 and report["coco1k/t2v_r1"] <= report["coco1k/t2v_r5"]


def test_fold_reports_are_invariant_to_caption_order_and_check_the_fold_count():
    scores, query_to_gallery, _ = _collection()
    permutation = torch.randperm(scores.shape[0], generator=torch.Generator().manual_seed(1))
    first = average_reports(fold_reports(scores, query_to_gallery, 2))
    second = average_reports(fold_reports(scores[permutation], query_to_gallery[permutation], 2))
    assert first == pytest.approx(second)
    with pytest.raises(ValueError, match="divisor"):
        fold_reports(scores, query_to_gallery, 3)
    with pytest.raises(ValueError, match="at least one"):
        average_reports([])
