"""Generalised temporal IoU, Hungarian matching and the DETR grounding loss terms (spec grounding_methods §2).

Spans are normalised to [0, 1]; (c, w) = (center, width), (s, e) = (start, end). Losses are pure functions of
predictions, targets and matched indices; their weights live in ``SetCriterion`` and the methods.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from leccr_lightning.data.grounding.spans import span_cxw_to_xx
from leccr_lightning.metrics.grounding import temporal_iou

Indices = list[tuple[torch.Tensor, torch.Tensor]]


def generalized_temporal_iou(spans1: torch.Tensor, spans2: torch.Tensor) -> torch.Tensor:
    """Cross gIoU [N, M] = IoU - (hull - union) / hull (§2.2); equals IoU when spans overlap or touch."""
    iou, union = temporal_iou(spans1, spans2)
    left = torch.minimum(spans1[:, None, 0], spans2[None, :, 0])
    right = torch.maximum(spans1[:, None, 1], spans2[None, :, 1])
    hull = (right - left).clamp(min=0)
    return iou - torch.where(hull > 0, (hull - union) / hull.clamp(min=1e-12), torch.zeros_like(hull))


@torch.no_grad()
def hungarian_match(
    pred_logits: torch.Tensor,
    pred_spans: torch.Tensor,
    targets: Sequence[torch.Tensor],
    cost_span: float = 10.0,
    cost_giou: float = 1.0,
    cost_class: float = 4.0,
    extra_costs: Sequence[torch.Tensor] | None = None,
) -> Indices:
    """Per-sample optimal assignment (scipy) of queries to GT spans, min(Q, G) pairs (§2.1, moment_detr/matcher.py).

    C_ij = cost_span * ||b_i - b_j||_1 (c, w) - cost_giou * gIoU(b_i, b_j) (s, e) - cost_class * p_i(fg),
    foreground = class 0; ``extra_costs[b]`` [Q, G_b] is added when given (e.g. RGTR's region cost).
    """
    prob = pred_logits.softmax(-1)[..., 0]
    out = []
    for b, tgt in enumerate(targets):
        if len(tgt) == 0:
            empty = torch.zeros(0, dtype=torch.long)
            out.append((empty, empty))
            continue
        cost = (
            cost_span * torch.cdist(pred_spans[b], tgt.to(pred_spans), p=1)
            - cost_giou * generalized_temporal_iou(span_cxw_to_xx(pred_spans[b]), span_cxw_to_xx(tgt.to(pred_spans)))
            - cost_class * prob[b][:, None]
        )
        if extra_costs is not None:
            cost = cost + extra_costs[b]
        rows, cols = linear_sum_assignment(cost.cpu().numpy())
        out.append((torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)))
    return out


def _matched(pred_spans: torch.Tensor, targets: Sequence[torch.Tensor], indices: Indices):
    """Matched predicted and GT (c, w) spans, each [P, 2]."""
    src = torch.cat([pred_spans[b, rows] for b, (rows, _) in enumerate(indices)])
    tgt = torch.cat([targets[b][cols].to(pred_spans) for b, (_, cols) in enumerate(indices)])
    return src, tgt


def span_l1_loss(pred_spans: torch.Tensor, targets: Sequence[torch.Tensor], indices: Indices) -> torch.Tensor:
    """Mean |b_hat - b| over matched pairs x 2 coordinates of (c, w) (§2.2)."""
    src, tgt = _matched(pred_spans, targets, indices)
    return F.l1_loss(src, tgt) if len(src) else pred_spans.sum() * 0


def span_giou_loss(pred_spans: torch.Tensor, targets: Sequence[torch.Tensor], indices: Indices) -> torch.Tensor:
    """Mean (1 - gIoU) over matched pairs (§2.2)."""
    src, tgt = _matched(pred_spans, targets, indices)
    if not len(src):
        return pred_spans.sum() * 0
    return (1 - torch.diag(generalized_temporal_iou(span_cxw_to_xx(src), span_cxw_to_xx(tgt)))).mean()


def foreground_labels(pred_logits: torch.Tensor, indices: Indices) -> torch.Tensor:
    """Class targets [B, Q]: 0 (foreground) for matched queries, 1 (background) otherwise."""
    labels = torch.ones(pred_logits.shape[:2], dtype=torch.long, device=pred_logits.device)
    for b, (rows, _) in enumerate(indices):
        labels[b, rows.to(labels.device)] = 0
    return labels


def foreground_loss(pred_logits: torch.Tensor, indices: Indices, eos_coef: float = 0.1) -> torch.Tensor:
    """L_label = 1/(B Q) sum_{b,q} w_y CE(logits_bq, y_bq), w = [1, eos_coef] (fg = 0, bg = 1): the plain mean of
    the weighted CE over all queries (jayleicn/moment_detr:moment_detr/model.py:230-231), not sum w CE / sum w."""
    weight = torch.tensor([1.0, eos_coef], device=pred_logits.device, dtype=pred_logits.dtype)
    labels = foreground_labels(pred_logits, indices)
    return F.cross_entropy(pred_logits.transpose(1, 2), labels, weight=weight, reduction="none").mean()


def saliency_hinge_loss(
    saliency: torch.Tensor, pos_idx: torch.Tensor, neg_idx: torch.Tensor, margin: float = 0.2
) -> torch.Tensor:
    """Moment-DETR hinge (moment_detr/model.py:238-253): 2 sum max(0, margin + s_neg - s_pos) / (B P) over the P
    (positive, negative) clip pairs of each sample (§2.2)."""
    s_pos = saliency.gather(1, pos_idx)
    s_neg = saliency.gather(1, neg_idx)
    return 2 * (margin + s_neg - s_pos).clamp(min=0).sum() / (pos_idx.shape[0] * pos_idx.shape[1])


def rank_contrastive_loss(
    saliency: torch.Tensor,
    saliency_mismatched: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    tau: float = 0.5,
    max_rank: int = 12,
    eps: float = 1e-6,
) -> torch.Tensor:
    """QD-DETR rank-contrastive loss (wjun0830/QD-DETR:qd_detr/model.py:304-343).

    Logits z = [s; s^-] / tau over the clips under the true query and under the mismatched one (padding at
    -1e3 / tau), log p = z - max z - log(sum exp(z - max z) + eps). For r = 1..max_rank-1 with any positive in the
    batch (clips with label >= r, true-query half only): L_r = -1/B sum_b 1[b has a positive] *
    sum_i pos_bi log p_bi / (|pos_b| + eps), i.e. the mean over the whole batch with samples lacking a positive
    at rank r counted as 0 (model.py:337-341). Returns sum_r L_r / max_rank.
    """
    valid = torch.cat([mask, mask], dim=1).to(saliency.dtype)
    scores = torch.cat([saliency, saliency_mismatched], dim=1)
    logits = (valid * scores + (1.0 - valid) * -1e3) / tau
    logits = logits - logits.max(dim=1, keepdim=True).values
    log_prob = logits - torch.log(logits.exp().sum(1, keepdim=True) + eps)
    ranks = torch.cat([labels, torch.zeros_like(labels)], dim=1)
    total = saliency.new_zeros(())
    for r in range(1, max_rank):
        positives = ranks >= r
        if not positives.any():
            continue
        mean_log_prob = (positives * log_prob * valid).sum(1) / (positives.sum(1) + eps)
        total = total + (-mean_log_prob * positives.any(1)).mean()
    return total / max_rank


def negative_pair_loss(saliency_mismatched: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """QD-DETR negative-pair term (qd_detr/model.py:302): 1/B sum_b sum_{valid i} -log(1 - sigma(s^-_bi)), computed
    as -logsigmoid(-s^-), the same value without the overflow of log(1 - sigma) at large s^-."""
    per_clip = -F.logsigmoid(-saliency_mismatched) * mask
    return per_clip.sum(1).mean()


def iou_quality_loss(
    quality: torch.Tensor,
    pred_spans: torch.Tensor,
    targets: Sequence[torch.Tensor],
    bins: Sequence[float] = (0.3, 0.7),
) -> torch.Tensor:
    """BAM-DETR-style quality loss (spec §3.3): |q_hat - IoU| for all queries, IoU = max over GT of tIoU of the
    detached prediction, averaged inside each IoU bin (<= 0.3, (0.3, 0.7], > 0.7), then over the non-empty bins."""
    target = iou_targets(pred_spans, targets)
    err = (quality - target).abs()
    low, high = bins
    groups = [target <= low, (target > low) & (target <= high), target > high]
    means = [err[g].mean() for g in groups if g.any()]
    return torch.stack(means).mean()


@torch.no_grad()
def iou_targets(pred_spans: torch.Tensor, targets: Sequence[torch.Tensor]) -> torch.Tensor:
    """[B, Q] best IoU of each (detached) predicted span with its sample's GT spans, in [0, 1]."""
    out = pred_spans.new_zeros(pred_spans.shape[:2])
    for b, tgt in enumerate(targets):
        if len(tgt):
            iou, _ = temporal_iou(span_cxw_to_xx(pred_spans[b]), span_cxw_to_xx(tgt.to(pred_spans)))
            out[b] = iou.max(dim=1).values
    return out
