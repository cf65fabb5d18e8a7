"""Invariants of the OT utilities and the DCOT curriculum (ccr spec §4.3, §5.2-§5.3; ecosystem B5, P17)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from leccr_lightning.losses.curriculum import CurriculumSchedule
from leccr_lightning.losses.transport import (
    batched_sinkhorn_plan,
    cosine_cost,
    plan_confidences,
    sinkhorn_plan,
    token_ot_distance,
)

CONVERGED = {"max_iter": 2000, "stop_threshold": 1e-12}


def _cost(n: int = 6, m: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, m, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2


def test_plan_marginals_match_a_and_b() -> None:
    cost = _cost(6, 5)
    a = torch.tensor([0.1, 0.2, 0.3, 0.1, 0.2, 0.1], dtype=torch.float64)
    b = torch.tensor([0.3, 0.3, 0.2, 0.1, 0.1], dtype=torch.float64)
    plan = sinkhorn_plan(cost, a=a, b=b, **CONVERGED)
    assert (plan >= 0).all()
    assert torch.allclose(plan.sum(dim=1), a, atol=1e-10)
    assert torch.allclose(plan.sum(dim=0), b, atol=1e-8)
    uniform = sinkhorn_plan(cost, max_iter=100)
    assert torch.allclose(uniform.sum(dim=1), torch.full((6,), 1 / 6, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(uniform.sum(dim=0), torch.full((5,), 1 / 5, dtype=torch.float64), atol=1e-5)


def test_plan_invariant_to_row_and_column_constants() -> None:
    cost = _cost(seed=1)
    rows = torch.linspace(-1, 3, 6, dtype=torch.float64)[:, None]
    cols = torch.linspace(2, -0.5, 6, dtype=torch.float64)[None, :]
    plan = sinkhorn_plan(cost, **CONVERGED)
    assert torch.allclose(sinkhorn_plan(cost + rows, **CONVERGED), plan, atol=1e-10)
    assert torch.allclose(sinkhorn_plan(cost + cols, **CONVERGED), plan, atol=1e-10)
    assert not torch.allclose(sinkhorn_plan(cost + rows * cols, **CONVERGED), plan, atol=1e-4)


def test_plan_and_confidences_permutation_equivariant() -> None:
    cost = _cost(7, 7, seed=2)
    perm = torch.tensor([4, 0, 6, 2, 1, 5, 3])
    plan = sinkhorn_plan(cost, **CONVERGED)
    permuted = sinkhorn_plan(cost[perm][:, perm], **CONVERGED)
    assert torch.allclose(permuted, plan[perm][:, perm], atol=1e-12)
    assert torch.allclose(plan_confidences(permuted), plan_confidences(plan)[perm], atol=1e-10)


def test_confidences_clean_batch_noisy_pair_and_large_epsilon() -> None:
    n = 8
    noise = torch.rand(n, n, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 0.1
    cost = 1.0 - torch.eye(n, dtype=torch.float64) + noise
    clean = plan_confidences(sinkhorn_plan(cost, epsilon=0.01))
    assert clean.min() > 0.99
    flat = plan_confidences(sinkhorn_plan(cost, epsilon=1e4))
    assert torch.allclose(flat, torch.full((n,), 1 / n, dtype=torch.float64), atol=1e-3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_corrupted_pair_gets_lowest_confidence(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    visual = F.normalize(torch.randn(8, 32, generator=generator, dtype=torch.float64), dim=1)
    text = F.normalize(visual + 0.3 * torch.randn(8, 32, generator=generator, dtype=torch.float64), dim=1)
    text[2] = F.normalize(torch.randn(32, generator=generator, dtype=torch.float64), dim=0)
    weights = plan_confidences(sinkhorn_plan(1.0 - visual @ text.t(), epsilon=0.1))
    assert weights.argmin().item() == 2


def test_confidences_are_detached() -> None:
    cost = _cost(seed=4).requires_grad_(True)
    plan = sinkhorn_plan(cost)
    assert plan.requires_grad
    assert not plan_confidences(plan).requires_grad


def test_gradients_finite_at_small_epsilon_in_float32() -> None:
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(16, 8, generator=generator, requires_grad=True)
    y = torch.randn(16, 8, generator=generator)
    cost = 1.0 - F.normalize(x, dim=1) @ F.normalize(y, dim=1).t()
    (sinkhorn_plan(cost, epsilon=0.01) * cost).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    tokens = torch.randn(2, 5, 8, generator=generator, requires_grad=True)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    plans = batched_sinkhorn_plan(cosine_cost(tokens, y[:10].view(2, 5, 8)), mask, mask, epsilon=0.01)
    (plans * cosine_cost(tokens, y[:10].view(2, 5, 8))).sum().backward()
    assert torch.isfinite(tokens.grad).all() and tokens.grad.abs().sum() > 0


def _padded_problem(seed: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    costs = torch.rand(3, 5, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2
    masks_a = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    masks_b = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    return costs, masks_a, masks_b


def test_batched_equals_per_problem_and_padding_gets_zero_mass() -> None:
    costs, masks_a, masks_b = _padded_problem()
    costs[0, 4, :] = float("nan")
    plans = batched_sinkhorn_plan(costs, masks_a, masks_b, epsilon=0.2, **CONVERGED)
    for i in range(3):
        valid = masks_a[i][:, None] & masks_b[i][None, :]
        assert torch.equal(plans[i][~valid], torch.zeros(int((~valid).sum()), dtype=torch.float64))
        single = sinkhorn_plan(costs[i][masks_a[i]][:, masks_b[i]], epsilon=0.2, **CONVERGED)
        assert torch.allclose(plans[i][masks_a[i]][:, masks_b[i]], single, atol=1e-10)
    assert torch.allclose(plans.sum(dim=(1, 2)), torch.ones(3, dtype=torch.float64))


def test_token_ot_distance_value_and_gradient() -> None:
    generator = torch.Generator().manual_seed(7)
    h_a = torch.randn(2, 4, 8, generator=generator, dtype=torch.float64, requires_grad=True)
    h_b = torch.randn(2, 5, 8, generator=generator, dtype=torch.float64)
    mask_a = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    mask_b = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    distance = token_ot_distance(h_a, mask_a, h_b, mask_b)
    cost = cosine_cost(h_a.detach(), h_b)
    plan = batched_sinkhorn_plan(cost, mask_a, mask_b)
    assert distance.shape == (2,)
    assert torch.allclose(distance, (plan * cost).sum(dim=(1, 2)))
    distance.sum().backward()
    assert h_a.grad[1, 2:].abs().sum() == 0 and h_a.grad[1, :2].abs().sum() > 0
    same = token_ot_distance(h_b, mask_b, h_b, mask_b, epsilon=0.01)
    assert (same < distance.detach()).all()


def test_transport_bad_inputs() -> None:
    costs, masks_a, masks_b = _padded_problem()
    masks_a[1] = False
    with pytest.raises(ValueError, match=r"problems \[1\]"):
        batched_sinkhorn_plan(costs, masks_a, masks_b)
    with pytest.raises(ValueError, match="masks_a/masks_b"):
        batched_sinkhorn_plan(costs, masks_a[:, :3], masks_b)
    with pytest.raises(ValueError, match=r"a: expected shape \(6,\)"):
        sinkhorn_plan(_cost(), a=torch.ones(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="epsilon"):
        sinkhorn_plan(_cost(), epsilon=0.0)
    with pytest.raises(ValueError, match="square"):
        plan_confidences(torch.ones(3, 4))


def test_curriculum_progress_mode_monotone_bounded_with_warmup() -> None:
    grid = [i / 20 for i in range(21)]
    for ramp in ("linear", "cosine"):
        schedule = CurriculumSchedule(start=1.0, end=0.5, warmup=0.2, ramp=ramp)
        lambdas = [schedule.weights(progress=p)[0] for p in grid]
        assert all(a >= b for a, b in zip(lambdas, lambdas[1:], strict=False))
        assert lambdas[0] == lambdas[4] == 1.0 and lambdas[-1] == pytest.approx(0.5)
        for p in grid:
            weights = schedule.weights(progress=p)
            assert 0.0 <= weights[1] <= weights[0] <= 1.0 and sum(weights) == pytest.approx(1.0)
    linear = CurriculumSchedule(ramp="linear").weights(progress=0.25)[0]
    cosine = CurriculumSchedule(ramp="cosine").weights(progress=0.25)[0]
    assert linear == pytest.approx(0.875) and cosine > linear


def test_curriculum_accuracy_mode_reacts_to_accuracies() -> None:
    schedule = CurriculumSchedule(mode="accuracy", ema_momentum=0.5, min_weight=0.1, max_weight=0.9)
    assert schedule.weights() == (1.0, 0.0)
    assert schedule.weights(accuracy=(0.6, 0.2))[0] == pytest.approx(0.75)
    falling = [schedule.weights(accuracy=(0.6, 0.6))[0] for _ in range(3)]
    assert falling[0] > falling[1] > falling[2] > 0.5
    saved = schedule.state_dict()
    resumed = CurriculumSchedule(mode="accuracy", ema_momentum=0.5, min_weight=0.1, max_weight=0.9)
    resumed.load_state_dict(saved)
    assert resumed.weights(accuracy=(0.1, 0.9)) == schedule.weights(accuracy=(0.1, 0.9))
    assert CurriculumSchedule(mode="accuracy", max_weight=0.9).weights(accuracy=(1.0, 0.0))[0] == 0.9
    warm = CurriculumSchedule(mode="accuracy", warmup=0.3)
    assert warm.weights(progress=0.1, accuracy=(0.1, 0.9))[0] == 1.0
    assert warm.weights(progress=0.5)[0] == pytest.approx(0.1)


def test_curriculum_bad_inputs() -> None:
    with pytest.raises(ValueError, match="mode"):
        CurriculumSchedule(mode="loss")
    with pytest.raises(ValueError, match="warmup"):
        CurriculumSchedule(warmup=1.0)
    with pytest.raises(ValueError, match="progress"):
        CurriculumSchedule().weights()
    with pytest.raises(ValueError, match="accuracy"):
        CurriculumSchedule(mode="accuracy").weights(accuracy=(1.5, 0.2))
