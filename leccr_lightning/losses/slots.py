"""LECCR slot losses (ccr_methods §3.3 items 2, 3, 5): max-over-slots similarity, slot-text matching, slot-vision
alignment and the softened matching under English guidance. Pure functions of embeddings and score matrices
(official code: ``LiJiaBei-7/leccr:LECCR/models/model_retrieval_caption.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from leccr_lightning.losses.distillation import kl_to_soft_target, mix_targets
from leccr_lightning.losses.pairwise import check_choice, info_nce


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


SLOT_VISION_NORMS = ("vector", "across")


def slot_vision_summary(x: Tensor, mask: Tensor | None = None, normalize: str = "vector") -> Tensor:
    """mean_k x_hat_k over the valid vectors of each item: x [B, K, D] (projected slots or tokens) -> [B, D].

    ``normalize="vector"`` makes every vector x_k unit length (the L_cv of LECCR §3.3 item 3); ``"across"`` is the
    official ``F.normalize(x)`` with its default dim=1, which normalises each feature over the K vectors of an item
    (LiJiaBei-7/leccr:LECCR/models/model_retrieval_caption.py:123-124). ``mask`` [B, K] leaves padded vectors out of
    the normalisation and the mean; ``None`` counts every position (the official video code, which also averages
    padded frames, video_model_retrieval_caption.py:149-160).
    """
    _check_slots(x, "x")
    check_choice("normalize", normalize, SLOT_VISION_NORMS)
    weights = torch.ones(x.shape[:2], dtype=x.dtype, device=x.device) if mask is None else mask.to(x.dtype)
    x = x * weights.unsqueeze(-1)
    unit = F.normalize(x, dim=-1 if normalize == "vector" else 1)
    return (unit * weights.unsqueeze(-1)).sum(1) / weights.sum(1, keepdim=True).clamp_min(1.0)


def slot_vision_alignment(slot_summary: Tensor, token_summary: Tensor, positive_mask: Tensor) -> Tensor:
    """L_cv = -(1/B) sum_i sum_j y_ij log softmax_j(G_ij), one direction, no temperature (LECCR §3.3 item 3).

    G_ij = mean_{k,p} c_hat_{k,i} . x_hat_{p,j} = s_i . u_j by linearity, with s = :func:`slot_vision_summary` of the
    projected slots norm(cproj(S0)) [I, D] and u that of the projected visual tokens norm(vproj(X)) [J, D];
    y = multi-positive labels from ``positive_mask`` [I, J].
    """
    if slot_summary.dim() != 2 or token_summary.dim() != 2:
        raise ValueError(
            f"slot_vision_alignment takes [items, D] summaries, got {tuple(slot_summary.shape)} and "
            f"{tuple(token_summary.shape)}"
        )
    return info_nce(slot_summary @ token_summary.T, positive_mask)


def english_guided_soft_matching(
    english_scores: Tensor, slot_scores: Tensor, student_scores: Tensor, alpha: float = 0.8
) -> Tensor:
    """L_dstl = KL(Y || softmax_row(S_t)), Y = softmax_row(alpha mm(t^s v^T) + (1 - alpha) mm(M^s)) (LECCR §3.3
    item 5; alpha = 0.8, no temperature, Y detached, mean over rows = ``batchmean``).

    All three matrices are [texts, visuals]; orienting ``slot_scores`` that way is the caller's job.
    """
    target = mix_targets(english_scores, slot_scores, alpha=alpha, dim=-1)
    return kl_to_soft_target(student_scores, target, dim=-1)
