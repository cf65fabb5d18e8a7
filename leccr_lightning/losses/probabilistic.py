"""Probabilistic token losses of ProTA (itr_video_methods §3.2): the 2-Wasserstein distance between diagonal
Gaussians, the KL regulariser to N(0, I) and the adaptive-margin contrastive loss.

    W2^2(N(mu1, s1^2), N(mu2, s2^2)) = ||mu1 - mu2||^2 + ||s1 - s2||^2          (exact for diagonal covariances)
    KL(N(mu, s^2) || N(0, I))        = 1/2 sum_d (mu_d^2 + s_d^2 - 1 - log s_d^2)
    L_i = -log exp((S_ii - m_i)/tau) / (exp((S_ii - m_i)/tau) + sum_{j != i} exp(S_ij/tau)), both directions
"""

from __future__ import annotations

import torch
from torch import Tensor

from leccr_lightning.losses.pairwise import bidirectional, check_pair_inputs, info_nce


def w2_squared(mean1: Tensor, std1: Tensor, mean2: Tensor, std2: Tensor) -> Tensor:
    """W2^2 of diagonal Gaussians, over the last dim (inputs broadcast)."""
    return (mean1 - mean2).pow(2).sum(-1) + (std1 - std2).pow(2).sum(-1)


def pairwise_w2_squared(text_mean: Tensor, text_std: Tensor, video_mean: Tensor, video_std: Tensor) -> Tensor:
    """W2^2 between every text token and every video token: [Q, N, d] x [G, M, d] -> [Q, N, G, M], by two matrix
    products (||a||^2 + ||b||^2 - 2 a.b for the means and for the standard deviations), clamped at 0."""

    def cross(a: Tensor, b: Tensor) -> Tensor:
        q, n, d = a.shape
        g, m, _ = b.shape
        dots = (a.reshape(q * n, d) @ b.reshape(g * m, d).T).view(q, n, g, m)
        return a.pow(2).sum(-1)[:, :, None, None] + b.pow(2).sum(-1)[None, None] - 2 * dots

    return (cross(text_mean, video_mean) + cross(text_std, video_std)).clamp_min(0)


def gaussian_kl(mean: Tensor, logvar: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean over (valid) tokens of KL(N(mean, exp(logvar)) || N(0, I)), summed over the last dim."""
    per_token = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(-1)
    if mask is None:
        return per_token.mean()
    mask = mask.to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp_min(1)


def adaptive_margin_info_nce(
    scores: Tensor, positive_mask: Tensor, temperature: float | Tensor, margins: Tensor | None = None
) -> Tensor:
    """Symmetric multi-positive InfoNCE with the margin m subtracted from the positive scores, 0.5 * (L(S) + L(S^T)).

    ``margins``: one per row [R] (the pair of row i, e.g. an adaptive m_i) or per entry [R, C]; ``None`` or zeros give
    the CLIP symmetric InfoNCE.
    """
    check_pair_inputs(scores, positive_mask, "positive_mask")
    if margins is None:
        margins = scores.new_zeros(())
    elif margins.dim() == 1:
        if margins.shape[0] != scores.shape[0]:
            raise ValueError(f"margins: expected one per row ({scores.shape[0]}), got {tuple(margins.shape)}")
        margins = margins[:, None]
    elif margins.shape != scores.shape:
        raise ValueError(
            f"margins: expected [R] or the shape of scores {tuple(scores.shape)}, got {tuple(margins.shape)}"
        )
    logits = (scores - torch.where(positive_mask, margins, scores.new_zeros(()))) / temperature
    return bidirectional(info_nce, logits, positive_mask)
