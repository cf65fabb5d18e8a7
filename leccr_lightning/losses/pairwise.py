"""Pairwise losses over a score matrix: triplet mining modes, the unified pair loss and InfoNCE.

Convention: ``scores`` [Nq, Nc] has queries as rows and candidates as columns; ``positive_mask`` (bool, same
shape) marks the positives of each row (several allowed). Negatives are the entries where the mask is False.
Rows without a positive contribute nothing. The other retrieval direction is ``scores.T`` (see
:func:`bidirectional`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

MINING_MODES = ("all", "all_mean", "hardest", "selective", "soft")
REDUCTIONS = ("sum", "mean")


def check_pair_inputs(scores: Tensor, other: Tensor, other_name: str) -> None:
    """Raise ValueError unless ``scores`` is a 2-D float matrix and ``other`` has the same shape."""
    if scores.dim() != 2 or not scores.is_floating_point():
        raise ValueError(
            f"scores: expected a 2-D floating-point [queries, candidates] matrix, got dtype {scores.dtype} "
            f"and shape {tuple(scores.shape)}"
        )
    if other.shape != scores.shape:
        raise ValueError(
            f"{other_name}: expected shape {tuple(scores.shape)} (the shape of scores), got {tuple(other.shape)}"
        )


def _check_mask(scores: Tensor, positive_mask: Tensor) -> None:
    check_pair_inputs(scores, positive_mask, "positive_mask")
    if positive_mask.dtype != torch.bool:
        raise ValueError(f"positive_mask: expected dtype torch.bool, got {positive_mask.dtype}")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}")


def check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name}: expected a value > 0, got {value}")


def masked_reduce(terms: Tensor, valid: Tensor, reduction: str) -> Tensor:
    """Sum or mean of ``terms`` over the entries where ``valid`` is True (0 when there are none)."""
    total = torch.where(valid, terms, terms.new_zeros(())).sum()
    if reduction == "sum":
        return total
    return total / valid.sum().clamp(min=1)


def _positive_scores(scores: Tensor, positive_mask: Tensor) -> tuple[Tensor, Tensor]:
    """The scores of each row's positives, padded to [Nq, K] (K = most positives in a row), and their mask."""
    counts = positive_mask.sum(dim=1)
    k = max(int(counts.max()), 1) if counts.numel() else 1
    order = torch.argsort(positive_mask.to(torch.int8), dim=1, descending=True, stable=True)[:, :k]
    valid = torch.arange(k, device=scores.device)[None, :] < counts[:, None]
    return scores.gather(1, order), valid


def _hardest_negative(scores: Tensor, positive_mask: Tensor) -> Tensor:
    """max over the negatives of each row (-inf for a row without negatives) [Nq]."""
    return scores.masked_fill(positive_mask, float("-inf")).max(dim=1).values


def _negative_logsumexp(scores: Tensor, positive_mask: Tensor, tau: float) -> Tensor:
    """tau * logsumexp_n(s_n / tau) over each row's negatives [Nq].

    Rows without a negative get a finite placeholder so that the backward pass stays NaN-free; callers
    must discard those rows.
    """
    has_negative = (~positive_mask).any(dim=1, keepdim=True)
    logits = (scores / tau).masked_fill(positive_mask, float("-inf"))
    logits = torch.where(has_negative, logits, logits.new_zeros(()))
    return tau * torch.logsumexp(logits, dim=1)


def hinge_triplet(
    scores: Tensor,
    positive_mask: Tensor,
    margin: float = 0.2,
    mining: str = "hardest",
    selective_eps: float = 0.01,
    soft_tau: float = 0.01,
    reduction: str = "sum",
) -> Tensor:
    """Triplet ranking loss of each (query, positive) pair against the negatives of its row.

    With c_pn = [m + s_n - s_p]_+ for a positive p and negative n of one row, the term of p is
    - ``"all"``: sum_n c_pn (VSE0, NRCCR/RIVRL sum form);
    - ``"all_mean"``: mean_n c_pn (the all-negatives branch of SelHN, itr spec §4.2);
    - ``"hardest"``: max_n c_pn = [m + max_n s_n - s_p]_+ (VSE++ max violation, ccr spec §2.2 item 1);
    - ``"selective"``: SelHN (itr spec §4.2): the ``all_mean`` term when |s_p - max_n s_n| < ``selective_eps``
      (decided on detached scores), else the ``hardest`` term; the paper's default is eps = 0.01,
      eps = 0 never averages (= hardest);
    - ``"soft"``: Triplet-SN [m - s_p + tau * logsumexp_n(s_n / tau)]_+ with tau = ``soft_tau``
      (itr spec §5.4, [recall] form and tau=0.01 default).
    ``reduction`` sums or averages the terms over the (query, positive) pairs of rows that have a negative.
    """
    _check_mask(scores, positive_mask)
    check_choice("mining", mining, MINING_MODES)
    check_choice("reduction", reduction, REDUCTIONS)
    if selective_eps < 0:
        raise ValueError(f"selective_eps: expected a value >= 0, got {selective_eps}")
    positives, valid = _positive_scores(scores, positive_mask)
    negative = ~positive_mask
    valid = valid & negative.any(dim=1, keepdim=True)

    if mining == "soft":
        check_positive("soft_tau", soft_tau)
        soft_max = _negative_logsumexp(scores, positive_mask, soft_tau)
        terms = (margin - positives + soft_max[:, None]).clamp(min=0)
        return masked_reduce(terms, valid, reduction)

    hardest = _hardest_negative(scores, positive_mask)
    hardest_terms = (margin + hardest[:, None] - positives).clamp(min=0)
    if mining == "hardest" or (mining == "selective" and selective_eps == 0):
        return masked_reduce(hardest_terms, valid, reduction)

    costs = (margin + scores[:, None, :] - positives[:, :, None]).clamp(min=0)
    summed = torch.where(negative[:, None, :], costs, costs.new_zeros(())).sum(dim=2)
    if mining == "all":
        return masked_reduce(summed, valid, reduction)
    averaged = summed / negative.sum(dim=1, keepdim=True).clamp(min=1)
    if mining == "all_mean":
        return masked_reduce(averaged, valid, reduction)
    gap = (positives.detach() - hardest.detach()[:, None]).abs()
    return masked_reduce(torch.where(gap < selective_eps, averaged, hardest_terms), valid, reduction)


def unified_pair_loss(
    scores: Tensor,
    positive_mask: Tensor,
    margin: float = 0.2,
    tau: float = 0.01,
    reduction: str = "sum",
) -> Tensor:
    """Unified pair-similarity loss (itr spec §7.2) per (query, positive) pair.

    L_p = tau * log(1 + sum_n exp((s_n - s_p + m) / tau)) = tau * softplus(LSE_n(s_n/tau) + (m - s_p)/tau),
    computed with logaddexp. tau -> 0 gives the hardest-negative triplet; m = 0 gives tau * InfoNCE
    (itr spec §7.3). Defaults m = 0.2, tau = 0.01 (MV-VSE ``UnifiedLoss``).
    """
    _check_mask(scores, positive_mask)
    check_choice("reduction", reduction, REDUCTIONS)
    check_positive("tau", tau)
    positives, valid = _positive_scores(scores, positive_mask)
    valid = valid & (~positive_mask).any(dim=1, keepdim=True)
    negative_lse = _negative_logsumexp(scores, positive_mask, tau)
    exponent = (negative_lse[:, None] + margin - positives) / tau
    terms = tau * torch.logaddexp(exponent.new_zeros(()), exponent)
    return masked_reduce(terms, valid, reduction)


def soft_positive_targets(positive_mask: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Row-stochastic targets y_ij = 1[j positive for i] / #positives(i) (LECCR, ccr spec §3.3 item 1).

    Rows without a positive are all zero; ``dtype`` defaults to torch's default float dtype.
    """
    target = positive_mask.to(dtype or torch.get_default_dtype())
    return target / target.sum(dim=1, keepdim=True).clamp(min=1)


def info_nce(logits: Tensor, positive_mask: Tensor, reduction: str = "mean") -> Tensor:
    """Multi-positive InfoNCE of one direction: L_i = -sum_j y_ij log softmax_j(logits_i) (ccr spec §3.3).

    ``logits`` are scores already divided by the temperature; y = :func:`soft_positive_targets`.
    ``reduction`` sums or averages over the rows that have a positive.
    """
    _check_mask(logits, positive_mask)
    check_choice("reduction", reduction, REDUCTIONS)
    log_probs = torch.log_softmax(logits, dim=1)
    target = soft_positive_targets(positive_mask, log_probs.dtype)
    per_row = -torch.where(positive_mask, target * log_probs, log_probs.new_zeros(())).sum(dim=1)
    return masked_reduce(per_row, positive_mask.any(dim=1), reduction)


def bidirectional(
    loss_fn: Callable[..., Tensor],
    scores: Tensor,
    positive_mask: Tensor,
    weights: tuple[float, float] = (0.5, 0.5),
    **kwargs: object,
) -> Tensor:
    """w0 * loss_fn(S, P) + w1 * loss_fn(S^T, P^T): both retrieval directions (NRCCR sums: weights (1, 1))."""
    if len(weights) != 2:
        raise ValueError(f"weights: expected two weights (rows, columns), got {weights}")
    forward = loss_fn(scores, positive_mask, **kwargs)
    backward = loss_fn(scores.t(), positive_mask.t(), **kwargs)
    return weights[0] * forward + weights[1] * backward


def symmetric_info_nce(scores: Tensor, positive_mask: Tensor, temperature: float | Tensor) -> Tensor:
    """0.5 * (info_nce(S/t, P) + info_nce(S^T/t, P^T)), the CLIP/LECCR symmetric contrastive loss.

    ``temperature`` is a float or a 0-d tensor (a learnable temperature kept by the method).
    """
    if isinstance(temperature, Tensor):
        if temperature.numel() != 1:
            raise ValueError(f"temperature: expected a scalar tensor, got shape {tuple(temperature.shape)}")
    else:
        check_positive("temperature", temperature)
    logits = scores / temperature
    return bidirectional(info_nce, logits, positive_mask)


def positive_mask_from_ids(row_ids: Tensor, col_ids: Tensor) -> Tensor:
    """P_ij = (row_ids[i] == col_ids[j]): items sharing a visual index are positives of each other."""
    if row_ids.dim() != 1 or col_ids.dim() != 1:
        raise ValueError(
            f"row_ids/col_ids: expected 1-D id vectors, got shapes {tuple(row_ids.shape)} and {tuple(col_ids.shape)}"
        )
    return row_ids[:, None] == col_ids[None, :]
