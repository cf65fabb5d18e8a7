"""Ranking core, scorers and NDCG: hand-checked values, tie policy, chunk invariance, cross-checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics.functional.retrieval import retrieval_normalized_dcg
from torchmetrics.retrieval import RetrievalHitRate

from leccr_lightning.metrics import (
    DotScorer,
    FusedScorer,
    minmax_normalize,
    ndcg_at_k,
    retrieval_report,
    retrieval_report_from_embeddings,
    retrieval_report_from_views,
    scoring,
)
from leccr_lightning.metrics.ranking import _Layout, _tiles

# 4 captions x 3 items; captions 0,1 -> item 0, captions 2,3 -> item 1, item 2 has no caption.
HAND_SCORES = torch.tensor(
    [
        [0.9, 0.1, 0.5],
        [0.2, 0.8, 0.3],
        [0.4, 0.6, 0.7],
        [0.5, 0.3, 0.3],
    ]
)
HAND_TARGETS = torch.tensor([0, 0, 1, 1])


def brute_force_report(scores: torch.Tensor, targets: torch.Tensor, ks=(1, 5, 10)) -> dict[str, float]:
    """Loop-per-query reference of the documented definitions (NRCCR eval_q2m / t2v_map / v2t_map)."""
    s, t = scores.double().numpy(), targets.numpy()
    t2v = np.array([1 + (s[q] > s[q, t[q]]).sum() for q in range(len(t))])
    v2t, v2t_ap = [], []
    for item in range(s.shape[1]):
        positives = np.flatnonzero(t == item)
        if positives.size == 0:
            continue
        column = s[:, item]
        negatives = np.delete(column, positives)
        v2t.append(1 + (column > column[positives].max()).sum())
        ordered = sorted(column[positives], reverse=True)
        v2t_ap.append(np.mean([(j + 1) / (j + 1 + (negatives > v).sum()) for j, v in enumerate(ordered)]))
    report = {}
    for name, ranks, ap in (("t2v", t2v, 1 / t2v), ("v2t", np.array(v2t), np.array(v2t_ap))):
        report.update({f"{name}_r{k}": 100.0 * (ranks <= k).sum() / len(ranks) for k in ks})
        report.update({f"{name}_medr": float(np.median(ranks)), f"{name}_meanr": ranks.mean()})
        report[f"{name}_map"] = 100 * ap.mean()
    report["sumr"] = sum(report[f"{d}_r{k}"] for d in ("t2v", "v2t") for k in ks)
    return report


def assert_reports_close(actual: dict, expected: dict) -> None:
    assert list(actual) == list(expected)
    for key, value in expected.items():
        assert actual[key] == pytest.approx(value, abs=1e-9), key


def exact_embeddings(num: int, dim: int, seed: int) -> torch.Tensor:
    """Small multiples of 1/4: dot products are exact in fp32 (any GEMM order) and often tied."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(-2, 3, (num, dim), generator=generator).float() / 4


def test_hand_checked_report():
    # t2v ranks [1, 3, 2, 2] (caption 3: 0.5 beats its 0.3, the tied 0.3 does not count)
    # v2t item 0: best 0.9 -> rank 1; AP = (1/1 + 2/4) / 2 (0.2 has negatives 0.4, 0.5 above)
    # v2t item 1: best 0.6 < 0.8 -> rank 2; AP = (1/2 + 2/3) / 2; item 2 has no caption: skipped
    report = retrieval_report(HAND_SCORES, HAND_TARGETS)
    expected = {
        "t2v_r1": 25.0,
        "t2v_r5": 100.0,
        "t2v_r10": 100.0,
        "t2v_medr": 2.0,
        "t2v_meanr": 2.0,
        "t2v_map": 100 * (1 + 1 / 3 + 1 / 2 + 1 / 2) / 4,
        "v2t_r1": 50.0,
        "v2t_r5": 100.0,
        "v2t_r10": 100.0,
        "v2t_medr": 1.5,
        "v2t_meanr": 1.5,
        "v2t_map": 100 * ((1 + 2 / 4) / 2 + (1 / 2 + 2 / 3) / 2) / 2,
        "sumr": 475.0,
    }
    assert_reports_close(report, expected)
    assert all(isinstance(value, float) for value in report.values())


def test_key_names_follow_ks():
    report = retrieval_report(HAND_SCORES, HAND_TARGETS, ks=(1, 2))
    assert [key for key in report if "_r" in key and key[-1].isdigit()] == [
        "t2v_r1",
        "t2v_r2",
        "v2t_r1",
        "v2t_r2",
    ]
    assert report["t2v_r2"] == 75.0
    assert report["sumr"] == 25.0 + 75.0 + 50.0 + 100.0


def test_ties_are_optimistic_in_both_directions():
    scores = torch.tensor([[0.5, 0.5, 0.5], [0.5, 0.2, 0.5]])
    report = retrieval_report(scores, torch.tensor([2, 0]))
    assert report["t2v_r1"] == 100.0  # a negative tied with the positive does not push it down
    assert report["v2t_r1"] == 100.0  # column 0: caption 1 (0.5) ties caption 0 (0.5)
    assert report["v2t_map"] == 100.0
    tied_positives = torch.tensor([[0.7, 0.1], [0.7, 0.1], [0.7, 0.9]])
    report = retrieval_report(tied_positives, torch.tensor([0, 0, 1]))
    assert report["v2t_map"] == 100.0  # AP of item 0: positives at positions 1 and 2 despite the tie


def test_items_without_captions_are_skipped_and_do_not_rank():
    base = retrieval_report(HAND_SCORES, HAND_TARGETS)
    extra_empty_item = torch.cat([HAND_SCORES, torch.full((4, 1), -5.0)], dim=1)
    assert retrieval_report(extra_empty_item, HAND_TARGETS) == base


def test_matches_brute_force_with_ties_and_uneven_captions():
    generator = torch.Generator().manual_seed(0)
    for num_queries, num_gallery in ((1, 1), (17, 5), (30, 40), (120, 30), (700, 3)):  # 700 > uint8 rows
        targets = torch.randint(0, num_gallery, (num_queries,), generator=generator)
        scores = torch.randint(0, 4, (num_queries, num_gallery), generator=generator).float()
        assert_reports_close(retrieval_report(scores, targets), brute_force_report(scores, targets))
    # one item holds most captions: its deep levels go through the gathered-column path
    targets = torch.cat([torch.zeros(60, dtype=torch.long), torch.arange(1, 21)])
    scores = torch.randn(80, 24, generator=generator)
    assert_reports_close(retrieval_report(scores, targets), brute_force_report(scores, targets))


def test_even_count_median_is_mean_of_middle_ranks():
    scores = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 2.0, 0.0]])  # t2v ranks 1 and 2
    assert retrieval_report(scores, torch.tensor([0, 1]))["t2v_medr"] == 1.5


def test_chunk_sizes_give_identical_reports():
    queries, gallery = exact_embeddings(23, 6, seed=1), exact_embeddings(9, 6, seed=2)
    targets = torch.randint(0, 9, (23,), generator=torch.Generator().manual_seed(3))
    reference = retrieval_report(queries @ gallery.T, targets)
    for chunk_size in (1, 7, 23, None):
        assert retrieval_report_from_embeddings(queries, gallery, targets, chunk_size=chunk_size) == reference


def test_every_pair_is_scored_once_in_bounded_pieces(monkeypatch):
    queries, gallery = exact_embeddings(50, 4, seed=4), exact_embeddings(7, 4, seed=5)
    targets = torch.arange(50) % 7  # not grouped by item: the core groups the queries itself
    full = retrieval_report(queries @ gallery.T, targets)
    monkeypatch.setattr("leccr_lightning.metrics.ranking.AUTO_CHUNK_ROWS", 8)
    monkeypatch.setattr("leccr_lightning.metrics.ranking.PIECE_ELEMENTS", 16)
    monkeypatch.setattr("leccr_lightning.metrics.ranking.MIN_PIECE", 1)
    monkeypatch.setattr("leccr_lightning.metrics.ranking.ALIGNED_COLUMNS", 1)
    scored = torch.zeros(50, 7, dtype=torch.long)
    sizes = []

    def recording_scorer(query_views, gallery_views):
        rows, columns = query_views["row"].long(), gallery_views["row"].long()
        scored[rows[:, None], columns[None, :]] += 1
        sizes.append(rows.numel() * columns.numel())
        return DotScorer()(query_views, gallery_views)

    views = ({"query": queries, "row": torch.arange(50.0)}, {"gallery": gallery, "row": torch.arange(7.0)})
    assert retrieval_report_from_views(*views, targets, recording_scorer) == full
    assert torch.equal(scored, torch.ones(50, 7, dtype=torch.long)), "each (query, item) pair is scored once"
    # one chunk per item (8 captions for item 0, 7 for the others): the diagonal blocks come first, then tiles of
    # at most PIECE_ELEMENTS scores
    assert sizes[:7] == [8, 7, 7, 7, 7, 7, 7] and max(sizes[7:]) <= 16


def test_uncaptioned_items_are_only_competitors(monkeypatch):
    queries, gallery = exact_embeddings(30, 4, seed=6), exact_embeddings(40, 4, seed=7)
    targets = torch.randint(0, 40, (30,), generator=torch.Generator().manual_seed(8)) // 4 * 4  # every 4th item
    monkeypatch.setattr("leccr_lightning.metrics.ranking.PIECE_ELEMENTS", 64)
    monkeypatch.setattr("leccr_lightning.metrics.ranking.MIN_PIECE", 3)
    monkeypatch.setattr("leccr_lightning.metrics.ranking.ALIGNED_COLUMNS", 1)
    scored = torch.zeros(30, 40, dtype=torch.long)

    def recording_scorer(query_views, gallery_views):
        scored[query_views["row"].long()[:, None], gallery_views["row"].long()[None, :]] += 1
        return DotScorer()(query_views, gallery_views)

    views = ({"query": queries, "row": torch.arange(30.0)}, {"gallery": gallery, "row": torch.arange(40.0)})
    report = retrieval_report_from_views(*views, targets, recording_scorer, chunk_size=5)
    assert_reports_close(report, brute_force_report(queries @ gallery.T, targets))
    captioned = torch.zeros(40, dtype=torch.bool)
    captioned[targets] = True
    # captioned columns are scored in their own blocks and again (left out of the counts) in the full-gallery tiles
    assert torch.equal(scored[:, captioned], torch.full((30, int(captioned.sum())), 2))
    assert torch.equal(scored[:, ~captioned], torch.ones(30, int((~captioned).sum()), dtype=torch.long))


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 64, None])
def test_views_path_matches_brute_force_with_ties_skew_and_shuffled_captions(chunk_size):
    generator = torch.Generator().manual_seed(9)
    queries, gallery = exact_embeddings(90, 3, seed=10), exact_embeddings(25, 3, seed=11)
    # item 0 holds 40 captions (deep levels on gathered columns), 20 items hold 2-3, items 21-24 hold none
    targets = torch.cat([torch.zeros(40, dtype=torch.long), torch.randint(1, 21, (50,), generator=generator)])
    targets = targets[torch.randperm(90, generator=generator)]
    expected = brute_force_report(queries @ gallery.T, targets)
    report = retrieval_report_from_embeddings(queries, gallery, targets, chunk_size=chunk_size)
    assert_reports_close(report, expected)
    assert_reports_close(retrieval_report(queries @ gallery.T, targets), expected)


def test_item_aligned_chunks_and_bands(monkeypatch):
    monkeypatch.setattr("leccr_lightning.metrics.ranking.MIN_PIECE", 1)
    monkeypatch.setattr("leccr_lightning.metrics.ranking.ALIGNED_COLUMNS", 1)
    targets = torch.tensor([2, 2, 2, 0, 5, 5, 0, 2, 2, 2, 2, 3, 6])  # items 0, 2, 3, 5, 6: 2, 7, 1, 2, 1 captions
    layout = _Layout.build(targets, num_gallery=7, rows=3)
    assert layout.items.tolist() == [0, 2, 3, 5, 6] and not layout.all_items_captioned
    assert layout.column.tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 1, 2, 3, 3, 4]
    assert layout.order.tolist() == [3, 6, 0, 1, 2, 7, 8, 9, 10, 11, 4, 5, 12]
    # cuts at the last item boundary before each multiple of 3 rows (item 2 straddles two of them)
    assert layout.chunks == ((0, 2, 0, 1), (2, 9, 1, 2), (9, 12, 2, 4), (12, 13, 4, 5))
    assert layout.original_row(10) == 4
    # multiples of 4: a chunk straddling 8 takes items 2, 3, 5; the last chunk (1 row < 4 // 2) joins it
    assert _Layout.build(targets, num_gallery=7, rows=4).chunks == ((0, 2, 0, 1), (2, 13, 1, 5))
    monkeypatch.setattr("leccr_lightning.metrics.ranking.MIN_PIECE", 2)
    # bands widened to 2 items, and to the edge where fewer than 2 would remain outside
    assert _Layout.build(targets, num_gallery=7, rows=3).chunks == (
        (0, 2, 0, 2),
        (2, 9, 0, 3),
        (9, 12, 2, 5),
        (12, 13, 3, 5),
    )
    assert _tiles(0, 9, 4) == [(0, 4), (4, 9)] and _tiles(2, 10, 4) == [(2, 6), (6, 10)]
    # band edges on multiples of ALIGNED_COLUMNS columns (the last one at the edge of the gallery)
    monkeypatch.setattr("leccr_lightning.metrics.ranking.MIN_PIECE", 1)
    monkeypatch.setattr("leccr_lightning.metrics.ranking.ALIGNED_COLUMNS", 4)
    assert _Layout.build(torch.arange(10), num_gallery=10, rows=3).chunks == (
        (0, 3, 0, 4),
        (3, 6, 0, 8),
        (6, 9, 4, 10),
        (9, 10, 8, 10),
    )
    grouped = _Layout.build(torch.tensor([0, 0, 1, 2]), num_gallery=3, rows=8)
    assert grouped.order is None and grouped.all_items_captioned and grouped.chunks == ((0, 4, 0, 3),)


def test_embeddings_are_scored_in_fp32():
    queries = torch.randn(12, 5, dtype=torch.float64)
    gallery = torch.randn(4, 5, dtype=torch.float16)
    targets = torch.arange(12) % 4
    report = retrieval_report_from_embeddings(queries, gallery, targets)
    assert report == retrieval_report(queries.float() @ gallery.float().T, targets)


def test_fused_weight_one_zero_ranks_like_first_term():
    queries = {"a": exact_embeddings(15, 5, seed=6), "b": exact_embeddings(15, 5, seed=7)}
    gallery = {"gallery": exact_embeddings(6, 5, seed=8)}
    targets = torch.arange(15) % 6
    fused = FusedScorer([(DotScorer("a"), 1.0), (DotScorer("b"), 0.0)])
    alone = DotScorer("a")
    for chunk_size in (None, 4):
        expected = retrieval_report_from_views(queries, gallery, targets, alone, chunk_size=chunk_size)
        assert retrieval_report_from_views(queries, gallery, targets, fused, chunk_size=chunk_size) == expected


def test_fused_minmax_output_spans_unit_interval():
    queries, gallery = {"query": exact_embeddings(10, 4, seed=15)}, {"gallery": exact_embeddings(5, 4, seed=16)}
    scores = FusedScorer([(DotScorer(), 1.0)]).fit(queries, gallery, chunk_size=3)(queries, gallery)
    assert float(scores.min()) == 0.0
    assert float(scores.max()) == 1.0


def test_fused_views_equal_brute_force_minmax_fusion():
    queries = {"target": exact_embeddings(21, 6, seed=9), "target2en": exact_embeddings(21, 6, seed=10)}
    gallery = {"gallery": exact_embeddings(7, 6, seed=11)}
    targets = torch.arange(21) % 7
    native, translated = queries["target"] @ gallery["gallery"].T, queries["target2en"] @ gallery["gallery"].T
    brute = 0.2 * ((translated - translated.min()) / (translated.max() - translated.min())) + 0.8 * (
        (native - native.min()) / (native.max() - native.min())
    )
    expected = retrieval_report(brute, targets)
    scorer = FusedScorer([(DotScorer("target2en"), 0.2), (DotScorer("target"), 0.8)])
    for chunk_size in (None, 1, 5):
        assert retrieval_report_from_views(queries, gallery, targets, scorer, chunk_size=chunk_size) == expected


def test_unnormalized_fusion_is_a_weighted_sum_without_fit():
    queries, gallery = {"a": torch.randn(3, 2), "b": torch.randn(3, 2)}, {"gallery": torch.randn(4, 2)}
    scorer = FusedScorer([(DotScorer("a"), 2.0), (DotScorer("b"), -1.0)], normalize=False)
    expected = 2.0 * (queries["a"] @ gallery["gallery"].T) - queries["b"] @ gallery["gallery"].T
    torch.testing.assert_close(scorer(queries, gallery), expected)


def test_minmax_normalize():
    scores = torch.tensor([[1.0, 3.0], [2.0, 5.0]])
    torch.testing.assert_close(minmax_normalize(scores, 1.0, 5.0), torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert torch.equal(minmax_normalize(scores, 2.0, 2.0), torch.zeros(2, 2))


def test_recall_matches_torchmetrics_hit_rate_multi_positive():
    generator = torch.Generator().manual_seed(12)
    scores = torch.randn(14, 6, generator=generator)
    targets = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 4, 0, 1])  # item 5 has no caption
    report = retrieval_report(scores, targets, ks=(1, 2, 3))
    items = torch.arange(6).expand(14, 6)
    positive = targets[:, None] == torch.arange(6)
    for k in (1, 2, 3):
        v2t = RetrievalHitRate(top_k=k, empty_target_action="skip")
        assert 100 * float(v2t(scores.flatten(), positive.flatten(), indexes=items.flatten())) == pytest.approx(
            report[f"v2t_r{k}"], abs=1e-4
        )
        t2v = RetrievalHitRate(top_k=k)
        queries = torch.arange(14)[:, None].expand(14, 6)
        assert 100 * float(t2v(scores.flatten(), positive.flatten(), indexes=queries.flatten())) == pytest.approx(
            report[f"t2v_r{k}"], abs=1e-4
        )


def test_ndcg_hand_checked_graded():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3]])
    relevance = torch.tensor([[3.0, 0.0, 1.0, 2.0]])
    # ranking by score: relevances 0, 1, 2 (then 3); ideal order 3, 2, 1
    dcg = 0 / math.log2(2) + 1 / math.log2(3) + 3 / math.log2(4)
    idcg = 7 / math.log2(2) + 3 / math.log2(3) + 1 / math.log2(4)
    assert float(ndcg_at_k(scores, relevance, 3)) == pytest.approx(dcg / idcg, rel=1e-6)


def test_ndcg_ties_broken_by_gallery_index():
    scores = torch.tensor([[0.5, 0.5, 0.1], [0.5, 0.5, 0.1]])
    relevance = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    torch.testing.assert_close(ndcg_at_k(scores, relevance, 1), torch.tensor([0.0, 1.0]))


def test_ndcg_perfect_ranking_is_one_and_zero_ideal_is_zero():
    generator = torch.Generator().manual_seed(13)
    relevance = torch.randint(0, 4, (6, 9), generator=generator).float()
    relevance[2] = 0.0
    scores = relevance + torch.rand(6, 9, generator=generator) * 0.5  # order within equal relevance is free
    values = ndcg_at_k(scores, relevance, 4)
    expected = torch.ones(6)
    expected[2] = 0.0
    torch.testing.assert_close(values, expected)
    assert torch.allclose(ndcg_at_k(scores, relevance, 50), expected)  # k larger than the gallery
    assert bool(((ndcg_at_k(-scores, relevance, 4) >= 0) & (ndcg_at_k(-scores, relevance, 4) <= 1)).all())


def test_ndcg_matches_torchmetrics_on_binary_relevance():
    generator = torch.Generator().manual_seed(14)
    scores = torch.randn(8, 12, generator=generator)
    relevance = (torch.rand(8, 12, generator=generator) < 0.3).float()
    relevance[:, 0] = 1.0
    ours = ndcg_at_k(scores, relevance, 5)
    theirs = torch.stack(
        [retrieval_normalized_dcg(s, r.long(), top_k=5) for s, r in zip(scores, relevance, strict=True)]
    )
    torch.testing.assert_close(ours, theirs.float(), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: retrieval_report(HAND_SCORES, torch.tensor([0, 1, 2])), r"shape \[4\]"),
        (lambda: retrieval_report(HAND_SCORES, torch.tensor([0, 1, 3, 0])), r"query_to_gallery\[2\] = 3"),
        (lambda: retrieval_report(HAND_SCORES, torch.tensor([0.0, 1.0, 2.0, 0.0])), "integer"),
        (lambda: retrieval_report(HAND_SCORES[0], HAND_TARGETS), r"\[Q, G\]"),
        (lambda: retrieval_report(HAND_SCORES, HAND_TARGETS, ks=(0, 5)), "positive ints"),
        (lambda: retrieval_report(HAND_SCORES, HAND_TARGETS, ks=(1, 1)), "repeat"),
        (
            lambda: retrieval_report_from_embeddings(torch.randn(4, 3), torch.randn(3, 3), HAND_TARGETS, chunk_size=0),
            "chunk_size",
        ),
        (
            lambda: retrieval_report_from_embeddings(torch.randn(4, 3), torch.randn(3, 2), HAND_TARGETS),
            "same D",
        ),
        (
            lambda: retrieval_report_from_views(
                {"a": torch.randn(4, 2), "b": torch.randn(3, 2)},
                {"gallery": torch.randn(3, 2)},
                HAND_TARGETS,
                DotScorer("a"),
            ),
            "'b' has 3 rows",
        ),
        (
            lambda: retrieval_report_from_views(
                {"query": torch.randn(4, 2)}, {"gallery": torch.randn(3, 2)}, HAND_TARGETS, DotScorer("other")
            ),
            "'other' is missing",
        ),
        (
            lambda: retrieval_report_from_views(
                {"query": torch.randn(4, 2)},
                {"gallery": torch.randn(3, 2)},
                HAND_TARGETS,
                lambda q, g: torch.zeros(4, 2),
            ),
            r"expected \[4, 3\]",
        ),
        (
            lambda: FusedScorer([(DotScorer(), 1.0)])({"query": torch.randn(2, 2)}, {"gallery": torch.randn(2, 2)}),
            "call fit",
        ),
        (lambda: ndcg_at_k(HAND_SCORES, torch.zeros(4, 2), 1), "shape of scores"),
        (lambda: ndcg_at_k(HAND_SCORES, -torch.ones(4, 3), 1), "row 0"),
        (lambda: ndcg_at_k(HAND_SCORES, torch.ones(4, 3), 0), "positive int"),
    ],
)
def test_invalid_inputs_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_non_finite_score_names_the_query_row():
    scores = HAND_SCORES.clone()
    scores[2, 1] = float("nan")
    with pytest.raises(ValueError, match="query row 2"):
        retrieval_report(scores, HAND_TARGETS)
    queries = torch.randn(9, 3)
    queries[6, 0] = float("inf")
    with pytest.raises(ValueError, match="query row 6"):
        retrieval_report_from_embeddings(queries, torch.randn(3, 3), torch.arange(9) % 3, chunk_size=4)


@pytest.mark.parametrize("width", [1500, 1504, 37])
def test_dot_scorer_writes_aligned_item_rows_with_the_plain_products(monkeypatch, width):
    queries, gallery = torch.randn(70, 64), torch.randn(width, 64)
    block = DotScorer()({"query": queries}, {"gallery": gallery})
    assert block.shape == (70, width) and block.stride() == (1, 80)
    assert torch.equal(block, (gallery @ queries.T).T)
    assert torch.allclose(block, queries @ gallery.T, atol=1e-5)
    grid_queries, grid_gallery = torch.randint(-8, 9, (70, 64)) / 8, torch.randint(-8, 9, (width, 64)) / 8
    assert torch.equal(DotScorer()({"query": grid_queries}, {"gallery": grid_gallery}), grid_queries @ grid_gallery.T)
    monkeypatch.setattr(scoring, "ITEM_MAJOR_DEVICES", ())
    query_rows = DotScorer()({"query": queries}, {"gallery": gallery})
    assert torch.equal(query_rows, queries @ gallery.T) and query_rows.stride() == (width + -width % 16, 1)
    trainable = gallery.clone().requires_grad_()
    scores = DotScorer()({"query": queries}, {"gallery": trainable})
    scores.sum().backward()
    assert torch.allclose(trainable.grad, queries.sum(0).expand(width, 64), atol=1e-4)
