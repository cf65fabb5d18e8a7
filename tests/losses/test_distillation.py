"""Invariants of the distillation losses (ccr spec §2.7, §3.7)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from leccr_lightning.losses.distillation import (
    feature_distillation,
    kl_to_soft_target,
    minmax_normalize,
    mix_targets,
    slot_diversity,
    soft_target_distillation,
)


def _logits(n: int = 5, m: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, m, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3


def _entropy(logits: torch.Tensor, dim: int) -> torch.Tensor:
    probs = torch.softmax(logits, dim=dim)
    return -(probs * torch.log(probs)).sum(dim=dim).mean()


def test_teacher_receives_no_gradient_unless_asked() -> None:
    student = _logits(seed=1).requires_grad_(True)
    teacher = _logits(seed=2).requires_grad_(True)
    soft_target_distillation(student, teacher).backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0
    soft_target_distillation(student, teacher, detach_teacher=False).backward()
    assert teacher.grad is not None and teacher.grad.abs().sum() > 0


def test_student_gradient_zero_at_teacher_and_value_at_least_teacher_entropy() -> None:
    teacher = _logits(4, 6, seed=3)
    student = teacher.clone().requires_grad_(True)
    loss = soft_target_distillation(student, teacher)
    loss.backward()
    assert torch.allclose(student.grad, torch.zeros_like(student.grad), atol=1e-12)
    entropy = 0.5 * (_entropy(teacher, 1) + _entropy(teacher, 0))
    assert loss.item() == pytest.approx(entropy.item())
    other = _logits(4, 6, seed=4)
    assert soft_target_distillation(other, teacher).item() > entropy.item()


def test_row_direction_is_kl_plus_teacher_entropy() -> None:
    student, teacher = _logits(seed=5), _logits(seed=6)
    row = soft_target_distillation(student, teacher, directions=("row",))
    kl = kl_to_soft_target(student, torch.softmax(teacher, dim=1))
    assert row.item() == pytest.approx((kl + _entropy(teacher, 1)).item())
    col = soft_target_distillation(student, teacher, directions=("col",))
    both = soft_target_distillation(student, teacher)
    assert both.item() == pytest.approx(0.5 * (row + col).item())
    assert row.item() != pytest.approx(col.item())


def test_kl_to_soft_target_orientations() -> None:
    student = _logits(seed=7).requires_grad_(True)
    target = torch.softmax(_logits(seed=8), dim=1).requires_grad_(True)
    log_q = torch.log_softmax(student, dim=1)
    default = kl_to_soft_target(student, target)
    assert torch.allclose(default, F.kl_div(log_q, target, reduction="batchmean"))
    reverse = kl_to_soft_target(student, target, orientation="student_target")
    assert torch.allclose(reverse, F.kl_div(torch.log(target), log_q.exp(), reduction="batchmean"))
    assert default.item() != pytest.approx(reverse.item())
    default.backward()
    assert target.grad is None


def test_kl_is_zero_iff_student_matches_target() -> None:
    logits = _logits(seed=9)
    assert kl_to_soft_target(logits, torch.softmax(logits, dim=1)).item() == pytest.approx(0.0, abs=1e-12)
    assert kl_to_soft_target(logits, torch.softmax(logits, dim=0), dim=0).item() == pytest.approx(0.0, abs=1e-12)
    assert kl_to_soft_target(logits, torch.softmax(_logits(seed=10), dim=1)).item() > 1e-3


def test_feature_distillation_is_mse_over_eight_for_unit_vectors() -> None:
    generator = torch.Generator().manual_seed(11)
    student = F.normalize(torch.randn(6, 16, generator=generator, dtype=torch.float64), dim=1)
    teacher = F.normalize(torch.randn(6, 16, generator=generator, dtype=torch.float64), dim=1)
    value = feature_distillation(student, teacher)
    assert value.item() == pytest.approx(F.mse_loss(student, teacher).item() / 8)
    assert feature_distillation(student, student.clone()).item() == 0.0
    assert value.item() > 0
    assert feature_distillation(student, teacher, beta=0.01).item() != pytest.approx(
        F.mse_loss(student, teacher).item() / 0.02
    )


def test_minmax_normalize_range_order_and_affine_invariance() -> None:
    x = _logits(4, 7, seed=12)
    y = minmax_normalize(x)
    assert y.min().item() == 0.0 and y.max().item() == pytest.approx(1.0)
    assert torch.equal(torch.argsort(x.flatten()), torch.argsort(y.flatten()))
    assert torch.allclose(minmax_normalize(3.5 * x - 2.0), y)
    rows = minmax_normalize(x, dim=1)
    assert torch.allclose(rows.amin(dim=1), torch.zeros(4, dtype=torch.float64))
    assert torch.allclose(rows.amax(dim=1), torch.ones(4, dtype=torch.float64))
    assert torch.equal(minmax_normalize(torch.full((2, 2), 5.0)), torch.zeros(2, 2))


def test_mix_targets_rows_sum_to_one_no_grad_and_affine_invariant() -> None:
    primary = _logits(seed=13).requires_grad_(True)
    secondary = _logits(seed=14)
    target = mix_targets(primary, secondary)
    assert not target.requires_grad
    assert torch.allclose(target.sum(dim=1), torch.ones(5, dtype=torch.float64))
    assert torch.allclose(mix_targets(2 * primary + 1, 0.5 * secondary - 3), target)
    expected = torch.softmax(0.8 * minmax_normalize(primary.detach()) + 0.2 * minmax_normalize(secondary), 1)
    assert torch.allclose(target, expected)
    assert torch.allclose(mix_targets(primary, secondary, alpha=1.0), torch.softmax(minmax_normalize(primary), 1))


def test_slot_diversity_identical_orthogonal_and_gradient() -> None:
    identical = torch.randn(2, 1, 8).repeat(1, 4, 1)
    assert slot_diversity(identical).item() == pytest.approx(3 / 4)
    orthogonal = torch.eye(4, 6).unsqueeze(0).repeat(3, 1, 1) * 2.5
    assert slot_diversity(orthogonal).item() == pytest.approx(0.0, abs=1e-7)
    slots = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(15), requires_grad=True)
    before = slot_diversity(slots)
    before.backward()
    with torch.no_grad():
        after = slot_diversity(slots - 0.1 * slots.grad)
    assert after < before


def test_distillation_bad_inputs() -> None:
    with pytest.raises(ValueError, match="teacher_logits: expected shape"):
        soft_target_distillation(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="directions"):
        soft_target_distillation(torch.zeros(2, 2), torch.zeros(2, 2), directions=("diag",))
    with pytest.raises(ValueError, match="orientation"):
        kl_to_soft_target(torch.zeros(2, 2), torch.full((2, 2), 0.5), orientation="forward")
    with pytest.raises(ValueError, match="alpha"):
        mix_targets(torch.zeros(2, 2), torch.zeros(2, 2), alpha=1.5)
    with pytest.raises(ValueError, match="slots"):
        slot_diversity(torch.zeros(4, 8))
