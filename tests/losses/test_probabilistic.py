"""ProTA's losses (itr spec §3.4): W2 identities, the KL regulariser, and the adaptive-margin InfoNCE reducing to
CLIP's symmetric InfoNCE when every margin is zero."""

from __future__ import annotations

import pytest
import torch

from leccr_lightning.losses import symmetric_info_nce
from leccr_lightning.losses.probabilistic import adaptive_margin_info_nce, gaussian_kl, pairwise_w2_squared, w2_squared


def gaussians(*shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator), torch.rand(*shape, generator=generator)


def test_w2_is_zero_between_identical_gaussians_symmetric_and_euclidean_without_variance():
    mean, std = gaussians(5, 8)
    other_mean, other_std = gaussians(5, 8, seed=1)
    assert torch.equal(w2_squared(mean, std, mean, std), torch.zeros(5))
    assert torch.allclose(w2_squared(mean, std, other_mean, other_std), w2_squared(other_mean, other_std, mean, std))
    zero = torch.zeros_like(std)
    assert torch.allclose(w2_squared(mean, zero, other_mean, zero), (mean - other_mean).pow(2).sum(-1))
    assert (w2_squared(mean, std, other_mean, other_std) >= 0).all()


def test_pairwise_w2_equals_the_elementwise_distance_of_every_token_pair():
    text_mean, text_std = gaussians(3, 4, 6)
    video_mean, video_std = gaussians(2, 5, 6, seed=2)
    pairwise = pairwise_w2_squared(text_mean, text_std, video_mean, video_std)
    direct = w2_squared(
        text_mean[:, :, None, None], text_std[:, :, None, None], video_mean[None, None], video_std[None, None]
    )
    assert pairwise.shape == (3, 4, 2, 5)
    assert torch.allclose(pairwise, direct, atol=1e-5)


def test_kl_to_the_standard_normal_is_zero_there_and_positive_elsewhere():
    assert gaussian_kl(torch.zeros(4, 3, 5), torch.zeros(4, 3, 5)) == 0
    mean, std = gaussians(4, 3, 5)
    assert gaussian_kl(mean, torch.log(std**2)) > 0
    mask = torch.tensor([[True, False, False]] * 4)
    masked = gaussian_kl(torch.cat([torch.zeros(4, 1, 5), mean[:, 1:]], 1), torch.zeros(4, 3, 5), mask)
    assert masked == 0


def test_adaptive_margin_infonce_with_zero_margins_is_clip_infonce_and_a_margin_costs():
    scores = torch.randn(6, 6)
    positives = torch.eye(6, dtype=torch.bool)
    positives[0, 1] = positives[1, 0] = True
    clip = symmetric_info_nce(scores, positives, 0.05)
    assert torch.allclose(adaptive_margin_info_nce(scores, positives, 0.05), clip)
    assert torch.allclose(adaptive_margin_info_nce(scores, positives, 0.05, torch.zeros(6)), clip)
    margins = torch.full((6,), 0.2)
    assert adaptive_margin_info_nce(scores, positives, 0.05, margins) > clip
    with pytest.raises(ValueError, match="margins"):
        adaptive_margin_info_nce(scores, positives, 0.05, torch.zeros(5))
