"""Invariants of the pairwise losses (ccr spec §2.7, §3.7; itr spec §4.8, §7.3, §10.5)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from leccr_lightning.losses.pairwise import (
    bidirectional,
    hinge_triplet,
    info_nce,
    positive_mask_from_ids,
    soft_positive_targets,
    symmetric_info_nce,
    unified_pair_loss,
)

# Rows: i2t hinge terms (m = 0.2) are row0 [0, 0.1], row1 [0.1, 0], row2 [0.1, 0.45];
# columns: col0 [0, 0], col1 [0, 0.25], col2 [0.5, 0].
HAND = torch.tensor([[0.8, 0.3, 0.7], [0.5, 0.6, 0.1], [0.3, 0.65, 0.4]], dtype=torch.float64)
EYE3 = torch.eye(3, dtype=torch.bool)


def _random_scores(n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, n, generator=generator, dtype=torch.float64) * 2 - 1


@pytest.mark.parametrize("mining", ["all", "all_mean", "hardest", "selective", "soft"])
def test_triplet_zero_when_positives_win_by_margin(mining: str) -> None:
    scores = torch.full((4, 4), 0.1, dtype=torch.float64) + 0.8 * torch.eye(4, dtype=torch.float64)
    loss = bidirectional(hinge_triplet, scores, torch.eye(4, dtype=torch.bool), (1, 1), mining=mining)
    assert loss.item() == 0.0
    scores[0, 1] = 0.75
    assert bidirectional(hinge_triplet, scores, torch.eye(4, dtype=torch.bool), (1, 1), mining=mining) > 0


def test_triplet_hand_computed_3x3() -> None:
    rows_hardest = hinge_triplet(HAND, EYE3, mining="hardest")
    rows_all = hinge_triplet(HAND, EYE3, mining="all")
    assert rows_hardest.item() == pytest.approx(0.1 + 0.1 + 0.45)
    assert rows_all.item() == pytest.approx(0.1 + 0.1 + 0.55)
    nrccr = bidirectional(hinge_triplet, HAND, EYE3, (1.0, 1.0))
    assert nrccr.item() == pytest.approx(0.65 + 0.75)
    assert bidirectional(hinge_triplet, HAND, EYE3, (1.0, 1.0), mining="all").item() == pytest.approx(0.75 + 0.75)
    mean = hinge_triplet(HAND, EYE3, mining="hardest", reduction="mean")
    assert mean.item() == pytest.approx(0.65 / 3)


def test_selective_switches_to_average_only_for_near_ties() -> None:
    # |s_p - max s_n| is 0.1, 0.1, 0.25: eps 0.15 averages rows 0 and 1 ((0 + 0.1) / 2 each),
    # row 2 stays hardest.
    value = hinge_triplet(HAND, EYE3, mining="selective", selective_eps=0.15)
    assert value.item() == pytest.approx(0.05 + 0.05 + 0.45)


def test_selective_limits() -> None:
    scores, mask = _random_scores(9), torch.eye(9, dtype=torch.bool)
    hardest = hinge_triplet(scores, mask, mining="hardest")
    assert torch.equal(hinge_triplet(scores, mask, mining="selective", selective_eps=0.0), hardest)
    all_mean = hinge_triplet(scores, mask, mining="all_mean")
    assert torch.allclose(hinge_triplet(scores, mask, mining="selective", selective_eps=3.0), all_mean)
    assert not torch.allclose(hardest, all_mean)


def test_hardest_gradient_only_through_positive_and_hardest_negative() -> None:
    scores = torch.rand(6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    scores.requires_grad_(True)
    mask = torch.eye(6, dtype=torch.bool)
    hinge_triplet(scores, mask, margin=2.0, mining="hardest").backward()
    hardest = scores.detach().masked_fill(mask, -1.0).argmax(dim=1)
    expected = torch.zeros(6, 6, dtype=torch.float64)
    expected[torch.arange(6), torch.arange(6)] = -1.0
    expected[torch.arange(6), hardest] = 1.0
    assert torch.equal(scores.grad, expected)


def test_sum_reduction_scales_linearly_with_batch() -> None:
    scores, mask = _random_scores(5, seed=2), torch.eye(5, dtype=torch.bool)
    low = torch.full((5, 5), -3.0, dtype=torch.float64)
    doubled = torch.cat([torch.cat([scores, low], 1), torch.cat([low, scores], 1)], 0)
    doubled_mask = torch.eye(10, dtype=torch.bool)
    for fn, kwargs in (
        (hinge_triplet, {"mining": "hardest"}),
        (hinge_triplet, {"mining": "all"}),
        (hinge_triplet, {"mining": "soft"}),
        (unified_pair_loss, {}),
    ):
        single = bidirectional(fn, scores, mask, (1, 1), **kwargs)
        double = bidirectional(fn, doubled, doubled_mask, (1, 1), **kwargs)
        assert single > 0
        assert double.item() == pytest.approx(2 * single.item(), rel=1e-12)


@pytest.mark.parametrize("mining", ["all", "hardest", "selective", "soft"])
def test_bidirectional_symmetric_under_transpose(mining: str) -> None:
    scores, mask = _random_scores(7, seed=3), torch.eye(7, dtype=torch.bool)
    forward = bidirectional(hinge_triplet, scores, mask, (1, 1), mining=mining, selective_eps=0.05)
    swapped = bidirectional(hinge_triplet, scores.t(), mask.t(), (1, 1), mining=mining, selective_eps=0.05)
    assert forward.item() == pytest.approx(swapped.item(), rel=1e-12)
    assert forward.item() != pytest.approx(hinge_triplet(scores, mask, mining=mining, selective_eps=0.05).item())


def test_soft_triplet_matches_formula_and_tends_to_hardest() -> None:
    # Triplet-SN of row 2 of HAND: [0.2 - 0.4 + tau * log(exp(0.3 / tau) + exp(0.65 / tau))]_+
    tau = 0.1
    expected_row2 = 0.2 - 0.4 + tau * torch.logsumexp(torch.tensor([0.3, 0.65], dtype=torch.float64) / tau, 0)
    rows = hinge_triplet(HAND[2:], EYE3[2:], mining="soft", soft_tau=tau)
    assert rows.item() == pytest.approx(expected_row2.item())
    scores, mask = _random_scores(8, seed=4), torch.eye(8, dtype=torch.bool)
    soft = hinge_triplet(scores, mask, mining="soft", soft_tau=1e-4)
    assert soft.item() == pytest.approx(hinge_triplet(scores, mask, mining="hardest").item(), abs=1e-3)


def test_unified_tends_to_hardest_triplet() -> None:
    scores, mask = _random_scores(8, seed=5), torch.eye(8, dtype=torch.bool)
    hardest = bidirectional(hinge_triplet, scores, mask, reduction="mean")
    errors = [
        abs(bidirectional(unified_pair_loss, scores, mask, tau=tau, reduction="mean") - hardest).item()
        for tau in (0.1, 0.01, 1e-3)
    ]
    assert errors[2] < 1e-4
    assert errors[0] > errors[1] > errors[2]


def test_unified_without_margin_is_tau_times_info_nce() -> None:
    scores, mask = _random_scores(6, seed=6), torch.eye(6, dtype=torch.bool)
    tau = 0.05
    unified = bidirectional(unified_pair_loss, scores, mask, margin=0.0, tau=tau, reduction="mean")
    assert (unified / tau).item() == pytest.approx(symmetric_info_nce(scores, mask, tau).item(), rel=1e-10)


def test_unified_hand_value_and_stability() -> None:
    value = unified_pair_loss(HAND[:1], EYE3[:1], margin=0.2, tau=0.5)
    expected = 0.5 * torch.log(1 + torch.exp(torch.tensor([-0.3, 0.1], dtype=torch.float64) / 0.5).sum())
    assert value.item() == pytest.approx(expected.item())
    big = torch.tensor([[5.0, -5.0], [-5.0, 5.0]], requires_grad=True)
    loss = unified_pair_loss(big * 10, torch.eye(2, dtype=torch.bool), tau=0.001)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(big.grad).all()


def test_soft_positive_targets_rows_sum_to_one() -> None:
    ids = torch.tensor([0, 1, 0, 2, 0])
    target = soft_positive_targets(positive_mask_from_ids(ids, ids))
    assert torch.allclose(target.sum(dim=1), torch.ones(5))
    assert target[0, 2].item() == pytest.approx(1 / 3)
    no_positive = soft_positive_targets(torch.zeros(2, 3, dtype=torch.bool))
    assert torch.equal(no_positive, torch.zeros(2, 3))


def test_info_nce_identity_mask_equals_cross_entropy() -> None:
    logits = torch.randn(6, 9, generator=torch.Generator().manual_seed(7))
    mask = torch.zeros(6, 9, dtype=torch.bool)
    labels = torch.tensor([3, 0, 8, 1, 1, 5])
    mask[torch.arange(6), labels] = True
    assert torch.allclose(info_nce(logits, mask), F.cross_entropy(logits, labels))
    assert torch.allclose(info_nce(logits, mask, reduction="sum"), F.cross_entropy(logits, labels, reduction="sum"))


def test_info_nce_multi_positive_hand_value() -> None:
    logits = torch.tensor([[1.0, 2.0, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, False]])
    log_probs = torch.log_softmax(logits, dim=1)
    assert info_nce(logits, mask).item() == pytest.approx(-0.5 * (log_probs[0, 0] + log_probs[0, 1]).item())


def test_rows_without_positive_contribute_nothing() -> None:
    scores = _random_scores(5, seed=8)
    mask = torch.eye(5, dtype=torch.bool)
    mask[4, 4] = False
    for fn, kwargs in ((hinge_triplet, {"reduction": "mean"}), (info_nce, {}), (unified_pair_loss, {})):
        assert fn(scores, mask, **kwargs).item() == pytest.approx(fn(scores[:4], mask[:4], **kwargs).item())


def test_rows_without_negative_keep_gradients_finite() -> None:
    scores = _random_scores(3, seed=9).requires_grad_(True)
    mask = torch.eye(3, dtype=torch.bool)
    mask[0] = True
    loss = hinge_triplet(scores, mask, mining="soft") + unified_pair_loss(scores, mask)
    loss = loss + hinge_triplet(scores, mask, mining="selective", selective_eps=0.5)
    loss.backward()
    assert torch.isfinite(scores.grad).all()
    assert torch.equal(scores.grad[0], torch.zeros(3, dtype=torch.float64))
    for mining in ("hardest", "all", "soft"):
        mean = hinge_triplet(scores, mask, mining=mining, reduction="mean")
        assert mean.item() == pytest.approx(hinge_triplet(scores[1:], mask[1:], mining=mining, reduction="mean").item())


def test_symmetric_info_nce_clip_form_and_learnable_temperature() -> None:
    scores = _random_scores(5, seed=10)
    temperature = torch.tensor(0.07, requires_grad=True)
    loss = symmetric_info_nce(scores.float(), torch.eye(5, dtype=torch.bool), temperature)
    labels = torch.arange(5)
    logits = scores.float() / 0.07
    clip = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
    assert torch.allclose(loss, clip)
    loss.backward()
    assert temperature.grad is not None and temperature.grad != 0


def test_info_nce_invariant_to_joint_permutation() -> None:
    ids = torch.tensor([0, 1, 0, 2, 3, 1])
    scores, mask = _random_scores(6, seed=11), positive_mask_from_ids(ids, ids)
    perm = torch.tensor([3, 5, 0, 2, 1, 4])
    permuted = symmetric_info_nce(scores[perm][:, perm], mask[perm][:, perm], 0.1)
    assert permuted.item() == pytest.approx(symmetric_info_nce(scores, mask, 0.1).item(), rel=1e-12)


def test_id_mask_excludes_same_item_captions_but_eye_does_not() -> None:
    ids = torch.tensor([0, 1, 0])
    scores = torch.tensor([[0.9, 0.1, 0.85], [0.1, 0.9, 0.1], [0.85, 0.1, 0.9]], dtype=torch.float64)
    id_mask = positive_mask_from_ids(ids, ids)
    assert torch.equal(id_mask, torch.tensor([[True, False, True], [False, True, False], [True, False, True]]))
    # Official behaviour (eye): captions 0 and 2 of the same image are negatives: 2 * [0.2 + 0.85 - 0.9]_+.
    assert hinge_triplet(scores, EYE3).item() == pytest.approx(0.3)
    assert hinge_triplet(scores, id_mask).item() == 0.0
    # InfoNCE: the same-image caption is pushed down under eye (positive gradient), pulled up under ids.
    grads = []
    for mask in (EYE3, id_mask):
        logits = (scores / 0.1).requires_grad_(True)
        info_nce(logits, mask).backward()
        grads.append(logits.grad[0, 2].item())
    assert grads[0] > 0 > grads[1]


def test_bad_inputs_raise_clear_errors() -> None:
    scores = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="positive_mask: expected shape"):
        hinge_triplet(scores, torch.eye(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="torch.bool"):
        info_nce(scores, torch.eye(3))
    with pytest.raises(ValueError, match="mining"):
        hinge_triplet(scores, EYE3, mining="semi-hard")
    with pytest.raises(ValueError, match="reduction"):
        unified_pair_loss(scores, EYE3, reduction="none")
    with pytest.raises(ValueError, match="temperature"):
        symmetric_info_nce(scores, EYE3, 0.0)
    with pytest.raises(ValueError, match="1-D"):
        positive_mask_from_ids(torch.zeros(2, 2), torch.zeros(2))
