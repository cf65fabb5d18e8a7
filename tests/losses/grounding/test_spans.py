"""Span utilities, Hungarian matching and the DETR set-criterion losses (spec grounding_methods §2.1-2.2)."""

from __future__ import annotations

import pytest
import torch

from leccr_lightning.data.grounding.spans import span_cxw_to_xx, span_xx_to_cxw
from leccr_lightning.losses.spans import (
    foreground_loss,
    generalized_temporal_iou,
    hungarian_match,
    iou_targets,
    rank_contrastive_loss,
    saliency_hinge_loss,
    span_giou_loss,
    span_l1_loss,
)
from leccr_lightning.metrics.grounding import intersection_over_hull, temporal_iou


def test_span_conversions_and_iou_invariants() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.sort(torch.rand(6, 2, generator=gen), dim=1).values
    b = torch.sort(torch.rand(5, 2, generator=gen), dim=1).values
    assert torch.allclose(span_cxw_to_xx(span_xx_to_cxw(a)), a)
    iou, _ = temporal_iou(a, b)
    assert torch.allclose(iou, temporal_iou(b, a)[0].T) and (iou >= 0).all() and (iou <= 1).all()
    assert torch.allclose(torch.diag(temporal_iou(a, a)[0]), torch.ones(6))
    shuffled = a[[1, 0, 2, 3, 4, 5]]
    assert torch.allclose(intersection_over_hull(a, shuffled), torch.diag(temporal_iou(a, shuffled)[0]))
    giou = generalized_temporal_iou(a, b)
    assert (giou >= -1).all() and (giou <= 1).all()
    overlap = iou > 0
    assert torch.allclose(giou[overlap], iou[overlap])
    gap = generalized_temporal_iou(torch.tensor([[0.0, 0.2]]), torch.tensor([[0.5, 1.0]]))
    assert gap.item() == pytest.approx(-0.3 / 1.0)
    assert temporal_iou(torch.tensor([[0.3, 0.3]]), torch.tensor([[0.3, 0.3]]))[0].item() == 0.0


def test_matcher_pairs_and_permutation() -> None:
    spans = torch.tensor([[[0.2, 0.1], [0.7, 0.2], [0.5, 0.9], [0.1, 0.05]]])
    logits = torch.tensor([[[3.0, 0.0], [3.0, 0.0], [0.0, 3.0], [0.0, 3.0]]])
    gt = torch.tensor([[0.7, 0.2], [0.2, 0.1]])
    ((rows, cols),) = hungarian_match(logits, spans, [gt])
    assert len(rows) == 2 and len(set(rows.tolist())) == 2
    assert dict(zip(cols.tolist(), rows.tolist(), strict=True)) == {0: 1, 1: 0}
    ((rows_p, cols_p),) = hungarian_match(logits, spans, [gt.flip(0)])
    assert dict(zip(cols_p.tolist(), rows_p.tolist(), strict=True)) == {0: 0, 1: 1}
    ((rows_e, _),) = hungarian_match(logits, spans, [torch.zeros(0, 2)])
    assert len(rows_e) == 0


def test_losses_invariants() -> None:
    spans = torch.tensor([[[0.5, 0.2], [0.3, 0.1]]])
    indices = [(torch.tensor([0]), torch.tensor([0]))]
    target = [torch.tensor([[0.5, 0.2]])]
    assert span_l1_loss(spans, target, indices).item() == 0.0
    assert span_giou_loss(spans, target, indices).item() == pytest.approx(0.0, abs=1e-6)
    logits = torch.tensor([[[2.0, 0.0], [0.0, 2.0]]])
    ce = torch.nn.functional.cross_entropy(logits[0], torch.tensor([0, 1]), reduction="none")
    expected = (ce[0] * 1.0 + ce[1] * 0.1) / 2  # plain mean over the 2 queries (moment_detr/model.py:230-231)
    assert foreground_loss(logits, indices, eos_coef=0.1).item() == pytest.approx(expected.item())
    sal = torch.tensor([[1.0, 0.7, 0.0, 0.5]])
    assert saliency_hinge_loss(sal, torch.tensor([[0, 0]]), torch.tensor([[2, 3]]), margin=0.2).item() == 0.0
    assert saliency_hinge_loss(sal, torch.tensor([[1, 1]]), torch.tensor([[3, 3]]), 0.3).item() == pytest.approx(0.2)
    mask = torch.ones(2, 4, dtype=torch.bool)
    labels = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]])
    scores = torch.randn(2, 4, requires_grad=True)
    loss = rank_contrastive_loss(scores, torch.randn(2, 4), labels, mask)
    loss.backward()
    assert torch.isfinite(loss) and scores.grad[0].abs().sum() == 0 and scores.grad[1].abs().sum() > 0
    pred = torch.tensor([[[0.5, 0.2], [0.9, 0.1]]], requires_grad=True)
    target_iou = iou_targets(pred, target)
    assert not target_iou.requires_grad and target_iou[0, 0] == 1.0 and ((target_iou >= 0) & (target_iou <= 1)).all()
