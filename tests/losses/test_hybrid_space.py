"""Hybrid-space losses and the soft Jaccard similarity (itr_video_methods §1.8)."""

from __future__ import annotations

import torch

from leccr_lightning.losses import bidirectional, hinge_triplet
from leccr_lightning.losses.hybrid_space import concept_bce, hybrid_space_loss, soft_jaccard
from leccr_lightning.methods.objectives import TripletObjective
from tests.helpers import pair_context


def probabilities(rows: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(rows, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_soft_jaccard_identities():
    a, b = probabilities(5, seed=1), probabilities(7, seed=2)
    scores = soft_jaccard(a, b)
    assert scores.shape == (5, 7) and float(scores.min()) >= 0.0 and float(scores.max()) <= 1.0
    torch.testing.assert_close(soft_jaccard(a, a).diagonal(), torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(soft_jaccard(b, a), scores.T)
    direct = torch.minimum(a[:, None], b[None]).sum(-1) / torch.maximum(a[:, None], b[None]).sum(-1)
    torch.testing.assert_close(scores, direct)


def test_soft_jaccard_is_zero_exactly_for_disjoint_supports():
    a = torch.tensor([[0.5, 0.2, 0.0, 0.0]])
    b = torch.tensor([[0.0, 0.0, 0.9, 0.1], [0.0, 0.3, 0.9, 0.0]])
    scores = soft_jaccard(a, b)
    assert float(scores[0, 0]) == 0.0 and float(scores[0, 1]) > 0.0


def test_hybrid_loss_without_concept_terms_is_the_summed_vse_plus_plus_latent_loss():
    generator = torch.Generator().manual_seed(3)
    text = torch.nn.functional.normalize(torch.randn(6, 8, generator=generator), dim=1)
    video = torch.nn.functional.normalize(torch.randn(6, 8, generator=generator), dim=1)
    eye = torch.eye(6, dtype=torch.bool)
    latent = TripletObjective()(pair_context(text @ video.T, eye))
    concept = TripletObjective()(pair_context(soft_jaccard(text.abs(), video.abs()), eye))
    bce = concept_bce(torch.rand(6, 4), torch.rand(6, 4), torch.rand(6, 4))
    loss = hybrid_space_loss(latent, concept, bce, 6, concept_weight=0.0, bce_weight=0.0)
    expected = bidirectional(hinge_triplet, text @ video.T, eye, (1.0, 1.0), margin=0.2, mining="hardest")
    torch.testing.assert_close(loss, expected)
    # per anchor: [m + max_n s_n - s_p]_+ in both directions, summed
    scores = text @ video.T
    off = scores.masked_fill(eye, float("-inf"))
    rows = (0.2 + off.max(1).values - scores.diagonal()).clamp(min=0).sum()
    cols = (0.2 + off.max(0).values - scores.diagonal()).clamp(min=0).sum()
    torch.testing.assert_close(loss, rows + cols)


def test_concept_bce_is_the_mean_bce_of_both_sides_scaled_by_the_batch_size():
    video, text, target = probabilities(4, 6, 4), probabilities(4, 6, 5), probabilities(4, 6, 6)

    def bce(p):
        return -(target * p.log() + (1 - target) * (1 - p).log()).mean()

    torch.testing.assert_close(concept_bce(video, text, target), bce(video) + bce(text))
    zero = torch.zeros((), dtype=torch.float64)
    torch.testing.assert_close(
        hybrid_space_loss(zero, zero, concept_bce(video, text, target), 4), 4 * (bce(video) + bce(text))
    )


def test_soft_jaccard_in_row_blocks_equals_one_block():
    a, b = probabilities(9, seed=7), probabilities(5, seed=8)
    torch.testing.assert_close(soft_jaccard(a, b, block_elements=b.numel() * 2), soft_jaccard(a, b), rtol=0, atol=0)
