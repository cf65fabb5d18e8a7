"""Distillation losses: soft similarity targets (NRCCR L_sim, CL2CM relational KD, LECCR L_dstl), feature
distillation (NRCCR L_feat), LECCR's mixed targets over min-max normalised scores (``metrics.scoring``'s
``minmax_normalize``, re-exported by ``losses``) and the LECCR slot-diversity regulariser.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from leccr_lightning.losses.pairwise import check_choice, check_pair_inputs, check_positive
from leccr_lightning.metrics.scoring import minmax_normalize

DIRECTIONS = {"row": 1, "col": 0}
KL_ORIENTATIONS = ("target_student", "student_target")


def soft_target_distillation(
    student_logits: Tensor,
    teacher_logits: Tensor,
    directions: tuple[str, ...] = ("row", "col"),
    detach_teacher: bool = True,
) -> Tensor:
    """Mean over ``directions`` of the cross-entropy of softmax(student) to softmax(teacher).

    Direction "row" normalises each row over the columns, "col" each column over the rows; for one
    direction L = -(1/N) sum_i sum_j P^T_ij log Q_ij = KL(P^T || Q) + H(P^T) (NRCCR L_sim, ccr spec §2.2
    item 2; CL2CM relational KD, ccr spec §4.2). Logits are already divided by their temperatures.
    """
    check_pair_inputs(student_logits, teacher_logits, "teacher_logits")
    if not directions:
        raise ValueError("directions: expected at least one of ('row', 'col'), got none")
    for direction in directions:
        check_choice("directions", direction, tuple(DIRECTIONS))
    teacher = teacher_logits.detach() if detach_teacher else teacher_logits
    total = student_logits.new_zeros(())
    for direction in directions:
        dim = DIRECTIONS[direction]
        target = torch.softmax(teacher, dim=dim)
        log_student = torch.log_softmax(student_logits, dim=dim)
        total = total + -(target * log_student).sum(dim=dim).mean()
    return total / len(directions)


def kl_to_soft_target(
    student_logits: Tensor,
    target_probs: Tensor,
    dim: int = -1,
    orientation: str = "target_student",
) -> Tensor:
    """KL divergence between a detached target distribution Y and softmax(student), mean over distributions.

    ``orientation="target_student"`` (default) computes KL(Y || Q) = sum Y (log Y - log Q), what LECCR's
    L_dstl computes with ``F.kl_div(log Q, Y, 'batchmean')`` (ccr spec §3.3 item 5); ``"student_target"``
    computes KL(Q || Y) (needs Y > 0 wherever Q > 0). ``dim`` is the axis each distribution lies along.
    """
    check_pair_inputs(student_logits, target_probs, "target_probs")
    check_choice("orientation", orientation, KL_ORIENTATIONS)
    target = target_probs.detach().to(student_logits.dtype)
    log_student = torch.log_softmax(student_logits, dim=dim)
    if orientation == "target_student":
        per_entry = torch.xlogy(target, target) - target * log_student
    else:
        per_entry = log_student.exp() * (log_student - torch.log(target))
    n_distributions = student_logits.numel() // student_logits.shape[dim]
    return per_entry.sum() / n_distributions


def feature_distillation(student: Tensor, teacher: Tensor, beta: float = 4.0, detach_teacher: bool = False) -> Tensor:
    """SmoothL1 (mean over elements) with threshold ``beta`` (NRCCR L_feat, ccr spec §2.2 item 3).

    For unit vectors |diff| <= 2 < beta = 4, so this equals MSE / (2 beta) = MSE / 8. NRCCR does not detach
    the teacher (default False).
    """
    check_pair_inputs(student, teacher, "teacher")
    check_positive("beta", beta)
    target = teacher.detach() if detach_teacher else teacher
    return F.smooth_l1_loss(student, target, beta=beta)


def mix_targets(primary_scores: Tensor, secondary_scores: Tensor, alpha: float = 0.8, dim: int = -1) -> Tensor:
    """Y = softmax(alpha * mm(primary) + (1 - alpha) * mm(secondary)) along ``dim``, detached.

    LECCR L_dstl target (ccr spec §3.3 item 5): primary = t^s v^T (English text vs visual), secondary = the
    max-over-slots similarity M^s oriented the same way (transposing it is the caller's choice, the
    ``parity_dstl_orientation`` flag of the method); alpha = 0.8, no temperature; mm = global min-max.
    """
    check_pair_inputs(primary_scores, secondary_scores, "secondary_scores")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha: expected a value in [0, 1], got {alpha}")
    mixed = alpha * minmax_normalize(primary_scores.detach()) + (1 - alpha) * minmax_normalize(
        secondary_scores.detach()
    )
    return torch.softmax(mixed, dim=dim)


def slot_diversity(slots: Tensor) -> Tensor:
    """LECCR L_reg = mean_{i,k,l} (cos(s_ik, s_il) - delta_kl) for slots [B, N, D] (ccr spec §3.3 item 4).

    Equals (N - 1) / N when all slots of an item are identical and 0 when they are mutually orthogonal.
    """
    if slots.dim() != 3:
        raise ValueError(f"slots: expected a [batch, slots, dim] tensor, got shape {tuple(slots.shape)}")
    unit = F.normalize(slots, dim=-1)
    gram = unit @ unit.transpose(1, 2)
    identity = torch.eye(slots.shape[1], device=slots.device, dtype=gram.dtype)
    return (gram - identity).mean()
