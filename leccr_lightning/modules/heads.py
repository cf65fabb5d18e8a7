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


class HybridHead(nn.Module):
    """RIVRL / Dual Encoding ``Hybrid_mapping`` (itr_video_methods §1.1): a latent and a concept view of one vector.

    latent = L2(Dropout(BN(W_l x))) with W_l Xavier-uniform and a zero bias (LiJiaBei-7/rivrl:model.py:45-51);
    concept = sigmoid(BN(W_c x)) with PyTorch's default init, ``concept_dim`` tag probabilities (0: latent only,
    ``--space latent``). Returns (latent [B, latent_dim], concept [B, concept_dim] or None).
    """

    def __init__(self, in_dim: int, latent_dim: int = 1024, concept_dim: int = 512, dropout: float = 0.2):
        super().__init__()
        self.latent = nn.Linear(in_dim, latent_dim)
        nn.init.xavier_uniform_(self.latent.weight)
        nn.init.zeros_(self.latent.bias)
        self.latent_norm = nn.BatchNorm1d(latent_dim)
        self.dropout = nn.Dropout(dropout)
        self.concept = nn.Linear(in_dim, concept_dim) if concept_dim else None
        self.concept_norm = nn.BatchNorm1d(concept_dim) if concept_dim else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        latent = F.normalize(self.dropout(self.latent_norm(self.latent(x))), dim=-1)
        if self.concept is None:
            return latent, None
        return latent, torch.sigmoid(self.concept_norm(self.concept(x)))
