"""Projection heads into the joint embedding space."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProjectionHead(nn.Module):
    """x -> Linear -> [BatchNorm1d] -> [Dropout] -> L2-normalise (NRCCR uses BN + dropout 0.2, ccr_methods §2.1)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        batch_norm: bool = False,
        dropout: float = 0.0,
        normalize: bool = True,
    ):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.norm = nn.BatchNorm1d(out_dim) if batch_norm else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.norm(self.linear(x)))
        return F.normalize(x, dim=-1) if self.normalize else x
