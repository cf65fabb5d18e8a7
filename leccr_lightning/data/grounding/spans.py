"""Span geometry shared by the grounding data, metric and loss layers (it lives in the lowest layer that uses it).

Spans are [..., 2] tensors: (s, e) = (start, end) or (c, w) = (center, width), in seconds or normalised to [0, 1].
"""

from __future__ import annotations

import torch


def span_cxw_to_xx(cxw: torch.Tensor) -> torch.Tensor:
    """(c, w) -> (c - w/2, c + w/2)."""
    return torch.stack([cxw[..., 0] - 0.5 * cxw[..., 1], cxw[..., 0] + 0.5 * cxw[..., 1]], dim=-1)


def span_xx_to_cxw(xx: torch.Tensor) -> torch.Tensor:
    """(s, e) -> ((s + e)/2, e - s)."""
    return torch.stack([(xx[..., 0] + xx[..., 1]) / 2, xx[..., 1] - xx[..., 0]], dim=-1)
