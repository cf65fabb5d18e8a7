"""Per-query weighted pair losses (DCOT confidences, ccr_methods §5.2 (a)); w = 1: the plain loss."""

from __future__ import annotations

import torch
from torch import Tensor

from leccr_lightning.losses.pairwise import (
    check_choice,
    check_pair_inputs,
    masked_reduce,
    soft_positive_targets,
)

REDUCTIONS = ("sum", "mean")


def _check_weights(scores: Tensor, positive_mask: Tensor, weights: Tensor) -> None:
    check_pair_inputs(scores, positive_mask, "positive_mask")
    if positive_mask.dtype != torch.bool:
        raise ValueError(f"positive_mask: expected dtype torch.bool, got {positive_mask.dtype}")
    if weights.shape != (scores.shape[0],):
        raise ValueError(
            f"weights: expected one weight per query row, shape ({scores.shape[0]},), got {tuple(weights.shape)}"
        )


def weighted_hardest_triplet(
    scores: Tensor, positive_mask: Tensor, weights: Tensor, margin: float = 0.2, reduction: str = "sum"
) -> Tensor:
    """sum_i w_i sum_{p in P_i} [m + max_{n not in P_i} S_in - S_ip]_+ (VSE++ hardest, one direction).

    Rows without a negative contribute nothing; ``weights`` are detached.
    """
    _check_weights(scores, positive_mask, weights)
    check_choice("reduction", reduction, REDUCTIONS)
    has_negative = (~positive_mask).any(dim=1, keepdim=True)
    hardest = scores.masked_fill(positive_mask, float("-inf")).max(dim=1, keepdim=True).values
    hardest = torch.where(has_negative, hardest, hardest.new_zeros(()))
    terms = (margin + hardest - scores).clamp(min=0) * weights.detach().to(scores.dtype)[:, None]
    return masked_reduce(terms, positive_mask & has_negative, reduction)


def weighted_info_nce(logits: Tensor, positive_mask: Tensor, weights: Tensor, reduction: str = "mean") -> Tensor:
    """Multi-positive InfoNCE of one direction with row weights: sum_i w_i L_i (or its mean over rows with a
    positive), L_i = -sum_j y_ij log softmax_j(logits_i); ``weights`` are detached."""
    _check_weights(logits, positive_mask, weights)
    check_choice("reduction", reduction, REDUCTIONS)
    log_probs = torch.log_softmax(logits, dim=1)
    target = soft_positive_targets(positive_mask, log_probs.dtype)
    per_row = -torch.where(positive_mask, target * log_probs, log_probs.new_zeros(())).sum(dim=1)
    return masked_reduce(per_row * weights.detach().to(per_row.dtype), positive_mask.any(dim=1), reduction)


def weighted_bidirectional_triplet(
    scores: Tensor,
    positive_mask: Tensor,
    row_weights: Tensor,
    col_weights: Tensor,
    margin: float = 0.2,
    reduction: str = "sum",
) -> Tensor:
    """L(S, w_rows) + L(S^T, w_cols) of :func:`weighted_hardest_triplet` (NRCCR sums both directions)."""
    forward = weighted_hardest_triplet(scores, positive_mask, row_weights, margin, reduction)
    return forward + weighted_hardest_triplet(scores.t(), positive_mask.t(), col_weights, margin, reduction)


def weighted_symmetric_info_nce(
    scores: Tensor,
    positive_mask: Tensor,
    row_weights: Tensor,
    col_weights: Tensor,
    temperature: float | Tensor,
) -> Tensor:
    """0.5 * (L(S/t, w_rows) + L(S^T/t, w_cols)) of :func:`weighted_info_nce` (mean reduction)."""
    logits = scores / temperature
    forward = weighted_info_nce(logits, positive_mask, row_weights)
    return 0.5 * (forward + weighted_info_nce(logits.t(), positive_mask.t(), col_weights))
