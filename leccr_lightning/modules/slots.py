"""LECCR semantic slots: the description cross-attention stack, the slot-visual interaction and the video frame
encoder built from the same layer (ccr_methods §3.2; official code ``LiJiaBei-7/leccr:LECCR/models/attention.py``).

Shapes: descriptions Z [B, L, d], visual tokens X [B, T, d], slots S [B, N, d]. Masks are boolean, True = valid.
"""

from __future__ import annotations

import torch
from torch import nn

from leccr_lightning.modules.pooling import masked_mean
from leccr_lightning.modules.visual_encoders import EncodedVisual

SLOT_INITS = ("zeros", "normal")


class CrossAttentionLayer(nn.Module):
    """y = LN(x + Drop(W2 Drop(GELU(W1 MHA(x, m, m))))) with d x d maps W1, W2 (official ``CrossAttentionLayer``,
    attention.py:24-58; with m = x it is the official ``SelfAttentionLayer``, attention.py:87-114).

    As in the official layer there is no residual or norm around the attention itself.
    """

    def __init__(self, dim: int, num_heads: int = 8, dropout: float = 0.1):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"cross-attention width {dim} is not divisible by num_heads={num_heads}")
        self.attention = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(dim, dim)
        self.linear2 = nn.Linear(dim, dim)
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, Q, d] attends to memory [B, M, d] (``memory_mask`` [B, M], True = valid) -> [B, Q, d]."""
        padding = None if memory_mask is None else ~memory_mask.bool()
        attended, _ = self.attention(x, memory, memory, key_padding_mask=padding, need_weights=False)
        update = self.linear2(self.dropout(self.activation(self.linear1(attended))))
        return self.norm(x + self.dropout(update))


class CrossAttentionStack(nn.Module):
    """``num_layers`` cross-attention layers over the same memory: x_{l+1} = layer_l(x_l, m)."""

    def __init__(self, dim: int, num_layers: int, num_heads: int = 8, dropout: float = 0.1):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers: expected at least 1 cross-attention layer, got {num_layers}")
        self.layers = nn.ModuleList(CrossAttentionLayer(dim, num_heads, dropout) for _ in range(num_layers))

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, memory, memory_mask)
        return x


class SemanticSlots(nn.Module):
    """S0 = CA_q(Q, Z): N learnable queries Q [N, d] attend to the description tokens Z (LECCR §3.2).

    ``init="zeros"`` is the official initialisation (all slots start identical; only dropout breaks the
    symmetry); ``init="normal"`` draws Q ~ N(0, ``init_std``^2), a documented deviation (ccr_methods §3.7).
    """

    def __init__(
        self,
        num_slots: int,
        dim: int,
        num_layers: int = 3,
        num_heads: int = 8,
        dropout: float = 0.1,
        init: str = "zeros",
        init_std: float = 0.02,
    ):
        super().__init__()
        if num_slots < 1:
            raise ValueError(f"num_slots: expected at least one slot, got {num_slots}")
        if init not in SLOT_INITS:
            raise ValueError(f"slot init {init!r}: expected one of {SLOT_INITS}")
        self.queries = nn.Parameter(torch.zeros(num_slots, dim))
        if init == "normal":
            nn.init.normal_(self.queries, std=init_std)
        self.attend = CrossAttentionStack(dim, num_layers, num_heads, dropout)

    @property
    def num_slots(self) -> int:
        return int(self.queries.shape[0])

    def forward(self, description: torch.Tensor, description_mask: torch.Tensor) -> torch.Tensor:
        """Slots S0 [B, N, d] from description tokens [B, L, d] with mask [B, L]."""
        queries = self.queries.unsqueeze(0).expand(description.shape[0], -1, -1)
        return self.attend(queries, description, description_mask)


class SlotVisualInteraction(nn.Module):
    """X' = CA_v(X, S0) (visual tokens attend to the slots, no mask) and S' = CA_s(S0, X) (slots attend to the
    valid visual tokens) (LECCR §3.2 "interaction")."""

    def __init__(self, dim: int, num_layers: int = 2, num_heads: int = 8, dropout: float = 0.1):
        super().__init__()
        self.visual_to_slots = CrossAttentionStack(dim, num_layers, num_heads, dropout)
        self.slots_to_visual = CrossAttentionStack(dim, num_layers, num_heads, dropout)

    def forward(
        self, visual: torch.Tensor, visual_mask: torch.Tensor, slots: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (enhanced visual tokens X' [B, T, d], visual-aware slots S' [B, N, d])."""
        enhanced = self.visual_to_slots(visual, slots)
        local = self.slots_to_visual(slots, visual, visual_mask)
        return enhanced, local


class FrameSelfAttention(nn.Module):
    """LECCR's video encoder: ``num_layers`` self-attention layers X_{l+1} = LN(X_l + Drop(W2 Drop(GELU(W1
    MHA(X_l, X_l, X_l))))) over the frame features, padded frames masked as keys, no positions (official
    ``SelfAttention``, attention.py:87-128, built with d_model = the feature dim and ``vision_layer`` 1 layer,
    video_model_retrieval_caption.py:26-34); pooled by the masked mean of the frames (xvlm_video.py:268-271).

    ``width=None`` is the official input (no projection); a width adds Linear(D -> width) first (small models).
    """

    def __init__(
        self, in_dim: int, width: int | None = None, num_heads: int = 8, num_layers: int = 1, dropout: float = 0.1
    ):
        super().__init__()
        self.out_dim = width or in_dim
        self.project = nn.Identity() if width is None else nn.Linear(in_dim, width)
        self.layers = nn.ModuleList(CrossAttentionLayer(self.out_dim, num_heads, dropout) for _ in range(num_layers))

    def forward(self, visual: torch.Tensor, mask: torch.Tensor) -> EncodedVisual:
        """Frames [B, T, D] with mask [B, T] -> encoded frames [B, T, d] (every position, padding included)."""
        mask = mask.bool()
        tokens = self.project(visual)
        for layer in self.layers:
            tokens = layer(tokens, tokens, mask)
        return EncodedVisual(tokens, mask, masked_mean(tokens, mask))
