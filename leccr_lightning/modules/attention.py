"""NRCCR's sequence blocks (ccr_methods §2.1; LiJiaBei-7/nrccr:transformer_cross.py), shared by its text head and its
video encoder: ``LinearLayer``, trainable positions, and one BERT-style attention block with a self and a cross mode.
"""

from __future__ import annotations

import math

import torch
from torch import nn

MASK_PENALTY = -10000.0
"""Additive score penalty of a masked (query, key) pair (transformer_cross.py:93, the BERT convention)."""


class LinearLayer(nn.Module):
    """LN -> Dropout -> Linear(in_dim -> out_dim) -> ReLU (transformer_cross.py:35-53 with layer_norm and relu)."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.1):
        super().__init__()
        self.norm = nn.LayerNorm(in_dim)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(self.dropout(self.norm(x))))


class TrainablePositions(nn.Module):
    """Dropout(LN(x + P[0:L])) with a learned table of ``max_positions`` rows (transformer_cross.py:10-25)."""

    def __init__(self, max_positions: int, hidden: int, dropout: float = 0.1):
        super().__init__()
        self.table = nn.Embedding(max_positions, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.table.num_embeddings:
            raise ValueError(f"sequence length {x.shape[1]} exceeds max_positions {self.table.num_embeddings}")
        return self.dropout(self.norm(x + self.table(torch.arange(x.shape[1], device=x.device))))


class BertAttention(nn.Module):
    """One attention block whose weights serve a self and a cross mode (transformer_cross.py:56-157).

    Q and K are projected to ``qk_dim`` (512 in the official code), V to ``hidden``; with h heads the scores are
    A = Q K^T / sqrt(hidden / h) (the value head size) + M, where M = -10000 wherever the outer product of the query
    and key masks is 0. Output: dense -> dropout -> LN(out + queries) in self mode, LN(out) without the residual in
    cross mode. No feed-forward sub-layer.
    """

    def __init__(self, hidden: int, num_heads: int = 8, qk_dim: int = 512, dropout: float = 0.1):
        super().__init__()
        if qk_dim % num_heads or hidden % num_heads:
            raise ValueError(f"qk_dim {qk_dim} and hidden {hidden} must be multiples of num_heads {num_heads}")
        self.num_heads = num_heads
        self.query = nn.Linear(hidden, qk_dim)
        self.key = nn.Linear(hidden, qk_dim)
        self.value = nn.Linear(hidden, hidden)
        self.attention_dropout = nn.Dropout(dropout)
        self.dense = nn.Linear(hidden, hidden)
        self.output_dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden)

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
        """Attended states [B, L_q, H]: self-attention when ``keys`` is None, else attention from ``queries`` to
        ``keys`` (cross mode)."""
        cross = keys is not None
        if not cross:
            keys, key_mask = queries, query_mask
        q, k, v = self._heads(self.query(queries)), self._heads(self.key(keys)), self._heads(self.value(keys))
        pair_mask = query_mask.to(q.dtype)[:, None, :, None] * key_mask.to(q.dtype)[:, None, None, :]
        scores = q @ k.transpose(-1, -2) / math.sqrt(v.shape[-1]) + (1.0 - pair_mask) * MASK_PENALTY
        context = self.attention_dropout(torch.softmax(scores, dim=-1)) @ v
        context = context.transpose(1, 2).reshape(queries.shape[0], queries.shape[1], -1)
        out = self.output_dropout(self.dense(context))
        return self.norm(out) if cross else self.norm(out + queries)


class SequenceAttentionHead(nn.Module):
    """``prepare``: LinearLayer(in_dim -> hidden) then trainable positions; ``forward``: the shared attention block.

    NRCCR's text head (``Text_share``, model.py:197-272: in_dim = hidden = 768, 250 positions) and its video encoder
    (``video_transformer_encoding``, model.py:82-117: in_dim = the frame feature, hidden 1024, 80 positions) are both
    this block; paper defaults 8 heads, qk_dim 512, dropout 0.1.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int,
        num_heads: int = 8,
        qk_dim: int = 512,
        max_positions: int = 250,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.input_layer = LinearLayer(in_dim, hidden, dropout)
        self.positions = TrainablePositions(max_positions, hidden, dropout)
        self.attention = BertAttention(hidden, num_heads, qk_dim, dropout)
        self.out_dim = hidden

    def prepare(self, states: torch.Tensor) -> torch.Tensor:
        """Positions(LinearLayer(x)) for states [B, L, in_dim] (``feat`` / ``feat_trans`` of model.py:232-240)."""
        return self.positions(self.input_layer(states))

    def forward(
        self,
        queries: torch.Tensor,
        query_mask: torch.Tensor,
        keys: torch.Tensor | None = None,
        key_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The attention block on prepared states (self mode, or cross mode from ``queries`` to ``keys``)."""
        return self.attention(queries, query_mask, keys, key_mask)
