"""Entropic optimal transport over POT (torch backend): plans, token-level OT distances, plan confidences.

P* = argmin_{P >= 0, P 1 = a, P^T 1 = b} <P, C> - eps H(P) (Cuturi 2013), solved in the log domain with a
bounded number of iterations and a loose stopping threshold, because float32 never meets POT's default
1e-9 (ecosystem P17). Plans are torch tensors on the cost's device; gradients flow through the iterations.
"""

from __future__ import annotations

import ot
import torch
import torch.nn.functional as F
from ot.batch import solve_batch
from torch import Tensor

from leccr_lightning.losses.pairwise import check_choice, check_positive

SINKHORN_METHODS = ("sinkhorn_log", "sinkhorn", "sinkhorn_stabilized")


def _marginal(weights: Tensor | None, size: int, cost: Tensor, name: str) -> Tensor:
    """The given marginal in the cost's dtype (checked for shape and positive mass), or the uniform one."""
    if weights is None:
        return ot.unif(size, type_as=cost)
    if weights.shape != (size,):
        raise ValueError(f"{name}: expected shape ({size},) to match the cost matrix, got {tuple(weights.shape)}")
    if bool((weights < 0).any()) or not float(weights.sum()) > 0:
        raise ValueError(f"{name}: expected non-negative weights with positive total mass")
    return weights.to(cost.dtype)


def sinkhorn_plan(
    cost: Tensor,
    epsilon: float = 0.05,
    a: Tensor | None = None,
    b: Tensor | None = None,
    max_iter: int = 100,
    stop_threshold: float = 1e-6,
    method: str = "sinkhorn_log",
) -> Tensor:
    """Entropic OT plan P* [n, m] for ``cost`` [n, m] with ``ot.sinkhorn``; uniform marginals by default.

    Defaults eps = 0.05, <= 100 iterations, tol 1e-6, log domain are the DCOT proposal (ccr spec §5.2,
    [recon]). The log-domain solver enforces the row marginal exactly; column sums are exact only at
    convergence.
    """
    if cost.dim() != 2 or not cost.is_floating_point():
        raise ValueError(f"cost: expected a 2-D floating-point matrix, got {cost.dtype} {tuple(cost.shape)}")
    check_positive("epsilon", epsilon)
    check_choice("method", method, SINKHORN_METHODS)
    source = _marginal(a, cost.shape[0], cost, "a")
    target = _marginal(b, cost.shape[1], cost, "b")
    return ot.sinkhorn(
        source, target, cost, epsilon, method=method, numItermax=max_iter, stopThr=stop_threshold, warn=False
    )


def batched_sinkhorn_plan(
    costs: Tensor,
    masks_a: Tensor,
    masks_b: Tensor,
    epsilon: float = 0.05,
    max_iter: int = 100,
    stop_threshold: float = 1e-6,
) -> Tensor:
    """Entropic OT plans [B, n, m] between padded sets, uniform over each problem's valid entries.

    Uses POT's batched log-domain Sinkhorn (``ot.batch.solve_batch``, ccr spec §4.3) with autodiff through
    the iterations; padded rows/columns get zero marginal mass, hence exactly zero plan mass. Every problem
    needs at least one valid entry on each side.
    """
    if costs.dim() != 3 or not costs.is_floating_point():
        raise ValueError(f"costs: expected a [B, n, m] floating-point tensor, got {costs.dtype} {tuple(costs.shape)}")
    shape_a, shape_b = tuple(costs.shape[:2]), (costs.shape[0], costs.shape[2])
    if masks_a.shape != shape_a or masks_b.shape != shape_b:
        raise ValueError(
            f"masks_a/masks_b: expected shapes {shape_a} and {shape_b}, "
            f"got {tuple(masks_a.shape)} and {tuple(masks_b.shape)}"
        )
    check_positive("epsilon", epsilon)
    masks_a, masks_b = masks_a.bool(), masks_b.bool()
    empty = (~masks_a.any(dim=1)) | (~masks_b.any(dim=1))
    if bool(empty.any()):
        raise ValueError(f"masks: problems {empty.nonzero().flatten().tolist()} have no valid entry on one side")
    weights_a = masks_a.to(costs.dtype) / masks_a.sum(dim=1, keepdim=True)
    weights_b = masks_b.to(costs.dtype) / masks_b.sum(dim=1, keepdim=True)
    valid = masks_a[:, :, None] & masks_b[:, None, :]
    clean = torch.where(valid, costs, costs.new_zeros(()))
    result = solve_batch(
        clean,
        reg=epsilon,
        a=weights_a,
        b=weights_b,
        max_iter=max_iter,
        tol=stop_threshold,
        method="log_sinkhorn",
        grad="autodiff",
    )
    return result.plan


def cosine_cost(h_a: Tensor, h_b: Tensor) -> Tensor:
    """C_pq = 1 - cos(h_a[p], h_b[q]) for token sets [B, n, d] and [B, m, d] -> [B, n, m]."""
    return 1.0 - F.normalize(h_a, dim=-1) @ F.normalize(h_b, dim=-1).transpose(1, 2)


def token_ot_distance(
    h_a: Tensor,
    mask_a: Tensor,
    h_b: Tensor,
    mask_b: Tensor,
    epsilon: float = 0.05,
    max_iter: int = 100,
    stop_threshold: float = 1e-6,
    detach_plan: bool = True,
) -> Tensor:
    """Word-level OT distance <P*, C> per pair [B] with cosine cost over valid tokens (CL2CM, ccr spec §4.2).

    ``detach_plan=True`` treats the plan as a constant (envelope gradient, [recon] default): the gradient
    reaches the token features through C only.
    """
    if h_a.dim() != 3 or h_b.dim() != 3 or h_a.shape[0] != h_b.shape[0] or h_a.shape[2] != h_b.shape[2]:
        raise ValueError(
            f"h_a/h_b: expected [B, n, d] and [B, m, d] with equal B and d, got {tuple(h_a.shape)} "
            f"and {tuple(h_b.shape)}"
        )
    cost = cosine_cost(h_a, h_b)
    plan_cost = cost.detach() if detach_plan else cost
    plan = batched_sinkhorn_plan(plan_cost, mask_a, mask_b, epsilon, max_iter, stop_threshold)
    return (plan * cost).sum(dim=(1, 2))


def plan_confidences(plan: Tensor) -> Tensor:
    """Per-pair confidence w_i = P_ii / sum_j P_ij of the matched (diagonal) pairs, detached.

    Under uniform marginals this is n * P_ii (DCOT, ccr spec §5.2 [recon]): 1 for a one-to-one plan on the
    diagonal, 1/n for the independent plan a b^T. Accepts [..., n, n].
    """
    if plan.dim() < 2 or plan.shape[-1] != plan.shape[-2]:
        raise ValueError(f"plan: expected square [..., n, n] plans, got shape {tuple(plan.shape)}")
    plan = plan.detach()
    row_mass = plan.sum(dim=-1)
    return plan.diagonal(dim1=-2, dim2=-1) / row_mass.clamp(min=torch.finfo(plan.dtype).tiny)
