"""VSE-infinity building blocks used by RVSE++ (itr spec §4.3): GPO pooling and the residual MLP head."""

from __future__ import annotations

import math

import torch
from torch import nn


def sine_positions(length: int, dim: int, device: torch.device | None = None) -> torch.Tensor:
    """Sinusoidal position codes [length, dim]: PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(...)."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    codes = torch.zeros(length, dim, device=device)
    codes[:, 0::2] = torch.sin(position * frequency)
    codes[:, 1::2] = torch.cos(position * frequency)
    return codes


class GPO(nn.Module):
    """Generalized Pooling Operator (VSE-infinity): pooled_d = sum_k w_k * sort_desc(x_{., d})_k.

    Each feature dimension is sorted in descending order over the set; the weights over sorted positions come
    from sine position codes (``pe_dim`` 32) -> BiGRU (``hidden`` 32, directions averaged) -> Linear(hidden, 1)
    -> softmax with temperature ``temperature`` 0.1, padding excluded (itr spec §4.3).
    """

    def __init__(self, pe_dim: int = 32, hidden: int = 32, temperature: float = 0.1):
        super().__init__()
        self.pe_dim, self.temperature = pe_dim, temperature
        self.gru = nn.GRU(pe_dim, hidden, batch_first=True, bidirectional=True)
        self.score = nn.Linear(hidden, 1, bias=False)

    def weights(self, mask: torch.Tensor) -> torch.Tensor:
        """Pooling weights [B, K] over sorted positions (0 on padding)."""
        batch, length = mask.shape
        codes = sine_positions(length, self.pe_dim, mask.device).expand(batch, length, self.pe_dim)
        states, _ = self.gru(codes * mask[..., None])
        states = (states[..., : states.shape[-1] // 2] + states[..., states.shape[-1] // 2 :]) / 2
        logits = self.score(states).squeeze(-1).masked_fill(~mask, -10000.0)
        return torch.softmax(logits / self.temperature, dim=1)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Pool a set [B, K, D] with validity ``mask`` [B, K] (valid entries first or anywhere) into [B, D]."""
        mask = mask.bool()
        lengths = mask.sum(1, keepdim=True)
        ordered = features.masked_fill(~mask[..., None], -10000.0).sort(dim=1, descending=True).values
        valid_sorted = torch.arange(mask.shape[1], device=mask.device)[None, :] < lengths
        ordered = ordered.masked_fill(~valid_sorted[..., None], 0.0)
        return (self.weights(valid_sorted)[..., None] * ordered).sum(1)


class ResidualMLP(nn.Module):
    """x + MLP(x), MLP = Linear(d, d/2) + BatchNorm + ReLU -> Linear(d/2, d): the "R" of RVSE++ (itr spec §4.3)."""

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or dim // 2
        self.fc1, self.norm, self.fc2 = nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        return x + self.fc2(torch.relu(self.norm(self.fc1(flat)))).view_as(x)


class RegionEncoder(nn.Module):
    """Region features [B, K, D] -> Linear(D, d) (Xavier-uniform) -> residual MLP -> GPO -> L2 norm."""

    def __init__(self, in_dim: int, embed_dim: int, residual: bool = True, gpo_dim: int = 32):
        super().__init__()
        self.fc = nn.Linear(in_dim, embed_dim)
        nn.init.xavier_uniform_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)
        self.mlp = ResidualMLP(embed_dim) if residual else nn.Identity()
        self.gpo = GPO(gpo_dim, gpo_dim)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.gpo(self.mlp(self.fc(features)), mask), dim=-1)
