"""Parity with AAA-Zheng/MV-VSE: our own reference of the official single-view ``UnifiedLoss`` (k = 1), written from
the official code, against ``UnifiedObjective`` (loss and gradients in float64 to 1e-6)."""

from __future__ import annotations

import pytest
import torch

from leccr_lightning.methods.objectives import UnifiedObjective
from tests.helpers import pair_context


def official_unified(v: torch.Tensor, t: torch.Tensor, margin: float = 0.2, tau: float = 0.01) -> torch.Tensor:
    """MV-VSE model.py:203-282 with one view (max over views = the view; up and low losses equal): positives at -1,
    tau * logsumexp(x / tau) per anchor, softplus with beta 1 / tau, mean per direction, averaged."""
    batch = t.size(0)
    pos_mask = torch.eye(batch, dtype=v.dtype)
    neg_mask = 1 - pos_mask
    scores = v.mm(t.t())
    pos = scores.diag().view(batch, 1)
    loss_t = (scores - pos.expand_as(scores) + margin) * neg_mask - pos_mask
    loss_v = (scores - pos.t().expand_as(scores) + margin) * neg_mask - pos_mask
    loss_t = torch.nn.functional.softplus(torch.logsumexp(loss_t / tau, dim=1) * tau, beta=1 / tau).mean()
    loss_v = torch.nn.functional.softplus(torch.logsumexp(loss_v / tau, dim=0) * tau, beta=1 / tau).mean()
    return (loss_t + loss_v) / 2


@pytest.mark.parametrize(("seed", "tau", "margin"), [(0, 0.01, 0.2), (1, 0.05, 0.2), (2, 0.01, 0.0)])
def test_unified_objective_equals_the_official_unified_loss_and_gradients(seed, tau, margin):
    generator = torch.Generator().manual_seed(seed)
    v = torch.nn.functional.normalize(torch.randn(12, 8, generator=generator, dtype=torch.float64), dim=1)
    t = torch.nn.functional.normalize(v + torch.randn(12, 8, generator=generator, dtype=torch.float64), dim=1)
    v.requires_grad_(True)
    t.requires_grad_(True)
    reference = official_unified(v, t, margin, tau)
    ours = UnifiedObjective(margin=margin, tau=tau)(pair_context(t @ v.T, torch.eye(12, dtype=torch.bool)))
    assert float(ours.detach()) == pytest.approx(float(reference.detach()), abs=1e-6)
    for a, b in zip(torch.autograd.grad(ours, (v, t)), torch.autograd.grad(reference, (v, t)), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
