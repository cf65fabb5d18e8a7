"""Sequence pooling over padded token or frame states."""

from __future__ import annotations

import torch

POOLINGS = ("mean", "cls", "max")


def masked_mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over valid positions: sum_t m_t h_t / sum_t m_t (``states`` [B, T, H], ``mask`` [B, T])."""
    weights = mask.to(states.dtype).unsqueeze(-1)
    return (states * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def masked_max(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max over valid positions (padding set to -inf first)."""
    return states.masked_fill(~mask.bool().unsqueeze(-1), float("-inf")).amax(1)


def pool(states: torch.Tensor, mask: torch.Tensor, mode: str = "mean", unmasked_mean: bool = False) -> torch.Tensor:
    """Pool [B, T, H] to [B, H]: ``mean`` (masked; ``unmasked_mean`` averages padding too, the NRCCR parity quirk,
    ccr_methods §2.6), ``cls`` (first position) or ``max``."""
    if mode == "mean":
        return states.mean(1) if unmasked_mean else masked_mean(states, mask)
    if mode == "cls":
        return states[:, 0]
    if mode == "max":
        return masked_max(states, mask)
    raise ValueError(f"unknown pooling {mode!r}; expected one of {POOLINGS}")
