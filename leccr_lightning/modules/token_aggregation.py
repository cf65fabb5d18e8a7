"""Token-level matching of a text and a video (ProTA's dual partial-related aggregation, itr_video_methods §3.1-3.2).

Token similarities are laid out [Q, N, G, M]: Q texts of N tokens against G videos of M tokens (the layout two matrix
products give without a copy). Aggregation, with temperature lambda:

    l_{t_i -> v} = sum_j s_ij softmax_j(lambda s_ij)       (each text token matches the video tokens it relates to)
    l_{v_j -> t} = sum_i s_ij softmax_i(lambda s_ij)
    s(t, v)      = 1/2 (mean_i l_{t_i -> v} + mean_j l_{v_j -> t})

lambda -> 0 gives the mean similarity, lambda -> infinity the max ("max-mean" token matching).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def softmax_weighted(similarity: torch.Tensor, mask: torch.Tensor, temperature: float, dim: int) -> torch.Tensor:
    """sum over ``dim`` of s * softmax(lambda s) over the valid entries (``mask`` broadcast to ``similarity``)."""
    logits = (temperature * similarity).masked_fill(~mask, float("-inf"))
    weights = torch.softmax(logits, dim=dim).nan_to_num(0.0)
    return (weights * similarity).sum(dim)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum(dim) / mask.sum(dim).clamp_min(1)


def dual_partial_aggregation(
    similarity: torch.Tensor, text_mask: torch.Tensor, video_mask: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Pair scores [Q, G] of token similarities [Q, N, G, M] (``text_mask`` [Q, N], ``video_mask`` [G, M], bool)."""
    text = text_mask[:, :, None, None]
    video = video_mask[None, None, :, :]
    text_to_video = softmax_weighted(similarity, video, temperature, dim=3)
    video_to_text = softmax_weighted(similarity, text, temperature, dim=1)
    pooled_text = _masked_mean(text_to_video, text_mask[:, :, None], dim=1)
    pooled_video = _masked_mean(video_to_text, video_mask[None], dim=2)
    return 0.5 * (pooled_text + pooled_video)


def multi_kernel_gram(squared_distance: torch.Tensor, bandwidths: Sequence[float]) -> torch.Tensor:
    """G = 1/K sum_k exp(-d^2 / (2 s_k^2)) over the bandwidths s_k (values in (0, 1])."""
    if not bandwidths or any(b <= 0 for b in bandwidths):
        raise ValueError(f"kernel bandwidths: expected positive values, got {bandwidths}")
    gram = torch.zeros_like(squared_distance)
    for bandwidth in bandwidths:
        gram += torch.exp(-squared_distance / (2.0 * bandwidth**2))
    return gram / len(bandwidths)
