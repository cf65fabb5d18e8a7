"""RIVRL / Dual Encoding hybrid-space losses (itr_video_methods §1.2; LiJiaBei-7/rivrl:model.py:592-621).

Per branch b (preview, intensive): a hinge triplet in the latent space (cosine scores) and one in the concept space
(soft-Jaccard scores), both VSE++ hardest negative, both directions, summed; and the concept BCE of the video's and
the caption's tag probabilities against the *video's* soft multi-hot tags. Because the triplets are sums over the
batch and the BCEs means, upstream scales the BCEs by the batch size B:

    L = sum_b L_lat^b + w_con sum_b L_con^b + w_bce B sum_b [BCE(v_b, y) + BCE(t_b, y)]     (w_con = w_bce = 1)
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from leccr_lightning.metrics.scoring import soft_jaccard

__all__ = ["concept_bce", "hybrid_space_loss", "soft_jaccard"]


def concept_bce(video_probabilities: Tensor, text_probabilities: Tensor, targets: Tensor) -> Tensor:
    """BCE(v, y) + BCE(t, y), each the mean over the batch and the tags (``nn.BCELoss``); y the video's tags."""
    if video_probabilities.shape != targets.shape or text_probabilities.shape != targets.shape:
        raise ValueError(
            f"concept_bce: probabilities {list(video_probabilities.shape)} / {list(text_probabilities.shape)} and "
            f"targets {list(targets.shape)} must have the same [B, tags] shape"
        )
    targets = targets.to(video_probabilities.dtype)
    return F.binary_cross_entropy(video_probabilities, targets) + F.binary_cross_entropy(text_probabilities, targets)


def hybrid_space_loss(
    latent: Tensor,
    concept: Tensor,
    bce: Tensor,
    batch_size: int,
    concept_weight: float = 1.0,
    bce_weight: float = 1.0,
) -> Tensor:
    """L = latent + concept_weight * concept + bce_weight * batch_size * bce (the sums over both branches)."""
    return latent + concept_weight * concept + bce_weight * batch_size * bce
