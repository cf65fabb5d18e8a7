"""NRCCR's shared text attention head: one BERT-style block in self and cross mode (ccr_methods §2.1)."""

from __future__ import annotations

import math

import torch
from torch import nn


class SharedTextAttention(nn.Module):
    """LinearLayer + trainable positions + one attention block whose weights serve both modes.

    ``prepare``: x -> LN -> Dropout -> Linear -> ReLU, then LN(x + pos) and dropout (max ``max_positions``).
    ``forward``: multi-head attention with Q/K projected to ``qk_dim`` and V to ``v_dim`` (default
    ``hidden``), scores A = Q K^T / sqrt(d_v_head) (NRCCR scales by the value head size), mask = outer product
    of the query and key masks. Output dense -> dropout -> LN(out + query) in self mode (``keys=None``),
    LN(out) with no residual in cross mode.
    Paper defaults: 8 heads, qk_dim 512, max 250 positions, dropout 0.1.
    """

    def __init__(
        self,
        hidden: int,
        num_heads: int = 8,
        qk_dim: int = 512,
        v_dim: int | None = None,
        max_positions: int = 250,
        dropout: float = 0.1,
    ):
        super().__init__()
        v_dim = v_dim or hidden
        if qk_dim % num_heads or v_dim % num_heads:
            raise ValueError(f"qk_dim {qk_dim} and v_dim {v_dim} must be multiples of num_heads {num_heads}")
        self.num_heads = num_heads
        self.input_layer = nn.Sequential(
            nn.LayerNorm(hidden), nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU()
        )
        self.positions = nn.Embedding(max_positions, hidden)
        self.position_norm = nn.LayerNorm(hidden)
        self.query = nn.Linear(hidden, qk_dim)
        self.key = nn.Linear(hidden, qk_dim)
        self.value = nn.Linear(hidden, v_dim)
        self.dense = nn.Linear(v_dim, hidden)
        self.out_norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)

    def prepare(self, states: torch.Tensor) -> torch.Tensor:
        """LN(LinearLayer(x) + pos) with dropout, for token states [B, L, H]."""
        if states.shape[1] > self.positions.num_embeddings:
            raise ValueError(f"sequence length {states.shape[1]} exceeds max_positions {self.positions.num_embeddings}")
        x = self.input_layer(states)
        positions = torch.arange(x.shape[1], device=x.device)
        return self.dropout(self.position_norm(x + self.positions(positions)))

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        return x.view(batch, length, self.num_heads, dim // self.num_heads).transpose(1, 2)

    def forward(
        self,
        queries: torch.Tensor,
        query_mask: torch.Tensor,
        keys: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attended states [B, L_q, H]: self-attention when ``keys`` is None, else attention to ``keys``."""
        cross = keys is not None
        if not cross:
            keys, key_mask = queries, query_mask
        q, k, v = self._heads(self.query(queries)), self._heads(self.key(keys)), self._heads(self.value(keys))
        scores = q @ k.transpose(-1, -2) / math.sqrt(v.shape[-1])
        mask = query_mask.bool()[:, None, :, None] & key_mask.bool()[:, None, None, :]
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        context = self.dropout(torch.softmax(scores, dim=-1)) @ v
        context = context.transpose(1, 2).reshape(queries.shape[0], queries.shape[1], -1)
        out = self.dropout(self.dense(context))
        return self.out_norm(out) if cross else self.out_norm(out + queries)
