"""Listwise and rank-correlation losses against graded relevance (Listwise ITR S-NDCG, BCLS Kendall).

``relevance`` [Nq, Nc] is always indexed [query, candidate]: for the other direction pass ``relevance.T``
together with ``scores.T`` (the released Listwise_ITR / ITM_CLS code reuse the untransposed matrix; a caller
that wants that quirk passes it explicitly).
"""

from __future__ import annotations

import torch
from torch import Tensor

from leccr_lightning.losses.pairwise import check_choice, check_pair_inputs, check_positive, masked_reduce

GAINS = ("exp2", "linear")
IDEAL_TIES = ("sorted", "shared")
KENDALL_FORMS = ("hinge", "paper")


def _check_gains(relevance: Tensor) -> None:
    """NDCG gains need relevance >= 0 (a Kendall loss reads only differences, so any real relevance suits it)."""
    if bool((relevance < 0).any()):
        raise ValueError(f"relevance: expected values >= 0, got a minimum of {float(relevance.min())}")


def smooth_ranks(scores: Tensor, tau: float = 0.01, exclude_self: bool = True) -> Tensor:
    """Sigmoid-smoothed 1-based ranks R_qj = 1 + sum_{k != j} sigmoid((s_qk - s_qj) / tau) (itr spec §6.2).

    ``exclude_self=False`` keeps the k = j term sigma(0) = 1/2, which shifts every rank by 1/2 (itr spec §6.4
    says it must be excluded; the flag exists only to show that effect).
    """
    check_positive("tau", tau)
    pairwise = torch.sigmoid((scores[:, None, :] - scores[:, :, None]) / tau)
    return 1.0 + pairwise.sum(dim=2) - (0.5 if exclude_self else 0.0)


def _ideal_dcg(gains: Tensor, relevance: Tensor, k: int | None, ideal_ties: str) -> Tensor:
    """DCG of the ideal ranking per row: gains sorted descending, or ties sharing the better rank."""
    if ideal_ties == "sorted":
        ordered = gains.sort(dim=1, descending=True).values
        positions = torch.arange(1, gains.shape[1] + 1, device=gains.device, dtype=gains.dtype)
        discounts = 1.0 / torch.log2(1.0 + positions)
        if k is not None:
            discounts = torch.where(positions <= k, discounts, discounts.new_zeros(()))
        return (ordered * discounts).sum(dim=1)
    ranks = 1.0 + (relevance[:, None, :] > relevance[:, :, None]).sum(dim=2).to(gains.dtype)
    discounts = 1.0 / torch.log2(1.0 + ranks)
    if k is not None:
        discounts = torch.where(ranks <= k, discounts, discounts.new_zeros(()))
    return (gains * discounts).sum(dim=1)


def smooth_ndcg_loss(
    scores: Tensor,
    relevance: Tensor,
    tau: float = 0.01,
    k: int | None = None,
    exclude_self: bool = True,
    gain: str = "exp2",
    ideal_ties: str = "sorted",
) -> Tensor:
    """mean_q (1 - S-NDCG_q), the Listwise ITR loss of one direction (itr spec §6.2).

    S-NDCG_q = sum_j g_qj / log2(1 + R_qj) / IDCG_q with gains g = 2^r - 1 (``gain="exp2"``, or g = r) and
    the smooth ranks of :func:`smooth_ranks` (tau = 0.01 default of the released code). ``k=None`` scores the
    whole list as the released code does; an integer k keeps only candidates with smooth rank <= k (a hard
    cut; gradients flow through the kept discounts) and the ideal top k. ``ideal_ties="sorted"`` is the
    standard ideal DCG (matching the shared NDCG metric, itr spec §10.3); ``"shared"`` gives tied relevances
    the better ideal rank as the released code does. Rows with zero ideal DCG are skipped.
    """
    check_pair_inputs(scores, relevance, "relevance")
    _check_gains(relevance)
    check_choice("gain", gain, GAINS)
    check_choice("ideal_ties", ideal_ties, IDEAL_TIES)
    if k is not None and k < 1:
        raise ValueError(f"k: expected None or an integer >= 1, got {k}")
    relevance = relevance.to(scores.dtype)
    gains = torch.exp2(relevance) - 1.0 if gain == "exp2" else relevance
    ranks = smooth_ranks(scores, tau, exclude_self)
    discounts = 1.0 / torch.log2(1.0 + ranks)
    if k is not None:
        discounts = torch.where(ranks <= k, discounts, discounts.new_zeros(()))
    dcg = (gains * discounts).sum(dim=1)
    ideal = _ideal_dcg(gains, relevance, k, ideal_ties)
    valid = ideal > 0
    ndcg = dcg / torch.where(valid, ideal, ideal.new_ones(()))
    return masked_reduce(1.0 - ndcg, valid, "mean")


def kendall_rank_loss(
    scores: Tensor,
    relevance: Tensor,
    form: str = "hinge",
    gap: float = 0.3,
    margin: float = 0.0,
    surrogate_tau: float = 0.1,
    window: int | None = None,
    hard_mining: bool = False,
) -> Tensor:
    """Kendall-style rank loss of one direction (BCLS, itr spec §5.3-§5.4); mean over the selected pairs.

    A pair (i, j) of a row is used when r_i - r_j > ``gap`` (0.3, released ITM_CLS). Its value is
    - ``form="hinge"`` (released code): [s_j - s_i + margin]_+ (margin 0 in the code);
    - ``form="paper"`` ([recall]): 1 - tanh((s_i - s_j) / surrogate_tau), so the mean is 1 - tilde-tau_K, a
      smooth Kendall correlation over the pairs; surrogate_tau = 0.1 is our proposal.
    SW-HS ([recall]): ``window`` keeps only pairs at most ``window`` positions apart in the row's
    relevance-sorted order; ``hard_mining`` keeps, for each candidate i, only its worst pair (i, j).
    Returns 0 (with a graph) when no pair qualifies, instead of the released code's 0/0.
    """
    check_pair_inputs(scores, relevance, "relevance")
    check_choice("form", form, KENDALL_FORMS)
    check_positive("surrogate_tau", surrogate_tau)
    if window is not None and window < 1:
        raise ValueError(f"window: expected None or an integer >= 1, got {window}")
    order = torch.argsort(relevance, dim=1, descending=True, stable=True)
    ranked_relevance = relevance.gather(1, order)
    ranked_scores = scores.gather(1, order)
    valid = (ranked_relevance[:, :, None] - ranked_relevance[:, None, :]) > gap
    if window is not None:
        positions = torch.arange(scores.shape[1], device=scores.device)
        offset = positions[None, :] - positions[:, None]
        valid = valid & (offset >= 1) & (offset <= window)
    score_gap = ranked_scores[:, :, None] - ranked_scores[:, None, :]
    hinge = form == "hinge"
    values = (margin - score_gap).clamp(min=0) if hinge else 1.0 - torch.tanh(score_gap / surrogate_tau)
    if not hard_mining:
        return masked_reduce(values, valid, "mean")
    worst = values.masked_fill(~valid, float("-inf")).max(dim=2).values
    return masked_reduce(worst, valid.any(dim=2), "mean")
