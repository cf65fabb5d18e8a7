"""LECCR slot losses (ccr_methods §3.3 items 2, 3, 5): max-over-slots similarity, slot-text matching, slot-vision
alignment and the softened matching under English guidance. Pure functions of embeddings and score matrices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from leccr_lightning.losses.distillation import kl_to_soft_target, mix_targets
from leccr_lightning.losses.pairwise import info_nce


def _check_slots(slots: Tensor, name: str = "slots") -> None:
    if slots.dim() != 3:
        raise ValueError(f"{name}: expected a [items, slots, dim] tensor, got shape {tuple(slots.shape)}")


def max_over_slots(slots: Tensor, texts: Tensor) -> Tensor:
    """M_ij = max_k c_{k,i} . t_j for slots [I, N, D] and texts [J, D] -> [I, J] (LECCR §3.3 item 2).

    M_ij >= c_{k,i} . t_j for every k; with N = 1 it is the plain dot product.
    """
    _check_slots(slots)
    if texts.dim() != 2 or texts.shape[1] != slots.shape[2]:
        raise ValueError(
            f"texts: expected [J, {slots.shape[2]}] to match slots {tuple(slots.shape)}, got {tuple(texts.shape)}"
        )
    return torch.einsum("ikd,jd->ijk", slots, texts).amax(dim=-1)


def slot_text_matching(slots: Tensor, texts: Tensor, temperature: float | Tensor) -> Tensor:
    """L_c(t) = 1/2 [CE(M / tau, I) + CE(M^T / tau, I)] with M = max_over_slots(slots, texts) (LECCR §3.3 item 2).

    Plain diagonal labels (item i matches text i), as in the official ``get_caption_contrastive_loss``.
    """
    scores = max_over_slots(slots, texts)
    if scores.shape[0] != scores.shape[1]:
        raise ValueError(f"slot_text_matching needs as many texts as items, got scores {tuple(scores.shape)}")
    labels = torch.arange(scores.shape[0], device=scores.device)
    logits = scores / temperature
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def slot_vision_scores(slots: Tensor, tokens: Tensor, token_mask: Tensor | None = None) -> Tensor:
    """G_ij = mean_{k,p} c_{k,i} . x_{p,j} over the slots of item i and the valid tokens p of visual j.

    By linearity G = mean_k(c_i) . mean_p(x_j), computed that way (no [I, N, J, T] tensor) (LECCR §3.3 item 3).
    """
    _check_slots(slots)
    _check_slots(tokens, "tokens")
    if token_mask is None:
        token_mean = tokens.mean(dim=1)
    else:
        weights = token_mask.to(tokens.dtype).unsqueeze(-1)
        token_mean = (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)
    return slots.mean(dim=1) @ token_mean.T


def slot_vision_alignment(
    slots: Tensor, tokens: Tensor, positive_mask: Tensor, token_mask: Tensor | None = None
) -> Tensor:
    """L_cv = -(1/B) sum_i sum_j y_ij log softmax_j(G_ij), one direction, no temperature (LECCR §3.3 item 3).

    ``slots`` and ``tokens`` are the unit-normalised projections norm(cproj(S0)) and norm(vproj(X));
    y = multi-positive labels from ``positive_mask`` [I, J].
    """
    return info_nce(slot_vision_scores(slots, tokens, token_mask), positive_mask)


def english_guided_soft_matching(
    english_scores: Tensor, slot_scores: Tensor, student_scores: Tensor, alpha: float = 0.8
) -> Tensor:
    """L_dstl = KL(Y || softmax_row(S_t)), Y = softmax_row(alpha mm(t^s v^T) + (1 - alpha) mm(M^s)) (LECCR §3.3
    item 5; alpha = 0.8, no temperature, Y detached, mean over rows = ``batchmean``).

    All three matrices are [texts, visuals]; orienting ``slot_scores`` that way is the caller's job.
    """
    target = mix_targets(english_scores, slot_scores, alpha=alpha, dim=-1)
    return kl_to_soft_target(student_scores, target, dim=-1)
