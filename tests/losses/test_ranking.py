"""Invariants of the S-NDCG and Kendall rank losses (itr spec §5.7, §6.4, §10.5 items 4, 9)."""

from __future__ import annotations

import math

import pytest
import torch

from leccr_lightning.losses.ranking import kendall_rank_loss, smooth_ndcg_loss, smooth_ranks


def _case(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    scores = torch.rand(n, n, generator=generator, dtype=torch.float64)
    relevance = torch.rand(n, n, generator=generator, dtype=torch.float64)
    relevance.fill_diagonal_(1.0)
    return scores, relevance


def _reference_ndcg(scores: torch.Tensor, relevance: torch.Tensor, k: int | None = None) -> float:
    """Mean over rows of exact NDCG@k with gains 2^r - 1, by sorting (no cut-off when k is None)."""
    values = []
    for row_scores, row_relevance in zip(scores.tolist(), relevance.tolist(), strict=True):
        order = sorted(range(len(row_scores)), key=lambda j: -row_scores[j])
        ideal = sorted(row_relevance, reverse=True)
        cut = len(order) if k is None else k
        dcg = sum((2 ** row_relevance[j] - 1) / math.log2(pos + 2) for pos, j in enumerate(order[:cut]))
        idcg = sum((2**r - 1) / math.log2(pos + 2) for pos, r in enumerate(ideal[:cut]))
        values.append(dcg / idcg)
    return sum(values) / len(values)


def test_smooth_ndcg_tends_to_exact_ndcg() -> None:
    scores, relevance = _case()
    exact = _reference_ndcg(scores, relevance)
    errors = [abs(1 - smooth_ndcg_loss(scores, relevance, tau=tau).item() - exact) for tau in (0.1, 0.01, 1e-5)]
    assert errors[2] < 1e-4
    assert errors[0] > errors[1] > errors[2]


def test_smooth_ndcg_with_cutoff_tends_to_ndcg_at_k() -> None:
    scores, relevance = _case(seed=1)
    exact = _reference_ndcg(scores, relevance, k=3)
    assert 1 - smooth_ndcg_loss(scores, relevance, tau=1e-5, k=3).item() == pytest.approx(exact, abs=1e-4)
    assert exact != pytest.approx(_reference_ndcg(scores, relevance), abs=1e-3)


def test_perfect_order_gives_ndcg_one_only_in_the_limit() -> None:
    _, relevance = _case(seed=2)
    scores = relevance.clone()
    assert smooth_ndcg_loss(scores, relevance, tau=1e-6).item() == pytest.approx(0.0, abs=1e-9)
    assert smooth_ndcg_loss(scores, relevance, tau=0.1).item() > 0.0


def test_self_term_excluded_from_smooth_rank() -> None:
    scores, _ = _case(seed=3)
    with_self = smooth_ranks(scores, tau=0.05, exclude_self=False)
    without = smooth_ranks(scores, tau=0.05)
    assert torch.allclose(with_self - without, torch.full_like(without, 0.5))
    tied = torch.zeros(1, 4, dtype=torch.float64)
    assert torch.allclose(smooth_ranks(tied, tau=0.01), torch.full((1, 4), 2.5, dtype=torch.float64))


def test_binary_relevance_reduces_to_reciprocal_log_rank() -> None:
    scores, _ = _case(seed=4)
    relevance = torch.eye(8, dtype=torch.float64)
    ranks = smooth_ranks(scores, tau=0.05).diagonal()
    expected = (1.0 / torch.log2(1.0 + ranks)).mean()
    assert 1 - smooth_ndcg_loss(scores, relevance, tau=0.05).item() == pytest.approx(expected.item())


def test_ideal_with_tied_relevance() -> None:
    scores = torch.tensor([[0.9, 0.8, 0.1]], dtype=torch.float64)
    relevance = torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64)
    assert smooth_ndcg_loss(scores, relevance, tau=1e-6).item() == pytest.approx(0.0, abs=1e-9)
    shared = smooth_ndcg_loss(scores, relevance, tau=1e-6, ideal_ties="shared").item()
    assert shared == pytest.approx(1 - (1 + 1 / math.log2(3)) / 2, abs=1e-9)


def test_smooth_ndcg_gradients_finite_for_ties_and_rows_without_gain_skipped() -> None:
    scores = torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)
    relevance = torch.tensor([[1.0, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.2, 0.0, 0.9, 0.1]], dtype=torch.float64)
    loss = smooth_ndcg_loss(scores, relevance)
    loss.backward()
    assert torch.isfinite(scores.grad).all() and scores.grad.abs().sum() > 0
    assert loss.item() == pytest.approx(smooth_ndcg_loss(scores[[0, 2]], relevance[[0, 2]]).item())


def test_losses_invariant_to_candidate_permutation() -> None:
    scores, relevance = _case(seed=5)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    for fn in (smooth_ndcg_loss, kendall_rank_loss):
        assert fn(scores[:, perm], relevance[:, perm]).item() == pytest.approx(fn(scores, relevance).item())


def test_kendall_hinge_hand_value_window_and_hard_mining() -> None:
    scores = torch.tensor([[0.2, 0.5, 0.1]], dtype=torch.float64)
    relevance = torch.tensor([[1.0, 0.5, 0.0]], dtype=torch.float64)
    # Pairs with r_i - r_j > 0.3: (0,1) -> [0.5 - 0.2]_+ = 0.3, (0,2) -> 0, (1,2) -> 0.
    assert kendall_rank_loss(scores, relevance).item() == pytest.approx(0.1)
    assert kendall_rank_loss(scores, relevance, window=1).item() == pytest.approx(0.15)
    assert kendall_rank_loss(scores, relevance, hard_mining=True).item() == pytest.approx(0.15)
    assert kendall_rank_loss(scores, relevance, gap=0.6).item() == pytest.approx(0.0)
    assert kendall_rank_loss(scores, relevance, margin=0.1).item() == pytest.approx((0.4 + 0.0 + 0.0) / 3)


def test_kendall_paper_form_hand_value_and_monotone() -> None:
    scores = torch.tensor([[0.2, 0.5, 0.1]], dtype=torch.float64)
    relevance = torch.tensor([[1.0, 0.5, 0.0]], dtype=torch.float64)
    expected = sum(1 - math.tanh(d / 0.1) for d in (0.2 - 0.5, 0.2 - 0.1, 0.5 - 0.1)) / 3
    assert kendall_rank_loss(scores, relevance, form="paper").item() == pytest.approx(expected)
    fixed = torch.tensor([[0.6, 0.5, 0.1]], dtype=torch.float64)
    assert kendall_rank_loss(fixed, relevance, form="paper") < kendall_rank_loss(scores, relevance, form="paper")


def test_kendall_zero_when_concordant_positive_when_reversed_no_nan_without_pairs() -> None:
    _, relevance = _case(seed=6)
    assert kendall_rank_loss(relevance.clone(), relevance).item() == 0.0
    assert kendall_rank_loss(-relevance, relevance).item() > 0.0
    scores = relevance.clone().requires_grad_(True)
    loss = kendall_rank_loss(scores, relevance, gap=2.0, hard_mining=True)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(scores.grad).all()


def test_ranking_bad_inputs() -> None:
    scores, relevance = _case(n=3)
    with pytest.raises(ValueError, match="relevance: expected shape"):
        smooth_ndcg_loss(scores, relevance[:2])
    with pytest.raises(ValueError, match=">= 0"):
        smooth_ndcg_loss(scores, -relevance)
    # Kendall reads only relevance differences: raw inner-product labels may be negative (ITM_CLS model.py:132-133)
    assert kendall_rank_loss(scores, -relevance) == kendall_rank_loss(scores, 1.0 - relevance)
    with pytest.raises(ValueError, match="form"):
        kendall_rank_loss(scores, relevance, form="tanh")
    with pytest.raises(ValueError, match="window"):
        kendall_rank_loss(scores, relevance, window=0)
